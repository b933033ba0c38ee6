// otlpconc/telemetry/span_data.hpp: the OTLP span model: attribute values, span kinds, status,
// resources, instrumentation scopes, and span_data, the record a span writes and an exporter reads.
//
// What: span_data holds one span as OTLP describes it (trace id, span id, parent span id, trace
//   state, flags, name, kind, start and end time in Unix nanoseconds, attributes, dropped attribute
//   count, events, links and their dropped counts, status). Attribute values are OTLP's AnyValue: a
//   string, bool, int64, double, bytes, a homogeneous array of strings, bools, int64s or doubles, a
//   mixed array or a key-value list (nested to any depth). Its strings and arrays live in
//   one arena and its attributes in one array, both inline up to a typical span's size (about 160
//   bytes of text and 8 attributes) and on the heap beyond: recording a typical span allocates
//   nothing, which is what lets the batch span processor keep span_data in an object_pool and
//   recycle it. Events and links, rarer, are kept on the heap beside it (one pointer when none).
//   span_limits holds OpenTelemetry's span limits (counts of attributes, events, links, attributes
//   per event and per link, and the length of attribute values), read from the OTEL_*_LIMIT
//   variables by span_limits::from_env.
// When to use: exporters read span_data (const); tests and custom pipelines may fill one directly.
//   Applications record through tracer.hpp, not through this header.
// Guarantees: span_data is not thread-safe; the pipeline hands it from the recording thread to the
//   export thread with release/acquire ordering, so an exporter reads a finished record. Setting an
//   attribute whose key is present replaces its value (OpenTelemetry semantics); attributes beyond
//   the limit passed to set_attribute are counted in dropped_attributes_count, never silently lost;
//   so are events, links and their attributes beyond their limits (the dropped counts go to OTLP).
//   A string longer than the value-length limit is cut to that many characters (code points; a
//   byte that is not UTF-8 counts as one), as are the strings of arrays and lists at any depth;
//   bytes are cut to that many bytes; arrays and lists nested deeper than the depth limit (64 by
//   default) become empty values.
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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
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

enum class attribute_type : std::uint8_t {
  string_value,
  bool_value,
  int_value,
  double_value,
  bytes_value,  // raw bytes (OTLP AnyValue.bytes_value; base64 in JSON)
  empty_value,  // no value (an OTLP AnyValue with none set): what an array or list nested beyond the
                // value depth limit becomes
  string_array, // homogeneous arrays (OTLP ArrayValue)
  bool_array,
  int_array,
  double_array,
  value_array, // an array of values of any types, nested ones included (OTLP ArrayValue)
  kvlist_value // key-value pairs of any values (OTLP KeyValueList)
};

// The types read element by element: arrays and key-value lists.
constexpr bool is_array(attribute_type t) noexcept {
  return t >= attribute_type::string_array;
}

struct attribute;
class attribute_value;

namespace detail {
template <class T>
inline constexpr bool attribute_array_element =
    std::same_as<T, std::string_view> || std::same_as<T, std::string> || std::same_as<T, std::int64_t> ||
    std::same_as<T, double> || std::same_as<T, bool> || std::same_as<T, attribute> || std::same_as<T, attribute_value>;
template <class>
inline constexpr bool dependent_false = false;
} // namespace detail

