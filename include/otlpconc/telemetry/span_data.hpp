// otlpconc/telemetry/span_data.hpp: the OTLP span model: attribute values, span kinds, status,
// resources, instrumentation scopes, and span_data, the record a span writes and an exporter reads.
//
// What: span_data holds one span as OTLP describes it (trace id, span id, parent span id, trace
//   state, flags, name, kind, start and end time in Unix nanoseconds, attributes of type string,
//   bool, int64 or double, dropped attribute count, status). Its strings live in one arena and its
//   attributes in one array, both inline up to a typical span's size (about 160 bytes of text and 8
//   attributes) and on the heap beyond: recording a typical span allocates nothing, which is what
//   lets the batch span processor keep span_data in an object_pool and recycle it.
// When to use: exporters read span_data (const); tests and custom pipelines may fill one directly.
//   Applications record through tracer.hpp, not through this header.
// Guarantees: span_data is not thread-safe; the pipeline hands it from the recording thread to the
//   export thread with release/acquire ordering, so an exporter reads a finished record. Setting an
//   attribute whose key is present replaces its value (OpenTelemetry semantics); attributes beyond
//   the limit passed to set_attribute are counted in dropped_attributes_count, never silently lost.
//   Strings are stored as given (any bytes); encoders make them valid UTF-8 (see otlp_json.hpp).
// Memory: about 460 bytes inline; text beyond 160 bytes or more than 8 attributes moves to the heap.
#pragma once

#include "otlpconc/detail/config.hpp"
#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/detail/small_buffer.hpp"
#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/trace_context.hpp"
#include "otlpconc/telemetry/version.hpp"

#include <concepts>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace otlpconc::telemetry {

// OTLP Span.SpanKind values.
enum class span_kind : std::uint8_t { internal = 1, server = 2, client = 3, producer = 4, consumer = 5 };
// OTLP Status.StatusCode values.
enum class status_code : std::uint8_t { unset = 0, ok = 1, error = 2 };

enum class attribute_type : std::uint8_t { string_value, bool_value, int_value, double_value };

// A non-owning attribute value: a string (viewed, copied when recorded), bool, int64 or double.
// Integers of any type are accepted; an unsigned value above INT64_MAX (OTLP has no uint64) is
// recorded as a double, the closest OTLP type that holds it.
class attribute_value {
 public:
  attribute_value(std::string_view s) noexcept : type_(attribute_type::string_value), s_(s) {}
  attribute_value(const char* s) noexcept : attribute_value(s ? std::string_view(s) : std::string_view()) {}
  attribute_value(const std::string& s) noexcept : attribute_value(std::string_view(s)) {}
  attribute_value(bool b) noexcept : type_(attribute_type::bool_value), b_(b) {}
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  attribute_value(I v)
  noexcept {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        type_ = attribute_type::double_value;
        d_ = static_cast<double>(v);
        return;
      }
    }
    type_ = attribute_type::int_value;
    i_ = static_cast<std::int64_t>(v);
  }
  attribute_value(double d) noexcept : type_(attribute_type::double_value), d_(d) {}
  attribute_value(float f) noexcept : attribute_value(static_cast<double>(f)) {}

  attribute_type type() const noexcept { return type_; }
  // Each accessor requires the matching type().
  std::string_view string_value() const noexcept { return s_; }
  bool bool_value() const noexcept { return b_; }
  std::int64_t int_value() const noexcept { return i_; }
  double double_value() const noexcept { return d_; }

 private:
  attribute_type type_;
  union {
    std::string_view s_;
    bool b_;
    std::int64_t i_;
    double d_;
  };
};

// A key and a value, viewed.
struct attribute {
  std::string_view key;
  attribute_value value;
};

// An owned attribute (resources, scopes, copies of spans).
struct key_value {
  using value_type = std::variant<std::string, bool, std::int64_t, double>;
  std::string key;
  value_type value;

  key_value(std::string k, attribute_value v) : key(std::move(k)), value(own(v)) {}
  attribute view() const {
    return std::visit([&](const auto& v) { return attribute{key, attribute_value(v)}; }, value);
  }
  friend bool operator==(const key_value&, const key_value&) = default;

 private:
  static value_type own(attribute_value v) {
    switch (v.type()) {
    case attribute_type::string_value:
      return std::string(v.string_value());
    case attribute_type::bool_value:
      return v.bool_value();
    case attribute_type::int_value:
      return v.int_value();
    case attribute_type::double_value:
      break;
    }
    return v.double_value();
  }
};

