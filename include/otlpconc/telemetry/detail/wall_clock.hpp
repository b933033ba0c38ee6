// otlpconc/telemetry/detail/wall_clock.hpp: the spans' time stamps: CLOCK_REALTIME in nanoseconds
// since the Unix epoch, read from the time-stamp counter when the kernel itself keeps time with it.
//
// Why: two time stamps per span were the largest single cost of recording one (about 30 ns each
// through the vDSO's clock_gettime on the 2-core VM the figures come from, a third of a span; a
// plain rdtsc is about half that). Where it applies (x86-64 Linux, and the kernel's clocksource is
// "tsc", which means the kernel has found the counter constant-rate and synchronized), now() is
//   anchor_ns + (rdtsc() - anchor_tsc) * scale
// with a per-thread anchor, a back-to-back pair of rdtsc and clock_gettime(CLOCK_REALTIME) taken
// again every 2^26 ticks (13 to 67 ms at 1 to 5 GHz) of the thread's use, and one process-wide
// scale (nanoseconds per tick, 32.32 fixed point) measured against CLOCK_MONOTONIC_RAW over the
// process's first 2^24 ticks or more (the system clock is used until then).
// Guarantees:
//   - Within a thread, time stamps never go back by less than 1 ms (a renewed anchor slightly
//     behind the extrapolated time is absorbed); a step of the system clock of 1 ms or more is
//     followed at the next renewal. Between renewals the error against CLOCK_REALTIME is the
//     scale's error and the clock's slewing over at most 2^26 ticks: microseconds. Each renewal
//     also checks the tick rate against CLOCK_MONOTONIC_RAW: beyond 0.1 % (the counter changed
//     frequency: a migrated VM, say), and when the kernel stops using "tsc" (checked once a second
//     at a renewal), the process goes back to clock_gettime for good, with a warning.
//   - OTLPCONC_TELEMETRY_CLOCK=system in the environment (read at the first time stamp) keeps
//     clock_gettime; everywhere else (other systems, other clocksources) it is used anyway.
//   - now() never blocks and never throws; the fast path is lock-free and touches no shared line
//     that is written (the mode and scale are written once, or when the counter is given up).
#pragma once

#include "otlpconc/detail/config.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define OTLPCONC_TELEMETRY_TSC 1
#else
#define OTLPCONC_TELEMETRY_TSC 0
#endif

namespace otlpconc::telemetry::detail {

class wall_clock {
 public:
  enum class source : int { undecided = 0, calibrating = 1, tsc = 2, system = 3 };

  // Nanoseconds since the Unix epoch (CLOCK_REALTIME).
  static std::uint64_t now() noexcept {
#if OTLPCONC_TELEMETRY_TSC
    // (K1) acquire: pairs with the release store of the mode (K2): the scale is then visible.
    const auto mode = static_cast<source>(state().mode.load(std::memory_order_acquire));
    if (mode == source::tsc) [[likely]] {
      const std::uint64_t t = __rdtsc();
      anchor& a = local();
      const std::uint64_t ticks = t - a.tsc;
      if (ticks < renew_ticks) [[likely]] {
        // (K3) relaxed: written before the mode (K2), read after it (K1).
        const std::uint64_t scale = state().scale.load(std::memory_order_relaxed);
        std::uint64_t ns = a.ns + ((ticks * scale) >> 32); // ticks < 2^26, scale < 2^36: no overflow
        if (ns < a.last && a.last - ns < max_hold_ns) [[unlikely]]
          ns = a.last;
        a.last = ns;
        return ns;
      }
      return renew(t);
    }
    if (mode != source::system)
      return decide(mode);
    // The system clock, held at this thread's last counter-based time stamp until it passes it
    // (after a give-up, by at most the error gathered since the thread's last renewal).
    return held(local(), system_now());
#else
    return system_now();
#endif
  }

  static source current() noexcept {
#if OTLPCONC_TELEMETRY_TSC
    return static_cast<source>(state().mode.load(std::memory_order_acquire)); // (K1)
#else
    return source::system;
#endif
  }

  // Tests: starts over (the next now() decides again) or forces the system clock.
  static void reset_for_tests(bool system) noexcept {
#if OTLPCONC_TELEMETRY_TSC
    state().mode.store(static_cast<int>(system ? source::system : source::undecided),
                       std::memory_order_release); // (K2)
    local() = anchor{};
#else
    (void)system;
#endif
  }

  // Tests: multiplies the scale by factor (a counter whose rate changed); the next renewal of a
  // thread's anchor must notice.
  static void skew_scale_for_tests(double factor) noexcept {
#if OTLPCONC_TELEMETRY_TSC
    shared_state& st = state();
    st.scale.store(static_cast<std::uint64_t>(static_cast<double>(st.scale.load(std::memory_order_relaxed)) * factor),
                   std::memory_order_relaxed); // (K3)
#else
    (void)factor;
#endif
  }

  static std::uint64_t system_now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
  }

 private:
  static constexpr std::uint64_t renew_ticks = std::uint64_t{1} << 26;
  static constexpr std::uint64_t calibration_ticks = std::uint64_t{1} << 24;
  static constexpr std::uint64_t max_hold_ns = 1'000'000; // backward jumps below this are absorbed

#if OTLPCONC_TELEMETRY_TSC
  struct shared_state {
    std::atomic<int> mode{static_cast<int>(source::undecided)};
    std::atomic<std::uint64_t> scale{0};           // nanoseconds per tick, 32.32 fixed point
    std::atomic<std::uint64_t> calibration_tsc{0}; // where the calibration started
    std::atomic<std::uint64_t> calibration_raw{0};
    std::atomic<std::uint64_t> clocksource_checked_raw{0}; // the last look at the kernel's clocksource
  };
  struct anchor {
    std::uint64_t tsc = 0; // 0: none yet (the first now() renews: ticks is then huge)
    std::uint64_t ns = 0;  // CLOCK_REALTIME at tsc
    std::uint64_t raw = 0; // CLOCK_MONOTONIC_RAW at tsc
    std::uint64_t last = 0;
  };

