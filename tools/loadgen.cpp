// otlpconc-loadgen: N application threads record spans, each at its scheduled time, through the
// batch span processor into the OTLP JSON Lines file exporter or, with --endpoint, to an OTLP/HTTP
// receiver; a progress line, and a summary with latency histograms measured from each span's actual
// and intended start (see --help).
#include "latency_histogram.hpp"

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
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
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
#include <sys/prctl.h>
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
using otlpconc::loadgen::latency_histogram;
using steady = std::chrono::steady_clock;

// Exit statuses (also in --help).
constexpr int exit_ok = 0;
constexpr int exit_error = 1;      // a runtime error, unbalanced accounts, an unclean shutdown
constexpr int exit_bad_option = 2; // a bad option (nothing was run)
constexpr int exit_lost = 3;       // more than --max-drop-percent of the spans were lost
constexpr int exit_all_failed = 4; // spans failed to export and none was exported

// A span whose scheduled time passed less than this long ago is recorded at once (a sleep ends
// tens of microseconds late); the slots older than this are skipped: no catch-up after a stall.
constexpr std::chrono::milliseconds catch_up_limit{1};

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
                      http://localhost:4318/v1/traces (retries 429/502/503/504 with backoff and
                      Retry-After)
  --protocol P        with --endpoint: http/protobuf (default, the OTLP specification's) or
                      http/json
  --compression C     with --endpoint: none (default), gzip or zstd (when built with zlib /
                      libzstd: OTLPCONC_WITH_ZLIB / OTLPCONC_WITH_ZSTD)
  --header K=V        an HTTP header for every request (repeatable; with --endpoint)
  --span-shape S      plain (default): a name and 2 attributes; rich: also an int array
                      attribute loadgen.key = [thread, seq], an event "loadgen.event" carrying
                      loadgen.seq, and a link to the thread's previous span
  --concurrent-requests N  exports in flight at once over HTTP (default 16)
  --export-timeout-ms N  one export's time limit, retries included (default 30000)
  --policy P          queue-full policy: drop (OpenTelemetry's) or block (default block)
  --queue-size N      the processor's max queue size (default 2048)
  --batch-size N      max export batch size (default 512)
  --delay-ms N        schedule delay in milliseconds (default 5000)
  --sample-ratio R    trace_id_ratio sampler ratio, 0 to 1 (default 1: every span)
  --max-drop-percent P  the most spans that may be lost (dropped or failed), in percent of the
                      spans handed to the processor, for exit status 0 (default 1)
  --summary-json FILE also write the summary as JSON (checked before the run)
  --quiet             no progress line
  --help              this text

Each span is named "loadgen.work" and carries loadgen.thread (int) and loadgen.seq (int, 0, 1, ...
per thread), so a reader can check that every span arrived once.

Environment: the resource follows OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (service.name is
otlpconc-loadgen unless they name one), the span limits the OTEL_*_LIMIT variables, and with
--endpoint the exporter takes the OTEL_EXPORTER_OTLP_* variables (headers, protocol, compression,
the TLS files CERTIFICATE, CLIENT_CERTIFICATE and CLIENT_KEY) under the options given here.

Pacing: each thread has its share of the rate and a fixed schedule (one span every threads/rate
seconds, the threads' schedules interleaved) and sleeps until each span's time: no bursts. A span
whose time passed less than 1 ms ago (a sleep ends late) is recorded at once; when a thread falls
further behind (a stall), the spans it missed are skipped, not recorded in a burst afterwards: they
are counted as skipped and the achieved rate shows them. Latency (start a span, two attributes,
end) is measured from the actual start and from the scheduled start, the way wrk2 and
HdrHistogram's corrected mode do: a stall shows in the latency of the spans it delayed, the
skipped ones included (counted as ending with the next span recorded). With --rate 0 there is no
schedule: one span in 16 is timed, from its actual start.

Accounts: every recorded span is sampled out (--sample-ratio), or handed to the processor and then
exported, dropped (queue full, policy drop) or failed (the export failed or the receiver rejected
it). A progress line goes to standard error every half second on a terminal, every 5 s otherwise.

Exit status: 0 the accounts balance, the pipeline shut down and at most --max-drop-percent of the
spans handed to the processor were lost; 1 a runtime error, unbalanced accounts or a pipeline that
did not shut down; 2 a bad option (nothing ran); 3 more than --max-drop-percent were lost (dropped
or failed); 4 spans failed to export and none was exported (a receiver down, say). Ctrl-C ends the
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
  std::string protocol;    // "" (the default), http/protobuf or http/json
  std::string compression; // "" (none), none, gzip or zstd
  bool rich = false;       // --span-shape rich
  int concurrent_requests = 16;
  std::uint64_t export_timeout_ms = 30000;
  tel::overflow_policy policy = tel::overflow_policy::block;
  std::size_t queue_size = 2048;
  std::size_t batch_size = 512;
  std::uint64_t delay_ms = 5000;
  double sample_ratio = 1.0;
  double max_drop_percent = 1.0;
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
      std::exit(exit_ok);
    }
    if (arg == "--quiet") {
      o.quiet = true;
      continue;
    }
    static constexpr std::string_view with_value[] = {"--threads",
                                                      "--duration",
                                                      "--spans",
                                                      "--rate",
                                                      "--output",
                                                      "--endpoint",
                                                      "--header",
                                                      "--export-timeout-ms",
                                                      "--policy",
                                                      "--queue-size",
                                                      "--batch-size",
                                                      "--delay-ms",
                                                      "--sample-ratio",
                                                      "--summary-json",
                                                      "--max-drop-percent",
                                                      "--concurrent-requests",
                                                      "--protocol",
                                                      "--compression",
                                                      "--span-shape"};
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
      if (!(o.rate >= 0 && o.rate <= 1e9))
        throw bad_option("--rate: must be 0 (as fast as possible) to 1e9 spans per second");
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
    } else if (arg == "--protocol") {
      o.protocol = value;
      if (o.protocol != "http/protobuf" && o.protocol != "http/json")
        throw bad_option("--protocol: must be http/protobuf or http/json, not '" + o.protocol + "'");
    } else if (arg == "--compression") {
      o.compression = value;
      if (o.compression != "none" && o.compression != "gzip" && o.compression != "zstd")
        throw bad_option("--compression: must be none, gzip or zstd, not '" + o.compression + "'");
    } else if (arg == "--span-shape") {
      if (value != "plain" && value != "rich")
        throw bad_option("--span-shape: must be plain or rich, not '" + std::string(value) + "'");
      o.rich = value == "rich";
    } else if (arg == "--concurrent-requests") {
      o.concurrent_requests = parse_number<int>(arg, value);
      if (o.concurrent_requests < 1 || o.concurrent_requests > 1024)
        throw bad_option("--concurrent-requests: must be 1 to 1024");
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
    } else if (arg == "--max-drop-percent") {
      o.max_drop_percent = parse_number<double>(arg, value);
      if (!(o.max_drop_percent >= 0 && o.max_drop_percent <= 100))
        throw bad_option("--max-drop-percent: must be 0 to 100");
    } else if (arg == "--summary-json") {
      o.summary_json = value;
      if (o.summary_json.empty())
        throw bad_option("--summary-json: empty file name");
    }
  }
  if (!o.endpoint.empty() && o.output_given)
    throw bad_option("--output and --endpoint: choose one destination");
  if (o.endpoint.empty() && !o.headers.empty())
    throw bad_option("--header: only with --endpoint");
  if (o.endpoint.empty() && !o.protocol.empty())
    throw bad_option("--protocol: only with --endpoint (the file is OTLP JSON Lines)");
  if (o.endpoint.empty() && !o.compression.empty())
    throw bad_option("--compression: only with --endpoint");
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
  if (ns >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f s", ns / 1e9);
  else if (ns >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  else if (ns >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  return buf;
}

double percent(std::int64_t part, std::int64_t whole) {
  return whole > 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

constexpr double quantiles[] = {0.5, 0.9, 0.99, 0.999};
constexpr const char* quantile_names[] = {"p50", "p90", "p99", "p99.9"};
constexpr const char* quantile_keys[] = {"p50", "p90", "p99", "p999"};

std::string histogram_line(const latency_histogram& h) {
  if (h.count() == 0)
    return "n/a";
  std::string out;
  for (std::size_t i = 0; i < std::size(quantiles); ++i)
    out += std::string(quantile_names[i]) + " " + human_ns(static_cast<double>(h.quantile(quantiles[i]))) + ", ";
  out += "max " + human_ns(static_cast<double>(h.max()));
  return out;
}

std::string histogram_json(const latency_histogram& h) {
  std::string out = "{\"count\":" + std::to_string(h.count());
  for (std::size_t i = 0; i < std::size(quantiles); ++i)
    out += ",\"" + std::string(quantile_keys[i]) + "\":" + std::to_string(h.quantile(quantiles[i]));
  return out + ",\"max\":" + std::to_string(h.max()) + "}";
}

// What one recording thread did.
struct thread_result {
  std::uint64_t recorded = 0;    // spans started (seq 0 .. recorded - 1)
  std::uint64_t sampled_out = 0; // of them, not sampled (never handed to the processor)
  std::uint64_t skipped = 0;     // scheduled spans not recorded: the thread was behind (a stall)
  latency_histogram actual;      // from the actual start
  latency_histogram intended;    // from the scheduled start (paced runs), skipped spans included
};

int run(const options& o, std::FILE* summary_file) {
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
    // The OTEL_EXPORTER_OTLP_* variables first (headers, protocol, compression, TLS files), then
    // the command line over them.
    tel::otlp_http_exporter_options ho = tel::otlp_http_exporter_options::from_env();
    ho.endpoint = o.endpoint;
    ho.headers.insert(ho.headers.end(), o.headers.begin(), o.headers.end());
    ho.timeout = bsp.export_timeout;
    ho.max_concurrent_requests = o.concurrent_requests;
    if (!o.protocol.empty())
      ho.protocol = o.protocol == "http/json" ? tel::otlp_protocol::http_json : tel::otlp_protocol::http_protobuf;
    if (!o.compression.empty()) {
      ho.compression = o.compression == "gzip"   ? tel::otlp_compression::gzip
                       : o.compression == "zstd" ? tel::otlp_compression::zstd
                                                 : tel::otlp_compression::none;
      ho.compression_level = 0;
    }
    try {
      ho.validate();
    } catch (const std::invalid_argument& e) { // a codec this build lacks: an option error
      throw bad_option(std::string("--compression ") + o.compression + ": " + e.what());
    }
    http = std::make_shared<tel::otlp_http_exporter>(ho);
    exporter = http;
  }
#endif
  const std::string destination = o.endpoint.empty() ? o.output : o.endpoint;
  if (!exporter)
    exporter = std::make_shared<tel::json_lines_file_exporter>(o.output,
                                                               tel::json_lines_file_exporter_options{.truncate = true});
  // The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), named otlpconc-loadgen unless
  // the environment names the service.
  tel::resource res = tel::resource::create();
  for (tel::key_value& kv : res.attributes)
    if (kv.key == "service.name" && kv.value == tel::key_value::value_type(std::string("unknown_service")))
      kv.value = std::string("otlpconc-loadgen");
  tel::batch_span_processor processor(exporter, bsp, std::move(res), {"otlpconc.loadgen", "1", {}});
  tel::tracer tracer(processor,
                     {.span_sampler = tel::trace_id_ratio(o.sample_ratio), .limits = tel::span_limits::from_env()});

  const bool paced = o.rate > 0;
  // Each thread's interval between spans; the threads' schedules are interleaved.
  const auto interval = paced ? std::chrono::duration_cast<steady::duration>(
                                    std::chrono::duration<double>(static_cast<double>(o.threads) / o.rate))
                              : steady::duration::zero();
  // Paced runs with a duration end by themselves: every thread accounts for each of its scheduled
  // spans before the deadline (recorded or skipped). stop ends the others: the deadline of an
  // unpaced run, and Ctrl-C.
  std::atomic<bool> stop{false};
  std::atomic<unsigned> threads_done{0};
  std::atomic<std::uint64_t> next_ticket{0}; // --spans: spans claimed so far
  std::vector<thread_result> results(o.threads);
  const auto start = steady::now();
  const auto deadline =
      o.spans ? steady::time_point::max()
              : start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.duration));

  auto worker = [&](unsigned t) {
    // Sleeps end within microseconds of their time, not the default 50 us of timer slack.
    (void)::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    thread_result& r = results[t];
    std::uint64_t seq = 0;
    tel::span_context previous; // --span-shape rich: the link to the thread's previous span
    constexpr std::uint64_t claim = 256;
    std::uint64_t budget = 0; // spans this thread may still record (--spans)
    auto next = start + interval * t / o.threads;
    // (L1) relaxed: only a flag; the join after (L3) orders everything the thread wrote.
    auto stopping = [&] { return stop.load(std::memory_order_relaxed); };
    while (!stopping()) {
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
      auto now = paced ? steady::now() : steady::time_point{};
      std::uint64_t skipped = 0; // the scheduled spans just before this one that were skipped
      if (paced) {
        bool go = true;
        for (;;) {
          // Sleep until the span's time (or the end of the run when it comes after it), 20 ms at
          // a time to see a stop (Ctrl-C).
          const auto until = std::min(next, deadline);
          while (now < until && !stopping()) {
            std::this_thread::sleep_until(std::min(until, now + std::chrono::milliseconds(20)));
            now = steady::now();
          }
          if (next >= deadline) {
            // Spans skipped just before the end are charged as ending now: no span follows them.
            const auto step = static_cast<std::uint64_t>(std::chrono::nanoseconds(interval).count());
            for (std::uint64_t k = 1; k <= skipped; ++k)
              r.intended.record(static_cast<std::uint64_t>(std::chrono::nanoseconds(now - next).count()) + k * step);
            go = false;
            break;
          }
          if (stopping()) {
            go = false;
            break;
          }
          if (now - next <= catch_up_limit)
            break;
          // Behind by more than the catch-up limit (a stall): the spans scheduled more than that
          // long ago are skipped, and the first one after them is waited for as usual.
          // (Only spans scheduled before the end of the run count: a thread may wake after it.)
          const auto behind = std::min(now - catch_up_limit, deadline) - next;
          const auto k = static_cast<std::uint64_t>((behind + interval - steady::duration(1)) / interval);
          next += interval * static_cast<std::int64_t>(k);
          skipped += k;
          r.skipped += k;
        }
        if (!go)
          break;
      }
      const bool timed = paced || seq % 16 == 0;
      const auto t0 = timed && !paced ? steady::now() : now;
      {
        auto span = tracer.start_span("loadgen.work", {{"loadgen.thread", t}, {"loadgen.seq", seq}});
        r.sampled_out += span.context().sampled() ? 0 : 1;
        if (o.rich) {
          const std::int64_t key[] = {t, static_cast<std::int64_t>(seq)};
          span.set_attribute("loadgen.key", key);
          span.add_event("loadgen.event", {{"loadgen.seq", seq}});
          if (previous.valid())
            span.add_link(previous);
          previous = span.context();
        }
      }
      if (timed) {
        const auto t1 = steady::now();
        r.actual.record(static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()));
        if (paced) {
          // From the scheduled start; each skipped span is charged as if it ended with this one.
          const auto late = static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - next).count());
          r.intended.record(late);
          const auto step = static_cast<std::uint64_t>(std::chrono::nanoseconds(interval).count());
          for (std::uint64_t k = 1; k <= skipped; ++k)
            r.intended.record(late + k * step);
        }
      }
      ++seq;
      next += interval;
    }
    r.recorded = seq;
    // (L4) release: pairs with the main thread's acquire load (L5), which then reads nothing of
    // this thread's (the joins order that); it only decides when the run is over.
    threads_done.fetch_add(1, std::memory_order_release);
  };

  std::vector<std::thread> threads;
  for (unsigned t = 0; t < o.threads; ++t)
    threads.emplace_back(worker, t);

  const bool terminal = ::isatty(STDERR_FILENO) != 0;
  const bool progress = !o.quiet;
  const auto progress_every = terminal ? std::chrono::milliseconds(500) : std::chrono::milliseconds(5000);
  std::int64_t last_exported = 0;
  auto last = start;
  while (true) {
    // Wakes for the next progress line, an unpaced run's deadline, and every 50 ms for Ctrl-C and
    // for the threads' end.
    auto wake = std::min(last + progress_every, steady::now() + std::chrono::milliseconds(50));
    if (!paced)
      wake = std::min(wake, deadline);
    std::this_thread::sleep_until(wake);
    const auto now = steady::now();
    if (interrupted != 0 || (!paced && now >= deadline))
      stop.store(true, std::memory_order_relaxed); // (L3) seen by (L1); the joins below synchronize
    const bool done = threads_done.load(std::memory_order_acquire) == o.threads; // (L5) pairs with (L4)
    if (progress && (now - last >= progress_every || done)) {
      const auto s = processor.stats();
      const double dt = std::chrono::duration<double>(now - last).count();
      std::fprintf(stderr, "%s%6.1f s  accepted %12lld  exported %9s/s  queued %6lld  dropped %lld  failed %lld%s",
                   terminal ? "\r" : "", std::chrono::duration<double>(now - start).count(),
                   static_cast<long long>(s.accepted),
                   human(static_cast<double>(s.exported - last_exported) / std::max(dt, 1e-9)).c_str(),
                   static_cast<long long>(s.queued), static_cast<long long>(s.dropped),
                   static_cast<long long>(s.failed), terminal ? "   " : "\n");
      last_exported = s.exported;
      last = now;
    }
    if (done)
      break;
  }
  for (auto& th : threads)
    th.join();
  // The recording window: the schedule's for a paced run that reached its deadline, else until
  // the last thread ended.
  const auto recorded_at = paced && !o.spans && interrupted == 0 ? deadline : steady::now();
  const bool clean = processor.shutdown(std::chrono::milliseconds(60000));
  const auto finished = steady::now();
  if (progress && terminal)
    std::fputc('\n', stderr);

  const auto s = processor.stats();
  std::uint64_t total = 0, sampled_out = 0, skipped = 0;
  latency_histogram actual, intended;
  for (const thread_result& r : results) {
    total += r.recorded;
    sampled_out += r.sampled_out;
    skipped += r.skipped;
    actual.merge(r.actual);
    intended.merge(r.intended);
  }
  const double rec_secs = std::max(std::chrono::duration<double>(recorded_at - start).count(), 1e-9);
  const double all_secs = std::max(std::chrono::duration<double>(finished - start).count(), 1e-9);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  const double export_cpu = static_cast<double>(s.export_thread_cpu_ns) / 1e9;
  const bool balanced = s.accepted == s.exported + s.dropped + s.failed && s.queued == 0 &&
                        static_cast<std::int64_t>(total) == s.accepted + static_cast<std::int64_t>(sampled_out);
  const double dropped_pct = percent(s.dropped, s.accepted);
  const double failed_pct = percent(s.failed, s.accepted);
  const double lost_pct = percent(s.dropped + s.failed, s.accepted);
  const double achieved = static_cast<double>(total) / rec_secs;

  std::printf("otlpconc-loadgen: %u threads, %s policy, queue %zu, batch %zu -> %s\n", o.threads,
              o.policy == tel::overflow_policy::drop ? "drop" : "block", o.queue_size, o.batch_size,
              destination.c_str());
  if (paced)
    std::printf("  rate            target %sspans/s, achieved %sspans/s over %.3f s\n", human(o.rate).c_str(),
                human(achieved).c_str(), rec_secs);
  else
    std::printf("  rate            target as fast as possible, achieved %sspans/s over %.3f s\n",
                human(achieved).c_str(), rec_secs);
  std::printf("  recorded        %12llu spans\n", static_cast<unsigned long long>(total));
  std::printf("  sampled out     %12llu spans (ratio %g: not handed to the processor)\n",
              static_cast<unsigned long long>(sampled_out), o.sample_ratio);
  std::printf("  exported        %12lld spans  %sspans/s to the end of the final flush (%.3f s)\n",
              static_cast<long long>(s.exported), human(static_cast<double>(s.exported) / all_secs).c_str(), all_secs);
  std::printf("  dropped         %12lld spans  %.3f %% of those handed to the processor\n",
              static_cast<long long>(s.dropped), dropped_pct);
  std::printf("  failed          %12lld spans  %.3f %%\n", static_cast<long long>(s.failed), failed_pct);
  std::printf("  lost            %.3f %% (dropped + failed; exit status 3 above %g %%)\n", lost_pct,
              o.max_drop_percent);
  if (paced)
    std::printf("  skipped         %12llu spans scheduled while a thread was more than 1 ms behind (not recorded)\n",
                static_cast<unsigned long long>(skipped));
  std::printf("  latency, from the actual start     %s (%llu spans%s)\n", histogram_line(actual).c_str(),
              static_cast<unsigned long long>(actual.count()), paced ? "" : ", one in 16");
  std::printf("  latency, from the scheduled start  %s\n",
              paced ? (histogram_line(intended) + " (skipped spans included)").c_str()
                    : "n/a (no schedule with --rate 0)");
  std::printf("  export thread   %.3f s of CPU (%.1f%% of one core), %lld exports\n", export_cpu,
              100.0 * export_cpu / all_secs, static_cast<long long>(s.batches));
  std::printf("  peak RSS        %.1f MB\n", rss_mb);
  std::string wire_json;
