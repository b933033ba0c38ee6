// otlpconc/telemetry/otlp_http_exporter.hpp: exports span batches to an OpenTelemetry Collector (or
// any OTLP/HTTP receiver) with POST /v1/traces and the OTLP JSON encoding, through libcurl.
//
// What: each export encodes the batch once (otlp_json.hpp, large batches in parallel on the
//   exporter's encoding pool) and POSTs it with Content-Type: application/json, retrying as the
//   OTLP/HTTP specification says. One connection, kept alive between exports.
// When to use: sending spans to a Collector fleet or any OTLP/HTTP receiver. Link the CMake target
//   otlpconc::otlp_http (it exists when otlpconc was configured with libcurl: OTLPCONC_WITH_CURL,
//   AUTO by default) or use pkg-config's otlpconc-otlp-http.
// When not to: OTLP/gRPC receivers (not spoken here), or when a local file is enough
//   (json_lines_file_exporter.hpp).
// Guarantees:
//   - Retries 429, 502, 503 and 504 and transient transport failures (name resolution, connection
//     refused or reset, timeouts; not a bad URL or a TLS verification failure)
//     with exponential backoff (initial_backoff, times backoff_multiplier, at most max_backoff),
//     each wait jittered by +-20%; a Retry-After header (seconds or an HTTP date) replaces the
//     computed wait. Every other status (other 4xx, 500, 501, 3xx) fails at once.
//   - The whole export, retries and waits included, ends by the earlier of the processor's
//     deadline and options.timeout; a wait that would end after it is not started: the export
//     fails at once, naming the last error.
//   - A 2xx response with partialSuccess.rejectedSpans reports those spans as rejected (the
//     processor counts them failed) with the receiver's errorMessage. An unparsable 2xx body is a
//     success (the receiver took the request).
//   - shutdown() interrupts a request in flight and a backoff wait (the export fails at once) and
//     returns once that export has returned, so the exporter can then be destroyed.
//   - export_spans never throws; exports are serialized (one connection, one buffer). The
//     constructor throws std::invalid_argument for bad options (naming the field),
//     std::runtime_error when libcurl cannot be initialized.
// Memory: one request body (the largest batch's encoding, kept for reuse) and libcurl's connection.
#pragma once

#if !defined(OTLPCONC_HAVE_CURL) || !OTLPCONC_HAVE_CURL
#error                                                                                                                 \
    "otlpconc/telemetry/otlp_http_exporter.hpp needs libcurl: link the CMake target otlpconc::otlp_http (configure otlpconc with OTLPCONC_WITH_CURL=AUTO or ON; Debian: libcurl4-openssl-dev)"
#endif

#include "otlpconc/telemetry/detail/encode_pool.hpp"
#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/detail/otlp_response.hpp"
#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

struct otlp_http_exporter_options {
  std::string endpoint = "http://localhost:4318/v1/traces"; // the full URL, path included
  std::vector<std::pair<std::string, std::string>> headers; // sent with every request
  // One export, retries and waits included; milliseconds::max(): no limit.
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{5000};
  double backoff_multiplier = 1.5;
  int max_attempts = 5; // requests per export, the first included
  // Threads of the encoding pool, as json_lines_file_exporter_options::encode_threads (-1:
  // automatic, 0: encode on the export thread).
  int encode_threads = -1;

  // Throws std::invalid_argument naming the first bad field.
  void validate() const {
    auto fail = [](const std::string& what) { throw std::invalid_argument("otlp_http_exporter_options: " + what); };
    if (endpoint.rfind("http://", 0) != 0 && endpoint.rfind("https://", 0) != 0)
      fail("endpoint must be an http:// or https:// URL, got '" + endpoint + "'");
    if (endpoint.find_first_of(" \t\r\n") != std::string::npos)
      fail("endpoint must not contain white space: '" + endpoint + "'");
    constexpr std::chrono::milliseconds day{86'400'000};
    if (timeout.count() <= 0 || (timeout > day && timeout != std::chrono::milliseconds::max()))
      fail("timeout must be positive and at most a day, or milliseconds::max() (no limit)");
    if (initial_backoff.count() <= 0 || max_backoff < initial_backoff || max_backoff > day)
      fail("initial_backoff must be positive, max_backoff at least initial_backoff and at most a day");
    if (!(backoff_multiplier >= 1.0 && backoff_multiplier <= 10.0))
      fail("backoff_multiplier must be between 1 and 10");
    if (max_attempts < 1 || max_attempts > 1000)
      fail("max_attempts must be 1 to 1000");
    for (const auto& [name, value] : headers) {
      const bool bad_name = name.empty() || name.find_first_of(" \t:\r\n") != std::string::npos;
      if (bad_name || value.find_first_of("\r\n") != std::string::npos)
        fail("bad header '" + name + "' (a name without ':' or white space, a value without line breaks)");
    }
    if (encode_threads < -1 || encode_threads > 64)
      fail("encode_threads must be -1 (automatic) or 0 to 64");
  }

