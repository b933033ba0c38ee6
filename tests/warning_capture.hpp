// Test helper: collects the telemetry layer's warnings (diagnostics.hpp) for the lifetime of the
// object, then restores the previous handler.
#pragma once

#include "otlpconc/telemetry/diagnostics.hpp"

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otlpconc_test {

class warning_capture {
 public:
  warning_capture()
      : state_(std::make_shared<state>()),
        previous_(otlpconc::telemetry::set_warning_handler([s = state_](std::string_view m) {
          std::lock_guard lock(s->mutex);
          s->messages.emplace_back(m);
        })) {}
  ~warning_capture() { otlpconc::telemetry::set_warning_handler(previous_); }
  warning_capture(const warning_capture&) = delete;
  warning_capture& operator=(const warning_capture&) = delete;

  std::vector<std::string> messages() const {
    std::lock_guard lock(state_->mutex);
    return state_->messages;
  }
  // The warnings so far, then forgets them.
  std::vector<std::string> take() {
    std::lock_guard lock(state_->mutex);
    return std::exchange(state_->messages, {});
  }
  // Whether one warning contains every part.
  bool any(const std::vector<std::string_view>& parts) const {
    for (const std::string& m : messages()) {
      bool all = true;
      for (std::string_view p : parts)
        all = all && m.find(p) != std::string::npos;
      if (all)
        return true;
    }
    return false;
  }

 private:
  struct state {
    std::mutex mutex;
    std::vector<std::string> messages;
  };
  std::shared_ptr<state> state_;
  otlpconc::telemetry::warning_handler previous_;
};

} // namespace otlpconc_test
