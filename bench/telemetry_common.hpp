// Shared by the telemetry benchmarks: an exporter that only counts what it receives.
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

} // namespace otlpconc::bench
