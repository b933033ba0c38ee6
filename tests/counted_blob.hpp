// tests/counted_blob.hpp: a value type for measuring what a cache keeps alive (shared by the unit
// and stress tests of sharded_lru).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace otlpconc::testing {

// A value of `size` bytes whose originals are counted (live bytes and their peak), so a test can
// measure what the cache keeps alive. Copies (what get returns) are not counted: they belong to the
// caller, not to the cache.
struct blob {
  static inline std::atomic<std::int64_t> live{0}, peak{0};
  std::size_t size = 0;
  bool counted = false;
  std::unique_ptr<char[]> bytes;

  explicit blob(std::size_t n) : size(n), counted(true), bytes(new char[n]) { // not zeroed: never read
    const std::int64_t now = live.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n);
    std::int64_t p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
  }
  blob(const blob& o) : size(o.size), bytes(new char[o.size]) {}
  blob(blob&& o) noexcept
      : size(std::exchange(o.size, 0)), counted(std::exchange(o.counted, false)), bytes(std::move(o.bytes)) {}
  blob& operator=(const blob&) = delete;
  ~blob() {
    if (counted)
      live.fetch_sub(static_cast<std::int64_t>(size));
  }
  static void reset_peak() { peak.store(live.load()); }
};

} // namespace otlpconc::testing
