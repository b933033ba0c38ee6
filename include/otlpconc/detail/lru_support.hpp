// otlpconc/detail/lru_support.hpp: the parts of sharded_lru_cache that stand on their own.
//
//   lru_value<V>          an entry's value: immutable, or (trivially copyable V of at most 64 bytes)
//                         overwritten in place under the shard lock and copied by lock-free readers
//                         without tearing.
//   lru_account           a shard's retired charge, moved in steps to the cache's window.
//   lru_cache_window      the cache-wide retired charge: past its budget, it forces one
//                         hazard-pointer scan.
//   lru_wait_graph        the process-wide wait-for graph of get_or_load: which thread waits for
//                         which load, so a wait that would close a cycle throws instead of hanging.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/hazard_pointer.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace otlpconc::detail {

// A hint to start fetching a line (no effect on the program's meaning).
inline void lru_prefetch(const void* p, bool for_write) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  if (for_write)
    __builtin_prefetch(p, 1);
  else
    __builtin_prefetch(p, 0);
#else
  (void)p;
  (void)for_write;
#endif
}

// Values that put overwrites in place: trivially copyable (a copy is a copy of bytes, so a reader
// can assemble one from atomic words) and small enough that a second slot per entry is cheap.
template <class V>
inline constexpr bool lru_value_in_place = std::is_trivially_copyable_v<V> && sizeof(V) <= 64;

template <class V, bool InPlace = lru_value_in_place<V>>
class lru_value;

// An immutable value: put on an existing key installs a new entry.
template <class V>
class lru_value<V, false> {
 public:
  template <class VV>
  explicit lru_value(VV&& v) : value_(std::forward<VV>(v)) {}
  V load() const { return value_; }
  const V& ref() const noexcept { return value_; }

 private:
  const V value_;
};

// A value overwritten in place by put. Stored as atomic 64-bit words, so no access is a data race.
//
// One word (sizeof(V) <= 8): a store replaces the whole value at once; a load returns one of the
// values stored.
//
// More words: two slots and a count of completed stores, seq. Store number k (under the shard lock,
// so stores are totally ordered) writes slot k % 2, then publishes seq = k. A reader reads seq,
// copies the slot seq names, and accepts the copy if seq has not changed since: the slot it copied
// is rewritten only by store seq + 2, which starts after store seq + 1 has completed, so an
// unchanged seq proves no store overlapped the copy. A reader retries only when a store completed
// during its copy: a writer preempted in the middle of a store never holds readers up (it writes
// the slot readers are not reading), so loads stay lock-free. (A plain seqlock with one slot would
// make readers spin until such a writer resumes.)
template <class V>
class lru_value<V, true> {
  static constexpr std::size_t words = (sizeof(V) + 7) / 8;
  static constexpr bool single = words == 1;
  using word_array = std::array<std::uint64_t, words>;
  struct no_seq {};
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                "sharded_lru_cache: in-place values need lock-free 64-bit atomics");

 public:
  explicit lru_value(const V& v) noexcept {
    const word_array w = encode(v);
    for (std::size_t i = 0; i < words; ++i)
      // (V0) relaxed: the entry is not shared yet; the release store that links it (I1/I2 in
      // sharded_lru.hpp) publishes it.
      slots_[0][i].store(w[i], std::memory_order_relaxed);
  }

  // A consistent copy. Any thread, while the entry is protected or pinned.
  V load() const noexcept {
    if constexpr (single) {
      // (V1) relaxed: the word is the whole value, and every value it ever holds was put for this
      // entry's key; the first one is published by the link (V0), later ones need no ordering.
      return decode({slots_[0][0].load(std::memory_order_relaxed)});
    } else {
      for (;;) {
        // (V2) acquire: pairs with the release store of seq (V6): the slot it names is complete.
        const std::uint64_t s = seq_.load(std::memory_order_acquire);
        word_array w;
        for (std::size_t i = 0; i < words; ++i)
          // (V3) relaxed; acquire under TSAN, which does not model the fences: pairs with V5 (see
          // V4).
          w[i] = slots_[s & 1][i].load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_acquire));
        // (V4) acquire fence: pairs with the release fence (V7) of a store whose words V3 read:
        // then that store's predecessor, which published seq + 1, happens-before V8.
        std::atomic_thread_fence(std::memory_order_acquire);
        // (V8) relaxed: ordered after V3 by V4.
        if (seq_.load(std::memory_order_relaxed) == s)
          return decode(w);
      }
    }
  }

  // Overwrites the value. Only under the shard lock (one writer at a time, ordered by the lock).
  void store(const V& v) noexcept {
    const word_array w = encode(v);
    if constexpr (single) {
      // (V9) relaxed: see V1.
      slots_[0][0].store(w[0], std::memory_order_relaxed);
    } else {
      // (V10) relaxed: seq is written only under the shard lock, which orders the previous store.
      const std::uint64_t s = seq_.load(std::memory_order_relaxed) + 1;
      // (V7) release fence: pairs with the reader's acquire fence (V4).
      std::atomic_thread_fence(std::memory_order_release);
      for (std::size_t i = 0; i < words; ++i)
        // (V5) relaxed; release under TSAN (pairs with V3's acquire there).
        slots_[s & 1][i].store(w[i], OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_release));
      // (V6) release: pairs with V2.
      seq_.store(s, std::memory_order_release);
    }
  }

 private:
  static word_array encode(const V& v) noexcept {
    word_array w{};
    std::memcpy(w.data(), std::addressof(v), sizeof(V));
    return w;
  }
  static V decode(const word_array& w) noexcept {
    std::array<unsigned char, sizeof(V)> bytes;
    std::memcpy(bytes.data(), w.data(), sizeof(V));
    return std::bit_cast<V>(bytes);
  }

  [[no_unique_address]] std::conditional_t<single, no_seq, std::atomic<std::uint64_t>> seq_{};
  std::atomic<std::uint64_t> slots_[single ? 1 : 2][words];
};