// The entity producing telemetry (OTLP Resource).
struct resource {
  std::vector<key_value> attributes;

  // service.name plus the telemetry.sdk.* attributes the semantic conventions require of an SDK:
  // name "otlpconc" (not "opentelemetry", which is reserved for OpenTelemetry's own SDKs), language
  // "cpp", version (version.hpp).
  static resource for_service(std::string service_name = "unknown_service") {
    resource r;
    r.attributes.emplace_back("service.name", service_name);
    r.attributes.emplace_back("telemetry.sdk.name", sdk_name);
    r.attributes.emplace_back("telemetry.sdk.language", "cpp");
    r.attributes.emplace_back("telemetry.sdk.version", sdk_version);
    return r;
  }

  // The resource an OpenTelemetry SDK builds, in the specification's order of precedence (later
  // wins): the telemetry.sdk.* attributes; OTEL_RESOURCE_ATTRIBUTES ("k=v,k2=v2", values
  // percent-encoded; if any member is malformed the whole variable is discarded with a warning, as
  // the specification says); OTEL_SERVICE_NAME (service.name); then `user`, the application's own
  // attributes. Without a service.name from any of them: "unknown_service".
  static resource create(const std::vector<key_value>& user = {}) {
    resource r;
    r.set("telemetry.sdk.name", std::string(sdk_name));
    r.set("telemetry.sdk.language", std::string("cpp"));
    r.set("telemetry.sdk.version", std::string(sdk_version));
    for (auto& [k, v] : attributes_from_env())
      r.set(k, std::move(v));
    if (auto name = detail::env_text("OTEL_SERVICE_NAME"))
      r.set("service.name", std::move(*name));
    for (const key_value& kv : user)
      r.set(kv.key, kv.value);
    if (r.find("service.name") == nullptr)
      r.set("service.name", std::string("unknown_service"));
    return r;
  }

  // The attribute with this key, or nullptr.
  const key_value* find(std::string_view key) const noexcept {
    for (const key_value& kv : attributes)
      if (kv.key == key)
        return &kv;
    return nullptr;
  }

 private:
  void set(std::string_view key, key_value::value_type value) {
    for (key_value& kv : attributes)
      if (kv.key == key) {
        kv.value = std::move(value);
        return;
      }
    attributes.emplace_back(std::string(key), std::string());
    attributes.back().value = std::move(value);
  }
  // OTEL_RESOURCE_ATTRIBUTES as string attributes; empty (with a warning) when malformed.
  static std::vector<std::pair<std::string, std::string>> attributes_from_env() {
    std::vector<std::pair<std::string, std::string>> out;
    const std::optional<std::string> text = detail::env_text("OTEL_RESOURCE_ATTRIBUTES");
    if (!text)
      return out;
    std::string_view rest = *text;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      const std::string_view member = detail::trim_ows(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (member.empty())
        continue;
      const std::size_t eq = member.find('=');
      std::optional<std::string> key, value;
      if (eq != std::string_view::npos) {
        key = detail::percent_decode(detail::trim_ows(member.substr(0, eq)));
        value = detail::percent_decode(detail::trim_ows(member.substr(eq + 1)));
      }
      if (!key || key->empty() || !value) {
        detail::env_ignored("OTEL_RESOURCE_ATTRIBUTES", *text,
                            "has a member that is not key=value with valid percent escapes ('" + std::string(member) +
                                "')");
        return {};
      }
      bool replaced = false;
      for (auto& [k, v] : out)
        if (k == *key) {
          v = std::move(*value);
          replaced = true;
        }
      if (!replaced)
        out.emplace_back(std::move(*key), std::move(*value));
    }
    return out;
  }
};

// The library that recorded the spans (OTLP InstrumentationScope).
struct instrumentation_scope {
  std::string name;
  std::string version;
  std::vector<key_value> attributes;
};

class span_data {
 public:
  span_data() noexcept = default;
  span_data(const span_data&) = delete;
  span_data& operator=(const span_data&) = delete;

