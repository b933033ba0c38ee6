// Stress: sharded_counter under oversubscription, thread churn and counter churn.
#include "otlpconc/counter.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

using otlpconc::sharded_counter;
using otlpconc::stress::scaled;

TEST_CASE("sharded_counter: 8 writers with churn, a reader that must never see a lost add", "[stress][counter]") {
  constexpr int writers = 8; // oversubscribed on 2 cores: writers are preempted mid-add
  const std::int64_t rounds = scaled(30);
  const std::int64_t per_round = scaled(2000);

  sharded_counter total;
  sharded_counter by_writer[writers];
  std::atomic<std::int64_t> completed{0}; // adds to `total` known to have finished
  std::atomic<bool> stop{false};
  std::int64_t reader_violations = 0;
  std::int64_t reader_overshoots = 0;
  const std::int64_t final_total = writers * rounds * per_round;

  // The reader checks the bounds on every read: never below what is known complete (a lost add,
  // e.g. during registration or a thread-exit fold), never above the final total (a double
  // count, e.g. a folded cell still summed).
  std::thread reader([&] {
    while (!stop.load(std::memory_order_acquire)) {
      std::int64_t floor = completed.load(std::memory_order_acquire);
      std::int64_t seen = total.load();
      if (seen < floor)
        ++reader_violations;
      if (seen > final_total)
        ++reader_overshoots;
    }
  });

  // Counter churn: a thread creates and destroys counters so ids are freed and reused while the
  // writers run, and checks each new counter starts at zero.
  std::int64_t dirty_new_counters = 0;
  std::thread churner([&] {
    while (!stop.load(std::memory_order_acquire)) {
      std::vector<std::unique_ptr<sharded_counter>> tmp;
      for (int i = 0; i < 16; ++i) {
        tmp.push_back(std::make_unique<sharded_counter>());
        if (tmp.back()->load() != 0)
          ++dirty_new_counters;
        tmp.back()->add(i);
      }
    }
  });

  for (std::int64_t r = 0; r < rounds; ++r) {
    std::vector<std::thread> pool; // fresh threads every round: each one registers, adds, folds at exit
    for (int w = 0; w < writers; ++w)
      pool.emplace_back([&, w] {
        for (std::int64_t i = 0; i < per_round; ++i) {
          total.increment();
          by_writer[w].add(2);
          // (release) pairs with the reader's acquire: the increment above happens-before a
          // reader that sees this count.
          completed.fetch_add(1, std::memory_order_release);
        }
      });
    for (auto& t : pool)
      t.join();
  }
  stop.store(true, std::memory_order_release);
  reader.join();
  churner.join();

  REQUIRE(reader_violations == 0);
  REQUIRE(reader_overshoots == 0);
  REQUIRE(dirty_new_counters == 0);
  REQUIRE(total.load() == final_total);
  for (auto& c : by_writer)
    REQUIRE(c.load() == 2 * rounds * per_round);
}

TEST_CASE("sharded_counter: reset clears exactly what happened before it", "[stress][counter]") {
  // Writers add 1 and then publish that the add completed. A reset clears every add published
  // before it; adds after it are kept. So right after a reset the value lies in
  // [0, adds published since + adds in flight]. An implementation that zeroed other threads' cells
  // would be resurrected by their next store and blow the upper bound; one that subtracted too much
  // would go negative.
  constexpr int writers = 3;
  sharded_counter c;
  std::atomic<std::int64_t> completed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pool;
  for (int w = 0; w < writers; ++w)
    pool.emplace_back([&] {
      while (!stop.load(std::memory_order_acquire)) {
        c.increment();
        completed.fetch_add(1, std::memory_order_release); // pairs with the acquire loads below
      }
    });
  std::int64_t out_of_bounds = 0;
  // Time-based: the race with a writer's load/store window needs enough attempts to show up.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(otlpconc::stress::scaled(600));
  while (completed.load(std::memory_order_acquire) < 1000) // all writers are running
    std::this_thread::yield();
  while (std::chrono::steady_clock::now() < deadline) {
    std::int64_t before = completed.load(std::memory_order_acquire);
    c.reset();
    std::int64_t v = c.load();
    std::int64_t after = completed.load(std::memory_order_acquire);
    if (v < 0 || v > after - before + writers)
      ++out_of_bounds;
  }
  stop.store(true, std::memory_order_release);
  for (auto& t : pool)
    t.join();
  REQUIRE(out_of_bounds == 0);
  c.reset();
  REQUIRE(c.load() == 0);
}
