// Telemetry pipeline: otlpconc's batch_span_processor against conventional batch processors (a
// worker thread, a condition variable and a shared buffer), same binary, same span content (a name
// and 2 attributes), same counting exporter. Two baselines share that processor:
//   otel_cpp_style          records the way opentelemetry-cpp's SDK does: StartSpan returns a
//                           shared_ptr to a Span object that owns a separately allocated recordable
//                           (SpanData: name, attributes in an std::unordered_map) and a shared_ptr
//                           SpanContext, and locks the Span's mutex in SetAttribute and End.
//   conventional_cv_buffer  a lean version: one heap span with an std::unordered_map, no Span object.
//
//   telemetry_record/<impl>/<policy>/threads:N  N recording threads each record a fixed number of
//       spans, then the processor shuts down (flushing). items/s = exported spans / wall time
//       from the first span to the end of the flush. Counters: dropped_pct (of recorded spans),
//       p99_record_ns and p999_record_ns (one span in 16 on average is timed, at random gaps:
//       start + 2 attributes + end).
//   telemetry_steady/<impl>/20k_per_s  one thread records 20 000 spans/s for 2 s with the default
//       options. Counters: avg_batch (spans per export, the final flush included) and
//       export_cpu_pct (CPU time of the export thread over the wall time, in percent of a core).
#include "bench_common.hpp"
#include "telemetry_common.hpp"

#include "otlpconc/telemetry/tracer.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

namespace {

namespace tel = otlpconc::telemetry;
using clock_type = std::chrono::steady_clock;

constexpr std::int64_t spans_per_thread = 200'000;
constexpr int timing_stride = 16;

std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// ---- the conventional baseline ---------------------------------------------------------------

struct base_span {
  std::uint8_t trace_id[16];
  std::uint8_t span_id[8];
  std::uint8_t parent_id[8];
  std::string name;
  int kind = 1;
  std::uint64_t start = 0, end = 0;
  std::unordered_map<std::string, std::variant<std::string, bool, std::int64_t, double>> attributes;
  int status = 0;
};

class base_processor {
 public:
  base_processor(std::size_t max_queue, std::size_t batch, std::chrono::milliseconds delay, bool block)
      : max_queue_(max_queue), batch_(batch), delay_(delay), block_(block), worker_([this] { run(); }) {}
  ~base_processor() { shutdown(); }

  void on_end(std::unique_ptr<base_span> s) {
    std::unique_lock lock(mutex_);
    accepted_++;
    if (buffer_.size() >= max_queue_) {
      if (!block_ || stop_) {
        dropped_++;
        return;
      }
      room_cv_.wait(lock, [&] { return buffer_.size() < max_queue_ || stop_; });
      if (stop_) {
        dropped_++;
        return;
      }
    }
    buffer_.push_back(std::move(s));
    const bool wake = buffer_.size() >= batch_;
    lock.unlock();
    if (wake)
      cv_.notify_one();
  }

  void shutdown() {
    {
      std::lock_guard lock(mutex_);
      if (stop_)
        return;
      stop_ = true;
    }
    cv_.notify_one();
    room_cv_.notify_all();
    worker_.join();
  }

  std::int64_t exported() const { return exported_.load(); }
  std::int64_t dropped() const { return dropped_; }
  std::int64_t batches() const { return batches_.load(); }
  std::int64_t worker_cpu_ns() const { return worker_cpu_.load(); }

 private:
  void run() {
    std::vector<std::unique_ptr<base_span>> batch;
    for (;;) {
      bool stopping;
      {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, delay_, [&] { return stop_ || buffer_.size() >= batch_; });
        stopping = stop_;
        const std::size_t n = std::min(batch_, buffer_.size());
        for (std::size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(buffer_.front()));
          buffer_.pop_front();
        }
      }
      room_cv_.notify_all();
      if (!batch.empty()) {
        exported_ += static_cast<std::int64_t>(batch.size()); // the counting exporter
        batches_++;
        batch.clear(); // frees the spans
        continue;      // more may be queued
      }
      if (stopping)
        break;
    }
    worker_cpu_ = thread_cpu_ns();
  }

  const std::size_t max_queue_, batch_;
  const std::chrono::milliseconds delay_;
  const bool block_;
  std::mutex mutex_;
  std::condition_variable cv_, room_cv_;
  std::deque<std::unique_ptr<base_span>> buffer_;
  bool stop_ = false;
  std::int64_t accepted_ = 0, dropped_ = 0;
  std::atomic<std::int64_t> exported_{0}, batches_{0}, worker_cpu_{0};
  std::thread worker_;
};

std::uint64_t unix_now() {
  return tel::unix_nano_now();
}