// A non-owning attribute value: a string (viewed, copied when recorded), bool, int64, double, raw
// bytes (attribute_value::bytes), or an array viewed from any contiguous range (a std::vector,
// std::array, C array or std::span) of std::string_view, std::string, std::int64_t, double or bool
// (homogeneous), of attribute_value (mixed, nested arrays and lists included), or of attribute (a
// key-value list).
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
  // An array: viewed, so the range must outlive the value (it is copied when recorded).
  template <std::ranges::contiguous_range R>
    requires(!std::convertible_to<const R&, std::string_view>)
  attribute_value(const R& r)
  noexcept {
    using T = std::remove_cv_t<std::ranges::range_value_t<R>>;
    if constexpr (!detail::attribute_array_element<T>) {
      static_assert(detail::dependent_false<T>,
                    "otlpconc: an attribute array holds std::string_view, std::string, std::int64_t, double, bool, "
                    "attribute_value (mixed) or attribute (a key-value list) elements (convert other integers to "
                    "std::int64_t)");
    } else {
      type_ = std::same_as<T, std::int64_t>      ? attribute_type::int_array
              : std::same_as<T, double>          ? attribute_type::double_array
              : std::same_as<T, bool>            ? attribute_type::bool_array
              : std::same_as<T, attribute>       ? attribute_type::kvlist_value
              : std::same_as<T, attribute_value> ? attribute_type::value_array
                                                 : attribute_type::string_array;
      a_.data = reinterpret_cast<const char*>(std::ranges::data(r));
      a_.count = static_cast<std::uint32_t>(std::min<std::size_t>(std::ranges::size(r), UINT32_MAX));
      a_.form = std::same_as<T, std::string> ? form_strings : form_native;
    }
  }
  // Raw bytes (not text: never made UTF-8; JSON carries them in base64).
  static attribute_value bytes(std::string_view b) noexcept { return bytes(b.data(), b.size()); }
  static attribute_value bytes(const void* data, std::size_t size) noexcept {
    attribute_value v(std::string_view(static_cast<const char*>(data), size));
    v.type_ = attribute_type::bytes_value;
    return v;
  }
  static attribute_value bytes(std::span<const std::uint8_t> b) noexcept { return bytes(b.data(), b.size()); }
  // No value (OTLP's empty AnyValue).
  static attribute_value empty() noexcept {
    attribute_value v{std::string_view()};
    v.type_ = attribute_type::empty_value;
    return v;
  }
  // An array or bytes in the packed form span_data and key_value store (detail::pack_attribute).
  // p must be what detail::pack_attribute made for this type (string arrays are read by offset).
  static attribute_value packed(attribute_type type, std::string_view p) noexcept {
    attribute_value v(p);
    v.type_ = type;
    if (is_array(type)) {
      v.a_.data = p.data();
      v.a_.form = form_packed;
      const std::size_t element = type == attribute_type::bool_array ? 1 : 8;
      if (counted(type)) {
        std::uint32_t n = 0;
        if (p.size() >= 4)
          std::memcpy(&n, p.data(), 4);
        v.a_.count = n;
      } else {
        v.a_.count = static_cast<std::uint32_t>(p.size() / element);
      }
    }
    return v;
  }

  attribute_type type() const noexcept { return type_; }
  // Each accessor requires the matching type().
  std::string_view string_value() const noexcept { return s_; }
  bool bool_value() const noexcept { return b_; }
  std::int64_t int_value() const noexcept { return i_; }
  double double_value() const noexcept { return d_; }
  std::string_view bytes_value() const noexcept { return s_; }
  // Arrays: the element count, and element i of the matching type.
  std::uint32_t array_size() const noexcept { return a_.count; }
  std::string_view string_at(std::uint32_t i) const noexcept {
    if (a_.form == form_native)
      return reinterpret_cast<const std::string_view*>(a_.data)[i];
    if (a_.form == form_strings)
      return reinterpret_cast<const std::string*>(a_.data)[i];
    // Packed: count, then each element's end offset, then the bytes.
    const char* const ends = a_.data + 4;
    std::uint32_t begin = 0, end = 0;
    if (i != 0)
      std::memcpy(&begin, ends + 4 * (i - 1), 4);
    std::memcpy(&end, ends + 4 * i, 4);
    return {ends + 4 * std::size_t{a_.count} + begin, end - begin};
  }
  bool bool_at(std::uint32_t i) const noexcept { return a_.data[i] != 0; } // (bool is one byte: checked below)
  // Element i of an array (mixed arrays: any value), or the value of a key-value list's pair i.
  attribute_value element(std::uint32_t i) const noexcept;
  // Pair i of a key-value list.
  attribute kv_at(std::uint32_t i) const noexcept;
  // The stored bytes of a bytes value, or of an array made by packed(): what packed() was given.
  std::string_view packed_bytes() const noexcept {
    if (type_ == attribute_type::bytes_value || type_ == attribute_type::empty_value)
      return s_;
    std::size_t n = a_.count;
    if (type_ == attribute_type::int_array || type_ == attribute_type::double_array)
      n *= 8;
    else if (counted(type_)) {
      std::uint32_t last = 0;
      if (a_.count != 0)
        std::memcpy(&last, a_.data + 4 * std::size_t{a_.count}, 4);
      n = 4 + 4 * n + last;
    }
    return {a_.data, n};
  }
  std::int64_t int_at(std::uint32_t i) const noexcept { return load<std::int64_t>(i); }
  double double_at(std::uint32_t i) const noexcept { return load<double>(i); }

 private:
  static constexpr std::uint8_t form_native = 0;  // T[count] (std::string_view for strings)
  static constexpr std::uint8_t form_strings = 1; // std::string[count]
  static constexpr std::uint8_t form_packed = 2;  // detail::pack_attribute's bytes (unaligned)
  static_assert(sizeof(bool) == 1, "otlpconc: bool arrays are read byte by byte");
  // Packed with a count and end offsets (the others are fixed-size elements).
  static constexpr bool counted(attribute_type t) noexcept {
    return t == attribute_type::string_array || t == attribute_type::value_array || t == attribute_type::kvlist_value;
  }
  // Entry i of a packed mixed array or key-value list: its key (empty in arrays) and value.
  std::pair<std::string_view, attribute_value> packed_entry(std::uint32_t i) const noexcept;
  template <class T>
  T load(std::uint32_t i) const noexcept {
    T v;
    std::memcpy(&v, a_.data + sizeof(T) * i, sizeof(T));
    return v;
  }
  struct array_view {
    const char* data;
    std::uint32_t count;
    std::uint8_t form;
  };

  attribute_type type_;
  union {
    std::string_view s_;
    bool b_;
    std::int64_t i_;
    double d_;
    array_view a_;
  };
};

