// otlpconc/hazard_pointer.hpp: hazard pointers with the C++26 interface (P2530, <hazard_pointer>).
//
// What: safe memory reclamation for lock-free structures. A reader protects a pointer it loaded
//   from an atomic before dereferencing it; a writer that unlinks an object retires it instead of
//   deleting it; a retired object is deleted only once no hazard pointer protects it.
// When to use: node-based lock-free containers (ms_queue), arrays replaced while readers may still
//   read the old one (chase_lev_deque), read-mostly pointers swapped by writers.
// When not to: when a lock is uncontended (it is simpler), or when readers hold many objects at
//   once for long (each needs its own hazard pointer; epoch schemes batch better there), or for
//   objects whose destructor must run at a precise time: reclamation is deferred.
// Guarantees:
//   - protect / try_protect / reset_protection are lock-free; retire is lock-free except when it
//     crosses the scan threshold and runs a scan (which allocates a snapshot, issues membarrier, a
//     system call, and calls deleters); make_hazard_pointer may allocate a new hazard record.
//   - Nothing is freed while protected: a retired object is reclaimed only by a scan that found no
//     hazard pointer holding its address after a store-load barrier (see asymmetric_fence.hpp).
//   - Bounded garbage, whatever the threads do (retire a few objects and exit, park forever,
//     churn by the thousand): in a domain, retired-but-unreclaimed objects stay below
//       (1 + S) * (R + 8 * max(1, R / 32) + P)        (domain.garbage_bound(S, P) computes it)
//     where R = max(1000, 2 * H) is the scan threshold (1000 can be changed per domain), H the
//     number of hazard records (about the peak number of hazard pointers alive at once), S the
//     number of scans running at the same moment (each holds what it took off the lists until it
//     has reclaimed or put it back; S is 0 or 1 unless several threads cross the threshold
//     together) and P the number of threads inside retire at that moment. Every retire is counted
//     in the domain when it happens, in one of 8 shard counters beside the retired lists; a retire
//     checks the total when its shard's count reaches a multiple of max(1, R / 32), and scans when
//     it is at least R. After hazard_pointer_clean_up() with no protection held, it is zero. The
//     bound does not hold while membarrier keeps failing (see below).
//   - A scan never starts inside another scan on the same thread: a deleter that retires further
//     objects (a chain, a tree) has them taken by a later round of the running scan loop (when the
//     domain is above its threshold, or when a deleter called scan_now / clean_up on it), so the
//     stack does not grow with the chain.
//   - If membarrier fails (the kernel may return ENOMEM), that scan reclaims nothing (readers had no
//     barrier), counts it in stats().fence_failures, and a later scan tries again. Nothing
//     terminates the process.
//   - No registration: any thread may use hazard pointers at any time; thread-local state is created
//     lazily. Hazard records are allocated on demand and reused after their thread exits. A thread
//     that exits leaves nothing behind: retired objects are always on the domain's shared lists.
// Ordering: an object reclaimed by a scan happens-after every use made through a hazard pointer
//   that protected it (the slot's release store on reset pairs with the scan's acquire load).
// Requirements on T: derives publicly from hazard_pointer_obj_base<T, D>; D is nothrow move
//   constructible and callable as d(T*), and must not throw from that call (reclamation runs in
//   noexcept contexts: a throwing deleter terminates).
//
// Differences from P2530 (documented extensions, in namespace otlpconc):
//   - hazard_pointer_domain: independent domains; hazard_pointer_default_domain(), and
//     make_hazard_pointer(domain) / retire(d, domain) overloads.
//   - hazard_pointer_clean_up(domain): synchronously reclaims every retired object not protected.
//   - domain.scan_now(): one scan now (clean_up repeats scans while they reclaim something).
//   - domain.stats(): retired, reclaimed, hazard records, scan threshold, fence failures, scans;
//     domain.pending() and domain.garbage_bound(S, P).
//   - hazard_pointer_domain(min_scan_threshold): a domain that scans more or less often.
//   - protect()'s store-load barrier is asymmetric (membarrier) where available.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/asymmetric_fence.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/sync.hpp"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace otlpconc {

