// Concurrent LRU caches on a Zipf(0.99) key stream over 10^6 keys, capacity 10^5 entries, values
// std::uint64_t. Every thread walks the same precomputed trace from its own offset; before the
// timed loop the cache is filled by an independent warm-up stream of the same distribution.
//
// Workloads (component names):
//   lru_read100              get only (misses are not inserted)
//   lru_read90_write10       90% get, 10% put of the trace's key
//   lru_read_through         get, and put on a miss (cache-aside); the hit ratio is the cache's quality
//   lru_read_through_cold    the same from an empty cache (no warm-up: the timed loop fills it)
//   lru_read_through_pinned  lru_read_through with every thread pinned to CPU 0 (sched_setaffinity),
//                            as when another process holds the other core: threads run by time slices
//   lru_put100               put only, of the trace's keys (updates of present keys, and inserts)
//   lru_put_new              put only, of keys never seen before: every put inserts and evicts
//                            (items/s at 1 thread is the inverse of a miss-put's cost)
// Implementations:
//   single_mutex_lru    one std::mutex around std::list + std::unordered_map (the baseline)
//   sharded_mutex_lru   the same per shard, as many shards as sharded_lru picks, exact LRU per shard
//   sharded_lru         otlpconc::sharded_lru_cache (lock-free reads, hits mark, evictions give second chances)
//   sharded_lru_exact   otlpconc::sharded_lru_cache with read_buffering off (a lock per hit)
//   tbb_concurrent_lru  oneTBB concurrent_lru_cache (read-through only: lru_read_through)
// Counter hit_ratio: hits / lookups over the run (averaged over threads).
#include "bench_common.hpp"
#include "lru_workload.hpp"
#include "otlpconc/cache_padded.hpp"
#include "otlpconc/sharded_lru.hpp"

#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sched.h>

#if defined(OTLPCONC_BENCH_HAVE_TBB)
#define TBB_PREVIEW_CONCURRENT_LRU_CACHE 1
#include <tbb/concurrent_lru_cache.h>
#endif

