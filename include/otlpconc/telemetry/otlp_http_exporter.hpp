// otlpconc/telemetry/otlp_http_exporter.hpp: exports span batches to an OpenTelemetry Collector (or
// any OTLP/HTTP receiver) with POST /v1/traces, JSON encoding, through libcurl.
//
// What: each export encodes the batch once (otlp_json.hpp, on the exporter's encoding pool) and
//   POSTs it with Content-Type: application/json, retrying as the OTLP/HTTP specification says.
// When to use: sending spans to a Collector fleet. Requires libcurl (OTLPCONC_WITH_CURL, AUTO).
// Guarantees:
//   - Retries 429, 502, 503 and 504 and transport errors (connection refused or reset, timeouts),
//     with exponential backoff (initial_backoff, x1.5, at most max_backoff) and +-20% jitter, and
//     honours Retry-After (seconds or an HTTP date) when the receiver sends it. Other 4xx and 5xx
//     fail at once (not retryable).
//   - The whole export, retries and waits included, ends by the earlier of the processor's deadline
//     and options.timeout; a wait that would pass it is not started (the export fails instead).
//   - A 2xx response with partialSuccess.rejectedSpans reports those spans as rejected (the
//     processor counts them failed) and its errorMessage as the error.
//   - shutdown() interrupts a backoff wait: the export in progress fails at once.
//   - Never throws from export_spans; the constructor throws std::invalid_argument for a bad
//     endpoint or options, std::runtime_error if libcurl cannot be initialized.
#pragma once

#if !defined(OTLPCONC_HAVE_CURL) || !OTLPCONC_HAVE_CURL
#error "otlpconc/telemetry/otlp_http_exporter.hpp needs libcurl: configure otlpconc with OTLPCONC_WITH_CURL (Debian: libcurl4-openssl-dev)"
#endif

#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

struct otlp_http_exporter_options {
  std::string endpoint = "http://localhost:4318/v1/traces";
  std::vector<std::pair<std::string, std::string>> headers; // sent with every request
  std::chrono::milliseconds timeout{10000};                 // one export, retries included
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{5000};
  int max_attempts = 5;
  int encode_threads = 0; // as json_lines_file_exporter_options (-1: automatic)
};

class otlp_http_exporter final : public span_exporter {
 public:
  explicit otlp_http_exporter(otlp_http_exporter_options options = {}) : options_(std::move(options)) {
    if (options_.endpoint.rfind("http://", 0) != 0 && options_.endpoint.rfind("https://", 0) != 0)
      throw std::invalid_argument("otlp_http_exporter_options: endpoint must start with http:// or https://, got '" +
                                  options_.endpoint + "'");
    if (options_.timeout.count() <= 0 || options_.initial_backoff.count() <= 0 ||
        options_.max_backoff < options_.initial_backoff)
      throw std::invalid_argument(
          "otlp_http_exporter_options: timeout and initial_backoff must be positive, max_backoff >= initial_backoff");
    if (options_.max_attempts < 1)
      throw std::invalid_argument("otlp_http_exporter_options: max_attempts must be at least 1");
    for (const auto& [name, value] : options_.headers)
      if (name.empty() || name.find_first_of(":\r\n") != std::string::npos || value.find_first_of("\r\n") != std::string::npos)
        throw std::invalid_argument("otlp_http_exporter_options: bad header '" + name + "'");
    if (options_.encode_threads < -1 || options_.encode_threads > 64)
      throw std::invalid_argument("otlp_http_exporter_options: encode_threads must be -1 or 0 to 64");
    global_init();
    curl_ = curl_easy_init();
    if (curl_ == nullptr)
      throw std::runtime_error("otlp_http_exporter: curl_easy_init failed");
    int threads = options_.encode_threads;
    if (threads == -1) {
      const unsigned hw = std::thread::hardware_concurrency();
      threads = hw <= 1 ? 0 : static_cast<int>(std::min(4u, std::max(1u, hw / 2)));
    }
    if (threads > 0)
      pool_ = std::make_unique<work_stealing_pool>(static_cast<std::size_t>(threads), [](std::exception_ptr) {});
    encoder_ = otlp_json_encoder(pool_.get());
    headers_ = curl_slist_append(nullptr, "Content-Type: application/json");
    for (const auto& [name, value] : options_.headers)
      headers_ = curl_slist_append(headers_, (name + ": " + value).c_str());
  }
  ~otlp_http_exporter() override {
    curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }
  otlp_http_exporter(const otlp_http_exporter&) = delete;
  otlp_http_exporter& operator=(const otlp_http_exporter&) = delete;

