// otlpconc/detail/event_count.hpp: an event count, the parking primitive of work_stealing_pool.
//
// A waiter announces itself (prepare_wait), re-checks its condition, then either cancels or sleeps
// until the epoch moves (wait). A notifier publishes its work first, then notifies. The announce and
// the notifier's check of waiters are separated from the re-check / publication by seq_cst fences
// (a Dekker pair), so either the waiter's re-check sees the work, or the notifier sees the waiter and
// moves the epoch: no wake-up is lost. Notifying costs a fence and a load when nobody sleeps.
// Sleeping uses C++20 std::atomic::wait (a futex on Linux): an idle thread uses no CPU.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/sync.hpp"

#include <atomic>
#include <cstdint>

namespace otlpconc::detail {

// Sync: the seam of detail/sync.hpp (std_sync; the model checker's policy in tests/model).
template <class Sync = std_sync>
class basic_event_count {
  template <class T>
  using atomic = typename Sync::template atomic<T>;

 public:
  // Returns the key to pass to wait(). After this, re-check the condition; then call exactly one of
  // cancel_wait() or wait(key).
  std::uint32_t prepare_wait() noexcept {
    // (E1) relaxed RMW: ordered before the re-check by the fence (E2).
    waiters_->fetch_add(1, OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst));
    // (E2) seq_cst fence: pairs with the notifier's fence (E4).
    Sync::thread_fence(std::memory_order_seq_cst);
    // (E3) acquire: pairs with the release epoch increment (E5).
    return epoch_->load(std::memory_order_acquire);
  }

  void cancel_wait() noexcept {
    waiters_->fetch_sub(1, std::memory_order_relaxed); // (E1') only a count of sleepers
  }

  // Sleeps until the epoch differs from key (a notify since prepare_wait), then returns.
  void wait(std::uint32_t key) noexcept {
    Sync::preempt(); // stress builds: a notify between the park decision and the sleep
    // (E3') acquire: as E3. std::atomic::wait re-checks the value, so a notify between prepare_wait
    // and here is not lost; spurious wake-ups loop.
    while (epoch_->load(std::memory_order_acquire) == key)
      epoch_->wait(key, std::memory_order_acquire);
    waiters_->fetch_sub(1, std::memory_order_relaxed); // (E1')
  }

  // Call after publishing the work a waiter re-checks for.
  void notify_one() noexcept {
    // (E4) seq_cst fence: pairs with E2. The caller's publication (before this fence) and the
    // waiter's announcement (before E2): at least one of them is seen by the other side.
    Sync::thread_fence(std::memory_order_seq_cst);
    if (has_waiters_after_fence())
      wake_one();
  }
  void notify_all() noexcept {
    Sync::thread_fence(std::memory_order_seq_cst); // (E4)
    if (has_waiters_after_fence())
      wake_all();
  }

  // For a notifier that issues the seq_cst fence (E4) itself, once for several event counts:
  // fence, then has_waiters_after_fence() and wake_one() / wake_all() on each.
  bool has_waiters_after_fence() const noexcept {
    return waiters_->load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst)) != 0; // (E4)
  }
  void wake_one() noexcept {
    epoch_->fetch_add(1, std::memory_order_release); // (E5) release: pairs with E3
    epoch_->notify_one();
  }
  void wake_all() noexcept {
    epoch_->fetch_add(1, std::memory_order_release); // (E5)
    epoch_->notify_all();
  }

 private:
  cache_padded<atomic<std::uint32_t>> epoch_{std::in_place, 0u};
  cache_padded<atomic<std::uint32_t>> waiters_{std::in_place, 0u};
};

using event_count = basic_event_count<>;

} // namespace otlpconc::detail
