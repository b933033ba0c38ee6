// otlpconc-loadgen: N application threads record spans through the batch span processor into the
// OTLP JSON Lines file exporter or, with --endpoint, to an OTLP/HTTP receiver; a live progress line
// and a final summary (see --help).
#include "otlpconc/telemetry/json_lines_file_exporter.hpp"
#include "otlpconc/telemetry/tracer.hpp"
#if defined(OTLPCONC_HAVE_CURL) && OTLPCONC_HAVE_CURL
#include "otlpconc/telemetry/otlp_http_exporter.hpp"
#define LOADGEN_HAVE_HTTP 1
#else
#define LOADGEN_HAVE_HTTP 0
#endif

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

// Ctrl-C ends the run early (the summary is still printed); a second one kills the process.
volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_sigint(int) {
  interrupted = 1;
  std::signal(SIGINT, SIG_DFL);
}

namespace tel = otlpconc::telemetry;
using steady = std::chrono::steady_clock;

constexpr const char* help_text = R"(usage: otlpconc-loadgen [options]

Records spans on N threads through otlpconc's batch span processor and exports them as OTLP JSON
Lines (one TracesData object per line, the OpenTelemetry Collector's otlpjsonfile format) or, with
--endpoint, to an OTLP/HTTP receiver such as an OpenTelemetry Collector.

  --threads N         recording threads (default 2)
  --duration SECONDS  run time (default 5; decimals allowed)
  --spans N           record exactly N spans in all instead of running for a duration
  --rate N            spans per second over all threads (default 100000; 0: as fast as the
                      pipeline takes them, about 1 M/s into a file here, 330 MB per million spans)
  --output FILE       where the spans go (default otlpconc-spans.jsonl; replaced)
  --endpoint URL      send them to an OTLP/HTTP receiver instead, for example
                      http://localhost:4318/v1/traces (JSON encoding; retries 429/502/503/504
                      with backoff and Retry-After)
  --header K=V        an HTTP header for every request (repeatable; with --endpoint)
  --export-timeout-ms N  one export's time limit, retries included (default 30000)
  --policy P          queue-full policy: drop (OpenTelemetry's) or block (default block)
  --queue-size N      the processor's max queue size (default 2048)
  --batch-size N      max export batch size (default 512)
  --delay-ms N        schedule delay in milliseconds (default 5000)
  --sample-ratio R    trace_id_ratio sampler ratio, 0 to 1 (default 1: every span)
  --summary-json FILE also write the summary as JSON
  --quiet             no progress line
  --help              this text

Each span is named "loadgen.work" and carries loadgen.thread (int) and loadgen.seq (int, 0, 1, ...
per thread), so a reader can check that every span arrived once. The progress line (spans/s,
queued, dropped) is shown when standard error is a terminal. Exit status: 0 when every recorded
span is accounted for (exported, dropped or failed) and the pipeline shut down; 1 on a runtime
error; 2 on a bad option. Spans that failed to export (a receiver down past the export timeout,
say) are accounted for: they are counted, reported and do not change the exit status. Ctrl-C ends the
run early with the summary (a second Ctrl-C kills it).
)";

struct options {
  unsigned threads = 2;
  double duration = 5.0;
  std::optional<std::uint64_t> spans;
  double rate = 100000;
  std::string output = "otlpconc-spans.jsonl";
  bool output_given = false;
  std::string endpoint;
  std::vector<std::pair<std::string, std::string>> headers;
  std::uint64_t export_timeout_ms = 30000;
  tel::overflow_policy policy = tel::overflow_policy::block;
  std::size_t queue_size = 2048;
  std::size_t batch_size = 512;
  std::uint64_t delay_ms = 5000;
  double sample_ratio = 1.0;
  std::string summary_json;
  bool quiet = false;
};

