// otlpconc/telemetry/exporter.hpp: the span exporter interface, and in_memory_exporter.
//
// What: span_exporter is what a batch_span_processor hands its batches to (OpenTelemetry's
//   SpanExporter): export_spans, force_flush, shutdown, and export_spans_async for exporters that
//   keep several exports in flight. in_memory_exporter keeps owned copies of what it receives
//   (span_record), for tests and examples.
// When to use: implement span_exporter to send spans somewhere; use in_memory_exporter in tests.
// Guarantees the processor gives an exporter: export_spans / export_spans_async are never called
//   concurrently (the calls are serialized on the processor's export thread, as OpenTelemetry
//   requires); the span_data an export sees stay valid and unchanged until the call returns (then
//   they are recycled: copy or encode what you keep); force_flush and shutdown are called from the
//   export thread too, shutdown once, last.
// What an exporter must do: return within the deadline it is given (the processor cannot interrupt
//   it, and a processor's shutdown stops waiting for it at its own timeout); report failures as
//   export_status::failure or by throwing (the processor counts both as failed spans, never
//   crashes); report spans the receiver rejected in an otherwise successful export (OTLP partial
//   success) as rejected_spans.
// Concurrent exports (OpenTelemetry: "concurrent requests ... are the responsibility of the
//   exporter"): the processor calls export_spans_async, whose default runs export_spans and reports
//   its result at once. An exporter that overrides it may return before the export is done (after
//   it has copied or encoded the spans) and report the result later, from any thread, by calling
//   `done` exactly once; the call must come by the export's deadline, or promptly once shutdown has
//   begun. force_flush must not return true before every export started before it has called
//   `done` (so that the processor's counts are final), and shutdown likewise waits for them (up to
//   its deadline). The processor keeps its own state alive until every `done` has been called.
#pragma once

#include "otlpconc/telemetry/span_data.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

enum class export_status : std::uint8_t { success, failure };

struct export_result {
  export_status status = export_status::success;
  std::uint64_t rejected_spans = 0; // with success: spans the receiver refused (counted as failed)
  std::string error;                // why, for a failure or rejections

  static export_result failure(std::string why) { return {export_status::failure, 0, std::move(why)}; }
};

// One batch, as an exporter sees it: the processor's resource and scope, and the spans.
struct span_batch_view {
  const telemetry::resource& resource;
  const instrumentation_scope& scope;
  std::span<const span_data* const> spans;
};

// Receives an export's outcome (export_spans_async). Called exactly once; must not throw.
using export_callback = std::function<void(export_result)>;

class span_exporter {
 public:
  using clock = std::chrono::steady_clock;
  virtual ~span_exporter() = default;
  virtual export_result export_spans(const span_batch_view& batch, clock::time_point deadline) = 0;
  // Starts an export and reports its outcome through done (see the top of this file). The default
  // exports synchronously: done runs before it returns. An exception thrown by an override is a
  // failed export (done must then not be called).
  virtual void export_spans_async(const span_batch_view& batch, clock::time_point deadline, export_callback done) {
    done(export_spans(batch, deadline));
  }
  // Makes everything exported so far durable / sent (and, for asynchronous exporters, waits for the
  // exports in flight to report). Returns false if it could not by the deadline.
  virtual bool force_flush(clock::time_point) { return true; }
  virtual void shutdown(clock::time_point) {}
};

// An owned copy of a span_data.
struct span_record {
  telemetry::trace_id trace_id;
  telemetry::span_id span_id;
  telemetry::span_id parent_span_id;
  std::uint8_t trace_flags = 0;
  bool parent_is_remote = false;
  std::string trace_state;
  std::string name;
  span_kind kind = span_kind::internal;
  std::uint64_t start_time_unix_nano = 0;
  std::uint64_t end_time_unix_nano = 0;
  telemetry::status_code status_code = status_code::unset;
  std::string status_message;
  std::vector<key_value> attributes;
  std::uint32_t dropped_attributes_count = 0;
  std::vector<span_event> events;
  std::uint32_t dropped_events_count = 0;
  std::vector<span_link> links;
  std::uint32_t dropped_links_count = 0;

  static span_record from(const span_data& d) {
    span_record r;
    r.trace_id = d.trace_id();
    r.span_id = d.span_id();
    r.parent_span_id = d.parent_span_id();
    r.trace_flags = d.trace_flags();
    r.parent_is_remote = d.parent_is_remote();
    r.trace_state = d.trace_state();
    r.name = d.name();
    r.kind = d.kind();
    r.start_time_unix_nano = d.start_time_unix_nano();
    r.end_time_unix_nano = d.end_time_unix_nano();
    r.status_code = d.status_code();
    r.status_message = d.status_message();
    r.attributes.reserve(d.attribute_count());
    for (std::uint32_t i = 0; i < d.attribute_count(); ++i) {
      const attribute a = d.attribute_at(i);
      r.attributes.emplace_back(std::string(a.key), a.value);
    }
    r.dropped_attributes_count = d.dropped_attributes_count();
    for (std::uint32_t i = 0; i < d.event_count(); ++i)
      r.events.push_back(d.event_at(i));
    r.dropped_events_count = d.dropped_events_count();
    for (std::uint32_t i = 0; i < d.link_count(); ++i)
      r.links.push_back(d.link_at(i));
    r.dropped_links_count = d.dropped_links_count();
    return r;
  }
  // The value of an attribute, or nullptr.
  const key_value::value_type* find_attribute(std::string_view key) const {
    for (const key_value& kv : attributes)
      if (kv.key == key)
        return &kv.value;
    return nullptr;
  }
};

// Keeps a copy of every exported span (thread-safe), and the size of every batch it received.
class in_memory_exporter final : public span_exporter {
 public:
  export_result export_spans(const span_batch_view& batch, clock::time_point) override {
    std::vector<span_record> copies;
    copies.reserve(batch.spans.size());
    for (const span_data* s : batch.spans)
      copies.push_back(span_record::from(*s));
    std::lock_guard lock(mutex_);
    for (auto& c : copies)
      spans_.push_back(std::move(c));
    batch_sizes_.push_back(batch.spans.size());
    return {};
  }
  void shutdown(clock::time_point) override {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
  }

  std::vector<span_record> spans() const {
    std::lock_guard lock(mutex_);
    return spans_;
  }
  std::vector<std::size_t> batch_sizes() const {
    std::lock_guard lock(mutex_);
    return batch_sizes_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return spans_.size();
  }
  bool was_shut_down() const {
    std::lock_guard lock(mutex_);
    return shut_down_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    spans_.clear();
    batch_sizes_.clear();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<span_record> spans_;
  std::vector<std::size_t> batch_sizes_;
  bool shut_down_ = false;
};

} // namespace otlpconc::telemetry
