// otlpconc/telemetry/version.hpp: the version the telemetry layer reports about itself: the
// resource's telemetry.sdk.version and the OTLP/HTTP exporter's User-Agent.
//
// It is the project's version (CMakeLists.txt's project(VERSION); the configure step fails if the
// two differ).
#pragma once

#include <string_view>

namespace otlpconc::telemetry {

inline constexpr std::string_view sdk_name = "otlpconc";
inline constexpr std::string_view sdk_version = "0.1.0";

} // namespace otlpconc::telemetry
