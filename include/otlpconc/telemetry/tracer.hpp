// otlpconc/telemetry/tracer.hpp: the recording API: tracer, span, and the calling thread's current
// span.
//
// What: tracer::start_span(name, attributes, options) returns a span: set_attribute, add_event,
//   record_exception, add_link, set_status, update_name, end() (or its destructor) hands the
//   finished record to the tracer's batch_span_processor. The parent is options.parent if given, else the calling
//   thread's current span (span::make_current), else none (a new trace). Ids come from a per-thread generator
//   (detail/telemetry_random.hpp); the sampler decides at the start whether the span is recorded.
// When to use: instrumenting code; propagate span::context() across processes with
//   format_traceparent / parse_traceparent (trace_context.hpp).
// When not to: a span is owned by one thread at a time (it is movable, not thread-safe).
// Guarantees:
//   - Recording never throws and never blocks on the exporter (except overflow_policy::block, which
//     waits for room in end()). Out of memory or a refused placement make the span non-recording
//     and count it dropped; an attribute that cannot be stored is counted in the span's dropped
//     attributes.
//   - A span that is not sampled has a valid context (it propagates, unsampled) but records
//     nothing: its calls cost a branch. Spans started or ended after the processor's shutdown are
//     counted as accepted and dropped and record nothing.
//   - end() is idempotent; the first call (or the destructor) hands the span over exactly once.
//   - Limits (tracer_options::limits, OpenTelemetry's span limits, 128 of each by default): further
//     attribute keys, events, links, and attributes of an event or a link are counted as dropped
//     (OTLP carries the counts); string values longer than the value-length limit are cut.
//   - record_exception adds the event "exception" with exception.type (the dynamic type's name,
//     demangled), exception.message (what()) and, when given, exception.stacktrace (the semantic
//     conventions' names). C++20 has no portable stack trace: pass one you captured (for example
//     std::to_string(std::stacktrace::current()) in C++23), none is made up.
//   - Links: a link added after the start is not seen by the sampler (it decided at the start).
// Requirements: the processor outlives the tracer and every span; current_span_scope objects are
//   destroyed in the reverse order of their creation on their thread (they are stack objects).
#pragma once

#include "otlpconc/telemetry/batch_span_processor.hpp"
#include "otlpconc/telemetry/detail/id_random.hpp"
#include "otlpconc/telemetry/detail/wall_clock.hpp"
#include "otlpconc/telemetry/sampler.hpp"
#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/telemetry/trace_context.hpp"

#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>
#if __has_include(<cxxabi.h>)
#include <cstdlib>
#include <cxxabi.h>
#endif

namespace otlpconc::telemetry::detail {
inline constinit thread_local const telemetry::span_context* current_span_context = nullptr;
} // namespace otlpconc::telemetry::detail

namespace otlpconc::telemetry {

// The calling thread's current span context (the innermost live current_span_scope), or nullptr.
inline const span_context* current_span_context() noexcept {
  return detail::current_span_context;
}

// Makes a span context the calling thread's current one for the scope's lifetime.
class [[nodiscard]] current_span_scope {
 public:
  explicit current_span_scope(const span_context& ctx) noexcept : previous_(detail::current_span_context) {
    context_.trace_id = ctx.trace_id;
    context_.span_id = ctx.span_id;
    context_.trace_flags = ctx.trace_flags;
    context_.remote = ctx.remote;
    try {
      context_.trace_state = ctx.trace_state;
    } catch (...) { // out of memory: children do not inherit the trace state
    }
    detail::current_span_context = &context_;
  }
  ~current_span_scope() { detail::current_span_context = previous_; }
  current_span_scope(const current_span_scope&) = delete;
  current_span_scope& operator=(const current_span_scope&) = delete;

