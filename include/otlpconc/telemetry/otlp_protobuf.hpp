// otlpconc/telemetry/otlp_protobuf.hpp: OTLP protobuf encoding of span batches (one
// ExportTraceServiceRequest, the body of OTLP/HTTP with Content-Type application/x-protobuf).
//
// What: otlp_protobuf_encoder::encode appends the protobuf wire form of
//   opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest for a batch: one ResourceSpans
//   (the resource), one ScopeSpans (the scope), its spans. Written directly from the field numbers of
//   the opentelemetry-proto files (trace/v1/trace.proto, common/v1/common.proto,
//   resource/v1/resource.proto), without generated code: the format is small and fixed.
//   - Canonical proto3 output: fields in field-number order, scalars at their default value left
//     out, the members of AnyValue's oneof always written, lengths and varints in their shortest
//     form (what a generated encoder writes, byte for byte).
//   - Strings are made valid UTF-8 (proto3 requires it; the Collector rejects a request that is
//     not): each byte that is not part of a well-formed UTF-8 sequence becomes U+FFFD, as the JSON
//     encoder does.
//   - Span.flags carries the W3C trace flags and the parent's is-remote bits, as in OTLP JSON.
// When to use: exporters sending http/protobuf (the OTLP specification's default protocol).
// Guarantees: deterministic output; encode never leaves `out` half-written when it throws
//   (std::bad_alloc): it restores it. Stateless: one encoder may be used by any number of threads.
#pragma once

#include "otlpconc/detail/config.hpp"
#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/span_data.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace otlpconc::telemetry {

namespace otlp_protobuf_detail {

enum wire_type : std::uint32_t { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

constexpr std::size_t varint_size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Writes protobuf into a std::string through a raw pointer: the string is grown ahead (doubling)
// and cut to what was written by finish(), so each field costs a bounds check and plain stores,
// not a std::string append. Positions are offsets: growing may move the buffer.
class writer {
 public:
  explicit writer(std::string& out) : out_(out), pos_(out.size()) { grow(512); }
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  // Cuts the string to what was written (call once, at the end).
  void finish() { out_.resize(pos_); }

  OTLPCONC_ALWAYS_INLINE void reserve(std::size_t n) {
    if (out_.size() - pos_ < n)
      grow(n);
  }
  // Most varints (tags, lengths, small numbers) are one byte: that path is inlined.
  OTLPCONC_ALWAYS_INLINE void varint(std::uint64_t v) {
    reserve(10);
    if (v < 0x80) {
      out_[pos_++] = static_cast<char>(v);
      return;
    }
    long_varint(v);
  }
  OTLPCONC_ALWAYS_INLINE void tag(std::uint32_t field, wire_type type) { varint((std::uint64_t{field} << 3) | type); }
  OTLPCONC_ALWAYS_INLINE void fixed(std::uint64_t v, std::size_t bytes) {
    reserve(8);
    char* p = out_.data() + pos_;
    for (std::size_t i = 0; i < bytes; ++i)
      p[i] = static_cast<char>((v >> (8 * i)) & 0xff); // little-endian
    pos_ += bytes;
  }
  OTLPCONC_ALWAYS_INLINE void bytes(std::uint32_t field, const void* data, std::size_t size) {
    tag(field, length_delimited);
    varint(size);
    reserve(size);
    std::memcpy(out_.data() + pos_, data, size);
    pos_ += size;
  }
  // Strings are made valid UTF-8 (proto3 requires it): each byte outside a well-formed sequence
  // becomes U+FFFD, as the JSON encoder does.
  void string(std::uint32_t field, std::string_view s) {
    if (detail::is_valid_utf8(s)) {
      bytes(field, s.data(), s.size());
    } else {
      const std::string valid = detail::to_valid_utf8(s);
      bytes(field, valid.data(), valid.size());
    }
  }

  // A nested message: begin() writes its tag and reserves `guess` bytes for its length; end()
  // writes the length in its shortest form, moving the body when the guess was wrong.
  OTLPCONC_ALWAYS_INLINE std::size_t begin(std::uint32_t field, std::size_t guess) {
    tag(field, length_delimited);
    reserve(guess);
    const std::size_t at = pos_;
    pos_ += guess;
    return at;
  }
  OTLPCONC_ALWAYS_INLINE void end(std::size_t at, std::size_t guess) {
    const std::size_t body = pos_ - at - guess;
    const std::size_t need = varint_size(body);
    if (guess == 1 && need == 1) { // most nested messages: an attribute, its value
      out_[at] = static_cast<char>(body);
      return;
    }
    if (need != guess) {
      if (need > guess)
        reserve(need - guess);
      char* const b = out_.data() + at;
      std::memmove(b + need, b + guess, body);
      pos_ = pos_ + need - guess;
    }
    char* p = out_.data() + at;
    std::uint64_t v = body;
    for (std::size_t i = 0; i < need; ++i, v >>= 7)
      p[i] = static_cast<char>((v & 0x7f) | (i + 1 < need ? 0x80 : 0));
  }

