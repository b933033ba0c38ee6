// Unit tests of propagation.hpp: W3C Trace Context and Baggage through carriers, OTEL_PROPAGATORS.
#include "warning_capture.hpp"

#include "otlpconc/telemetry/propagation.hpp"
#include "otlpconc/telemetry/tracer.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

using namespace otlpconc::telemetry;
using namespace std::chrono_literals;

namespace {
const std::string tp_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string tp_span = "00f067aa0ba902b7";
const std::string traceparent = "00-" + tp_trace + "-" + tp_span + "-01";
} // namespace

TEST_CASE("trace context: a server continues the caller's trace and passes it on", "[telemetry]") {
  w3c_trace_context_propagator w3c;
  // Header names are case-insensitive (HTTP).
  header_carrier incoming{{"TraceParent", traceparent}, {"TRACESTATE", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"}};
  const propagation_context in = w3c.extract(incoming);
  REQUIRE(in.span.valid());
  CHECK(in.span.remote);
  CHECK(in.span.sampled());
  CHECK(in.span.trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  tracer t(processor);
  header_carrier outgoing;
  {
    auto server = t.start_span("GET /items", {.parent = &in.span, .kind = span_kind::server});
    REQUIRE(server.is_recording());
    CHECK(server.context().trace_id == in.span.trace_id);
    w3c.inject({server.context(), {}}, outgoing);
    const std::string expected = "00-" + tp_trace + "-" + server.context().span_id.to_hex() + "-01";
    CHECK(outgoing.get("traceparent") == expected);
    CHECK(outgoing.get("tracestate") == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  }
  REQUIRE(processor.force_flush(5s));
  const auto spans = exporter->spans();
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].parent_span_id.to_hex() == tp_span);
  CHECK(spans[0].parent_is_remote);
  CHECK(w3c.fields() == std::vector<std::string>{"traceparent", "tracestate"});
}

TEST_CASE("trace context: what cannot be parsed leaves the context alone, and nothing invalid is injected",
          "[telemetry]") {
  w3c_trace_context_propagator w3c;
  for (const std::string& bad : std::vector<std::string>{
           "", "garbage", "00-" + tp_trace + "-" + tp_span + "-1", "ff-" + tp_trace + "-" + tp_span + "-01",
           "00-00000000000000000000000000000000-" + tp_span + "-01", "00-" + tp_trace + "-0000000000000000-01",
           "00-" + std::string(32, 'A') + "-" + tp_span + "-01", "00-" + tp_trace + "-" + tp_span + "-01-extra"}) {
    INFO(bad);
    header_carrier c{{"traceparent", bad}};
    propagation_context ctx;
    w3c.extract(c, ctx);
    CHECK_FALSE(ctx.span.valid());
  }
  // A malformed tracestate is dropped, the traceparent kept (W3C).
  header_carrier c{{"traceparent", traceparent}, {"tracestate", "UPPER=1"}};
  const propagation_context ctx = w3c.extract(c);
  CHECK(ctx.span.valid());
  CHECK(ctx.span.trace_state.empty());
  // An invalid span context injects nothing (and an absent header extracts nothing).
  header_carrier out;
  w3c.inject(propagation_context{}, out);
  CHECK(out.headers().empty());
  CHECK_FALSE(w3c.extract(out).span.valid());
}

TEST_CASE("baggage: percent-encoded values, properties, malformed members skipped, limits", "[telemetry]") {
  baggage b = baggage::from_header(
      " userId=alice , serverNode=DF%2028,isProduction=false;ttl=10;secret , bad member, =novalue, k=v\"q, dup=1, "
      "pct=%zz, dup=2 ,, x=1;=bad");
  CHECK(b.get("userId") == "alice");
  CHECK(b.get("serverNode") == "DF 28");
  CHECK(b.get("isProduction") == "false");
  CHECK(b.entries()[2].metadata == "ttl=10;secret");
  CHECK(b.get("dup") == "2"); // the last one wins
  CHECK_FALSE(b.get("bad member"));
  CHECK_FALSE(b.get("k"));   // '"' is not a baggage octet
  CHECK_FALSE(b.get("pct")); // a bad escape
  CHECK_FALSE(b.get("x"));   // malformed properties
  CHECK(b.size() == 4);

  // Values round-trip through the header whatever their bytes (UTF-8, separators, '%').
  baggage out;
  out.set("k1", "a,b;c=d e%f\"g\\h");
  out.set("k2", "caf\xc3\xa9");
  out.set("k3", "v", "p=1;flag");
  const std::string header = out.to_header();
  CHECK(header == "k1=a%2Cb%3Bc=d%20e%25f%22g%5Ch,k2=caf%C3%A9,k3=v;p=1;flag");
  const baggage back = baggage::from_header(header);
  CHECK(back.get("k1") == "a,b;c=d e%f\"g\\h");
  CHECK(back.get("k2") == "caf\xc3\xa9");
  CHECK(back.entries()[2].metadata == "p=1;flag");
  CHECK_THROWS_AS(out.set("not a token", "v"), std::invalid_argument);
  CHECK_THROWS_AS(out.set("k", "v", ";;"), std::invalid_argument);
  CHECK(out.remove("k2"));
  CHECK_FALSE(out.remove("k2"));

  // Limits: at most 180 members either way; members past 8192 bytes are left out whole.
  std::string many;
  for (int i = 0; i < 200; ++i)
    many += "k" + std::to_string(i) + "=v,";
  CHECK(baggage::from_header(many).size() == baggage::max_members);
  baggage big;
  for (int i = 0; i < 200; ++i)
    big.set("k" + std::to_string(i), "v");
  CHECK(baggage::from_header(big.to_header()).size() == baggage::max_members);
  baggage wide;
  wide.set("a", std::string(5000, 'x'));
  wide.set("b", std::string(5000, 'y')); // would pass 8192 bytes: left out
  wide.set("c", "z");
  const std::string wide_header = wide.to_header();
  CHECK(wide_header.size() <= baggage::max_header_bytes);
  const baggage wide_back = baggage::from_header(wide_header);
  CHECK(wide_back.get("a"));
  CHECK_FALSE(wide_back.get("b"));
  CHECK(wide_back.get("c") == "z");
  // A header longer than 8192 bytes: the member that crosses the limit is dropped, not cut short.
  const std::string long_header = "a=" + std::string(8000, 'x') + ",b=" + std::string(400, 'y') + ",c=1";
  const baggage cut = baggage::from_header(long_header);
  CHECK(cut.get("a"));
  CHECK_FALSE(cut.get("b"));
  CHECK_FALSE(cut.get("c"));
}

TEST_CASE("baggage propagator and the composite carry both headers", "[telemetry]") {
  composite_propagator both(
      {std::make_shared<w3c_trace_context_propagator>(), std::make_shared<w3c_baggage_propagator>()});
  header_carrier in{{"traceparent", traceparent}, {"baggage", "tenant=acme,plan=gold"}};
  propagation_context ctx = both.extract(in);
  CHECK(ctx.span.valid());
  CHECK(ctx.baggage.get("tenant") == "acme");
  ctx.baggage.set("hop", "2");
  header_carrier out;
  both.inject(ctx, out);
  CHECK(out.get("traceparent") == traceparent);
  CHECK(out.get("baggage") == "tenant=acme,plan=gold,hop=2");
  CHECK(both.fields() == std::vector<std::string>{"traceparent", "tracestate", "baggage"});
  // Empty baggage: no header.
  header_carrier none;
  w3c_baggage_propagator().inject(propagation_context{}, none);
  CHECK(none.headers().empty());
  CHECK_THROWS_AS(composite_propagator({nullptr}), std::invalid_argument);
}

TEST_CASE("OTEL_PROPAGATORS selects the propagators, and what cannot be used is a warning", "[telemetry]") {
  otlpconc_test::warning_capture warnings;
  header_carrier in{{"traceparent", traceparent}, {"baggage", "k=v"}};
  ::unsetenv("OTEL_PROPAGATORS");
  auto p = propagators_from_env(); // the default: tracecontext,baggage
  CHECK(p->fields() == std::vector<std::string>{"traceparent", "tracestate", "baggage"});
  ::setenv("OTEL_PROPAGATORS", " Baggage ", 1);
  p = propagators_from_env();
  CHECK(p->fields() == std::vector<std::string>{"baggage"});
  CHECK_FALSE(p->extract(in).span.valid());
  CHECK(p->extract(in).baggage.get("k") == "v");
  ::setenv("OTEL_PROPAGATORS", "none", 1);
  p = propagators_from_env();
  CHECK(p->size() == 0);
  CHECK_FALSE(p->extract(in).span.valid());
  CHECK(warnings.take().empty());
  ::setenv("OTEL_PROPAGATORS", "tracecontext,b3,tracecontext,nonsense", 1);
  p = propagators_from_env();
  CHECK(p->fields() == std::vector<std::string>{"traceparent", "tracestate"}); // once
  CHECK(warnings.any({"OTEL_PROPAGATORS", "'b3'", "not implemented"}));
  CHECK(warnings.any({"OTEL_PROPAGATORS", "'nonsense'", "not a propagator"}));
  warnings.take();
  ::setenv("OTEL_PROPAGATORS", "none,baggage", 1);
  CHECK(propagators_from_env()->size() == 1);
  CHECK(warnings.any({"OTEL_PROPAGATORS", "'none'"}));
  ::unsetenv("OTEL_PROPAGATORS");
}

TEST_CASE("OTEL_SDK_DISABLED=true: the tracer records nothing and passes its parent's context on", "[telemetry]") {
  otlpconc_test::warning_capture warnings;
  auto exporter = std::make_shared<in_memory_exporter>();
  batch_span_processor processor(exporter);
  ::setenv("OTEL_SDK_DISABLED", "TRUE", 1);
  tracer t(processor, tracer_options::from_env());
  auto parent = parse_traceparent(traceparent);
  {
    auto root = t.start_span("root");
    CHECK_FALSE(root.is_recording());
    CHECK_FALSE(root.context().valid()); // a no-op root has no context to pass on
    auto child = t.start_span("child", {.parent = &*parent});
    CHECK_FALSE(child.is_recording());
    CHECK(child.context().span_id == parent->span_id); // the parent's context, unchanged
    CHECK(format_traceparent(child.context()) == traceparent);
  }
  REQUIRE(processor.force_flush(5s));
  CHECK(exporter->size() == 0);
  CHECK(processor.stats().accepted == 0);
  ::setenv("OTEL_SDK_DISABLED", "false", 1);
  CHECK_FALSE(tracer_options::from_env().disabled);
  CHECK(warnings.take().empty());
  ::setenv("OTEL_SDK_DISABLED", "yes", 1); // not a boolean: a warning, and base's value
  CHECK(tracer_options::from_env({.disabled = true}).disabled);
  CHECK(warnings.any({"OTEL_SDK_DISABLED", "'yes'"}));
  ::unsetenv("OTEL_SDK_DISABLED");
  CHECK_FALSE(tracer_options::from_env().disabled);
}
