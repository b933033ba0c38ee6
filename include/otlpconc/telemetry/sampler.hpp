// otlpconc/telemetry/sampler.hpp: head samplers deciding, when a span starts, whether it is recorded
// and exported.
//
// What: always_on, always_off, trace_id_ratio (OpenTelemetry's TraceIdRatioBased) and parent_based
//   (ParentBased: the parent's sampled flag decides, a root sampler decides for root spans), behind
//   the sampler interface a custom sampler implements; sampler_from_env() builds the one that
//   OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name.
// When to use: pass one to tracer_options. The default, as in the OpenTelemetry SDKs, is
//   parent_based(always_on()): a span follows its parent's decision (a trace sampled upstream stays
//   whole), and every root span is sampled. parent_based(trace_id_ratio(r)) keeps about r of the
//   traces started here and every trace an upstream service sampled. A bare trace_id_ratio(r)
//   ignores the parent's decision: it keeps all of the spans of a kept trace in every process that
//   uses the same rule (the decision depends only on the trace id), but drops the spans of a trace
//   an upstream service with another rule sampled.
// Guarantees: should_sample is called on the recording thread for every span and must be thread-safe
//   and cheap; the samplers here are stateless after construction (a compare, no lock).
//   trace_id_ratio follows the current OpenTelemetry rule, consistent with W3C Trace Context Level 2
//   randomness: R is the trace id's least significant 56 bits, the rejection threshold is
//   T = round((1 - ratio) * 2^56), and the span is sampled when R >= T. It ignores the parent's
//   sampled flag (as the specification requires); a ratio r sample is a subset of any ratio >= r
//   sample. It does not write the threshold into tracestate ("ot=th:"), which the specification
//   leaves optional.
#pragma once

#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/telemetry/trace_context.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
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

// OpenTelemetry's ParentBased sampler: a root span (no parent, or an invalid parent context) is
// decided by `root`; a span with a parent by one of four delegates, chosen by whether the parent
// is remote (parsed from another process) and whether it was sampled. The defaults follow the
// parent's decision.
struct parent_based_options {
  std::shared_ptr<const sampler> remote_parent_sampled = always_on();
  std::shared_ptr<const sampler> remote_parent_not_sampled = always_off();
  std::shared_ptr<const sampler> local_parent_sampled = always_on();
  std::shared_ptr<const sampler> local_parent_not_sampled = always_off();
};

class parent_based_sampler final : public sampler {
 public:
  // std::invalid_argument if root or a delegate is null.
  explicit parent_based_sampler(std::shared_ptr<const sampler> root, parent_based_options delegates = {})
      : root_(checked(std::move(root), "root")),
        remote_sampled_(checked(std::move(delegates.remote_parent_sampled), "remote_parent_sampled")),
        remote_not_sampled_(checked(std::move(delegates.remote_parent_not_sampled), "remote_parent_not_sampled")),
        local_sampled_(checked(std::move(delegates.local_parent_sampled), "local_parent_sampled")),
        local_not_sampled_(checked(std::move(delegates.local_parent_not_sampled), "local_parent_not_sampled")) {}

  sampling_decision should_sample(const span_context* parent, const trace_id& trace, std::string_view name,
                                  span_kind kind) const noexcept override {
    return delegate_for(parent).should_sample(parent, trace, name, kind);
  }
  // The delegate that decides for a span with this parent.
  const sampler& delegate_for(const span_context* parent) const noexcept {
    if (parent == nullptr || !parent->valid())
      return *root_;
    if (parent->remote)
      return parent->sampled() ? *remote_sampled_ : *remote_not_sampled_;
    return parent->sampled() ? *local_sampled_ : *local_not_sampled_;
  }
  std::string description() const override {
    return "ParentBased{root=" + root_->description() + ",remoteParentSampled=" + remote_sampled_->description() +
           ",remoteParentNotSampled=" + remote_not_sampled_->description() +
           ",localParentSampled=" + local_sampled_->description() +
           ",localParentNotSampled=" + local_not_sampled_->description() + "}";
  }

 private:
  static std::shared_ptr<const sampler> checked(std::shared_ptr<const sampler> s, const char* which) {
    if (!s)
      throw std::invalid_argument(std::string("parent_based_sampler: the ") + which + " sampler is null");
    return s;
  }
  std::shared_ptr<const sampler> root_, remote_sampled_, remote_not_sampled_, local_sampled_, local_not_sampled_;
};

inline std::shared_ptr<const sampler> parent_based(std::shared_ptr<const sampler> root,
                                                   parent_based_options delegates = {}) {
  return std::make_shared<parent_based_sampler>(std::move(root), std::move(delegates));
}

// The sampler the environment names, as the OpenTelemetry SDKs read it:
//   OTEL_TRACES_SAMPLER: always_on, always_off, traceidratio, parentbased_always_on,
//     parentbased_always_off, parentbased_traceidratio (case-insensitive). Unset or empty: the
//     fallback (by default parentbased_always_on, the specification's default). An unknown or
//     unsupported value (jaeger_remote, xray, ...) is reported to the warning sink
//     (diagnostics.hpp) and the fallback is used.
//   OTEL_TRACES_SAMPLER_ARG: the ratio of the two traceidratio samplers, a number in [0, 1]
//     (default 1.0; a value that is not one is reported and 1.0 used). Ignored by the others.
// Never throws for any environment (std::bad_alloc aside).
inline std::shared_ptr<const sampler> sampler_from_env(std::shared_ptr<const sampler> fallback = nullptr) {
  const std::optional<std::string_view> name =
      detail::env_enum("OTEL_TRACES_SAMPLER", {"always_on", "always_off", "traceidratio", "parentbased_always_on",
                                               "parentbased_always_off", "parentbased_traceidratio"});
  if (!name)
    return fallback ? std::move(fallback) : parent_based(always_on());
  const std::string_view which = *name;
  auto ratio = [] {
    double r = 1.0;
    if (const std::optional<std::string> text = detail::env_text("OTEL_TRACES_SAMPLER_ARG")) {
      double v = -1.0; // from_chars: the C locale's spelling whatever the process's locale
      const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
      if (ec == std::errc() && end == text->data() + text->size() && v >= 0.0 && v <= 1.0) // rejects NaN
        r = v;
      else
        detail::env_ignored("OTEL_TRACES_SAMPLER_ARG", *text, "is not a ratio between 0 and 1 (1.0 is used)");
    }
    return r;
  };
  if (which == "always_on")
    return always_on();
  if (which == "always_off")
    return always_off();
  if (which == "traceidratio")
    return trace_id_ratio(ratio());
  if (which == "parentbased_always_off")
    return parent_based(always_off());
  if (which == "parentbased_traceidratio")
    return parent_based(trace_id_ratio(ratio()));
  return parent_based(always_on()); // parentbased_always_on
}

} // namespace otlpconc::telemetry
