// The park lock (detail/park_lock.hpp) under contention and preemption: every section runs alone
// (a plain counter loses no increment) and no thread stays parked (the run ends). Schedule noise
// preempts threads between the parking exchange and the park, and between an unlock's store and
// its wake-up; some sections are long (a yield, or a 20 us sleep) so that spinners run out of
// rounds and park while others keep locking.
#include "otlpconc/detail/park_lock.hpp"

#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

using otlpconc::stress::scaled;

TEST_CASE("park_lock stress: mutual exclusion and no thread left parked, 6 threads on the machine's cores",
          "[park_lock][stress]") {
  constexpr int threads = 6;
  const std::int64_t per_thread = scaled(40000);
  auto* lock = new otlpconc::detail::park_lock; // leaked if a thread stays parked (the run is failed)
  std::int64_t count = 0;                       // plain: guarded by the lock
  std::atomic<int> finished{0};
  std::atomic<std::int64_t> progress{0};
  std::atomic<std::int64_t> contended_seen{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::uint32_t x = 977u * static_cast<std::uint32_t>(t + 1);
      for (std::int64_t i = 0; i < per_thread; ++i) {
        x = x * 1103515245u + 12345u;
        const bool try_first = (x >> 3) % 4 == 0; // try_lock, part of the Lockable interface
        if (!try_first || !lock->try_lock())
          lock->lock();
        const std::int64_t c = count;
        if (lock->contended()) // a waiter ran out of spins: the parking path runs
          contended_seen.fetch_add(1, std::memory_order_relaxed);
        if ((x >> 8) % 512 == 0)
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        else if ((x >> 8) % 64 == 0)
          std::this_thread::yield();
        count = c + 1;
        lock->unlock();
        progress.fetch_add(1, std::memory_order_relaxed);
      }
      finished.fetch_add(1);
    });
  // A lost wake-up leaves a thread parked forever: report it instead of hanging until the timeout.
  auto last = progress.load();
  auto last_change = std::chrono::steady_clock::now();
  while (finished.load() < threads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto now = std::chrono::steady_clock::now();
    if (const auto p = progress.load(); p != last) {
      last = p;
      last_change = now;
    } else if (now - last_change > std::chrono::seconds(30)) {
      std::fprintf(stderr,
                   "park_lock stress: no section completed for 30 s with %d of %d threads done (%lld sections): "
                   "a thread is left parked (lost wake-up)\n",
                   finished.load(), threads, static_cast<long long>(p));
      std::_Exit(1);
    }
  }
  for (auto& th : pool)
    th.join();
  CHECK(count == threads * per_thread);
  CHECK(contended_seen.load() > 0); // the test reached the parking path (else it checks only the spin)
  delete lock;
}
