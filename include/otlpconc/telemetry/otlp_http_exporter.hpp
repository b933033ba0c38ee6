// otlpconc/telemetry/otlp_http_exporter.hpp: exports span batches to an OpenTelemetry Collector (or
// any OTLP/HTTP receiver) with POST /v1/traces, in OTLP protobuf (http/protobuf, the specification's
// default) or OTLP JSON (http/json), optionally gzip- or zstd-compressed, through libcurl, with up to
// max_concurrent_requests exports in flight.
//
// What: each export encodes the batch once on the calling thread (otlp_protobuf.hpp, or
//   otlp_json.hpp with large batches in parallel on the exporter's encoding pool), compresses it
//   when asked (Content-Encoding: gzip or zstd), hands the body to the exporter's I/O thread and
//   returns (export_spans_async); the I/O thread drives every request on one libcurl multi handle
//   (connections kept alive and reused), retries as the OTLP/HTTP specification says and reports
//   each export's outcome when it is known. At most max_concurrent_requests exports are in flight
//   (requests, retry waits included); a further export waits for one of them to finish.
// When to use: sending spans to a Collector fleet or any OTLP/HTTP receiver. Link the CMake target
//   otlpconc::otlp_http (it exists when otlpconc was configured with libcurl: OTLPCONC_WITH_CURL,
//   AUTO by default) or use pkg-config's otlpconc-otlp-http. gzip needs zlib (OTLPCONC_WITH_ZLIB),
//   zstd needs libzstd (OTLPCONC_WITH_ZSTD), both AUTO by default and carried by that target.
// When not to: OTLP/gRPC receivers (not spoken here), or when a local file is enough
//   (json_lines_file_exporter.hpp).
// Guarantees:
//   - Retries 429, 502, 503 and 504 and transient transport failures (name resolution, connection
//     refused or reset, timeouts; not a bad URL or a TLS verification failure) with exponential
//     backoff (initial_backoff, times backoff_multiplier, at most max_backoff), each wait jittered
//     by +-20%; a Retry-After header (seconds or an HTTP date) replaces the computed wait. Follows
//     the redirects 301, 302, 307 and 308 (the POST and its body are sent again, at most 5 per
//     export) to the same host only, never from https to http; every other status (other 4xx, 500,
//     501, 303, a redirect elsewhere) fails at once, its error naming the receiver's message (a
//     protobuf google.rpc.Status is decoded, any other body quoted).
//   - Each export, retries, redirects and waits included, ends by the earlier of the processor's
//     deadline and options.timeout (either may be unlimited); a wait that would end after it is not
//     started: the export fails at once, naming the last error.
//   - A 2xx response with partialSuccess.rejectedSpans (read as protobuf or JSON, by the response's
//     Content-Type, else by the protocol sent) reports those spans as rejected (the processor
//     counts them failed) with the receiver's errorMessage; a partialSuccess with no rejected span
//     and a message is the receiver's warning: counted in stats() and reported to the warning
//     handler (diagnostics.hpp) each time its text changes. An unparsable 2xx body is a success
//     (the receiver took the request).
//   - force_flush(deadline) returns true once every export started before it has reported its
//     outcome. shutdown() interrupts the requests in flight and the retry waits (those exports
//     fail at once), fails every later export without sending, and returns once every export has
//     reported, so the exporter can then be destroyed.
//   - export_spans / export_spans_async never throw (out of memory is a failed export) and may be
//     called from several threads. The constructor throws std::invalid_argument for bad options
//     (naming the field; a compression whose library otlpconc was built without is one),
//     std::runtime_error when libcurl or the I/O thread cannot be started.
// TLS: an https endpoint is verified against certificate_file or the system's store (never
//   unverified); client_certificate_file and client_key_file add mutual TLS. A verification
//   failure is not retried.
// Memory: one encoded body per export in flight (about 110 bytes per span in protobuf, 330 in JSON,
//   before compression), libcurl's connections (one per concurrent request to the receiver, kept
//   alive), and the codec's state (zlib about 270 KiB, zstd about 1.3 MiB at level 3).
#pragma once

#if !defined(OTLPCONC_HAVE_CURL) || !OTLPCONC_HAVE_CURL
#error                                                                                                                 \
    "otlpconc/telemetry/otlp_http_exporter.hpp needs libcurl: link the CMake target otlpconc::otlp_http (configure otlpconc with OTLPCONC_WITH_CURL=AUTO or ON; Debian: libcurl4-openssl-dev)"
#endif

#include "otlpconc/telemetry/detail/compression.hpp"
#include "otlpconc/telemetry/detail/encode_pool.hpp"
#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/detail/otlp_response.hpp"
#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/telemetry/otlp_protobuf.hpp"
#include "otlpconc/telemetry/version.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

