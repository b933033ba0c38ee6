// What one operation of sharded_lru costs at 1 thread, counted rather than timed. Not a Google
// Benchmark (scripts/bench.sh runs only bench_*): scripts/lru_cost.sh runs it under Valgrind's
// cachegrind, once without and once with the measured operations, and divides the difference by
// their number: instructions, data reads and writes, and misses of a simulated 1 MiB last-level
// cache, per operation. Everything else (drawing the key streams, the warm-up, destroying the
// cache) runs in both, so it cancels out. On a shared 2-core VM where a binary timed against itself
// varies from 0.61x to 1.19x per round, these counts are the same on every run, so a change of a
// few instructions per operation can be seen.
// What they do not show: the cost of atomic read-modify-writes, branch mispredictions, hardware
// prefetching, the TLB. A count is necessary, not sufficient: a change that saves instructions
// must still be timed (docs/sharded_lru.md has one that saved some and ran no faster).
//
// bench_lru's workload (bench/lru_workload.hpp): capacity 10^5, u64 -> u64, the cache filled
// read-through by the warm-up stream, then the first `ops` keys of the measured Zipf(0.99) stream.
//
// Usage: probe_lru_cost sharded|mutex|none read100|read_through|put_new OPS
//   sharded        otlpconc::sharded_lru_cache, default options
//   mutex          the single-mutex LRU bench_lru compares with
//   none           a cache that holds nothing: the driver's own cost (the loop, the key stream)
//   read100        get only; read_through: get, and put on a miss; put_new: put only, of keys never
//                  seen before (bench_lru's lru_put_new: every put inserts and evicts)
//   OPS            measured operations after the warm-up, 0 to 2^32 (0: the warm-up alone)
#include "lru_workload.hpp"
#include "otlpconc/sharded_lru.hpp"

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace {

// Measures the driver alone: every get misses, every put is dropped.
struct no_cache {
  std::optional<std::uint64_t> get(std::uint64_t key) {
    sink ^= key; // a use of the key, as a cache's hash would make
    return std::nullopt;
  }
  void put(std::uint64_t key, std::uint64_t value) { sink ^= key + value; }
  std::uint64_t sink = 0;
};

enum class workload { read100, read_through, put_new };

template <class Cache>
std::uint64_t run(Cache& cache, workload w, std::size_t ops) {
  for (const std::uint64_t key : otlpconc_bench::trace_streams().warmup)
    if (!cache.get(key))
      cache.put(key, key);
  const auto& keys = otlpconc_bench::trace_streams().measured;
  std::uint64_t sink = 0;
  // put_new: bench_lru's keys, never seen before (above the trace's 32-bit range, scattered).
  std::uint64_t fresh = std::uint64_t{1} << 40;
  for (std::size_t i = 0; i < ops; ++i) {
    const std::uint64_t key = keys[i % keys.size()];
    if (w == workload::put_new)
      cache.put((fresh++ * 0x9E3779B97F4A7C15ULL) | (std::uint64_t{1} << 63), key);
    else if (auto v = cache.get(key))
      sink += *v;
    else if (w == workload::read_through)
      cache.put(key, key);
  }
  return sink;
}

int usage(const char* problem) {
  std::fprintf(stderr,
               "probe_lru_cost: %s\nusage: probe_lru_cost sharded|mutex|none read100|read_through|put_new OPS\n",
               problem);
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4)
    return usage("three arguments expected");
  const std::string impl = argv[1], load = argv[2];
  if (impl != "sharded" && impl != "mutex" && impl != "none")
    return usage(("unknown implementation '" + impl + "'").c_str());
  if (load != "read100" && load != "read_through" && load != "put_new")
    return usage(("unknown workload '" + load + "'").c_str());
  const char* text = argv[3];
  errno = 0;
  char* end = nullptr;
  const unsigned long long ops = std::isdigit(static_cast<unsigned char>(text[0])) ? std::strtoull(text, &end, 10) : 0;
  if (end == nullptr || *end != '\0' || errno == ERANGE || ops > (1ULL << 32))
    return usage(("OPS must be a number from 0 to 4294967296, got '" + std::string(text) + "'").c_str());
  const workload w = load == "read100"        ? workload::read100
                     : load == "read_through" ? workload::read_through
                                              : workload::put_new;
  std::uint64_t sink = 0;
  if (impl == "mutex") {
    otlpconc_bench::mutex_lru cache(otlpconc_bench::capacity);
    sink = run(cache, w, ops);
  } else if (impl == "sharded") {
    otlpconc::sharded_lru_cache<std::uint64_t, std::uint64_t> cache(otlpconc_bench::capacity);
    sink = run(cache, w, ops);
  } else {
    no_cache cache;
    sink = run(cache, w, ops) + cache.sink;
  }
  std::printf("%llu operations, checksum %llu\n", ops, static_cast<unsigned long long>(sink));
  return 0;
}