  // Reads the OpenTelemetry exporter variables over `base` (the signal-specific one first), with
  // the specification's rules (detail/env.hpp): a value that cannot be used is reported to the
  // warning handler (diagnostics.hpp) and ignored, so the environment never makes this throw.
  //   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces");
  //     not http(s): ignored.
  //   OTEL_EXPORTER_OTLP_[TRACES_]HEADERS: "k=v,k2=v2", percent-decoded, added to base's headers; a
  //     malformed member is ignored, the others are kept.
  //   OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT: milliseconds, 0 = no limit.
  //   OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL: http/json is what is sent; http/protobuf and grpc (not
  //     implemented) and unknown values are ignored with a warning.
  //   OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION: none; gzip is not implemented yet: a warning says so
  //     and requests go uncompressed (a Collector accepts both); unknown values are ignored.
  // base itself is validated (std::invalid_argument).
  static otlp_http_exporter_options from_env(otlp_http_exporter_options base) {
    using detail::env_pick;
    using detail::env_text;
    // An unusable traces endpoint is as if unset: the general one applies.
    const auto traces = env_text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if (!traces || !set_endpoint(base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", *traces)) {
      if (auto g = env_text("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        std::string e = *g;
        while (!e.empty() && e.back() == '/')
          e.pop_back();
        set_endpoint(base, "OTEL_EXPORTER_OTLP_ENDPOINT", e + "/v1/traces", *g);
      }
    }
    const char* protocol = env_pick("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
    if (auto p = detail::env_enum(protocol, {"http/json", "http/protobuf", "grpc"}); p && *p != "http/json")
      detail::env_ignored(protocol, *env_text(protocol),
                          "is not implemented by otlp_http_exporter (it sends http/json)");
    const char* compression = env_pick("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION");
    if (auto c = detail::env_enum(compression, {"none", "gzip"}); c && *c == "gzip")
      warn(std::string(compression) + "=" + *env_text(compression) +
           ": gzip compression is not implemented yet, requests are sent uncompressed (a Collector accepts both)");
    const char* timeout_var = env_pick("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT");
    if (auto ms = detail::env_millis(timeout_var, 1, 86'400'000, true))
      base.timeout = *ms;
    const char* headers_var = env_pick("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS");
    if (auto v = env_text(headers_var))
      parse_headers(headers_var, *v, base.headers);
    base.validate();
    return base;
  }
  static otlp_http_exporter_options from_env() { return from_env(otlp_http_exporter_options()); }

 private:
  // false (with a warning showing `given`) when url is not an http(s) URL.
  static bool set_endpoint(otlp_http_exporter_options& o, const char* var, const std::string& url,
                           std::string_view given = {}) {
    if ((url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) || url.find_first_of(" \t\r\n") != url.npos) {
      detail::env_ignored(var, given.empty() ? std::string_view(url) : given, "is not an http:// or https:// URL");
      return false;
    }
    o.endpoint = url;
    return true;
  }

  static void parse_headers(const char* var, std::string_view text,
                            std::vector<std::pair<std::string, std::string>>& out) {
    using detail::trim_ows;
    auto decode = [&](std::string_view s) -> std::optional<std::string> {
      std::string r;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
          r.push_back(s[i]);
          continue;
        }
        const int hi = i + 2 < s.size() ? detail::hex_value(s[i + 1]) : -1;
        const int lo = i + 2 < s.size() ? detail::hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0)
          return std::nullopt;
        r.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
      }
      return r;
    };
    while (!text.empty()) {
      const std::size_t comma = text.find(',');
      const std::string_view item = trim_ows(text.substr(0, comma));
      text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
      if (item.empty())
        continue;
      const std::size_t eq = item.find('=');
      std::optional<std::string> name, value;
      if (eq != std::string_view::npos) {
        name = decode(trim_ows(item.substr(0, eq)));
        value = decode(trim_ows(item.substr(eq + 1)));
      }
      const bool bad_name = !name || name->empty() || name->find_first_of(" \t:\r\n") != std::string::npos;
      if (bad_name || !value || value->find_first_of("\r\n") != std::string::npos) {
        warn(std::string(var) + ": the member '" + std::string(item) +
             "' is not key=value with a valid header name, value and percent escapes: ignored");
        continue;
      }
      out.emplace_back(std::move(*name), std::move(*value));
    }
  }
};

