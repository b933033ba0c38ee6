// Unit tests of otlp_protobuf.hpp: the encoder's output read back by a wire-format reader written
// here from the protobuf encoding rules, and by protoc --decode_raw (an independent parser).
#include "otlpconc/telemetry/otlp_protobuf.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

using namespace otlpconc::telemetry;

namespace {

// One decoded field: its number, wire type, and value (varint / fixed) or bytes.
struct field {
  std::uint32_t number = 0;
  std::uint32_t type = 0;
  std::uint64_t value = 0;
  std::string_view bytes;
};

// Splits a message into its fields; fails the test on malformed input (a truncated varint or
// length, an unknown wire type, non-canonical lengths).
std::vector<field> fields_of(std::string_view msg) {
  std::vector<field> out;
  std::size_t i = 0;
  auto varint = [&](std::size_t& at) {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      REQUIRE(at < msg.size());
      const auto b = static_cast<unsigned char>(msg[at++]);
      v |= std::uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0)
        return v;
    }
    FAIL("varint longer than 10 bytes");
    return v;
  };
  while (i < msg.size()) {
    const std::uint64_t tag = varint(i);
    field f;
    f.number = static_cast<std::uint32_t>(tag >> 3);
    f.type = static_cast<std::uint32_t>(tag & 7);
    REQUIRE(f.number != 0);
    switch (f.type) {
    case 0:
      f.value = varint(i);
      break;
    case 1:
    case 5: {
      const std::size_t n = f.type == 1 ? 8 : 4;
      REQUIRE(i + n <= msg.size());
      for (std::size_t k = 0; k < n; ++k)
        f.value |= std::uint64_t{static_cast<unsigned char>(msg[i + k])} << (8 * k);
      i += n;
      break;
    }
    case 2: {
      const std::size_t start = i;
      const std::uint64_t len = varint(i);
      // Canonical: the length in its shortest form.
      REQUIRE(i - start == otlp_protobuf_detail::varint_size(len));
      REQUIRE(len <= msg.size() - i);
      f.bytes = msg.substr(i, len);
      i += len;
      break;
    }
    default:
      FAIL("unknown wire type " << f.type);
    }
    out.push_back(f);
  }
  return out;
}
std::vector<field> all(std::string_view msg, std::uint32_t number) {
  std::vector<field> r;
  for (const field& f : fields_of(msg))
    if (f.number == number)
      r.push_back(f);
  return r;
}
field one(std::string_view msg, std::uint32_t number) {
  const auto r = all(msg, number);
  REQUIRE(r.size() == 1);
  return r[0];
}
// KeyValue list -> key: (AnyValue field number, raw field).
std::map<std::string, field> attributes_of(std::string_view msg, std::uint32_t number) {
  std::map<std::string, field> r;
  for (const field& kv : all(msg, number)) {
    const std::string key(one(kv.bytes, 1).bytes);
    const auto any = fields_of(one(kv.bytes, 2).bytes);
    REQUIRE(any.size() == 1); // exactly one member of the oneof
    r[key] = any[0];
  }
  return r;
}

std::string hex(std::string_view b) {
  std::string s;
  for (char c : b) {
    char x[3];
    std::snprintf(x, sizeof x, "%02x", static_cast<unsigned char>(c));
    s += x;
  }
  return s;
}

} // namespace