struct bad_option : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T parse_number(std::string_view name, std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    throw bad_option(std::string(name) + ": not a number: '" + std::string(text) + "'");
  return value;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help_text, stdout);
      std::exit(0);
    }
    if (arg == "--quiet") {
      o.quiet = true;
      continue;
    }
    static constexpr std::string_view with_value[] = {
        "--threads",      "--duration",          "--spans",  "--rate",       "--output",     "--endpoint",
        "--header",       "--export-timeout-ms", "--policy", "--queue-size", "--batch-size", "--delay-ms",
        "--sample-ratio", "--summary-json"};
    if (std::find(std::begin(with_value), std::end(with_value), arg) == std::end(with_value))
      throw bad_option(std::string(arg) + ": unknown option (see --help)");
    if (i + 1 >= argc)
      throw bad_option(std::string(arg) + ": missing value");
    const std::string_view value = argv[++i];
    if (arg == "--threads") {
      o.threads = parse_number<unsigned>(arg, value);
      if (o.threads == 0 || o.threads > 1000)
        throw bad_option("--threads: must be between 1 and 1000");
    } else if (arg == "--duration") {
      o.duration = parse_number<double>(arg, value);
      if (!(o.duration > 0 && o.duration <= 86400))
        throw bad_option("--duration: must be more than 0 and at most 86400 seconds");
    } else if (arg == "--spans") {
      o.spans = parse_number<std::uint64_t>(arg, value);
      if (*o.spans == 0)
        throw bad_option("--spans: must be at least 1");
    } else if (arg == "--rate") {
      o.rate = parse_number<double>(arg, value);
      if (!(o.rate >= 0))
        throw bad_option("--rate: must not be negative");
    } else if (arg == "--output") {
      o.output = value;
      o.output_given = true;
      if (o.output.empty())
        throw bad_option("--output: empty file name");
    } else if (arg == "--endpoint") {
      o.endpoint = value;
      if (o.endpoint.rfind("http://", 0) != 0 && o.endpoint.rfind("https://", 0) != 0)
        throw bad_option("--endpoint: expected an http:// or https:// URL, got '" + o.endpoint + "'");
    } else if (arg == "--header") {
      const std::size_t eq = value.find('=');
      if (eq == 0 || eq == std::string_view::npos)
        throw bad_option("--header: expected NAME=VALUE, got '" + std::string(value) + "'");
      o.headers.emplace_back(std::string(value.substr(0, eq)), std::string(value.substr(eq + 1)));
    } else if (arg == "--export-timeout-ms") {
      o.export_timeout_ms = parse_number<std::uint64_t>(arg, value);
      if (o.export_timeout_ms == 0 || o.export_timeout_ms > 86'400'000)
        throw bad_option("--export-timeout-ms: must be 1 to 86400000");
    } else if (arg == "--policy") {
      if (value == "drop")
        o.policy = tel::overflow_policy::drop;
      else if (value == "block")
        o.policy = tel::overflow_policy::block;
      else
        throw bad_option("--policy: must be drop or block, not '" + std::string(value) + "'");
    } else if (arg == "--queue-size") {
      o.queue_size = parse_number<std::size_t>(arg, value);
    } else if (arg == "--batch-size") {
      o.batch_size = parse_number<std::size_t>(arg, value);
    } else if (arg == "--delay-ms") {
      o.delay_ms = parse_number<std::uint64_t>(arg, value);
    } else if (arg == "--sample-ratio") {
      o.sample_ratio = parse_number<double>(arg, value);
    } else if (arg == "--summary-json") {
      o.summary_json = value;
    } else {
      throw bad_option(std::string(arg) + ": unknown option (see --help)");
    }
  }
  if (!o.endpoint.empty() && o.output_given)
    throw bad_option("--output and --endpoint: choose one destination");
  if (o.endpoint.empty() && !o.headers.empty())
    throw bad_option("--header: only with --endpoint");
#if !LOADGEN_HAVE_HTTP
  if (!o.endpoint.empty())
    throw bad_option("--endpoint: this otlpconc-loadgen was built without libcurl (OTLPCONC_WITH_CURL)");
#endif
  return o;
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f G", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f k", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f ", v);
  return buf;
}

