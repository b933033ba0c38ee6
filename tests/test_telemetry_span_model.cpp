// Unit tests of the span data model beyond scalar attributes: array and bytes attribute values,
// events (record_exception), links, OpenTelemetry's span limits (and their variables), and how both
// OTLP encoders write them. (The protobuf side is read field by field in test_otlp_protobuf.cpp, and
// by OpenTelemetry's own model in the exporter's tests.)
#include "warning_capture.hpp"

#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/telemetry/tracer.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

using namespace otlpconc::telemetry;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> strings_of(attribute_value v) {
  REQUIRE(v.type() == attribute_type::string_array);
  std::vector<std::string> out;
  for (std::uint32_t i = 0; i < v.array_size(); ++i)
    out.emplace_back(v.string_at(i));
  return out;
}

const span_record& only(const std::vector<span_record>& spans) {
  REQUIRE(spans.size() == 1);
  return spans[0];
}

attribute_value value_of(const std::vector<key_value>& list, std::string_view key) {
  for (const key_value& kv : list)
    if (kv.key == key)
      return kv.view().value;
  FAIL("no attribute " << key);
  return attribute_value(false);
}

} // namespace

TEST_CASE("span_data stores arrays of every element type and bytes, and reads them back", "[telemetry]") {
  span_data s;
  const std::vector<std::string> owned{"a", "", "b\xc3\xa9", std::string(300, 'z')};
  const std::array<std::string_view, 2> viewed{"x", "yy"};
  const std::vector<std::int64_t> ints{1, -2, INT64_MAX, INT64_MIN};
  const double doubles[] = {1.5, -0.0, 1e300};
  const std::array<bool, 3> bools{true, false, true};
  const std::uint8_t raw[] = {0, 1, 0xfe, 0xff, 0};
  REQUIRE(s.set_attribute("owned", owned, 128));
  REQUIRE(s.set_attribute("viewed", viewed, 128));
  REQUIRE(s.set_attribute("ints", ints, 128));
  REQUIRE(s.set_attribute("doubles", doubles, 128));
  REQUIRE(s.set_attribute("bools", bools, 128));
  REQUIRE(s.set_attribute("raw", attribute_value::bytes(raw), 128));
  REQUIRE(s.set_attribute("empty", std::vector<std::int64_t>{}, 128));
  REQUIRE(s.attribute_count() == 7);

  CHECK(strings_of(s.attribute_at(0).value) == owned);
  CHECK(strings_of(s.attribute_at(1).value) == std::vector<std::string>{"x", "yy"});
  const attribute_value i = s.attribute_at(2).value;
  REQUIRE(i.type() == attribute_type::int_array);
  REQUIRE(i.array_size() == 4);
  for (std::uint32_t k = 0; k < 4; ++k)
    CHECK(i.int_at(k) == ints[k]);
  const attribute_value d = s.attribute_at(3).value;
  REQUIRE(d.type() == attribute_type::double_array);
  CHECK(d.double_at(0) == 1.5);
  CHECK(std::signbit(d.double_at(1)));
  CHECK(d.double_at(2) == 1e300);
  const attribute_value b = s.attribute_at(4).value;
  REQUIRE(b.type() == attribute_type::bool_array);
  CHECK((b.bool_at(0) && !b.bool_at(1) && b.bool_at(2)));
  const attribute_value r = s.attribute_at(5).value;
  REQUIRE(r.type() == attribute_type::bytes_value);
  CHECK(r.bytes_value() == std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
  CHECK(s.attribute_at(6).value.array_size() == 0);

  // A key changes type both ways; the arena keeps every other value intact.
  REQUIRE(s.set_attribute("ints", "now a string", 128));
  REQUIRE(s.set_attribute("viewed", std::int64_t{7}, 128));
  REQUIRE(s.set_attribute("viewed", owned, 128));
  CHECK(s.attribute_at(2).value.string_value() == "now a string");
  CHECK(strings_of(s.attribute_at(1).value) == owned);
  CHECK(strings_of(s.attribute_at(0).value) == owned);
  CHECK(s.attribute_at(5).value.bytes_value().size() == sizeof raw);

  // An owned copy (span_record, resources) compares and reads back the same.
  const key_value copy("owned", s.attribute_at(0).value);
  CHECK(strings_of(copy.view().value) == owned);
  CHECK(copy == key_value("owned", owned));
  CHECK_FALSE(copy == key_value("owned", viewed));
}

TEST_CASE("key-value lists and mixed arrays nest any values, and read back from the record", "[telemetry]") {
  span_data s;
  const std::vector<std::int64_t> ints{4, 5};
  const std::uint8_t raw[] = {9, 0};
  const std::vector<attribute> inner{{"x", 1.5}, {"y", "why"}, {"raw", attribute_value::bytes(raw)}};
  const std::vector<attribute_value> mixed{attribute_value("s"), attribute_value(std::int64_t{-3}),
                                           attribute_value(true), attribute_value(ints), attribute_value(inner)};
  const std::vector<attribute> kv{{"a", 1}, {"list", mixed}, {"map", inner}, {"empty", std::vector<attribute>{}}};
  REQUIRE(s.set_attribute("kv", kv, 128, 2)); // strings cut to 2 characters at every depth
  REQUIRE(s.set_attribute("mixed", mixed, 128));
  const attribute_value got = s.attribute_at(0).value;
  REQUIRE(got.type() == attribute_type::kvlist_value);
  REQUIRE(got.array_size() == 4);
  CHECK(got.kv_at(0).key == "a");
  CHECK(got.kv_at(0).value.int_value() == 1);
  const attribute_value list = got.kv_at(1).value;
  REQUIRE(list.type() == attribute_type::value_array);
  REQUIRE(list.array_size() == 5);
  CHECK(list.element(0).string_value() == "s");
  CHECK(list.element(1).int_value() == -3);
  CHECK(list.element(2).bool_value());
  REQUIRE(list.element(3).type() == attribute_type::int_array);
  CHECK(list.element(3).int_at(1) == 5);
  const attribute_value map = got.kv_at(2).value;
  REQUIRE(map.type() == attribute_type::kvlist_value);
  CHECK(map.kv_at(0).value.double_value() == 1.5);
  CHECK(map.kv_at(1).value.string_value() == "wh");
  CHECK(map.kv_at(2).value.bytes_value() == std::string_view("\x09\x00", 2));
  CHECK(list.element(4).kv_at(1).value.string_value() == "wh");
  CHECK(got.kv_at(3).value.array_size() == 0);
  const attribute_value m = s.attribute_at(1).value;
  REQUIRE(m.type() == attribute_type::value_array);
  CHECK(m.element(4).kv_at(1).value.string_value() == "why"); // no limit on this one

  std::string out;
  append_span_json(out, s);
  CHECK(out.find(R"({"key":"kv","value":{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"1"}},)"
                 R"({"key":"list","value":{"arrayValue":{"values":[{"stringValue":"s"},{"intValue":"-3"},)"
                 R"({"boolValue":true},{"arrayValue":{"values":[{"intValue":"4"},{"intValue":"5"}]}},)"
                 R"({"kvlistValue":{"values":[{"key":"x","value":{"doubleValue":1.5}},)"
                 R"({"key":"y","value":{"stringValue":"wh"}},{"key":"raw","value":{"bytesValue":"CQA="}}]}}]}}},)") !=
        std::string::npos);
  CHECK(out.find(R"({"key":"empty","value":{"kvlistValue":{}}})") != std::string::npos);
}

TEST_CASE("bytes are cut to the length limit in bytes, and values nested past the depth limit become empty",
          "[telemetry]") {
  span_data s;
  const std::string raw(100, '\x07');
  const std::vector<attribute_value> holder{attribute_value::bytes(raw)};
  REQUIRE(s.set_attribute("raw", attribute_value::bytes(raw), 128, 10));
  REQUIRE(s.set_attribute("inner", holder, 128, 10));
  CHECK(s.attribute_at(0).value.bytes_value().size() == 10);
  CHECK(s.attribute_at(1).value.element(0).bytes_value().size() == 10);
  CHECK(key_value("k", attribute_value::bytes(raw), {.chars = 3}).view().value.bytes_value().size() == 3);

  // 70 nested arrays, each holding the next: with the default depth limit (64) the array at depth 65
  // becomes an empty value; everything above it is kept.
  std::vector<std::vector<attribute_value>> levels(70);
  levels[69] = {attribute_value("leaf")};
  for (std::size_t d = 69; d-- > 0;)
    levels[d] = {attribute_value(levels[d + 1])};
  REQUIRE(s.set_attribute("deep", levels[0], 128));
  attribute_value v = s.attribute_at(2).value;
  std::uint32_t depth = 1;
  while (v.type() == attribute_type::value_array) {
    REQUIRE(v.array_size() == 1);
    v = v.element(0);
    ++depth;
  }
  CHECK(depth == 65);
  CHECK(v.type() == attribute_type::empty_value);
  std::string json;
  append_span_json(json, s);
  CHECK(json.find(R"({"arrayValue":{"values":[{}]}})") != std::string::npos); // depth 64 holds {}
  // A depth limit of 1 keeps a top-level array but empties an array inside it; 0 empties it too.
  const std::vector<std::int64_t> ints{1};
  const std::vector<attribute_value> nested{attribute_value(ints), attribute_value(2)};
  REQUIRE(s.set_attribute("d1", nested, 128, UINT32_MAX, 1));
  CHECK(s.attribute_at(3).value.element(0).type() == attribute_type::empty_value);
  CHECK(s.attribute_at(3).value.element(1).int_value() == 2);
  REQUIRE(s.set_attribute("d0", nested, 128, UINT32_MAX, 0));
  CHECK(s.attribute_at(4).value.type() == attribute_type::empty_value);
}

TEST_CASE("the value length limit cuts strings, and each string of an array, to whole characters", "[telemetry]") {
  CHECK(detail::truncate_chars("hello", 3) == "hel");
  CHECK(detail::truncate_chars("h\xc3\xa9llo", 2) == "h\xc3\xa9"); // 'é' is one character, two bytes
  CHECK(detail::truncate_chars("\xe2\x82\xac\xe2\x82\xac", 1) == "\xe2\x82\xac");
  CHECK(detail::truncate_chars("\xff\xfe"
                               "abc",
                               3) == "\xff\xfe"
                                     "a"); // a stray byte counts as one
  CHECK(detail::truncate_chars("abc", 0).empty());
  CHECK(detail::truncate_chars("abc", 3) == "abc");

  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  tracer t(processor, {.limits = {.attribute_value_length = 2}});
  const std::vector<std::string> tags{"abc", "\xc3\xa9\xc3\xa9\xc3\xa9", "x"};
  auto sp = t.start_span("s", {{"short", "ok"}, {"long", "abcdef"}, {"n", 123456}});
  sp.set_attribute("tags", tags);
  sp.add_event("e", {{"long", "abcdef"}});
  sp.end();
  REQUIRE(processor.force_flush(5s));
  const span_record r = only(exporter->spans());
  CHECK(std::get<std::string>(*r.find_attribute("short")) == "ok");
  CHECK(std::get<std::string>(*r.find_attribute("long")) == "ab");
  CHECK(std::get<std::int64_t>(*r.find_attribute("n")) == 123456); // numbers are not cut
  CHECK(strings_of(value_of(r.attributes, "tags")) == std::vector<std::string>{"ab", "\xc3\xa9\xc3\xa9", "x"});
  REQUIRE(r.events.size() == 1);
  CHECK(value_of(r.events[0].attributes, "long").string_value() == "ab");
}

TEST_CASE("events: names, times, attributes and the limits, counted when dropped", "[telemetry]") {
  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  tracer t(processor, {.limits = {.event_count = 2, .event_attribute_count = 1}});
  auto sp = t.start_span("s");
  sp.add_event("first", {{"a", 1}, {"b", 2}, {"a", 3}}, 1234); // a repeated key replaces: b is dropped
  const std::uint64_t before = unix_nano_now();
  sp.add_event("second");
  sp.add_event("third");
  sp.add_event("fourth");
  sp.end();
  REQUIRE(processor.force_flush(5s));
  const span_record r = only(exporter->spans());
  REQUIRE(r.events.size() == 2);
  CHECK(r.events[0].name == "first");
  CHECK(r.events[0].time_unix_nano == 1234);
  REQUIRE(r.events[0].attributes.size() == 1);
  CHECK(value_of(r.events[0].attributes, "a").int_value() == 3);
  CHECK(r.events[0].dropped_attributes_count == 1);
  CHECK(r.events[1].name == "second");
  CHECK(r.events[1].time_unix_nano >= before);
  CHECK(r.events[1].time_unix_nano <= r.end_time_unix_nano);
  CHECK(r.dropped_events_count == 2);
  CHECK(r.links.empty());
}

TEST_CASE("record_exception writes the semantic conventions' exception event", "[telemetry]") {
  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  tracer t(processor);
  auto sp = t.start_span("s");
  sp.record_exception(std::out_of_range("index 7 of 3"), {{"retry", true}});
  try {
    throw 42;
  } catch (...) {
    sp.record_exception(std::current_exception());
  }
  try {
    throw std::invalid_argument("bad");
  } catch (...) {
    sp.record_exception(std::current_exception());
  }
  sp.record_exception("MyError", "it broke", "#0 main at app.cpp:12\n#1 start");
  sp.end();
  REQUIRE(processor.force_flush(5s));
  const span_record r = only(exporter->spans());
  REQUIRE(r.events.size() == 4);
  for (const span_event& e : r.events)
    CHECK(e.name == "exception");
  CHECK(value_of(r.events[0].attributes, "exception.type").string_value() == "std::out_of_range");
  CHECK(value_of(r.events[0].attributes, "exception.message").string_value() == "index 7 of 3");
  CHECK(value_of(r.events[0].attributes, "retry").bool_value());
  CHECK(value_of(r.events[1].attributes, "exception.type").string_value() == "unknown");
  CHECK(r.events[1].attributes.size() == 1); // no message for a non-std::exception
  CHECK(value_of(r.events[2].attributes, "exception.type").string_value() == "std::invalid_argument");
  CHECK(value_of(r.events[3].attributes, "exception.stacktrace").string_value() == "#0 main at app.cpp:12\n#1 start");
}

TEST_CASE("links: contexts with the remote flag, attributes, limits, and invalid ones ignored", "[telemetry]") {
  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  tracer t(processor, {.limits = {.link_count = 2, .link_attribute_count = 1}});
  const auto remote = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v");
  REQUIRE(remote);
  auto local = t.start_span("local");
  auto sp = t.start_span("s", {.root = true});
  sp.add_link(*remote, {{"why", "batch"}, {"extra", 1}});
  sp.add_link(span_context{}); // invalid, no trace state, no attributes: ignored
  sp.add_link(local.context());
  sp.add_link(local.context()); // beyond the limit of 2
  sp.end();
  local.end();
  REQUIRE(processor.force_flush(5s));
  const auto spans = exporter->spans();
  REQUIRE(spans.size() == 2);
  const span_record& r = spans[0].name == "s" ? spans[0] : spans[1];
  REQUIRE(r.links.size() == 2);
  CHECK(r.links[0].context.trace_id == remote->trace_id);
  CHECK(r.links[0].context.span_id == remote->span_id);
  CHECK(r.links[0].context.remote);
  CHECK(r.links[0].context.trace_state == "k=v");
  CHECK(r.links[0].attributes.size() == 1);
  CHECK(r.links[0].dropped_attributes_count == 1);
  CHECK(otlp_link_flags(r.links[0]) == 0x301); // sampled, has-is-remote, is-remote
  CHECK(r.links[1].context.span_id == local.context().span_id);
  CHECK_FALSE(r.links[1].context.remote);
  CHECK(otlp_link_flags(r.links[1]) == (0x100u | local.context().trace_flags));
  CHECK(r.dropped_links_count == 1);
}

TEST_CASE("a span with no events or links allocates nothing for them, and a reused record forgets them",
          "[telemetry]") {
  span_data s;
  CHECK(s.event_count() == 0);
  CHECK(s.link_count() == 0);
  const span_limits limits;
  const attribute a[] = {{"k", 1}};
  s.add_event("e", 1, a, limits);
  s.add_link(span_context{}, a, limits);
  CHECK(s.event_count() == 1);
  CHECK(s.link_count() == 1);
  s.count_dropped_event();
  s.count_dropped_link();
  s.reset();
  CHECK(s.event_count() == 0);
  CHECK(s.link_count() == 0);
  CHECK(s.dropped_events_count() == 0);
  CHECK(s.dropped_links_count() == 0);
}

TEST_CASE("OTLP JSON writes arrays, bytes (base64), events, links and the dropped counts", "[telemetry]") {
  span_data s;
  s.set_ids(trace_id::from_hex(std::string("0af7651916cd43dd8448eb211c80319c")).value(),
            span_id::from_hex(std::string("b7ad6b7169203331")).value(), span_id{}, 1, false);
  s.set_name("op");
  const std::vector<std::string> tags{"a", "b\"c"};
  const std::array<bool, 2> bools{true, false};
  const std::uint8_t raw[] = {0xfb, 0xff, 0x00, 'a'};
  s.set_attribute("tags", tags, 128);
  s.set_attribute("bools", bools, 128);
  s.set_attribute("raw", attribute_value::bytes(raw), 128);
  s.set_attribute("none", std::vector<double>{}, 128);
  const span_limits limits{.event_count = 1, .link_count = 1};
  const attribute ea[] = {{"n", 5}};
  s.add_event("ev", 99, ea, limits);
  s.add_event("over", 100, {}, limits);
  span_context linked{trace_id::from_hex(std::string("0af7651916cd43dd8448eb211c80319d")).value(),
                      span_id::from_hex(std::string("00f067aa0ba902b7")).value(), 1, true, "a=b"};
  s.add_link(linked, ea, limits);
  s.add_link(linked, {}, limits);
  std::string out;
  append_span_json(out, s);
  CHECK(out.find(R"({"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"stringValue":"b\"c"}]}}})") !=
        std::string::npos);
  CHECK(out.find(R"({"key":"bools","value":{"arrayValue":{"values":[{"boolValue":true},{"boolValue":false}]}}})") !=
        std::string::npos);
  CHECK(out.find(R"({"key":"raw","value":{"bytesValue":"+/8AYQ=="}})") != std::string::npos);
  CHECK(out.find(R"({"key":"none","value":{"arrayValue":{}}})") != std::string::npos);
  CHECK(
      out.find(R"("events":[{"timeUnixNano":"99","name":"ev","attributes":[{"key":"n","value":{"intValue":"5"}}]}])") !=
      std::string::npos);
  CHECK(out.find(R"("droppedEventsCount":1)") != std::string::npos);
  CHECK(out.find(R"("links":[{"traceId":"0af7651916cd43dd8448eb211c80319d","spanId":"00f067aa0ba902b7",)"
                 R"("traceState":"a=b","attributes":[{"key":"n","value":{"intValue":"5"}}],"flags":769}])") !=
        std::string::npos);
  CHECK(out.find(R"("droppedLinksCount":1)") != std::string::npos);

  std::string b64; // RFC 4648's test vectors
  for (const char* in : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    otlp_json_detail::append_base64(b64, in);
    b64 += '|';
  }
  CHECK(b64 == "|Zg==|Zm8=|Zm9v|Zm9vYg==|Zm9vYmE=|Zm9vYmFy|");
}

