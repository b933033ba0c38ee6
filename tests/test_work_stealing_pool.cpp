#include "otlpconc/work_stealing_pool.hpp"
#include "pool_fib.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using otlpconc::task_group;
using otlpconc::work_stealing_pool;
using otlpconc::testing::fib;

namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

} // namespace

TEST_CASE("work_stealing_pool: bad thread counts are rejected", "[work_stealing_pool]") {
  REQUIRE_THROWS_AS(work_stealing_pool(0), std::invalid_argument);
  REQUIRE_THROWS_AS(work_stealing_pool(work_stealing_pool::max_threads + 1), std::invalid_argument);
  work_stealing_pool one(1);
  REQUIRE(one.size() == 1);
  REQUIRE(work_stealing_pool().size() == work_stealing_pool::default_threads());
}

TEST_CASE("work_stealing_pool: submit delivers results and exceptions through futures", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  auto a = pool.submit([] { return 6 * 7; });
  auto b = pool.submit([] { return std::string("done"); });
  auto c = pool.submit([]() -> int { throw std::runtime_error("task failed"); });
  auto d = pool.submit([] {}); // void result
  REQUIRE(a.get() == 42);
  REQUIRE(b.get() == "done");
  REQUIRE_THROWS_WITH(c.get(), "task failed");
  d.get();
  auto move_only = pool.submit([p = std::make_unique<int>(5)] { return *p; });
  REQUIRE(move_only.get() == 5);
}

TEST_CASE("work_stealing_pool: recursive fork-join computes fib correctly", "[work_stealing_pool]") {
  for (std::size_t workers : {1u, 2u, 4u}) {
    work_stealing_pool pool(workers);
    REQUIRE(pool.submit([&] { return fib(pool, 22); }).get() == 17711);
    // From a thread outside the pool as well: wait() helps from there too.
    REQUIRE(fib(pool, 18) == 2584);
  }
}

TEST_CASE("work_stealing_pool: task_group rethrows the first exception and stays usable", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  task_group g(pool);
  std::atomic<int> ran{0};
  for (int i = 0; i < 50; ++i)
    g.run([&, i] {
      ran.fetch_add(1);
      if (i % 10 == 3)
        throw std::runtime_error("bad task " + std::to_string(i));
    });
  REQUIRE_THROWS_WITH(g.wait(), Catch::StartsWith("bad task"));
  REQUIRE(ran.load() == 50); // the other tasks still ran
  g.run([&] { ran.fetch_add(1); });
  REQUIRE_NOTHROW(g.wait());
  REQUIRE(ran.load() == 51);
}

TEST_CASE("work_stealing_pool: nested groups inside tasks", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  std::atomic<int> leaves{0};
  auto outer = pool.submit([&] {
    task_group g1(pool);
    for (int i = 0; i < 8; ++i)
      g1.run([&] {
        task_group g2(pool);
        for (int j = 0; j < 8; ++j)
          g2.run([&] {
            task_group g3(pool);
            for (int k = 0; k < 8; ++k)
              g3.run([&] { leaves.fetch_add(1, std::memory_order_relaxed); });
            g3.wait();
          });
        g2.wait();
      });
    g1.wait();
    return leaves.load();
  });
  REQUIRE(outer.get() == 512);
}

TEST_CASE("work_stealing_pool: post exceptions go to the handler", "[work_stealing_pool]") {
  std::atomic<int> handled{0};
  {
    work_stealing_pool pool(2, [&](std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::logic_error&) {
        handled.fetch_add(1);
      }
    });
    for (int i = 0; i < 10; ++i)
      pool.post([] { throw std::logic_error("oops"); });
    // A group destroyed without wait(): its exception is not lost either.
    {
      task_group g(pool);
      g.run([] { throw std::logic_error("unobserved"); });
    }
  }
  REQUIRE(handled.load() == 11);
}

TEST_CASE("work_stealing_pool: 10^5 tiny tasks from several external threads all run", "[work_stealing_pool]") {
  std::atomic<std::int64_t> ran{0};
  constexpr int threads = 4, per_thread = 25000;
  {
    work_stealing_pool pool(2);
    std::vector<std::thread> producers;
    for (int t = 0; t < threads; ++t)
      producers.emplace_back([&] {
        for (int i = 0; i < per_thread; ++i)
          pool.post([&] { ran.fetch_add(1, std::memory_order_relaxed); });
      });
    for (auto& p : producers)
      p.join();
  } // shutdown runs everything accepted
  REQUIRE(ran.load() == threads * per_thread);
}

TEST_CASE("work_stealing_pool: shutdown finishes queued work and then rejects submissions", "[work_stealing_pool]") {
  std::atomic<int> ran{0};
  work_stealing_pool pool(2);
  for (int i = 0; i < 200; ++i)
    pool.post([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      // Tasks may still spawn work during the drain.
      task_group g(pool);
      g.run([&] { ran.fetch_add(1); });
      g.wait();
    });
  pool.shutdown();
  REQUIRE(ran.load() == 200);
  REQUIRE_THROWS_AS(pool.post([] {}), std::runtime_error);
  REQUIRE_THROWS_AS(pool.submit([] { return 1; }), std::runtime_error);
  task_group g(pool);
  REQUIRE_THROWS_AS(g.run([] {}), std::runtime_error);
  pool.shutdown(); // idempotent
}

TEST_CASE("work_stealing_pool: shutdown from inside a task is refused", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  auto f = pool.submit([&] { pool.shutdown(); });
  REQUIRE_THROWS_AS(f.get(), std::logic_error);
}

TEST_CASE("work_stealing_pool: an idle pool sleeps", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  REQUIRE(pool.submit([] { return 1; }).get() == 1); // workers started and went idle
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const double start = process_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double used = process_cpu_seconds() - start;
  INFO("CPU seconds used by an idle pool over 1 s: " << used);
  REQUIRE(used < 0.02);                              // < 2% of one core
  REQUIRE(pool.submit([] { return 2; }).get() == 2); // and it still wakes up
}
