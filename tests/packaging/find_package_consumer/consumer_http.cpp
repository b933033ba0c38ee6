// Built by the packaging tests when the installed or in-tree otlpconc has the OTLP/HTTP exporter
// (target otlpconc::otlp_http, or pkg-config's otlpconc-otlp-http). Exports one span to a port
// nothing listens on: the export must fail with the transport error, not crash or hang. The
// package's compression (OTLPCONC_HAVE_ZLIB / OTLPCONC_HAVE_ZSTD, set by the package files when the
// build used zlib / libzstd) must reach this program: each codec it announces is used once, so its
// library must be linked.
#include <otlpconc/telemetry/otlp_http_exporter.hpp>
#include <otlpconc/telemetry/span_data.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int export_once(otlpconc::telemetry::otlp_compression compression) {
  using namespace otlpconc::telemetry;
  otlp_http_exporter_options options;
  options.compression = compression;
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
  std::printf("otlp_http_exporter linked (compression %d); export to a closed port failed as expected: %s\n",
              static_cast<int>(compression), r.error.c_str());
  return 0;
}

int main() {
  using otlpconc::telemetry::otlp_compression;
  int failed = export_once(otlp_compression::none);
#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
  failed |= export_once(otlp_compression::gzip);
#endif
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
  failed |= export_once(otlp_compression::zstd);
#endif
  return failed;
}