std::string human_ns(double ns) {
  char buf[32];
  if (ns >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  else if (ns >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  return buf;
}

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty())
    return 0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

int run(const options& o) {
  tel::batch_span_processor_options bsp;
  bsp.max_queue_size = o.queue_size;
  bsp.max_export_batch_size = o.batch_size;
  bsp.schedule_delay =
      std::chrono::milliseconds(static_cast<std::int64_t>(std::min<std::uint64_t>(o.delay_ms, 1ull << 40)));
  bsp.on_full = o.policy;
  bsp.export_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(o.export_timeout_ms));
  bsp.validate(); // bad values are option errors (exit 2), reported before anything is created

  std::shared_ptr<tel::span_exporter> exporter;
#if LOADGEN_HAVE_HTTP
  std::shared_ptr<tel::otlp_http_exporter> http;
  if (!o.endpoint.empty()) {
    tel::otlp_http_exporter_options ho;
    ho.endpoint = o.endpoint;
    ho.headers = o.headers;
    ho.timeout = bsp.export_timeout;
    http = std::make_shared<tel::otlp_http_exporter>(ho);
    exporter = http;
  }
#endif
  const std::string destination = o.endpoint.empty() ? o.output : o.endpoint;
  if (!exporter)
    exporter = std::make_shared<tel::json_lines_file_exporter>(o.output,
                                                               tel::json_lines_file_exporter_options{.truncate = true});
  tel::batch_span_processor processor(exporter, bsp, tel::resource::for_service("otlpconc-loadgen"),
                                      {"otlpconc.loadgen", "1", {}});
  tel::tracer tracer(processor, {.span_sampler = tel::trace_id_ratio(o.sample_ratio)});

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> next_ticket{0}; // --spans: spans claimed so far
  std::vector<std::uint64_t> recorded(o.threads, 0);
  std::vector<std::vector<std::int64_t>> latencies(o.threads);
  const double per_thread_rate = o.rate / o.threads;
  const auto start = steady::now();

  auto worker = [&](unsigned t) {
    std::vector<std::int64_t>& lat = latencies[t];
    std::uint64_t seq = 0;
    auto next_tick = steady::now();
    constexpr std::uint64_t claim = 256;
    std::uint64_t budget = 0; // spans this thread may still record (--spans)
    // (L1) relaxed: only a flag; the join after (L3) orders everything the thread wrote.
    while (!stop.load(std::memory_order_relaxed)) {
      if (o.spans) {
        if (budget == 0) {
          // (L2) relaxed: a ticket counter; no data is published through it.
          const std::uint64_t first = next_ticket.fetch_add(claim, std::memory_order_relaxed);
          if (first >= *o.spans)
            break;
          budget = std::min(claim, *o.spans - first);
        }
        --budget;
      }
      const bool timed = seq % 16 == 0;
      const auto t0 = timed ? steady::now() : steady::time_point{};
      {
        auto span = tracer.start_span("loadgen.work", {{"loadgen.thread", t}, {"loadgen.seq", seq}});
        span.end();
      }
      if (timed)
        lat.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t0).count());
      ++seq;
      if (per_thread_rate > 0 && seq % 16 == 0) {
        next_tick +=
            std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(16.0 / per_thread_rate));
        std::this_thread::sleep_until(next_tick);
      }
    }
    recorded[t] = seq;
  };

  std::vector<std::thread> threads;
  for (unsigned t = 0; t < o.threads; ++t)
    threads.emplace_back(worker, t);

  const bool progress = !o.quiet && ::isatty(STDERR_FILENO);
  std::signal(SIGINT, on_sigint);
  const auto deadline = start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.duration));
  std::int64_t last_exported = 0;
  auto last = start;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto now = steady::now();
    // relaxed: reads the counter of (L2) only to decide when to stop; nothing is read through it.
    const bool done =
        interrupted != 0 || (o.spans ? next_ticket.load(std::memory_order_relaxed) >= *o.spans : now >= deadline);
    if (progress && (now - last >= std::chrono::milliseconds(500) || done)) {
      const auto s = processor.stats();
      const double dt = std::chrono::duration<double>(now - last).count();
      std::fprintf(stderr, "\r%6.1f s  accepted %12lld  exported %9s/s  queued %6lld  dropped %lld  failed %lld   ",
                   std::chrono::duration<double>(now - start).count(), static_cast<long long>(s.accepted),
                   human(static_cast<double>(s.exported - last_exported) / dt).c_str(),
                   static_cast<long long>(s.queued), static_cast<long long>(s.dropped),
                   static_cast<long long>(s.failed));
      last_exported = s.exported;
      last = now;
    }
    if (done)
      break;
  }
  stop.store(true, std::memory_order_relaxed); // (L3) seen by (L1); the joins below synchronize
  for (auto& th : threads)
    th.join();
  const auto recorded_at = steady::now();
  const bool clean = processor.shutdown(std::chrono::milliseconds(60000));
  const auto finished = steady::now();
  if (progress)
    std::fputc('\n', stderr);

  const auto s = processor.stats();
  std::uint64_t total = 0;
  for (auto r : recorded)
    total += r;
  std::vector<std::int64_t> lat;
  for (auto& l : latencies)
    lat.insert(lat.end(), l.begin(), l.end());
  const double rec_secs = std::chrono::duration<double>(recorded_at - start).count();
  const double all_secs = std::chrono::duration<double>(finished - start).count();
  const double p50 = percentile(lat, 0.5), p99 = percentile(lat, 0.99), p999 = percentile(lat, 0.999);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  const double export_cpu = static_cast<double>(s.export_thread_cpu_ns) / 1e9;
  const bool balanced = s.accepted == s.exported + s.dropped + s.failed && s.queued == 0;

  std::printf("otlpconc-loadgen: %u threads, %s policy, queue %zu, batch %zu -> %s\n", o.threads,
              o.policy == tel::overflow_policy::drop ? "drop" : "block", o.queue_size, o.batch_size,
              destination.c_str());
  std::printf("  recorded        %12llu spans  %sspans/s over %.2f s\n", static_cast<unsigned long long>(total),
              human(static_cast<double>(total) / rec_secs).c_str(), rec_secs);
  std::printf("  exported        %12lld spans  %sspans/s to the end of the final flush (%.2f s)\n",
              static_cast<long long>(s.exported), human(static_cast<double>(s.exported) / all_secs).c_str(), all_secs);
  std::printf("  dropped         %12lld\n  failed          %12lld\n", static_cast<long long>(s.dropped),
              static_cast<long long>(s.failed));
  std::printf("  record latency  p50 %s, p99 %s, p99.9 %s (one span in 16 timed)\n", human_ns(p50).c_str(),
              human_ns(p99).c_str(), human_ns(p999).c_str());
  std::printf("  export thread   %.3f s of CPU (%.1f%% of one core), %lld exports\n", export_cpu,
              100.0 * export_cpu / all_secs, static_cast<long long>(s.batches));
  std::printf("  peak RSS        %.1f MB\n", rss_mb);
  std::string wire_json;
