// otlpconc/telemetry/otlp_json.hpp: OTLP/JSON encoding of span batches (one TracesData object).
//
// What: otlp_json_encoder::encode appends {"resourceSpans":[...]} for a batch, following the OTLP
//   JSON rules (the proto3 JSON mapping with OTLP's exceptions): lowerCamelCase keys; trace and span
//   ids as lowercase hex (not base64); 64-bit integers (times, intValue) as decimal strings; enums
//   (kind, status code) as integers; doubles as JSON numbers, non-finite ones as the strings "NaN",
//   "Infinity", "-Infinity". This is what the OpenTelemetry Collector's otlpjsonfile receiver and
//   OTLP/HTTP JSON endpoints read.
//   - Strings are made valid JSON and valid UTF-8: '"', '\' and control characters are escaped
//     (\n, \t, ... or \u00XX), and each byte that is not part of a well-formed UTF-8 sequence
//     becomes U+FFFD (proto3 strings must be UTF-8; the Collector rejects invalid UTF-8).
//   - With a work_stealing_pool, a large batch is encoded in chunks of 64 spans on the pool's
//     workers (the calling thread helps), then joined: encoding is the CPU-heavy part of an export
//     (about 1 us per span), and the exports themselves are serialized.
// When to use: exporters (the JSON Lines file exporter, OTLP/HTTP with JSON).
// Guarantees: the output is deterministic (the same batch gives the same bytes with or without a
//   pool); encode never leaves `out` half-written when it throws (std::bad_alloc): it restores it.
//   One encoder must not be used by two threads at once (it keeps scratch buffers).
#pragma once

#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace otlpconc::telemetry {

// Appends s as a JSON string literal (quotes included), escaped and made valid UTF-8.
inline void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p < end) {
    // Runs of plain ASCII go in one append.
    const auto* run = p;
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
      ++p;
    if (p != run)
      out.append(reinterpret_cast<const char*>(run), static_cast<std::size_t>(p - run));
    if (p == end)
      break;
    const unsigned char c = *p;
    if (c < 0x80) {
      switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const char esc[] = {'\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]};
        out.append(esc, sizeof esc);
      }
      }
      ++p;
      continue;
    }
    // A multi-byte sequence (detail::utf8_sequence_length), else one U+FFFD for the lead byte.
    const std::size_t len = detail::utf8_sequence_length(p, end);
    const bool ok = len != 0;
    if (ok) {
      out.append(reinterpret_cast<const char*>(p), len);
      p += len;
    } else {
      out += "\xef\xbf\xbd";
      ++p;
    }
  }
  out.push_back('"');
}

namespace otlp_json_detail {

inline void append_u64_string(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.push_back('"');
  out.append(buf, end);
  out.push_back('"');
}

// Standard base64 with padding (RFC 4648), as proto3 JSON writes bytes.
inline void append_base64(std::string& out, std::string_view b) {
  static constexpr char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  std::size_t n = b.size();
  for (; n >= 3; n -= 3, p += 3) {
    const std::uint32_t v = std::uint32_t{p[0]} << 16 | std::uint32_t{p[1]} << 8 | p[2];
    const char quad[] = {digits[v >> 18], digits[(v >> 12) & 63], digits[(v >> 6) & 63], digits[v & 63]};
    out.append(quad, 4);
  }
  if (n != 0) {
    const std::uint32_t v = std::uint32_t{p[0]} << 16 | (n == 2 ? std::uint32_t{p[1]} << 8 : 0);
    const char quad[] = {digits[v >> 18], digits[(v >> 12) & 63], n == 2 ? digits[(v >> 6) & 63] : '=', '='};
    out.append(quad, 4);
  }
}

inline void append_value(std::string& out, attribute_value v) {
  switch (v.type()) {
  case attribute_type::string_value:
    out += "{\"stringValue\":";
    append_json_string(out, v.string_value());
    break;
  case attribute_type::bool_value:
    out += v.bool_value() ? "{\"boolValue\":true" : "{\"boolValue\":false";
    break;
  case attribute_type::int_value: {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v.int_value());
    (void)ec;
    out += "{\"intValue\":\"";
    out.append(buf, end);
    out.push_back('"');
    break;
  }
  case attribute_type::double_value: {
    const double d = v.double_value();
    out += "{\"doubleValue\":";
    if (std::isnan(d))
      out += "\"NaN\"";
    else if (std::isinf(d))
      out += d > 0 ? "\"Infinity\"" : "\"-Infinity\"";
    else {
      char buf[32];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d); // shortest round-trip form
      (void)ec;
      out.append(buf, end);
    }
    break;
  }
  case attribute_type::bytes_value:
    out += "{\"bytesValue\":\"";
    append_base64(out, v.bytes_value());
    out.push_back('"');
    break;
  case attribute_type::empty_value: // {}: no member set
    out.push_back('{');
    break;
  case attribute_type::kvlist_value:
    out += "{\"kvlistValue\":{";
    if (v.array_size() != 0) {
      out += "\"values\":[";
      for (std::uint32_t i = 0; i < v.array_size(); ++i) {
        if (i != 0)
          out.push_back(',');
        const attribute kv = v.kv_at(i);
        out += "{\"key\":";
        append_json_string(out, kv.key);
        out += ",\"value\":";
        append_value(out, kv.value);
        out.push_back('}');
      }
      out.push_back(']');
    }
    out.push_back('}');
    break;
  default: // arrays
    out += "{\"arrayValue\":{";
    if (v.array_size() != 0) {
      out += "\"values\":[";
      for (std::uint32_t i = 0; i < v.array_size(); ++i) {
        if (i != 0)
          out.push_back(',');
        append_value(out, v.element(i));
      }
      out.push_back(']');
    }
    out.push_back('}');
    break;
  }
  out.push_back('}');
}