TEST_CASE("span_limits::from_env reads the OpenTelemetry limit variables, the span-specific ones first",
          "[telemetry]") {
  const char* vars[] = {
      "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",   "OTEL_ATTRIBUTE_COUNT_LIMIT",     "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
      "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",    "OTEL_SPAN_LINK_COUNT_LIMIT",
      "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",  "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"};
  for (const char* v : vars)
    ::unsetenv(v);
  {
    const span_limits l = span_limits::from_env();
    CHECK(l.attribute_count == 128);
    CHECK(l.attribute_value_length == UINT32_MAX);
    CHECK(l.event_count == 128);
    CHECK(l.link_count == 128);
  }
  ::setenv("OTEL_ATTRIBUTE_COUNT_LIMIT", "10", 1);
  ::setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64", 1);
  ::setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "3", 1);
  ::setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "0", 1);
  ::setenv("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "4", 1);
  ::setenv("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "5", 1);
  {
    const span_limits l = span_limits::from_env();
    CHECK(l.attribute_count == 10);
    CHECK(l.attribute_value_length == 64);
    CHECK(l.event_count == 3);
    CHECK(l.link_count == 0);
    CHECK(l.event_attribute_count == 4);
    CHECK(l.link_attribute_count == 5);
  }
  ::setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "20", 1);
  ::setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "32", 1);
  CHECK(span_limits::from_env().attribute_count == 20);
  CHECK(span_limits::from_env().attribute_value_length == 32);
  CHECK(tracer_options::from_env().limits.attribute_count == 20);
  otlpconc_test::warning_capture warnings;
  ::setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "many", 1); // unusable: reported, the general one applies
  CHECK(span_limits::from_env().attribute_count == 10);
  CHECK(warnings.any({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "'many'"}));
  for (const char* v : vars)
    ::unsetenv(v);
}
