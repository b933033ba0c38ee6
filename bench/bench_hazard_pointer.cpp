// Cost of protecting a pointer: otlpconc's protect() with the asymmetric fence (compiler barrier on
// the reader, membarrier on the reclaimer) against the symmetric fallback (a seq_cst fence on the
// reader), both through the same code path (try_protect_impl with a fixed mode), plus the pair
// make_hazard_pointer + protect + destruction that a queue operation pays. And the reclaimer's side:
// what one scan's store-load barrier costs (hazard_scan_fence), the membarrier with the other core
// idle and with another thread of the process running there, against the symmetric mode's fence.
#include "bench_common.hpp"
#include "otlpconc/hazard_pointer.hpp"

#include <atomic>
#include <thread>

namespace {

struct obj : otlpconc::hazard_pointer_obj_base<obj> {
  int v = 1;
};

obj g_obj;
std::atomic<obj*> g_src{&g_obj};

template <otlpconc::detail::fence_mode Mode>
void protect_reset(benchmark::State& state) {
  otlpconc::hazard_pointer hp = otlpconc::make_hazard_pointer();
  for (auto _ : state) {
    // relaxed: candidate only, validated by try_protect_impl's acquire re-load
    obj* p = g_src.load(std::memory_order_relaxed);
    while (!hp.try_protect_impl<Mode>(p, g_src)) {
    }
    benchmark::DoNotOptimize(p->v);
    hp.reset_protection();
  }
  state.SetItemsProcessed(state.iterations());
}

void make_protect_release(benchmark::State& state) {
  for (auto _ : state) {
    otlpconc::hazard_pointer hp = otlpconc::make_hazard_pointer();
    obj* p = hp.protect(g_src);
    benchmark::DoNotOptimize(p->v);
  }
  state.SetItemsProcessed(state.iterations());
}

// One scan's barrier, heavy_fence() of the process's mode (membarrier where available). With
// `other_core_running`, a thread of this process spins meanwhile: the kernel must interrupt its
// core (in a VM, a VM exit), which is what a scan costs while the cache or queue is busy.
void scan_fence(benchmark::State& state, bool other_thread_running) {
  std::atomic<bool> stop{false};
  std::thread spinner;
  if (other_thread_running)
    spinner = std::thread([&] {
      std::uint64_t spins = 0;
      // relaxed: a flag polled until the benchmark ends; nothing is published through it
      while (!stop.load(std::memory_order_relaxed))
        benchmark::DoNotOptimize(++spins);
    });
  bool ok = true;
  for (auto _ : state)
    ok = otlpconc::detail::heavy_fence() && ok;
  stop.store(true, std::memory_order_relaxed); // relaxed: as the load above; join() synchronizes
  if (spinner.joinable())
    spinner.join();
  if (!ok)
    state.SkipWithError("membarrier failed");
  state.SetItemsProcessed(state.iterations());
}

void seq_cst_fence(benchmark::State& state) {
  for (auto _ : state)
    std::atomic_thread_fence(std::memory_order_seq_cst);
  state.SetItemsProcessed(state.iterations());
}

void register_all() {
  using otlpconc::detail::fence_mode;
  benchmark::RegisterBenchmark("hazard_protect/symmetric_seq_cst_fence/threads:1",
                               protect_reset<fence_mode::symmetric>);
  benchmark::RegisterBenchmark("hazard_protect/asymmetric_membarrier/threads:1", protect_reset<fence_mode::asymmetric>);
  benchmark::RegisterBenchmark("hazard_protect/make_protect_release_default_mode/threads:1", make_protect_release);
  benchmark::RegisterBenchmark("hazard_scan_fence/heavy_fence_other_core_idle/threads:1",
                               [](benchmark::State& s) { scan_fence(s, false); });
  benchmark::RegisterBenchmark("hazard_scan_fence/heavy_fence_other_core_running/threads:1",
                               [](benchmark::State& s) { scan_fence(s, true); });
  benchmark::RegisterBenchmark("hazard_scan_fence/seq_cst_fence/threads:1", seq_cst_fence);
  benchmark::AddCustomContext(
      "hazard_fence_mode",
      otlpconc::detail::current_fence_mode() == otlpconc::detail::fence_mode::asymmetric ? "asymmetric" : "symmetric");
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