// A key and a value, viewed.
struct attribute {
  std::string_view key;
  attribute_value value;
};

// Packed mixed arrays and key-value lists (detail::pack_attribute): a count, each entry's end
// offset, then the entries, each a 4-byte key length, the key, the value's type (one byte) and the
// value: 8 bytes for an int64 or a double, 1 for a bool, the rest of the entry otherwise (the bytes
// of a string or bytes value, the packed form of an array or list).
inline std::pair<std::string_view, attribute_value> attribute_value::packed_entry(std::uint32_t i) const noexcept {
  const char* const ends = a_.data + 4;
  std::uint32_t begin = 0, end = 0;
  if (i != 0)
    std::memcpy(&begin, ends + 4 * (i - 1), 4);
  std::memcpy(&end, ends + 4 * i, 4);
  const char* p = ends + 4 * std::size_t{a_.count} + begin;
  std::uint32_t key_length = 0;
  std::memcpy(&key_length, p, 4);
  const std::string_view key(p + 4, key_length);
  const auto type = static_cast<attribute_type>(static_cast<unsigned char>(p[4 + key_length]));
  const char* const payload = p + 5 + key_length;
  const std::size_t payload_size = end - begin - 5 - key_length;
  switch (type) {
  case attribute_type::bool_value:
    return {key, attribute_value(payload[0] != 0)};
  case attribute_type::int_value: {
    std::int64_t v;
    std::memcpy(&v, payload, 8);
    return {key, attribute_value(v)};
  }
  case attribute_type::double_value: {
    double v;
    std::memcpy(&v, payload, 8);
    return {key, attribute_value(v)};
  }
  case attribute_type::string_value:
    return {key, attribute_value(std::string_view(payload, payload_size))};
  default:
    return {key, packed(type, std::string_view(payload, payload_size))};
  }
}