 private:
  span_context context_;
  const span_context* previous_;
};

// Nanoseconds since the Unix epoch (the OTLP time base): CLOCK_REALTIME, read from the time-stamp
// counter where the kernel keeps time with it (detail/wall_clock.hpp).
inline std::uint64_t unix_nano_now() noexcept {
  return detail::wall_clock::now();
}

struct tracer_options {
  // The SDKs' default (sampler.hpp): a span follows its parent's decision; root spans are sampled.
  std::shared_ptr<const sampler> span_sampler = parent_based(always_on()); // null: std::invalid_argument
  span_limits limits = span_limits();                                      // OpenTelemetry's defaults
  // The no-op tracer of a disabled SDK: every span is non-recording and carries its parent's
  // context (an invalid one for a root); nothing reaches the processor.
  bool disabled = false;

  // base, with the sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG name when the first is
  // set (sampler_from_env: an unknown value is reported and base's sampler kept), the span limits
  // of the OTEL_*_LIMIT variables (span_limits::from_env), and disabled when OTEL_SDK_DISABLED is
  // "true" (case-insensitive; "false" or unset: base's; another value is reported and base's
  // kept).
  static tracer_options from_env(tracer_options base);
  static tracer_options from_env();
};

inline tracer_options tracer_options::from_env(tracer_options base) {
  base.span_sampler = sampler_from_env(std::move(base.span_sampler));
  base.limits = span_limits::from_env(base.limits);
  if (auto v = detail::env_enum("OTEL_SDK_DISABLED", {"true", "false"}))
    base.disabled = *v == "true";
  return base;
}
inline tracer_options tracer_options::from_env() {
  return from_env(tracer_options());
}

struct span_start_options {
  const span_context* parent = nullptr; // explicit parent (local or parsed); nullptr: see `root`
  bool root = false;                    // true: a new trace even if the thread has a current span
  span_kind kind = span_kind::internal;
  std::uint64_t start_time_unix_nano = 0; // 0: now
};

class tracer;

class span {
 public:
  span() noexcept = default; // an invalid, non-recording span
  span(span&& other) noexcept
      : data_(std::move(other.data_)), core_(other.core_), limits_(other.limits_), sampled_(other.sampled_),
        context_(std::move(other.context_)) {}
  span& operator=(span&& other) noexcept {
    if (this != &other) {
      end();
      data_ = std::move(other.data_);
      core_ = other.core_;
      limits_ = other.limits_;
      sampled_ = other.sampled_;
      context_ = std::move(other.context_);
    }
    return *this;
  }
  ~span() { end(); }

  bool is_recording() const noexcept { return data_ != nullptr; }
  const span_context& context() const noexcept { return context_; }