inline void append_attribute(std::string& out, const attribute& a) {
  out += "{\"key\":";
  append_json_string(out, a.key);
  out += ",\"value\":";
  append_value(out, a.value);
  out.push_back('}');
}

inline void append_uint_field(std::string& out, const char* key, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out += key;
  out.append(buf, end);
}

inline void append_key_values(std::string& out, const std::vector<key_value>& kvs) {
  out += "\"attributes\":[";
  for (std::size_t i = 0; i < kvs.size(); ++i) {
    if (i != 0)
      out.push_back(',');
    append_attribute(out, kvs[i].view());
  }
  out.push_back(']');
}

template <std::size_t N>
inline void append_id(std::string& out, const char* key, const basic_id<N>& id) {
  out += key;
  const std::size_t at = out.size();
  out.append(2 * N + 1, '"');
  id.to_hex(out.data() + at);
}

} // namespace otlp_json_detail

// Appends one span's JSON object.
inline void append_span_json(std::string& out, const span_data& s) {
  using namespace otlp_json_detail;
  out += "{\"traceId\":\"";
  {
    const std::size_t at = out.size();
    out.append(33, '"');
    s.trace_id().to_hex(out.data() + at);
  }
  append_id(out, ",\"spanId\":\"", s.span_id());
  if (!s.trace_state().empty()) {
    out += ",\"traceState\":";
    append_json_string(out, s.trace_state());
  }
  if (s.parent_span_id().valid())
    append_id(out, ",\"parentSpanId\":\"", s.parent_span_id());
  append_uint_field(out, ",\"flags\":", otlp_span_flags(s));
  out += ",\"name\":";
  append_json_string(out, s.name());
  out += ",\"kind\":";
  out.push_back(static_cast<char>('0' + static_cast<int>(s.kind())));
  out += ",\"startTimeUnixNano\":";
  append_u64_string(out, s.start_time_unix_nano());
  out += ",\"endTimeUnixNano\":";
  append_u64_string(out, s.end_time_unix_nano());
  if (s.attribute_count() != 0) {
    out += ",\"attributes\":[";
    for (std::uint32_t i = 0; i < s.attribute_count(); ++i) {
      if (i != 0)
        out.push_back(',');
      append_attribute(out, s.attribute_at(i));
    }
    out.push_back(']');
  }
  if (s.dropped_attributes_count() != 0)
    append_uint_field(out, ",\"droppedAttributesCount\":", s.dropped_attributes_count());
  if (s.event_count() != 0) [[unlikely]] {
    out += ",\"events\":[";
    for (std::uint32_t i = 0; i < s.event_count(); ++i) {
      const span_event& e = s.event_at(i);
      out += i != 0 ? ",{\"timeUnixNano\":" : "{\"timeUnixNano\":";
      append_u64_string(out, e.time_unix_nano);
      out += ",\"name\":";
      append_json_string(out, e.name);
      if (!e.attributes.empty()) {
        out.push_back(',');
        append_key_values(out, e.attributes);
      }
      if (e.dropped_attributes_count != 0)
        append_uint_field(out, ",\"droppedAttributesCount\":", e.dropped_attributes_count);
      out.push_back('}');
    }
    out.push_back(']');
  }
  if (s.dropped_events_count() != 0)
    append_uint_field(out, ",\"droppedEventsCount\":", s.dropped_events_count());
  if (s.link_count() != 0) [[unlikely]] {
    out += ",\"links\":[";
    for (std::uint32_t i = 0; i < s.link_count(); ++i) {
      const span_link& l = s.link_at(i);
      if (i != 0)
        out.push_back(',');
      append_id(out, "{\"traceId\":\"", l.context.trace_id);
      append_id(out, ",\"spanId\":\"", l.context.span_id);
      if (!l.context.trace_state.empty()) {
        out += ",\"traceState\":";
        append_json_string(out, l.context.trace_state);
      }
      if (!l.attributes.empty()) {
        out.push_back(',');
        append_key_values(out, l.attributes);
      }
      if (l.dropped_attributes_count != 0)
        append_uint_field(out, ",\"droppedAttributesCount\":", l.dropped_attributes_count);
      append_uint_field(out, ",\"flags\":", otlp_link_flags(l));
      out.push_back('}');
    }
    out.push_back(']');
  }
  if (s.dropped_links_count() != 0)
    append_uint_field(out, ",\"droppedLinksCount\":", s.dropped_links_count());
  out += ",\"status\":{";
  if (s.status_code() != status_code::unset) {
    if (!s.status_message().empty()) {
      out += "\"message\":";
      append_json_string(out, s.status_message());
      out.push_back(',');
    }
    out += "\"code\":";
    out.push_back(static_cast<char>('0' + static_cast<int>(s.status_code())));
  }
  out += "}}";
}

