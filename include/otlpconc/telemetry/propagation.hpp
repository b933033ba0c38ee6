// otlpconc/telemetry/propagation.hpp: carrying a trace (and baggage) across process boundaries
// through text headers: W3C Trace Context (traceparent, tracestate), W3C Baggage (baggage), and
// the OTEL_PROPAGATORS selection.
//
// What: propagation_context (a span context and a baggage: what one request carries in), the
//   carrier interfaces a service implements over its own header type (text_map_getter /
//   text_map_setter; header_carrier is a ready one), text_map_propagator with its W3C
//   implementations and a composite, and propagators_from_env().
// When to use: a server extracts the incoming request's context and starts its span with it as the
//   parent (span_start_options::parent = &ctx.span); a client injects its current span's context
//   into the outgoing request. Not for in-process parent/child links (the tracer does those).
// Guarantees: extract never throws on any input (std::bad_alloc aside) and never reads outside it;
//   a malformed traceparent leaves the context's span unchanged, a malformed tracestate is dropped
//   while the traceparent is kept (W3C), a malformed baggage member is skipped while the others are
//   kept. Header names are matched case-insensitively (HTTP). Propagators are stateless after
//   construction: one may be shared by any number of threads.
//   Baggage limits (W3C Baggage: at least 64 members and 8192 bytes must be propagated): extract
//   keeps the members that lie wholly within the first 8192 bytes of the header, at most 180 (the
//   W3C maximum); inject writes at most 180 members and 8192 bytes (members that do not fit are left
//   out whole).
// Requirements: a carrier's get returns a view valid until the next call on it.
#pragma once

#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/detail/text.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"
#include "otlpconc/telemetry/trace_context.hpp"

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

// W3C Baggage: name/value pairs (with optional properties) that travel with a request.
class baggage {
 public:
  struct entry {
    std::string key;
    std::string value;    // decoded (UTF-8)
    std::string metadata; // the member's properties as received (";k=v;flag"), without the first ';'
  };
  static constexpr std::size_t max_members = 180;
  static constexpr std::size_t max_header_bytes = 8192;

  // The value for key, or nullopt.
  std::optional<std::string_view> get(std::string_view key) const noexcept {
    for (const entry& e : entries_)
      if (e.key == key)
        return std::string_view(e.value);
    return std::nullopt;
  }
  // Adds or replaces key. std::invalid_argument unless key is a token (RFC 9110: letters, digits
  // and !#$%&'*+-.^_`|~) and metadata is empty or well-formed properties.
  void set(std::string_view key, std::string_view value, std::string_view metadata = {}) {
    if (!is_token(key))
      throw std::invalid_argument("baggage: the key '" + std::string(key) + "' is not an HTTP token");
    if (!metadata.empty() && !valid_properties(metadata))
      throw std::invalid_argument("baggage: malformed metadata '" + std::string(metadata) + "'");
    for (entry& e : entries_)
      if (e.key == key) {
        e.value = value;
        e.metadata = metadata;
        return;
      }
    entries_.push_back({std::string(key), std::string(value), std::string(metadata)});
  }
  bool remove(std::string_view key) noexcept {
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->key == key) {
        entries_.erase(it);
        return true;
      }
    return false;
  }
  const std::vector<entry>& entries() const noexcept { return entries_; }
  bool empty() const noexcept { return entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }

  // The W3C `baggage` header: members "key=percent-encoded value[;properties]" joined by ",".
  // Members past the limits are left out whole.
  std::string to_header() const {
    std::string out;
    std::size_t members = 0;
    for (const entry& e : entries_) {
      std::string member = e.key + "=" + detail::percent_encode(e.value, is_baggage_octet);
      if (!e.metadata.empty())
        member += ";" + e.metadata;
      if (members == max_members || out.size() + (out.empty() ? 0 : 1) + member.size() > max_header_bytes)
        continue;
      if (!out.empty())
        out += ',';
      out += member;
      ++members;
    }
    return out;
  }

  // Parses a `baggage` header. A malformed member (no '=', a key that is not a token, a value with
  // characters the W3C grammar excludes or a bad percent escape, malformed properties) is skipped;
  // a key seen twice keeps its last value. Keeps the members wholly within the first
  // max_header_bytes, at most max_members.
  static baggage from_header(std::string_view header) {
    baggage b;
    if (header.size() > max_header_bytes) { // only whole members within the first max_header_bytes
      const bool cut_at_comma = header[max_header_bytes] == ',';
      header = header.substr(0, max_header_bytes);
      if (!cut_at_comma) {
        const std::size_t last = header.rfind(',');
        header = last == std::string_view::npos ? std::string_view() : header.substr(0, last);
      }
    }
    std::size_t members = 0;
    while (!header.empty() && members < max_members) {
      const std::size_t comma = header.find(',');
      const std::string_view member = detail::trim_ows(header.substr(0, comma));
      header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
      if (member.empty())
        continue;
      ++members;
      const std::size_t semi = member.find(';');
      const std::string_view pair = detail::trim_ows(member.substr(0, semi));
      const std::string_view props =
          semi == std::string_view::npos ? std::string_view() : detail::trim_ows(member.substr(semi + 1));
      const std::size_t eq = pair.find('=');
      if (eq == std::string_view::npos)
        continue;
      const std::string_view key = detail::trim_ows(pair.substr(0, eq));
      const std::string_view raw = detail::trim_ows(pair.substr(eq + 1));
      if (!is_token(key) || !all_baggage_octets(raw) || (semi != std::string_view::npos && !valid_properties(props)))
        continue;
      std::optional<std::string> value = detail::percent_decode(raw);
      if (!value)
        continue;
      b.set(key, *value, props);
    }
    return b;
  }

 private:
  static bool is_tchar(unsigned char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  }
  static bool is_token(std::string_view s) noexcept {
    if (s.empty())
      return false;
    for (char c : s)
      if (!is_tchar(static_cast<unsigned char>(c)))
        return false;
    return true;
  }
  // W3C Baggage: baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E (printable ASCII
  // without space, '"', ',', ';' and '\'); everything else travels percent-encoded.
  static bool is_baggage_octet(unsigned char c) noexcept {
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\' && c != '%';
  }
  static bool all_baggage_octets(std::string_view s) noexcept {
    for (char c : s) {
      const auto b = static_cast<unsigned char>(c);
      if (!(is_baggage_octet(b) || b == '%'))
        return false;
    }
    return true;
  }
  // property = key OWS "=" OWS value / key, separated by ";".
  static bool valid_properties(std::string_view props) noexcept {
    while (true) {
      const std::size_t semi = props.find(';');
      const std::string_view p = detail::trim_ows(props.substr(0, semi));
      const std::size_t eq = p.find('=');
      if (eq == std::string_view::npos) {
        if (!is_token(p))
          return false;
      } else if (!is_token(detail::trim_ows(p.substr(0, eq))) ||
                 !all_baggage_octets(detail::trim_ows(p.substr(eq + 1)))) {
        return false;
      }
      if (semi == std::string_view::npos)
        return true;
      props.remove_prefix(semi + 1);
    }
  }

  std::vector<entry> entries_;
};