// Every class here is a template on the Sync policy of detail/sync.hpp; the P2530 names
// (hazard_pointer, hazard_pointer_domain, hazard_pointer_obj_base) are the std_sync instances.
template <class Sync>
class basic_hazard_pointer_domain;
template <class Sync>
class basic_hazard_pointer;

namespace detail {

// The part of every retirable object the domain sees.
struct retired_header {
  retired_header* next_retired = nullptr;
  const void* address = nullptr;                       // the T* that hazard pointers hold
  void (*reclaim)(retired_header*) noexcept = nullptr; // destroys the object with its deleter
};

// One hazard pointer slot. Padded: its owner writes it on every protect.
template <class Sync>
struct alignas(cache_line_size) hazard_record {
  typename Sync::template atomic<const void*> slot{nullptr};
  typename Sync::template atomic<bool> active{false};
  bool asymmetric = false;       // the process's fence mode, cached here: protect reads no global
  bool cacheable = false;        // belongs to the default domain: may sit in a thread's cache
  hazard_record* next = nullptr; // immutable once published in the domain's list
  basic_hazard_pointer_domain<Sync>* domain = nullptr;
};

// Per-thread state for the default domain, zero-initialized (plain TLS access, no guard).
template <class Sync>
struct hazard_thread_cache {
  static constexpr int capacity = 8;
  hazard_record<Sync>* records[capacity];
  int size;
  bool registered; // the exit guard exists
  bool exited;     // the exit guard has run: no more caching
  int limit;       // how many records a release may cache: capacity while registered and not
                   // exited, else 0 (one comparison on the release path instead of three)
};
struct hazard_cache_tag {};
template <class Sync>
hazard_thread_cache<Sync>& hazard_tls() noexcept {
  return Sync::template tls<hazard_cache_tag, hazard_thread_cache<Sync>>();
}

// Per-thread scan state: a scan is never started inside another one on the same thread (a deleter
// that retires would otherwise recurse once per object of a chain). Domains that asked meanwhile are
// remembered and scanned by the outer loop, one after the other.
template <class Sync>
struct hazard_scan_state {
  static constexpr int max_deferred = 4;
  bool scanning;
  int deferred_count;
  basic_hazard_pointer_domain<Sync>* deferred[max_deferred];
  bool forced[max_deferred]; // asked by scan_now / clean_up: scanned whatever its pending count
};
struct hazard_scan_tag {};
template <class Sync>
hazard_scan_state<Sync>& hazard_scan_tls() noexcept {
  return Sync::template tls<hazard_scan_tag, hazard_scan_state<Sync>>();
}

template <class Sync>
void register_hazard_thread_exit() noexcept;
template <class Sync>
struct hazard_thread_exit_guard;
template <class Sync>
basic_hazard_pointer_domain<Sync>& default_hazard_domain() noexcept;

} // namespace detail

template <class Sync>
class basic_hazard_pointer_domain {
  template <class U>
  using atomic = typename Sync::template atomic<U>;
  using record = detail::hazard_record<Sync>;

 public:
  struct statistics {
    std::int64_t retired;        // objects ever retired into this domain
    std::int64_t reclaimed;      // objects ever reclaimed
    std::int64_t hazard_records; // hazard records allocated (never shrinks)
    std::int64_t scan_threshold; // R: a scan starts when this many retired objects are pending
    std::int64_t fence_failures; // scans that reclaimed nothing because membarrier failed
    std::int64_t scans;          // scans that took retired objects (each issued the store-load fence)
    std::int64_t unreclaimed() const noexcept { return retired - reclaimed; }
  };

  basic_hazard_pointer_domain() = default;
  // Extension: a domain whose scan threshold is R = max(min_scan_threshold, 2 * H) instead of
  // max(1000, 2 * H). Smaller values scan more often (less garbage, more time in scans); tests use
  // tiny values to make reclamation race with readers constantly. Throws std::invalid_argument
  // unless min_scan_threshold >= 1.
  explicit basic_hazard_pointer_domain(std::int64_t min_scan_threshold) : min_scan_threshold_(min_scan_threshold) {
    if (min_scan_threshold < 1)
      throw std::invalid_argument("hazard_pointer_domain: min_scan_threshold must be at least 1");
  }
  basic_hazard_pointer_domain(const basic_hazard_pointer_domain&) = delete;
  basic_hazard_pointer_domain& operator=(const basic_hazard_pointer_domain&) = delete;