class otlp_json_encoder {
 public:
  static constexpr std::size_t chunk_spans = 64;

  // pool: where large batches are encoded in parallel (nullptr: on the calling thread). The pool
  // must outlive the encoder.
  explicit otlp_json_encoder(work_stealing_pool* pool = nullptr) noexcept : pool_(pool) {}

  // Appends {"resourceSpans":[{"resource":{...},"scopeSpans":[{"scope":{...},"spans":[...]}]}]}.
  void encode(const span_batch_view& batch, std::string& out) {
    const std::size_t original = out.size();
    try {
      encode_unguarded(batch, out);
    } catch (...) {
      out.resize(original);
      throw;
    }
  }

 private:
  void encode_unguarded(const span_batch_view& batch, std::string& out) {
    using namespace otlp_json_detail;
    out += "{\"resourceSpans\":[{\"resource\":{";
    if (!batch.resource.attributes.empty())
      append_key_values(out, batch.resource.attributes);
    out += "},\"scopeSpans\":[{\"scope\":{\"name\":";
    append_json_string(out, batch.scope.name);
    if (!batch.scope.version.empty()) {
      out += ",\"version\":";
      append_json_string(out, batch.scope.version);
    }
    if (!batch.scope.attributes.empty()) {
      out.push_back(',');
      append_key_values(out, batch.scope.attributes);
    }
    out += "},\"spans\":[";
    const std::span<const span_data* const> spans = batch.spans;
    const std::size_t chunks = (spans.size() + chunk_spans - 1) / chunk_spans;
    if (pool_ == nullptr || chunks < 2) {
      encode_range(spans, out);
    } else {
      if (scratch_.size() < chunks)
        scratch_.resize(chunks);
      task_group group(*pool_);
      for (std::size_t c = 0; c < chunks; ++c) {
        scratch_[c].clear();
        group.run([this, c, spans] {
          const std::size_t first = c * chunk_spans;
          encode_range(spans.subspan(first, std::min(chunk_spans, spans.size() - first)), scratch_[c]);
        });
      }
      group.wait(); // rethrows a chunk's std::bad_alloc
      for (std::size_t c = 0; c < chunks; ++c) {
        if (c != 0)
          out.push_back(',');
        out += scratch_[c];
      }
    }
    out += "]}]}]}";
  }

  static void encode_range(std::span<const span_data* const> spans, std::string& out) {
    for (std::size_t i = 0; i < spans.size(); ++i) {
      if (i != 0)
        out.push_back(',');
      append_span_json(out, *spans[i]);
    }
  }

  work_stealing_pool* pool_;
  std::vector<std::string> scratch_; // one per chunk, kept (with their capacity) between batches
};

} // namespace otlpconc::telemetry