// What a request carries: its trace context (invalid when none came in) and its baggage.
struct propagation_context {
  span_context span;
  telemetry::baggage baggage;
};

// Read access to a request's headers (a carrier). get returns the value of the header named
// `name` (case-insensitively), or nullopt.
class text_map_getter {
 public:
  virtual ~text_map_getter() = default;
  virtual std::optional<std::string_view> get(std::string_view name) const = 0;
};

// Write access to a request's headers. set replaces the header's value.
class text_map_setter {
 public:
  virtual ~text_map_setter() = default;
  virtual void set(std::string_view name, std::string_view value) = 0;
};

// A ready carrier: a list of name/value pairs (names compared case-insensitively; set replaces).
class header_carrier final : public text_map_getter, public text_map_setter {
 public:
  header_carrier() = default;
  header_carrier(std::initializer_list<std::pair<std::string, std::string>> headers) : headers_(headers) {}
  std::optional<std::string_view> get(std::string_view name) const override {
    for (const auto& [n, v] : headers_)
      if (detail::equals_ignoring_case(n, name))
        return std::string_view(v);
    return std::nullopt;
  }
  void set(std::string_view name, std::string_view value) override {
    for (auto& [n, v] : headers_)
      if (detail::equals_ignoring_case(n, name)) {
        v = value;
        return;
      }
    headers_.emplace_back(std::string(name), std::string(value));
  }
  const std::vector<std::pair<std::string, std::string>>& headers() const noexcept { return headers_; }

 private:
  std::vector<std::pair<std::string, std::string>> headers_;
};

class text_map_propagator {
 public:
  virtual ~text_map_propagator() = default;
  // Writes what this propagator carries of ctx into the carrier.
  virtual void inject(const propagation_context& ctx, text_map_setter& carrier) const = 0;
  // Reads what this propagator carries from the carrier into ctx (what it does not find, or cannot
  // parse, leaves ctx as it is). Never throws on any header value (std::bad_alloc aside).
  virtual void extract(const text_map_getter& carrier, propagation_context& ctx) const = 0;
  // The header names it reads and writes.
  virtual std::vector<std::string> fields() const = 0;

  // The context the carrier holds (extract into an empty one).
  propagation_context extract(const text_map_getter& carrier) const {
    propagation_context ctx;
    extract(carrier, ctx);
    return ctx;
  }
};

