// otlpconc/detail/schedule_noise.hpp: seeded preemption at the points where an interleaving
// matters, for the stress tests only.
//
// The lock-free primitives call Sync::preempt() (detail/sync.hpp) where a thread stopped at the
// wrong instant exposes a bug: between a load and its hazard publication, between the deque's
// bottom store and its top load, between a thief's read of a slot and its claim, between a park
// decision and the sleep. In a user build std_sync::preempt() is an empty inline function: no code.
// A build that defines OTLPCONC_SCHEDULE_NOISE=1 (the stress tests' target, never the library's)
// makes each such point, at random, yield the processor (1 in 16 points) or sleep 50 us (1 in 256),
// so that on 2 cores a preemption lands inside the windows a plain stress run almost never hits.
//
// The decisions are a pseudo-random sequence per thread, derived from one seed and the thread's
// number (its order of first use): the same seed gives every thread the same sequence of decisions
// (the interleaving itself still depends on the operating system). The seed is
// OTLPCONC_SCHEDULE_SEED when set, otherwise drawn from the clock; the stress executable prints it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace otlpconc::detail::schedule_noise {

inline std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The process's seed, chosen once.
inline std::uint64_t seed() noexcept {
  static const std::uint64_t value = [] {
    if (const char* env = std::getenv("OTLPCONC_SCHEDULE_SEED"); env != nullptr && *env != '\0')
      return static_cast<std::uint64_t>(std::strtoull(env, nullptr, 0));
    return mix(static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  }();
  return value;
}

// One preemption point.
inline void point() noexcept {
  static std::atomic<std::uint64_t> threads{0};
  thread_local std::uint64_t state = 0;
  if (state == 0) {
    // relaxed: only numbers the threads; nothing is published through it.
    const std::uint64_t n = threads.fetch_add(1, std::memory_order_relaxed) + 1;
    state = mix(seed() + n * 0x9e3779b97f4a7c15ULL) | 1;
  }
  state ^= state << 13; // xorshift64
  state ^= state >> 7;
  state ^= state << 17;
  if ((state & 0xff) == 0)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  else if ((state & 0xf) == 0)
    std::this_thread::yield();
}

} // namespace otlpconc::detail::schedule_noise