inline attribute_value attribute_value::element(std::uint32_t i) const noexcept {
  switch (type_) {
  case attribute_type::string_array:
    return string_at(i);
  case attribute_type::bool_array:
    return bool_at(i);
  case attribute_type::int_array:
    return int_at(i);
  case attribute_type::double_array:
    return double_at(i);
  case attribute_type::value_array:
    if (a_.form == form_native)
      return reinterpret_cast<const attribute_value*>(a_.data)[i];
    return packed_entry(i).second;
  default: // kvlist_value
    return kv_at(i).value;
  }
}

inline attribute attribute_value::kv_at(std::uint32_t i) const noexcept {
  if (a_.form == form_native)
    return reinterpret_cast<const attribute*>(a_.data)[i];
  auto [key, value] = packed_entry(i);
  return {key, value};
}

namespace detail {

// At most max_chars characters of s (code points; a byte outside a well-formed UTF-8 sequence
// counts as one): OpenTelemetry's attribute value length limit.
inline std::string_view truncate_chars(std::string_view s, std::uint32_t max_chars) noexcept {
  if (s.size() <= max_chars)
    return s; // (never more characters than bytes)
  const auto* const begin = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = begin + s.size();
  const auto* p = begin;
  for (std::uint32_t n = 0; n < max_chars && p < end; ++n) {
    const std::size_t len = utf8_sequence_length(p, end);
    p += len == 0 ? 1 : len;
  }
  return s.substr(0, static_cast<std::size_t>(p - begin));
}

// OpenTelemetry's attribute value limits: characters of a string (bytes of a byte array), and the
// depth of nested arrays and lists (a top-level value is at depth 1).
struct value_limits {
  std::uint32_t chars = UINT32_MAX;
  std::uint32_t depth = 64;
};

// The packed form of a bytes, array or list value at `depth` (attribute_value::packed reads it),
// within `limits`: bytes cut to limits.chars; int64 and double arrays as their 8-byte elements; bool
// arrays one byte each; string arrays as a 4-byte count, each element's 4-byte end offset, then the
// bytes (each string cut to limits.chars characters); mixed arrays and lists as described at
// attribute_value::packed_entry, an array or list nested deeper than limits.depth written as an
// empty value. Returns the type packed: v's, or empty_value when v itself is an array or list
// deeper than the limit. Throws std::length_error past 4 GiB. Recursion: at most limits.depth deep.
inline attribute_type pack_attribute(attribute_value v, value_limits limits, std::string& out,
                                     std::uint32_t depth = 1) {
  out.clear();
  if (is_array(v.type()) && depth > limits.depth)
    return attribute_type::empty_value;
  if (v.type() == attribute_type::bytes_value) {
    out.assign(v.bytes_value().substr(0, limits.chars));
    return v.type();
  }
  const std::uint32_t n = is_array(v.type()) ? v.array_size() : 0;
  const std::uint32_t max_chars = limits.chars;
  switch (v.type()) {
  case attribute_type::bool_array:
    out.resize(n);
    for (std::uint32_t i = 0; i < n; ++i)
      out[i] = v.bool_at(i) ? 1 : 0;
    return v.type();
  case attribute_type::int_array:
  case attribute_type::double_array: {
    out.resize(std::size_t{n} * 8);
    for (std::uint32_t i = 0; i < n; ++i) {
      if (v.type() == attribute_type::int_array) {
        const std::int64_t x = v.int_at(i);
        std::memcpy(out.data() + 8 * std::size_t{i}, &x, 8);
      } else {
        const double x = v.double_at(i);
        std::memcpy(out.data() + 8 * std::size_t{i}, &x, 8);
      }
    }
    return v.type();
  }
  case attribute_type::value_array:
  case attribute_type::kvlist_value: {
    out.resize(4 + 4 * std::size_t{n});
    std::memcpy(out.data(), &n, 4);
    const std::size_t base = out.size();
    std::string nested;
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string_view key = v.type() == attribute_type::kvlist_value ? v.kv_at(i).key : std::string_view();
      const attribute_value e = v.element(i);
      if (key.size() > UINT32_MAX / 2)
        throw std::length_error("otlpconc: an attribute key over 2 GiB");
      const auto key_length = static_cast<std::uint32_t>(key.size());
      out.append(reinterpret_cast<const char*>(&key_length), 4);
      out.append(key);
      const bool too_deep = is_array(e.type()) && depth + 1 > limits.depth;
      out.push_back(static_cast<char>(too_deep ? attribute_type::empty_value : e.type()));
      switch (too_deep ? attribute_type::empty_value : e.type()) {
      case attribute_type::bool_value:
        out.push_back(e.bool_value() ? 1 : 0);
        break;
      case attribute_type::int_value: {
        const std::int64_t x = e.int_value();
        out.append(reinterpret_cast<const char*>(&x), 8);
        break;
      }
      case attribute_type::double_value: {
        const double x = e.double_value();
        out.append(reinterpret_cast<const char*>(&x), 8);
        break;
      }
      case attribute_type::string_value:
        out.append(truncate_chars(e.string_value(), max_chars));
        break;
      case attribute_type::empty_value:
        break;
      default:
        (void)pack_attribute(e, limits, nested, depth + 1); // (not deeper than limits.depth)
        out.append(nested);
        break;
      }
      if (out.size() - base > UINT32_MAX)
        throw std::length_error("otlpconc: an attribute list over 4 GiB");
      const auto offset = static_cast<std::uint32_t>(out.size() - base);
      std::memcpy(out.data() + 4 + 4 * std::size_t{i}, &offset, 4);
    }
    return v.type();
  }
  case attribute_type::string_array: {
    std::size_t total = 0;
    for (std::uint32_t i = 0; i < n; ++i)
      total += truncate_chars(v.string_at(i), max_chars).size();
    if (total > UINT32_MAX - 4 * (std::size_t{n} + 1))
      throw std::length_error("otlpconc: a string array attribute over 4 GiB");
    out.resize(4 + 4 * std::size_t{n});
    std::memcpy(out.data(), &n, 4);
    out.reserve(out.size() + total);
    std::uint32_t offset = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string_view e = truncate_chars(v.string_at(i), max_chars);
      offset += static_cast<std::uint32_t>(e.size());
      std::memcpy(out.data() + 4 + 4 * std::size_t{i}, &offset, 4);
    }
    for (std::uint32_t i = 0; i < n; ++i)
      out.append(truncate_chars(v.string_at(i), max_chars));
    return v.type();
  }
  default:
    return v.type(); // (scalars and empty values have no packed bytes)
  }
}

} // namespace detail

