#include "otlpconc/work_stealing_pool.hpp"
#include "pool_fib.hpp"
#include "watchdog.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <future>
#include <memory>
#include <pthread.h>
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
  d.get();
  auto move_only = pool.submit([p = std::make_unique<int>(5)] { return *p; });
  REQUIRE(move_only.get() == 5);
  // Read the exception once the workers are joined (see the fork-join exception test for why).
  pool.shutdown();
  REQUIRE_THROWS_WITH(c.get(), "task failed");
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

// ---- Isolation, stack bound, deadlock freedom and exceptions (issue: help-while-wait) ----

namespace {

// Fails the test at once, instead of hanging it, when a future is not ready in time: a hang means
// a deadlock, and the pool's destructor would hang with it.
template <class Future>
void require_ready_within(Future& f, std::chrono::seconds limit, const char* what) {
  if (f.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: %s did not finish within %lld s (deadlock)\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
}

// The deepest stack seen by any task, in bytes below the top of its thread's stack: measured
// independently of the pool's own max_nesting statistic.
std::atomic<std::size_t> deepest_stack{0};

void probe_stack() {
  thread_local std::uintptr_t top = [] {
    pthread_attr_t attr;
    void* base = nullptr;
    std::size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
      return std::uintptr_t{0};
    pthread_attr_getstack(&attr, &base, &size);
    pthread_attr_destroy(&attr);
    return reinterpret_cast<std::uintptr_t>(base) + size;
  }();
  const auto here = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  if (top == 0 || here > top)
    return;
  std::size_t used = top - here, seen = deepest_stack.load();
  while (used > seen && !deepest_stack.compare_exchange_weak(seen, used)) {
  }
}

// A small fork-join job: a tree of task_groups `depth` levels deep, `fanout` tasks per group.
std::int64_t tree_job(work_stealing_pool& pool, int depth, int fanout) {
  probe_stack();
  if (depth == 0)
    return 1;
  std::atomic<std::int64_t> sum{0};
  task_group g(pool);
  for (int i = 0; i < fanout; ++i)
    g.run([&] { sum.fetch_add(tree_job(pool, depth - 1, fanout), std::memory_order_relaxed); });
  g.wait();
  return sum.load();
}

std::int64_t probed_fib(work_stealing_pool& pool, int n) {
  probe_stack();
  if (n < 2)
    return n;
  std::int64_t a = 0;
  task_group g(pool);
  g.run([&] { a = probed_fib(pool, n - 1); });
  const std::int64_t b = probed_fib(pool, n - 2);
  g.wait();
  return a + b;
}

// The stack one level of tree_job / probed_fib may take, generously (debug and sanitizer builds
// have large frames): nesting N jobs costs less than N times this.
constexpr std::size_t level_bytes = 4096;

} // namespace

TEST_CASE("work_stealing_pool: 3000 posted fork-joins destroyed at once stay shallow", "[work_stealing_pool]") {
  // The destructor's shutdown used to run every queued job nested on its own stack (38,681 frames,
  // SIGSEGV). Now a waiting thread runs only descendants of what it waits on.
  std::atomic<std::int64_t> leaves{0};
  otlpconc::work_stealing_pool_stats st;
  deepest_stack.store(0);
  {
    work_stealing_pool pool(2);
    for (int j = 0; j < 3000; ++j)
      pool.post([&] { leaves.fetch_add(tree_job(pool, 3, 2), std::memory_order_relaxed); });
    pool.shutdown();
    st = pool.stats();
  }
  REQUIRE(leaves.load() == 3000 * 8);
  // A job is a post (nesting 1) plus 3 levels of groups: at most 4 tasks on any stack.
  INFO("max nesting " << st.max_nesting << ", deepest task stack " << deepest_stack.load() << " bytes");
  REQUIRE(st.max_nesting <= 4);
  REQUIRE(deepest_stack.load() < 8 * level_bytes);
}

TEST_CASE("work_stealing_pool: a fork-join from main behind 10^5 queued jobs", "[work_stealing_pool]") {
  // Main's fork-join used to take the queued jobs first, one stack level per job (53,519 frames
  // with 200,000 jobs). Now main runs only its own tree: with both workers held by the first two
  // jobs, main computes its fib alone, without running any of the queued fork-join jobs.
  const std::int64_t jobs = OTLPCONC_TSAN ? 20000 : 100000;
  std::atomic<std::int64_t> ran{0};
  std::atomic<int> held{0};
  std::atomic<bool> release{false};
  deepest_stack.store(0);
  work_stealing_pool pool(2);
  for (int w = 0; w < 2; ++w)
    pool.post([&] {
      held.fetch_add(1);
      while (!release.load(std::memory_order_acquire))
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    });
  while (held.load() < 2)
    std::this_thread::yield();
  for (std::int64_t j = 0; j < jobs; ++j)
    pool.post([&] { ran.fetch_add(tree_job(pool, 1, 2), std::memory_order_relaxed); });
  REQUIRE(probed_fib(pool, 12) == 144);
  const std::int64_t ran_when_fib_returned = ran.load();
  const std::size_t main_stack = deepest_stack.load();
  release.store(true, std::memory_order_release);
  pool.shutdown();
  REQUIRE(ran.load() == 2 * jobs);
  INFO("job leaves run when main's fib returned: " << ran_when_fib_returned << ", deepest stack " << main_stack);
  REQUIRE(ran_when_fib_returned == 0);
  REQUIRE(main_stack < 14 * level_bytes);
  const auto nesting = pool.stats().max_nesting;
  INFO("max nesting " << nesting);
  REQUIRE(nesting <= 13); // fib(12) nests at most 12 groups, plus a post at the bottom
}

TEST_CASE("work_stealing_pool: fork-join nesting follows the fork-join depth", "[work_stealing_pool]") {
  // The canonical use from main (it overflowed main's 8 MiB stack with fib(30)): the stack holds
  // at most one task per level of fork-join, whatever the scheduling.
  for (std::size_t workers : {1u, 2u, 4u}) {
    work_stealing_pool pool(workers);
    REQUIRE(fib(pool, 22) == 17711);
    REQUIRE(pool.submit([&] { return fib(pool, 20); }).get() == 6765);
    const auto nesting = pool.stats().max_nesting;
    INFO(workers << " workers, max nesting " << nesting);
    REQUIRE(nesting >= 1);
    REQUIRE(nesting <= 22);
  }
}

TEST_CASE("work_stealing_pool: a waiting task never runs a job that waits on its group", "[work_stealing_pool]") {
  // Task A (in group S, from main) spawns c1, which the other worker takes and runs for 300 ms. A
  // then waits; job B, posted meanwhile, waits on S. If A's wait ran B, B would wait for A, which
  // is suspended beneath it on the same stack: a deadlock with the other worker idle afterwards.
  work_stealing_pool pool(2);
  std::atomic<bool> c1_started{false}, b_posted{false}, a_running{false};
  std::promise<void> b_done;
  auto b_future = b_done.get_future();
  task_group s(pool);
  s.run([&] {
    a_running.store(true);
    task_group g(pool);
    g.run([&] {
      c1_started.store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    while (!b_posted.load())
      std::this_thread::yield(); // the other worker takes c1, then main posts B
    g.wait();
  });
  while (!a_running.load() || !c1_started.load())
    std::this_thread::yield();
  pool.post([&] {
    s.wait();
    b_done.set_value();
  });
  b_posted.store(true);
  require_ready_within(b_future, std::chrono::seconds(20), "job B waiting on S");
  s.wait();
}

TEST_CASE("work_stealing_pool: a waiting task never runs a job that blocks on its future", "[work_stealing_pool]") {
  // The same shape with a future: B blocks on A's future; run beneath A, it would never return.
  work_stealing_pool pool(2);
  std::atomic<bool> c1_started{false}, b_posted{false}, a_running{false};
  auto a = pool.submit([&] {
    a_running.store(true);
    task_group g(pool);
    g.run([&] {
      c1_started.store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    while (!b_posted.load())
      std::this_thread::yield();
    g.wait();
    return 7;
  });
  std::shared_future<int> a_shared = a.share();
  while (!a_running.load() || !c1_started.load())
    std::this_thread::yield();
  auto b = pool.submit([a_shared] { return a_shared.get() + 1; });
  b_posted.store(true);
  require_ready_within(b, std::chrono::seconds(20), "job B blocked on A's future");
  REQUIRE(b.get() == 8);
}

namespace {

// fib with leaves that throw once in `one_in` times (decided by a counter, so the run is the same
// whatever the scheduling); counts every throw.
std::int64_t throwing_fib(work_stealing_pool& pool, int n, std::atomic<std::int64_t>& calls,
                          std::atomic<std::int64_t>& thrown, std::int64_t one_in) {
  if (n < 2) {
    const std::int64_t c = calls.fetch_add(1, std::memory_order_relaxed);
    if ((static_cast<std::uint64_t>(c) * 0x9e3779b97f4a7c15ULL >> 40) % static_cast<std::uint64_t>(one_in) == 0) {
      thrown.fetch_add(1, std::memory_order_relaxed);
      throw std::runtime_error("leaf " + std::to_string(c));
    }
    return n;
  }
  std::int64_t a = 0;
  task_group g(pool);
  g.run([&] { a = throwing_fib(pool, n - 1, calls, thrown, one_in); });
  const std::int64_t b = throwing_fib(pool, n - 2, calls, thrown, one_in); // may throw: ~g waits
  g.wait();
  return a + b;
}

} // namespace

TEST_CASE("work_stealing_pool: exceptions in recursive fork-join are all accounted for", "[work_stealing_pool]") {
  // The documented fib pattern with 0.1% of the leaves throwing used to terminate the process
  // (~task_group handed the child's exception to the default handler, std::terminate). Now exactly
  // one exception reaches the caller and every other one is counted as suppressed.
  for (std::size_t workers : {1u, 2u, 4u}) {
    work_stealing_pool pool(workers); // no handler: nothing may be unhandled anyway
    std::atomic<std::int64_t> calls{0}, thrown{0};
    std::int64_t reached = 0;
    // From a thread outside the pool.
    try {
      (void)throwing_fib(pool, 22, calls, thrown, 1000);
    } catch (const std::runtime_error& e) {
      REQUIRE(std::string(e.what()).rfind("leaf ", 0) == 0);
      ++reached;
    }
    // From a task, through a future. The pool is shut down before the exception is read: the
    // worker drops its reference to the future's state after the result is ready, and
    // ThreadSanitizer does not see libstdc++'s reference counts order that with our read.
    auto f = pool.submit([&] { return throwing_fib(pool, 25, calls, thrown, 1000); });
    f.wait();
    pool.shutdown();
    try {
      (void)f.get();
    } catch (const std::runtime_error& e) {
      REQUIRE(std::string(e.what()).rfind("leaf ", 0) == 0);
      ++reached;
    }
    const auto st = pool.stats();
    INFO(workers << " workers: thrown " << thrown.load() << ", reached the callers " << reached << ", suppressed "
                 << st.suppressed_exceptions << ", unhandled " << st.unhandled_exceptions);
    REQUIRE(thrown.load() >= 20);
    REQUIRE(reached == 2);
    REQUIRE(st.unhandled_exceptions == 0);
    REQUIRE(static_cast<std::uint64_t>(thrown.load()) ==
            static_cast<std::uint64_t>(reached) + st.suppressed_exceptions);
  }
}

TEST_CASE("work_stealing_pool: a group destroyed by an exception waits for its tasks", "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  std::atomic<int> finished{0};
  auto body = [&] {
    task_group g(pool);
    for (int i = 0; i < 4; ++i)
      g.run([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        finished.fetch_add(1);
        throw std::logic_error("child");
      });
    throw std::runtime_error("inline branch"); // g is destroyed during unwinding
  };
  REQUIRE_THROWS_WITH(body(), "inline branch");
  REQUIRE(finished.load() == 4); // the destructor waited: the tasks' references are still valid
  REQUIRE(pool.stats().suppressed_exceptions == 4);
  REQUIRE(pool.stats().unhandled_exceptions == 0);
}

TEST_CASE("work_stealing_pool: without a handler, unobserved exceptions are counted, not fatal",
          "[work_stealing_pool]") {
  work_stealing_pool pool(2);
  for (int i = 0; i < 5; ++i)
    pool.post([] { throw std::logic_error("posted"); });
  {
    task_group g(pool);
    g.run([] { throw std::logic_error("never waited for"); });
  } // destroyed without wait() and with no exception in flight
  work_stealing_pool throwing_handler(1, [](std::exception_ptr) { throw 1; });
  throwing_handler.post([] { throw std::logic_error("handler throws"); });
  throwing_handler.shutdown();
  pool.shutdown();
  REQUIRE(pool.stats().unhandled_exceptions == 6);
  REQUIRE(throwing_handler.stats().unhandled_exceptions == 1);
}

TEST_CASE("work_stealing_pool: more waiting outside threads than external slots", "[work_stealing_pool]") {
  // Beyond the external slots, an outside thread sleeps until its group is done.
  work_stealing_pool pool(2);
  constexpr int threads = static_cast<int>(work_stealing_pool::external_slots) + 4;
  std::atomic<std::int64_t> total{0};
  std::vector<std::thread> outside;
  for (int t = 0; t < threads; ++t)
    outside.emplace_back([&] {
      for (int r = 0; r < 5; ++r)
        total.fetch_add(fib(pool, 15));
    });
  for (auto& t : outside)
    t.join();
  REQUIRE(total.load() == threads * 5 * 610);
}

// ---- Shapes found by an independent review (each hung or terminated before its fix) ----

using otlpconc::testing::watchdog;
using namespace std::chrono_literals;

// Runs body(i) as a job on each of the pool's `workers` workers, all of them inside their jobs at
// once (so no worker is idle to steal), and waits for every job.
template <class Body>
void on_every_worker(work_stealing_pool& pool, std::size_t workers, Body body) {
  std::atomic<std::size_t> arrived{0};
  std::vector<std::future<void>> jobs;
  for (std::size_t i = 0; i < workers; ++i)
    jobs.push_back(pool.submit([&, i] {
      arrived.fetch_add(1);
      while (arrived.load() < workers)
        std::this_thread::yield();
      body(i);
    }));
  for (auto& j : jobs)
    j.get();
}

TEST_CASE("work_stealing_pool: a job spawning into another thread's group, then waiting on it",
          "[work_stealing_pool]") {
  // The group belongs to main; the job's task for it must be found by the job's wait although the
  // group was not created on the job's deque (every worker busy, so nobody else would take it).
  for (std::size_t workers : {1u, 2u}) {
    watchdog wd(30s, "spawn into a foreign group, " + std::to_string(workers) + " workers");
    work_stealing_pool pool(workers);
    std::vector<std::unique_ptr<task_group>> groups;
    for (std::size_t i = 0; i < workers; ++i)
      groups.push_back(std::make_unique<task_group>(pool));
    std::atomic<int> ran{0};
    on_every_worker(pool, workers, [&](std::size_t i) {
      groups[i]->run([&] { ran.fetch_add(1); });
      groups[i]->wait();
    });
    REQUIRE(ran.load() == static_cast<int>(workers));
  }
  // And many such jobs at once, without the barrier.
  watchdog wd(30s, "100 jobs spawning into foreign groups");
  work_stealing_pool pool(2);
  std::vector<std::unique_ptr<task_group>> groups;
  for (int i = 0; i < 100; ++i)
    groups.push_back(std::make_unique<task_group>(pool));
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i)
    pool.post([&, i] {
      groups[static_cast<std::size_t>(i)]->run([&] { ran.fetch_add(1); });
      groups[static_cast<std::size_t>(i)]->wait();
    });
  pool.shutdown();
  REQUIRE(ran.load() == 100);
}

TEST_CASE("work_stealing_pool: a group spawning after another group's wait took its mark's place",
          "[work_stealing_pool]") {
  // o and h spawn, g is created (its mark above h's task), h's wait pops h's task, then g spawns:
  // g's task lands below g's original mark, which must follow it down.
  for (std::size_t workers : {1u, 2u}) {
    watchdog wd(30s, "stale mark, " + std::to_string(workers) + " workers");
    work_stealing_pool pool(workers);
    std::atomic<int> ran{0};
    on_every_worker(pool, workers, [&](std::size_t) {
      task_group o(pool);
      o.run([&] { ran.fetch_add(1); });
      task_group h(pool);
      h.run([&] { ran.fetch_add(1); });
      task_group g(pool);
      h.wait();
      g.run([&] { ran.fetch_add(1); });
      g.wait();
      o.wait();
    });
    REQUIRE(ran.load() == 3 * static_cast<int>(workers));
  }
}

TEST_CASE("work_stealing_pool: a wait that pops another group's task hands it on for that group's wait",
          "[work_stealing_pool]") {
  // g2 then g1 spawn on one deque, so g1's task lies on top, above g2's mark: g2's wait pops it first.
  // It is not g2's to run (isolation), so it must be set aside where g1's wait (or an idle worker)
  // finds it; a wait that dropped it would leave g1 waiting forever.
  for (std::size_t workers : {1u, 2u}) {
    watchdog wd(30s, "another group's task popped by a wait, " + std::to_string(workers) + " workers");
    work_stealing_pool pool(workers);
    std::atomic<int> ran_g1{0}, ran_g2{0}, g1_before_g2_done{0};
    on_every_worker(pool, workers, [&](std::size_t) {
      task_group g1(pool);
      task_group g2(pool);
      g2.run([&] { ran_g2.fetch_add(1); });
      g1.run([&] { ran_g1.fetch_add(1); });
      g2.wait();
      g1_before_g2_done.fetch_add(ran_g1.load());
      g1.wait();
    });
    REQUIRE(ran_g2.load() == static_cast<int>(workers));
    REQUIRE(ran_g1.load() == static_cast<int>(workers));
    if (workers == 1)
      REQUIRE(g1_before_g2_done.load() == 0); // g2's wait ran only g2's task
  }
}

TEST_CASE("work_stealing_pool: pools nested in each other's tasks help each other", "[work_stealing_pool]") {
  // A task of pool A waits on a group of pool B whose task waits on a group of pool A, one worker
  // each: the A worker borrows a slot of B while it waits, and runs B's task, which then waits on
  // A's group from that same thread (which still owns its A deque).
  watchdog wd(30s, "nested pools");
  work_stealing_pool a(1), b(1);
  std::atomic<int> leaves{0};
  auto f = a.submit([&] {
    task_group gb(b);
    gb.run([&] {
      task_group ga(a);
      ga.run([&] { leaves.fetch_add(1); });
      ga.wait();
    });
    gb.wait();
  });
  f.get();
  REQUIRE(leaves.load() == 1);
}

TEST_CASE("work_stealing_pool: a waiter takes back its own group's tasks from a thief", "[work_stealing_pool]") {
  // The other worker batch-steals the 32 slow tasks of a group; the group's waiter, done with the
  // fast ones, must steal its own group's tasks back (the packed tag used to refuse a group's own
  // tasks: the waiter slept while 320 ms of its work sat in the other deque).
  watchdog wd(60s, "waiter stealing its own tasks");
  work_stealing_pool pool(2);
  int by_waiter = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::atomic<bool> release{false}, held{false};
    pool.post([&] {
      held.store(true);
      while (!release.load())
        std::this_thread::yield();
    });
    while (!held.load())
      std::this_thread::yield();
    std::atomic<int> slow_on_waiter{0};
    pool.submit([&] {
          const auto waiter = std::this_thread::get_id();
          task_group g(pool);
          for (int i = 0; i < 32; ++i)
            g.run([&, waiter] {
              std::this_thread::sleep_for(10ms);
              if (std::this_thread::get_id() == waiter)
                slow_on_waiter.fetch_add(1);
            });
          for (int i = 0; i < 32; ++i)
            g.run([] { std::this_thread::sleep_for(100us); });
          release.store(true); // the other worker is free now: it steals the oldest half
          g.wait();
        })
        .get();
    by_waiter += slow_on_waiter.load();
  }
  INFO("slow tasks the waiter ran itself, over 3 rounds of 32: " << by_waiter);
  REQUIRE(by_waiter >= 3);
}

TEST_CASE("work_stealing_pool: a spawn from an outside thread wakes a parked worker", "[work_stealing_pool]") {
  // Every external slot is held by an outside thread waiting on its group, blocked in that group's
  // task, run on itself; the worker is free and parks. A fifth outside thread (no slot left: it
  // sleeps in wait()) spawns: only the worker can run that task, so the spawn must wake it.
  watchdog wd(30s, "spawn notify from an outside thread");
  work_stealing_pool pool(1);
  std::atomic<bool> release{false};
  std::atomic<int> holding{0};
  std::vector<std::thread> holders;
  for (std::size_t i = 0; i < work_stealing_pool::external_slots; ++i)
    holders.emplace_back([&] {
      const auto holder = std::this_thread::get_id();
      for (bool blocked = false; !blocked;) {
        task_group g(pool);
        g.run([&] {
          if (std::this_thread::get_id() != holder)
            return; // the worker took it: it must stay free, try again
          blocked = true;
          holding.fetch_add(1);
          while (!release.load())
            std::this_thread::sleep_for(1ms);
        });
        g.wait(); // holds a slot; usually runs the task itself
      }
    });
  while (holding.load() < static_cast<int>(work_stealing_pool::external_slots))
    std::this_thread::yield();
  std::this_thread::sleep_for(200ms); // the worker parks
  std::atomic<int> ran{0};
  std::thread fifth([&] {
    task_group g(pool);
    g.run([&] { ran.fetch_add(1); });
    g.wait();
  });
  fifth.join();
  release.store(true);
  for (auto& t : holders)
    t.join();
  REQUIRE(ran.load() == 1);
}

TEST_CASE("work_stealing_pool: a parked waiter wakes for a descendant only it can run", "[work_stealing_pool]") {
  // One worker. Main waits on R (and parks); R's task, on the worker, spawns a task of a child group
  // and blocks until it has run: only main, waiting on an ancestor group, can run it. It needs the
  // parent link (the child group descends from R) and the wake-up of parked waiters.
  watchdog wd(30s, "waiter wake-up for a descendant");
  work_stealing_pool pool(1);
  std::atomic<bool> child_ran{false}, on_worker{false};
  task_group r(pool);
  r.run([&] {
    on_worker.store(true);
    std::this_thread::sleep_for(200ms); // main has parked by now
    task_group c(pool);
    c.run([&] { child_ran.store(true); });
    while (!child_ran.load())
      std::this_thread::yield(); // blocks this worker: main must take the child task
    c.wait();
  });
  // Let the worker take R's task (if main's wait took it first, main runs it and the test is moot).
  std::this_thread::sleep_for(50ms);
  r.wait();
  REQUIRE(child_ran.load());
  if (!on_worker.load())
    WARN("R's task ran on main: the wake-up was not exercised this time");
}

TEST_CASE("work_stealing_pool: a heap group created in a task is a root, not a descendant", "[work_stealing_pool]") {
  // T (a task of A) creates a group H on the heap and spawns h1 into it. H may outlive T, so it is
  // the root of its own tree: main, waiting on A, must not run h1 (were H a child of A, main's
  // steals would take it, and H's parent link could dangle once T and A are gone). Main starts
  // waiting only once h1 is on T's worker's deque, so its first search meets h1 (a waiter that
  // parks first is not woken by a spawn into H, and would never look).
  watchdog wd(30s, "heap group isolation");
  work_stealing_pool pool(2);
  const auto main_id = std::this_thread::get_id();
  std::atomic<bool> h1_on_main{false}, h1_ran{false}, h1_spawned{false}, main_waiting{false};
  std::unique_ptr<task_group> h;
  {
    task_group a(pool);
    a.run([&] { // keeps A pending while main waits, until h1 has run (on T's worker, or wrongly on main)
      while (!main_waiting.load())
        std::this_thread::yield();
      // Not a sleep: a worker descheduled past it would leave h1 to main's h->wait() below.
      while (!h1_ran.load())
        std::this_thread::yield();
    });
    a.run([&] {
      h = std::make_unique<task_group>(pool);
      h->run([&] {
        h1_on_main.store(std::this_thread::get_id() == main_id);
        h1_ran.store(true);
      });
      h1_spawned.store(true);
      while (!main_waiting.load())
        std::this_thread::yield();
      std::this_thread::sleep_for(100ms); // h1 sits on this worker's deque while main waits on A
    });
    while (!h1_spawned.load())
      std::this_thread::yield();
    main_waiting.store(true);
    a.wait();
  }
  h->wait();
  REQUIRE(h1_ran.load());
  REQUIRE_FALSE(h1_on_main.load());
}
