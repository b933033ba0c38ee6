// otlpconc/telemetry/detail/text.hpp: small text helpers shared by the telemetry headers: hexadecimal digits
// (ids in trace_context.hpp, \uXXXX escapes in detail/otlp_response.hpp, percent-decoding in
// otlp_http_exporter.hpp) and HTTP optional white space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace otlpconc::telemetry::detail {
inline constexpr char hex_digits[] = "0123456789abcdef";

// The value of a hex digit of either case, or -1.
constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Lowercase hex only (W3C: uppercase is invalid in traceparent). Returns false on any other char.
inline bool decode_hex(std::string_view text, std::uint8_t* out, std::size_t bytes) noexcept {
  if (text.size() != 2 * bytes)
    return false;
  auto nibble = [](char c) { return c >= 'A' && c <= 'F' ? -1 : hex_value(c); };
  for (std::size_t i = 0; i < bytes; ++i) {
    const int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}
inline void encode_hex(const std::uint8_t* in, std::size_t bytes, char* out) noexcept {
  for (std::size_t i = 0; i < bytes; ++i) {
    out[2 * i] = hex_digits[in[i] >> 4];
    out[2 * i + 1] = hex_digits[in[i] & 15];
  }
}
// Without leading and trailing OWS (spaces and tabs, RFC 9110).
inline std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}
} // namespace otlpconc::telemetry::detail
