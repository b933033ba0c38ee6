// Where the slow spans of the recording path are (issue 19's p99 goal). Not a Google Benchmark
// (scripts/bench.sh runs only bench_*): a probe that times every span (start with two attributes,
// end) with the time-stamp counter, split into start_span and end, and reports the percentiles, the
// split among the spans at or above the p99, how often a slow span sits at the same position of the
// thread's staging batch (64 spans: a batch boundary would put them all at one position), how far
// apart slow spans are, and the processor's accounting (a drop shows the export thread fell behind).
// `full`: the cost of a refused span under overload: the exporter stalls (until shutdown), the
// queue is filled first, and every timed span is refused (drop policy).
//
// Usage: probe_record_latency [threads=2] [spans per thread=400000] [block|drop|full]
// Run it alone on the machine: the figures are only as quiet as the cores.
#include "otlpconc/telemetry/batch_span_processor.hpp"
#include "otlpconc/telemetry/tracer.hpp"
#include "telemetry_common.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <x86intrin.h>

namespace {

namespace tel = otlpconc::telemetry;

struct sample {
  std::uint32_t start_ns = 0; // start_span with its two attributes
  std::uint32_t end_ns = 0;   // end (hands the span to the processor)
  std::uint32_t total() const { return start_ns + end_ns; }
};

// Exports nothing until it is opened (after the recording threads finished): the queue stays full.
struct stalled_exporter final : tel::span_exporter {
  std::atomic<bool> open{false};
  tel::export_result export_spans(const tel::span_batch_view&, clock::time_point) override {
    while (!open.load(std::memory_order_relaxed)) // a flag; the processor orders the rest
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return {};
  }
};

double tsc_per_ns() {
  unsigned aux = 0;
  const auto c0 = std::chrono::steady_clock::now();
  const auto t0 = __rdtscp(&aux);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto c1 = std::chrono::steady_clock::now();
  const auto t1 = __rdtscp(&aux);
  return static_cast<double>(t1 - t0) / std::chrono::duration<double, std::nano>(c1 - c0).count();
}

std::uint32_t quantile(const std::vector<std::uint32_t>& sorted, double q) {
  return sorted.empty() ? 0 : sorted[static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1))];
}