  span& set_attribute(std::string_view key, attribute_value value) noexcept {
    if (data_) {
      try {
        data_->set_attribute(key, value, limits_.attribute_count, limits_.attribute_value_length,
                             limits_.attribute_value_depth);
      } catch (...) { // out of memory (or a 4 GiB span): counted, the span stays usable
        data_->count_dropped_attribute();
      }
    }
    return *this;
  }
  // An event at time_unix_nano (0: now). Beyond the event limit it is counted as dropped.
  span& add_event(std::string_view name, std::initializer_list<attribute> attributes = {},
                  std::uint64_t time_unix_nano = 0) noexcept {
    return add_event(name, std::span<const attribute>(attributes.begin(), attributes.size()), time_unix_nano);
  }
  span& add_event(std::string_view name, std::span<const attribute> attributes,
                  std::uint64_t time_unix_nano = 0) noexcept {
    if (data_) {
      try {
        data_->add_event(name, time_unix_nano != 0 ? time_unix_nano : unix_nano_now(), attributes, limits_);
      } catch (...) { // out of memory: counted
        data_->count_dropped_event();
      }
    }
    return *this;
  }
  // The event "exception" for e (see the header's guarantees), with the given extra attributes.
  span& record_exception(const std::exception& e, std::initializer_list<attribute> attributes = {}) noexcept {
    if (data_) {
      std::string type;
      try {
        type = type_name(typeid(e));
      } catch (...) { // out of memory: the mangled name
      }
      record_exception(type.empty() ? std::string_view(typeid(e).name()) : std::string_view(type), e.what(), {},
                       attributes);
    }
    return *this;
  }
  // The same for an exception in flight (std::current_exception() in a catch block); one that is
  // not a std::exception has the type "unknown" and no message.
  span& record_exception(const std::exception_ptr& e, std::initializer_list<attribute> attributes = {}) noexcept {
    if (data_ && e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        record_exception(x, attributes);
      } catch (...) {
        record_exception("unknown", {}, {}, attributes);
      }
    }
    return *this;
  }
  // The event "exception" from its parts (a stack trace you captured, say).
  span& record_exception(std::string_view type, std::string_view message, std::string_view stacktrace = {},
                         std::initializer_list<attribute> attributes = {}) noexcept {
    if (!data_)
      return *this;
    try {
      std::vector<attribute> all;
      all.reserve(3 + attributes.size());
      all.push_back({"exception.type", type});
      if (!message.empty())
        all.push_back({"exception.message", message});
      if (!stacktrace.empty())
        all.push_back({"exception.stacktrace", stacktrace});
      all.insert(all.end(), attributes.begin(), attributes.end());
      data_->add_event("exception", unix_nano_now(), all, limits_);
    } catch (...) {
      data_->count_dropped_event();
    }
    return *this;
  }
  // A link to another span. An invalid context with neither a trace state nor attributes is
  // ignored (the specification's rule); beyond the link limit it is counted as dropped.
  span& add_link(const span_context& linked, std::initializer_list<attribute> attributes = {}) noexcept {
    if (data_ && (linked.valid() || !linked.trace_state.empty() || attributes.size() != 0)) {
      try {
        data_->add_link(linked, std::span<const attribute>(attributes.begin(), attributes.size()), limits_);
      } catch (...) {
        data_->count_dropped_link();
      }
    }
    return *this;
  }
  // OpenTelemetry semantics: the message is kept only with error; ok is final.
  span& set_status(status_code code, std::string_view message = {}) noexcept {
    if (data_) {
      try {
        data_->set_status(code, message);
      } catch (...) {
        data_->set_status(code); // the message did not fit in memory
      }
    }
    return *this;
  }
  span& update_name(std::string_view name) noexcept {
    if (data_) {
      try {
        data_->set_name(name);
      } catch (...) { // keeps the old name
      }
    }
    return *this;
  }
  // The recorded data so far (nullptr if not recording); for inspection in tests.
  const span_data* data() const noexcept { return data_.get(); }

  // Ends the span (end time now, or end_time_unix_nano) and hands it to the processor. Later calls
  // do nothing.
  void end(std::uint64_t end_time_unix_nano = 0) noexcept {
    if (!data_)
      return;
    // Not before the start: a span ended on another thread than it started on may see a clock a
    // few microseconds behind.
    const std::uint64_t end = end_time_unix_nano != 0 ? end_time_unix_nano : unix_nano_now();
    data_->set_end_time(end_time_unix_nano == 0 && end < data_->start_time_unix_nano() ? data_->start_time_unix_nano()
                                                                                       : end);
    if (sampled_)
      core_->on_end(std::move(data_));
    else
      data_.reset();
  }

  // Makes this span the calling thread's current span until the returned scope is destroyed.
  current_span_scope make_current() const noexcept { return current_span_scope(context_); }

 private:
  friend class tracer;

  static std::string type_name(const std::type_info& t) {
#if __has_include(<cxxabi.h>) // demangled where the ABI library offers it
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                                     &std::free);
    if (status == 0 && name)
      return name.get();
#endif
    return t.name();
  }

  pooled_ptr<span_data> data_;
  detail::bsp_core* core_ = nullptr;
  span_limits limits_;
  bool sampled_ = false;
  span_context context_;
};

class tracer {
 public:
  explicit tracer(batch_span_processor& processor, tracer_options options = {})
      : core_(&processor.core()), sampler_(std::move(options.span_sampler)), limits_(options.limits),
        disabled_(options.disabled) {
    if (!sampler_)
      throw std::invalid_argument("tracer_options: span_sampler must not be null");
  }

