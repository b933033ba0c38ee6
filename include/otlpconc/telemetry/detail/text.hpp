// otlpconc/telemetry/detail/text.hpp: small text helpers shared by the telemetry headers: hexadecimal digits
// (ids in trace_context.hpp, \uXXXX escapes in detail/otlp_response.hpp, percent-decoding in
// otlp_http_exporter.hpp) and HTTP optional white space.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
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
// The length of the well-formed UTF-8 sequence starting at p (Unicode 15, table 3-7: no overlongs,
// no surrogates, nothing above U+10FFFF), or 0 when p does not start one.
inline std::size_t utf8_sequence_length(const unsigned char* p, const unsigned char* end) noexcept {
  const unsigned char c = *p;
  if (c < 0x80)
    return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0)
      lo = 0xa0;
    else if (c == 0xed)
      hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0)
      lo = 0x90;
    else if (c == 0xf4)
      hi = 0x8f;
  }
  if (len == 0 || static_cast<std::size_t>(end - p) < len || p[1] < lo || p[1] > hi)
    return 0;
  for (std::size_t i = 2; i < len; ++i)
    if (p[i] < 0x80 || p[i] > 0xbf)
      return 0;
  return len;
}

inline bool is_valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p < end) {
    if (end - p >= 8) { // ASCII runs, the common case: 8 bytes at a time
      std::uint64_t word;
      std::memcpy(&word, p, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        p += 8;
        continue;
      }
    }
    if (*p < 0x80) {
      ++p;
      continue;
    }
    const std::size_t len = utf8_sequence_length(p, end);
    if (len == 0)
      return false;
    p += len;
  }
  return true;
}

// s with each byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD.
inline std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p < end) {
    const std::size_t len = utf8_sequence_length(p, end);
    if (len == 0) {
      out += "\xef\xbf\xbd";
      ++p;
    } else {
      out.append(reinterpret_cast<const char*>(p), len);
      p += len;
    }
  }
  return out;
}

// Without leading and trailing OWS (spaces and tabs, RFC 9110).
inline std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// RFC 3986 percent-decoding ("%2C" -> ","; either case of hex digit); nullopt when a '%' is not
// followed by two hex digits.
inline std::optional<std::string> percent_decode(std::string_view s) {
  std::string r;
  r.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      r.push_back(s[i]);
      continue;
    }
    const int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      return std::nullopt;
    r.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return r;
}

// Percent-encodes every byte for which keep(byte) is false (uppercase hex digits, RFC 3986).
template <class Keep>
std::string percent_encode(std::string_view s, Keep keep) {
  static constexpr char upper[] = "0123456789ABCDEF";
  std::string r;
  r.reserve(s.size());
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (keep(b)) {
      r.push_back(c);
    } else {
      r.push_back('%');
      r.push_back(upper[b >> 4]);
      r.push_back(upper[b & 15]);
    }
  }
  return r;
}
} // namespace otlpconc::telemetry::detail