class otlp_http_exporter final : public span_exporter {
 public:
  explicit otlp_http_exporter(otlp_http_exporter_options options = {}) : options_(std::move(options)) {
    options_.validate();
    pool_ = detail::make_encode_pool(options_.encode_threads, "otlp_http_exporter_options");
    encoder_ = otlp_json_encoder(pool_.get());
    static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (global != CURLE_OK)
      throw std::runtime_error(std::string("otlp_http_exporter: curl_global_init failed: ") +
                               curl_easy_strerror(global));
    easy_.reset(curl_easy_init());
    multi_.reset(curl_multi_init());
    if (!easy_ || !multi_)
      throw std::runtime_error("otlp_http_exporter: libcurl could not create a handle");
    append_header("Content-Type: application/json");
    append_header("Expect:"); // no "Expect: 100-continue" round trip before a large body
    for (const auto& [name, value] : options_.headers)
      append_header(name + ": " + value);
  }
  ~otlp_http_exporter() override = default;
  otlp_http_exporter(const otlp_http_exporter&) = delete;
  otlp_http_exporter& operator=(const otlp_http_exporter&) = delete;

  const otlp_http_exporter_options& options() const noexcept { return options_; }

  // What happened on the wire (for tests, dashboards and the load generator).
  struct wire_stats {
    std::uint64_t requests = 0;         // POSTs sent, retries included
    std::uint64_t retries = 0;          // requests after a retryable failure
    std::uint64_t transport_errors = 0; // requests that got no HTTP response
    std::uint64_t bytes_sent = 0;       // request bodies
    long last_status = 0;               // the last HTTP status (0: none yet, or a transport error)
  };
  wire_stats stats() const {
    std::lock_guard lock(state_mutex_);
    return wire_;
  }

  export_result export_spans(const span_batch_view& batch, clock::time_point deadline) override {
    {
      std::lock_guard state(state_mutex_);
      ++exports_in_flight_; // waiting for export_mutex_ included: shutdown_and_wait waits for it too
    }
    export_result result;
    {
      std::lock_guard lock(export_mutex_);
      try {
        result = export_unguarded(batch, deadline);
      } catch (const std::bad_alloc&) {
        result = export_result::failure("otlp_http_exporter: out of memory");
      } catch (const std::exception& e) {
        result = export_result::failure(std::string("otlp_http_exporter: ") + e.what());
      }
    }
    {
      // The last touch of the exporter: notified under the lock, so a shutdown_and_wait that sees
      // the count reach 0 may destroy the exporter right away.
      std::lock_guard state(state_mutex_);
      --exports_in_flight_;
      idle_.notify_all();
    }
    return result;
  }

  // Interrupts the request or wait in progress, fails every later export at once, and returns when
  // the interrupted export has returned (or at the deadline, a day at most): after it returns true
  // the exporter may be destroyed. false: an export was still running at the deadline.
  bool shutdown_and_wait(clock::time_point deadline) {
    {
      std::lock_guard lock(state_mutex_);
      shut_down_ = true;
    }
    wake_.notify_all();
    curl_multi_wakeup(multi_.get()); // thread-safe; sticky until the poll in perform() consumes it
    const auto cap = clock::now() + std::chrono::hours(24);
    std::unique_lock lock(state_mutex_);
    return idle_.wait_until(lock, std::min(deadline, cap), [&] { return exports_in_flight_ == 0; });
  }
  void shutdown(clock::time_point deadline) override { (void)shutdown_and_wait(deadline); }

