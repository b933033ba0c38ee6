// Unit tests of the telemetry data model: ids, W3C trace context, samplers, OTLP JSON encoding.
#include "warning_capture.hpp"

#include "otlpconc/telemetry/detail/otlp_response.hpp"
#include "otlpconc/telemetry/detail/wall_clock.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/telemetry/sampler.hpp"
#include "otlpconc/telemetry/span_data.hpp"
#include "otlpconc/telemetry/trace_context.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

using namespace otlpconc::telemetry;

namespace {

const std::string tp_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string tp_span = "00f067aa0ba902b7";
const std::string tp_valid = "00-" + tp_trace + "-" + tp_span + "-01";

trace_id trace_with_randomness(std::uint64_t r56) {
  trace_id t;
  t.bytes[0] = 0xab; // the high bytes do not matter
  for (int i = 15; i >= 9; --i, r56 >>= 8)
    t.bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(r56);
  return t;
}

std::string json_of(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

} // namespace

TEST_CASE("trace and span ids convert to and from lowercase hex", "[telemetry]") {
  const auto t = trace_id::from_hex(tp_trace);
  REQUIRE(t);
  CHECK(t->valid());
  CHECK(t->bytes[0] == 0x4b);
  CHECK(t->bytes[15] == 0x36);
  CHECK(t->to_hex() == tp_trace);
  CHECK_FALSE(trace_id::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736")); // uppercase
  CHECK_FALSE(trace_id::from_hex(tp_trace.substr(1)));                 // short
  CHECK_FALSE(span_id::from_hex("00f067aa0ba902bz"));                  // not hex
  CHECK_FALSE(trace_id{}.valid());
  CHECK(span_id::from_hex("0000000000000000").has_value()); // parses, but is the invalid id
  CHECK_FALSE(span_id::from_hex("0000000000000000")->valid());
}

TEST_CASE("traceparent: the W3C valid examples parse", "[telemetry]") {
  auto ctx = parse_traceparent(tp_valid);
  REQUIRE(ctx);
  CHECK(ctx->trace_id.to_hex() == tp_trace);
  CHECK(ctx->span_id.to_hex() == tp_span);
  CHECK(ctx->sampled());
  CHECK(ctx->remote);
  CHECK(format_traceparent(*ctx) == tp_valid);

  auto unsampled = parse_traceparent("00-" + tp_trace + "-" + tp_span + "-00");
  REQUIRE(unsampled);
  CHECK_FALSE(unsampled->sampled());

  // HTTP optional whitespace around the value.
  CHECK(parse_traceparent(" \t" + tp_valid + " "));
  // A later version may append fields after a '-', or have none.
  auto future = parse_traceparent("cc-" + tp_trace + "-" + tp_span + "-01-what-the-future-will-be-like");
  REQUIRE(future);
  CHECK(future->trace_id.to_hex() == tp_trace);
  CHECK(parse_traceparent("cc-" + tp_trace + "-" + tp_span + "-01"));
  // Undefined flag bits are not propagated; the Level 2 random flag (0x02) is, in both directions.
  auto flags = parse_traceparent("00-" + tp_trace + "-" + tp_span + "-ff");
  REQUIRE(flags);
  CHECK(flags->trace_flags == (trace_flag_sampled | trace_flag_random));
  auto random_unsampled = parse_traceparent("00-" + tp_trace + "-" + tp_span + "-02");
  REQUIRE(random_unsampled);
  CHECK(random_unsampled->random());
  CHECK_FALSE(random_unsampled->sampled());
  CHECK(format_traceparent(*random_unsampled) == "00-" + tp_trace + "-" + tp_span + "-02");
  CHECK(format_traceparent(*flags) == "00-" + tp_trace + "-" + tp_span + "-03");
  CHECK_FALSE(ctx->random()); // tp_valid's flags are 01
}

TEST_CASE("the default resource names the SDK: name, language and version", "[telemetry]") {
  const resource r = resource::for_service("svc");
  auto value = [&](std::string_view key) -> std::string {
    for (const key_value& kv : r.attributes)
      if (kv.key == key)
        return std::get<std::string>(kv.value);
    return "(missing)";
  };
  CHECK(value("service.name") == "svc");
  CHECK(value("telemetry.sdk.name") == "otlpconc");
  CHECK(value("telemetry.sdk.language") == "cpp");
  CHECK(value("telemetry.sdk.version") == std::string(sdk_version));
}

TEST_CASE("traceparent: malformed headers are rejected", "[telemetry]") {
  const std::vector<std::string> invalid = {
      "",
      "00",
      "ff-" + tp_trace + "-" + tp_span + "-01",                 // version ff is invalid
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + tp_span + "-01", // uppercase trace id
      "00-" + tp_trace + "-00F067AA0BA902B7-01",                // uppercase parent id
      "00-00000000000000000000000000000000-" + tp_span + "-01", // all-zero trace id
      "00-" + tp_trace + "-0000000000000000-01",                // all-zero parent id
      "00-" + tp_trace + "-" + tp_span + "-01-extra",           // version 00 takes nothing more
      "00-" + tp_trace + "-" + tp_span + "-011",                // version 00 is 55 characters
      "00_" + tp_trace + "-" + tp_span + "-01",                 // wrong delimiter
      "00-" + tp_trace + "_" + tp_span + "-01",
      "00-" + tp_trace.substr(1) + "-" + tp_span + "-01",      // short trace id
      "00-" + tp_trace + "-" + tp_span.substr(1) + "-01",      // short parent id
      "00-" + tp_trace + "-" + tp_span + "-1",                 // short flags
      "00-" + tp_trace + "-" + tp_span + "-0g",                // non-hex flags
      "0g-" + tp_trace + "-" + tp_span + "-01",                // non-hex version
      "000-" + tp_trace + "-" + tp_span + "-01",               // 3-digit version
      "00-" + tp_trace.substr(0, 31) + "x-" + tp_span + "-01", // non-hex trace id
      "cc-" + tp_trace + "-" + tp_span + "-01x",               // future version: no '-' after flags
      "00-" + tp_trace + "-" + tp_span + "-01 x",
  };
  for (const std::string& header : invalid) {
    INFO("traceparent '" << header << "'");
    CHECK_FALSE(parse_traceparent(header));
  }
  span_context invalid_ctx;
  CHECK(format_traceparent(invalid_ctx).empty());
}

TEST_CASE("tracestate: valid lists are carried, malformed ones discarded", "[telemetry]") {
  auto ctx = parse_traceparent(tp_valid, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  REQUIRE(ctx);
  CHECK(ctx->trace_state == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  CHECK(normalize_tracestate(" a=1 ,\tb=2 ") == "a=1,b=2");
  CHECK(normalize_tracestate(",,a=1,,") == "a=1");
  CHECK(normalize_tracestate("tenant@system=v, 0t@s=x") == "tenant@system=v,0t@s=x");
  CHECK(normalize_tracestate("").value() == "");

  const std::vector<std::string> invalid = {
      "A=1",                        // uppercase key
      "a=1,a=2",                    // duplicate key
      "a",                          // no '='
      "a=",                         // empty value
      "a=b=c",                      // '=' in the value
      "1a=1",                       // simple keys start with a letter
      "t@S=1",                      // uppercase system id
      "t@=1",                       // empty system id
      "@s=1",                       // empty tenant id
      "t@abcdefghijklmno=1",        // system id longer than 14
      std::string(257, 'k') + "=1", // key longer than 256
      "a=" + std::string(257, 'v'), // value longer than 256
      "a=\x7f",                     // not printable
  };
  CHECK(normalize_tracestate("a=x ") == "a=x"); // whitespace after a member is OWS, not part of the value
  for (const std::string& s : invalid) {
    INFO("tracestate '" << s << "'");
    CHECK_FALSE(normalize_tracestate(s));
  }
  std::string members;
  for (int i = 0; i < 33; ++i)
    members += (i ? ",k" : "k") + std::to_string(i) + "=v";
  CHECK_FALSE(normalize_tracestate(members)); // more than 32 members
  members = members.substr(0, members.rfind(','));
  CHECK(normalize_tracestate(members)); // exactly 32

  // A malformed tracestate does not invalidate the traceparent.
  auto kept = parse_traceparent(tp_valid, "A=1");
  REQUIRE(kept);
  CHECK(kept->trace_state.empty());
}

TEST_CASE("trace_id_ratio follows the 56-bit threshold rule", "[telemetry]") {
  trace_id_ratio_sampler half(0.5);
  CHECK(half.threshold() == (std::uint64_t{1} << 55));
  CHECK(half.description() == "TraceIdRatioBased{0.500000}");
  const std::uint64_t r_half = std::uint64_t{1} << 55;
  CHECK(half.should_sample(nullptr, trace_with_randomness(r_half), "s", span_kind::internal) ==
        sampling_decision::record_and_sample);
  CHECK(half.should_sample(nullptr, trace_with_randomness(r_half - 1), "s", span_kind::internal) ==
        sampling_decision::drop);
  CHECK(trace_id_ratio_sampler::randomness(trace_with_randomness(0x00123456789abcdeull)) == 0x00123456789abcdeull);

  trace_id_ratio_sampler never(0.0), always(1.0);
  const std::uint64_t max_r = (std::uint64_t{1} << 56) - 1;
  CHECK(never.should_sample(nullptr, trace_with_randomness(max_r), "s", span_kind::internal) ==
        sampling_decision::drop);
  CHECK(always.should_sample(nullptr, trace_with_randomness(0), "s", span_kind::internal) ==
        sampling_decision::record_and_sample);

  // The parent's sampled flag is ignored.
  span_context parent;
  parent.trace_flags = trace_flag_sampled;
  CHECK(never.should_sample(&parent, trace_with_randomness(max_r), "s", span_kind::internal) ==
        sampling_decision::drop);

  // Frequency and nesting over random ids.
  std::mt19937_64 rng(42);
  trace_id_ratio_sampler quarter(0.25), tenth(0.1);
  int sampled_quarter = 0;
  bool nested = true;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const trace_id t = trace_with_randomness(rng() >> 8);
    const bool q = quarter.should_sample(nullptr, t, "s", span_kind::internal) == sampling_decision::record_and_sample;
    const bool d = tenth.should_sample(nullptr, t, "s", span_kind::internal) == sampling_decision::record_and_sample;
    sampled_quarter += q;
    nested = nested && (!d || q); // a 0.1 sample is within the 0.25 sample
  }
  CHECK(std::abs(static_cast<double>(sampled_quarter) / n - 0.25) < 0.01);
  CHECK(nested);

  CHECK_THROWS_AS(trace_id_ratio_sampler(-0.1), std::invalid_argument);
  CHECK_THROWS_AS(trace_id_ratio_sampler(1.1), std::invalid_argument);
  CHECK_THROWS_AS(trace_id_ratio_sampler(std::nan("")), std::invalid_argument);
  CHECK(always_on()->description() == "AlwaysOnSampler");
  CHECK(always_off()->should_sample(nullptr, trace_with_randomness(max_r), "s", span_kind::internal) ==
        sampling_decision::drop);
}

TEST_CASE("span_data stores attributes, replaces present keys and counts what exceeds the limit", "[telemetry]") {
  span_data d;
  CHECK(d.set_attribute("a", 1, 3));
  CHECK(d.set_attribute("b", "text", 3));
  CHECK(d.set_attribute("a", 2.5, 3)); // replaces, in place
  CHECK(d.set_attribute("c", true, 3));
  CHECK_FALSE(d.set_attribute("d", 4, 3)); // over the limit
  CHECK(d.attribute_count() == 3);
  CHECK(d.dropped_attributes_count() == 1);
  CHECK(d.attribute_at(0).key == "a");
  CHECK(d.attribute_at(0).value.type() == attribute_type::double_value);
  CHECK(d.attribute_at(0).value.double_value() == 2.5);
  CHECK(d.attribute_at(1).value.string_value() == "text");
  CHECK(d.set_attribute("b", "longer text than before", 3));
  CHECK(d.attribute_at(1).value.string_value() == "longer text than before");
  // A value viewed from the record itself survives the arena growing.
  const std::string big(1000, 'x');
  d.set_name(big);
  CHECK(d.set_attribute("b", d.name(), 3));
  CHECK(d.attribute_at(1).value.string_value() == big);
  CHECK(d.name() == big);
  // Unsigned values beyond int64 become doubles.
  CHECK(d.set_attribute("a", std::numeric_limits<std::uint64_t>::max(), 3));
  CHECK(d.attribute_at(0).value.type() == attribute_type::double_value);
  // Many attributes move to the heap and stay readable.
  span_data many;
  for (int i = 0; i < 100; ++i)
    many.set_attribute("key" + std::to_string(i), i, 128);
  REQUIRE(many.attribute_count() == 100);
  for (std::uint32_t i = 0; i < 100; ++i) {
    CHECK(many.attribute_at(i).key == "key" + std::to_string(i));
    CHECK(many.attribute_at(i).value.int_value() == static_cast<std::int64_t>(i));
  }
  many.reset();
  CHECK(many.attribute_count() == 0);
  CHECK(many.name().empty());
}

TEST_CASE("span_data keeps strings of every length byte for byte, inline and on the heap", "[telemetry]") {
  // The short copies take different paths by length (below 4, 4-7, 8-16, 17-32, longer).
  for (std::size_t n = 0; n <= 300; ++n) {
    INFO("length " << n);
    span_data d;
    std::string key(n + 1, 'k'), value(n, 'v');
    for (std::size_t i = 0; i < n; ++i)
      value[i] = static_cast<char>('a' + (i * 7 + n) % 26);
    d.set_name(value);
    CHECK(d.set_attribute(key, value, 8));
    CHECK(d.set_attribute("tail", "after", 8)); // what follows the copy is intact
    CHECK(d.name() == value);
    CHECK(d.attribute_at(0).key == key);
    CHECK(d.attribute_at(0).value.string_value() == value);
    CHECK(d.attribute_at(1).value.string_value() == "after");
    // A value viewed from the record's own text, with and without the arena growing.
    CHECK(d.set_attribute("copy", d.attribute_at(0).value.string_value(), 8));
    CHECK(d.attribute_at(2).value.string_value() == value);
  }
}

TEST_CASE("a new attribute whose value views the record's own text survives its key moving the text", "[telemetry]") {
  // Storing the key used to grow (move) the text before the value, a view of the old text, was
  // copied: a use after free (the old heap text's first bytes are the allocator's once freed).
  span_data d;
  const std::string name(300, 'n'); // on the heap (beyond the 160 inline bytes)
  d.set_name(name);
  const std::string key(1000, 'k'); // storing it moves the text
  CHECK(d.set_attribute(key, d.name(), 8));
  CHECK(d.attribute_at(0).value.string_value() == name);
  CHECK(d.attribute_at(0).key == key);
  // And a key viewed from the record's own text.
  CHECK(d.set_attribute(d.attribute_at(0).value.string_value().substr(0, 200), std::string(2000, 'v'), 8));
  CHECK(d.attribute_at(1).key == std::string(200, 'n'));
}

TEST_CASE("span status follows OpenTelemetry: message only with error, ok is final", "[telemetry]") {
  span_data d;
  d.set_status(status_code::ok, "ignored");
  CHECK(d.status_code() == status_code::ok);
  CHECK(d.status_message().empty());
  d.set_status(status_code::error, "later error");
  CHECK(d.status_code() == status_code::ok);
  span_data e;
  e.set_status(status_code::error, "boom");
  CHECK(e.status_message() == "boom");
  e.set_status(status_code::unset);
  CHECK(e.status_code() == status_code::error);
}

TEST_CASE("JSON strings are escaped and made valid UTF-8", "[telemetry]") {
  CHECK(json_of("plain") == "\"plain\"");
  CHECK(json_of("q\"b\\s/") == "\"q\\\"b\\\\s/\"");
  CHECK(json_of("\n\r\t\b\f") == "\"\\n\\r\\t\\b\\f\"");
  CHECK(json_of(std::string_view("\x00\x01\x1f\x7f", 4)) == "\"\\u0000\\u0001\\u001f\x7f\"");
  CHECK(json_of("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""); // valid UTF-8 kept
  const std::string fffd = "\xef\xbf\xbd";
  CHECK(json_of("\xff") == "\"" + fffd + "\"");                                  // never valid
  CHECK(json_of("\xc0\xaf") == "\"" + fffd + fffd + "\"");                       // overlong
  CHECK(json_of("\xed\xa0\x80") == "\"" + fffd + fffd + fffd + "\"");            // surrogate
  CHECK(json_of("\xe2\x82") == "\"" + fffd + fffd + "\"");                       // truncated
  CHECK(json_of("\xf4\x90\x80\x80") == "\"" + fffd + fffd + fffd + fffd + "\""); // above U+10FFFF
  CHECK(json_of("a\x80z") == "\"a" + fffd + "z\"");                              // stray continuation
  CHECK(json_of("\xe2\x82\xc3\xa9") == "\"" + fffd + fffd + "\xc3\xa9\"");       // a lead byte cut short by another
  CHECK(json_of("\xf0\x9f\xc0\x80") == "\"" + fffd + fffd + fffd + fffd + "\""); // bad third byte

  // Every byte value in every position: the output is always valid UTF-8 without raw controls.
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string s;
    for (int i = 0; i < 12; ++i)
      s.push_back(static_cast<char>(rng() & 0xff));
    const std::string out = json_of(s);
    std::size_t i = 1;
    bool ok = out.front() == '"' && out.back() == '"';
    while (ok && i + 1 < out.size()) {
      const auto c = static_cast<unsigned char>(out[i]);
      std::size_t len = c < 0x80 ? 1 : c >= 0xf5 ? 0 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      ok = len != 0 && c >= 0x20 && i + len < out.size();
      if (ok && c == '"')
        ok = false; // quotes are always escaped (the escape's backslash is consumed below)
      if (ok && c == '\\') {
        len = out[i + 1] == 'u' ? 6 : 2;
      } else if (ok && len > 1) {
        // Unicode table 3-7: the second byte's range depends on the lead; the others are 80..BF.
        const auto second = static_cast<unsigned char>(out[i + 1]);
        const unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
        const unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        ok = second >= lo && second <= hi;
        for (std::size_t k = 2; ok && k < len; ++k)
          ok = static_cast<unsigned char>(out[i + k]) >= 0x80 && static_cast<unsigned char>(out[i + k]) <= 0xbf;
      }
      i += len;
    }
    INFO("input round " << round);
    CHECK(ok);
  }
}

TEST_CASE("OTLP JSON encodes every span field", "[telemetry]") {
  span_data d;
  d.set_ids(*trace_id::from_hex(tp_trace), *span_id::from_hex("eee19b7ec3c1b174"), *span_id::from_hex(tp_span),
            trace_flag_sampled, true);
  d.set_trace_state("rojo=00f067aa0ba902b7");
  d.set_name("GET /items");
  d.set_kind(span_kind::server);
  d.set_start_time(1544712660000000000ull);
  d.set_end_time(1544712661000000000ull);
  d.set_attribute("s", "v\"", 8);
  d.set_attribute("b", false, 8);
  d.set_attribute("i", std::int64_t{-9007199254740993}, 8);
  d.set_attribute("d", 0.1, 8);
  d.set_attribute("nan", std::nan(""), 8);
  d.set_attribute("inf", -std::numeric_limits<double>::infinity(), 8);
  d.count_dropped_attribute();
  d.set_status(status_code::error, "boom");

  resource res;
  res.attributes.emplace_back("service.name", "demo-svc");
  res.attributes.emplace_back("pid", 42);
  instrumentation_scope scope{"demo.lib", "0.1.0", {}};
  const span_data* spans[] = {&d};
  std::string out = "prefix:";
  otlp_json_encoder().encode(span_batch_view{res, scope, spans}, out);
  const std::string expected =
      "prefix:{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"demo-svc\"}},{\"key\":\"pid\",\"value\":{\"intValue\":\"42\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":"
      "\"demo.lib\",\"version\":\"0.1.0\"},\"spans\":[{\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"spanId\":"
      "\"eee19b7ec3c1b174\",\"traceState\":\"rojo=00f067aa0ba902b7\",\"parentSpanId\":\"00f067aa0ba902b7\","
      "\"flags\":769,\"name\":\"GET /items\",\"kind\":2,\"startTimeUnixNano\":\"1544712660000000000\","
      "\"endTimeUnixNano\":\"1544712661000000000\",\"attributes\":[{\"key\":\"s\",\"value\":{\"stringValue\":"
      "\"v\\\"\"}},{\"key\":\"b\",\"value\":{\"boolValue\":false}},{\"key\":\"i\",\"value\":{\"intValue\":"
      "\"-9007199254740993\"}},{\"key\":\"d\",\"value\":{\"doubleValue\":0.1}},{\"key\":\"nan\",\"value\":"
      "{\"doubleValue\":\"NaN\"}},{\"key\":\"inf\",\"value\":{\"doubleValue\":\"-Infinity\"}}],"
      "\"droppedAttributesCount\":1,\"status\":{\"message\":\"boom\",\"code\":2}}]}]}]}";
  CHECK(out == expected);

  // A root span without trace state or attributes, status unset, no version: the optional fields go.
  span_data root;
  root.set_ids(*trace_id::from_hex(tp_trace), *span_id::from_hex(tp_span), span_id{}, 0, false);
  root.set_name("r");
  const span_data* one[] = {&root};
  out.clear();
  otlp_json_encoder().encode(span_batch_view{resource{}, instrumentation_scope{"x", "", {}}, one}, out);
  CHECK(out ==
        "{\"resourceSpans\":[{\"resource\":{},\"scopeSpans\":[{\"scope\":{\"name\":\"x\"},\"spans\":[{\"traceId\":"
        "\"4bf92f3577b34da6a3ce929d0e0e4736\",\"spanId\":\"00f067aa0ba902b7\",\"flags\":256,\"name\":\"r\","
        "\"kind\":1,\"startTimeUnixNano\":\"0\",\"endTimeUnixNano\":\"0\",\"status\":{}}]}]}]}");
}

TEST_CASE("OTLP JSON encoding on a pool gives the same bytes as on one thread", "[telemetry]") {
  std::vector<std::unique_ptr<span_data>> records;
  std::vector<const span_data*> spans;
  for (int i = 0; i < 300; ++i) {
    auto d = std::make_unique<span_data>();
    d->set_ids(trace_with_randomness(static_cast<std::uint64_t>(i) + 1), *span_id::from_hex(tp_span), span_id{},
               trace_flag_sampled, false);
    d->set_name("span " + std::to_string(i));
    d->set_attribute("i", i, 8);
    spans.push_back(d.get());
    records.push_back(std::move(d));
  }
  const resource res = resource::for_service("svc");
  const instrumentation_scope scope{"lib", "1", {}};
  std::string serial, parallel;
  otlp_json_encoder().encode(span_batch_view{res, scope, spans}, serial);
  otlpconc::work_stealing_pool pool(2);
  otlp_json_encoder on_pool(&pool);
  on_pool.encode(span_batch_view{res, scope, spans}, parallel);
  CHECK(parallel == serial);
  parallel.clear();
  on_pool.encode(span_batch_view{res, scope, spans}, parallel); // scratch buffers reused
  CHECK(parallel == serial);
  CHECK(serial.find("\"span 299\"") != std::string::npos);
}

TEST_CASE("OTLP/HTTP responses: partial success is read by a strict JSON reader", "[telemetry]") {
  using otlpconc::telemetry::detail::otlp_json_reader;
  auto read = [](std::string_view body) { return otlp_json_reader(body).partial_success(); };
  // Full success: an empty object, or no partialSuccess, or rejectedSpans 0.
  for (std::string_view ok : {"{}", " { } ", R"({"other":[1,2,{"a":null}],"x":true})", R"({"partialSuccess":{}})",
                              R"({"partialSuccess":{"rejectedSpans":"0","errorMessage":""}})"}) {
    INFO(ok);
    const auto r = read(ok);
    REQUIRE(r);
    CHECK(r->rejected == 0);
  }
  {
    const auto r =
        read(R"({"partialSuccess":{"rejectedSpans":"42","errorMessage":"too \"big\" \u00e9\ud83d\ude00\n"}})");
    REQUIRE(r);
    CHECK(r->rejected == 42);
    CHECK(r->message == "too \"big\" \xc3\xa9\xf0\x9f\x98\x80\n");
  }
  {
    const auto r = read(R"({ "partialSuccess" : { "errorMessage" : "x" , "rejectedSpans" : 7 } })"); // a number
    REQUIRE(r);
    CHECK(r->rejected == 7);
    CHECK(r->message == "x");
  }
  {
    // Text inside strings is never a key: the message mentions "rejectedSpans".
    const auto r =
        read(R"({"note":"\"rejectedSpans\":\"9\"","partialSuccess":{"errorMessage":"\"rejectedSpans\": 5"}})");
    REQUIRE(r);
    CHECK(r->rejected == 0);
  }
  {
    const auto r = read(R"({"partialSuccess":{"errorMessage":"lone \ud800 surrogate","rejectedSpans":"1"}})");
    REQUIRE(r);
    CHECK(r->message == "lone \xef\xbf\xbd surrogate"); // U+FFFD
  }
  // Malformed: nullopt (the exporter then treats the 2xx as a full success).
  for (std::string_view bad :
       {"", "[]", "{", R"({"partialSuccess":{"rejectedSpans":"-1"}})", R"({"partialSuccess":{"rejectedSpans":"1x"}})",
        R"({"partialSuccess":{"rejectedSpans":"99999999999999999999"}})", R"({"a":"unterminated})", R"({"a":1}x)",
        R"({"a":"\q"})", "{\"a\":\"raw\x01control\"}", R"({"a" 1})", R"({"a":1,})"}) {
    INFO(bad);
    CHECK_FALSE(read(bad));
  }
  // Deep nesting is refused, not a stack overflow.
  CHECK_FALSE(read(std::string(100000, '[')));
  std::string deep = "{\"a\":";
  for (int i = 0; i < 100; ++i)
    deep += "{\"a\":";
  CHECK_FALSE(read(deep + "1" + std::string(101, '}') + "}"));
}

