// Allocation failures injected where the library allocates on its own initiative: a worker's first
// hazard record (taken on its first steal or injector pop), and the default hazard pointer domain.
// A separate executable: it replaces the global operator new.
#include "otlpconc/hazard_pointer.hpp"
#include "otlpconc/work_stealing_pool.hpp"
#include "watchdog.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>

namespace {

// Over-aligned allocations of hazard_record's size (hazard records are cache-line aligned; nothing
// else of that size and alignment is allocated here) fail while this is positive, one per failure.
std::atomic<int> hazard_record_failures{0};
// Every allocation fails while this is set on the calling thread.
thread_local bool fail_everything = false;

bool should_fail(std::size_t n, bool over_aligned) {
  if (fail_everything)
    return true;
  if (!over_aligned || n != sizeof(otlpconc::detail::hazard_record<otlpconc::detail::std_sync>))
    return false;
  int left = hazard_record_failures.load();
  while (left > 0)
    if (hazard_record_failures.compare_exchange_weak(left, left - 1))
      return true;
  return false;
}

} // namespace

// Not inlined: g++ -O2 would otherwise see free() applied to what operator new returned and warn
// (-Wmismatched-new-delete), although both are this file's malloc-based pair.
[[gnu::noinline]] void* operator new(std::size_t n) {
  if (should_fail(n, false))
    throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t al) {
  if (should_fail(n, true))
    throw std::bad_alloc();
  const auto a = static_cast<std::size_t>(al);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a))
    return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

TEST_CASE("alloc failure: the default hazard pointer domain needs no allocation", "[hazard_pointer]") {
  // hazard_pointer_default_domain() is noexcept and is first called from noexcept code (retire's
  // default argument): creating the domain must not allocate. It used to, so a failure there
  // terminated the process.
  fail_everything = true;
  otlpconc::hazard_pointer_domain& d = otlpconc::hazard_pointer_default_domain();
  fail_everything = false;
  REQUIRE(d.stats().retired >= 0);
}

TEST_CASE("alloc failure: a worker whose hazard record cannot be allocated retries", "[work_stealing_pool]") {
  // The first hazard-record allocations (a worker's first steal or injector pop needs one) fail;
  // the worker used to let the exception escape its thread function: std::terminate.
  otlpconc::testing::watchdog wd(std::chrono::seconds(30), "pool with failing hazard records");
  { auto hp = otlpconc::make_hazard_pointer(); } // this thread keeps its record cached
  hazard_record_failures.store(3);
  otlpconc::work_stealing_pool pool(2);
  auto f = pool.submit([] { return 42; });
  REQUIRE(f.get() == 42);
  pool.shutdown();
  REQUIRE(hazard_record_failures.load() < 3); // the failures did happen
}
