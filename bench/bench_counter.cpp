// Counter increments/s: sharded_counter, padded_counter, one shared std::atomic (the baseline), and a
// thread-local plain integer (the floor: what an increment costs with no sharing at all).
#include "bench_common.hpp"
#include "otlpconc/counter.hpp"

#include <atomic>
#include <cstdint>

namespace {

constexpr int batch = 64; // increments per benchmark iteration, to keep loop overhead out

otlpconc::sharded_counter g_sharded;
otlpconc::padded_counter g_padded;
std::atomic<std::int64_t> g_atomic{0};
thread_local std::int64_t t_plain = 0;

void sharded(benchmark::State& state) {
  for (auto _ : state)
    for (int i = 0; i < batch; ++i)
      g_sharded.increment();
  state.SetItemsProcessed(state.iterations() * batch);
}

void padded(benchmark::State& state) {
  for (auto _ : state)
    for (int i = 0; i < batch; ++i)
      g_padded.increment();
  state.SetItemsProcessed(state.iterations() * batch);
}

void std_atomic(benchmark::State& state) {
  for (auto _ : state)
    for (int i = 0; i < batch; ++i)
      g_atomic.fetch_add(1, std::memory_order_relaxed); // relaxed: a statistic, orders nothing
  state.SetItemsProcessed(state.iterations() * batch);
}

void thread_local_plain(benchmark::State& state) {
  for (auto _ : state)
    for (int i = 0; i < batch; ++i) {
      t_plain += 1;
      benchmark::ClobberMemory(); // one real store per increment, as the counters do
    }
  state.SetItemsProcessed(state.iterations() * batch);
}

void register_all() {
  struct peer {
    const char* name;
    void (*fn)(benchmark::State&);
  };
  for (peer p : {peer{"counter/std_atomic", std_atomic}, peer{"counter/padded_counter", padded},
                 peer{"counter/sharded_counter", sharded}, peer{"counter/thread_local_plain", thread_local_plain}})
    benchmark::RegisterBenchmark(p.name, p.fn)->ThreadRange(1, 8)->UseRealTime();
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
