// Tests of otlp_http_exporter against a real HTTP server on loopback (tests/e2e/otlp_server.py,
// started by each test), which checks every request and answers with scripted failures.
#include "loopback_server.hpp"
#include "warning_capture.hpp"

#include "otlpconc/telemetry/otlp_http_exporter.hpp"
#include "otlpconc/telemetry/tracer.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace otlpconc::telemetry;
using namespace std::chrono_literals;
using otlpconc_test::loopback_server;
using steady = std::chrono::steady_clock;

namespace {

// `n` spans with distinct, known ids.
struct test_batch {
  explicit test_batch(std::size_t n) : spans(n) {
    for (std::size_t i = 0; i < n; ++i) {
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016zx", 0x1000 + i);
      const auto sid = span_id::from_hex(hex).value();
      const auto tid = trace_id::from_hex(std::string("0af7651916cd43dd8448eb211c80319c")).value();
      spans[i].set_ids(tid, sid, span_id{}, 1, false);
      spans[i].set_name("op");
      spans[i].set_start_time(1000);
      spans[i].set_end_time(2000);
      ids.push_back(hex);
      pointers.push_back(&spans[i]);
    }
  }
  span_batch_view view() const { return {res, scope, pointers}; }

  resource res = resource::for_service("http-test");
  instrumentation_scope scope{"http-test", "1", {}};
  std::vector<span_data> spans;
  std::vector<const span_data*> pointers;
  std::vector<std::string> ids;
};

otlp_http_exporter_options fast_options(const loopback_server& server) {
  otlp_http_exporter_options o;
  o.endpoint = server.url();
  o.initial_backoff = 20ms;
  o.max_backoff = 100ms;
  o.timeout = 20s;
  o.encode_threads = 0;
  return o;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

} // namespace

TEST_CASE("otlp_http_exporter posts OTLP JSON with the configured headers", "[otlp_http]") {
  loopback_server server({});
  auto o = fast_options(server);
  o.protocol = otlp_protocol::http_json;
  o.headers = {{"X-Tenant", "acme"}, {"Authorization", "Bearer s3cret"}};
  otlp_http_exporter exporter(o);
  test_batch batch(3);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  INFO(r.error);
  CHECK(r.status == export_status::success);
  CHECK(r.rejected_spans == 0);
  const auto log = server.requests();
  REQUIRE(log.size() == 1);
  CHECK(has(log[0], "\"path\": \"/v1/traces\""));
  CHECK(has(log[0], "\"content-type\": \"application/json\""));
  CHECK(has(log[0], "\"x-tenant\": \"acme\""));
  CHECK(has(log[0], "\"authorization\": \"Bearer s3cret\""));
  CHECK(has(log[0], "\"spans\": 3"));
  CHECK_FALSE(has(log[0], "\"expect\"")); // no 100-continue round trip before the body
  for (const auto& id : batch.ids)
    CHECK(has(log[0], "\"" + id + "\""));
  CHECK_FALSE(has(log[0], "\"error\""));
  const auto w = exporter.stats();
  CHECK(w.requests == 1);
  CHECK(w.retries == 0);
  CHECK(w.last_status == 200);
  CHECK(w.bytes_sent > 100);
}

TEST_CASE("otlp_http_exporter retries 429, 502, 503 and 504, then succeeds", "[otlp_http]") {
  loopback_server server({"429", "502", "503", "504"});
  otlp_http_exporter exporter(fast_options(server));
  test_batch batch(2);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  INFO(r.error);
  CHECK(r.status == export_status::success);
  const auto log = server.requests();
  REQUIRE(log.size() == 5);
  for (const auto& line : log) // every attempt carries the same batch
    CHECK((has(line, "\"spans\": 2") && has(line, batch.ids[0]) && has(line, batch.ids[1])));
  CHECK(has(log[0], "\"status\": 429"));
  CHECK(has(log[4], "\"status\": 200"));
  const auto w = exporter.stats();
  CHECK(w.requests == 5);
  CHECK(w.retries == 4);
}

TEST_CASE("otlp_http_exporter does not retry other statuses", "[otlp_http]") {
  for (const char* status : {"400", "401", "403", "404", "413", "500", "501", "301"}) {
    INFO("status " << status);
    loopback_server server({std::string(status) + "|body={\"code\":3,\"message\":\"bad things\"}"});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, std::string("HTTP ") + status));
    CHECK(has(r.error, "bad things")); // the receiver's explanation reaches the error
    CHECK(server.requests().size() == 1);
    CHECK(exporter.stats().retries == 0);
  }
}

TEST_CASE("otlp_http_exporter honours Retry-After in seconds and as an HTTP date", "[otlp_http]") {
  SECTION("seconds: the wait replaces the (much shorter) backoff") {
    loopback_server server({"503|retry-after=1"});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    const double took = seconds_since(t0);
    CHECK(r.status == export_status::success);
    CHECK(server.requests().size() == 2);
    CHECK(took >= 0.95);
    CHECK(took < 5.0);
  }
  SECTION("an HTTP date in the past: retry at once") {
    loopback_server server({"503|retry-after=Wed, 21 Oct 2015 07:28:00 GMT"});
    auto o = fast_options(server);
    o.initial_backoff = 3000ms; // the backoff would take 2.4 s or more: the date must replace it
    o.max_backoff = 3000ms;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::success);
    CHECK(seconds_since(t0) < 2.0);
    CHECK(server.requests().size() == 2);
  }
}