  // Precondition: no hazard pointer of this domain is alive and no thread is retiring into it.
  // Reclaims every retired object and frees the hazard records.
  ~basic_hazard_pointer_domain() {
    reclaim_all_unprotected();
    record* r = records_.load(std::memory_order_acquire); // (D1) acquire: pairs with (D0)
    while (r != nullptr) {
      record* next = r->next;
      delete r;
      r = next;
    }
  }

  statistics stats() const {
    // (D5) relaxed: a statistic, like the sharded counters beside it.
    std::int64_t retired = 0;
    for (const retired_shard& shard : shards_) // (R4) relaxed: counts
      retired += shard.count.load(std::memory_order_relaxed) + shard.taken.load(std::memory_order_relaxed);
    return {retired,
            reclaimed_.load(std::memory_order_relaxed),
            record_count_.load(std::memory_order_relaxed),
            scan_threshold(),
            fence_failures_.load(std::memory_order_relaxed),
            scans_.load(std::memory_order_relaxed)};
  }

  // The documented bound on stats().unreclaimed() for the current R (see the header comment):
  // (1 + S) * (R + 8 * max(1, R / 32) + P) with S = concurrent_scans and P = concurrent_retires.
  std::int64_t garbage_bound(std::int64_t concurrent_scans, std::int64_t concurrent_retires) const noexcept {
    const std::int64_t r = scan_threshold();
    return (1 + concurrent_scans) *
           (r + static_cast<std::int64_t>(shard_count) * std::max<std::int64_t>(1, r / check_divisor) +
            concurrent_retires);
  }

  std::int64_t scan_threshold() const noexcept {
    // (D2) relaxed: a heuristic; a stale value only shifts when the next scan starts.
    return std::max<std::int64_t>(min_scan_threshold_, 2 * record_count_.load(std::memory_order_relaxed));
  }

  // Reclaims every retired object that no hazard pointer protects, repeating while deleters retire
  // further objects. Called from a deleter (during a scan on this thread), it only asks the running
  // scan loop to scan this domain once more (at most 4 domains can be asked so during one scan).
  void reclaim_all_unprotected() noexcept {
    detail::hazard_scan_state<Sync>& st = detail::hazard_scan_tls<Sync>();
    if (st.scanning) {
      defer(st, true);
      return;
    }
    st.scanning = true;
    while (scan() > 0) {
    }
    finish_scans(st);
  }

  // Extension: one scan, now, on the calling thread: reclaims every object retired before the call
  // that no hazard pointer protects; objects retired during the scan (by its deleters or by other
  // threads) wait for a later scan. The bounded-cost form of reclaim_all_unprotected(), which
  // repeats while a scan reclaims anything: under threads that keep retiring that is several scans,
  // each a membarrier (16-24 us on a 2-core VM when another core runs the process: bench
  // component hazard_scan_fence).
  // Called from a deleter (a scan already running on this thread), it asks that scan loop to scan
  // this domain once more when the running scan ends, whatever its pending count (at most 4
  // domains can be asked so during one scan).
  void scan_now() noexcept { request_scan(true); }

  // The number of retired objects on the lists, not yet taken by a scan. May be off by the retires
  // in progress (one per thread inside retire).
  std::int64_t pending() const noexcept {
    std::int64_t n = 0;
    for (const retired_shard& shard : shards_)
      n += shard.count.load(std::memory_order_relaxed); // (R4) relaxed: decides only when to scan
    return n;
  }

 private:
  friend class basic_hazard_pointer<Sync>;
  template <class T, class D, class S>
  friend class basic_hazard_pointer_obj_base;
  template <class S>
  friend basic_hazard_pointer<S> make_hazard_pointer(basic_hazard_pointer_domain<S>&);
  template <class S>
  friend basic_hazard_pointer<S> make_hazard_pointer_uncached(basic_hazard_pointer_domain<S>&);
  friend struct detail::hazard_thread_exit_guard<Sync>;
  friend basic_hazard_pointer_domain<detail::std_sync>& hazard_pointer_default_domain() noexcept;

