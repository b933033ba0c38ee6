// Work stealing: the Chase-Lev deque's owner operations against xenium's chase_work_stealing_deque
// and boost::lockfree::stack (the Boost baseline for LIFO operations), and recursive fork-join
// (fib) on work_stealing_pool against oneTBB's task_group and a plain mutex + condition variable
// thread pool whose wait() also helps.
#include "bench_common.hpp"
#include "otlpconc/chase_lev_deque.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <boost/lockfree/stack.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<xenium/chase_work_stealing_deque.hpp>)
#include <xenium/chase_work_stealing_deque.hpp>
#define OTLPCONC_BENCH_HAVE_XENIUM 1
#endif
#if defined(OTLPCONC_BENCH_HAVE_TBB)
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

namespace {

struct item {
  int v;
};
item items[64];

// ---- deque: owner push + pop pairs, one thread ----
constexpr int pairs_per_iteration = 64;

void deque_pair_otlpconc(benchmark::State& state) {
  otlpconc::chase_lev_deque<item*> d;
  for (auto _ : state)
    for (int i = 0; i < pairs_per_iteration; ++i) {
      d.push(&items[i]);
      benchmark::DoNotOptimize(d.pop());
    }
  state.SetItemsProcessed(state.iterations() * pairs_per_iteration);
}

void deque_pair_boost_stack(benchmark::State& state) {
  boost::lockfree::stack<item*> s(128);
  for (auto _ : state)
    for (int i = 0; i < pairs_per_iteration; ++i) {
      s.push(&items[i]);
      item* out = nullptr;
      benchmark::DoNotOptimize(s.pop(out));
    }
  state.SetItemsProcessed(state.iterations() * pairs_per_iteration);
}

#ifdef OTLPCONC_BENCH_HAVE_XENIUM
void deque_pair_xenium(benchmark::State& state) {
  xenium::chase_work_stealing_deque<item> d;
  for (auto _ : state)
    for (int i = 0; i < pairs_per_iteration; ++i) {
      d.try_push(&items[i]);
      item* out = nullptr;
      benchmark::DoNotOptimize(d.try_pop(out));
    }
  state.SetItemsProcessed(state.iterations() * pairs_per_iteration);
}
#endif

// ---- deque: the owner pushes while one thief steals (2 threads; items/s counts pushes) ----
// Per iteration the owner pushes 256 items and pops what the thief did not take; the thief tries 64
// steals. Thread 0 creates the deque before the timed loop and deletes it after (Google Benchmark
// synchronizes all threads at both ends of the loop).
template <class Adapter>
void owner_push_thief_steal(benchmark::State& state) {
  static Adapter* shared = nullptr;
  if (state.thread_index() == 0)
    shared = new Adapter();
  std::int64_t taken = 0;
  for (auto _ : state) {
    if (state.thread_index() == 0) {
      for (int i = 0; i < 256; ++i)
        shared->push(&items[i % 64]);
      while (shared->pop())
        ++taken;
    } else {
      for (int i = 0; i < 64; ++i)
        taken += shared->steal() ? 1 : 0;
    }
  }
  benchmark::DoNotOptimize(taken);
  if (state.thread_index() == 0) {
    state.SetItemsProcessed(state.iterations() * 256);
    delete shared;
    shared = nullptr;
  }
}

struct otlpconc_deque {
  otlpconc::chase_lev_deque<item*> d;
  void push(item* p) { d.push(p); }
  bool pop() { return d.pop().has_value(); }
  bool steal() { return d.steal().has_value(); }
};

#ifdef OTLPCONC_BENCH_HAVE_XENIUM
struct xenium_deque {
  xenium::chase_work_stealing_deque<item> d;
  void push(item* p) { d.try_push(p); }
  bool pop() {
    item* out = nullptr;
    return d.try_pop(out);
  }
  bool steal() {
    item* out = nullptr;
    return d.try_steal(out);
  }
};
#endif

// ---- fork-join: fib(n) with a task per call ----
constexpr int fib_n = 25;
constexpr std::int64_t fib_tasks = 121392; // spawned tasks for fib(25): fib(26) - 1

std::int64_t fib_otlpconc(otlpconc::work_stealing_pool& pool, int n) {
  if (n < 2)
    return n;
  std::int64_t a = 0;
  otlpconc::task_group g(pool);
  g.run([&] { a = fib_otlpconc(pool, n - 1); });
  const std::int64_t b = fib_otlpconc(pool, n - 2);
  g.wait();
  return a + b;
}

void fork_join_otlpconc(benchmark::State& state) {
  otlpconc::work_stealing_pool pool(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state)
    benchmark::DoNotOptimize(pool.submit([&] { return fib_otlpconc(pool, fib_n); }).get());
  state.SetItemsProcessed(state.iterations() * fib_tasks);
}

#ifdef OTLPCONC_BENCH_HAVE_TBB
std::int64_t fib_tbb(int n) {
  if (n < 2)
    return n;
  std::int64_t a = 0;
  tbb::task_group g;
  g.run([&] { a = fib_tbb(n - 1); });
  const std::int64_t b = fib_tbb(n - 2);
  g.wait();
  return a + b;
}

void fork_join_tbb(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(state.range(0)));
  for (auto _ : state)
    arena.execute([] { benchmark::DoNotOptimize(fib_tbb(fib_n)); });
  state.SetItemsProcessed(state.iterations() * fib_tasks);
}
#endif