#if LOADGEN_HAVE_HTTP
  if (http) {
    const auto w = http->stats();
    std::printf("  HTTP            %llu requests (%llu retries, %llu transport errors, at most %zu in flight), "
                "%.1f MB sent, last status %ld\n",
                static_cast<unsigned long long>(w.requests), static_cast<unsigned long long>(w.retries),
                static_cast<unsigned long long>(w.transport_errors), w.max_in_flight,
                static_cast<double>(w.bytes_sent) / 1e6, w.last_status);
    const auto protocol = http->options().protocol == tel::otlp_protocol::http_json ? "http/json" : "http/protobuf";
    const char* codec = http->options().compression == tel::otlp_compression::gzip   ? "gzip"
                        : http->options().compression == tel::otlp_compression::zstd ? "zstd"
                                                                                     : "none";
    std::printf("  encoding        %s, compression %s: %.1f MB encoded", protocol, codec,
                static_cast<double>(w.bytes_encoded) / 1e6);
    if (w.bytes_compressed != 0)
      std::printf(", %.1f MB compressed (%.1fx)", static_cast<double>(w.bytes_compressed) / 1e6,
                  static_cast<double>(w.bytes_encoded) / static_cast<double>(w.bytes_compressed));
    std::printf("\n");
    wire_json = ",\"http_requests\":" + std::to_string(w.requests) + ",\"http_retries\":" + std::to_string(w.retries) +
                ",\"http_transport_errors\":" + std::to_string(w.transport_errors) +
                ",\"http_bytes_sent\":" + std::to_string(w.bytes_sent) +
                ",\"http_bytes_encoded\":" + std::to_string(w.bytes_encoded) +
                ",\"http_bytes_compressed\":" + std::to_string(w.bytes_compressed) + ",\"http_protocol\":\"" +
                protocol + "\",\"http_compression\":\"" + codec + "\"" +
                ",\"http_max_in_flight\":" + std::to_string(w.max_in_flight);
  }