  // --- reading (exporters)
  const telemetry::trace_id& trace_id() const noexcept { return trace_id_; }
  const telemetry::span_id& span_id() const noexcept { return span_id_; }
  const telemetry::span_id& parent_span_id() const noexcept { return parent_span_id_; } // invalid: a root
  std::uint8_t trace_flags() const noexcept { return trace_flags_; }
  bool parent_is_remote() const noexcept { return parent_remote_; }
  std::string_view trace_state() const noexcept { return view(trace_state_); }
  std::string_view name() const noexcept { return view(name_); }
  span_kind kind() const noexcept { return kind_; }
  std::uint64_t start_time_unix_nano() const noexcept { return start_; }
  std::uint64_t end_time_unix_nano() const noexcept { return end_; }
  telemetry::status_code status_code() const noexcept { return status_; }
  std::string_view status_message() const noexcept { return view(status_message_); }
  std::uint32_t attribute_count() const noexcept { return attributes_.size(); }
  attribute attribute_at(std::uint32_t i) const noexcept {
    const slot& s = attributes_[i];
    const std::string_view key = view(s.key);
    switch (s.type) {
    case attribute_type::string_value:
      return {key, view(s.s)};
    case attribute_type::bool_value:
      return {key, s.b};
    case attribute_type::int_value:
      return {key, s.i};
    case attribute_type::double_value:
      break;
    }
    return {key, s.d};
  }
  std::uint32_t dropped_attributes_count() const noexcept { return dropped_attributes_; }
  // An attribute that could not be stored (out of memory) is counted like one beyond the limit.
  void count_dropped_attribute() noexcept {
    if (dropped_attributes_ != std::numeric_limits<std::uint32_t>::max())
      ++dropped_attributes_;
  }

  // Back to the state of a new record (frees heap storage). The pipeline reuses records this way.
  void reset() noexcept {
    trace_id_ = {};
    span_id_ = {};
    parent_span_id_ = {};
    trace_flags_ = 0;
    parent_remote_ = false;
    kind_ = span_kind::internal;
    status_ = status_code::unset;
    dropped_attributes_ = 0;
    start_ = end_ = 0;
    name_ = status_message_ = trace_state_ = text_ref{0, 0};
    attributes_.reset();
    text_.reset();
  }

  // --- writing (the recording span; tests). Strings are copied. Writers that store text throw
  // std::bad_alloc (or std::length_error past 4 GiB) and leave the record as it was.
  void set_ids(const telemetry::trace_id& trace, const telemetry::span_id& id, const telemetry::span_id& parent,
               std::uint8_t flags, bool parent_remote) noexcept {
    trace_id_ = trace;
    span_id_ = id;
    parent_span_id_ = parent;
    trace_flags_ = flags;
    parent_remote_ = parent_remote;
  }
  void set_trace_state(std::string_view s) { trace_state_ = store(s); }
  void set_name(std::string_view name) { replace(name_, name); }
  void set_kind(span_kind k) noexcept { kind_ = k; }
  void set_start_time(std::uint64_t unix_nano) noexcept { start_ = unix_nano; }
  void set_end_time(std::uint64_t unix_nano) noexcept { end_ = unix_nano; }
  void set_status(telemetry::status_code code, std::string_view message = {}) {
    // OpenTelemetry: the description only goes with error; ok is final (later unset/error ignored).
    if (status_ == status_code::ok)
      return;
    if (code == status_code::unset)
      return;
    replace(status_message_, code == status_code::error ? message : std::string_view());
    status_ = code;
  }
  // Sets key to v, replacing the value of a present key. A new key beyond max_attributes is counted
  // as dropped and false is returned.
  bool set_attribute(std::string_view key, attribute_value v, std::uint32_t max_attributes) {
    for (std::uint32_t i = 0; i < attributes_.size(); ++i) {
      slot& s = attributes_[i];
      if (view(s.key) == key) {
        assign(s, v);
        return true;
      }
    }
    if (attributes_.size() >= max_attributes) {
      count_dropped_attribute();
      return false;
    }
    // The key and a string value may both view this record's own text: the room for both is made
    // first (moving the text at most once, the views following it), so that storing the key
    // cannot move the text under the value.
    std::string_view value_text = v.type() == attribute_type::string_value ? v.string_value() : std::string_view();
    make_room(key.size() + value_text.size(), key, value_text);
    slot s{};
    s.key = store(key);
    s.type = attribute_type::int_value; // assign() below reads the old string only for strings
    assign(s, v.type() == attribute_type::string_value ? attribute_value(value_text) : v);
    attributes_.push_back(s);
    return true;
  }

