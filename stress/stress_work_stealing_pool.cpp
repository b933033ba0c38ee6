// Stress: the work-stealing pool's parking (no lost wake-ups when work arrives at idle workers) and
// fork-join under several external submitters.
#include "../tests/pool_fib.hpp"
#include "otlpconc/work_stealing_pool.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <random>
#include <stdexcept>
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

namespace {

// A callable whose move (inside post(), before the task is counted) says that post() has been
// entered, then dawdles a random while: the pool's shutdown and destruction race the rest of the
// call. Under ASan, any touch of the pool after its destruction is a reported use after free.
struct dawdler {
  std::atomic<bool>* entered;
  std::atomic<std::int64_t>* ran;
  unsigned spin;
  dawdler(std::atomic<bool>* e, std::atomic<std::int64_t>* r, unsigned s) : entered(e), ran(r), spin(s) {}
  dawdler(dawdler&& o) noexcept : entered(o.entered), ran(o.ran), spin(o.spin) {
    if (entered != nullptr) {
      entered->store(true, std::memory_order_release);
      std::atomic<unsigned> i{0}; // a busy wait the compiler cannot remove
      while (i.load(std::memory_order_relaxed) < spin)
        i.fetch_add(1, std::memory_order_relaxed);
      entered = nullptr; // only the first move announces
    }
  }
  void operator()() const { ran->fetch_add(1, std::memory_order_relaxed); }
};

} // namespace

TEST_CASE("work_stealing_pool: a post racing the destructor never touches the freed pool",
          "[stress][work_stealing_pool]") {
  // shutdown() returns only after every post() that overlapped it has returned, so the pool can be
  // destroyed as soon as it returns (the poster's last touches, its notify and the count of the
  // rejected task, used to run after the destructor had freed the pool).
  const std::int64_t rounds = scaled(OTLPCONC_TSAN ? 100 : 1000);
  std::mt19937 rng(11);
  std::int64_t accepted_total = 0, rejected_total = 0;
  for (std::int64_t r = 0; r < rounds; ++r) {
    std::atomic<bool> entered{false};
    std::atomic<std::int64_t> ran{0};
    bool accepted = false;
    auto pool = std::make_unique<work_stealing_pool>(2);
    const auto spin = static_cast<unsigned>(rng() % 20000);
    std::thread poster([&, p = pool.get()] {
      try {
        p->post(dawdler(&entered, &ran, spin));
        accepted = true;
      } catch (const std::runtime_error&) {
      }
    });
    while (!entered.load(std::memory_order_acquire))
      std::this_thread::yield();
    pool->shutdown();
    pool.reset(); // destroyed while the poster may still be inside post() but for shutdown's wait
    poster.join();
    REQUIRE(ran.load() == (accepted ? 1 : 0));
    (accepted ? accepted_total : rejected_total) += 1;
  }
  INFO("accepted " << accepted_total << ", rejected " << rejected_total);
  REQUIRE(accepted_total + rejected_total == rounds);
}

namespace {

std::int64_t random_tree(work_stealing_pool& pool, std::uint64_t seed, int depth) {
  seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  if (depth == 0)
    return 1;
  const int fanout = 1 + static_cast<int>((seed >> 33) % 4);
  std::atomic<std::int64_t> sum{0};
  task_group g(pool);
  for (int i = 0; i < fanout; ++i)
    g.run([&, i] { sum.fetch_add(random_tree(pool, seed + static_cast<std::uint64_t>(i), depth - 1)); });
  if ((seed >> 40) % 3 == 0) // sometimes an inline branch too
    sum.fetch_add(random_tree(pool, seed ^ 0x5555, depth - 1));
  g.wait();
  return sum.load();
}

std::int64_t random_tree_serial(std::uint64_t seed, int depth) {
  seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  if (depth == 0)
    return 1;
  const int fanout = 1 + static_cast<int>((seed >> 33) % 4);
  std::int64_t sum = 0;
  for (int i = 0; i < fanout; ++i)
    sum += random_tree_serial(seed + static_cast<std::uint64_t>(i), depth - 1);
  if ((seed >> 40) % 3 == 0)
    sum += random_tree_serial(seed ^ 0x5555, depth - 1);
  return sum;
}

} // namespace

TEST_CASE("work_stealing_pool: isolated waits under mixed load complete and stay shallow",
          "[stress][work_stealing_pool]") {
  // External threads run random fork-join trees; posted jobs run them too; some posted jobs wait on
  // a group of another thread's tree (a cross-tree wait, legal: no cycle). Everything must finish
  // (a watchdog aborts on a hang) with the right sums, and no stack may hold more tasks than the
  // deepest tree nests groups, plus the job at its bottom.
  constexpr int depth = 5;
  const std::int64_t rounds = scaled(OTLPCONC_TSAN ? 3 : 20);
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 600 && !finished.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!finished.load()) {
      std::fprintf(stderr, "FAILED: mixed-load pool test hung for 60 s\n");
      std::abort();
    }
  });
  for (std::int64_t r = 0; r < rounds; ++r) {
    work_stealing_pool pool(2);
    std::atomic<std::int64_t> total{0}, expected{0};
    task_group shared(pool); // a group other trees wait on
    shared.run([&] { total.fetch_add(random_tree(pool, 7 + static_cast<std::uint64_t>(r), depth)); });
    expected.fetch_add(random_tree_serial(7 + static_cast<std::uint64_t>(r), depth));
    std::vector<std::thread> outside;
    for (int t = 0; t < 3; ++t)
      outside.emplace_back([&, t] {
        for (int j = 0; j < 4; ++j) {
          const auto seed = static_cast<std::uint64_t>(r * 1000 + t * 10 + j);
          expected.fetch_add(random_tree_serial(seed, depth));
          total.fetch_add(random_tree(pool, seed, depth));
          pool.post([&, seed] {
            shared.wait(); // waits on main's group from inside the pool
            total.fetch_add(random_tree(pool, seed + 99, depth - 1));
          });
          expected.fetch_add(random_tree_serial(seed + 99, depth - 1));
        }
      });
    for (auto& t : outside)
      t.join();
    shared.wait();
    pool.shutdown();
    REQUIRE(total.load() == expected.load());
    INFO("max nesting " << pool.stats().max_nesting);
    REQUIRE(pool.stats().max_nesting <= depth + 2); // a post, a shared-group task, then its tree
  }
  finished.store(true);
  watchdog.join();
}