#endif
  if (!s.last_error.empty())
    std::printf("  last error      %s\n", s.last_error.c_str());
  if (summary_file != nullptr) {
    std::string json = "{\"threads\":" + std::to_string(o.threads);
    char number[64];
    auto add = [&](const char* key, double v) {
      std::snprintf(number, sizeof number, "%.6g", v);
      json += std::string(",\"") + key + "\":" + number;
    };
    add("target_rate", o.rate);
    add("achieved_rate", achieved);
    add("duration_s", rec_secs);
    add("sample_ratio", o.sample_ratio);
    json += ",\"recorded\":" + std::to_string(total) + ",\"sampled_out\":" + std::to_string(sampled_out) +
            ",\"accepted\":" + std::to_string(s.accepted) + ",\"exported\":" + std::to_string(s.exported) +
            ",\"dropped\":" + std::to_string(s.dropped) + ",\"failed\":" + std::to_string(s.failed) +
            ",\"skipped\":" + std::to_string(skipped);
    add("dropped_pct", dropped_pct);
    add("lost_pct", lost_pct);
    json += ",\"per_thread\":[";
    for (unsigned t = 0; t < o.threads; ++t)
      json += (t ? "," : "") + std::to_string(results[t].recorded);
    json += "],\"latency_actual_ns\":" + histogram_json(actual);
    json += ",\"latency_scheduled_ns\":" + (paced ? histogram_json(intended) : std::string("null"));
    add("export_cpu_s", export_cpu);
    add("peak_rss_mb", rss_mb);
    json += wire_json + "}\n";
    const bool written = std::fputs(json.c_str(), summary_file) >= 0;
    if (std::fclose(summary_file) != 0 || !written) {
      std::fprintf(stderr, "otlpconc-loadgen: cannot write %s: %s\n", o.summary_json.c_str(), std::strerror(errno));
      return exit_error;
    }
  }
  if (!balanced || !clean) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n",
                 !balanced ? "the span accounts do not balance" : "the pipeline did not shut down cleanly");
    return exit_error;
  }
  if (s.failed > 0 && s.exported == 0) {
    std::fprintf(stderr, "otlpconc-loadgen: every export failed (%lld spans): %s\n", static_cast<long long>(s.failed),
                 s.last_error.c_str());
    return exit_all_failed;
  }
  if (lost_pct > o.max_drop_percent) {
    std::fprintf(stderr, "otlpconc-loadgen: %.3f %% of the spans were lost (dropped or failed), more than %g %%\n",
                 lost_pct, o.max_drop_percent);
    return exit_lost;
  }
  return exit_ok;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const bad_option& e) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return exit_bad_option;
  }
  // The summary file is opened before the run: a bad path is reported now, not after it.
  std::FILE* summary = nullptr;
  if (!o.summary_json.empty()) {
    summary = std::fopen(o.summary_json.c_str(), "w");
    if (summary == nullptr) {
      std::fprintf(stderr, "otlpconc-loadgen: --summary-json: cannot write %s: %s\n", o.summary_json.c_str(),
                   std::strerror(errno));
      return exit_bad_option;
    }
  }
  // Before the pipeline is built: a Ctrl-C during start-up ends the run as soon as it begins (the
  // summary is printed), instead of killing the process.
  std::signal(SIGINT, on_sigint);
  try {
    return run(o, summary);
  } catch (const std::invalid_argument& e) { // options the pipeline rejected
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return exit_bad_option;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "otlpconc-loadgen: %s\n", e.what());
    return exit_error;
  }
}