  // 8 lists; 2 in a model-checking build (the same code paths, a state space that fits the search).
  static constexpr std::size_t shard_count = Sync::is_model ? 2 : 8;
  // A retire checks whether to scan when its shard's count reaches a multiple of the check step,
  // R / check_divisor: the lists then hold less than R + shard_count * R / check_divisor.
  static constexpr std::int64_t check_divisor = 32;

  // One list of retired objects with its length, on one cache line: the retire's CAS on the head
  // owns the line, so the increment after it is cheap.
  struct alignas(cache_line_size) retired_shard {
    atomic<detail::retired_header*> head{nullptr};
    // Objects on the list not yet taken by a scan. It can dip below the true length for the moment
    // a retire is between its CAS and its increment (at most one object per thread).
    atomic<std::int64_t> count{0};
    // Objects taken off this list by scans (and not put back): count + taken is what was retired.
    atomic<std::int64_t> taken{0};
  };

  bool is_default() const noexcept { return is_default_; }

  record* acquire_record() {
    // Reuse an inactive record (released by an exited thread or a full cache) before allocating.
    for (record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
      bool expected = false;
      // (D3) acquire on success: pairs with the release in release_record (D4), so the previous
      // owner's last slot store is ordered before ours.
      if (!r->active.load(std::memory_order_relaxed) &&
          r->active.compare_exchange_strong(expected, true, std::memory_order_acquire, std::memory_order_relaxed))
        return r;
    }
    auto* r = new record;
    r->active.store(true, std::memory_order_relaxed); // not yet shared
    r->asymmetric = Sync::hazard_fence_mode() == detail::fence_mode::asymmetric;
    r->cacheable = is_default_;
    r->domain = this;
    r->next = records_.load(std::memory_order_relaxed);
    // (D0) release: publishes the record's initialized fields to list walkers (D1, D3, scan's S3).
    while (!records_.compare_exchange_weak(r->next, r, std::memory_order_release, std::memory_order_relaxed)) {
    }
    // (D5) relaxed: a statistic and the threshold heuristic.
    record_count_.fetch_add(1, std::memory_order_relaxed);
    return r;
  }

  static void release_record(record* r) noexcept {
    // (D4) release: the slot was already cleared with release; this orders it before the next
    // owner's acquire (D3).
    r->active.store(false, std::memory_order_release);
  }

  void push_retired(detail::retired_header* h) noexcept {
    retired_shard& shard = shards_[shard_index()];
    h->next_retired = shard.head.load(std::memory_order_relaxed);
    // (R1) release: publishes the header (address, reclaim, deleter) and everything the retiring
    // thread did before retire (it unlinked the object) to the scan that takes the list (R2).
    while (
        !shard.head.compare_exchange_weak(h->next_retired, h, std::memory_order_release, std::memory_order_relaxed)) {
    }
    // (R4) relaxed: the counts only decide when to scan (and make the statistics). Every retire is counted at once, in
    // the domain, so nothing depends on what the retiring thread does afterwards (parks, exits).
    const std::int64_t count = shard.count.fetch_add(1, std::memory_order_relaxed) + 1;
    const std::int64_t step = std::max<std::int64_t>(1, scan_threshold() / check_divisor);
    if (count % step == 0 && pending() >= scan_threshold())
      request_scan(false);
  }

  // Scans this domain on the calling thread, unless a scan is already running there (a deleter
  // retiring, or calling scan_now): then the running scan loop comes back to this domain when it is
  // done (see defer for `forced`).
  void request_scan(bool forced) noexcept {
    detail::hazard_scan_state<Sync>& st = detail::hazard_scan_tls<Sync>();
    if (st.scanning) {
      defer(st, forced);
      return;
    }
    st.scanning = true;
    scan();
    finish_scans(st);
  }

  // `forced`: scan_now or clean_up asked (scan once more whatever the pending count); otherwise a
  // retire crossed the threshold (scan again only if still above it).
  void defer(detail::hazard_scan_state<Sync>& st, bool forced) noexcept {
    for (int i = 0; i < st.deferred_count; ++i)
      if (st.deferred[i] == this) {
        st.forced[i] = st.forced[i] || forced;
        return;
      }
    // Full (deleters retiring into more than 4 other domains): this one scans at its next check.
    if (st.deferred_count < detail::hazard_scan_state<Sync>::max_deferred) {
      st.forced[st.deferred_count] = forced;
      st.deferred[st.deferred_count++] = this;
    }
  }