 private:
  struct easy_deleter {
    void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
  };
  struct multi_deleter {
    void operator()(CURLM* h) const noexcept { curl_multi_cleanup(h); }
  };
  struct slist_deleter {
    void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
  };

  struct response {
    long status = 0; // 0: no HTTP response (transport_error says why)
    CURLcode curl_code = CURLE_OK;
    std::string transport_error;
    std::string body;
    std::optional<std::chrono::milliseconds> retry_after;
    bool interrupted = false;
  };

  void append_header(const std::string& line) {
    curl_slist* grown = curl_slist_append(headers_.get(), line.c_str());
    if (grown == nullptr)
      throw std::bad_alloc();
    (void)headers_.release();
    headers_.reset(grown);
  }

  export_result export_unguarded(const span_batch_view& batch, clock::time_point deadline) {
    const auto start = clock::now();
    // (no overflow: a limited timeout is at most a day)
    if (options_.timeout != std::chrono::milliseconds::max() && deadline - start > options_.timeout)
      deadline = start + options_.timeout;
    body_.clear();
    encoder_.encode(batch, body_);
    auto backoff = options_.initial_backoff;
    std::string error;
    for (int attempt = 1;; ++attempt) {
      if (is_shut_down())
        return export_result::failure("otlp_http_exporter: shut down");
      const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
      if (remaining.count() <= 0)
        return export_result::failure(error.empty() ? "otlp_http_exporter: the export deadline passed"
                                                    : error + " (then the export deadline passed)");
      if (attempt > 1) {
        std::lock_guard state(state_mutex_);
        ++wire_.retries;
      }
      const response r = perform(remaining);
      if (r.interrupted)
        return export_result::failure("otlp_http_exporter: shut down during a request");
      if (r.status >= 200 && r.status < 300)
        return accepted(r.body);
      const bool retryable = r.status == 0 ? transient(r.curl_code)
                                           : r.status == 429 || r.status == 502 || r.status == 503 || r.status == 504;
      error = r.status == 0 ? "otlp_http_exporter: " + r.transport_error + " (" + options_.endpoint + ")"
                            : "otlp_http_exporter: HTTP " + std::to_string(r.status) + " from " + options_.endpoint +
                                  excerpt(r.body);
      if (!retryable)
        return export_result::failure(error);
      if (attempt >= options_.max_attempts)
        return export_result::failure(error + " (" + std::to_string(attempt) + " attempts)");
      const auto wait = r.retry_after ? *r.retry_after : jittered(backoff);
      if (wait >= deadline - clock::now()) // (a difference: a huge wait cannot overflow a time point)
        return export_result::failure(error + " (the next attempt would start after the export deadline)");
      if (!sleep_unless_shut_down(wait))
        return export_result::failure("otlp_http_exporter: shut down while waiting to retry");
      backoff = std::min(options_.max_backoff,
                         std::chrono::duration_cast<std::chrono::milliseconds>(backoff * options_.backoff_multiplier));
    }
  }

