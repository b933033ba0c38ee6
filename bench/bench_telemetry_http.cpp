// Concurrent exports: the batch span processor over otlp_http_exporter against a loopback receiver
// that answers every request after 50 ms (a Collector in another zone), with 1, 4 and 16 requests
// in flight (otlp_http_exporter_options::max_concurrent_requests).
//
//   telemetry_export/otlp_http_50ms/concurrent_requests:N  one thread records spans as fast as the
//       pipeline takes them for 2 s (block policy, default options otherwise: batches of 512), then
//       the processor shuts down. items/s = exported spans / wall time to the end of the shutdown.
//       Counters: max_in_flight (the most requests in flight), receiver_spans (what the
//       receiver counted; equal to the exported spans).
// One request at a time cannot export more than 512 spans per 50 ms, about 10 000 spans/s, which is
// where opentelemetry-cpp's OTLP/HTTP exporter stands in its default (synchronous) build.
#include "bench_common.hpp"
#include "telemetry_http_sink.hpp"

#include "otlpconc/telemetry/otlp_http_exporter.hpp"
#include "otlpconc/telemetry/tracer.hpp"

#include <chrono>
#include <cstdint>
#include <memory>

namespace {

namespace tel = otlpconc::telemetry;
using clock_type = std::chrono::steady_clock;

void bm_http_export(benchmark::State& state) {
  const int concurrency = static_cast<int>(state.range(0));
  for (auto _ : state) {
    otlpconc::bench::http_sink sink(std::chrono::milliseconds(50));
    tel::otlp_http_exporter_options ho;
    ho.endpoint = sink.url();
    ho.max_concurrent_requests = concurrency;
    auto exporter = std::make_shared<tel::otlp_http_exporter>(ho);
    tel::batch_span_processor_options options;
    options.on_full = tel::overflow_policy::block;
    const auto t0 = clock_type::now();
    std::int64_t exported = 0;
    {
      tel::batch_span_processor processor(exporter, options);
      tel::tracer tracer(processor);
      const auto until = t0 + std::chrono::seconds(2);
      while (clock_type::now() < until)
        for (int i = 0; i < 64; ++i)
          tracer.start_span("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}}).end();
      processor.shutdown();
      const auto s = processor.stats();
      exported = s.exported;
      if (s.dropped != 0 || s.failed != 0 || s.accepted != s.exported)
        state.SkipWithError("spans were lost");
    }
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    state.SetIterationTime(secs);
    state.SetItemsProcessed(state.items_processed() + exported);
    state.counters["max_in_flight"] = static_cast<double>(exporter->stats().max_in_flight);
    state.counters["receiver_spans"] = static_cast<double>(sink.spans());
    if (sink.spans() != exported)
      state.SkipWithError("the receiver counted other spans than were exported");
  }
}

BENCHMARK(bm_http_export)
    ->Name("telemetry_export/otlp_http_50ms")
    ->ArgName("concurrent_requests")
    ->Arg(1)
    ->Arg(4)
    ->Arg(16)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