// An owned bytes or array value, in detail::pack_attribute's form.
struct packed_attribute {
  attribute_type type;
  std::string bytes;
  friend bool operator==(const packed_attribute&, const packed_attribute&) = default;
};

// An owned attribute (resources, scopes, events, links).
struct key_value {
  using value_type = std::variant<std::string, bool, std::int64_t, double, packed_attribute>;
  std::string key;
  value_type value;

  // limits: the value length and depth limits (detail::pack_attribute).
  key_value(std::string k, attribute_value v, detail::value_limits limits = {})
      : key(std::move(k)), value(own(v, limits)) {}
  attribute view() const {
    return std::visit(
        [&](const auto& v) -> attribute {
          if constexpr (std::same_as<std::decay_t<decltype(v)>, packed_attribute>)
            return {key, attribute_value::packed(v.type, v.bytes)};
          else
            return {key, attribute_value(v)};
        },
        value);
  }
  friend bool operator==(const key_value&, const key_value&) = default;

 private:
  static value_type own(attribute_value v, detail::value_limits limits) {
    switch (v.type()) {
    case attribute_type::string_value:
      return std::string(detail::truncate_chars(v.string_value(), limits.chars));
    case attribute_type::bool_value:
      return v.bool_value();
    case attribute_type::int_value:
      return v.int_value();
    case attribute_type::double_value:
      return v.double_value();
    default: {
      packed_attribute p{v.type(), {}};
      p.type = detail::pack_attribute(v, limits, p.bytes);
      return p;
    }
    }
  }
};