// A mutex + condition variable pool with one shared deque: workers take the oldest task, wait()
// runs the newest while it waits (otherwise recursive fork-join would deadlock).
class mutex_pool {
 public:
  explicit mutex_pool(int threads) {
    for (int i = 0; i < threads; ++i)
      workers_.emplace_back([this] {
        std::unique_lock lock(m_);
        for (;;) {
          cv_.wait(lock, [this] { return stop_ || !q_.empty(); });
          if (q_.empty())
            return;
          auto f = std::move(q_.front());
          q_.pop_front();
          lock.unlock();
          f();
          lock.lock();
        }
      });
  }
  ~mutex_pool() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      t.join();
  }
  void push(std::function<void()> f) {
    {
      std::lock_guard lock(m_);
      q_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  void wait_for(const std::atomic<int>& pending) {
    while (pending.load(std::memory_order_acquire) != 0) {
      std::unique_lock lock(m_);
      if (q_.empty()) {
        lock.unlock();
        std::this_thread::yield();
        continue;
      }
      auto f = std::move(q_.back()); // the newest: most likely our own child, keeps nesting shallow
      q_.pop_back();
      lock.unlock();
      f();
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

std::int64_t fib_mutex(mutex_pool& pool, int n) {
  if (n < 2)
    return n;
  std::int64_t a = 0;
  std::atomic<int> pending{1};
  pool.push([&] {
    a = fib_mutex(pool, n - 1);
    pending.store(0, std::memory_order_release);
  });
  const std::int64_t b = fib_mutex(pool, n - 2);
  pool.wait_for(pending);
  return a + b;
}

void fork_join_mutex_pool(benchmark::State& state) {
  mutex_pool pool(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    std::int64_t r = 0;
    std::atomic<int> pending{1};
    pool.push([&] {
      r = fib_mutex(pool, fib_n);
      pending.store(0, std::memory_order_release);
    });
    pool.wait_for(pending);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * fib_tasks);
}

void register_all() {
  benchmark::RegisterBenchmark("deque_push_pop/chase_lev_deque/1thread", deque_pair_otlpconc);
  benchmark::RegisterBenchmark("deque_push_pop/boost_lockfree_stack/1thread", deque_pair_boost_stack);
#ifdef OTLPCONC_BENCH_HAVE_XENIUM
  benchmark::RegisterBenchmark("deque_push_pop/xenium_chase_lev/1thread", deque_pair_xenium);
#endif
  benchmark::RegisterBenchmark("deque_owner_push_thief_steal/chase_lev_deque/2threads",
                               owner_push_thief_steal<otlpconc_deque>)
      ->Threads(2)
      ->UseRealTime();
#ifdef OTLPCONC_BENCH_HAVE_XENIUM
  benchmark::RegisterBenchmark("deque_owner_push_thief_steal/xenium_chase_lev/2threads",
                               owner_push_thief_steal<xenium_deque>)
      ->Threads(2)
      ->UseRealTime();
#endif
  for (int w : {1, 2}) {
    const std::string cfg = std::to_string(w) + "workers";
    benchmark::RegisterBenchmark(("fork_join_fib/work_stealing_pool/" + cfg).c_str(), fork_join_otlpconc)
        ->Arg(w)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("fork_join_fib/mutex_pool/" + cfg).c_str(), fork_join_mutex_pool)
        ->Arg(w)
        ->UseRealTime();
#ifdef OTLPCONC_BENCH_HAVE_TBB
    benchmark::RegisterBenchmark(("fork_join_fib/tbb_task_group/" + cfg).c_str(), fork_join_tbb)->Arg(w)->UseRealTime();
#endif
  }
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
