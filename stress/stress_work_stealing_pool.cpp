// Stress: the work-stealing pool's parking (no lost wake-ups when work arrives at idle workers) and
// fork-join under several external submitters.
#include "../tests/pool_fib.hpp"
#include "otlpconc/work_stealing_pool.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <random>
#include <thread>
#include <vector>

using otlpconc::task_group;
using otlpconc::work_stealing_pool;
using otlpconc::stress::scaled;
using otlpconc::testing::fib;

namespace {} // namespace

TEST_CASE("work_stealing_pool: work arriving at parked workers is never lost", "[stress][work_stealing_pool]") {
  // Each round lets the workers go idle (they spin 64 yields, then park), then submits one task and
  // waits for it with a generous deadline: a lost wake-up shows up as a timeout.
  work_stealing_pool pool(2);
  std::mt19937 rng(5);
  const std::int64_t rounds = scaled(OTLPCONC_TSAN ? 300 : 2000);
  std::int64_t late = 0;
  for (std::int64_t r = 0; r < rounds; ++r) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400));
    auto f = pool.submit([r] { return r; });
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      ++late; // the destructor's shutdown will run it
      break;
    }
    REQUIRE(f.get() == r);
  }
  REQUIRE(late == 0);
}

TEST_CASE("work_stealing_pool: fork-join from several submitters adds up", "[stress][work_stealing_pool]") {
  std::atomic<std::int64_t> total{0};
  const std::int64_t jobs = scaled(OTLPCONC_TSAN ? 20 : 200);
  {
    work_stealing_pool pool(3);
    std::vector<std::thread> submitters;
    for (int s = 0; s < 3; ++s)
      submitters.emplace_back([&] {
        std::vector<std::future<std::int64_t>> futures;
        for (std::int64_t j = 0; j < jobs; ++j)
          futures.push_back(pool.submit([&] { return fib(pool, 14); })); // 377
        for (auto& f : futures)
          total.fetch_add(f.get());
        // And a group driven from this external thread.
        task_group g(pool);
        std::atomic<std::int64_t> local{0};
        for (int i = 0; i < 100; ++i)
          g.run([&] { local.fetch_add(fib(pool, 10)); }); // 55
        g.wait();
        total.fetch_add(local.load());
      });
    for (auto& t : submitters)
      t.join();
  }
  REQUIRE(total.load() == 3 * (jobs * 377 + 100 * 55));
}

TEST_CASE("work_stealing_pool: a post racing shutdown either throws or runs", "[stress][work_stealing_pool]") {
  const std::int64_t rounds = scaled(OTLPCONC_TSAN ? 30 : 200);
  for (std::int64_t r = 0; r < rounds; ++r) {
    std::atomic<std::int64_t> accepted{0}, ran{0};
    {
      work_stealing_pool pool(2);
      std::atomic<bool> go{false};
      std::vector<std::thread> posters;
      for (int t = 0; t < 2; ++t)
        posters.emplace_back([&] {
          while (!go.load(std::memory_order_acquire)) {
          }
          for (int i = 0; i < 200; ++i) {
            try {
              pool.post([&] { ran.fetch_add(1, std::memory_order_relaxed); });
              accepted.fetch_add(1, std::memory_order_relaxed);
            } catch (const std::runtime_error&) {
              break; // closed: every later post throws too
            }
          }
        });
      go.store(true, std::memory_order_release);
      std::this_thread::yield();
      pool.shutdown(); // races the posters
      for (auto& p : posters)
        p.join();
    }
    REQUIRE(ran.load() == accepted.load()); // nothing accepted was stranded
  }
}