#if LOADGEN_HAVE_HTTP
  if (http) {
    const auto w = http->stats();
    std::printf(
        "  HTTP            %llu requests (%llu retries, %llu transport errors), %.1f MB sent, last status %ld\n",
        static_cast<unsigned long long>(w.requests), static_cast<unsigned long long>(w.retries),
        static_cast<unsigned long long>(w.transport_errors), static_cast<double>(w.bytes_sent) / 1e6, w.last_status);
    wire_json = ",\"http_requests\":" + std::to_string(w.requests) + ",\"http_retries\":" + std::to_string(w.retries) +
                ",\"http_transport_errors\":" + std::to_string(w.transport_errors) +
                ",\"http_bytes_sent\":" + std::to_string(w.bytes_sent);
  }
#endif
  if (!s.last_error.empty())
    std::printf("  last error      %s\n", s.last_error.c_str());
  if (!o.summary_json.empty()) {
    FILE* f = std::fopen(o.summary_json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "otlpconc-loadgen: cannot write %s: %s\n", o.summary_json.c_str(), std::strerror(errno));
      return 1;
    }
    std::fprintf(f,
                 "{\"threads\":%u,\"recorded\":%llu,\"accepted\":%lld,\"exported\":%lld,\"dropped\":%lld,"
                 "\"failed\":%lld,\"per_thread\":[",
                 o.threads, static_cast<unsigned long long>(total), static_cast<long long>(s.accepted),
                 static_cast<long long>(s.exported), static_cast<long long>(s.dropped),
                 static_cast<long long>(s.failed));
    for (unsigned t = 0; t < o.threads; ++t)
      std::fprintf(f, "%s%llu", t ? "," : "", static_cast<unsigned long long>(recorded[t]));
    std::fprintf(f,
                 "],\"p50_ns\":%.0f,\"p99_ns\":%.0f,\"p999_ns\":%.0f,\"export_cpu_s\":%.6f,\"peak_rss_mb\":%.1f%s}\n",
                 p50, p99, p999, export_cpu, rss_mb, wire_json.c_str());
    std::fclose(f);
  }
  if (!balanced || !clean) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n",
                 !balanced ? "the span accounts do not balance" : "the pipeline did not shut down cleanly");
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const bad_option& e) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const std::invalid_argument& e) { // options the pipeline rejected
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return 1;
  }
}