 private:
  OTLPCONC_NOINLINE void grow(std::size_t n) { out_.resize(std::max(out_.size() * 2, pos_ + n + 64)); }
  OTLPCONC_NOINLINE void long_varint(std::uint64_t v) {
    char* p = out_.data() + pos_;
    char* const first = p;
    while (v >= 0x80) {
      *p++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p++ = static_cast<char>(v);
    pos_ += static_cast<std::size_t>(p - first);
  }

  std::string& out_;
  std::size_t pos_;
};

inline void put_key_value(writer& w, std::uint32_t field, const attribute& a);

// common.v1.AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4, array_value 5
// (ArrayValue: values 1), kvlist_value 6 (KeyValueList: values 1), bytes_value 7 (oneof: always
// written, also at the default value).
inline void put_any_value(writer& w, std::uint32_t field, const attribute_value& v) {
  const std::size_t m = w.begin(field, 1);
  switch (v.type()) {
  case attribute_type::string_value:
    w.string(1, v.string_value());
    break;
  case attribute_type::bool_value:
    w.tag(2, varint);
    w.varint(v.bool_value() ? 1 : 0);
    break;
  case attribute_type::int_value:
    w.tag(3, varint);
    w.varint(static_cast<std::uint64_t>(v.int_value())); // two's complement, 10 bytes if negative
    break;
  case attribute_type::double_value: {
    w.tag(4, fixed64);
    std::uint64_t bits;
    const double d = v.double_value();
    std::memcpy(&bits, &d, sizeof bits);
    w.fixed(bits, 8);
    break;
  }
  case attribute_type::bytes_value: {
    const std::string_view b = v.bytes_value();
    w.bytes(7, b.data(), b.size());
    break;
  }
  case attribute_type::empty_value: // no member of the oneof set
    break;
  case attribute_type::kvlist_value: { // KeyValueList: values 1
    const std::size_t l = w.begin(6, 1);
    for (std::uint32_t i = 0; i < v.array_size(); ++i)
      put_key_value(w, 1, v.kv_at(i));
    w.end(l, 1);
    break;
  }
  default: { // arrays
    const std::size_t a = w.begin(5, 1);
    for (std::uint32_t i = 0; i < v.array_size(); ++i)
      put_any_value(w, 1, v.element(i));
    w.end(a, 1);
    break;
  }
  }
  w.end(m, 1);
}

// common.v1.KeyValue: key 1, value 2.
inline void put_key_value(writer& w, std::uint32_t field, const attribute& a) {
  const std::size_t m = w.begin(field, 1);
  if (!a.key.empty()) // a plain proto3 string: left out at its default, as a generated encoder does
    w.string(1, a.key);
  put_any_value(w, 2, a.value);
  w.end(m, 1);
}

inline void put_uint(writer& w, std::uint32_t field, std::uint64_t v) {
  if (v != 0) {
    w.tag(field, varint);
    w.varint(v);
  }
}

// Span.events (11: time_unix_nano 1, name 2, attributes 3, dropped_attributes_count 4),
// dropped_events_count 12, links (13: trace_id 1, span_id 2, trace_state 3, attributes 4,
// dropped_attributes_count 5, flags 6), dropped_links_count 14.
inline void put_events_and_links(writer& w, const span_data& s) {
  for (std::uint32_t i = 0; i < s.event_count(); ++i) {
    const span_event& e = s.event_at(i);
    const std::size_t m = w.begin(11, 2);
    if (e.time_unix_nano != 0) {
      w.tag(1, fixed64);
      w.fixed(e.time_unix_nano, 8);
    }
    if (!e.name.empty())
      w.string(2, e.name);
    for (const key_value& kv : e.attributes)
      put_key_value(w, 3, kv.view());
    put_uint(w, 4, e.dropped_attributes_count);
    w.end(m, 2);
  }
  put_uint(w, 12, s.dropped_events_count());
  for (std::uint32_t i = 0; i < s.link_count(); ++i) {
    const span_link& l = s.link_at(i);
    const std::size_t m = w.begin(13, 2);
    w.bytes(1, l.context.trace_id.bytes.data(), l.context.trace_id.bytes.size());
    w.bytes(2, l.context.span_id.bytes.data(), l.context.span_id.bytes.size());
    if (!l.context.trace_state.empty())
      w.string(3, l.context.trace_state);
    for (const key_value& kv : l.attributes)
      put_key_value(w, 4, kv.view());
    put_uint(w, 5, l.dropped_attributes_count);
    w.tag(6, fixed32);
    w.fixed(otlp_link_flags(l), 4);
    w.end(m, 2);
  }
  put_uint(w, 14, s.dropped_links_count());
}

// One trace.v1.Span message as field `field` of its parent.
inline void put_span(writer& w, const span_data& s, std::uint32_t field) {
  const std::size_t m = w.begin(field, 2);
  w.bytes(1, s.trace_id().bytes.data(), s.trace_id().bytes.size());
  w.bytes(2, s.span_id().bytes.data(), s.span_id().bytes.size());
  if (!s.trace_state().empty())
    w.string(3, s.trace_state());
  if (s.parent_span_id().valid())
    w.bytes(4, s.parent_span_id().bytes.data(), s.parent_span_id().bytes.size());
  if (!s.name().empty())
    w.string(5, s.name());
  put_uint(w, 6, static_cast<std::uint64_t>(s.kind()));
  if (s.start_time_unix_nano() != 0) {
    w.tag(7, fixed64);
    w.fixed(s.start_time_unix_nano(), 8);
  }
  if (s.end_time_unix_nano() != 0) {
    w.tag(8, fixed64);
    w.fixed(s.end_time_unix_nano(), 8);
  }
  for (std::uint32_t i = 0; i < s.attribute_count(); ++i)
    put_key_value(w, 9, s.attribute_at(i));
  put_uint(w, 10, s.dropped_attributes_count());
  if (s.event_count() != 0 || s.link_count() != 0) [[unlikely]]
    put_events_and_links(w, s);
  if (s.status_code() != status_code::unset) {
    const std::size_t st = w.begin(15, 1);
    if (!s.status_message().empty())
      w.string(2, s.status_message());
    put_uint(w, 3, static_cast<std::uint64_t>(s.status_code()));
    w.end(st, 1);
  }
  w.tag(16, fixed32); // Span.flags (fixed32)
  w.fixed(otlp_span_flags(s), 4);
  w.end(m, 2);
}

} // namespace otlp_protobuf_detail

// Appends one trace.v1.Span message as field `field` of its parent.
// Like encode, it leaves `out` as it was when it throws.
inline void append_span_protobuf(std::string& out, const span_data& s, std::uint32_t field = 2) {
  const std::size_t original = out.size();
  try {
    otlp_protobuf_detail::writer w(out);
    otlp_protobuf_detail::put_span(w, s, field);
    w.finish();
  } catch (...) {
    out.resize(original);
    throw;
  }
}

class otlp_protobuf_encoder {
 public:
  // Appends an ExportTraceServiceRequest holding the batch.
  void encode(const span_batch_view& batch, std::string& out) const {
    const std::size_t original = out.size();
    try {
      encode_unguarded(batch, out);
    } catch (...) {
      out.resize(original);
      throw;
    }
  }

