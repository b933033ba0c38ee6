// otlpconc/telemetry/detail/env.hpp: reading OpenTelemetry's environment variables (OTEL_*) with
// the specification's rules, shared by the options' from_env() functions:
//   - unset or empty means "keep the value" (the default, or the caller's base);
//   - a number that cannot be parsed or is out of range is reported to the warning sink
//     (diagnostics.hpp) and ignored (the specification: SHOULD, MUST for new implementations);
//   - a timeout of 0 means no limit (returned as milliseconds::max(), which the pipeline treats as
//     "no deadline");
//   - enumerations are matched case-insensitively; an unknown value is reported and ignored (MUST).
// The warning names the variable and shows the value as given (the specification: SHOULD).
#pragma once

#include "otlpconc/telemetry/diagnostics.hpp"

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace otlpconc::telemetry::detail {

// The variable's value, or nullopt when it is unset or empty.
inline std::optional<std::string> env_text(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0')
    return std::nullopt;
  return std::string(text);
}

// The signal-specific variable when it is set (not empty), else the general one.
inline const char* env_pick(const char* specific, const char* general) {
  return env_text(specific) ? specific : general;
}

inline void env_ignored(const char* name, std::string_view value, std::string_view why) {
  warn(std::string(name) + "='" + std::string(value) + "' " + std::string(why) + ": ignored");
}

// A decimal integer in [min, max]; nullopt when unset or empty, or (with a warning) when it is not
// a non-negative decimal integer or is out of range.
inline std::optional<std::uint64_t> env_uint(const char* name, std::uint64_t min, std::uint64_t max) {
  const std::optional<std::string> text = env_text(name);
  if (!text)
    return std::nullopt;
  std::uint64_t v = 0;
  const std::string_view s(*text);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc() && end == s.data() + s.size() && v >= min && v <= max)
    return v;
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && end == s.data() + s.size()))
    env_ignored(name, s, "is out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
  else
    env_ignored(name, s, "is not a non-negative decimal integer");
  return std::nullopt;
}

// A Duration or Timeout in milliseconds (the specification's types). With zero_is_unlimited (a
// Timeout), 0 is "no limit": milliseconds::max(). Otherwise the value must be in [min_ms, max_ms].
inline std::optional<std::chrono::milliseconds> env_millis(const char* name, std::uint64_t min_ms, std::uint64_t max_ms,
                                                           bool zero_is_unlimited) {
  const std::optional<std::string> text = env_text(name);
  if (zero_is_unlimited && text && *text == "0")
    return std::chrono::milliseconds::max();
  const std::optional<std::uint64_t> v = env_uint(name, min_ms, max_ms);
  if (!v)
    return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(*v));
}

inline bool equals_ignoring_case(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i]))
      return false;
  }
  return true;
}

// An enumeration: the matching entry of `known` (as spelled there), compared case-insensitively;
// nullopt when unset or empty, or (with a warning listing the known values) when unknown.
inline std::optional<std::string_view> env_enum(const char* name, std::initializer_list<std::string_view> known) {
  const std::optional<std::string> text = env_text(name);
  if (!text)
    return std::nullopt;
  std::string list;
  for (std::string_view k : known) {
    if (equals_ignoring_case(*text, k))
      return k;
    list += list.empty() ? "" : ", ";
    list += k;
  }
  env_ignored(name, *text, "is not one of " + list);
  return std::nullopt;
}

} // namespace otlpconc::telemetry::detail