TEST_CASE("otlp protobuf: every field of a batch reads back as encoded", "[telemetry]") {
  resource res = resource::for_service("svc");
  res.attributes.emplace_back("flag", false);
  res.attributes.emplace_back("count", std::int64_t{-3});
  res.attributes.emplace_back("ratio", 0.0);
  res.attributes.emplace_back("empty", "");
  instrumentation_scope scope{"lib", "1.0", {}};
  scope.attributes.emplace_back("s", "v");

  span_data a;
  auto parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", "k=v");
  REQUIRE(parent);
  span_id id;
  id.bytes = {1, 2, 3, 4, 5, 6, 7, 8};
  a.set_ids(parent->trace_id, id, parent->span_id, parent->trace_flags, true);
  a.set_trace_state(parent->trace_state);
  a.set_name("GET /items \xff name");
  a.set_kind(span_kind::server);
  a.set_start_time(1'700'000'000'123'456'789ULL);
  a.set_attribute("http.response.status_code", std::int64_t{200}, 128);
  a.set_attribute("big", std::int64_t{1} << 40, 128);
  a.set_attribute("pi", 3.25, 128);
  a.set_attribute("ok", true, 128);
  a.set_attribute("text", std::string(300, 'x'), 128);
  a.set_status(status_code::error, "upstream timeout");
  a.set_end_time(1'700'000'000'223'456'789ULL);

  span_data b; // a root span: no parent, no trace state, status unset
  span_id id_b;
  id_b.bytes = {9, 9, 9, 9, 9, 9, 9, 9};
  b.set_ids(parent->trace_id, id_b, span_id{}, 0, false);
  b.set_name("root");
  b.set_kind(span_kind::internal);
  b.set_start_time(5);
  b.set_end_time(6);

  const span_data* spans[] = {&a, &b};
  std::string out = "prefix";
  otlp_protobuf_encoder{}.encode(span_batch_view{res, scope, spans}, out);
  REQUIRE(out.starts_with("prefix"));
  const std::string_view req = std::string_view(out).substr(6);

  const field rs = one(req, 1);                                         // ExportTraceServiceRequest.resource_spans
  const auto resource_attrs = attributes_of(one(rs.bytes, 1).bytes, 1); // Resource.attributes
  CHECK(resource_attrs.at("service.name").bytes == "svc");
  CHECK(resource_attrs.at("flag").number == 2);
  CHECK(resource_attrs.at("flag").value == 0); // oneof members are written at their default
  CHECK(resource_attrs.at("count").number == 3);
  CHECK(static_cast<std::int64_t>(resource_attrs.at("count").value) == -3);
  CHECK(resource_attrs.at("ratio").number == 4);
  CHECK(resource_attrs.at("ratio").type == 1);
  CHECK(resource_attrs.at("empty").number == 1);
  CHECK(resource_attrs.at("empty").bytes.empty());

  const field ss = one(rs.bytes, 2); // ResourceSpans.scope_spans
  const field sc = one(ss.bytes, 1); // ScopeSpans.scope
  CHECK(one(sc.bytes, 1).bytes == "lib");
  CHECK(one(sc.bytes, 2).bytes == "1.0");
  CHECK(attributes_of(sc.bytes, 3).at("s").bytes == "v");

  const auto span_fields = all(ss.bytes, 2);
  REQUIRE(span_fields.size() == 2);
  const std::string_view sa = span_fields[0].bytes;
  CHECK(hex(one(sa, 1).bytes) == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(hex(one(sa, 2).bytes) == "0102030405060708");
  CHECK(one(sa, 3).bytes == "k=v");
  CHECK(hex(one(sa, 4).bytes) == "00f067aa0ba902b7");
  CHECK(one(sa, 5).bytes == "GET /items \xef\xbf\xbd name"); // made valid UTF-8
  CHECK(one(sa, 6).value == 2);                              // SPAN_KIND_SERVER
  CHECK(one(sa, 7).type == 1);
  CHECK(one(sa, 7).value == 1'700'000'000'123'456'789ULL);
  CHECK(one(sa, 8).value == 1'700'000'000'223'456'789ULL);
  const auto attrs = attributes_of(sa, 9);
  CHECK(attrs.at("http.response.status_code").value == 200);
  CHECK(attrs.at("big").value == (std::uint64_t{1} << 40));
  double pi;
  std::memcpy(&pi, &attrs.at("pi").value, sizeof pi);
  CHECK(pi == 3.25);
  CHECK(attrs.at("ok").value == 1);
  CHECK(attrs.at("text").bytes == std::string(300, 'x'));
  CHECK(all(sa, 10).empty()); // no dropped attributes: left out
  const field status = one(sa, 15);
  CHECK(one(status.bytes, 2).bytes == "upstream timeout");
  CHECK(one(status.bytes, 3).value == 2); // STATUS_CODE_ERROR
  CHECK(one(sa, 16).type == 5);
  CHECK(one(sa, 16).value == (0x03u | 0x100u | 0x200u)); // flags: sampled, random, parent remote

  const std::string_view sb = span_fields[1].bytes;
  CHECK(all(sb, 3).empty());          // no trace state
  CHECK(all(sb, 4).empty());          // no parent
  CHECK(all(sb, 15).empty());         // status unset: left out
  CHECK(one(sb, 6).value == 1);       // SPAN_KIND_INTERNAL
  CHECK(one(sb, 16).value == 0x100u); // has-is-remote, not remote

  // Fields appear in field-number order (what generated encoders write).
  std::uint32_t last = 0;
  for (const field& f : fields_of(sa)) {
    CHECK(f.number >= last);
    last = f.number;
  }
}

TEST_CASE("otlp protobuf: protoc --decode_raw parses a request", "[telemetry]") {
  resource res = resource::for_service("svc");
  instrumentation_scope scope{"lib", "1.0", {}};
  span_data data[3];
  std::vector<const span_data*> spans;
  for (int i = 0; i < 3; ++i) {
    span_id id;
    id.bytes = {1, 1, 1, 1, 1, 1, 1, static_cast<std::uint8_t>(i + 1)};
    trace_id tid;
    tid.bytes[15] = 7;
    data[i].set_ids(tid, id, span_id{}, 1, false);
    data[i].set_name("span-" + std::to_string(i));
    data[i].set_kind(span_kind::client);
    data[i].set_start_time(static_cast<std::uint64_t>(100 + i));
    data[i].set_attribute("i", std::int64_t{i}, 128);
    data[i].set_end_time(static_cast<std::uint64_t>(200 + i));
    spans.push_back(&data[i]);
  }
  std::string body;
  otlp_protobuf_encoder{}.encode(span_batch_view{res, scope, spans}, body);
  char path[] = "/tmp/otlpconc-protobuf-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()));
  ::close(fd);
  const std::string cmd = std::string("protoc --decode_raw < ") + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
    text.append(buf, n);
  const int status = ::pclose(p);
  std::remove(path);
  INFO(text);
  REQUIRE(status == 0);
  for (const char* expected : {"1 {", "2 {", "5: \"span-0\"", "5: \"span-2\"", "6: 3", "7: 0x0000000000000064",
                               "8: 0x00000000000000ca", "1: \"service.name\"", "1: \"svc\"", "1: \"lib\""})
    CHECK(text.find(expected) != std::string::npos);
}

TEST_CASE("otlp protobuf: lengths longer than the writer guessed are moved into their shortest form", "[telemetry]") {
  // A span over 16383 bytes (its length takes 3 bytes, 2 were guessed), one over 2 MiB (4 bytes),
  // and a batch over 2 MiB (the ResourceSpans and ScopeSpans lengths take 4 bytes, 3 were guessed).
  const resource res = resource::for_service("svc");
  const instrumentation_scope scope{"lib", "1.0", {}};
  const std::size_t sizes[] = {20'000, 3'000'000, 5};
  std::vector<span_data> spans(std::size(sizes));
  std::vector<const span_data*> pointers;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    span_id id;
    id.bytes = {1, 2, 3, 4, 5, 6, 7, static_cast<std::uint8_t>(i + 1)};
    spans[i].set_ids(trace_id::from_hex(std::string("4bf92f3577b34da6a3ce929d0e0e4736")).value(), id, span_id{}, 1,
                     false);
    spans[i].set_name("s");
    spans[i].set_attribute("blob", std::string(sizes[i], static_cast<char>('a' + i)), 128);
    pointers.push_back(&spans[i]);
  }
  std::string out = "prefix"; // encode appends
  otlp_protobuf_encoder().encode({res, scope, pointers}, out);
  REQUIRE(out.rfind("prefix", 0) == 0);
  const std::string_view body = std::string_view(out).substr(6);
  const auto top = fields_of(body); // (fields_of checks every length is canonical)
  REQUIRE(top.size() == 1);
  const auto scope_spans = one(top[0].bytes, 2);
  const auto got = all(scope_spans.bytes, 2);
  REQUIRE(got.size() == std::size(sizes));
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto attrs = attributes_of(got[i].bytes, 9);
    CHECK(attrs.at("blob").bytes == std::string(sizes[i], static_cast<char>('a' + i)));
  }
}

