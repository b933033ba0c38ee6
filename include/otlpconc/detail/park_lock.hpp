// otlpconc/detail/park_lock.hpp: a mutex that spins for a moment, then parks. The shard lock of
// sharded_lru_cache.
//
// Why not std::mutex: a shard's locked sections are short (a put or an erase; with read_buffering
// off, also a hit's move to the front), so a thread that finds the lock held often finds it free
// again soon. glibc's mutex parks at once (a futex wait, and a futex wake in the unlocker); this lock
// first re-tries for `spins` rounds of `pause` (their length depends on the CPU; not timed here)
// and parks only if the holder is still inside (it may be preempted: spinning longer would waste
// the time slice it needs).
// Measured in docs/sharded_lru.md ("The shard lock").
//
// States: 0 free, 1 held, 2 held and a thread may be parked.
//   - lock(): CAS 0 -> 1 (K1); while spinning, the same CAS when the state reads 0 (K2); then
//     exchange(2) (K3): if it returned 0 the lock is taken (marked 2, since this thread cannot know
//     whether others are parked: its unlock then calls a wake-up that may find nobody), otherwise
//     park while the state is 2 (K4, std::atomic::wait, a futex on Linux) and exchange again;
//   - unlock(): exchange(0) (K5); if it returned 2, wake one parked thread (K6).
// No lost wake-up: a thread parks only on the value 2, and atomic::wait re-checks the value as it
// goes to sleep (an unlock between a thread's K3 and its sleep leaves 0: it does not sleep). Only a
// K3 that did not take the lock leaves a thread that may park, and that K3 wrote 2. The invariant:
// while a thread is parked or about to park, either the state is 2 or a K5 that read 2 has woken
// someone since; a K1 or K2 may take a free lock as 1 while threads are parked, but only after such
// a K5 woke one of them, whose K3 then writes 2 over the 1 (or, if another K3 wrote 2 first, it
// sleeps again inside atomic::wait, and the thread that wrote 2 carries the invariant). So every
// unlock that leaves parked threads behind reads 2 and wakes one. Checked by the model tests
// (tests/model, "[park_lock]": mutual exclusion as a data race on the guarded variable, a lost
// wake-up as a deadlock), the unit test tests/test_park_lock.cpp and the stress test
// stress/stress_park_lock.cpp.
//
// Progress: blocking (a mutex). Not recursive, no fairness (a spinner may overtake a woken thread).
// Meets Lockable: std::lock_guard, std::unique_lock and try_lock work.
#pragma once

#include "otlpconc/detail/backoff.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/sync.hpp"

#include <atomic>
#include <cstdint>

namespace otlpconc::detail {

template <class Sync = std_sync>
class basic_park_lock {
 public:
  // Rounds of re-trying before parking. Under the model checker one round: each round is a
  // scheduling point and the spin adds nothing to what the search can reach.
  static constexpr int spins = Sync::is_model ? 1 : 64;

  basic_park_lock() = default;
  basic_park_lock(const basic_park_lock&) = delete;
  basic_park_lock& operator=(const basic_park_lock&) = delete;

  void lock() noexcept {
    if (OTLPCONC_LIKELY(try_lock()))
      return;
    lock_contended();
  }

  // Whether the lock is held and marked "a thread may be parked" (2): for tests, which use it to
  // know that a waiter ran out of spins. (K7) relaxed: a snapshot that orders nothing and pairs
  // with nothing; it may be stale as soon as read.
  bool contended() const noexcept { return state_.load(std::memory_order_relaxed) == 2; }

  bool try_lock() noexcept {
    std::uint32_t expected = 0;
    // (K1) acquire on success: pairs with the release in K5, so this thread's critical section
    // happens after the previous holder's.
    return state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }

  void unlock() noexcept {
    // (K5) release: pairs with the acquire of K1, K2 or K3 in the next holder.
    if (OTLPCONC_UNLIKELY(state_.exchange(0, std::memory_order_release) == 2))
      wake();
  }

 private:
  // The slow paths stay out of line: the uncontended lock() and unlock() are one atomic operation
  // each, small enough to inline at every call site without growing it.
  OTLPCONC_NOINLINE void lock_contended() noexcept {
    for (int i = 0; i < spins; ++i) {
      if constexpr (Sync::is_model)
        Sync::yield();
      else
        cpu_relax();
      std::uint32_t expected = 0;
      // (K2) acquire on success: as K1. The relaxed load first keeps a spinner from taking the
      // line exclusive while the holder still has it.
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed))
        return;
    }
    // (K3) acquire when it returns 0: pairs with the release in K5, as K1.
    while (state_.exchange(2, std::memory_order_acquire) != 0) {
      Sync::preempt(); // stress builds: the unlock and other lockers run between K3 and the park
      // (K4) relaxed: only decides whether to sleep; the next K3 orders the critical section.
      state_.wait(2, std::memory_order_relaxed);
    }
  }

  OTLPCONC_NOINLINE void wake() noexcept {
    Sync::preempt();     // stress builds: a locker may take the lock before the wake-up
    state_.notify_one(); // (K6) wakes one thread parked in K4
  }

  typename Sync::template atomic<std::uint32_t> state_{0};
};

using park_lock = basic_park_lock<>;

} // namespace otlpconc::detail