TEST_CASE("otlp_http_exporter counts the spans of a partial success as rejected", "[otlp_http]") {
  loopback_server server({"200|partial=3"});
  otlp_http_exporter exporter(fast_options(server));
  test_batch batch(10);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  CHECK(r.status == export_status::success);
  CHECK(r.rejected_spans == 3);
  CHECK(has(r.error, "rejected 3 spans"));
  CHECK(has(r.error, "scripted rejection"));
  CHECK(server.requests().size() == 1); // a partial success is not retried
}

TEST_CASE("otlp_http_exporter reads a protobuf partial success and a protobuf error Status", "[otlp_http]") {
  loopback_server server({"200|partial=4", "400|status=span 7 has no name"});
  otlp_http_exporter exporter(fast_options(server)); // http/protobuf: the receiver answers in protobuf
  test_batch batch(10);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  CHECK(r.status == export_status::success);
  CHECK(r.rejected_spans == 4);
  CHECK(has(r.error, "rejected 4 spans: scripted rejection"));
  const export_result bad = exporter.export_spans(batch.view(), steady::now() + 10s);
  CHECK(bad.status == export_status::failure);
  CHECK(has(bad.error, "HTTP 400"));
  CHECK(has(bad.error, ": span 7 has no name")); // the Status message, not its raw bytes
  const auto log = server.requests();
  REQUIRE(log.size() == 2);
  CHECK(has(log[0], "\"content-type\": \"application/x-protobuf\""));
}

TEST_CASE("otlp_http_exporter: the timeout bounds the whole export, retries included", "[otlp_http]") {
  SECTION("a receiver that keeps answering 503") {
    loopback_server server({"503", "503", "503", "503", "503", "503", "503", "503", "503", "503", "503", "503", "503",
                            "503", "503", "503", "503", "503", "503", "503", "503", "503", "503", "503", "503"});
    auto o = fast_options(server);
    o.timeout = 600ms;
    o.initial_backoff = 50ms;
    o.max_backoff = 200ms;
    o.max_attempts = 1000;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    const double took = seconds_since(t0);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "HTTP 503"));
    CHECK(took < 1.5);
    const auto n = server.requests().size();
    CHECK(n >= 2);  // it did retry
    CHECK(n <= 12); // with backoff, not in a tight loop
  }
  SECTION("the processor's deadline is earlier than options.timeout") {
    loopback_server server({"503", "503", "503", "503", "503", "503", "503", "503", "503", "503"});
    auto o = fast_options(server);
    o.max_attempts = 1000;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 300ms);
    CHECK(r.status == export_status::failure);
    CHECK(seconds_since(t0) < 1.2);
  }
  SECTION("a Retry-After beyond the deadline fails at once instead of waiting") {
    loopback_server server({"429|retry-after=30"});
    auto o = fast_options(server);
    o.timeout = 2000ms;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "HTTP 429"));
    CHECK(has(r.error, "deadline"));
    CHECK(seconds_since(t0) < 1.5);
    CHECK(server.requests().size() == 1);
  }
  SECTION("a receiver that never answers: the request is cut at the deadline") {
    loopback_server server({"200|hang=20"});
    auto o = fast_options(server);
    o.timeout = 700ms;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const auto t0 = steady::now();
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    const double took = seconds_since(t0);
    CHECK(r.status == export_status::failure);
    CHECK(took >= 0.6);
    CHECK(took < 2.0);
    CHECK(exporter.stats().transport_errors == 1);
  }
  SECTION("max_attempts ends the retries") {
    loopback_server server({"503", "503", "503", "503", "503"});
    auto o = fast_options(server);
    o.max_attempts = 3;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "3 attempts"));
    CHECK(server.requests().size() == 3);
  }
}

TEST_CASE("otlp_http_exporter retries transport failures", "[otlp_http]") {
  SECTION("a connection closed without an answer, then success") {
    loopback_server server({"200|close", "200|close"});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    INFO(r.error);
    CHECK(r.status == export_status::success);
    CHECK(server.requests().size() == 3);
    CHECK(exporter.stats().transport_errors == 2);
  }
  SECTION("nothing listening: every attempt fails to connect") {
    std::string url;
    {
      loopback_server gone({});
      url = gone.url(); // a port nothing listens on once the server has stopped
    }
    otlp_http_exporter_options o;
    o.endpoint = url;
    o.initial_backoff = 10ms;
    o.max_backoff = 20ms;
    o.max_attempts = 3;
    o.encode_threads = 0;
    otlp_http_exporter exporter(o);
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "onnect")); // libcurl: "Couldn't connect to server"
    const auto w = exporter.stats();
    CHECK(w.requests == 3);
    CHECK(w.transport_errors == 3);
  }
}

