// MPMC queue throughput: ms_queue against Boost.Lockfree (the baseline), a mutex around std::deque,
// and, where installed, moodycamel::ConcurrentQueue, tbb::concurrent_queue and xenium's
// Michael-Scott queue with hazard pointers. Payload std::uint64_t, and a 32-character std::string for
// the peers that accept one (Boost.Lockfree requires trivially destructible T; the Debian xenium
// needs default constructible T, which std::string is).
//
// Each configuration PxC runs P producer and C consumer threads; per iteration each producer pushes
// 256 items; consumers pop until everything pushed so far is consumed. items/s counts transfers.
#include "bench_common.hpp"
#include "otlpconc/ms_queue.hpp"

#include <boost/lockfree/queue.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#define OTLPCONC_BENCH_HAVE_MOODYCAMEL 1
#endif
#if defined(OTLPCONC_BENCH_HAVE_TBB)
#include <tbb/concurrent_queue.h>
#endif
#if __has_include(<xenium/michael_scott_queue.hpp>)
#include <xenium/michael_scott_queue.hpp>
#include <xenium/policy.hpp>
#include <xenium/reclamation/hazard_pointer.hpp>
#define OTLPCONC_BENCH_HAVE_XENIUM 1
#endif

namespace {

constexpr int batch = 256;

template <class T>
T make_value(std::uint64_t i) {
  if constexpr (std::is_same_v<T, std::string>) {
    std::string s(32, 'x');
    s[0] = static_cast<char>('a' + i % 26);
    return s;
  } else {
    return i;
  }
}

template <class T>
struct otlpconc_ms {
  otlpconc::ms_queue<T> q;
  void push(T v) { q.push(std::move(v)); }
  bool pop(T& out) { return q.try_pop(out); }
};

// std::allocator declared stateful (not always equal): ms_queue then allocates every node from the
// allocator and frees it there, with no node cache. Measures what the cache buys.
template <class T>
struct uncached_allocator : std::allocator<T> {
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = uncached_allocator<U>;
  };
  uncached_allocator() = default;
  template <class U>
  uncached_allocator(const uncached_allocator<U>&) noexcept {}
};

template <class T>
struct otlpconc_ms_uncached {
  otlpconc::ms_queue<T, uncached_allocator<T>> q;
  void push(T v) { q.push(std::move(v)); }
  bool pop(T& out) { return q.try_pop(out); }
};

template <class T>
struct boost_lockfree {
  boost::lockfree::queue<T> q{1024};
  void push(T v) {
    while (!q.push(v)) {
    }
  }
  bool pop(T& out) { return q.pop(out); }
};

template <class T>
struct mutex_deque {
  std::mutex m;
  std::deque<T> q;
  void push(T v) {
    std::lock_guard lock(m);
    q.push_back(std::move(v));
  }
  bool pop(T& out) {
    std::lock_guard lock(m);
    if (q.empty())
      return false;
    out = std::move(q.front());
    q.pop_front();
    return true;
  }
};

#ifdef OTLPCONC_BENCH_HAVE_MOODYCAMEL
template <class T>
struct moodycamel_cq {
  moodycamel::ConcurrentQueue<T> q;
  void push(T v) { q.enqueue(std::move(v)); }
  bool pop(T& out) { return q.try_dequeue(out); }
};
#endif

#ifdef OTLPCONC_BENCH_HAVE_TBB
template <class T>
struct tbb_cq {
  tbb::concurrent_queue<T> q;
  void push(T v) { q.push(std::move(v)); }
  bool pop(T& out) { return q.try_pop(out); }
};
#endif

#ifdef OTLPCONC_BENCH_HAVE_XENIUM
template <class T>
struct xenium_ms_hp {
  xenium::michael_scott_queue<T, xenium::policy::reclaimer<xenium::reclamation::hazard_pointer<>>> q;
  void push(T v) { q.push(std::move(v)); }
  bool pop(T& out) { return q.try_pop(out); }
};
#endif

// Shared between the threads of one run; set up by thread 0 before the timed loop (Google Benchmark
// starts every thread's loop behind a barrier) and torn down by it after the loop.
template <class Queue>
struct shared_run {
  static inline std::unique_ptr<Queue> queue;
  static inline std::atomic<std::int64_t> consumed{0};
};

