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

#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/span_data.hpp"

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

inline void put_varint(std::string& out, std::uint64_t v) {
  char buf[10];
  std::size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}
constexpr std::size_t varint_size(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
inline void put_tag(std::string& out, std::uint32_t field, wire_type type) {
  put_varint(out, (std::uint64_t{field} << 3) | type);
}
inline void put_fixed(std::string& out, std::uint64_t v, std::size_t bytes) {
  char buf[8];
  for (std::size_t i = 0; i < bytes; ++i)
    buf[i] = static_cast<char>((v >> (8 * i)) & 0xff); // little-endian
  out.append(buf, bytes);
}
inline void put_bytes(std::string& out, std::uint32_t field, const void* data, std::size_t size) {
  put_tag(out, field, length_delimited);
  put_varint(out, size);
  out.append(static_cast<const char*>(data), size);
}
inline void put_string(std::string& out, std::uint32_t field, std::string_view s) {
  if (detail::is_valid_utf8(s)) {
    put_bytes(out, field, s.data(), s.size());
  } else {
    const std::string valid = detail::to_valid_utf8(s);
    put_bytes(out, field, valid.data(), valid.size());
  }
}

// A nested message: begin() writes its tag and reserves `guess` bytes for its length; end()
// writes the length in its shortest form, moving the body when the guess was wrong.
struct message {
  std::size_t length_at;
  std::size_t guess;
  static message begin(std::string& out, std::uint32_t field, std::size_t guess = 1) {
    put_tag(out, field, length_delimited);
    const std::size_t at = out.size();
    out.append(guess, '\0');
    return {at, guess};
  }
  void end(std::string& out) const {
    const std::size_t body = out.size() - length_at - guess;
    const std::size_t need = varint_size(body);
    if (need != guess) {
      if (need > guess)
        out.insert(length_at + guess, need - guess, '\0');
      else
        out.erase(length_at + need, guess - need);
    }
    std::uint64_t v = body;
    for (std::size_t i = 0; i < need; ++i, v >>= 7)
      out[length_at + i] = static_cast<char>((v & 0x7f) | (i + 1 < need ? 0x80 : 0));
  }
};

// common.v1.AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4 (oneof: always
// written, also at the default value).
inline void put_any_value(std::string& out, std::uint32_t field, const attribute_value& v) {
  const message m = message::begin(out, field);
  switch (v.type()) {
  case attribute_type::string_value:
    put_string(out, 1, v.string_value());
    break;
  case attribute_type::bool_value:
    put_tag(out, 2, varint);
    put_varint(out, v.bool_value() ? 1 : 0);
    break;
  case attribute_type::int_value:
    put_tag(out, 3, varint);
    put_varint(out, static_cast<std::uint64_t>(v.int_value())); // two's complement, 10 bytes if negative
    break;
  case attribute_type::double_value: {
    put_tag(out, 4, fixed64);
    std::uint64_t bits;
    const double d = v.double_value();
    std::memcpy(&bits, &d, sizeof bits);
    put_fixed(out, bits, 8);
    break;
  }
  }
  m.end(out);
}

// common.v1.KeyValue: key 1, value 2.
inline void put_key_value(std::string& out, std::uint32_t field, const attribute& a) {
  const message m = message::begin(out, field);
  put_string(out, 1, a.key);
  put_any_value(out, 2, a.value);
  m.end(out);
}

inline void put_uint(std::string& out, std::uint32_t field, std::uint64_t v) {
  if (v != 0) {
    put_tag(out, field, varint);
    put_varint(out, v);
  }
}

} // namespace otlp_protobuf_detail

// Appends one trace.v1.Span message as field `field` of its parent.
inline void append_span_protobuf(std::string& out, const span_data& s, std::uint32_t field = 2) {
  using namespace otlp_protobuf_detail;
  const message m = message::begin(out, field, 2);
  put_bytes(out, 1, s.trace_id().bytes.data(), s.trace_id().bytes.size());
  put_bytes(out, 2, s.span_id().bytes.data(), s.span_id().bytes.size());
  if (!s.trace_state().empty())
    put_string(out, 3, s.trace_state());
  if (s.parent_span_id().valid())
    put_bytes(out, 4, s.parent_span_id().bytes.data(), s.parent_span_id().bytes.size());
  if (!s.name().empty())
    put_string(out, 5, s.name());
  put_uint(out, 6, static_cast<std::uint64_t>(s.kind()));
  if (s.start_time_unix_nano() != 0) {
    put_tag(out, 7, fixed64);
    put_fixed(out, s.start_time_unix_nano(), 8);
  }
  if (s.end_time_unix_nano() != 0) {
    put_tag(out, 8, fixed64);
    put_fixed(out, s.end_time_unix_nano(), 8);
  }
  for (std::uint32_t i = 0; i < s.attribute_count(); ++i)
    put_key_value(out, 9, s.attribute_at(i));
  put_uint(out, 10, s.dropped_attributes_count());
  if (s.status_code() != status_code::unset) {
    const message st = message::begin(out, 15);
    if (!s.status_message().empty())
      put_string(out, 2, s.status_message());
    put_uint(out, 3, static_cast<std::uint64_t>(s.status_code()));
    st.end(out);
  }
  put_tag(out, 16, fixed32); // Span.flags (fixed32)
  put_fixed(out, otlp_span_flags(s), 4);
  m.end(out);
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
    // ExportTraceServiceRequest.resource_spans (1) -> ResourceSpans
    const message rs = message::begin(out, 1, 3);
    {
      // ResourceSpans.resource (1) -> Resource.attributes (1)
      const message r = message::begin(out, 1);
      for (const key_value& kv : batch.resource.attributes)
        put_key_value(out, 1, kv.view());
      r.end(out);
    }
    // ResourceSpans.scope_spans (2) -> ScopeSpans
    const message ss = message::begin(out, 2, 3);
    {
      // ScopeSpans.scope (1) -> InstrumentationScope: name 1, version 2, attributes 3
      const message sc = message::begin(out, 1);
      if (!batch.scope.name.empty())
        put_string(out, 1, batch.scope.name);
      if (!batch.scope.version.empty())
        put_string(out, 2, batch.scope.version);
      for (const key_value& kv : batch.scope.attributes)
        put_key_value(out, 3, kv.view());
      sc.end(out);
    }
    for (const span_data* s : batch.spans) // ScopeSpans.spans (2)
      append_span_protobuf(out, *s, 2);
    ss.end(out);
    rs.end(out);
  }
};

} // namespace otlpconc::telemetry
