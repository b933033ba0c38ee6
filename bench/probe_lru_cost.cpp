// What one operation of sharded_lru costs at 1 thread, counted rather than timed. Not a Google
// Benchmark (scripts/bench.sh runs only bench_*): scripts/lru_cost.sh runs it under Valgrind's
// cachegrind, once without and once with the measured operations, and divides the difference by
// their number: instructions, data reads and writes, and misses of a simulated 1 MiB last-level
// cache, per operation. On a shared 2-core VM whose timings move by 20% from run to run, these
// counts are the same on every run, so a change of a few instructions per operation can be seen.
// What they do not show: the cost of atomic read-modify-writes, hardware prefetching, the TLB.
//
// bench_lru's workload (bench/lru_workload.hpp): capacity 10^5, u64 -> u64, the cache filled
// read-through by the warm-up stream, then the first `ops` keys of the measured Zipf(0.99) stream.
//
// Usage: probe_lru_cost sharded|mutex read100|read_through OPS
//   sharded        otlpconc::sharded_lru_cache, default options
//   mutex          the single-mutex LRU bench_lru compares with
//   read100        get only; read_through: get, and put on a miss
//   OPS            measured operations after the warm-up (0: the warm-up alone)
#include "lru_workload.hpp"
#include "otlpconc/sharded_lru.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

template <class Cache>
std::uint64_t run(Cache& cache, bool read_through, std::size_t ops) {
  for (const std::uint64_t key : otlpconc_bench::trace_streams().warmup)
    if (!cache.get(key))
      cache.put(key, key);
  const auto& keys = otlpconc_bench::trace_streams().measured;
  std::uint64_t sink = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    const std::uint64_t key = keys[i % keys.size()];
    if (auto v = cache.get(key))
      sink += *v;
    else if (read_through)
      cache.put(key, key);
  }
  return sink;
}

int usage() {
  std::fprintf(stderr, "usage: probe_lru_cost sharded|mutex read100|read_through OPS\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4)
    return usage();
  const std::string impl = argv[1], workload = argv[2];
  char* end = nullptr;
  const unsigned long long ops = std::strtoull(argv[3], &end, 10);
  if (end == argv[3] || *end != '\0' || argv[3][0] == '-' || (workload != "read100" && workload != "read_through"))
    return usage();
  const bool read_through = workload == "read_through";
  (void)otlpconc_bench::trace_streams(); // drawn before either count starts: the same in both runs
  std::uint64_t sink = 0;
  if (impl == "mutex") {
    otlpconc_bench::mutex_lru cache(otlpconc_bench::capacity);
    sink = run(cache, read_through, ops);
  } else if (impl == "sharded") {
    otlpconc::sharded_lru_cache<std::uint64_t, std::uint64_t> cache(otlpconc_bench::capacity);
    sink = run(cache, read_through, ops);
  } else {
    return usage();
  }
  std::printf("%llu operations, checksum %llu\n", ops, static_cast<unsigned long long>(sink));
  return 0;
}
