// otlpconc/telemetry/sampler.hpp: head samplers deciding, when a span starts, whether it is recorded
// and exported.
//
// What: always_on, always_off and trace_id_ratio (OpenTelemetry's TraceIdRatioBased), behind the
//   sampler interface a custom sampler implements.
// When to use: pass one to tracer_options; trace_id_ratio(r) keeps about r of the traces, and all of
//   the spans of a kept trace in every process that uses the same rule (the decision depends only on
//   the trace id).
// Guarantees: should_sample is called on the recording thread for every span and must be thread-safe
//   and cheap; the samplers here are stateless after construction (a compare, no lock).
//   trace_id_ratio follows the current OpenTelemetry rule, consistent with W3C Trace Context Level 2
//   randomness: R is the trace id's least significant 56 bits, the rejection threshold is
//   T = round((1 - ratio) * 2^56), and the span is sampled when R >= T. It ignores the parent's
//   sampled flag (as the specification requires); a ratio r sample is a subset of any ratio >= r
//   sample. It does not write the threshold into tracestate ("ot=th:"), which the specification
//   leaves optional.
#pragma once

#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/telemetry/trace_context.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace otlpconc::telemetry {

enum class sampling_decision : std::uint8_t {
  drop,             // not recorded, not exported; the context still propagates (unsampled)
  record_only,      // recorded (attributes can be set and read) but not exported
  record_and_sample // recorded, exported, and the sampled flag propagates
};

class sampler {
 public:
  virtual ~sampler() = default;
  // parent: the parent span's context, nullptr for a root span. trace: the span's trace id (the
  // parent's, or a fresh one for a root).
  virtual sampling_decision should_sample(const span_context* parent, const trace_id& trace, std::string_view name,
                                          span_kind kind) const noexcept = 0;
  virtual std::string description() const = 0;
};

class always_on_sampler final : public sampler {
 public:
  sampling_decision should_sample(const span_context*, const trace_id&, std::string_view,
                                  span_kind) const noexcept override {
    return sampling_decision::record_and_sample;
  }
  std::string description() const override { return "AlwaysOnSampler"; }
};

class always_off_sampler final : public sampler {
 public:
  sampling_decision should_sample(const span_context*, const trace_id&, std::string_view,
                                  span_kind) const noexcept override {
    return sampling_decision::drop;
  }
  std::string description() const override { return "AlwaysOffSampler"; }
};

class trace_id_ratio_sampler final : public sampler {
 public:
  static constexpr std::uint64_t randomness_bits = 56;
  static constexpr std::uint64_t max_threshold = std::uint64_t{1} << randomness_bits; // ratio 0: never

  // std::invalid_argument unless 0 <= ratio <= 1.
  explicit trace_id_ratio_sampler(double ratio) : ratio_(ratio), threshold_(threshold_of(ratio)) {}

  sampling_decision should_sample(const span_context*, const trace_id& trace, std::string_view,
                                  span_kind) const noexcept override {
    return randomness(trace) >= threshold_ ? sampling_decision::record_and_sample : sampling_decision::drop;
  }
  std::string description() const override {
    char text[64];
    std::snprintf(text, sizeof text, "TraceIdRatioBased{%f}", ratio_);
    return text;
  }

  double ratio() const noexcept { return ratio_; }
  std::uint64_t threshold() const noexcept { return threshold_; }
  // The 56 bits of the trace id the decision reads (bytes 9 to 15, big-endian).
  static std::uint64_t randomness(const trace_id& trace) noexcept { return trace.tail_u64(9); }

 private:
  static std::uint64_t threshold_of(double ratio) {
    if (!(ratio >= 0.0 && ratio <= 1.0)) // also rejects NaN
      throw std::invalid_argument("trace_id_ratio_sampler: ratio must be between 0 and 1, got " +
                                  std::to_string(ratio));
    return static_cast<std::uint64_t>(std::llround((1.0 - ratio) * static_cast<double>(max_threshold)));
  }

  double ratio_;
  std::uint64_t threshold_;
};

inline std::shared_ptr<const sampler> always_on() {
  return std::make_shared<always_on_sampler>();
}
inline std::shared_ptr<const sampler> always_off() {
  return std::make_shared<always_off_sampler>();
}
inline std::shared_ptr<const sampler> trace_id_ratio(double ratio) {
  return std::make_shared<trace_id_ratio_sampler>(ratio);
}

} // namespace otlpconc::telemetry