TEST_CASE("otlp_http_exporter does not retry transport errors that cannot heal", "[otlp_http]") {
  otlp_http_exporter_options o;
  o.endpoint = "http://[::1/v1/traces"; // malformed URL: libcurl refuses it
  o.initial_backoff = 10ms;
  o.max_backoff = 20ms;
  o.encode_threads = 0;
  otlp_http_exporter exporter(o);
  test_batch batch(1);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  CHECK(r.status == export_status::failure);
  CHECK(exporter.stats().requests == 1);
  CHECK(exporter.stats().retries == 0);
}

TEST_CASE("otlp_http_exporter: shutdown interrupts a request in flight and a retry wait", "[otlp_http]") {
  for (const char* script : {"200|hang=20", "503|retry-after=20"}) {
    INFO(script);
    loopback_server server({script});
    auto o = fast_options(server);
    o.timeout = 60s;
    auto exporter = std::make_unique<otlp_http_exporter>(o);
    test_batch batch(1);
    auto result =
        std::async(std::launch::async, [&] { return exporter->export_spans(batch.view(), steady::now() + 60s); });
    const auto give_up = steady::now() + 10s;
    while (server.requests().empty() && steady::now() < give_up)
      std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(100ms); // into the request, or into the wait
    const auto t0 = steady::now();
    CHECK(exporter->shutdown_and_wait(steady::now() + 5s));
    CHECK(seconds_since(t0) < 1.5);
    // After shutdown nothing is sent.
    CHECK(exporter->export_spans(batch.view(), steady::now() + 1s).status == export_status::failure);
    // shutdown waited for the interrupted export, so the exporter may be destroyed while that
    // export's thread is still returning (ASan would see a use after free otherwise).
    exporter.reset();
    REQUIRE(result.wait_for(5s) == std::future_status::ready);
    const export_result r = result.get();
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "shut down"));
    CHECK(server.requests().size() == 1);
  }
}

TEST_CASE("the processor over otlp_http_exporter: 503s with Retry-After, counts reconciled", "[otlp_http]") {
  loopback_server server({"503|retry-after=1", "503", "200|partial=2", "500"});
  auto o = fast_options(server);
  auto exporter = std::make_shared<otlp_http_exporter>(o);
  batch_span_processor_options bo;
  bo.max_export_batch_size = 50;
  bo.max_queue_size = 10000;
  bo.on_full = overflow_policy::block;
  batch_span_processor processor(exporter, bo);
  tracer t(processor);
  std::set<std::string> recorded;
  for (int i = 0; i < 400; ++i) {
    auto span = t.start_span("work", {{"i", i}});
    recorded.insert(span.context().span_id.to_hex());
  }
  REQUIRE(processor.shutdown(30000ms));
  const auto s = processor.stats();
  // The log: 1 request 503 (Retry-After), 1 request 503, then one 200 with 2 rejected, one 500
  // (a whole batch failed, not retried), then 200s.
  std::set<std::string> delivered; // ids in requests answered 2xx
  std::size_t failed_batch_spans = 0;
  const auto log = server.requests();
  for (std::size_t k = 0; k < log.size(); ++k) {
    INFO(log[k]);
    CHECK_FALSE(has(log[k], "\"error\""));
    const bool ok = has(log[k], "\"status\": 200");
    std::size_t at = log[k].find("\"ids\": [");
    REQUIRE(at != std::string::npos);
    const std::size_t end = log[k].find(']', at);
    std::size_t spans_here = 0;
    for (at = log[k].find('"', at + 8); at < end; at = log[k].find('"', at + 18)) {
      const std::string id = log[k].substr(at + 1, 16);
      CHECK(recorded.count(id) == 1);
      ++spans_here;
      if (ok)
        CHECK(delivered.insert(id).second); // no span delivered twice
    }
    if (has(log[k], "\"status\": 500"))
      failed_batch_spans = spans_here;
  }
  CHECK(log.size() >= 400 / 50 + 2); // at least 8 batches, the first sent 3 times
  CHECK(failed_batch_spans > 0);
  CHECK(s.accepted == 400);
  CHECK(s.exported + s.failed + s.dropped == 400);
  CHECK(s.dropped == 0);
  CHECK(s.failed == static_cast<std::int64_t>(failed_batch_spans + 2));
  CHECK(s.exported == static_cast<std::int64_t>(delivered.size()) - 2); // the 2 rejected were delivered but not taken
  CHECK(exporter->stats().retries == 2);
}