  // The outer scan loop: scans the domains that asked during the scan(s) just run, those forced
  // (scan_now, clean_up) once, the others while they are above their threshold (a chain of
  // deleters that retire is reclaimed one link per round, with no recursion), then leaves the
  // scanning state.
  static void finish_scans(detail::hazard_scan_state<Sync>& st) noexcept {
    while (st.deferred_count > 0) {
      --st.deferred_count;
      basic_hazard_pointer_domain* d = st.deferred[st.deferred_count];
      if (st.forced[st.deferred_count] || d->pending() >= d->scan_threshold())
        d->scan();
    }
    st.scanning = false;
  }

  // Takes every retired object, reclaims those no hazard pointer holds, puts the others back.
  // Returns how many were reclaimed. Runs with the calling thread's scanning flag set.
  std::int64_t scan() noexcept {
    detail::retired_header* taken = nullptr;
    for (retired_shard& shard : shards_) {
      // (R2) acquire: pairs with the release pushes (R1): the headers and the unlinks that
      // preceded each retire are visible.
      detail::retired_header* h = shard.head.exchange(nullptr, std::memory_order_acquire);
      std::int64_t n = 0;
      while (h != nullptr) {
        detail::retired_header* next = h->next_retired;
        h->next_retired = taken;
        taken = h;
        ++n;
        h = next;
      }
      if (n != 0) {
        shard.count.fetch_sub(n, std::memory_order_relaxed); // (R4)
        shard.taken.fetch_add(n, std::memory_order_relaxed); // (R4)
      }
    }
    if (taken == nullptr)
      return 0;

    // (S2) store-load barrier: every unlink above is ordered before the hazard reads below, against
    // each reader's light_fence (see asymmetric_fence.hpp). If membarrier fails (the kernel may
    // return ENOMEM), readers got no barrier from it: reclaim nothing this time and try again at
    // the next scan.
    Sync::preempt(); // stress builds: a reader may publish between the unlink and the fence
    scans_.fetch_add(1, std::memory_order_relaxed); // (D5) a statistic
    const bool fenced = Sync::heavy_fence();
    if (!fenced)
      fence_failures_.fetch_add(1, std::memory_order_relaxed); // (D5)

    std::vector<const void*> hazards;
    bool have_snapshot = fenced;
    if (fenced) {
      try {
        hazards.reserve(static_cast<std::size_t>(record_count_.load(std::memory_order_relaxed)) + 8);
        // (S3) acquire: pairs with the release stores to slots (H1, H4): a slot that no longer holds
        // an address orders all the uses made under it before our reclaim.
        for (record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next)
          if (const void* p = r->slot.load(std::memory_order_acquire))
            hazards.push_back(p);
        std::sort(hazards.begin(), hazards.end());
      } catch (...) {
        have_snapshot = false; // no memory for the snapshot: reclaim nothing this time
      }
    }

    detail::retired_header* kept = nullptr;
    std::int64_t kept_count = 0;
    std::int64_t reclaimed = 0;
    while (taken != nullptr) {
      detail::retired_header* next = taken->next_retired;
      if (!have_snapshot || std::binary_search(hazards.begin(), hazards.end(), taken->address)) {
        taken->next_retired = kept;
        kept = taken;
        ++kept_count;
      } else {
        taken->reclaim(taken); // may retire further objects: they go to the shards, not to `taken`
        ++reclaimed;
      }
      taken = next;
    }
    if (kept != nullptr) {
      detail::retired_header* last = kept;
      while (last->next_retired != nullptr)
        last = last->next_retired;
      retired_shard& shard = shards_[shard_index()];
      last->next_retired = shard.head.load(std::memory_order_relaxed);
      // (R1') release: as R1, for the objects put back.
      while (!shard.head.compare_exchange_weak(last->next_retired, kept, std::memory_order_release,
                                               std::memory_order_relaxed)) {
      }
      shard.count.fetch_add(kept_count, std::memory_order_relaxed); // (R4)
      shard.taken.fetch_sub(kept_count, std::memory_order_relaxed); // (R4) not taken after all
    }
    if (reclaimed != 0)
      reclaimed_.fetch_add(reclaimed, std::memory_order_relaxed); // (D5) a statistic, once per scan
    return reclaimed;
  }

