// Peak memory of the telemetry pipeline: 10^7 spans (a name and 2 attributes) recorded by 2
// threads and exported through a batch_span_processor with the default options in block mode (no
// drops), to a counting exporter. Alone in its process, so that the process's peak resident set
// (getrusage) is the pipeline's: counter peak_rss_mb. items/s: exported spans per second.
#include "bench_common.hpp"
#include "telemetry_common.hpp"

#include "otlpconc/telemetry/tracer.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <sys/resource.h>
#include <thread>
#include <vector>

namespace {

namespace tel = otlpconc::telemetry;

using otlpconc::bench::counting_exporter;

void bm_rss(benchmark::State& state) {
  constexpr int threads = 2;
  constexpr std::int64_t total = 10'000'000;
  for (auto _ : state) {
    auto exporter = std::make_shared<counting_exporter>();
    tel::batch_span_processor_options options;
    options.on_full = tel::overflow_policy::block;
    const auto t0 = std::chrono::steady_clock::now();
    {
      tel::batch_span_processor processor(exporter, options);
      tel::tracer tracer(processor);
      std::vector<std::thread> ts;
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&] {
          for (std::int64_t i = 0; i < total / threads; ++i) {
            auto s =
                tracer.start_span("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}});
          }
        });
      for (auto& t : ts)
        t.join();
      processor.shutdown();
      if (processor.stats().exported != total)
        state.SkipWithError("not every span was exported");
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    state.SetItemsProcessed(state.items_processed() + exporter->spans.load());
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    state.counters["peak_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0; // ru_maxrss is in KiB
  }
}

BENCHMARK(bm_rss)
    ->Name("telemetry_rss/batch_span_processor/1e7_spans")
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