TEST_CASE("otlp_http_exporter_options are checked, naming the field", "[otlp_http]") {
  auto bad = [](auto change, const char* what) {
    otlp_http_exporter_options o;
    change(o);
    CHECK_THROWS_WITH(otlp_http_exporter(o), Catch::Contains(what));
  };
  bad([](auto& o) { o.endpoint = "localhost:4318/v1/traces"; }, "endpoint");
  bad([](auto& o) { o.endpoint = "http://local host/v1/traces"; }, "endpoint");
  bad([](auto& o) { o.timeout = 0ms; }, "timeout");
  bad([](auto& o) { o.initial_backoff = 0ms; }, "initial_backoff");
  bad([](auto& o) { o.max_backoff = o.initial_backoff / 2; }, "max_backoff");
  bad([](auto& o) { o.backoff_multiplier = 0.5; }, "backoff_multiplier");
  bad([](auto& o) { o.max_attempts = 0; }, "max_attempts");
  bad([](auto& o) { o.headers = {{"Bad:Name", "x"}}; }, "header");
  bad([](auto& o) { o.headers = {{"X-Ok", "line\r\nInjected: yes"}}; }, "header");
  bad([](auto& o) { o.encode_threads = -2; }, "encode_threads");
  bad([](auto& o) { o.protocol = static_cast<otlp_protocol>(7); }, "protocol");
  bad([](auto& o) { o.compression = static_cast<otlp_compression>(7); }, "compression");
  bad(
      [](auto& o) {
        o.compression = otlp_compression::gzip;
        o.compression_level = 10;
      },
      "compression_level must be 0 (the codec's default) or 1 to 9 for gzip");
  bad(
      [](auto& o) {
        o.compression = otlp_compression::zstd;
        o.compression_level = 20;
      },
      "1 to 19 for zstd");
  CHECK_NOTHROW(otlp_http_exporter(otlp_http_exporter_options{}));
}