 private:
  static void encode_unguarded(const span_batch_view& batch, std::string& out) {
    using namespace otlp_protobuf_detail;
    writer w(out);
    // About 200 bytes a span: one growth for a typical batch instead of a doubling series.
    w.reserve(256 + 200 * batch.spans.size());
    // ExportTraceServiceRequest.resource_spans (1) -> ResourceSpans
    const std::size_t rs = w.begin(1, 3);
    {
      // ResourceSpans.resource (1) -> Resource.attributes (1)
      const std::size_t r = w.begin(1, 1);
      for (const key_value& kv : batch.resource.attributes)
        put_key_value(w, 1, kv.view());
      w.end(r, 1);
    }
    // ResourceSpans.scope_spans (2) -> ScopeSpans
    const std::size_t ss = w.begin(2, 3);
    {
      // ScopeSpans.scope (1) -> InstrumentationScope: name 1, version 2, attributes 3
      const std::size_t sc = w.begin(1, 1);
      if (!batch.scope.name.empty())
        w.string(1, batch.scope.name);
      if (!batch.scope.version.empty())
        w.string(2, batch.scope.version);
      for (const key_value& kv : batch.scope.attributes)
        put_key_value(w, 3, kv.view());
      w.end(sc, 1);
    }
    for (const span_data* s : batch.spans) // ScopeSpans.spans (2)
      put_span(w, *s, 2);
    w.end(ss, 3);
    w.end(rs, 3);
    w.finish();
  }
};

} // namespace otlpconc::telemetry