  // (R5) a small per-thread number: spreads threads over the lists.
  static std::size_t shard_index() noexcept { return Sync::thread_number() % shard_count; }

  bool is_default_ = false; // set once, before the default domain is shared
  std::int64_t min_scan_threshold_ = 1000;
  atomic<record*> records_{nullptr};
  atomic<std::int64_t> record_count_{0};
  retired_shard shards_[shard_count];
  atomic<std::int64_t> fence_failures_{0};
  atomic<std::int64_t> scans_{0};
  atomic<std::int64_t> reclaimed_{0};
};

using hazard_pointer_domain = basic_hazard_pointer_domain<detail::std_sync>;

// The default domain. Never destroyed (threads may retire after static destruction); objects still
// retired at process exit are reclaimed by an exit handler when unprotected. It lives in static
// storage: making it allocates nothing, so this noexcept function cannot fail.
inline hazard_pointer_domain& hazard_pointer_default_domain() noexcept {
  alignas(hazard_pointer_domain) static unsigned char storage[sizeof(hazard_pointer_domain)];
  static hazard_pointer_domain* const domain = [] {
    auto* d = ::new (static_cast<void*>(storage)) hazard_pointer_domain;
    d->is_default_ = true;
    std::atexit([] { hazard_pointer_default_domain().reclaim_all_unprotected(); });
    return d;
  }();
  return *domain;
}

namespace detail {
// The default domain of a Sync policy: hazard_pointer_default_domain() for std_sync; a model's own
// (one per explored execution) otherwise.
template <class Sync>
basic_hazard_pointer_domain<Sync>& default_hazard_domain() noexcept {
  if constexpr (std::is_same_v<Sync, std_sync>)
    return hazard_pointer_default_domain();
  else
    return Sync::template default_hazard_domain<basic_hazard_pointer_domain<Sync>>();
}
} // namespace detail

// Synchronously reclaims every retired object of `domain` that no hazard pointer protects.
template <class Sync>
void hazard_pointer_clean_up(basic_hazard_pointer_domain<Sync>& domain) noexcept {
  domain.reclaim_all_unprotected();
}
inline void hazard_pointer_clean_up() noexcept {
  hazard_pointer_default_domain().reclaim_all_unprotected();
}

template <class T, class D, class Sync>
class basic_hazard_pointer_obj_base : private detail::retired_header {
  static_assert(std::is_nothrow_move_constructible_v<D>,
                "hazard_pointer_obj_base<T, D>: the deleter D must be nothrow move constructible");

 public:
  // Retires *this: it is destroyed with d (d(static_cast<T*>(this))) once no hazard pointer
  // protects it. Precondition: *this is no longer reachable by new readers; retired at most once.
  void retire(D d = D(), basic_hazard_pointer_domain<Sync>& domain = detail::default_hazard_domain<Sync>()) noexcept {
    static_assert(std::is_base_of_v<basic_hazard_pointer_obj_base, T>,
                  "hazard_pointer_obj_base<T, D>: T must derive from hazard_pointer_obj_base<T, D>");
    static_assert(std::is_invocable_v<D&, T*>, "hazard_pointer_obj_base<T, D>: D must be callable as d(T*)");
    ::new (static_cast<void*>(deleter_storage_)) D(std::move(d));
    address = static_cast<const T*>(this);
    reclaim = &reclaim_object;
    domain.push_retired(this);
  }

 protected:
  basic_hazard_pointer_obj_base() = default;
  // Copies and moves of the derived object are new objects: retirement state is not copied.
  basic_hazard_pointer_obj_base(const basic_hazard_pointer_obj_base&) noexcept : retired_header() {}
  basic_hazard_pointer_obj_base(basic_hazard_pointer_obj_base&&) noexcept : retired_header() {}
  basic_hazard_pointer_obj_base& operator=(const basic_hazard_pointer_obj_base&) noexcept { return *this; }
  basic_hazard_pointer_obj_base& operator=(basic_hazard_pointer_obj_base&&) noexcept { return *this; }
  ~basic_hazard_pointer_obj_base() = default;

