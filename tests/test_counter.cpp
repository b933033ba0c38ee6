#include "otlpconc/counter.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using otlpconc::padded_counter;
using otlpconc::sharded_counter;

namespace {

template <class Counter>
void hammer(Counter& c, int threads, int per_thread, std::int64_t step) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i)
        c.add(step);
    });
  for (auto& th : pool)
    th.join();
}

} // namespace

TEST_CASE("padded_counter: exact totals and fetch_add semantics", "[counter]") {
  STATIC_REQUIRE(sizeof(padded_counter) == otlpconc::cache_line_size);
  padded_counter c;
  REQUIRE(c.add(5) == 0);
  REQUIRE(c.increment() == 5);
  REQUIRE(c.decrement() == 6);
  REQUIRE(c.load() == 5);
  hammer(c, 4, 20000, 3);
  REQUIRE(c.load() == 5 + 4 * 20000 * 3);
  c.reset();
  REQUIRE(c.load() == 0);
  padded_counter d(-7);
  REQUIRE(d.load() == -7);
}

TEST_CASE("sharded_counter: exact totals after N threads x M adds", "[counter]") {
  sharded_counter c;
  REQUIRE(c.load() == 0);
  hammer(c, 4, 50000, 1);
  REQUIRE(c.load() == 4 * 50000);
  hammer(c, 3, 10000, -2);
  REQUIRE(c.load() == 4 * 50000 - 3 * 10000 * 2);
  c.increment();
  c.decrement();
  c.add(10);
  REQUIRE(c.load() == 4 * 50000 - 3 * 10000 * 2 + 10);
}

TEST_CASE("sharded_counter: initial value and reset", "[counter]") {
  sharded_counter c(100);
  REQUIRE(c.load() == 100);
  c.add(5);
  hammer(c, 2, 1000, 1); // cells of exited threads are folded into the base
  REQUIRE(c.load() == 2105);
  c.reset();
  REQUIRE(c.load() == 0);
  c.add(3);
  REQUIRE(c.load() == 3);
  hammer(c, 2, 10, 1);
  REQUIRE(c.load() == 23);
}

TEST_CASE("sharded_counter: arithmetic wraps instead of overflowing", "[counter]") {
  sharded_counter c(std::numeric_limits<std::int64_t>::max());
  c.add(1); // UBSan would flag a signed overflow here
  REQUIRE(c.load() == std::numeric_limits<std::int64_t>::min());
  c.add(-1);
  REQUIRE(c.load() == std::numeric_limits<std::int64_t>::max());
}

TEST_CASE("sharded_counter: threads that come and go keep their adds", "[counter]") {
  sharded_counter c;
  const std::size_t threads_before = otlpconc::detail::counter_registry::instance().live_threads();
  std::int64_t expected = 0;
  for (int round = 0; round < 40; ++round) {
    std::vector<std::thread> pool;
    for (int t = 0; t < 3; ++t)
      pool.emplace_back([&c, t] {
        for (int i = 0; i <= t * 100; ++i)
          c.increment();
      });
    for (auto& th : pool)
      th.join();
    expected += 1 + 101 + 201;
    REQUIRE(c.load() == expected);
  }
  // Every exited thread unregistered itself: the walk in load() does not grow with churn.
  REQUIRE(otlpconc::detail::counter_registry::instance().live_threads() == threads_before);
}

