// otlpconc/chase_lev_deque.hpp: Chase-Lev work-stealing deque (single owner, many thieves), with
// the C11 orderings of Le, Pop, Cohen and Zappa Nardelli (PPoPP 2013).
//
// What: a growable circular array of atomic slots with two indices. The owner pushes and pops at
//   the bottom (LIFO: the hottest task, still in cache); thieves steal from the top (FIFO: the
//   oldest, usually the biggest piece of work).
// When to use: per-worker task queues of a work-stealing scheduler (work_stealing_pool); any
//   producer that mostly consumes its own items while idle threads take the surplus.
// When not to: several producers (use ms_queue); when consumers need FIFO among themselves; large
//   or non-trivially-copyable items (store pointers to them).
// Guarantees:
//   - push and pop are wait-free for the owner except push when the array is full (it allocates an
//     array twice the size, copies, and may throw std::bad_alloc, leaving the deque unchanged).
//     pop never blocks; it does one CAS only when it races thieves for the last item.
//   - steal is lock-free: it retries only when another thief or the owner took the item it read.
//     steal() returns std::nullopt only if the deque was empty at some instant during the call.
//   - Every pushed item is returned exactly once, by pop, steal or steal_batch.
//   - Memory: the current array, plus replaced arrays until the hazard pointer domain reclaims them.
//     Arrays only grow by doubling, so the replaced ones add up to less than the current one:
//     at most 2x the current capacity in slots once the hazard pointer domain has scanned; until
//     then replaced arrays wait in the default domain's garbage (a scan runs after about 1000
//     retires, or on hazard_pointer_clean_up(); see hazard_pointer.hpp). A replaced array is never freed while a
//     thief may read it: thieves hold a hazard pointer on the array they read.
// Ordering: a push happens-before the pop or steal that returns the item (release fence before the
//   bottom store, acquire load of bottom by thieves).
// Requirements on T: trivially copyable, and std::atomic<T> lock-free (pointers, integers, small
//   ids): thieves read a slot that the owner may overwrite after a wrap-around, so slots are atomics.
// Threads: push, pop, bottom_index and the `into` side of steal_batch only on the owning thread;
//   steal, steal_if, steal_batch, size_approx and empty on any thread.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/backoff.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/sync.hpp"
#include "otlpconc/hazard_pointer.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>

namespace otlpconc {

// Sync: the seam of detail/sync.hpp (std_sync by default; the model checker instantiates it with its
// own policy, tests/model).
template <class T, class Sync = detail::std_sync>
class chase_lev_deque {
  template <class U>
  using atomic = typename Sync::template atomic<U>;

  static_assert(std::is_trivially_copyable_v<T>,
                "chase_lev_deque<T>: T must be trivially copyable (a pointer, an integer or a small id); "
                "store a pointer to anything larger");
  static_assert(std::atomic<T>::is_always_lock_free,
                "chase_lev_deque<T>: std::atomic<T> must be lock-free (T of 1, 2, 4 or 8 bytes, or 16 with "
                "-mcx16); store a pointer to anything larger");

  // A power-of-two circular array. Replaced arrays are retired through hazard pointers.
  struct ring : basic_hazard_pointer_obj_base<ring, std::default_delete<ring>, Sync> {
    explicit ring(std::int64_t capacity)
        : mask(capacity - 1), slots(new atomic<T>[static_cast<std::size_t>(capacity)]) {}
    std::int64_t capacity() const noexcept { return mask + 1; }
    // Slots are relaxed: the indices (and the fences around them) order them.
    T get(std::int64_t i) const noexcept {
      return slots[static_cast<std::size_t>(i & mask)].load(std::memory_order_relaxed);
    }
    void put(std::int64_t i, T v) noexcept {
      slots[static_cast<std::size_t>(i & mask)].store(v, std::memory_order_relaxed);
    }
    const std::int64_t mask;
    const std::unique_ptr<atomic<T>[]> slots;
  };

 public:
  using value_type = T;

