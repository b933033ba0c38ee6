// otlpconc/telemetry/trace_context.hpp: trace and span identifiers, span contexts, and the W3C Trace
// Context headers (traceparent, tracestate).
//
// What: trace_id (16 bytes) and span_id (8 bytes) with lowercase hex conversion; span_context, what
//   a span passes to its children and across processes; parse_traceparent / format_traceparent and
//   tracestate validation following W3C Trace Context Level 2 (the Level 1 header format plus the
//   random flag).
// When to use: propagating a trace across a process boundary (HTTP headers, message metadata), or
//   naming a parent explicitly in tracer::start_span.
// Guarantees: parsing never throws and never reads outside its input; a malformed traceparent is
//   rejected (std::nullopt), exactly as the W3C rules say (wrong length, uppercase or non-hex
//   digits, version ff, all-zero ids, version 00 with trailing data); a malformed tracestate is
//   discarded (an empty trace_state) while the traceparent is kept, as the specification requires.
//   Leading and trailing spaces and tabs (HTTP optional whitespace) are ignored.
#pragma once

#include "otlpconc/telemetry/detail/text.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace otlpconc::telemetry {

// An identifier of N bytes; all zero is the invalid value.
template <std::size_t N>
struct basic_id {
  std::array<std::uint8_t, N> bytes{};

  static constexpr std::size_t size = N;
  constexpr bool valid() const noexcept {
    for (std::uint8_t b : bytes)
      if (b != 0)
        return true;
    return false;
  }
  // Writes 2N lowercase hex digits at out.
  void to_hex(char* out) const noexcept { detail::encode_hex(bytes.data(), N, out); }
  std::string to_hex() const {
    std::string s(2 * N, '0');
    to_hex(s.data());
    return s;
  }
  // Exactly 2N lowercase hex digits; anything else is std::nullopt. An all-zero id parses (valid()
  // says whether it may be used).
  static std::optional<basic_id> from_hex(std::string_view hex) noexcept {
    basic_id id;
    if (!detail::decode_hex(hex, id.bytes.data(), N))
      return std::nullopt;
    return id;
  }
  // The id's bytes read as a big-endian number, from byte `first` to the end (at most 8 bytes).
  constexpr std::uint64_t tail_u64(std::size_t first) const noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = first; i < N; ++i)
      v = v << 8 | bytes[i];
    return v;
  }
  friend constexpr bool operator==(const basic_id&, const basic_id&) = default;
};

using trace_id = basic_id<16>;
using span_id = basic_id<8>;

// W3C trace-flags bits: sampled (Level 1) and random (Level 2: at least the trace id's right-most 7
// bytes are random; set on the traces this library starts, carried unchanged through a trace).
inline constexpr std::uint8_t trace_flag_sampled = 0x01;
inline constexpr std::uint8_t trace_flag_random = 0x02;
// The flags a span context carries; other bits are reserved (W3C: vendors MUST set them to zero).
inline constexpr std::uint8_t trace_flags_known = trace_flag_sampled | trace_flag_random;

// What a span hands to its children and to other processes.
struct span_context {
  telemetry::trace_id trace_id;
  telemetry::span_id span_id;
  std::uint8_t trace_flags = 0;
  bool remote = false;     // parsed from another process (traceparent)
  std::string trace_state; // validated W3C tracestate, or empty

  bool valid() const noexcept { return trace_id.valid() && span_id.valid(); }
  bool sampled() const noexcept { return (trace_flags & trace_flag_sampled) != 0; }
  bool random() const noexcept { return (trace_flags & trace_flag_random) != 0; }
};