// spinning: consumers retry at once when the queue looks empty instead of yielding (the variant
// where a thread that loses a CAS keeps competing with the one that won, and with preempted ones).
template <template <class> class Adapter, class T, bool spinning = false>
void transfer(benchmark::State& state, int producers, int consumers) {
  using run = shared_run<Adapter<T>>;
  const int thread = state.thread_index();
  if (thread == 0) {
    run::queue = std::make_unique<Adapter<T>>();
    run::consumed.store(0);
  }
  const std::int64_t per_iteration = std::int64_t{producers} * batch;
  std::int64_t iteration = 0;
  T value = make_value<T>(0);
  for (auto _ : state) {
    if (thread < producers) {
      for (int i = 0; i < batch; ++i)
        run::queue->push(make_value<T>(static_cast<std::uint64_t>(i)));
    } else {
      // Consumers count locally and publish only when the queue looks empty, so the harness adds
      // no shared cache line per transfer. relaxed: a progress count; the queue orders the values.
      const std::int64_t target = (iteration + 1) * per_iteration;
      std::int64_t local = 0;
      while (true) {
        if (run::queue->pop(value)) {
          ++local;
          continue;
        }
        if (local != 0) {
          run::consumed.fetch_add(local, std::memory_order_relaxed);
          local = 0;
        }
        if (run::consumed.load(std::memory_order_relaxed) >= target)
          break;
        if constexpr (!spinning)
          std::this_thread::yield();
      }
    }
    ++iteration;
  }
  benchmark::DoNotOptimize(value);
  if (thread == 0) {
    state.SetItemsProcessed(state.iterations() * per_iteration);
    run::queue.reset();
  }
  (void)consumers;
}

struct config {
  const char* name;
  int producers, consumers;
};
constexpr config configs[] = {{"1P1C", 1, 1}, {"2P2C", 2, 2}, {"4P4C", 4, 4}, {"1P3C", 1, 3}, {"3P1C", 3, 1}};

template <template <class> class Adapter, class T>
void add(const char* component, const char* impl) {
  for (const config& c : configs) {
    std::string name = std::string(component) + "/" + impl + "/" + c.name;
    benchmark::RegisterBenchmark(name.c_str(),
                                 [c](benchmark::State& s) { transfer<Adapter, T>(s, c.producers, c.consumers); })
        ->Threads(c.producers + c.consumers)
        ->UseRealTime();
  }
  if constexpr (std::is_same_v<T, std::uint64_t>) {
    for (const config& c : configs) {
      if (c.producers != c.consumers)
        continue; // 1P1C, 2P2C, 4P4C
      std::string name = std::string(component) + "_spinning/" + impl + "/" + c.name;
      benchmark::RegisterBenchmark(
          name.c_str(), [c](benchmark::State& s) { transfer<Adapter, T, true>(s, c.producers, c.consumers); })
          ->Threads(c.producers + c.consumers)
          ->UseRealTime();
    }
  }
}

void register_all() {
  add<otlpconc_ms, std::uint64_t>("queue_u64", "ms_queue");
  add<otlpconc_ms_uncached, std::uint64_t>("queue_u64", "ms_queue_no_node_cache");
  add<boost_lockfree, std::uint64_t>("queue_u64", "boost_lockfree");
  add<mutex_deque, std::uint64_t>("queue_u64", "mutex_deque");
  add<otlpconc_ms, std::string>("queue_string", "ms_queue");
  add<mutex_deque, std::string>("queue_string", "mutex_deque");
  std::string missing;
#ifdef OTLPCONC_BENCH_HAVE_MOODYCAMEL
  add<moodycamel_cq, std::uint64_t>("queue_u64", "moodycamel");
  add<moodycamel_cq, std::string>("queue_string", "moodycamel");
#else
  missing += " moodycamel(libconcurrentqueue-dev)";
#endif
#ifdef OTLPCONC_BENCH_HAVE_TBB
  add<tbb_cq, std::uint64_t>("queue_u64", "tbb");
  add<tbb_cq, std::string>("queue_string", "tbb");
#else
  missing += " tbb(libtbb-dev)";
#endif
#ifdef OTLPCONC_BENCH_HAVE_XENIUM
  add<xenium_ms_hp, std::uint64_t>("queue_u64", "xenium_ms_hp");
  add<xenium_ms_hp, std::string>("queue_string", "xenium_ms_hp");
#else
  missing += " xenium(libxenium-dev)";
#endif
  benchmark::AddCustomContext("peers_missing", missing.empty() ? "none" : missing);
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
