// otlpconc/telemetry/detail/env.hpp: reading OpenTelemetry's environment variables (OTEL_*), with the rules the
// options' from_env() functions share: unset or empty means "keep the default"; a malformed value
// throws std::invalid_argument naming the variable.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
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

// A non-negative decimal integer no larger than `max`, or nullopt when unset or empty.
inline std::optional<std::uint64_t> env_uint(const char* name, std::uint64_t max) {
  const std::optional<std::string> text = env_text(name);
  if (!text)
    return std::nullopt;
  std::uint64_t v = 0;
  const std::string_view s(*text);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && end == s.data() + s.size() && v > max))
    throw std::invalid_argument(std::string(name) + ": out of range (at most " + std::to_string(max) + "): '" + *text +
                                "'");
  if (ec != std::errc() || end != s.data() + s.size())
    throw std::invalid_argument(std::string(name) + ": expected a non-negative integer, got '" + *text + "'");
  return v;
}

} // namespace otlpconc::telemetry::detail