std::vector<std::uint32_t> sorted_copy(std::vector<std::uint32_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

} // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const long spans = argc > 2 ? std::atol(argv[2]) : 400000;
  const std::string policy = argc > 3 ? argv[3] : "block";
  if (threads < 1 || spans < 2000 || (policy != "block" && policy != "drop" && policy != "full")) {
    std::fprintf(stderr, "usage: probe_record_latency [threads>=1] [spans per thread>=2000] [block|drop|full]\n");
    return 2;
  }
  const double per_ns = tsc_per_ns();
  const bool full = policy == "full";
  const auto stalled = full ? std::make_shared<stalled_exporter>() : nullptr;
  std::shared_ptr<tel::span_exporter> exporter = stalled;
  if (!full)
    exporter = std::make_shared<otlpconc::bench::counting_exporter>();
  tel::batch_span_processor_options options; // the defaults
  options.on_full = policy == "block" ? tel::overflow_policy::block : tel::overflow_policy::drop;
  tel::batch_span_processor processor(exporter, options);
  tel::tracer tracer(processor);
  if (full) { // a batch goes to the stalled exporter, then the queue fills behind it
    const auto fill = static_cast<int>(options.max_queue_size + options.max_export_batch_size);
    for (int i = 0; i < fill; ++i)
      tracer.start_span("fill").end();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < fill; ++i)
      tracer.start_span("fill").end();
  }
  const auto count = static_cast<std::size_t>(spans);
  std::vector<std::vector<sample>> per_thread(static_cast<std::size_t>(threads), std::vector<sample>(count));
  std::vector<std::thread> workers;
  for (auto& samples : per_thread)
    workers.emplace_back([&tracer, &samples, per_ns] {
      unsigned aux = 0;
      for (auto& s : samples) {
        const auto t0 = __rdtscp(&aux);
        auto span =
            tracer.start_span("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}});
        const auto t1 = __rdtscp(&aux);
        span.end();
        const auto t2 = __rdtscp(&aux);
        s.start_ns = static_cast<std::uint32_t>(static_cast<double>(t1 - t0) / per_ns);
        s.end_ns = static_cast<std::uint32_t>(static_cast<double>(t2 - t1) / per_ns);
      }
    });
  for (auto& w : workers)
    w.join();
  if (stalled)
    stalled->open.store(true, std::memory_order_relaxed);
  processor.shutdown();
  const auto st = processor.stats();

  constexpr std::size_t warmup = 1000; // each thread's first spans allocate its stage and records
  std::vector<std::uint32_t> total, start, end;
  for (const auto& samples : per_thread)
    for (std::size_t i = warmup; i < samples.size(); ++i) {
      total.push_back(samples[i].total());
      start.push_back(samples[i].start_ns);
      end.push_back(samples[i].end_ns);
    }
  total = sorted_copy(std::move(total));
  start = sorted_copy(std::move(start));
  end = sorted_copy(std::move(end));
  const std::uint32_t p99 = quantile(total, 0.99);
  std::printf("%d thread(s), %ld spans each, %s: accepted %lld, dropped %lld, exported %lld\n", threads, spans,
              policy.c_str(), static_cast<long long>(st.accepted), static_cast<long long>(st.dropped),
              static_cast<long long>(st.exported));
  std::printf("span (ns): p50 %u p90 %u p99 %u p99.9 %u max %u\n", quantile(total, 0.5), quantile(total, 0.9), p99,
              quantile(total, 0.999), total.back());
  std::printf("  start_span: p50 %u p90 %u p99 %u | end: p50 %u p90 %u p99 %u\n", quantile(start, 0.5),
              quantile(start, 0.9), quantile(start, 0.99), quantile(end, 0.5), quantile(end, 0.9), quantile(end, 0.99));

  std::vector<std::uint32_t> slow_start, slow_end;
  std::map<std::size_t, long> by_position; // index mod the staging batch's 64 spans
  std::map<long, long> gaps;               // spans since the thread's previous slow span
  constexpr long gap_bounds[] = {1, 4, 16, 64, 256, 1024};
  for (const auto& samples : per_thread) {
    std::size_t previous = 0;
    for (std::size_t i = warmup; i < samples.size(); ++i) {
      if (samples[i].total() < p99)
        continue;
      slow_start.push_back(samples[i].start_ns);
      slow_end.push_back(samples[i].end_ns);
      ++by_position[i % 64];
      if (previous != 0) {
        const auto gap = static_cast<long>(i - previous);
        long bucket = -1; // beyond the last bound
        for (const long b : gap_bounds)
          if (gap <= b) {
            bucket = b;
            break;
          }
        ++gaps[bucket];
      }
      previous = i;
    }
  }
  slow_start = sorted_copy(std::move(slow_start));
  slow_end = sorted_copy(std::move(slow_end));
  long most = 0;
  for (const auto& [position, n] : by_position)
    most = std::max(most, n);
  std::printf("spans at or above the p99 (%u ns): %zu\n", p99, slow_start.size());
  std::printf("  their start_span: p10 %u p50 %u p90 %u | end: p10 %u p50 %u p90 %u\n", quantile(slow_start, 0.1),
              quantile(slow_start, 0.5), quantile(slow_start, 0.9), quantile(slow_end, 0.1), quantile(slow_end, 0.5),
              quantile(slow_end, 0.9));
  std::printf("  most at one position of the 64-span staging batch: %ld (uniform: %zu)\n", most,
              slow_start.size() / 64);
  std::printf("  spans since the thread's previous slow span:");
  for (const auto& [bound, n] : gaps) {
    if (bound < 0)
      std::printf(" >1024: %ld", n);
    else
      std::printf(" <=%ld: %ld", bound, n);
  }
  std::printf("\n");
  return 0;
}