TEST_CASE("OTEL_EXPORTER_OTLP_* environment variables configure the exporter, and unusable values are warnings",
          "[otlp_http]") {
  const char* vars[] = {"OTEL_EXPORTER_OTLP_ENDPOINT",    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                        "OTEL_EXPORTER_OTLP_HEADERS",     "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                        "OTEL_EXPORTER_OTLP_TIMEOUT",     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                        "OTEL_EXPORTER_OTLP_PROTOCOL",    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                        "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"};
  for (const char* v : vars)
    ::unsetenv(v);
  {
    const auto o = otlp_http_exporter_options::from_env();
    CHECK(o.endpoint == "http://localhost:4318/v1/traces");
    CHECK(o.timeout == 10000ms);
  }
  ::setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/", 1);
  ::setenv("OTEL_EXPORTER_OTLP_HEADERS", " api-key = a%20b%2Cc , x-team=core,", 1);
  ::setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500", 1);
  ::setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", 1);
  {
    const auto o = otlp_http_exporter_options::from_env();
    CHECK(o.endpoint == "http://collector:4318/v1/traces");
    REQUIRE(o.headers.size() == 2);
    CHECK(o.headers[0] == std::pair<std::string, std::string>("api-key", "a b,c"));
    CHECK(o.headers[1] == std::pair<std::string, std::string>("x-team", "core"));
    CHECK(o.timeout == 2500ms);
  }
  // The signal-specific variables win, and the traces endpoint is used as is.
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://other:443/custom/path", 1);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700", 1);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "k=v", 1);
  {
    const auto o = otlp_http_exporter_options::from_env();
    CHECK(o.endpoint == "https://other:443/custom/path");
    CHECK(o.timeout == 700ms);
    REQUIRE(o.headers.size() == 1);
    CHECK(o.headers[0].first == "k");
  }
  // What cannot be used is reported (naming the variable and showing the value) and ignored: the
  // environment never makes from_env throw (the specification: SHOULD for numbers, MUST for enums).
  otlpconc_test::warning_capture warnings;
  auto ignored = [&](const char* var, const char* value, std::initializer_list<std::string_view> parts) {
    INFO(var << "=" << value);
    ::setenv(var, value, 1);
    otlp_http_exporter_options o;
    CHECK_NOTHROW(o = otlp_http_exporter_options::from_env());
    std::vector<std::string_view> all(parts);
    all.push_back(var);
    CHECK(warnings.any(all));
    warnings.take();
    return o;
  };
  // (Under the general variables the traces-specific ones stay set: they win.)
  // The protocol: the general variable says http/json; grpc is not spoken (the general one stays).
  CHECK(otlp_http_exporter_options::from_env().protocol == otlp_protocol::http_json);
  {
    const auto o = ignored("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", {"'grpc'", "not spoken"});
    CHECK(o.endpoint == "https://other:443/custom/path");
    CHECK(o.protocol == otlp_protocol::http_json); // the ignored traces variable lets the general one apply
  }
  ignored("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", {"'thrift'", "is not one of"});
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "HTTP/PROTOBUF", 1); // enums are case-insensitive
  CHECK(otlp_http_exporter_options::from_env().protocol == otlp_protocol::http_protobuf);
  ::unsetenv("OTEL_EXPORTER_OTLP_PROTOCOL");
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", 1);
  CHECK(otlp_http_exporter_options::from_env().protocol == otlp_protocol::http_json);
  CHECK(warnings.take().empty());
  ::unsetenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
  CHECK(ignored("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s", {"'10s'", "ignored"}).timeout == 10000ms);
  CHECK(ignored("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5", {"'-5'"}).timeout == 10000ms);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0", 1); // the Timeout type: 0 is no limit
  CHECK(otlp_http_exporter_options::from_env().timeout == std::chrono::milliseconds::max());
  ::unsetenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
  {
    const auto o = ignored("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=1,novalue,k=%zz,b=2", {"'novalue'"});
    REQUIRE(o.headers.size() == 2); // the good members are kept
    CHECK(o.headers[0] == std::pair<std::string, std::string>("a", "1"));
    CHECK(o.headers[1] == std::pair<std::string, std::string>("b", "2"));
    ::setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "k=%zz", 1);
    (void)otlp_http_exporter_options::from_env();
    CHECK(warnings.any({"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "'k=%zz'"}));
    ::setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x=line%0D%0AInjected: yes", 1);
    CHECK(otlp_http_exporter_options::from_env().headers.empty()); // no header injection
    warnings.take();
  }
  ::unsetenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS");
  CHECK(ignored("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318", {"'collector:4318'"}).endpoint ==
        "http://collector:4318/v1/traces"); // the general variable's, still set
  ::unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  // Compression: gzip and zstd (this build has both: the test target links them); the
  // signal-specific variable wins; none turns it off.
  ::setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", 1);
  CHECK(otlp_http_exporter_options::from_env().compression == otlp_compression::gzip);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "ZSTD", 1);
  CHECK(otlp_http_exporter_options::from_env().compression == otlp_compression::zstd);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none", 1);
  CHECK(otlp_http_exporter_options::from_env().compression == otlp_compression::none);
  CHECK(warnings.take().empty());
  ignored("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "brotli", {"'brotli'", "is not one of"});
  ::unsetenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
  ::unsetenv("OTEL_EXPORTER_OTLP_COMPRESSION");
  CHECK(warnings.take().empty());
  for (const char* v : vars)
    ::unsetenv(v);
}

// ---- issue 19: concurrent exports, redirects, warnings, honest byte counts ------------------------

namespace {

// The outcomes of asynchronous exports, in the order they were reported.
struct outcomes {
  std::mutex m;
  std::condition_variable cv;
  std::vector<export_result> results;
  export_callback callback() {
    return [this](export_result r) {
      std::lock_guard lock(m);
      results.push_back(std::move(r));
      cv.notify_all();
    };
  }
  bool wait_for(std::size_t n, std::chrono::seconds timeout) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, timeout, [&] { return results.size() >= n; });
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return results.size();
  }
};

// A file whose existence releases the loopback server's "wait=" answers.
struct gate_file {
  std::string path = "/tmp/otlpconc-gate-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++);
  gate_file() { std::remove(path.c_str()); }
  ~gate_file() { std::remove(path.c_str()); }
  void open() const { std::ofstream(path) << "open\n"; }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

bool wait_for_requests(const loopback_server& server, std::size_t n) {
  const auto give_up = steady::now() + 30s;
  while (server.requests().size() < n && steady::now() < give_up)
    std::this_thread::sleep_for(10ms);
  return server.requests().size() >= n;
}

} // namespace

TEST_CASE("otlp_http_exporter keeps up to max_concurrent_requests exports in flight, never more", "[otlp_http]") {
  gate_file gate;
  const std::string held = "200|wait=" + gate.path;
  loopback_server server({held, held, held, held, held, held});
  auto o = fast_options(server);
  o.max_concurrent_requests = 4;
  otlp_http_exporter exporter(o);
  test_batch batch(3);
  outcomes done;
  // The fifth and sixth exports wait for room: they are started from another thread.
  std::thread submitter([&] {
    for (int i = 0; i < 6; ++i)
      exporter.export_spans_async(batch.view(), steady::now() + 60s, done.callback());
  });
  REQUIRE(wait_for_requests(server, 4));
  std::this_thread::sleep_for(200ms);
  CHECK(server.requests().size() == 4); // the others wait for room, unsent
  CHECK(exporter.stats().in_flight == 4);
  CHECK(done.size() == 0);
  CHECK_FALSE(exporter.force_flush(steady::now() + 100ms)); // exports are in flight
  gate.open();
  submitter.join();
  REQUIRE(exporter.force_flush(steady::now() + 30s)); // true once every export has reported
  CHECK(done.size() == 6);
  for (const export_result& r : done.results)
    CHECK(r.status == export_status::success);
  const auto w = exporter.stats();
  CHECK(w.requests == 6);
  CHECK(w.max_in_flight == 4);
  CHECK(w.in_flight == 0);
  CHECK(server.requests().size() == 6);
}

TEST_CASE("otlp_http_exporter: shutdown fails every export in flight at once and waits for them", "[otlp_http]") {
  gate_file gate; // never opened
  const std::string held = "200|wait=" + gate.path;
  loopback_server server({held, held, held});
  auto o = fast_options(server);
  o.max_concurrent_requests = 3;
  o.timeout = 60s;
  auto exporter = std::make_unique<otlp_http_exporter>(o);
  test_batch batch(1);
  outcomes done;
  for (int i = 0; i < 3; ++i)
    exporter->export_spans_async(batch.view(), steady::now() + 60s, done.callback());
  REQUIRE(wait_for_requests(server, 3));
  const auto t0 = steady::now();
  CHECK(exporter->shutdown_and_wait(steady::now() + 10s));
  CHECK(seconds_since(t0) < 2.0);
  REQUIRE(done.size() == 3); // reported before shutdown returned
  for (const export_result& r : done.results) {
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "shut down during a request"));
  }
  exporter->export_spans_async(batch.view(), steady::now() + 1s, done.callback()); // fails unsent
  CHECK(done.size() == 4);
  exporter.reset();
  CHECK(server.requests().size() == 3);
}

