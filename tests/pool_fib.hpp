// Recursive fork-join fib on work_stealing_pool, one task per call: shared by the pool's unit and
// stress tests.
#pragma once

#include "otlpconc/work_stealing_pool.hpp"

#include <cstdint>

namespace otlpconc::testing {

inline std::int64_t fib(work_stealing_pool& pool, int n) {
  if (n < 2)
    return n;
  std::int64_t a = 0;
  task_group g(pool);
  g.run([&] { a = fib(pool, n - 1); });
  const std::int64_t b = fib(pool, n - 2);
  g.wait();
  return a + b;
}

} // namespace otlpconc::testing
