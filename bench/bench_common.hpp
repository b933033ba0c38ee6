// Shared main for the benchmark binaries. Names follow "<component>/<implementation>/<config>", which
// scripts/bench_report.py parses into one table per component.
#pragma once

#include <benchmark/benchmark.h>

#ifndef OTLPCONC_BENCH_COMPILER
#define OTLPCONC_BENCH_COMPILER "unknown"
#endif

#define OTLPCONC_BENCHMARK_MAIN()                                                                                      \
  int main(int argc, char** argv) {                                                                                    \
    benchmark::Initialize(&argc, argv);                                                                                \
    if (benchmark::ReportUnrecognizedArguments(argc, argv))                                                            \
      return 1;                                                                                                        \
    benchmark::AddCustomContext("compiler", OTLPCONC_BENCH_COMPILER);                                                  \
    benchmark::RunSpecifiedBenchmarks();                                                                               \
    benchmark::Shutdown();                                                                                             \
    return 0;                                                                                                          \
  }