  static shared_state& state() noexcept {
    static shared_state s;
    return s;
  }
  static anchor& local() noexcept {
    static constinit thread_local anchor a;
    return a;
  }

  static std::uint64_t raw_now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
  }

  static bool kernel_uses_tsc() noexcept {
    std::FILE* f = std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == nullptr)
      return false;
    char name[32] = {};
    const bool ok = std::fgets(name, sizeof name, f) != nullptr && std::strcmp(name, "tsc\n") == 0;
    std::fclose(f);
    return ok;
  }

  // A system-clock time stamp that does not go back by less than max_hold_ns behind the thread's
  // last counter-based one (a.last; 0 once the system clock has passed it, or if there was none).
  static std::uint64_t held(anchor& a, std::uint64_t ns) noexcept {
    if (a.last == 0) [[likely]]
      return ns;
    if (ns < a.last && a.last - ns < max_hold_ns)
      return a.last;
    a.last = 0;
    return ns;
  }

  // Back to clock_gettime for the rest of the process.
  static void give_up(const char* why) noexcept {
    if (state().mode.exchange(static_cast<int>(source::system), std::memory_order_acq_rel) == // (K2)
        static_cast<int>(source::tsc))
      warn(std::string("span time stamps: the time-stamp counter is no longer used: ") + why);
  }

  // First time stamps: decide, then calibrate while the system clock answers.
  OTLPCONC_NOINLINE static std::uint64_t decide(source mode) noexcept {
    shared_state& s = state();
    if (mode == source::undecided) {
      const char* env = std::getenv("OTLPCONC_TELEMETRY_CLOCK");
      const bool allowed = !(env != nullptr && std::strcmp(env, "system") == 0) && kernel_uses_tsc();
      int expected = static_cast<int>(source::undecided);
      if (allowed) {
        // (K4) relaxed: published by the release CAS (K2) below, read after an acquire (K1).
        s.calibration_tsc.store(__rdtsc(), std::memory_order_relaxed);
        s.calibration_raw.store(raw_now(), std::memory_order_relaxed);
      }
      s.mode.compare_exchange_strong(expected, static_cast<int>(allowed ? source::calibrating : source::system),
                                     std::memory_order_acq_rel); // (K2); another thread may have decided
      return system_now();
    }
    // Calibrating: once enough ticks have passed, the scale is measured and published.
    const std::uint64_t t = __rdtsc();
    const std::uint64_t t0 = s.calibration_tsc.load(std::memory_order_relaxed); // (K4)
    if (t - t0 >= calibration_ticks) {
      const std::uint64_t raw = raw_now();
      const std::uint64_t elapsed = raw - s.calibration_raw.load(std::memory_order_relaxed); // (K4)
      const auto scale = static_cast<std::uint64_t>(static_cast<long double>(elapsed) * 4294967296.0L /
                                                    static_cast<long double>(t - t0));
      if (scale != 0 && scale < (std::uint64_t{1} << 36)) { // 0.06 to 16 GHz
        s.scale.store(scale, std::memory_order_relaxed);    // (K3)
        int expected = static_cast<int>(source::calibrating);
        s.mode.compare_exchange_strong(expected, static_cast<int>(source::tsc), std::memory_order_release,
                                       std::memory_order_relaxed); // (K2) publishes the scale
      } else {
        give_up("its rate is implausible");
      }
    }
    return system_now();
  }

  // A new anchor for this thread (the first, or the last one is 2^26 ticks old), with the checks.
  OTLPCONC_NOINLINE static std::uint64_t renew(std::uint64_t /*tick seen*/) noexcept {
    shared_state& s = state();
    anchor& a = local();
    // The pair is taken back to back; the counter is read on both sides of the clock and the
    // middle kept.
    const std::uint64_t before = __rdtsc();
    const std::uint64_t ns = system_now();
    const std::uint64_t raw = raw_now();
    const std::uint64_t after = __rdtsc();
    const std::uint64_t tsc = before + (after - before) / 2;
    const std::uint64_t scale = s.scale.load(std::memory_order_relaxed); // (K3)
    if (a.tsc != 0 && tsc - a.tsc < 64 * renew_ticks) {
      // The rate since the last anchor, against the unslewed monotonic clock.
      const auto predicted = static_cast<double>(((tsc - a.tsc) >> 8) * scale >> 24);
      const auto measured = static_cast<double>(raw - a.raw);
      if (measured > 0 && (predicted > measured * 1.001 || predicted < measured * 0.999)) {
        give_up("its rate differs from CLOCK_MONOTONIC_RAW's by more than 0.1 %");
        return held(a, ns);
      }
    }
    // The kernel's clocksource, once a second (by whichever thread renews then).
    // (K5) relaxed: only decides which thread looks; nothing is published through it.
    std::uint64_t checked = s.clocksource_checked_raw.load(std::memory_order_relaxed);
    if (raw - checked >= 1'000'000'000u &&
        s.clocksource_checked_raw.compare_exchange_strong(checked, raw, std::memory_order_relaxed) && // (K5)
        !kernel_uses_tsc()) {
      give_up("the kernel's clocksource is no longer tsc");
      return held(a, ns);
    }
    a.tsc = tsc;
    a.ns = ns;
    a.raw = raw;
    std::uint64_t out = ns;
    if (out < a.last && a.last - out < max_hold_ns)
      out = a.last;
    a.last = out;
    return out;
  }
#endif
};

} // namespace otlpconc::telemetry::detail
