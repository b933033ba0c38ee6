// The recording path side by side with the real opentelemetry-cpp SDK (built separately, never by
// this project: see docs/telemetry.md, "Recording speed"). Same binary, same spans, same work:
//
//   telemetry_vs_otel_cpp/opentelemetry_cpp/threads:N   the SDK's TracerProvider with its default
//       BatchSpanProcessor options (queue 2048, batch 512, 5 s delay, drops when full), default
//       sampler (AlwaysOn) and id generator (random), and a counting SpanExporter.
//   telemetry_vs_otel_cpp/otlpconc_drop/threads:N, .../otlpconc_block/threads:N   otlpconc's
//       tracer and batch_span_processor with its defaults (the same numbers) in each policy, and a
//       counting span_exporter.
//
// Each of N threads records 200 000 spans: start "GET /items" with the attributes
// http.request.method = "GET" and http.response.status_code = 200, end it. One span in 16 is timed
// (start to end). items/s = exported spans / wall time from the processor's construction to the
// end of its shutdown (every span exported or dropped). Counters: dropped_pct (of recorded spans),
// p50/p99/p999_record_ns. opentelemetry-cpp's warning for each dropped span goes to its internal
// log, silenced here (level Error): writing a line per dropped span would slow its threads down.
#include "bench_common.hpp"
#include "telemetry_common.hpp"

#include "otlpconc/telemetry/tracer.hpp"

#include "opentelemetry/sdk/common/global_log_handler.h"
#include "opentelemetry/sdk/resource/resource.h"
#include "opentelemetry/sdk/trace/batch_span_processor.h"
#include "opentelemetry/sdk/trace/batch_span_processor_options.h"
#include "opentelemetry/sdk/trace/exporter.h"
#include "opentelemetry/sdk/trace/span_data.h"
#include "opentelemetry/sdk/trace/tracer_provider.h"
#include "opentelemetry/sdk/trace/tracer_provider_factory.h"
#include "opentelemetry/trace/provider.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace {

namespace tel = otlpconc::telemetry;
namespace otel = opentelemetry;
using clock_type = std::chrono::steady_clock;

constexpr std::int64_t spans_per_thread = 200'000;
constexpr int timing_stride = 16;

class otel_counting_exporter final : public otel::sdk::trace::SpanExporter {
 public:
  std::unique_ptr<otel::sdk::trace::Recordable> MakeRecordable() noexcept override {
    return std::make_unique<otel::sdk::trace::SpanData>();
  }
  otel::sdk::common::ExportResult
  Export(const otel::nostd::span<std::unique_ptr<otel::sdk::trace::Recordable>>& spans) noexcept override {
    spans_->fetch_add(static_cast<std::int64_t>(spans.size()),
                      std::memory_order_relaxed); // a count, read after shutdown
    return otel::sdk::common::ExportResult::kSuccess;
  }
  bool ForceFlush(std::chrono::microseconds) noexcept override { return true; }
  bool Shutdown(std::chrono::microseconds) noexcept override { return true; }

  explicit otel_counting_exporter(std::shared_ptr<std::atomic<std::int64_t>> spans) : spans_(std::move(spans)) {}

 private:
  std::shared_ptr<std::atomic<std::int64_t>> spans_;
};

struct timing {
  std::vector<std::int64_t> ns;
  void reserve() { ns.reserve(static_cast<std::size_t>(2 * spans_per_thread / timing_stride + 1)); }
};

template <class Record>
void record_loop(Record&& record, timing& t) {
  t.reserve();
  otlpconc::bench::timing_sampler sampler(reinterpret_cast<std::uintptr_t>(&t), timing_stride);
  for (std::int64_t i = 0; i < spans_per_thread; ++i) {
    if (sampler.timed(i)) {
      const auto t0 = clock_type::now();
      record();
      t.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
    } else {
      record();
    }
  }
}

template <class Body>
std::vector<std::int64_t> run_threads(int threads, Body&& body) {
  std::vector<timing> per(static_cast<std::size_t>(threads));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { body(per[static_cast<std::size_t>(t)]); });
  for (auto& th : ts)
    th.join();
  std::vector<std::int64_t> all;
  for (auto& p : per)
    all.insert(all.end(), p.ns.begin(), p.ns.end());
  return all;
}

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty())
    return 0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

void report(benchmark::State& state, std::vector<std::int64_t>& lat, double secs, std::int64_t exported,
            std::int64_t recorded) {
  state.SetIterationTime(secs);
  state.SetItemsProcessed(state.items_processed() + exported);
  state.counters["dropped_pct"] = 100.0 * static_cast<double>(recorded - exported) / static_cast<double>(recorded);
  state.counters["p50_record_ns"] = percentile(lat, 0.5);
  state.counters["p99_record_ns"] = percentile(lat, 0.99);
  state.counters["p999_record_ns"] = percentile(lat, 0.999);
}

void bm_otel_cpp(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  otel::sdk::common::internal_log::GlobalLogHandler::SetLogLevel(otel::sdk::common::internal_log::LogLevel::Error);
  for (auto _ : state) {
    auto count = std::make_shared<std::atomic<std::int64_t>>(0);
    const auto t0 = clock_type::now();
    otel::sdk::trace::BatchSpanProcessorOptions options; // the defaults (OTEL_BSP_* unset)
    auto processor = std::make_unique<otel::sdk::trace::BatchSpanProcessor>(
        std::make_unique<otel_counting_exporter>(count), options);
    std::shared_ptr<otel::sdk::trace::TracerProvider> provider =
        otel::sdk::trace::TracerProviderFactory::Create(std::move(processor));
    auto tracer = provider->GetTracer("bench", "1.0");
    auto lat = run_threads(threads, [&](timing& t) {
      record_loop(
          [&] {
            auto span =
                tracer->StartSpan("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}});
            span->End();
          },
          t);
    });
    provider->Shutdown(); // drains the queue: every span is exported or was dropped
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    report(state, lat, secs, count->load(), spans_per_thread * threads);
  }
}

void bm_otlpconc(benchmark::State& state, tel::overflow_policy policy) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto exporter = std::make_shared<otlpconc::bench::counting_exporter>();
    tel::batch_span_processor_options options; // the defaults
    options.on_full = policy;
    const auto t0 = clock_type::now();
    tel::batch_span_processor processor(exporter, options);
    tel::tracer tracer(processor);
    auto lat = run_threads(threads, [&](timing& t) {
      record_loop(
          [&] {
            auto span =
                tracer.start_span("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}});
            span.end();
          },
          t);
    });
    processor.shutdown();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    const auto s = processor.stats();
    if (s.accepted != s.exported + s.dropped + s.failed || s.exported != exporter->spans.load())
      state.SkipWithError("accounting mismatch");
    report(state, lat, secs, s.exported, spans_per_thread * threads);
  }
}

void thread_args(benchmark::internal::Benchmark* b) {
  for (int t : {1, 2, 4})
    b->Arg(t);
  b->ArgName("threads")->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

BENCHMARK(bm_otel_cpp)->Name("telemetry_vs_otel_cpp/opentelemetry_cpp")->Apply(thread_args);
BENCHMARK_CAPTURE(bm_otlpconc, drop, tel::overflow_policy::drop)
    ->Name("telemetry_vs_otel_cpp/otlpconc_drop")
    ->Apply(thread_args);
BENCHMARK_CAPTURE(bm_otlpconc, block, tel::overflow_policy::block)
    ->Name("telemetry_vs_otel_cpp/otlpconc_block")
    ->Apply(thread_args);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
