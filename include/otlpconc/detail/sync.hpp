// otlpconc/detail/sync.hpp: the one seam through which the lock-free primitives reach atomics,
// fences, per-thread state, spin steps and waits.
//
// A primitive takes a Sync policy as a template parameter, defaulted to std_sync:
//     template <class T, class Sync = detail::std_sync> class chase_lev_deque;
// and writes its shared state as `typename Sync::template atomic<U>`, its fences as
// `Sync::thread_fence(order)`, a step of a spin loop as `Sync::yield()`, its per-thread state as
// `Sync::template tls<Tag, T>()`, and marks with `Sync::preempt()` the instants where a preemption
// exposes a bug (schedule noise in the stress build, detail/schedule_noise.hpp; nothing otherwise). std_sync is aliases
// and one-line inline functions over the standard library: the default instantiation is the code the primitive would be
// without the seam (zero cost; the benchmarks show it). The model-checking build (tests/model) instantiates the same
// primitives with relacy_sync, a policy of the same shape over Relacy, which explores the
// interleavings and the weak-memory reorderings of the C++ memory model. Nothing under include/
// ever includes Relacy.
//
// Hooks for the hazard pointers' store-load barrier: the fence mode, the light (reader) side and
// the heavy (reclaimer) side (detail/asymmetric_fence.hpp in std_sync; a thread fence / a
// system-wide fence in the model, which is how membarrier behaves).
#pragma once

#include "otlpconc/detail/asymmetric_fence.hpp"
#if defined(OTLPCONC_SCHEDULE_NOISE) && OTLPCONC_SCHEDULE_NOISE
#include "otlpconc/detail/schedule_noise.hpp"
#endif

#include <atomic>
#include <cstddef>
#include <thread>

namespace otlpconc::detail {

// Per-thread storage of std_sync: one zero-initialized T per (Tag, thread), a plain TLS access.
template <class Tag, class T>
inline constinit thread_local T std_sync_tls{};

struct std_sync {
  static constexpr bool is_model = false;

  template <class T>
  using atomic = std::atomic<T>;

  static void thread_fence(std::memory_order order) noexcept { std::atomic_thread_fence(order); }

  // One step of a spin or retry loop.
  static void yield() noexcept { std::this_thread::yield(); }

  // A point where a preemption exposes interleavings (detail/schedule_noise.hpp): nothing at all
  // unless the build defines OTLPCONC_SCHEDULE_NOISE (the stress tests).
  static void preempt() noexcept {
#if defined(OTLPCONC_SCHEDULE_NOISE) && OTLPCONC_SCHEDULE_NOISE
    schedule_noise::point();
#endif
  }

  template <class Tag, class T>
  static T& tls() noexcept {
    return std_sync_tls<Tag, T>;
  }

  // A small number per thread, 0, 1, 2, ... in the order threads first ask.
  static std::size_t thread_number() noexcept {
    struct tag {};
    static std::atomic<std::size_t> next{0};
    std::size_t& n = std_sync_tls<tag, std::size_t>;
    if (n == 0)
      n = next.fetch_add(1, std::memory_order_relaxed) + 1; // relaxed: only a spreading hint
    return n - 1;
  }

  static fence_mode hazard_fence_mode() noexcept {
    return current_fence_mode();
  }
  template <fence_mode Mode>
  static void light_fence() noexcept {
    detail::light_fence<Mode>();
  }
  static bool heavy_fence() noexcept {
    return detail::heavy_fence();
  }
};

} // namespace otlpconc::detail