TEST_CASE("the processor over otlp_http_exporter keeps exports in flight against a slow receiver", "[otlp_http]") {
  // Every answer takes 300 ms: one request at a time would need 8 x 300 ms for 8 batches.
  std::vector<std::string> script(8, "200|hang=0.3");
  loopback_server server({script[0], script[1], script[2], script[3], script[4], script[5], script[6], script[7]});
  auto o = fast_options(server);
  o.max_concurrent_requests = 8;
  auto exporter = std::make_shared<otlp_http_exporter>(o);
  batch_span_processor_options bo;
  bo.max_export_batch_size = 16;
  bo.max_queue_size = 1024;
  bo.on_full = overflow_policy::block;
  batch_span_processor processor(exporter, bo);
  tracer t(processor);
  for (int i = 0; i < 128; ++i)
    t.start_span("slow").end();
  REQUIRE(processor.force_flush(60s)); // waits for the exports in flight: the counts are final
  const auto s = processor.stats();
  CHECK(s.exported == 128);
  CHECK(s.queued == 0);
  CHECK(exporter->stats().max_in_flight > 1);
  REQUIRE(processor.shutdown(10s));
}

TEST_CASE("otlp_http_exporter follows redirects to the same host, at most 5", "[otlp_http]") {
  SECTION("307, 308, 301 and 302 to the same URL: the POST is sent again, body included") {
    for (const char* status : {"307", "308", "301", "302"}) {
      INFO(status);
      loopback_server server({std::string(status) + "|location=/v1/traces"});
      otlp_http_exporter exporter(fast_options(server));
      test_batch batch(2);
      const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
      INFO(r.error);
      CHECK(r.status == export_status::success);
      const auto log = server.requests();
      REQUIRE(log.size() == 2);
      CHECK(has(log[1], "\"spans\": 2")); // the body went again
      CHECK(exporter.stats().redirects == 1);
      CHECK(exporter.stats().retries == 0);
    }
  }
  SECTION("303 (See Other) is not a place to send the export to") {
    loopback_server server({"303|location=/v1/traces"});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "HTTP 303"));
    CHECK(server.requests().size() == 1);
  }
  SECTION("another host is not followed: the headers may carry credentials") {
    loopback_server server({"307|location=http://localhost:9/v1/traces"});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "HTTP 307"));
    CHECK(has(r.error, "not followed"));
    CHECK(exporter.stats().redirects == 0);
  }
  SECTION("more than 5 redirects fail the export") {
    const std::string again = "307|location=/v1/traces";
    loopback_server server({again, again, again, again, again, again, again});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(1);
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK(has(r.error, "more than 5 redirects"));
    CHECK(server.requests().size() == 6);
    CHECK(exporter.stats().redirects == 5);
  }
}

TEST_CASE("otlp_http_exporter keeps the receiver's partial-success warning", "[otlp_http]") {
  otlpconc_test::warning_capture warnings;
  const std::string warning = R"(200|body={"partialSuccess":{"errorMessage":"attribute values truncated"}})";
  loopback_server server({warning, warning});
  otlp_http_exporter exporter(fast_options(server));
  test_batch batch(4);
  for (int i = 0; i < 2; ++i) {
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::success);
    CHECK(r.rejected_spans == 0);
  }
  const auto w = exporter.stats();
  CHECK(w.partial_success_warnings == 2);
  CHECK(w.last_warning == "attribute values truncated");
  const auto got = warnings.messages();
  REQUIRE(got.size() == 1); // reported when its text changes, counted every time
  CHECK(has(got[0], "attribute values truncated"));
}

TEST_CASE("otlp_http_exporter counts only the bytes it sent, and names itself and its language", "[otlp_http]") {
  {
    loopback_server server({});
    otlp_http_exporter exporter(fast_options(server));
    test_batch batch(3);
    REQUIRE(exporter.export_spans(batch.view(), steady::now() + 10s).status == export_status::success);
    CHECK(exporter.stats().bytes_sent > 100);
    const auto log = server.requests();
    REQUIRE(log.size() == 1);
    CHECK(has(log[0], "\"user-agent\": \"otlpconc-OTLP-Exporter-Cpp/" + std::string(sdk_version) + "\""));
  }
  std::string url;
  {
    loopback_server gone({});
    url = gone.url();
  }
  otlp_http_exporter_options o;
  o.endpoint = url; // nothing listens: nothing is sent
  o.initial_backoff = 10ms;
  o.max_backoff = 20ms;
  o.max_attempts = 3;
  o.encode_threads = 0;
  otlp_http_exporter exporter(o);
  test_batch batch(50);
  CHECK(exporter.export_spans(batch.view(), steady::now() + 10s).status == export_status::failure);
  CHECK(exporter.stats().requests == 3);
  CHECK(exporter.stats().bytes_sent == 0);
}