// Charge accounting of a cache, in two levels: each shard counts the charge it retires in its own
// window (on the line its writers already hold) and, when the window passes the shard's `step`,
// moves it into the cache's window; the move that takes the cache's window past its `budget`
// closes it (resets it to zero) and runs one hazard-pointer scan, which reclaims every retired
// object no hazard pointer protects, this window's entries included. So the charge the cache has
// retired and not yet had reclaimed stays near B = budget + the steps, whatever the entries weigh and
// whether or not the cache stays busy (the default domain alone scans after a number of objects,
// whatever they weigh, and only when something retires).
//
// Why two levels: a forced scan is a membarrier, which costs about 16-24 us when another core runs
// the process (it interrupts that core: bench component hazard_scan_fence). With one window per shard of half the
// shard's capacity, a cache scanned once per B_s of removed charge, and B_s shrinks as shards multiply (10^5 entries in
// 256 shards: a scan every 195 evictions); one cache-wide counter would put every removal of every thread on one line;
// the steps leave one add to that line per `step` of a shard's removals. The budget: step_s = floor(B_s / 4) and budget
// = B - sum(step_s), so windows at rest hold at most B = sum(B_s) in total, the bound the header's formula uses
// (docs/sharded_lru.md).
struct lru_cache_window {
  std::atomic<std::size_t> window{0}; // charge moved in from the shards since the last forced scan
  std::size_t budget = 0;             // B - sum of the steps; set before the cache is shared

  void add(std::size_t charge) noexcept {
    // (A3) acq_rel: the release half publishes every retire the shard's claim (A2) acquired, and
    // the retires sequenced before it, to the thread whose CAS closes this window (A4).
    std::size_t current = window.fetch_add(charge, std::memory_order_acq_rel) + charge;
    while (current > budget) {
      // (A4) acq_rel on success: the acquire pairs with every A3 in the window, so each retire it
      // counted happens-before the scan below; relaxed on failure (current is reloaded, and if
      // another thread closed the window meanwhile it is back under the budget: nothing to do).
      if (window.compare_exchange_weak(current, 0, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        // One scan, not hazard_pointer_clean_up(): the retires this window counted are on the
        // domain's lists before it starts, and repeating while scans reclaim something (as
        // clean_up does) would, with other threads retiring, issue a membarrier per round.
        hazard_pointer_default_domain().scan_now();
        return;
      }
    }
  }
};

struct lru_account {
  std::atomic<std::size_t> window{0}; // charge this shard retired and has not moved to the cache's
  std::size_t step = 0;               // floor(B_s / 4), B_s = floor(shard capacity / 2); set before sharing
  std::size_t budget = 0;             // B_s (reported by reclamation_budget())