// OpenTelemetry's span limits, the specification's defaults. A count limit of 0 keeps nothing of
// that kind (everything is counted as dropped). attribute_value_length: the characters kept of a
// string attribute value (and of each string of an array), on spans, events and links;
// UINT32_MAX: no limit.
struct span_limits {
  std::uint32_t attribute_count = 128;
  std::uint32_t attribute_value_length = UINT32_MAX;
  std::uint32_t event_count = 128;
  std::uint32_t link_count = 128;
  std::uint32_t event_attribute_count = 128;
  std::uint32_t link_attribute_count = 128;
  // Nesting of arrays and lists (a top-level value is at depth 1); deeper ones become empty values.
  std::uint32_t attribute_value_depth = 64;

  detail::value_limits value_limits() const noexcept { return {attribute_value_length, attribute_value_depth}; }

  // base, with the variables of the specification that are set (an unusable value is reported to
  // the warning handler and ignored): OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT (else OTEL_ATTRIBUTE_COUNT_LIMIT),
  // OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT (else OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT),
  // OTEL_SPAN_EVENT_COUNT_LIMIT, OTEL_SPAN_LINK_COUNT_LIMIT, OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
  // OTEL_LINK_ATTRIBUTE_COUNT_LIMIT. Each is a non-negative integer.
  static span_limits from_env(span_limits base) {
    auto read = [](const char* specific, const char* general, std::uint32_t& into) {
      for (const char* name : {specific, general}) {
        if (name == nullptr)
          continue;
        if (auto v = detail::env_uint(name, 0, UINT32_MAX)) {
          into = static_cast<std::uint32_t>(*v);
          return;
        }
      }
    };
    read("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT", base.attribute_count);
    read("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", base.attribute_value_length);
    read("OTEL_SPAN_EVENT_COUNT_LIMIT", nullptr, base.event_count);
    read("OTEL_SPAN_LINK_COUNT_LIMIT", nullptr, base.link_count);
    read("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", nullptr, base.event_attribute_count);
    read("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", nullptr, base.link_attribute_count);
    return base;
  }
  static span_limits from_env();
};
inline span_limits span_limits::from_env() {
  return from_env(span_limits());
}

// A span event (OTLP Span.Event): a named point in time with attributes.
struct span_event {
  std::string name;
  std::uint64_t time_unix_nano = 0;
  std::vector<key_value> attributes;
  std::uint32_t dropped_attributes_count = 0;
};

// A link to another span (OTLP Span.Link), of this trace or another.
struct span_link {
  span_context context; // its remote flag goes to OTLP's Link.flags, as for a span's parent
  std::vector<key_value> attributes;
  std::uint32_t dropped_attributes_count = 0;
};

