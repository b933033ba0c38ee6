// Built by the packaging tests when the installed or in-tree otlpconc has the OTLP/HTTP exporter
// (target otlpconc::otlp_http, or pkg-config's otlpconc-otlp-http). Exports one span to a port
// nothing listens on: the export must fail with the transport error, not crash or hang.
#include <otlpconc/telemetry/otlp_http_exporter.hpp>
#include <otlpconc/telemetry/span_data.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int main() {
  using namespace otlpconc::telemetry;
  otlp_http_exporter_options options;
  options.endpoint = "http://127.0.0.1:1/v1/traces";
  options.max_attempts = 1;
  options.timeout = std::chrono::milliseconds(5000);
  otlp_http_exporter exporter(options);
  span_data span;
  span.set_name("packaging");
  const span_data* spans[] = {&span};
  const resource res = resource::for_service("consumer");
  const instrumentation_scope scope{"consumer", "1"};
  const export_result r =
      exporter.export_spans({res, scope, spans}, std::chrono::steady_clock::now() + std::chrono::seconds(5));
  if (r.status == export_status::success || r.error.find("otlp_http_exporter") == std::string::npos) {
    std::fprintf(stderr, "expected a failed export naming the exporter, got status %d: %s\n",
                 static_cast<int>(r.status), r.error.c_str());
    return 1;
  }
  std::printf("otlp_http_exporter linked; export to a closed port failed as expected: %s\n", r.error.c_str());
  return 0;
}
