// Shared helpers for the stress tests.
#pragma once

#include "otlpconc/detail/schedule_noise.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace otlpconc::stress {

// OTLPCONC_STRESS_SCALE multiplies every stress test's iteration counts (default 1, the CI size;
// for example 20 for a long soak). Malformed or non-positive values are rejected loudly.
inline double scale() {
  static const double value = [] {
    const char* env = std::getenv("OTLPCONC_STRESS_SCALE");
    if (env == nullptr || *env == '\0')
      return 1.0;
    char* end = nullptr;
    double v = std::strtod(env, &end);
    if (end == env || *end != '\0' || !(v > 0.0))
      throw std::invalid_argument("OTLPCONC_STRESS_SCALE must be a positive number, got '" + std::string(env) + "'");
    return v;
  }();
  return value;
}

inline std::int64_t scaled(std::int64_t base) {
  auto v = static_cast<std::int64_t>(static_cast<double>(base) * scale());
  return v < 1 ? 1 : v;
}

// The schedule-noise seed, printed once per process so that a failing run can be repeated with
// the same preemption decisions: OTLPCONC_SCHEDULE_SEED=<seed>.
inline const bool seed_printed = [] {
  std::fprintf(stderr, "stress: schedule noise seed %llu (OTLPCONC_SCHEDULE_SEED=%llu repeats it)\n",
               static_cast<unsigned long long>(detail::schedule_noise::seed()),
               static_cast<unsigned long long>(detail::schedule_noise::seed()));
  return true;
}();

} // namespace otlpconc::stress