  span start_span(std::string_view name, std::initializer_list<attribute> attributes = {},
                  const span_start_options& options = {}) noexcept {
    const span_context* parent = options.parent;
    if (parent == nullptr && !options.root)
      parent = current_span_context();
    if (parent != nullptr && !parent->valid())
      parent = nullptr;

    span s;
    if (disabled_) [[unlikely]] { // the no-op tracer: the parent's context, nothing recorded
      if (parent != nullptr) {
        try {
          s.context_ = *parent;
        } catch (...) { // out of memory copying the trace state: the ids alone
          s.context_ = span_context{parent->trace_id, parent->span_id, parent->trace_flags, parent->remote, {}};
        }
      }
      return s;
    }
    s.core_ = core_;
    s.limits_ = limits_;
    detail::id_random& random = detail::id_random::local();
    if (parent != nullptr) {
      s.context_.trace_id = parent->trace_id;
      try {
        s.context_.trace_state = parent->trace_state;
      } catch (...) { // out of memory: the trace state is not propagated
      }
    } else {
      std::uint64_t high, low;
      do {
        high = random.next();
        low = random.next();
      } while ((high | low) == 0); // all zero is the invalid id
      store_u64(s.context_.trace_id.bytes.data(), high);
      store_u64(s.context_.trace_id.bytes.data() + 8, low);
    }
    std::uint64_t id;
    do
      id = random.next();
    while (id == 0);
    store_u64(s.context_.span_id.bytes.data(), id);

    // W3C Level 2: a trace started here has a random trace id (the random flag is set); a continued
    // trace keeps the parent's random flag as it is.
    const std::uint8_t random_flag = parent != nullptr ? parent->trace_flags & trace_flag_random : trace_flag_random;
    s.context_.trace_flags = random_flag;
    const sampling_decision decision = sampler_->should_sample(parent, s.context_.trace_id, name, options.kind);
    if (decision == sampling_decision::drop)
      return s;
    s.sampled_ = decision == sampling_decision::record_and_sample;
    if (s.sampled_)
      s.context_.trace_flags = random_flag | trace_flag_sampled;
    if (core_->closed()) {
      if (s.sampled_)
        core_->count_refused();
      s.sampled_ = false;
      return s;
    }
    try {
      s.data_ = core_->acquire_span();
      span_data& d = *s.data_;
      d.set_ids(s.context_.trace_id, s.context_.span_id, parent ? parent->span_id : telemetry::span_id{},
                s.context_.trace_flags, parent != nullptr && parent->remote);
      if (!s.context_.trace_state.empty())
        d.set_trace_state(s.context_.trace_state);
      d.set_name(name);
      d.set_kind(options.kind);
      d.set_start_time(options.start_time_unix_nano != 0 ? options.start_time_unix_nano : unix_nano_now());
    } catch (...) { // out of memory or a refused NUMA placement: not recorded, counted
      s.data_.reset();
      if (s.sampled_)
        core_->count_refused();
      s.sampled_ = false;
      return s;
    }
    for (const attribute& a : attributes)
      s.set_attribute(a.key, a.value);
    return s;
  }

  span start_span(std::string_view name, const span_start_options& options) noexcept {
    return start_span(name, {}, options);
  }

  const sampler& span_sampler() const noexcept { return *sampler_; }

 private:
  // Big-endian, as ids are written (one byte swap and one store on little-endian machines).
  static void store_u64(std::uint8_t* out, std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little)
      v = byteswap(v);
    std::memcpy(out, &v, sizeof v);
  }
  static constexpr std::uint64_t byteswap(std::uint64_t v) noexcept {
    v = (v & 0x00ff00ff00ff00ffull) << 8 | (v >> 8 & 0x00ff00ff00ff00ffull);
    v = (v & 0x0000ffff0000ffffull) << 16 | (v >> 16 & 0x0000ffff0000ffffull);
    return v << 32 | v >> 32; // compilers emit one bswap for this
  }

  detail::bsp_core* core_;
  std::shared_ptr<const sampler> sampler_;
  span_limits limits_;
  bool disabled_ = false;
};

} // namespace otlpconc::telemetry
