// Shared by the telemetry benchmarks: an exporter that only counts what it receives, and the choice
// of the spans a benchmark times (timing_sampler).
#pragma once

#include "otlpconc/telemetry/exporter.hpp"

#include <atomic>
#include <cstdint>

namespace otlpconc::bench {

struct counting_exporter final : telemetry::span_exporter {
  std::atomic<std::int64_t> spans{0};
  telemetry::export_result export_spans(const telemetry::span_batch_view& batch, clock::time_point) override {
    spans.fetch_add(static_cast<std::int64_t>(batch.spans.size()),
                    std::memory_order_relaxed); // a count, read after shutdown's join
    return {};
  }
};

// Which spans a benchmark times: one in `mean` on average, at random gaps (1 to 2 * mean - 1). A
// fixed stride of 16 timed the same phase of every 16-span cycle of the processor (a thread's
// reservation of 16 admissions), so the p99 of the timed spans was the p99 of that one phase.
class timing_sampler {
 public:
  timing_sampler(std::uint64_t seed, std::int64_t mean) : state_(seed | 1), mean_(mean) { next_ = gap(); }
  // Whether span i (0, 1, 2, ... in order) is timed.
  bool timed(std::int64_t i) noexcept {
    if (i != next_)
      return false;
    next_ += gap();
    return true;
  }

 private:
  std::int64_t gap() noexcept {
    state_ ^= state_ << 13; // xorshift64
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return 1 + static_cast<std::int64_t>(state_ % static_cast<std::uint64_t>(2 * mean_ - 1));
  }
  std::uint64_t state_;
  std::int64_t mean_;
  std::int64_t next_ = 0;
};

} // namespace otlpconc::bench