  // Transport failures worth retrying: the receiver unreachable or the exchange cut. A bad URL, an
  // unsupported protocol or a TLS verification failure will not get better: the export fails.
  static bool transient(CURLcode code) noexcept {
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
    }
  }

  // A 2xx: the request was taken; a partial success names the spans the receiver rejected.
  static export_result accepted(const std::string& body) {
    export_result result;
    const auto partial = detail::otlp_json_reader(body).partial_success();
    if (!partial || partial->rejected == 0)
      return result;
    result.rejected_spans = partial->rejected;
    result.error = "otlp_http_exporter: the receiver rejected " + std::to_string(partial->rejected) + " spans" +
                   (partial->message.empty() ? std::string() : ": " + partial->message);
    return result;
  }

  // The start of an error response's body, printable ASCII only, for the error message.
  static std::string excerpt(const std::string& body) {
    std::string out;
    for (char c : body) {
      if (out.size() >= 200) {
        out += "...";
        break;
      }
      out.push_back(c >= 0x20 && c < 0x7f ? c : ' ');
    }
    return out.empty() ? out : ": " + out;
  }

  response perform(std::chrono::milliseconds timeout) {
    response r;
    CURL* h = easy_.get();
    curl_easy_reset(h); // keeps the connection (it lives in the multi handle's cache)
    curl_easy_setopt(h, CURLOPT_URL, options_.endpoint.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers_.get());
    curl_easy_setopt(h, CURLOPT_USERAGENT, "otlpconc-otlp-http/0.1");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &otlp_http_exporter::on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &otlp_http_exporter::on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    {
      std::lock_guard state(state_mutex_);
      ++wire_.requests;
      wire_.bytes_sent += body_.size();
    }
    if (const CURLMcode mc = curl_multi_add_handle(multi_.get(), h); mc != CURLM_OK) {
      r.transport_error = curl_multi_strerror(mc);
      return r;
    }
    CURLcode result = CURLE_OK;
    for (;;) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi_.get(), &running);
      if (mc == CURLM_OK && running == 0) {
        int left = 0;
        while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &left))
          if (msg->msg == CURLMSG_DONE)
            result = msg->data.result;
        break;
      }
      if (mc == CURLM_OK && is_shut_down()) {
        r.interrupted = true;
        break;
      }
      // Sleeps until a socket is ready, libcurl's own timer (the request timeout among them) is due,
      // or shutdown() wakes it (the wakeup is sticky: one sent after the check above is not lost).
      if (mc == CURLM_OK)
        mc = curl_multi_poll(multi_.get(), nullptr, 0, 10000, nullptr);
      if (mc != CURLM_OK) {
        result = CURLE_RECV_ERROR;
        r.transport_error = curl_multi_strerror(mc);
        break;
      }
    }
    curl_multi_remove_handle(multi_.get(), h);
    r.curl_code = result;
    if (!r.interrupted && result == CURLE_OK)
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
    else if (r.transport_error.empty())
      r.transport_error = curl_easy_strerror(result);
    {
      std::lock_guard state(state_mutex_);
      wire_.last_status = r.status;
      if (r.status == 0 && !r.interrupted)
        ++wire_.transport_errors;
    }
    return r;
  }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<response*>(user);
    const std::size_t bytes = size * n;
    constexpr std::size_t limit = std::size_t{1} << 20; // an OTLP response is small: the rest is ignored
    try {
      if (r->body.size() < limit)
        r->body.append(data, std::min(bytes, limit - r->body.size()));
    } catch (...) {
      return 0; // out of memory: libcurl fails the transfer
    }
    return bytes;
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<response*>(user);
    const std::size_t bytes = size * n;
    const std::string_view line(data, bytes);
    constexpr std::string_view name = "retry-after:";
    if (line.size() > name.size()) {
      bool match = true;
      for (std::size_t i = 0; i < name.size() && match; ++i) {
        const char c = line[i];
        match = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == name[i];
      }
      if (match)
        if (const auto s = detail::parse_retry_after(line.substr(name.size()), std::time(nullptr)))
          r->retry_after = std::chrono::duration_cast<std::chrono::milliseconds>(*s);
    }
    if (line.rfind("HTTP/", 0) == 0) // a new response (after 100 Continue): forget the last one's
      r->retry_after.reset();
    return bytes;
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::uniform_real_distribution<double> factor(0.8, 1.2);
    return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(base.count()) * factor(rng_)));
  }

  bool is_shut_down() const {
    std::lock_guard lock(state_mutex_);
    return shut_down_;
  }
  // false: shut down before the wait ended.
  bool sleep_unless_shut_down(std::chrono::milliseconds wait) {
    std::unique_lock lock(state_mutex_);
    return !wake_.wait_for(lock, wait, [&] { return shut_down_; });
  }

  otlp_http_exporter_options options_;
  std::unique_ptr<work_stealing_pool> pool_;
  otlp_json_encoder encoder_;
  std::unique_ptr<CURL, easy_deleter> easy_;
  std::unique_ptr<CURLM, multi_deleter> multi_;
  std::unique_ptr<curl_slist, slist_deleter> headers_;
  std::string body_;
  std::minstd_rand rng_{std::random_device{}()};
  std::mutex export_mutex_; // serializes exports
  mutable std::mutex state_mutex_;
  std::condition_variable wake_; // shutdown -> a retry wait
  std::condition_variable idle_; // the last export in flight -> shutdown_and_wait
  std::size_t exports_in_flight_ = 0;
  bool shut_down_ = false;
  wire_stats wire_;
};

} // namespace otlpconc::telemetry