TEST_CASE("Retry-After: delay-seconds and the three HTTP-date forms", "[telemetry]") {
  using otlpconc::telemetry::detail::parse_retry_after;
  using std::chrono::seconds;
  // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
  const std::time_t now = 1445412480;
  CHECK(parse_retry_after("120", now) == seconds(120));
  CHECK(parse_retry_after(" 0 \r\n", now) == seconds(0));
  CHECK(parse_retry_after("99999999999999", now) == seconds(999'999'999));                   // capped, not overflowed
  CHECK(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now) == seconds(30));             // IMF-fixdate
  CHECK(parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now) == seconds(60));         // RFC 850
  CHECK(parse_retry_after("Wed Oct 21 08:28:00 2015", now) == seconds(3600));                // asctime
  CHECK(parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == seconds(0));              // past: now
  CHECK(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) == seconds(999'999'999));    // capped
  CHECK(parse_retry_after("Sat, 29 Feb 2020 00:00:00 GMT", 1582934400 - 10) == seconds(10)); // a leap day
  for (std::string_view bad :
       {"", "soon", "-5", "1.5", "Wed, 21 Oct 2015 07:28:00", "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 25:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT extra"}) {
    INFO(bad);
    CHECK_FALSE(parse_retry_after(bad, now));
  }
}

