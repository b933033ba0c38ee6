// A watchdog for tests whose failure mode is a hang (a deadlock, a lost wake-up): if the scope is
// not left within the limit, it prints what hung and aborts the process, so the failure is reported
// at once, named, instead of as a CI timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace otlpconc::testing {

class watchdog {
 public:
  watchdog(std::chrono::seconds limit, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, limit] {
      const auto deadline = std::chrono::steady_clock::now() + limit;
      while (!done_.load(std::memory_order_acquire)) {
        if (std::chrono::steady_clock::now() >= deadline) {
          std::fprintf(stderr, "FAILED: %s did not finish within %lld s (a hang: deadlock or lost wake-up)\n",
                       what_.c_str(), static_cast<long long>(limit.count()));
          std::fflush(stderr);
          std::abort();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() {
    done_.store(true, std::memory_order_release);
    thread_.join();
  }

 private:
  std::string what_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

} // namespace otlpconc::testing