  // Counters of what happened on the wire (for tests and the load generator).
  struct wire_stats {
    std::uint64_t requests = 0; // POSTs sent (retries included)
    std::uint64_t retries = 0;
    std::uint64_t last_status = 0;
  };
  wire_stats stats() const {
    std::lock_guard lock(state_mutex_);
    return wire_;
  }

  export_result export_spans(const span_batch_view& batch, clock::time_point deadline) override {
    std::lock_guard lock(export_mutex_);
    deadline = std::min(deadline, clock::now() + options_.timeout);
    body_.clear();
    try {
      encoder_.encode(batch, body_);
    } catch (const std::exception& e) {
      return export_result::failure(std::string("otlp_http_exporter: encoding failed: ") + e.what());
    }
    auto backoff = options_.initial_backoff;
    std::string error;
    for (int attempt = 1;; ++attempt) {
      if (shut_down())
        return export_result::failure("otlp_http_exporter: shut down");
      const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (remaining.count() <= 0)
        return export_result::failure(error.empty() ? "otlp_http_exporter: deadline passed" : error + " (deadline passed)");
      const attempt_result r = post(remaining);
      {
        std::lock_guard state(state_mutex_);
        ++wire_.requests;
        wire_.last_status = r.status;
      }
      if (r.status >= 200 && r.status < 300)
        return partial_success(r.body);
      const bool retryable = r.status == 0 || r.status == 429 || r.status == 502 || r.status == 503 || r.status == 504;
      error = r.status == 0 ? "otlp_http_exporter: " + r.transport_error
                            : "otlp_http_exporter: HTTP " + std::to_string(r.status) + " from " + options_.endpoint;
      if (!retryable || attempt >= options_.max_attempts)
        return export_result::failure(error);
      auto wait = jittered(backoff);
      if (r.retry_after)
        wait = *r.retry_after;
      if (clock::now() + wait >= deadline)
        return export_result::failure(error + " (the retry would pass the deadline)");
      if (!sleep_unless_shut_down(wait))
        return export_result::failure("otlp_http_exporter: shut down");
      {
        std::lock_guard state(state_mutex_);
        ++wire_.retries;
      }
      backoff = std::min(options_.max_backoff, std::chrono::milliseconds(backoff.count() * 3 / 2));
    }
  }

  void shutdown(clock::time_point) override {
    std::lock_guard lock(state_mutex_);
    shut_down_ = true;
    wake_.notify_all();
  }

 private:
  struct attempt_result {
    long status = 0; // 0: transport error
    std::string transport_error;
    std::string body;
    std::optional<std::chrono::milliseconds> retry_after;
  };