TEST_CASE("otlp protobuf: arrays, bytes, events, links and their dropped counts", "[telemetry]") {
  span_data s;
  s.set_ids(trace_id::from_hex(std::string("4bf92f3577b34da6a3ce929d0e0e4736")).value(),
            span_id::from_hex(std::string("00f067aa0ba902b7")).value(), span_id{}, 1, false);
  s.set_name("op");
  const std::vector<std::int64_t> ints{1, -1};
  const std::uint8_t raw[] = {0, 0xff};
  s.set_attribute("ints", ints, 128);
  s.set_attribute("raw", attribute_value::bytes(raw), 128);
  s.set_attribute("none", std::vector<std::string>{}, 128);
  const span_limits limits{.event_count = 1, .link_count = 1, .event_attribute_count = 0};
  const attribute a[] = {{"k", "v"}};
  s.add_event("ev", 77, a, limits); // its attribute is dropped (limit 0)
  s.add_event("over", 78, a, limits);
  const span_context linked{trace_id::from_hex(std::string("0af7651916cd43dd8448eb211c80319c")).value(),
                            span_id::from_hex(std::string("b7ad6b7169203331")).value(), 1, true, "x=y"};
  s.add_link(linked, a, limits);
  s.add_link(linked, a, limits);
  std::string out;
  append_span_protobuf(out, s, 2);
  const auto span = one(out, 2).bytes;

  const auto attrs = all(span, 9);
  REQUIRE(attrs.size() == 3);
  const auto ints_any = one(one(attrs[0].bytes, 2).bytes, 5).bytes; // AnyValue.array_value
  const auto values = all(ints_any, 1);
  REQUIRE(values.size() == 2);
  CHECK(one(values[0].bytes, 3).value == 1);
  CHECK(one(values[1].bytes, 3).value == ~std::uint64_t{0}); // -1, two's complement
  CHECK(one(one(attrs[1].bytes, 2).bytes, 7).bytes == std::string_view("\0\xff", 2));
  CHECK(one(one(attrs[2].bytes, 2).bytes, 5).bytes.empty()); // an empty ArrayValue, still present

  const auto events = all(span, 11);
  REQUIRE(events.size() == 1);
  CHECK(one(events[0].bytes, 1).value == 77);
  CHECK(one(events[0].bytes, 2).bytes == "ev");
  CHECK(all(events[0].bytes, 3).empty());
  CHECK(one(events[0].bytes, 4).value == 1);
  CHECK(one(span, 12).value == 1);

  const auto links = all(span, 13);
  REQUIRE(links.size() == 1);
  CHECK(hex(one(links[0].bytes, 1).bytes) == "0af7651916cd43dd8448eb211c80319c");
  CHECK(hex(one(links[0].bytes, 2).bytes) == "b7ad6b7169203331");
  CHECK(one(links[0].bytes, 3).bytes == "x=y");
  CHECK(all(links[0].bytes, 4).size() == 1);
  CHECK(all(links[0].bytes, 5).empty()); // nothing dropped: the default is left out
  CHECK(one(links[0].bytes, 6).value == 0x301);
  CHECK(one(span, 14).value == 1);
  // Field order: attributes (9), events (11), dropped events (12), links (13), dropped links (14), flags (16).
  std::vector<std::uint32_t> order;
  for (const auto& f : fields_of(span))
    if (order.empty() || order.back() != f.number)
      order.push_back(f.number);
  CHECK(order == std::vector<std::uint32_t>{1, 2, 5, 6, 9, 11, 12, 13, 14, 16});
}