void base_record(base_processor& p, std::mt19937_64& rng) {
  auto s = std::make_unique<base_span>();
  const std::uint64_t a = rng(), b = rng(), c = rng();
  std::memcpy(s->trace_id, &a, 8);
  std::memcpy(s->trace_id + 8, &b, 8);
  std::memcpy(s->span_id, &c, 8);
  std::memset(s->parent_id, 0, 8);
  s->name = "GET /items";
  s->start = unix_now();
  s->attributes.emplace("http.request.method", std::string("GET"));
  s->attributes.emplace("http.response.status_code", std::int64_t{200});
  s->end = unix_now();
  p.on_end(std::move(s));
}

// The opentelemetry-cpp recording path over the same processor (see the top of the file).
struct otel_span_context {
  std::uint8_t trace_id[16];
  std::uint8_t span_id[8];
  std::uint8_t flags = 1;
};

class otel_style_span {
 public:
  otel_style_span(base_processor& p, std::mt19937_64& rng, const char* name) : processor_(p) {
    recordable_ = std::make_unique<base_span>();
    auto ctx = std::make_shared<otel_span_context>();
    const std::uint64_t a = rng(), b = rng(), c = rng();
    std::memcpy(ctx->trace_id, &a, 8);
    std::memcpy(ctx->trace_id + 8, &b, 8);
    std::memcpy(ctx->span_id, &c, 8);
    std::memcpy(recordable_->trace_id, ctx->trace_id, 16);
    std::memcpy(recordable_->span_id, ctx->span_id, 8);
    std::memset(recordable_->parent_id, 0, 8);
    context_ = std::move(ctx);
    recordable_->name = name;
    recordable_->start = unix_now();
  }
  void set_attribute(const char* key, std::variant<std::string, bool, std::int64_t, double> value) {
    std::lock_guard lock(mutex_);
    if (recordable_)
      recordable_->attributes.insert_or_assign(key, std::move(value));
  }
  void end() {
    std::lock_guard lock(mutex_);
    if (!recordable_)
      return;
    recordable_->end = unix_now();
    processor_.on_end(std::move(recordable_));
  }

 private:
  base_processor& processor_;
  std::mutex mutex_;
  std::unique_ptr<base_span> recordable_;
  std::shared_ptr<otel_span_context> context_;
};

void otel_style_record(base_processor& p, std::mt19937_64& rng) {
  std::shared_ptr<otel_style_span> s = std::make_shared<otel_style_span>(p, rng, "GET /items");
  s->set_attribute("http.request.method", std::string("GET"));
  s->set_attribute("http.response.status_code", std::int64_t{200});
  s->end();
}

// ---- ours -----------------------------------------------------------------------------------

using otlpconc::bench::counting_exporter;

void ours_record(tel::tracer& t) {
  auto s = t.start_span("GET /items", {{"http.request.method", "GET"}, {"http.response.status_code", 200}});
  s.end();
}

// ---- the runs -------------------------------------------------------------------------------

struct run_result {
  double seconds = 0;
  std::int64_t exported = 0, dropped = 0, recorded = 0;
  std::vector<std::int64_t> latencies;
};

template <class Record>
void record_loop(Record&& record, std::int64_t n, std::vector<std::int64_t>& latencies) {
  latencies.reserve(static_cast<std::size_t>(2 * n / timing_stride + 1));
  otlpconc::bench::timing_sampler sampler(reinterpret_cast<std::uintptr_t>(&latencies), timing_stride);
  for (std::int64_t i = 0; i < n; ++i) {
    if (sampler.timed(i)) {
      const auto t0 = clock_type::now();
      record();
      latencies.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
    } else {
      record();
    }
  }
}

template <class Body>
run_result run_threads(int threads, Body&& body) {
  run_result r;
  std::vector<std::vector<std::int64_t>> lat(static_cast<std::size_t>(threads));
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] { body(lat[static_cast<std::size_t>(t)]); });
  for (auto& t : ts)
    t.join();
  for (auto& l : lat)
    r.latencies.insert(r.latencies.end(), l.begin(), l.end());
  return r;
}

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty())
    return 0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

void report(benchmark::State& state, run_result& r, double total_seconds, std::int64_t exported, std::int64_t dropped,
            std::int64_t recorded) {
  state.SetIterationTime(total_seconds);
  state.counters["dropped_pct"] = 100.0 * static_cast<double>(dropped) / static_cast<double>(recorded);
  state.counters["p99_record_ns"] = percentile(r.latencies, 0.99);
  state.counters["p999_record_ns"] = percentile(r.latencies, 0.999);
  state.SetItemsProcessed(state.items_processed() + exported);
}