  static void global_init() {
    static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
      throw std::runtime_error(std::string("otlp_http_exporter: curl_global_init failed: ") + curl_easy_strerror(rc));
  }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<attempt_result*>(user);
    const std::size_t bytes = size * n;
    if (r->body.size() < (1u << 20)) // a response larger than 1 MiB is not an OTLP response: truncated
      r->body.append(data, std::min(bytes, (std::size_t{1} << 20) - r->body.size()));
    return bytes;
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
    auto* r = static_cast<attempt_result*>(user);
    const std::size_t bytes = size * n;
    std::string_view line(data, bytes);
    constexpr std::string_view name = "retry-after:";
    if (line.size() > name.size()) {
      std::string lower(line.substr(0, name.size()));
      for (char& c : lower)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      if (lower == name) {
        std::string value(line.substr(name.size()));
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
          value.pop_back();
        while (!value.empty() && value.front() == ' ')
          value.erase(0, 1);
        r->retry_after = parse_retry_after(value);
      }
    }
    return bytes;
  }

  // Retry-After: delay-seconds or an HTTP date. Unparsable: ignored.
  static std::optional<std::chrono::milliseconds> parse_retry_after(const std::string& value) {
    if (value.empty())
      return std::nullopt;
    if (value.find_first_not_of("0123456789") == std::string::npos) {
      if (value.size() > 9)
        return std::chrono::milliseconds(std::int64_t{999'999'999} * 1000);
      return std::chrono::milliseconds(std::stoll(value) * 1000);
    }
    const time_t when = curl_getdate(value.c_str(), nullptr);
    if (when < 0)
      return std::nullopt;
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    return std::chrono::milliseconds(std::max<std::int64_t>(0, static_cast<std::int64_t>(when - now)) * 1000);
  }

  attempt_result post(std::chrono::milliseconds timeout) {
    attempt_result r;
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, options_.endpoint.c_str());
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body_.data());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_.size()));
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<std::int64_t>(1, timeout.count())));
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &otlp_http_exporter::on_body);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, &otlp_http_exporter::on_header);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &r);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) {
      r.status = 0;
      r.transport_error = curl_easy_strerror(rc);
      return r;
    }
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    return r;
  }

  // {"partialSuccess":{"rejectedSpans":"3","errorMessage":"..."}} (rejectedSpans is an int64: a
  // string in OTLP JSON, a number from some receivers).
  static export_result partial_success(const std::string& body) {
    export_result result;
    const std::size_t key = body.find("\"rejectedSpans\"");
    if (key == std::string::npos)
      return result;
    std::size_t at = body.find(':', key);
    if (at == std::string::npos)
      return result;
    ++at;
    while (at < body.size() && (body[at] == ' ' || body[at] == '"'))
      ++at;
    std::uint64_t rejected = 0;
    while (at < body.size() && body[at] >= '0' && body[at] <= '9')
      rejected = rejected * 10 + static_cast<std::uint64_t>(body[at++] - '0');
    result.rejected_spans = rejected;
    if (rejected != 0) {
      result.error = "otlp_http_exporter: the receiver rejected " + std::to_string(rejected) + " spans";
      const std::size_t msg = body.find("\"errorMessage\"");
      if (msg != std::string::npos) {
        const std::size_t open = body.find('"', body.find(':', msg) + 1);
        const std::size_t close = open == std::string::npos ? open : body.find('"', open + 1);
        if (close != std::string::npos)
          result.error += ": " + body.substr(open + 1, close - open - 1);
      }
    }
    return result;
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::uniform_real_distribution<double> factor(0.8, 1.2);
    return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(base.count()) * factor(rng_)));
  }

  bool shut_down() const {
    std::lock_guard lock(state_mutex_);
    return shut_down_;
  }
  bool sleep_unless_shut_down(std::chrono::milliseconds wait) {
    std::unique_lock lock(state_mutex_);
    return !wake_.wait_for(lock, wait, [&] { return shut_down_; });
  }

  const otlp_http_exporter_options options_;
  CURL* curl_ = nullptr;
  curl_slist* headers_ = nullptr;
  std::unique_ptr<work_stealing_pool> pool_;
  otlp_json_encoder encoder_;
  std::string body_;
  std::minstd_rand rng_{std::random_device{}()};
  std::mutex export_mutex_;
  mutable std::mutex state_mutex_;
  std::condition_variable wake_;
  bool shut_down_ = false;
  wire_stats wire_;
};

} // namespace otlpconc::telemetry