TEST_CASE("otlp protobuf: key-value lists (AnyValue 6) and mixed arrays nest", "[telemetry]") {
  span_data s;
  s.set_ids(trace_id::from_hex(std::string("4bf92f3577b34da6a3ce929d0e0e4736")).value(),
            span_id::from_hex(std::string("00f067aa0ba902b7")).value(), span_id{}, 1, false);
  const std::vector<attribute> inner{{"n", 7}};
  const std::vector<attribute_value> mixed{attribute_value("s"), attribute_value(inner)};
  const std::vector<attribute> kv{{"m", mixed}, {"b", false}};
  s.set_attribute("kv", kv, 128);
  std::string out;
  append_span_protobuf(out, s, 2);
  const auto any = one(one(one(one(out, 2).bytes, 9).bytes, 2).bytes, 6).bytes; // KeyValueList
  const auto pairs = all(any, 1);
  REQUIRE(pairs.size() == 2);
  CHECK(one(pairs[0].bytes, 1).bytes == "m");
  const auto arr = all(one(one(pairs[0].bytes, 2).bytes, 5).bytes, 1); // ArrayValue.values
  REQUIRE(arr.size() == 2);
  CHECK(one(arr[0].bytes, 1).bytes == "s");
  const auto nested = one(one(arr[1].bytes, 6).bytes, 1).bytes; // the inner list's one pair
  CHECK(one(nested, 1).bytes == "n");
  CHECK(one(one(nested, 2).bytes, 3).value == 7);
  CHECK(one(pairs[1].bytes, 1).bytes == "b");
  // An empty key is left out (KeyValue.key is a plain proto3 string), as a generated encoder does.
  span_data e;
  const std::vector<attribute> empty_key{{"", 1}};
  e.set_attribute("l", empty_key, 128);
  std::string eo;
  append_span_protobuf(eo, e, 2);
  const auto pair = one(one(one(one(eo, 2).bytes, 9).bytes, 2).bytes, 6).bytes;
  CHECK(all(one(pair, 1).bytes, 1).empty());
  CHECK(one(one(pairs[1].bytes, 2).bytes, 2).value == 0); // bool false: still written (oneof)
}