void bm_record_ours(benchmark::State& state, tel::overflow_policy policy) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto exporter = std::make_shared<counting_exporter>();
    tel::batch_span_processor_options options;
    options.on_full = policy;
    const auto t0 = clock_type::now();
    tel::batch_span_processor processor(exporter, options);
    tel::tracer tracer(processor);
    run_result r = run_threads(threads, [&](std::vector<std::int64_t>& lat) {
      record_loop([&] { ours_record(tracer); }, spans_per_thread, lat);
    });
    processor.shutdown();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    const auto s = processor.stats();
    if (s.accepted != s.exported + s.dropped + s.failed || s.exported != exporter->spans.load())
      state.SkipWithError("accounting mismatch");
    report(state, r, secs, s.exported, s.dropped, spans_per_thread * threads);
  }
}

template <void (*Record)(base_processor&, std::mt19937_64&)>
void bm_record_baseline(benchmark::State& state, bool block) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    base_processor processor(2048, 512, std::chrono::milliseconds(5000), block);
    run_result r = run_threads(threads, [&](std::vector<std::int64_t>& lat) {
      std::mt19937_64 rng(std::random_device{}());
      record_loop([&] { Record(processor, rng); }, spans_per_thread, lat);
    });
    processor.shutdown();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    report(state, r, secs, processor.exported(), processor.dropped(), spans_per_thread * threads);
  }
}

// One thread, 20 spans per millisecond for 2 s: a steady 20 000 spans/s.
template <class Record>
void paced(Record&& record) {
  auto next = clock_type::now();
  for (int tick = 0; tick < 2000; ++tick) {
    for (int i = 0; i < 20; ++i)
      record();
    next += std::chrono::milliseconds(1);
    std::this_thread::sleep_until(next);
  }
}

void steady_counters(benchmark::State& state, double secs, std::int64_t exported, std::int64_t batches,
                     std::int64_t export_cpu_ns) {
  state.SetIterationTime(secs);
  state.SetItemsProcessed(state.items_processed() + exported);
  state.counters["avg_batch"] = batches ? static_cast<double>(exported) / static_cast<double>(batches) : 0.0;
  state.counters["export_cpu_pct"] = 100.0 * static_cast<double>(export_cpu_ns) / 1e9 / secs;
}

void bm_steady_ours(benchmark::State& state) {
  for (auto _ : state) {
    auto exporter = std::make_shared<counting_exporter>();
    const auto t0 = clock_type::now();
    tel::batch_span_processor processor(exporter);
    tel::tracer tracer(processor);
    paced([&] { ours_record(tracer); });
    processor.shutdown();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    const auto s = processor.stats();
    steady_counters(state, secs, s.exported, s.batches, s.export_thread_cpu_ns);
  }
}

template <void (*Record)(base_processor&, std::mt19937_64&)>
void bm_steady_baseline(benchmark::State& state) {
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    base_processor processor(2048, 512, std::chrono::milliseconds(5000), false);
    std::mt19937_64 rng(std::random_device{}());
    paced([&] { Record(processor, rng); });
    processor.shutdown();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    steady_counters(state, secs, processor.exported(), processor.batches(), processor.worker_cpu_ns());
  }
}

void bm_record_otel_style(benchmark::State& state, bool block) {
  bm_record_baseline<otel_style_record>(state, block);
}
void bm_record_lean(benchmark::State& state, bool block) {
  bm_record_baseline<base_record>(state, block);
}
void bm_steady_otel_style(benchmark::State& state) {
  bm_steady_baseline<otel_style_record>(state);
}

void thread_args(benchmark::internal::Benchmark* b) {
  for (int t : {1, 2, 4})
    b->Arg(t);
  b->ArgName("threads")->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(bm_record_otel_style, drop, false)->Name("telemetry_record/otel_cpp_style/drop")->Apply(thread_args);
BENCHMARK_CAPTURE(bm_record_lean, drop, false)
    ->Name("telemetry_record/conventional_cv_buffer/drop")
    ->Apply(thread_args);
BENCHMARK_CAPTURE(bm_record_ours, drop, tel::overflow_policy::drop)
    ->Name("telemetry_record/batch_span_processor/drop")
    ->Apply(thread_args);
BENCHMARK_CAPTURE(bm_record_otel_style, block, true)->Name("telemetry_record/otel_cpp_style/block")->Apply(thread_args);
BENCHMARK_CAPTURE(bm_record_lean, block, true)
    ->Name("telemetry_record/conventional_cv_buffer/block")
    ->Apply(thread_args);
BENCHMARK_CAPTURE(bm_record_ours, block, tel::overflow_policy::block)
    ->Name("telemetry_record/batch_span_processor/block")
    ->Apply(thread_args);
BENCHMARK(bm_steady_otel_style)
    ->Name("telemetry_steady/otel_cpp_style/20k_per_s")
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(bm_steady_ours)
    ->Name("telemetry_steady/batch_span_processor/20k_per_s")
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