// ---- issue 20: http/protobuf and http/json, each with no compression, gzip and zstd ---------------

TEST_CASE("otlp_http_exporter sends every protocol and compression, decoded by OpenTelemetry's own model",
          "[otlp_http]") {
  const std::pair<otlp_protocol, const char*> protocols[] = {{otlp_protocol::http_protobuf, "application/x-protobuf"},
                                                             {otlp_protocol::http_json, "application/json"}};
  const std::pair<otlp_compression, const char*> compressions[] = {
      {otlp_compression::none, ""}, {otlp_compression::gzip, "gzip"}, {otlp_compression::zstd, "zstd"}};
  for (const auto& [protocol, type] : protocols) {
    for (const auto& [compression, encoding] : compressions) {
      INFO(type << " " << encoding);
      loopback_server server({});
      auto o = fast_options(server);
      o.protocol = protocol;
      o.compression = compression;
      otlp_http_exporter exporter(o);
      test_batch batch(200);
      const span_limits limits;
      for (std::size_t i = 0; i < batch.spans.size(); ++i) { // text that compresses, and some that must be fixed
        span_data& s = batch.spans[i];
        const auto seq = static_cast<std::int64_t>(i);
        s.set_attribute("http.route", "/api/v1/orders/{id}", 128);
        s.set_attribute("bad", std::string("caf\xc3", 4), 128); // not UTF-8: becomes U+FFFD
        // As otlpconc-loadgen --span-shape rich: an event, a link to the previous span, an int array.
        s.set_attribute("loadgen.thread", 0, 128);
        s.set_attribute("loadgen.seq", seq, 128);
        s.set_attribute("loadgen.key", std::vector<std::int64_t>{0, seq}, 128);
        const std::vector<attribute_value> mixed{attribute_value("x"), attribute_value(seq)};
        const std::vector<attribute> map{{"mixed", mixed}, {"raw", attribute_value::bytes("\x00\xff", 2)}};
        s.set_attribute("map", map, 128); // a key-value list holding a mixed array and bytes
        const attribute event_attributes[] = {{"loadgen.seq", seq}};
        s.add_event("loadgen.event", 1500, event_attributes, limits);
        if (i != 0)
          s.add_link({s.trace_id(), batch.spans[i - 1].span_id(), 1, true, {}}, {}, limits);
      }
      const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
      INFO(r.error);
      CHECK(r.status == export_status::success);
      const auto log = server.requests();
      REQUIRE(log.size() == 1);
      CHECK_FALSE(has(log[0], "\"error\""));
      CHECK(has(log[0], "\"content-type\": \"" + std::string(type) + "\""));
      CHECK(has(log[0], "\"spans\": 200"));
      for (const auto& id : batch.ids)
        CHECK(has(log[0], "\"" + id + "\""));
      // Every span's event, link (with the remote flag) and array, as the receiver decoded them.
      for (std::size_t i = 0; i < batch.ids.size(); ++i) {
        const std::string n = std::to_string(i);
        const std::string link = i == 0 ? "[]" : "[[\"" + batch.ids[i - 1] + "\", 769]]";
        CHECK(has(log[0], "[0, " + n + ", \"" + batch.ids[i] + "\", [[\"loadgen.event\", " + n + "]], " + link +
                              ", [0, " + n + "]]"));
      }
      if (protocol == otlp_protocol::http_protobuf) // what a generated encoder writes, byte for byte
        CHECK(has(log[0], "\"canonical\": true"));
      const auto w = exporter.stats();
      CHECK(has(log[0], "\"decoded_bytes\": " + std::to_string(w.bytes_encoded)));
      CHECK(w.bytes_sent == (compression == otlp_compression::none ? w.bytes_encoded : w.bytes_compressed));
      CHECK(has(log[0], "\"bytes\": " + std::to_string(w.bytes_sent)));
      if (compression == otlp_compression::none) {
        CHECK_FALSE(has(log[0], "content-encoding"));
        CHECK(w.bytes_compressed == 0);
      } else {
        CHECK(has(log[0], "\"content-encoding\": \"" + std::string(encoding) + "\""));
        CHECK(w.bytes_compressed * 3 < w.bytes_encoded); // repetitive spans: at least 3x smaller
      }
    }
  }
}

TEST_CASE("otlp_http_exporter: protobuf bodies are at least 40% smaller than JSON", "[otlp_http]") {
  std::uint64_t bytes[2] = {};
  for (int json = 0; json < 2; ++json) {
    loopback_server server({});
    auto o = fast_options(server);
    o.protocol = json ? otlp_protocol::http_json : otlp_protocol::http_protobuf;
    otlp_http_exporter exporter(o);
    test_batch batch(100);
    for (auto& s : batch.spans) {
      s.set_attribute("http.method", "GET", 128);
      s.set_attribute("http.status_code", std::int64_t{200}, 128);
    }
    REQUIRE(exporter.export_spans(batch.view(), steady::now() + 10s).status == export_status::success);
    bytes[json] = exporter.stats().bytes_encoded;
  }
  INFO("protobuf " << bytes[0] << " bytes, json " << bytes[1]);
  CHECK(static_cast<double>(bytes[0]) <= 0.6 * static_cast<double>(bytes[1]));
}