TEST_CASE("sharded_counter: many counters alive at once, ids reused from zero", "[counter]") {
  constexpr std::size_t n = 3000;
  std::mutex m;
  std::condition_variable cv;
  int phase = 0;
  auto counters = std::make_unique<std::unique_ptr<sharded_counter>[]>(n);
  for (std::size_t i = 0; i < n; ++i)
    counters[i] = std::make_unique<sharded_counter>();

  // Two long-lived threads add to every counter, then stay alive (cells not folded) while the
  // counters are destroyed and new ones take their ids.
  auto worker = [&](int k) {
    for (std::size_t i = 0; i < n; ++i)
      counters[i]->add(static_cast<std::int64_t>(i) + k);
    std::unique_lock lock(m);
    ++phase;
    cv.notify_all();
    cv.wait(lock, [&] { return phase >= 3; });
    lock.unlock();
    for (std::size_t i = 0; i < n; ++i)
      counters[i]->add(2 * static_cast<std::int64_t>(i));
  };
  std::thread a(worker, 1), b(worker, 2);
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return phase == 2; });
  }
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(counters[i]->load() == 2 * static_cast<std::int64_t>(i) + 3);

  for (std::size_t i = 0; i < n; ++i)
    counters[i].reset();
  for (std::size_t i = 0; i < n; ++i)
    counters[i] = std::make_unique<sharded_counter>();
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(counters[i]->load() == 0); // stale cells of the destroyed counters must not leak in

  {
    std::lock_guard lock(m);
    phase = 3;
    cv.notify_all();
  }
  a.join();
  b.join();
  for (std::size_t i = 0; i < n; ++i)
    REQUIRE(counters[i]->load() == 4 * static_cast<std::int64_t>(i));
}

namespace {

struct adds_in_destructor {
  sharded_counter* target = nullptr;
  ~adds_in_destructor() {
    if (target != nullptr)
      target->add(1000);
  }
};

} // namespace

TEST_CASE("sharded_counter: adds from thread_local destructors after the thread's fold", "[counter]") {
  sharded_counter c;
  const std::size_t threads_before = otlpconc::detail::counter_registry::instance().live_threads();
  std::thread t([&] {
    // Constructed before the counter registers this thread, so destroyed after the fold.
    static thread_local adds_in_destructor late;
    late.target = &c;
    c.add(1);
  });
  t.join();
  REQUIRE(c.load() == 1001);
  // The late add went to the base: it did not register the exiting thread again (which would leak
  // its record and its reservation).
  REQUIRE(otlpconc::detail::counter_registry::instance().live_threads() == threads_before);
}

TEST_CASE("sharded_counter: a read never misses an add that happened before it", "[counter]") {
  // The writer spreads its adds over many ids (and so over fresh, untouched pages of its cell
  // array) while the reader reads.
  std::vector<std::unique_ptr<sharded_counter>> counters;
  for (int i = 0; i < 2048; ++i)
    counters.push_back(std::make_unique<sharded_counter>());
  std::atomic<std::int64_t> published{0};
  std::atomic<bool> done{false};
  std::thread writer([&] {
    std::int64_t total = 0;
    for (int round = 0; round < 40; ++round)
      for (auto& c : counters) {
        c->increment();
        if (c == counters.back()) { // the last id touched in each round: the furthest page
          ++total;
          published.store(total, std::memory_order_release);
        }
      }
    done.store(true, std::memory_order_release);
  });
  std::int64_t violations = 0;
  while (!done.load(std::memory_order_acquire)) {
    std::int64_t seen = published.load(std::memory_order_acquire);
    if (counters.back()->load() < seen)
      ++violations;
  }
  writer.join();
  REQUIRE(violations == 0);
  for (auto& c : counters)
    REQUIRE(c->load() == 40);
}

TEST_CASE("sharded_counter: counters past the per-thread cell range still count exactly", "[counter]") {
  // Fill every id that has cells, so the next counters fall back to atomic adds on their base.
  std::vector<std::unique_ptr<sharded_counter>> filler;
  filler.reserve(otlpconc::detail::max_counter_cells);
  for (std::uint32_t i = 0; i < otlpconc::detail::max_counter_cells; ++i)
    filler.push_back(std::make_unique<sharded_counter>());
  sharded_counter beyond;
  filler.back()->add(5); // the last id with cells still works, and page-in of a far id too
  hammer(beyond, 3, 1000, 2);
  beyond.add(-1);
  REQUIRE(beyond.load() == 5999);
  REQUIRE(filler.back()->load() == 5);
  beyond.reset();
  REQUIRE(beyond.load() == 0);
}