// W3C tracestate (Level 1): at most 32 comma-separated key=value members, keys unique, each key a
// lowercase simple key (up to 256 chars) or tenant@system key, each value 1-256 printable ASCII
// chars other than ',' and '=' that does not end in a space. Empty members and whitespace around
// members are allowed. Returns the members joined by ",", or std::nullopt when malformed.
inline std::optional<std::string> normalize_tracestate(std::string_view header) {
  auto key_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
  };
  auto valid_key = [&](std::string_view key) {
    const std::size_t at = key.find('@');
    if (at == std::string_view::npos) {
      if (key.empty() || key.size() > 256 || !(key[0] >= 'a' && key[0] <= 'z'))
        return false;
      for (char c : key)
        if (!key_char(c))
          return false;
      return true;
    }
    const std::string_view tenant = key.substr(0, at), system = key.substr(at + 1);
    if (tenant.empty() || tenant.size() > 241 || system.empty() || system.size() > 14)
      return false;
    if (!((tenant[0] >= 'a' && tenant[0] <= 'z') || (tenant[0] >= '0' && tenant[0] <= '9')))
      return false;
    if (!(system[0] >= 'a' && system[0] <= 'z'))
      return false;
    for (char c : tenant)
      if (!key_char(c))
        return false;
    for (char c : system)
      if (!key_char(c))
        return false;
    return true;
  };
  auto valid_value = [](std::string_view value) {
    if (value.empty() || value.size() > 256 || value.back() == ' ')
      return false;
    for (char c : value)
      if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
        return false;
    return true;
  };

  std::string out;
  std::string_view keys[32];
  std::size_t members = 0;
  while (true) {
    const std::size_t comma = header.find(',');
    const std::string_view member = detail::trim_ows(header.substr(0, comma));
    if (!member.empty()) {
      const std::size_t eq = member.find('=');
      if (eq == std::string_view::npos || members == 32)
        return std::nullopt;
      const std::string_view key = member.substr(0, eq), value = member.substr(eq + 1);
      if (!valid_key(key) || !valid_value(value))
        return std::nullopt;
      for (std::size_t i = 0; i < members; ++i)
        if (keys[i] == key)
          return std::nullopt; // duplicate key
      keys[members++] = key;
      if (!out.empty())
        out += ',';
      out.append(member);
    }
    if (comma == std::string_view::npos)
      break;
    header.remove_prefix(comma + 1);
  }
  return out;
}

// Parses a W3C traceparent header (and carries a tracestate header, dropped if malformed). The
// result is marked remote. std::nullopt when the traceparent is malformed.
inline std::optional<span_context> parse_traceparent(std::string_view traceparent, std::string_view tracestate = {}) {
  const std::string_view tp = detail::trim_ows(traceparent);
  constexpr std::size_t length_v0 = 55; // "00-" + 32 + "-" + 16 + "-" + 2
  if (tp.size() < length_v0 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
    return std::nullopt;
  std::uint8_t version = 0, flags = 0;
  if (!detail::decode_hex(tp.substr(0, 2), &version, 1) || version == 0xff)
    return std::nullopt;
  // Version 00 is exactly 55 characters; a later version may append fields after a '-'.
  if (version == 0 ? tp.size() != length_v0 : (tp.size() > length_v0 && tp[length_v0] != '-'))
    return std::nullopt;
  span_context ctx;
  if (!detail::decode_hex(tp.substr(3, 32), ctx.trace_id.bytes.data(), 16) ||
      !detail::decode_hex(tp.substr(36, 16), ctx.span_id.bytes.data(), 8) ||
      !detail::decode_hex(tp.substr(53, 2), &flags, 1) || !ctx.valid())
    return std::nullopt;
  ctx.trace_flags = flags & trace_flags_known; // sampled and random (Level 2); reserved bits are not propagated
  ctx.remote = true;
  if (!tracestate.empty())
    ctx.trace_state = normalize_tracestate(tracestate).value_or(std::string());
  return ctx;
}

// "00-<trace id>-<span id>-<flags>" (version 00). An invalid context formats as an empty string
// (W3C: do not propagate an invalid traceparent).
inline std::string format_traceparent(const span_context& ctx) {
  if (!ctx.valid())
    return {};
  std::string out = "00-";
  out.resize(55, '-');
  ctx.trace_id.to_hex(out.data() + 3);
  ctx.span_id.to_hex(out.data() + 36);
  const std::uint8_t flags = ctx.trace_flags;
  detail::encode_hex(&flags, 1, out.data() + 53);
  return out;
}

} // namespace otlpconc::telemetry