 private:
  struct text_ref {
    std::uint32_t offset;
    std::uint32_t length;
  };
  struct slot {
    text_ref key;
    attribute_type type;
    union {
      text_ref s;
      bool b;
      std::int64_t i;
      double d;
    };
  };

  std::string_view view(text_ref r) const noexcept { return {text_.data() + r.offset, r.length}; }
  OTLPCONC_ALWAYS_INLINE text_ref store(std::string_view s) {
    const std::size_t n = s.size();
    if (n == 0)
      return {0, 0};
    if (text_.room(n)) [[likely]] {
      // Nothing moves: s may even view this record's own text (it lies before the new bytes).
      char* out = text_.extend_in_place(n);
      detail::copy_bytes(out, s.data(), n);
      return {static_cast<std::uint32_t>(out - text_.data()), static_cast<std::uint32_t>(n)};
    }
    return store_growing(s);
  }
  OTLPCONC_NOINLINE text_ref store_growing(std::string_view s) {
    // s may view this record's own text (a value copied from another attribute), which extend may
    // move: remember where it was.
    const char* const base = text_.data();
    const bool inside =
        !std::less<const char*>()(s.data(), base) && std::less<const char*>()(s.data(), base + text_.size());
    const std::size_t at = inside ? static_cast<std::size_t>(s.data() - base) : 0;
    char* out = text_.extend(s.size());
    std::memcpy(out, inside ? text_.data() + at : s.data(), s.size());
    return {static_cast<std::uint32_t>(out - text_.data()), static_cast<std::uint32_t>(s.size())};
  }
  // Room for n more bytes of text; a and b, when they view the text, are moved with it.
  void make_room(std::size_t n, std::string_view& a, std::string_view& b) {
    if (text_.room(n)) [[likely]]
      return;
    const char* const base = text_.data();
    auto offset = [&](std::string_view v) -> std::ptrdiff_t {
      const bool inside =
          !std::less<const char*>()(v.data(), base) && std::less<const char*>()(v.data(), base + text_.size());
      return inside ? v.data() - base : -1;
    };
    const std::ptrdiff_t at_a = offset(a), at_b = offset(b);
    text_.reserve_more(n);
    if (at_a >= 0)
      a = {text_.data() + at_a, a.size()};
    if (at_b >= 0)
      b = {text_.data() + at_b, b.size()};
  }
  // Reuses the old bytes when the new string fits in them (repeated updates do not grow the arena).
  void replace(text_ref& r, std::string_view s) {
    if (s.size() <= r.length) {
      if (!s.empty()) // (s may overlap the old bytes: a value set from this record's own text)
        std::memmove(text_.data() + r.offset, s.data(), s.size());
      r.length = static_cast<std::uint32_t>(s.size());
      return;
    }
    r = store(s);
  }
  void assign(slot& s, attribute_value v) {
    switch (v.type()) {
    case attribute_type::string_value: {
      text_ref r = s.type == attribute_type::string_value ? s.s : text_ref{0, 0};
      replace(r, v.string_value());
      s.s = r;
      break;
    }
    case attribute_type::bool_value:
      s.b = v.bool_value();
      break;
    case attribute_type::int_value:
      s.i = v.int_value();
      break;
    case attribute_type::double_value:
      s.d = v.double_value();
      break;
    }
    s.type = v.type();
  }

  telemetry::trace_id trace_id_;
  telemetry::span_id span_id_;
  telemetry::span_id parent_span_id_;
  std::uint8_t trace_flags_ = 0;
  bool parent_remote_ = false;
  span_kind kind_ = span_kind::internal;
  telemetry::status_code status_ = status_code::unset;
  std::uint32_t dropped_attributes_ = 0;
  std::uint64_t start_ = 0;
  std::uint64_t end_ = 0;
  text_ref name_{0, 0};
  text_ref status_message_{0, 0};
  text_ref trace_state_{0, 0};
  detail::small_buffer<slot, 8> attributes_;
  detail::small_buffer<char, 160> text_;
};

// OTLP Span.flags (both encoders): the W3C trace flags in bits 0-7, then
// SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (bit 8) and SPAN_FLAGS_CONTEXT_IS_REMOTE (bit 9): whether the
// parent came from another process.
inline std::uint32_t otlp_span_flags(const span_data& s) noexcept {
  return std::uint32_t{s.trace_flags()} | 0x100u | (s.parent_is_remote() ? 0x200u : 0u);
}

} // namespace otlpconc::telemetry