// The body's encoding: OTLP protobuf (Content-Type application/x-protobuf, the specification's
// default) or OTLP JSON (application/json).
enum class otlp_protocol { http_protobuf, http_json };
// Content-Encoding of the request body. gzip needs zlib, zstd libzstd (detail/compression.hpp).
enum class otlp_compression { none, gzip, zstd };

struct otlp_http_exporter_options {
  std::string endpoint = "http://localhost:4318/v1/traces"; // the full URL, path included
  otlp_protocol protocol = otlp_protocol::http_protobuf;
  otlp_compression compression = otlp_compression::none;
  // 0: the codec's default (gzip 6, zstd 3); else gzip 1 to 9, zstd 1 to 19.
  int compression_level = 0;
  // TLS (https endpoints), PEM files: the certificates that verify the receiver (empty: the
  // system's store), and a client certificate with its key for mutual TLS (both or neither).
  std::string certificate_file;
  std::string client_certificate_file;
  std::string client_key_file;
  std::vector<std::pair<std::string, std::string>> headers; // sent with every request
  // One export, retries and waits included; milliseconds::max(): no limit.
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{5000};
  double backoff_multiplier = 1.5;
  int max_attempts = 5; // requests per export, the first included (redirects not counted)
  // Exports in flight at once (each a request or a retry wait; libcurl opens up to this many
  // connections to the receiver). 1: one request at a time.
  int max_concurrent_requests = 16;
  // Threads of the encoding pool, as json_lines_file_exporter_options::encode_threads (-1:
  // automatic, 0: encode on the calling thread).
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
    if (max_concurrent_requests < 1 || max_concurrent_requests > 1024)
      fail("max_concurrent_requests must be 1 to 1024");
    for (const auto& [name, value] : headers) {
      const bool bad_name = name.empty() || name.find_first_of(" \t:\r\n") != std::string::npos;
      if (bad_name || value.find_first_of("\r\n") != std::string::npos)
        fail("bad header '" + name + "' (a name without ':' or white space, a value without line breaks)");
    }
    if (encode_threads < -1 || encode_threads > 64)
      fail("encode_threads must be -1 (automatic) or 0 to 64");
    if (protocol != otlp_protocol::http_protobuf && protocol != otlp_protocol::http_json)
      fail("protocol must be http_protobuf or http_json");
    if (compression != otlp_compression::none && compression != otlp_compression::gzip &&
        compression != otlp_compression::zstd)
      fail("compression must be none, gzip or zstd");
    if (compression != otlp_compression::none && !detail::codec_available(codec_of(compression)))
      fail(std::string("compression: ") + detail::codec_missing_hint(codec_of(compression)));
    auto readable = [&](const std::string& path, const char* field) {
      if (!path.empty() && ::access(path.c_str(), R_OK) != 0)
        fail(std::string(field) + ": cannot read '" + path + "'");
    };
    readable(certificate_file, "certificate_file");
    readable(client_certificate_file, "client_certificate_file");
    readable(client_key_file, "client_key_file");
    if (client_certificate_file.empty() != client_key_file.empty())
      fail("client_certificate_file and client_key_file go together (mutual TLS needs both)");
    const int max_level = compression == otlp_compression::zstd ? 19 : 9;
    if (compression_level < 0 || compression_level > max_level)
      fail("compression_level must be 0 (the codec's default) or 1 to " + std::to_string(max_level) +
           (compression == otlp_compression::zstd ? " for zstd" : " for gzip"));
  }

  // The codec of a compression other than none.
  static constexpr detail::body_codec codec_of(otlp_compression c) noexcept {
    return c == otlp_compression::zstd ? detail::body_codec::zstd : detail::body_codec::gzip;
  }

  // Reads the OpenTelemetry exporter variables over `base` (the signal-specific one first), with
  // the specification's rules (detail/env.hpp): a value that cannot be used is reported to the
  // warning handler (diagnostics.hpp) and ignored, so the environment never makes this throw.
  //   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces");
  //     not http(s): ignored.
  //   OTEL_EXPORTER_OTLP_[TRACES_]HEADERS: "k=v,k2=v2", percent-decoded, added to base's headers; a
  //     malformed member is ignored, the others are kept.
  //   OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT: milliseconds, 0 = no limit.
  //   OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL: http/protobuf or http/json; grpc (not spoken here) and
  //     unknown values are ignored with a warning (an ignored traces variable lets the general one
  //     apply, as for the endpoint and compression).
  //   OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION: none, gzip or zstd (the specification names gzip; a
  //     Collector's OTLP/HTTP receiver also takes zstd); one whose library otlpconc was built without
  //     is ignored with a warning (requests go uncompressed; a Collector accepts both).
  //   OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY: PEM files (see
  //     certificate_file...); one that cannot be read is ignored with a warning, and a client
  //     certificate without its key (or the reverse) is ignored with a warning.
  //   OTEL_CPP_EXPORTER_OTLP_[TRACES_]MAX_CONCURRENT_REQUESTS: 1 to 1024 (not an OpenTelemetry
  //     variable: named after the specification's OTEL_{LANGUAGE}_{FEATURE} rule and
  //     opentelemetry-cpp's option of the same meaning).
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
    // Protocol and compression: the traces variable, else (unset or unusable) the general one.
    for (const char* protocol : {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"}) {
      const auto p = detail::env_enum(protocol, {"http/json", "http/protobuf", "grpc"});
      if (p && *p == "grpc") {
        detail::env_ignored(protocol, *env_text(protocol),
                            "is not spoken by otlp_http_exporter (http/protobuf and http/json are)");
      } else if (p) {
        base.protocol = *p == "http/json" ? otlp_protocol::http_json : otlp_protocol::http_protobuf;
        break;
      }
    }
    for (const char* compression : {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"}) {
      const auto c = detail::env_enum(compression, {"none", "gzip", "zstd"});
      if (!c)
        continue;
      const otlp_compression wanted = *c == "gzip"   ? otlp_compression::gzip
                                      : *c == "zstd" ? otlp_compression::zstd
                                                     : otlp_compression::none;
      if (wanted != otlp_compression::none && !detail::codec_available(codec_of(wanted))) {
        detail::env_ignored(compression, *env_text(compression),
                            std::string(detail::codec_missing_hint(codec_of(wanted))) +
                                "; requests are sent uncompressed (a Collector accepts both)");
        continue;
      }
      base.compression = wanted;
      base.compression_level = 0; // the codec's own default
      break;
    }
    auto file = [](const char* specific, const char* general) -> std::optional<std::string> {
      for (const char* var : {specific, general}) {
        const auto path = env_text(var);
        if (!path)
          continue;
        if (::access(path->c_str(), R_OK) == 0)
          return path;
        detail::env_ignored(var, *path, "cannot be read");
      }
      return std::nullopt;
    };
    if (auto ca = file("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"))
      base.certificate_file = *ca;
    auto client_cert = file("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE");
    auto client_key = file("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY");
    if (client_cert.has_value() != client_key.has_value()) {
      warn(std::string("OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_") + (client_cert ? "CERTIFICATE" : "KEY") +
           " is set without its pair (" + (client_cert ? "CLIENT_KEY" : "CLIENT_CERTIFICATE") +
           "): mutual TLS needs both, both ignored");
    } else if (client_cert) {
      base.client_certificate_file = *client_cert;
      base.client_key_file = *client_key;
    }
    const char* timeout_var = env_pick("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT");
    if (auto ms = detail::env_millis(timeout_var, 1, 86'400'000, true))
      base.timeout = *ms;
    const char* concurrency_var = env_pick("OTEL_CPP_EXPORTER_OTLP_TRACES_MAX_CONCURRENT_REQUESTS",
                                           "OTEL_CPP_EXPORTER_OTLP_MAX_CONCURRENT_REQUESTS");
    if (auto n = detail::env_uint(concurrency_var, 1, 1024))
      base.max_concurrent_requests = static_cast<int>(*n);
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
    auto decode = [](std::string_view s) { return detail::percent_decode(s); };
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
  // "<product>/<version>": the exporter, its language and its version, as the OTLP exporter
  // specification asks (its example: OTel-OTLP-Exporter-Python/1.2.3); not OpenTelemetry's own name.
  static std::string user_agent() { return "otlpconc-OTLP-Exporter-Cpp/" + std::string(sdk_version); }

  explicit otlp_http_exporter(otlp_http_exporter_options options = {}) : options_(std::move(options)) {
    options_.validate();
    if (options_.protocol == otlp_protocol::http_json) {
      pool_ = detail::make_encode_pool(options_.encode_threads, "otlp_http_exporter_options");
      json_encoder_ = otlp_json_encoder(pool_.get());
    }
    if (options_.compression != otlp_compression::none) {
      const bool zstd = options_.compression == otlp_compression::zstd;
      const int level = options_.compression_level != 0 ? options_.compression_level : zstd ? 3 : 6;
      compressor_.emplace(otlp_http_exporter_options::codec_of(options_.compression), level);
    }
    static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (global != CURLE_OK)
      throw std::runtime_error(std::string("otlp_http_exporter: curl_global_init failed: ") +
                               curl_easy_strerror(global));
    multi_.reset(curl_multi_init());
    if (!multi_)
      throw std::runtime_error("otlp_http_exporter: libcurl could not create a handle");
    const long connections = options_.max_concurrent_requests;
    curl_multi_setopt(multi_.get(), CURLMOPT_MAX_HOST_CONNECTIONS, connections);
    curl_multi_setopt(multi_.get(), CURLMOPT_MAXCONNECTS, connections);
    append_header(options_.protocol == otlp_protocol::http_json ? "Content-Type: application/json"
                                                                : "Content-Type: application/x-protobuf");
    if (options_.compression != otlp_compression::none)
      append_header(options_.compression == otlp_compression::gzip ? "Content-Encoding: gzip"
                                                                   : "Content-Encoding: zstd");
    append_header("Expect:"); // no "Expect: 100-continue" round trip before a large body
    for (const auto& [name, value] : options_.headers)
      append_header(name + ": " + value);
    origin_ = origin_of(options_.endpoint);
    std::vector<std::unique_ptr<request>> active;
    active.reserve(2 * static_cast<std::size_t>(options_.max_concurrent_requests) + 1);
    io_ = std::thread([this, a = std::move(active)]() mutable { run(std::move(a)); });
  }
  ~otlp_http_exporter() override {
    (void)shutdown_and_wait(clock::time_point::max());
    io_.join();
    for (CURL* h : idle_easy_)
      curl_easy_cleanup(h);
  }
  otlp_http_exporter(const otlp_http_exporter&) = delete;
  otlp_http_exporter& operator=(const otlp_http_exporter&) = delete;

  const otlp_http_exporter_options& options() const noexcept { return options_; }

  // What happened on the wire (for tests, dashboards and the load generator).
  struct wire_stats {
    std::uint64_t requests = 0;                 // POSTs started, retries and redirects included
    std::uint64_t retries = 0;                  // requests after a retryable failure
    std::uint64_t redirects = 0;                // redirects followed
    std::uint64_t transport_errors = 0;         // requests that got no HTTP response
    std::uint64_t bytes_sent = 0;               // request body bytes libcurl reports as uploaded
    std::uint64_t bytes_encoded = 0;            // encoded bodies before compression, once per export
    std::uint64_t bytes_compressed = 0;         // the same bodies after compression (0: none)
    std::uint64_t partial_success_warnings = 0; // 2xx with a partialSuccess message and no rejection
    std::string last_warning;                   // the last such message
    long last_status = 0;                       // the last HTTP status (0: none yet, or a transport error)
    std::size_t in_flight = 0;                  // exports in flight now
    std::size_t max_in_flight = 0;              // the most exports in flight at once so far
  };
  wire_stats stats() const {
    std::lock_guard lock(mutex_);
    return wire_;
  }

  void export_spans_async(const span_batch_view& batch, clock::time_point deadline, export_callback done) override {
    std::unique_ptr<request> req;
    try {
      req = std::make_unique<request>();
      std::size_t encoded = 0;
      {
        std::lock_guard encoding(encode_mutex_); // one encoder and compressor, whoever calls
        if (compressor_) {
          scratch_.clear();
          encode(batch, scratch_);
          encoded = scratch_.size();
          compressor_->compress(scratch_, req->body);
          if (scratch_.capacity() > scratch_keep)
            std::string().swap(scratch_); // one huge batch does not pin its buffer
        } else {
          encode(batch, req->body);
          encoded = req->body.size();
        }
      }
      {
        std::lock_guard lock(mutex_);
        wire_.bytes_encoded += encoded;
        if (compressor_)
          wire_.bytes_compressed += req->body.size();
      }
      req->done = std::move(done);
    } catch (const std::exception& e) {
      if (done)
        done(export_result::failure(std::string("otlp_http_exporter: encoding failed: ") + e.what()));
      else if (req && req->done)
        req->done(export_result::failure(std::string("otlp_http_exporter: encoding failed: ") + e.what()));
      return;
    }
    const auto now = clock::now();
    req->deadline = options_.timeout == std::chrono::milliseconds::max() || deadline - now <= options_.timeout
                        ? deadline
                        : now + options_.timeout; // (a difference: no overflow with a deadline of max())
    req->backoff = options_.initial_backoff;
    req->url = options_.endpoint;
    std::unique_lock lock(mutex_);
    const bool room = room_.wait_until(lock, req->deadline, [&] {
      return shut_down_ || wire_.in_flight < static_cast<std::size_t>(options_.max_concurrent_requests);
    });
    if (shut_down_ || !room) {
      lock.unlock();
      req->done(export_result::failure(shut_down_ ? "otlp_http_exporter: shut down"
                                                  : "otlp_http_exporter: the export deadline passed while " +
                                                        std::to_string(options_.max_concurrent_requests) +
                                                        " exports were in flight"));
      return;
    }
    req->seq = ++submitted_;
    in_flight_seqs_.insert(req->seq);
    wire_.in_flight = in_flight_seqs_.size();
    wire_.max_in_flight = std::max(wire_.max_in_flight, wire_.in_flight);
    try {
      incoming_.push_back(std::move(req));
    } catch (...) {
      in_flight_seqs_.erase(submitted_);
      wire_.in_flight = in_flight_seqs_.size();
      lock.unlock();
      room_.notify_one();
      req->done(export_result::failure("otlp_http_exporter: out of memory"));
      return;
    }
    lock.unlock();
    curl_multi_wakeup(multi_.get()); // thread-safe; sticky until the I/O thread's poll consumes it
  }

  export_result export_spans(const span_batch_view& batch, clock::time_point deadline) override {
    struct waiter {
      std::mutex m;
      std::condition_variable cv;
      std::optional<export_result> result;
    };
    auto w = std::make_shared<waiter>();
    try {
      export_spans_async(batch, deadline, [w](export_result r) {
        std::lock_guard lock(w->m);
        w->result = std::move(r);
        w->cv.notify_all();
      });
    } catch (const std::exception& e) { // (the callback's copy could not be made)
      return export_result::failure(std::string("otlp_http_exporter: ") + e.what());
    }
    std::unique_lock lock(w->m);
    w->cv.wait(lock, [&] { return w->result.has_value(); }); // reported by the deadline, or at shutdown
    return std::move(*w->result);
  }

  // true once every export started before the call has reported its outcome (by the deadline).
  bool force_flush(clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    const std::uint64_t ticket = submitted_;
    return idle_.wait_until(lock, capped(deadline),
                            [&] { return in_flight_seqs_.empty() || *in_flight_seqs_.begin() > ticket; });
  }

  // Interrupts the requests in flight and the retry waits, fails every later export at once, and
  // returns when every export has reported (or at the deadline, a day at most): after it returns
  // true the exporter may be destroyed. false: an export was still in flight at the deadline.
  bool shutdown_and_wait(clock::time_point deadline) {
    {
      std::lock_guard lock(mutex_);
      shut_down_ = true;
    }
    room_.notify_all();
    curl_multi_wakeup(multi_.get());
    std::unique_lock lock(mutex_);
    return idle_.wait_until(lock, capped(deadline), [&] { return in_flight_seqs_.empty() && io_done_; });
  }
  void shutdown(clock::time_point deadline) override { (void)shutdown_and_wait(deadline); }

 private:
  struct multi_deleter {
    void operator()(CURLM* h) const noexcept { curl_multi_cleanup(h); }
  };
  struct slist_deleter {
    void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
  };

  // One export, from its submission to its outcome. I/O thread only once submitted.
  struct request {
    std::uint64_t seq = 0;
    std::string body;
    std::string url; // the endpoint, or where a redirect sent this export
    clock::time_point deadline;
    std::chrono::milliseconds backoff{0};
    int attempt = 0;
    int redirects = 0;
    std::string error; // the last attempt's error
    export_callback done;
    CURL* easy = nullptr;
    clock::time_point retry_at; // waiting to retry (easy == nullptr)
    // The current attempt's response.
    std::string response_body;
    std::optional<std::chrono::milliseconds> retry_after;
    std::string response_type; // the response's Content-Type, lower-cased
  };

  void encode(const span_batch_view& batch, std::string& out) {
    if (options_.protocol == otlp_protocol::http_json)
      json_encoder_.encode(batch, out);
    else
      protobuf_encoder_.encode(batch, out);
  }

  // Whether a response body is protobuf: by its Content-Type, else as the request was sent.
  bool protobuf_response(const request& r) const noexcept {
    if (r.response_type.find("protobuf") != std::string::npos)
      return true;
    if (r.response_type.find("json") != std::string::npos)
      return false;
    return options_.protocol == otlp_protocol::http_protobuf;
  }

  static clock::time_point capped(clock::time_point deadline) {
    return std::min(deadline, clock::now() + std::chrono::hours(24));
  }

  void append_header(const std::string& line) {
    curl_slist* grown = curl_slist_append(headers_.get(), line.c_str());
    if (grown == nullptr)
      throw std::bad_alloc();
    (void)headers_.release();
    headers_.reset(grown);
  }

  // "scheme://host" in lowercase, or "" when the URL cannot be parsed.
  static std::string origin_of(const std::string& url) {
    CURLU* u = curl_url();
    std::string out;
    if (u != nullptr && curl_url_set(u, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK) {
      char* scheme = nullptr;
      char* host = nullptr;
      if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
          curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        out = std::string(scheme) + "://" + host;
        for (char& c : out)
          c = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
      }
      curl_free(scheme);
      curl_free(host);
    }
    curl_url_cleanup(u);
    return out;
  }
  // Redirects are followed to the endpoint's host only (its headers may carry credentials), and
  // never from https to http.
  bool may_follow(const std::string& target) const {
    const std::string o = origin_of(target);
    if (o.empty() || origin_.empty())
      return false;
    if (o == origin_)
      return true;
    const std::string host = origin_.substr(origin_.find("://") + 3);
    return origin_.rfind("http://", 0) == 0 && o == "https://" + host; // an upgrade to https
  }

  // ---- the I/O thread ---------------------------------------------------------------------------

  // active: the exports this thread drives (requests and retry waits), reserved by the constructor
  // for every export in flight and as many finished ones not yet erased.
  void run(std::vector<std::unique_ptr<request>> active) noexcept {
    for (;;) {
      bool stopping = false;
      std::size_t first_new = active.size();
      {
        std::lock_guard lock(mutex_);
        stopping = shut_down_;
        while (!incoming_.empty()) {
          active.push_back(std::move(incoming_.front())); // reserved: never reallocates
          incoming_.pop_front();
        }
      }
      if (!stopping)
        for (std::size_t i = first_new; i < active.size(); ++i)
          start_attempt(*active[i]);
      if (stopping) {
        for (auto& r : active)
          if (r->done)
            finish(*r,
                   export_result::failure(r->easy != nullptr ? "otlp_http_exporter: shut down during a request"
                                          : r->attempt == 0  ? "otlp_http_exporter: shut down"
                                                             : "otlp_http_exporter: shut down while waiting to retry"));
        active.clear();
        std::lock_guard lock(mutex_);
        if (incoming_.empty()) { // none arrived meanwhile (they are failed at submission from now on)
          io_done_ = true;
          idle_.notify_all();
          return;
        }
        continue;
      }
      int running = 0;
      CURLMcode mc = curl_multi_perform(multi_.get(), &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &left)) {
        if (msg->msg != CURLMSG_DONE)
          continue;
        request* r = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &r);
        completed(*r, msg->data.result);
      }
      const auto now = clock::now();
      auto next_timer = clock::time_point::max();
      for (auto it = active.begin(); it != active.end();) {
        request& r = **it;
        if (r.done == nullptr) { // finished: drop it
          it = active.erase(it);
          continue;
        }
        if (r.easy == nullptr) {
          if (r.retry_at <= now)
            start_attempt(r);
          else
            next_timer = std::min(next_timer, r.retry_at);
        }
        ++it;
      }
      if (mc != CURLM_OK) { // the multi handle is broken: every request fails
        for (auto& r : active)
          if (r->done)
            finish(*r, export_result::failure(std::string("otlp_http_exporter: ") + curl_multi_strerror(mc)));
        active.clear();
      }
      // Sleeps until a socket is ready, libcurl's own timer (request timeouts) is due, a retry wait
      // ends, or a submission or shutdown wakes it (the wakeup is sticky: one sent after the checks
      // above is not lost).
      int wait_ms = 1000;
      if (next_timer != clock::time_point::max())
        wait_ms = static_cast<int>(std::clamp<std::int64_t>(
            std::chrono::ceil<std::chrono::milliseconds>(next_timer - clock::now()).count(), 0, 1000));
      curl_multi_poll(multi_.get(), nullptr, 0, wait_ms, nullptr);
    }
  }

  // Starts the next request of r (or fails r when its deadline has passed).
  void start_attempt(request& r) noexcept {
    const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(r.deadline - clock::now());
    if (remaining.count() <= 0) {
      finish(r, export_result::failure(r.error.empty() ? "otlp_http_exporter: the export deadline passed"
                                                       : r.error + " (then the export deadline passed)"));
      return;
    }
    CURL* h = nullptr;
    {
      std::lock_guard lock(mutex_);
      if (!idle_easy_.empty()) {
        h = idle_easy_.back();
        idle_easy_.pop_back();
      }
    }
    if (h == nullptr)
      h = curl_easy_init();
    if (h == nullptr) {
      finish(r, export_result::failure("otlp_http_exporter: libcurl could not create a handle"));
      return;
    }
    curl_easy_reset(h); // connections live in the multi handle's cache, not in the easy handle
    curl_easy_setopt(h, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, r.body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers_.get());
    curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent_.c_str());
    // 0 is libcurl's "no timeout": only for an unlimited deadline.
    const long timeout_ms = r.deadline == clock::time_point::max()
                                ? 0L
                                : static_cast<long>(std::min<std::int64_t>(remaining.count(), LONG_MAX));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (!options_.certificate_file.empty())
      curl_easy_setopt(h, CURLOPT_CAINFO, options_.certificate_file.c_str());
    if (!options_.client_certificate_file.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, options_.client_certificate_file.c_str());
      curl_easy_setopt(h, CURLOPT_SSLKEY, options_.client_key_file.c_str());
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &otlp_http_exporter::on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &otlp_http_exporter::on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(h, CURLOPT_PRIVATE, &r);
    r.response_body.clear();
    r.response_type.clear();
    r.retry_after.reset();
    ++r.attempt;
    {
      std::lock_guard lock(mutex_);
      ++wire_.requests;
    }
    if (const CURLMcode mc = curl_multi_add_handle(multi_.get(), h); mc != CURLM_OK) {
      release_easy(h);
      finish(r, export_result::failure(std::string("otlp_http_exporter: ") + curl_multi_strerror(mc)));
      return;
    }
    r.easy = h;
  }

  void release_easy(CURL* h) noexcept {
    try {
      std::lock_guard lock(mutex_);
      idle_easy_.push_back(h);
    } catch (...) {
      curl_easy_cleanup(h);
    }
  }

  // A request of r ended (libcurl's result): the export's outcome, a retry wait, or a redirect.
  void completed(request& r, CURLcode result) noexcept {
    CURL* h = std::exchange(r.easy, nullptr);
    curl_multi_remove_handle(multi_.get(), h);
    long status = 0;
    curl_off_t uploaded = 0;
    const char* location = nullptr;
    std::string redirect_url;
    if (result == CURLE_OK)
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &uploaded);
    if (status >= 300 && status < 400 && curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &location) == CURLE_OK &&
        location != nullptr) {
      try {
        redirect_url = location;
      } catch (...) {
      }
    }
    release_easy(h);
    {
      std::lock_guard lock(mutex_);
      wire_.last_status = status;
      wire_.bytes_sent += static_cast<std::uint64_t>(std::max<curl_off_t>(uploaded, 0));
      if (status == 0)
        ++wire_.transport_errors;
    }
    try {
      if (status >= 200 && status < 300) {
        finish(r, accepted(r));
        return;
      }
      const bool redirect = status == 301 || status == 302 || status == 307 || status == 308;
      if (redirect && !redirect_url.empty() && may_follow(redirect_url) && r.redirects < max_redirects) {
        ++r.redirects;
        r.url = std::move(redirect_url);
        --r.attempt; // a redirect is not an attempt
        {
          std::lock_guard lock(mutex_);
          ++wire_.redirects;
        }
        start_attempt(r);
        return;
      }
      const bool retryable =
          status == 0 ? transient(result) : status == 429 || status == 502 || status == 503 || status == 504;
      r.error = status == 0 ? "otlp_http_exporter: " + std::string(curl_easy_strerror(result)) + " (" + r.url + ")"
                            : "otlp_http_exporter: HTTP " + std::to_string(status) + " from " + r.url + error_text(r);
      if (redirect)
        r.error += redirect_url.empty() ? " (a redirect without a Location)"
                   : r.redirects >= max_redirects
                       ? " (more than " + std::to_string(max_redirects) + " redirects)"
                       : " (a redirect to " + redirect_url + ": not followed, another host or a downgrade to http)";
      if (!retryable) {
        finish(r, export_result::failure(r.error));
        return;
      }
      if (r.attempt >= options_.max_attempts) {
        finish(r, export_result::failure(r.error + " (" + std::to_string(r.attempt) + " attempts)"));
        return;
      }
      const auto wait = r.retry_after ? *r.retry_after : jittered(r.backoff);
      if (wait >= r.deadline - clock::now()) { // (a difference: a huge wait cannot overflow a time point)
        finish(r, export_result::failure(r.error + " (the next attempt would start after the export deadline)"));
        return;
      }
      r.backoff =
          std::min(options_.max_backoff,
                   std::chrono::duration_cast<std::chrono::milliseconds>(r.backoff * options_.backoff_multiplier));
      r.retry_at = clock::now() + wait;
      std::lock_guard lock(mutex_);
      ++wire_.retries; // counted when the wait begins: the retry's request follows it
    } catch (...) {
      finish(r, export_result::failure("otlp_http_exporter: out of memory"));
    }
  }

  // Reports r's outcome (I/O thread), then releases its place: whoever waits for room or for the
  // exports in flight sees the outcome delivered first.
  void finish(request& r, export_result result) noexcept {
    if (r.easy != nullptr) {
      curl_multi_remove_handle(multi_.get(), r.easy);
      release_easy(std::exchange(r.easy, nullptr));
    }
    export_callback done = std::move(r.done);
    r.done = nullptr;
    if (done) {
      try {
        done(std::move(result));
      } catch (...) { // the contract says it does not throw
      }
    }
    {
      std::lock_guard lock(mutex_);
      in_flight_seqs_.erase(r.seq);
      wire_.in_flight = in_flight_seqs_.size();
    }
    room_.notify_one();
    idle_.notify_all();
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

  // A 2xx: the request was taken; a partial success names the spans the receiver rejected, or
  // carries the receiver's warning.
  export_result accepted(const request& r) {
    export_result result;
    const auto partial = protobuf_response(r) ? detail::protobuf_partial_success(r.response_body)
                                              : detail::otlp_json_reader(r.response_body).partial_success();
    if (!partial)
      return result;
    if (partial->rejected == 0) {
      if (!partial->message.empty())
        note_warning(partial->message);
      return result;
    }
    result.rejected_spans = partial->rejected;
    result.error = "otlp_http_exporter: the receiver rejected " + std::to_string(partial->rejected) + " spans" +
                   (partial->message.empty() ? std::string() : ": " + partial->message);
    return result;
  }

  void note_warning(const std::string& message) {
    bool fresh = false;
    {
      std::lock_guard lock(mutex_);
      ++wire_.partial_success_warnings;
      fresh = wire_.last_warning != message;
      if (fresh)
        wire_.last_warning = message;
    }
    if (fresh)
      warn("otlp_http_exporter: the receiver at " + options_.endpoint + " warns: " + message);
  }

  // An error response's message: a protobuf google.rpc.Status's message, else the body's start.
  std::string error_text(const request& r) const {
    if (protobuf_response(r))
      if (const auto message = detail::protobuf_status_message(r.response_body))
        return excerpt(*message);
    return excerpt(r.response_body);
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

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<request*>(user);
    const std::size_t bytes = size * n;
    constexpr std::size_t limit = std::size_t{1} << 20; // an OTLP response is small: the rest is ignored
    try {
      if (r->response_body.size() < limit)
        r->response_body.append(data, std::min(bytes, limit - r->response_body.size()));
    } catch (...) {
      return 0; // out of memory: libcurl fails the transfer
    }
    return bytes;
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<request*>(user);
    const std::size_t bytes = size * n;
    const std::string_view line(data, bytes);
    constexpr std::string_view name = "retry-after:";
    if (line.size() > name.size() && detail::equals_ignoring_case(line.substr(0, name.size()), name))
      if (const auto s = detail::parse_retry_after(line.substr(name.size()), std::time(nullptr)))
        r->retry_after = std::chrono::duration_cast<std::chrono::milliseconds>(*s);
    constexpr std::string_view type = "content-type:";
    if (line.size() > type.size() && detail::equals_ignoring_case(line.substr(0, type.size()), type)) {
      try {
        r->response_type.assign(detail::trim_ows(line.substr(type.size())));
        for (char& c : r->response_type)
          c = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
      } catch (...) {
        return 0; // out of memory: libcurl fails the transfer
      }
    }
    if (line.rfind("HTTP/", 0) == 0) { // a new response (after 100 Continue): forget the last one's
      r->retry_after.reset();
      r->response_type.clear();
    }
    return bytes;
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::uniform_real_distribution<double> factor(0.8, 1.2);
    return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(base.count()) * factor(rng_)));
  }

  static constexpr int max_redirects = 5;

  otlp_http_exporter_options options_;
  std::unique_ptr<work_stealing_pool> pool_;
  static constexpr std::size_t scratch_keep = std::size_t{4} << 20;
  std::mutex encode_mutex_; // guards the encoders, the compressor and scratch_
  otlp_json_encoder json_encoder_;
  otlp_protobuf_encoder protobuf_encoder_;
  std::optional<detail::body_compressor> compressor_;
  std::string scratch_; // the uncompressed body
  std::unique_ptr<CURLM, multi_deleter> multi_;
  std::unique_ptr<curl_slist, slist_deleter> headers_;
  std::string origin_;
  const std::string user_agent_ = user_agent();
  std::minstd_rand rng_{std::random_device{}()}; // I/O thread only

  mutable std::mutex mutex_;
  std::condition_variable room_; // an export finished: a waiting submission may go
  std::condition_variable idle_; // an export finished: force_flush and shutdown look again
  std::deque<std::unique_ptr<request>> incoming_;
  std::set<std::uint64_t> in_flight_seqs_; // submitted, not yet reported
  std::uint64_t submitted_ = 0;
  std::vector<CURL*> idle_easy_;
  bool shut_down_ = false;
  bool io_done_ = false;
  wire_stats wire_;
  std::thread io_; // last: started once everything above exists
};

} // namespace otlpconc::telemetry