 private:
  static void reclaim_object(detail::retired_header* h) noexcept {
    auto* self = static_cast<basic_hazard_pointer_obj_base*>(h);
    D* stored = std::launder(reinterpret_cast<D*>(self->deleter_storage_));
    D d(std::move(*stored));
    stored->~D();
    d(static_cast<T*>(self));
  }

  // The deleter is constructed only at retire (D need not be default constructible).
  alignas(D) unsigned char deleter_storage_[std::is_empty_v<D> ? 1 : sizeof(D)];
};

template <class T, class D = std::default_delete<T>>
using hazard_pointer_obj_base = basic_hazard_pointer_obj_base<T, D, detail::std_sync>;

template <class Sync>
class basic_hazard_pointer {
  template <class U>
  using atomic = typename Sync::template atomic<U>;
  using record = detail::hazard_record<Sync>;

 public:
  basic_hazard_pointer() noexcept = default; // empty
  basic_hazard_pointer(basic_hazard_pointer&& other) noexcept : record_(std::exchange(other.record_, nullptr)) {}
  basic_hazard_pointer& operator=(basic_hazard_pointer&& other) noexcept {
    if (this != &other) {
      release();
      record_ = std::exchange(other.record_, nullptr);
    }
    return *this;
  }
  ~basic_hazard_pointer() { release(); }

  [[nodiscard]] bool empty() const noexcept { return record_ == nullptr; }

  // Loads src until the value is protected; returns it. Precondition: !empty().
  template <class T>
  T* protect(const atomic<T*>& src) noexcept {
    // (H0) relaxed: only a candidate; try_protect validates it with an acquire load (H3).
    T* ptr = src.load(std::memory_order_relaxed);
    while (!try_protect(ptr, src)) {
    }
    return ptr;
  }

  // Protects ptr if src still holds it after the protection is published (returns true); otherwise
  // stores src's current value in ptr, clears the protection and returns false.
  template <class T>
  bool try_protect(T*& ptr, const atomic<T*>& src) noexcept {
    if (record_->asymmetric)
      return try_protect_impl<detail::fence_mode::asymmetric>(ptr, src);
    return try_protect_impl<detail::fence_mode::symmetric>(ptr, src);
  }

  // Protects ptr without validation. Precondition: this store happens-before ptr is retired (ptr is
  // not retired yet and cannot be until after this call, e.g. it is owned by the caller or only a
  // later operation ordered after this one can unlink it, as in ms_queue's pop). Handing over an
  // object that may already be retired from another hazard pointer is NOT covered: a scan reads the
  // slots one by one, and may read this slot before the store and the other after its release.
  // To move a protection between hazard pointers, swap them instead.
  template <class T>
  void reset_protection(const T* ptr) noexcept {
    assert(record_ != nullptr && "hazard_pointer::reset_protection on an empty hazard_pointer");
    // (H4) release: pairs with the scan's acquire (S3).
    record_->slot.store(ptr, std::memory_order_release);
  }
  void reset_protection(std::nullptr_t = nullptr) noexcept {
    assert(record_ != nullptr && "hazard_pointer::reset_protection on an empty hazard_pointer");
    // (H4) release: every use made under the previous protection happens-before a scan that reads
    // this value (S3).
    record_->slot.store(nullptr, std::memory_order_release);
  }

  void swap(basic_hazard_pointer& other) noexcept { std::swap(record_, other.record_); }
  friend void swap(basic_hazard_pointer& a, basic_hazard_pointer& b) noexcept { a.swap(b); }