  static constexpr std::size_t default_capacity = 64;
  static constexpr std::size_t max_capacity = std::size_t{1} << 40;

  // The initial capacity is rounded up to a power of two (at least 2). Throws std::invalid_argument
  // for 0 and std::length_error above max_capacity.
  explicit chase_lev_deque(std::size_t initial_capacity = default_capacity) {
    if (initial_capacity == 0)
      throw std::invalid_argument("chase_lev_deque: initial capacity must be at least 1");
    if (initial_capacity > max_capacity)
      throw std::length_error("chase_lev_deque: initial capacity exceeds max_capacity (2^40)");
    std::size_t cap = 2;
    while (cap < initial_capacity)
      cap *= 2;
    // (C0) relaxed: the deque is not shared yet.
    ring_.store(new ring(static_cast<std::int64_t>(cap)), std::memory_order_relaxed);
  }
  chase_lev_deque(const chase_lev_deque&) = delete;
  chase_lev_deque& operator=(const chase_lev_deque&) = delete;

  // Precondition: no thread is using the deque. Items still inside are dropped (T is trivially
  // destructible). Replaced arrays are freed by the hazard pointer domain.
  ~chase_lev_deque() { delete ring_.load(std::memory_order_relaxed); } // (C0)

  // Owner only. Throws std::bad_alloc (or std::length_error past max_capacity) if the array must
  // grow and cannot; the deque is then unchanged.
  OTLPCONC_ALWAYS_INLINE void push(T item) {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed); // (C1) relaxed: only the owner writes bottom
    // (C2) acquire: pairs with the thieves' seq_cst CAS on top (C8): a thief's read of a slot
    // happens-before the owner overwrites that slot after a wrap-around.
    const std::int64_t t = top_->load(std::memory_order_acquire);
    ring* a = ring_.load(std::memory_order_relaxed); // (C3) relaxed: only the owner writes ring_
    if (b - t > a->capacity() - 1)
      a = grow(a, t, b); // the fix from model checking: continue with the new array, not the old
    a->put(b, item);
    // (C4) release fence: the slot store above happens-before any thief's or pop's acquire read of
    // the bottom value stored below (C7).
    Sync::thread_fence(std::memory_order_release);
    bottom_.store(b + 1, OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_release)); // (C4')
  }

  // Owner only. LIFO: the most recently pushed item, or std::nullopt if the deque is empty.
  OTLPCONC_ALWAYS_INLINE std::optional<T> pop() noexcept {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1; // (C1)
    ring* a = ring_.load(std::memory_order_relaxed);                    // (C3)
    // (C5) Announce the claim of slot b, then read top. The seq_cst fence orders this store before
    // the load of top, against the thieves' fence between their load of top and of bottom (C6):
    // either the thief sees the smaller bottom, or we see its incremented top.
    bottom_.store(b, OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst));
    Sync::preempt(); // stress builds: thieves run between the claim of slot b and the read of top
    Sync::thread_fence(std::memory_order_seq_cst);
    std::int64_t t = top_->load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst)); // (C5)
    if (t > b) {
      bottom_.store(b + 1, std::memory_order_relaxed); // empty: undo (C1, owner's own variable)
      return std::nullopt;
    }
    T item = a->get(b);
    if (t == b) {
      // The last item: thieves may want it too. (C8) seq_cst CAS on top decides.
      const bool won = top_->compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed);
      bottom_.store(b + 1, std::memory_order_relaxed);
      if (!won)
        return std::nullopt;
    }
    return item;
  }

  // Any thread. FIFO end: the oldest item, or std::nullopt if the deque was empty at some instant
  // during the call.
  std::optional<T> steal() {
    basic_hazard_pointer<Sync> hp = make_hazard_pointer(detail::default_hazard_domain<Sync>());
    detail::basic_backoff<Sync> contention;
    for (;;) {
      std::int64_t t = 0, b = 0;
      read_indices(t, b);
      if (t >= b)
        return std::nullopt;
      T item{};
      if (try_claim(hp, t, item))
        return item;
      // Another thief, or the owner's pop of the last item, took index t: it made progress. Retry
      // after a pause that grows with the failures (detail/backoff.hpp).
      contention.pause();
    }
  }

  // Any thread. Like steal(), but takes the oldest item only if pred(item) holds; returns
  // std::nullopt if the deque was empty at some instant during the call or pred refused the oldest
  // item. pred sees a copy of the slot that another thread may take (and free what it points to)
  // at any moment: it must decide from the value alone and never dereference it. A thief that
  // refuses leaves the item where it is (a work-stealing scheduler encodes what it needs to decide
  // in the value; work_stealing_pool packs a task's fork-join depth and tree into spare bits).
  template <class Pred>
  std::optional<T> steal_if(Pred&& pred) {
    basic_hazard_pointer<Sync> hp = make_hazard_pointer(detail::default_hazard_domain<Sync>());
    detail::basic_backoff<Sync> contention;
    for (;;) {
      std::int64_t t = 0, b = 0;
      read_indices(t, b);
      if (t >= b)
        return std::nullopt;
      T item{};
      bool refused = false;
      if (try_claim(hp, t, item, [&](const T& v) {
            refused = !pred(v);
            return !refused;
          }))
        return item;
      if (refused)
        return std::nullopt;
      contention.pause();
    }
  }

  // Any thread, which must own `into`. Moves up to half of this deque's items (rounded up), at
  // most `limit`, into `into` (oldest first, so `into`'s owner pops the newest of them first), and
  // publishes them there with one bottom store. Returns how many were moved (0 if this deque was
  // empty). Each item is claimed with its own CAS on top: one CAS for the whole batch would race
  // the owner's CAS-free pop (docs/work_stealing.md explains the interleaving). Throws
  // std::invalid_argument if `into` is this deque; std::bad_alloc if `into` must grow and cannot
  // (nothing is moved then).
  std::size_t steal_batch(chase_lev_deque& into, std::size_t limit) {
    if (&into == this)
      throw std::invalid_argument("chase_lev_deque::steal_batch: cannot steal into the same deque");
    if (limit == 0)
      return 0;
    std::int64_t t = 0, b = 0;
    read_indices(t, b);
    if (t >= b)
      return 0;
    const std::int64_t want =
        std::min<std::int64_t>(static_cast<std::int64_t>(std::min<std::size_t>(limit, max_capacity)), (b - t + 1) / 2);
    // Make room in `into` first (owner side of `into`): a failure here has claimed nothing.
    const std::int64_t ib = into.bottom_.load(std::memory_order_relaxed); // (C1) of `into`
    const std::int64_t it = into.top_->load(std::memory_order_acquire);   // (C2) of `into`
    ring* ia = into.ring_.load(std::memory_order_relaxed);                // (C3) of `into`
    while (ib + want - it > ia->capacity())
      ia = into.grow(ia, it, ib);
    basic_hazard_pointer<Sync> hp = make_hazard_pointer(detail::default_hazard_domain<Sync>());
    detail::basic_backoff<Sync> contention;
    std::int64_t moved = 0;
    while (moved < want) {
      if (moved > 0 || t >= b) {
        read_indices(t, b);
        if (t >= b)
          break;
      }
      T item{};
      if (!try_claim(hp, t, item)) {
        t = b; // force a fresh read of the indices
        contention.pause();
        continue;
      }
      ia->put(ib + moved, item); // beyond into's bottom: invisible to into's thieves until (C4)
      ++moved;
    }
    if (moved > 0) {
      Sync::thread_fence(std::memory_order_release); // (C4) of `into`
      into.bottom_.store(ib + moved, OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_release));
    }
    return static_cast<std::size_t>(moved);
  }

  // Any thread. A snapshot that may be stale by the time it returns; never negative.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    // (C9) relaxed: a hint (acquire would not make it exact).
    const std::int64_t t = top_->load(std::memory_order_relaxed);
    const std::int64_t b = bottom_.load(std::memory_order_relaxed);
    return b > t ? static_cast<std::size_t>(b - t) : 0;
  }
  [[nodiscard]] bool empty() const noexcept { return size_approx() == 0; }

  // Owner only: the index the next push() writes. Items pushed earlier have smaller indices; pop()
  // takes index bottom_index() - 1. A scheduler records it to tell the items pushed after a point
  // (bottom_index() greater than the recorded value) from older ones.
  [[nodiscard]] std::int64_t bottom_index() const noexcept {
    return bottom_.load(std::memory_order_relaxed); // (C1) only the owner writes bottom
  }

  // Current array capacity. Owner only (another thread could read an array being retired).
  [[nodiscard]] std::size_t capacity() const noexcept {
    return static_cast<std::size_t>(ring_.load(std::memory_order_relaxed)->capacity()); // (C3)
  }

 private:
  // Thief side: top, then (after a seq_cst fence) bottom.
  void read_indices(std::int64_t& t, std::int64_t& b) const noexcept {
    // (C6) acquire: pairs with the seq_cst CAS (C8) of the thief or owner that last moved top.
    t = top_->load(OTLPCONC_TSAN_ORDER(std::memory_order_acquire, std::memory_order_seq_cst));
    Sync::preempt(); // stress builds: the owner pops between the thief's reads of top and bottom
    // (C6) seq_cst fence: pairs with the owner's fence in pop (C5).
    Sync::thread_fence(std::memory_order_seq_cst);
    // (C7) acquire: pairs with the release fence before the owner's bottom store (C4), so the slot
    // of index t (t < b) holds the pushed item.
    b = bottom_.load(OTLPCONC_TSAN_ORDER(std::memory_order_acquire, std::memory_order_seq_cst));
  }

  // Reads index t from the current array under a hazard pointer, then claims it with a CAS on top.
  // accept(item) may refuse the item before the CAS (steal_if); it then returns false unclaimed.
  template <class Accept = std::nullptr_t>
  bool try_claim(basic_hazard_pointer<Sync>& hp, std::int64_t t, T& item, Accept accept = nullptr) {
    // (C7'') acquire inside protect: pairs with the release publication of a grown array (C10).
    // The array read here is the one that held index t when it was pushed, or a newer one that
    // copied it; if index t was taken since, the CAS below fails.
    ring* a = hp.protect(ring_);
    item = a->get(t);
    hp.reset_protection();
    Sync::preempt(); // stress builds: the owner and other thieves run while this thief holds a copy
    if constexpr (!std::is_same_v<Accept, std::nullptr_t>) {
      if (!accept(static_cast<const T&>(item)))
        return false;
    }
    // (C8) seq_cst: one total order of claims on top among thieves and the owner's last-item pop.
    return top_->compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed);
  }

  // Owner: replaces `a` with an array twice as large holding [t, b); returns it.
  OTLPCONC_NOINLINE ring* grow(ring* a, std::int64_t t, std::int64_t b) {
    if (a->capacity() >= static_cast<std::int64_t>(max_capacity))
      throw std::length_error("chase_lev_deque: capacity would exceed max_capacity (2^40)");
    auto* bigger = new ring(a->capacity() * 2);
    for (std::int64_t i = t; i < b; ++i)
      bigger->put(i, a->get(i));
    // (C10) release: pairs with the thieves' acquire in protect (C7''): the copied slots are
    // visible through the new array. The second fix from model checking.
    ring_.store(bigger, std::memory_order_release);
    a->retire(std::default_delete<ring>(), detail::default_hazard_domain<Sync>()); // once no thief protects it
    return bigger;
  }

  // top_ is CASed by thieves; bottom_ and ring_ are written by the owner and read by thieves, so
  // they share the next line. The class is aligned to a line, so nothing else shares it.
  cache_padded<atomic<std::int64_t>> top_{std::in_place, 0};
  alignas(cache_line_size) atomic<std::int64_t> bottom_{0};
  atomic<ring*> ring_{nullptr};
};

} // namespace otlpconc
