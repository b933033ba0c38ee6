// otlpconc/telemetry/diagnostics.hpp: where the telemetry layer's warnings go.
//
// What: a process-wide warning sink. The telemetry headers report through it what they cannot act
//   on and must not throw for: an OTEL_* environment variable that is malformed, out of range or
//   names an unknown or unsupported value (it is ignored), a receiver's partial-success warning.
//   By default each warning is one line on standard error, "otlpconc: <message>".
// When to use: set_warning_handler once at start-up to route the warnings into the application's
//   own logging (or to collect them in tests); nullptr restores the default.
// Guarantees: set_warning_handler and warn are thread-safe. warn never throws: an exception from
//   the handler is swallowed. The handler runs on the thread that warns, outside any lock of this
//   header, so it may call set_warning_handler or warn itself. Warnings are rare by design (the
//   configuration is read once; a receiver's warning is reported when its text changes), so no
//   rate limit is applied here.
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace otlpconc::telemetry {

using warning_handler = std::function<void(std::string_view message)>;

namespace detail {
struct warning_sink {
  std::mutex mutex;
  std::shared_ptr<const warning_handler> handler; // null: standard error
};
inline warning_sink& warnings() {
  static warning_sink sink;
  return sink;
}
} // namespace detail

// Replaces the warning handler; nullptr (or an empty function) restores the default (standard
// error). Returns the previous handler (empty for the default).
inline warning_handler set_warning_handler(warning_handler handler) {
  auto next = handler ? std::make_shared<const warning_handler>(std::move(handler)) : nullptr;
  detail::warning_sink& sink = detail::warnings();
  std::lock_guard lock(sink.mutex);
  std::shared_ptr<const warning_handler> previous = std::exchange(sink.handler, std::move(next));
  return previous ? *previous : warning_handler();
}

// Reports one warning to the current handler.
inline void warn(std::string_view message) noexcept {
  std::shared_ptr<const warning_handler> handler;
  try {
    detail::warning_sink& sink = detail::warnings();
    std::lock_guard lock(sink.mutex);
    handler = sink.handler;
  } catch (...) { // the mutex could not be locked: fall back to standard error
  }
  if (handler) {
    try {
      (*handler)(message);
    } catch (...) {
    }
    return;
  }
  std::fprintf(stderr, "otlpconc: %.*s\n", static_cast<int>(message.size()), message.data());
}

} // namespace otlpconc::telemetry