// ---- span time stamps (detail/wall_clock.hpp) ------------------------------------------------------

namespace {

using otlpconc::telemetry::detail::wall_clock;

bool kernel_keeps_time_with_tsc() {
  std::ifstream in("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string name;
  const char* env = std::getenv("OTLPCONC_TELEMETRY_CLOCK");
  return in >> name && name == "tsc" && !(env != nullptr && std::strcmp(env, "system") == 0);
}

// Runs the clock for `how_long` on this thread: every time stamp lies between two reads of
// CLOCK_REALTIME (within `slack`) and none goes back. Returns the number of violations.
long check_against_realtime(std::chrono::milliseconds how_long, std::uint64_t slack) {
  long bad = 0;
  std::uint64_t last = 0;
  const auto until = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < until) {
    const std::uint64_t before = wall_clock::system_now();
    const std::uint64_t t = wall_clock::now();
    const std::uint64_t after = wall_clock::system_now();
    bad += t + slack < before || t > after + slack || t < last;
    last = t;
  }
  return bad;
}

} // namespace

TEST_CASE("span time stamps follow CLOCK_REALTIME and never go back in a thread", "[telemetry]") {
  for (bool system : {true, false}) {
    INFO("system clock forced: " << system);
    wall_clock::reset_for_tests(system);
    // 400 ms: several renewals of the thread's anchor (every 2^26 ticks, at most 67 ms at 1 GHz).
    CHECK(check_against_realtime(std::chrono::milliseconds(400), 200'000) == 0);
    const bool counter = wall_clock::current() == wall_clock::source::tsc;
    CHECK(counter == (!system && kernel_keeps_time_with_tsc()));
  }
  // Across threads: a time stamp taken after another thread's (in happens-before order) is not
  // earlier than it, within the same slack.
  std::atomic<std::uint64_t> first{0};
  std::thread([&] { first.store(wall_clock::now(), std::memory_order_release); }).join();
  CHECK(wall_clock::now() + 200'000 >= first.load(std::memory_order_acquire));
}

TEST_CASE("span time stamps give up the counter when its rate is off, with a warning", "[telemetry]") {
  if (!kernel_keeps_time_with_tsc()) {
    WARN("the kernel does not keep time with the time-stamp counter here: nothing to give up");
    return;
  }
  otlpconc_test::warning_capture warnings;
  wall_clock::reset_for_tests(false);
  (void)check_against_realtime(std::chrono::milliseconds(100), 200'000); // calibrated, in use
  REQUIRE(wall_clock::current() == wall_clock::source::tsc);
  wall_clock::skew_scale_for_tests(1.01); // as if the counter's frequency had changed by 1 %
  // The next renewal notices (at most 2^26 ticks later), and time stamps stay right meanwhile
  // within the slack (1 % of 67 ms).
  CHECK(check_against_realtime(std::chrono::milliseconds(300), 1'000'000) == 0);
  CHECK(wall_clock::current() == wall_clock::source::system);
  CHECK(warnings.any({"time-stamp counter", "0.1 %"}));
  wall_clock::reset_for_tests(false);
}

TEST_CASE("resource::create: telemetry.sdk.*, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, then the application's",
          "[telemetry]") {
  otlpconc_test::warning_capture warnings;
  auto text_of = [](const resource& r, std::string_view key) -> std::string {
    const key_value* kv = r.find(key);
    return kv != nullptr && std::holds_alternative<std::string>(kv->value) ? std::get<std::string>(kv->value)
                                                                           : std::string("<none>");
  };
  ::unsetenv("OTEL_RESOURCE_ATTRIBUTES");
  ::unsetenv("OTEL_SERVICE_NAME");
  resource r = resource::create();
  CHECK(text_of(r, "service.name") == "unknown_service");
  CHECK(text_of(r, "telemetry.sdk.name") == "otlpconc");
  CHECK(text_of(r, "telemetry.sdk.language") == "cpp");
  CHECK(text_of(r, "telemetry.sdk.version") == std::string(sdk_version));

  // Percent-decoded values; OTEL_SERVICE_NAME wins over service.name in the attributes.
  ::setenv("OTEL_RESOURCE_ATTRIBUTES",
           "service.name=from-attrs, deployment.environment=prod%2Ceu ,team=a%3Db,host.name=h1", 1);
  r = resource::create();
  CHECK(text_of(r, "service.name") == "from-attrs");
  CHECK(text_of(r, "deployment.environment") == "prod,eu");
  CHECK(text_of(r, "team") == "a=b");
  ::setenv("OTEL_SERVICE_NAME", "checkout", 1);
  r = resource::create();
  CHECK(text_of(r, "service.name") == "checkout");
  // The application's attributes win over the environment's.
  r = resource::create({{"host.name", "h2"}, {"service.version", "1.4"}});
  CHECK(text_of(r, "host.name") == "h2");
  CHECK(text_of(r, "service.version") == "1.4");
  CHECK(text_of(r, "service.name") == "checkout");
  CHECK(r.attributes.size() == 8); // no key twice
  CHECK(warnings.take().empty());

  // One malformed member discards the whole variable (the specification), with a warning.
  for (const char* bad : {"a=1,novalue,b=2", "a=1,b=%zz", "=x"}) {
    INFO(bad);
    ::setenv("OTEL_RESOURCE_ATTRIBUTES", bad, 1);
    r = resource::create();
    CHECK(text_of(r, "a") == "<none>");
    CHECK(text_of(r, "service.name") == "checkout");
    CHECK(warnings.any({"OTEL_RESOURCE_ATTRIBUTES", "ignored"}));
    warnings.take();
  }
  ::unsetenv("OTEL_RESOURCE_ATTRIBUTES");
  ::unsetenv("OTEL_SERVICE_NAME");
}