namespace {

using otlpconc_bench::capacity;
using otlpconc_bench::mutex_lru;
using otlpconc_bench::trace_length;
using otlpconc_bench::trace_streams;

constexpr int ops_per_iteration = 256;

std::size_t shards_of_ours() {
  return otlpconc::sharded_lru_cache<std::uint64_t, std::uint64_t>(capacity).shard_count();
}

struct single_mutex_lru {
  mutex_lru cache{capacity};
  std::optional<std::uint64_t> get(std::uint64_t k) { return cache.get(k); }
  void put(std::uint64_t k, std::uint64_t v) { cache.put(k, v); }
};

struct sharded_mutex_lru {
  sharded_mutex_lru() : bits(static_cast<unsigned>(std::countr_zero(shards_of_ours()))) {
    const std::size_t n = std::size_t{1} << bits;
    for (std::size_t i = 0; i < n; ++i)
      shards.push_back(std::make_unique<otlpconc::cache_padded<mutex_lru>>(std::in_place, capacity / n));
  }
  mutex_lru& shard(std::uint64_t k) {
    return **shards[bits == 0 ? 0 : otlpconc::detail::mix_hash(std::hash<std::uint64_t>()(k)) >> (64 - bits)];
  }
  std::optional<std::uint64_t> get(std::uint64_t k) { return shard(k).get(k); }
  void put(std::uint64_t k, std::uint64_t v) { shard(k).put(k, v); }
  unsigned bits;
  std::vector<std::unique_ptr<otlpconc::cache_padded<mutex_lru>>> shards;
};

struct sharded_lru {
  otlpconc::sharded_lru_cache<std::uint64_t, std::uint64_t> cache{capacity};
  std::optional<std::uint64_t> get(std::uint64_t k) { return cache.get(k); }
  void put(std::uint64_t k, std::uint64_t v) { cache.put(k, v); }
};

struct sharded_lru_exact {
  otlpconc::sharded_lru_cache<std::uint64_t, std::uint64_t> cache{otlpconc::sharded_lru_options{capacity, 0, false}};
  std::optional<std::uint64_t> get(std::uint64_t k) { return cache.get(k); }
  void put(std::uint64_t k, std::uint64_t v) { cache.put(k, v); }
};

#if defined(OTLPCONC_BENCH_HAVE_TBB)
// Read-through only: operator[] calls the value function on a miss (counted per thread).
thread_local std::int64_t tbb_loads = 0;
std::uint64_t tbb_load(std::uint64_t key) {
  ++tbb_loads;
  return key;
}
struct tbb_concurrent_lru {
  tbb::concurrent_lru_cache<std::uint64_t, std::uint64_t> cache{&tbb_load, capacity};
};
#endif

enum class workload { read100, read90_write10, read_through, read_through_cold, read_through_pinned, put100, put_new };

// Pins the calling thread to CPU 0 for its lifetime in scope, then restores its affinity (thread 0
// of a benchmark is the harness's main thread).
class pin_to_cpu0 {
 public:
  explicit pin_to_cpu0(bool on) : on_(on) {
    if (!on_)
      return;
    sched_getaffinity(0, sizeof(saved_), &saved_);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof(one), &one);
  }
  ~pin_to_cpu0() {
    if (on_)
      sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  pin_to_cpu0(const pin_to_cpu0&) = delete;
  pin_to_cpu0& operator=(const pin_to_cpu0&) = delete;

 private:
  bool on_;
  cpu_set_t saved_{};
};

template <class Cache>
struct shared_cache {
  static inline std::unique_ptr<Cache> cache;
};

// Replays the warm-up stream read-through: the cache is full and in a steady LRU state.
template <class Cache>
void warm(Cache& cache) {
  for (const std::uint64_t key : trace_streams().warmup) {
#if defined(OTLPCONC_BENCH_HAVE_TBB)
    if constexpr (std::is_same_v<Cache, tbb_concurrent_lru>) {
      (void)cache.cache[key];
      continue;
    }
#endif
    if constexpr (requires(Cache & c) { c.put(0, 0); })
      if (!cache.get(key))
        cache.put(key, key);
  }
}

template <class Cache>
void run(benchmark::State& state, workload w) {
  using shared = shared_cache<Cache>;
  const auto& keys = trace_streams().measured;
  const pin_to_cpu0 pinned(w == workload::read_through_pinned);
  if (state.thread_index() == 0) {
    shared::cache = std::make_unique<Cache>();
    if (w != workload::read_through_cold)
      warm(*shared::cache);
  }
  std::size_t pos =
      static_cast<std::size_t>(state.thread_index()) * (trace_length / static_cast<std::size_t>(state.threads()));
  // put_new: distinct keys per thread and per put, above the trace's 32-bit range, scattered by an
  // odd multiplier (consecutive keys would let std::hash's identity give the baseline consecutive
  // buckets, a pattern no real key stream has).
  std::uint64_t fresh = (std::uint64_t{1} << 40) * static_cast<std::uint64_t>(state.thread_index() + 1);
  std::int64_t hits = 0, lookups = 0;
  std::uint64_t sink = 0;
  for (auto _ : state) {
    Cache& cache = *shared::cache;
    for (int i = 0; i < ops_per_iteration; ++i) {
      const std::uint64_t key = keys[pos];
      pos = (pos + 1) & (trace_length - 1);
      if constexpr (requires(Cache & c) { c.put(0, 0); }) {
        if (w == workload::put100) {
          cache.put(key, pos);
          continue;
        }
        if (w == workload::put_new) {
          cache.put((fresh++ * 0x9E3779B97F4A7C15ULL) | (std::uint64_t{1} << 63), key);
          continue;
        }
      }
#if defined(OTLPCONC_BENCH_HAVE_TBB)
      if constexpr (std::is_same_v<Cache, tbb_concurrent_lru>) {
        const std::int64_t before = tbb_loads;
        auto h = cache.cache[key];
        sink += h.value();
        hits += tbb_loads == before ? 1 : 0;
        ++lookups;
        continue;
      }
#endif
      if constexpr (requires(Cache & c) { c.put(0, 0); }) {
        if (w == workload::read90_write10 && (pos % 10) == 0) {
          cache.put(key, pos);
          continue;
        }
        ++lookups;
        if (auto v = cache.get(key)) {
          ++hits;
          sink += *v;
        } else if (w != workload::read100 && w != workload::read90_write10) {
          cache.put(key, key);
        }
      }
    }
  }
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(state.iterations() * ops_per_iteration);
  state.counters["hit_ratio"] = benchmark::Counter(
      lookups == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(lookups), benchmark::Counter::kAvgThreads);
  if (state.thread_index() == 0)
    shared::cache.reset(); // the harness joins the timed loops before this runs
}

template <class Cache>
void add(const char* component, const char* impl, workload w, std::initializer_list<int> thread_counts = {1, 2, 4, 8}) {
  for (int threads : thread_counts) {
    const std::string name = std::string(component) + "/" + impl;
    benchmark::RegisterBenchmark(name.c_str(), [w](benchmark::State& s) { run<Cache>(s, w); })
        ->Threads(threads)
        ->UseRealTime();
  }
}

void register_all() {
  const struct {
    const char* component;
    workload w;
  } workloads[] = {{"lru_read100", workload::read100},
                   {"lru_read90_write10", workload::read90_write10},
                   {"lru_read_through", workload::read_through}};
  for (const auto& [component, w] : workloads) {
    add<single_mutex_lru>(component, "single_mutex_lru", w);
    add<sharded_mutex_lru>(component, "sharded_mutex_lru", w);
    add<sharded_lru>(component, "sharded_lru", w);
    add<sharded_lru_exact>(component, "sharded_lru_exact", w);
  }
  // The write path and the conditions issue 21 names: a cold start, both threads on one core, and
  // puts alone. Only the baseline and sharded_lru (the others add nothing to these questions).
  const struct {
    const char* component;
    workload w;
  } write_path[] = {{"lru_read_through_cold", workload::read_through_cold},
                    {"lru_read_through_pinned", workload::read_through_pinned},
                    {"lru_put100", workload::put100},
                    {"lru_put_new", workload::put_new}};
  for (const auto& [component, w] : write_path) {
    add<single_mutex_lru>(component, "single_mutex_lru", w, {1, 2});
    add<sharded_lru>(component, "sharded_lru", w, {1, 2});
  }
  std::string missing;
#if defined(OTLPCONC_BENCH_HAVE_TBB)
  add<tbb_concurrent_lru>("lru_read_through", "tbb_concurrent_lru", workload::read_through);
#else
  missing += " tbb(libtbb-dev)";
#endif
  benchmark::AddCustomContext("peers_missing", missing.empty() ? "none" : missing);
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