// ---- issue 20: TLS: the receiver verified against certificate_file, and mutual TLS --------------

namespace {

// A self-signed certificate for 127.0.0.1 (server) and one for a client, made by the openssl
// command in a fresh directory.
struct tls_files {
  tls_files() {
    dir = "/tmp/otlpconc-tls-" + std::to_string(::getpid());
    const std::string make = "rm -rf " + dir + " && mkdir -p " + dir + " && cd " + dir +
                             " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
                             " -addext subjectAltName=IP:127.0.0.1 -keyout server.key -out server.pem 2>/dev/null"
                             " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=otlpconc-client"
                             " -keyout client.key -out client.pem 2>/dev/null";
    REQUIRE(std::system(make.c_str()) == 0);
  }
  ~tls_files() { (void)std::system(("rm -rf " + dir).c_str()); }
  std::string file(const char* name) const { return dir + "/" + name; }
  std::string dir;
};

} // namespace

TEST_CASE("otlp_http_exporter verifies an https receiver against certificate_file, never skips it", "[otlp_http]") {
  const tls_files tls;
  loopback_server server({}, {"--tls-cert=" + tls.file("server.pem"), "--tls-key=" + tls.file("server.key")});
  REQUIRE(server.url().rfind("https://", 0) == 0);
  test_batch batch(5);
  {
    otlp_http_exporter exporter(fast_options(server)); // the system's store: it does not know this certificate
    const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
    CHECK(r.status == export_status::failure);
    CHECK((has(r.error, "certificate") || has(r.error, "SSL")));
    CHECK(exporter.stats().requests == 1); // a verification failure is not retried
  }
  CHECK(server.requests().empty());
  auto o = fast_options(server);
  o.certificate_file = tls.file("server.pem");
  otlp_http_exporter exporter(o);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  INFO(r.error);
  CHECK(r.status == export_status::success);
  REQUIRE(server.requests().size() == 1);
  CHECK(has(server.requests()[0], "\"spans\": 5"));
}

TEST_CASE("otlp_http_exporter presents its client certificate to a receiver that requires one (mutual TLS)",
          "[otlp_http]") {
  const tls_files tls;
  loopback_server server({}, {"--tls-cert=" + tls.file("server.pem"), "--tls-key=" + tls.file("server.key"),
                              "--tls-client-ca=" + tls.file("client.pem")});
  test_batch batch(3);
  auto o = fast_options(server);
  o.certificate_file = tls.file("server.pem");
  {
    otlp_http_exporter exporter(o); // no client certificate: the handshake fails
    CHECK(exporter.export_spans(batch.view(), steady::now() + 10s).status == export_status::failure);
  }
  CHECK(server.requests().empty());
  o.client_certificate_file = tls.file("client.pem");
  o.client_key_file = tls.file("client.key");
  otlp_http_exporter exporter(o);
  const export_result r = exporter.export_spans(batch.view(), steady::now() + 10s);
  INFO(r.error);
  CHECK(r.status == export_status::success);
  CHECK(server.requests().size() == 1);
}

TEST_CASE("TLS options: unreadable files and a lone client key are refused, in code and from the environment",
          "[otlp_http]") {
  const tls_files tls;
  auto bad = [](auto change, const char* what) {
    otlp_http_exporter_options o;
    change(o);
    CHECK_THROWS_WITH(otlp_http_exporter(o), Catch::Contains(what));
  };
  bad([](auto& o) { o.certificate_file = "/nonexistent/ca.pem"; }, "certificate_file: cannot read");
  bad([&](auto& o) { o.client_key_file = tls.file("client.key"); }, "go together");
  const char* vars[] = {"OTEL_EXPORTER_OTLP_CERTIFICATE",        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                        "OTEL_EXPORTER_OTLP_CLIENT_KEY",         "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"};
  for (const char* v : vars)
    ::unsetenv(v);
  otlpconc_test::warning_capture warnings;
  ::setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", tls.file("server.pem").c_str(), 1);
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", tls.file("client.pem").c_str(), 1);
  ::setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", tls.file("client.key").c_str(), 1);
  {
    const auto o = otlp_http_exporter_options::from_env();
    CHECK(o.certificate_file == tls.file("server.pem"));
    CHECK(o.client_certificate_file == tls.file("client.pem"));
    CHECK(o.client_key_file == tls.file("client.key"));
    CHECK(warnings.take().empty());
  }
  ::setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/nonexistent/ca.pem", 1); // unreadable: the general one
  CHECK(otlp_http_exporter_options::from_env().certificate_file == tls.file("server.pem"));
  CHECK(warnings.any({"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "cannot be read"}));
  ::unsetenv("OTEL_EXPORTER_OTLP_CLIENT_KEY");
  {
    const auto o = otlp_http_exporter_options::from_env();
    CHECK(o.client_certificate_file.empty());
    CHECK(warnings.any({"CLIENT_CERTIFICATE", "without its pair"}));
  }
  for (const char* v : vars)
    ::unsetenv(v);
}