  // The protect loop with a fixed fence mode (the benchmark measures both).
  template <detail::fence_mode Mode, class T>
  bool try_protect_impl(T*& ptr, const atomic<T*>& src) noexcept {
    assert(record_ != nullptr && "hazard_pointer::try_protect on an empty hazard_pointer");
    T* old = ptr;
    Sync::preempt(); // stress builds: ptr may be retired and freed before it is published
    // (H1) release: as H4; the store-load order with H3 comes from the fence below.
    record_->slot.store(old, std::memory_order_release);
    Sync::template light_fence<Mode>(); // (H2) pairs with heavy_fence in the scan (S2)
    // (H3) acquire: pairs with the release store that published *ptr in the data structure.
    ptr = src.load(std::memory_order_acquire);
    if (old == ptr)
      return true;
    reset_protection();
    return false;
  }

 private:
  template <class S>
  friend basic_hazard_pointer<S> make_hazard_pointer(basic_hazard_pointer_domain<S>&);
  template <class S>
  friend basic_hazard_pointer<S> make_hazard_pointer_uncached(basic_hazard_pointer_domain<S>&);
  friend basic_hazard_pointer<detail::std_sync> make_hazard_pointer();
  explicit basic_hazard_pointer(record* r) noexcept : record_(r) {}

  void release() noexcept {
    if (record_ == nullptr)
      return;
    reset_protection();
    detail::hazard_thread_cache<Sync>& tls = detail::hazard_tls<Sync>();
    if (record_->cacheable && tls.size < tls.limit)
      tls.records[tls.size++] = record_; // stays active: cached for this thread's next use
    else
      basic_hazard_pointer_domain<Sync>::release_record(record_);
    record_ = nullptr;
  }

  record* record_ = nullptr;
};

using hazard_pointer = basic_hazard_pointer<detail::std_sync>;

// Returns a non-empty hazard pointer of `domain`. Throws std::bad_alloc if a new hazard record is
// needed and cannot be allocated.
template <class Sync>
OTLPCONC_NOINLINE basic_hazard_pointer<Sync> make_hazard_pointer_uncached(basic_hazard_pointer_domain<Sync>& domain);
template <class Sync>
OTLPCONC_ALWAYS_INLINE basic_hazard_pointer<Sync> make_hazard_pointer(basic_hazard_pointer_domain<Sync>& domain) {
  detail::hazard_thread_cache<Sync>& tls = detail::hazard_tls<Sync>();
  if (OTLPCONC_LIKELY(tls.size > 0) && domain.is_default())
    return basic_hazard_pointer<Sync>(tls.records[--tls.size]);
  return make_hazard_pointer_uncached(domain);
}
// The slow path, kept out of line so that the cached path above saves no registers.
template <class Sync>
OTLPCONC_NOINLINE basic_hazard_pointer<Sync> make_hazard_pointer_uncached(basic_hazard_pointer_domain<Sync>& domain) {
  detail::hazard_thread_cache<Sync>& tls = detail::hazard_tls<Sync>();
  if constexpr (!Sync::is_model) // a model's threads are fibers: no thread_local destructors
    if (!tls.registered && !tls.exited)
      detail::register_hazard_thread_exit<Sync>();
  return basic_hazard_pointer<Sync>(domain.acquire_record());
}
inline hazard_pointer make_hazard_pointer() {
  // Only records of the default domain are cached, so a cached record needs no domain check.
  detail::hazard_thread_cache<detail::std_sync>& tls = detail::hazard_tls<detail::std_sync>();
  if (OTLPCONC_LIKELY(tls.size > 0))
    return hazard_pointer(tls.records[--tls.size]);
  return make_hazard_pointer_uncached(hazard_pointer_default_domain());
}

namespace detail {

template <class Sync>
struct hazard_thread_exit_guard {
  ~hazard_thread_exit_guard() {
    hazard_thread_cache<Sync>& tls = hazard_tls<Sync>();
    for (int i = 0; i < tls.size; ++i)
      basic_hazard_pointer_domain<Sync>::release_record(tls.records[i]);
    tls.size = 0;
    tls.exited = true;
    tls.limit = 0;
  }
};

template <class Sync>
void register_hazard_thread_exit() noexcept {
  // Constructing a thread_local with a destructor registers it with the C++ runtime for this thread.
  static thread_local hazard_thread_exit_guard<Sync> guard;
  (void)guard;
  hazard_tls<Sync>().registered = true;
  hazard_tls<Sync>().limit = hazard_thread_cache<Sync>::capacity;
}

} // namespace detail

} // namespace otlpconc