  // Called after entries weighing `charge` in total were retired.
  void retired(std::size_t charge, lru_cache_window& cache) noexcept {
    // (A1) acq_rel: the release half publishes the retires sequenced before it to the thread whose
    // CAS claims this window (A2); an RMW continues the release sequence of earlier adds.
    std::size_t current = window.fetch_add(charge, std::memory_order_acq_rel) + charge;
    while (current > step) {
      // (A2) acq_rel on success: the acquire pairs with every A1 in the window, so each retire it
      // claimed happens-before the add to the cache's window (A3); relaxed on failure (current is
      // reloaded; if another thread claimed the window meanwhile it is back under the step).
      if (window.compare_exchange_weak(current, 0, std::memory_order_acq_rel, std::memory_order_relaxed)) {
        cache.add(current);
        return;
      }
    }
  }
};

// The part of a running load the wait-for graph looks at. `finished` is read and written only under
// the graph's mutex.
struct lru_load_base {
  std::thread::id loader = std::this_thread::get_id();
  bool finished = false;
};

// Which thread waits for which load, process-wide (a cycle may run through several caches). A load
// has one loader thread; a waiting thread waits for one load. Before waiting for load L, a thread
// follows L -> L's loader -> the load that loader waits for -> ... under the mutex; reaching itself
// means the wait would never end, and it throws std::logic_error instead. A finished load (its
// result is being delivered) ends the walk: its waiters are about to wake. Every registration is
// checked under the mutex, so the registered waits never form a cycle and the walk ends.
//
// Only waits inside get_or_load are edges. A loader that blocks on anything else (a thread join, a
// future, a lock) that in turn waits for a load is not seen, and deadlocks.
class lru_wait_graph {
 public:
  static lru_wait_graph& instance() {
    // Never destroyed: threads may still wait for loads during static destruction.
    static lru_wait_graph* const graph = new lru_wait_graph;
    return *graph;
  }

  // Registers the calling thread as waiting for `load`, or throws std::logic_error if the wait
  // would close a cycle. The caller keeps `load` alive until end_wait().
  void begin_wait(const lru_load_base& load) {
    const std::thread::id me = std::this_thread::get_id();
    std::lock_guard lock(mutex_);
    const lru_load_base* l = &load;
    for (std::size_t hops = 0; hops <= waiting_.size(); ++hops) {
      if (l->finished)
        break;
      if (l->loader == me)
        throw std::logic_error(hops == 0
                                   ? "sharded_lru_cache::get_or_load: the loader for a key asked for the same key"
                                   : "sharded_lru_cache::get_or_load: waiting for this load would deadlock: its "
                                     "loader waits, through a chain of " +
                                         std::to_string(hops) + " other load(s), for a load this thread is running");
      const auto it = waiting_.find(l->loader);
      if (it == waiting_.end())
        break; // that loader is running, not waiting
      l = it->second;
    }
    waiting_.emplace(me, &load);
  }

  void end_wait() noexcept {
    std::lock_guard lock(mutex_);
    waiting_.erase(std::this_thread::get_id());
  }

  // The load's result is about to be delivered (before its promise is fulfilled).
  void finish(lru_load_base& load) noexcept {
    std::lock_guard lock(mutex_);
    load.finished = true;
  }

  // How many threads wait for a load, in every cache of the process (tests wait for waiters).
  std::size_t waiters() {
    std::lock_guard lock(mutex_);
    return waiting_.size();
  }

 private:
  lru_wait_graph() = default;
  std::mutex mutex_;
  std::unordered_map<std::thread::id, const lru_load_base*> waiting_;
};

} // namespace otlpconc::detail