// W3C Trace Context: traceparent and tracestate. Injects nothing for an invalid span context;
// the extracted context is remote.
class w3c_trace_context_propagator final : public text_map_propagator {
 public:
  void inject(const propagation_context& ctx, text_map_setter& carrier) const override {
    if (!ctx.span.valid())
      return;
    carrier.set("traceparent", format_traceparent(ctx.span));
    if (!ctx.span.trace_state.empty())
      carrier.set("tracestate", ctx.span.trace_state);
  }
  void extract(const text_map_getter& carrier, propagation_context& ctx) const override {
    const std::optional<std::string_view> tp = carrier.get("traceparent");
    if (!tp)
      return;
    const std::optional<std::string_view> ts = carrier.get("tracestate");
    if (std::optional<span_context> parsed = parse_traceparent(*tp, ts ? *ts : std::string_view()))
      ctx.span = std::move(*parsed);
  }
  using text_map_propagator::extract;
  std::vector<std::string> fields() const override { return {"traceparent", "tracestate"}; }
};

// W3C Baggage: the baggage header. Injects nothing for an empty baggage; extract replaces ctx's
// baggage with the header's when the header is present.
class w3c_baggage_propagator final : public text_map_propagator {
 public:
  void inject(const propagation_context& ctx, text_map_setter& carrier) const override {
    if (ctx.baggage.empty())
      return;
    const std::string header = ctx.baggage.to_header();
    if (!header.empty())
      carrier.set("baggage", header);
  }
  void extract(const text_map_getter& carrier, propagation_context& ctx) const override {
    if (const std::optional<std::string_view> h = carrier.get("baggage"))
      ctx.baggage = baggage::from_header(*h);
  }
  using text_map_propagator::extract;
  std::vector<std::string> fields() const override { return {"baggage"}; }
};

// Runs its propagators in order (inject: each writes its headers; extract: each reads its own).
// Empty: injects and extracts nothing (OTEL_PROPAGATORS=none).
class composite_propagator final : public text_map_propagator {
 public:
  // std::invalid_argument if a propagator is null.
  explicit composite_propagator(std::vector<std::shared_ptr<const text_map_propagator>> parts)
      : parts_(std::move(parts)) {
    for (const auto& p : parts_)
      if (!p)
        throw std::invalid_argument("composite_propagator: a propagator is null");
  }
  void inject(const propagation_context& ctx, text_map_setter& carrier) const override {
    for (const auto& p : parts_)
      p->inject(ctx, carrier);
  }
  void extract(const text_map_getter& carrier, propagation_context& ctx) const override {
    for (const auto& p : parts_)
      p->extract(carrier, ctx);
  }
  using text_map_propagator::extract;
  std::vector<std::string> fields() const override {
    std::vector<std::string> all;
    for (const auto& p : parts_)
      for (std::string& f : p->fields())
        all.push_back(std::move(f));
    return all;
  }
  std::size_t size() const noexcept { return parts_.size(); }

 private:
  std::vector<std::shared_ptr<const text_map_propagator>> parts_;
};

// The propagators OTEL_PROPAGATORS names: a comma-separated list of tracecontext, baggage and
// none (case-insensitive; whitespace around names ignored), in that order. Unset or empty: the
// specification's default, "tracecontext,baggage". "none" alone: no propagation. A name this
// library does not implement (b3, b3multi, jaeger, xray, ottrace) or does not know is reported to
// the warning sink (diagnostics.hpp) and skipped; a name listed twice is used once.
inline std::shared_ptr<const composite_propagator> propagators_from_env() {
  std::vector<std::shared_ptr<const text_map_propagator>> parts;
  const std::optional<std::string> text = detail::env_text("OTEL_PROPAGATORS");
  std::string_view list = text ? std::string_view(*text) : std::string_view("tracecontext,baggage");
  bool have_tc = false, have_baggage = false, none = false;
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view name = detail::trim_ows(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (name.empty())
      continue;
    if (detail::equals_ignoring_case(name, "tracecontext")) {
      if (!have_tc)
        parts.push_back(std::make_shared<w3c_trace_context_propagator>());
      have_tc = true;
    } else if (detail::equals_ignoring_case(name, "baggage")) {
      if (!have_baggage)
        parts.push_back(std::make_shared<w3c_baggage_propagator>());
      have_baggage = true;
    } else if (detail::equals_ignoring_case(name, "none")) {
      none = true;
    } else {
      const bool known = detail::equals_ignoring_case(name, "b3") || detail::equals_ignoring_case(name, "b3multi") ||
                         detail::equals_ignoring_case(name, "jaeger") || detail::equals_ignoring_case(name, "xray") ||
                         detail::equals_ignoring_case(name, "ottrace");
      detail::env_ignored("OTEL_PROPAGATORS", name,
                          known ? "is not implemented by otlpconc (tracecontext, baggage and none are)"
                                : "is not a propagator (tracecontext, baggage, none)");
    }
  }
  if (none && !parts.empty())
    warn("OTEL_PROPAGATORS: 'none' is listed with other propagators: it is ignored");
  return std::make_shared<composite_propagator>(std::move(parts));
}

} // namespace otlpconc::telemetry