namespace detail {
// Adds `a` to an owned attribute list under OpenTelemetry's rules: a present key takes the new
// value; a new key beyond max_count is counted in `dropped`.
inline void add_limited(std::vector<key_value>& list, const attribute& a, std::uint32_t max_count, value_limits limits,
                        std::uint32_t& dropped) {
  for (key_value& kv : list)
    if (kv.key == a.key) {
      kv = key_value(std::string(a.key), a.value, limits);
      return;
    }
  if (list.size() >= max_count) {
    if (dropped != UINT32_MAX)
      ++dropped;
    return;
  }
  list.emplace_back(std::string(a.key), a.value, limits);
}
} // namespace detail

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
      return {key, s.d};
    default:
      break;
    }
    return {key, attribute_value::packed(s.type, view(s.s))};
  }
  std::uint32_t event_count() const noexcept {
    return extras_ ? static_cast<std::uint32_t>(extras_->events.size()) : 0;
  }
  const span_event& event_at(std::uint32_t i) const noexcept { return extras_->events[i]; }
  std::uint32_t dropped_events_count() const noexcept { return dropped_events_; }
  std::uint32_t link_count() const noexcept { return extras_ ? static_cast<std::uint32_t>(extras_->links.size()) : 0; }
  const span_link& link_at(std::uint32_t i) const noexcept { return extras_->links[i]; }
  std::uint32_t dropped_links_count() const noexcept { return dropped_links_; }
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
    dropped_events_ = dropped_links_ = 0;
    start_ = end_ = 0;
    name_ = status_message_ = trace_state_ = text_ref{0, 0};
    attributes_.reset();
    text_.reset();
    extras_.reset();
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
  // as dropped and false is returned. Strings (and the strings of an array, at any depth) are cut to
  // max_chars characters, bytes to max_chars bytes; arrays and lists nested deeper than max_depth
  // (the top-level value is at depth 1) become empty values.
  bool set_attribute(std::string_view key, attribute_value v, std::uint32_t max_attributes,
                     std::uint32_t max_chars = UINT32_MAX, std::uint32_t max_depth = 64) {
    const bool plain = v.type() < attribute_type::bytes_value &&
                       (v.type() != attribute_type::string_value || v.string_value().size() <= max_chars);
    if (plain) [[likely]]
      return store_attribute<false>(key, v, max_attributes);
    return set_attribute_slow(key, v, max_attributes, {max_chars, max_depth});
  }

  // Adds an event; beyond limits.event_count it is counted as dropped and false is returned. Its
  // attributes follow limits.event_attribute_count and attribute_value_length.
  bool add_event(std::string_view name, std::uint64_t time_unix_nano, std::span<const attribute> attributes,
                 const span_limits& limits);
  // Adds a link; beyond limits.link_count it is counted as dropped and false is returned.
  bool add_link(const span_context& linked, std::span<const attribute> attributes, const span_limits& limits);
  // An event or a link that could not be stored (out of memory) is counted as dropped.
  void count_dropped_event() noexcept { count_dropped(dropped_events_); }
  void count_dropped_link() noexcept { count_dropped(dropped_links_); }

 private:
  // A string to cut, bytes, or an array (packed first). Out of line: the common path (scalars and
  // strings within the limit) stays as small as it was before arrays existed.
  OTLPCONC_NOINLINE bool set_attribute_slow(std::string_view key, attribute_value v, std::uint32_t max_attributes,
                                            detail::value_limits limits) {
    if (v.type() == attribute_type::string_value)
      return store_attribute<false>(key, detail::truncate_chars(v.string_value(), limits.chars), max_attributes);
    if (v.type() == attribute_type::bytes_value)
      return store_attribute<true>(key, attribute_value::bytes(v.bytes_value().substr(0, limits.chars)),
                                   max_attributes);
    if (v.type() == attribute_type::empty_value)
      return store_attribute<true>(key, v, max_attributes);
    std::string packed;
    const attribute_type type = detail::pack_attribute(v, limits, packed);
    return store_attribute<true>(key, attribute_value::packed(type, packed), max_attributes);
  }
  // Packed: v is bytes or a packed array (its bytes are stored like a string); else a scalar or a
  // string.
  template <bool Packed>
  OTLPCONC_ALWAYS_INLINE bool store_attribute(std::string_view key, attribute_value v, std::uint32_t max_attributes) {
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
    std::string_view value_text = Packed                                     ? v.packed_bytes()
                                  : v.type() == attribute_type::string_value ? v.string_value()
                                                                             : std::string_view();
    make_room(key.size() + value_text.size(), key, value_text);
    slot s{};
    s.key = store(key);
    s.type = attribute_type::int_value; // assign() below reads the old bytes only for stored text
    if constexpr (Packed)
      assign(s, attribute_value::packed(v.type(), value_text));
    else
      assign(s, v.type() == attribute_type::string_value ? attribute_value(value_text) : v);
    attributes_.push_back(s);
    return true;
  }

  struct text_ref {
    std::uint32_t offset;
    std::uint32_t length;
  };
  struct slot {
    text_ref key;
    attribute_type type;
    union {
      text_ref s; // a string, or the packed form of bytes or an array
      bool b;
      std::int64_t i;
      double d;
    };
  };
  // Events and links: on the heap, beside the record, when a span has any.
  struct extras {
    std::vector<span_event> events;
    std::vector<span_link> links;
  };
  static void count_dropped(std::uint32_t& n) noexcept {
    if (n != UINT32_MAX)
      ++n;
  }
  // Types whose value is kept in the text arena: strings, bytes, arrays (packed).
  static bool has_text(attribute_type t) noexcept {
    return t == attribute_type::string_value || t > attribute_type::double_value;
  }

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
  OTLPCONC_ALWAYS_INLINE void make_room(std::size_t n, std::string_view& a, std::string_view& b) {
    if (text_.room(n)) [[likely]]
      return;
    make_room_growing(n, a, b);
  }
  OTLPCONC_NOINLINE void make_room_growing(std::size_t n, std::string_view& a, std::string_view& b) {
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
  OTLPCONC_ALWAYS_INLINE void replace(text_ref& r, std::string_view s) {
    if (s.size() <= r.length) {
      if (!s.empty()) // (s may overlap the old bytes: a value set from this record's own text)
        std::memmove(text_.data() + r.offset, s.data(), s.size());
      r.length = static_cast<std::uint32_t>(s.size());
      return;
    }
    r = store(s);
  }
  OTLPCONC_ALWAYS_INLINE void assign(slot& s, attribute_value v) {
    switch (v.type()) {
    case attribute_type::string_value: {
      text_ref r = has_text(s.type) ? s.s : text_ref{0, 0};
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
    default: // bytes and packed arrays: stored like a string
      assign_packed(s, v);
      return;
    }
    s.type = v.type();
  }
  OTLPCONC_NOINLINE void assign_packed(slot& s, attribute_value v) {
    text_ref r = has_text(s.type) ? s.s : text_ref{0, 0};
    replace(r, v.packed_bytes());
    s.s = r;
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
  std::uint32_t dropped_events_ = 0;
  std::uint32_t dropped_links_ = 0;
  std::uint64_t start_ = 0;
  std::uint64_t end_ = 0;
  text_ref name_{0, 0};
  text_ref status_message_{0, 0};
  text_ref trace_state_{0, 0};
  detail::small_buffer<slot, 8> attributes_;
  detail::small_buffer<char, 160> text_;
  std::unique_ptr<extras> extras_;
};

inline bool span_data::add_event(std::string_view name, std::uint64_t time_unix_nano,
                                 std::span<const attribute> attributes, const span_limits& limits) {
  if (!extras_)
    extras_ = std::make_unique<extras>();
  if (extras_->events.size() >= limits.event_count) {
    count_dropped(dropped_events_);
    return false;
  }
  span_event e;
  e.name.assign(name);
  e.time_unix_nano = time_unix_nano;
  for (const attribute& a : attributes)
    detail::add_limited(e.attributes, a, limits.event_attribute_count, limits.value_limits(),
                        e.dropped_attributes_count);
  extras_->events.push_back(std::move(e));
  return true;
}
inline bool span_data::add_link(const span_context& linked, std::span<const attribute> attributes,
                                const span_limits& limits) {
  if (!extras_)
    extras_ = std::make_unique<extras>();
  if (extras_->links.size() >= limits.link_count) {
    count_dropped(dropped_links_);
    return false;
  }
  span_link l;
  l.context = linked;
  for (const attribute& a : attributes)
    detail::add_limited(l.attributes, a, limits.link_attribute_count, limits.value_limits(),
                        l.dropped_attributes_count);
  extras_->links.push_back(std::move(l));
  return true;
}

// OTLP Span.flags (both encoders): the W3C trace flags in bits 0-7, then
// SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (bit 8) and SPAN_FLAGS_CONTEXT_IS_REMOTE (bit 9): whether the
// parent came from another process.
inline std::uint32_t otlp_span_flags(const span_data& s) noexcept {
  return std::uint32_t{s.trace_flags()} | 0x100u | (s.parent_is_remote() ? 0x200u : 0u);
}
// OTLP Span.Link.flags: the same bits for the linked span's context.
inline std::uint32_t otlp_link_flags(const span_link& l) noexcept {
  return std::uint32_t{l.context.trace_flags} | 0x100u | (l.context.remote ? 0x200u : 0u);
}

} // namespace otlpconc::telemetry
