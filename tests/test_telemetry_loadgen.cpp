// Unit tests of the load generator's latency histogram (tools/latency_histogram.hpp).
#include "../tools/latency_histogram.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>

using otlpconc::loadgen::latency_histogram;

TEST_CASE("latency_histogram: quantiles within 1/64 of the value and never below it, the max exact", "[telemetry]") {
  latency_histogram h;
  CHECK(h.quantile(0.5) == 0);
  for (std::uint64_t v = 1; v <= 100; ++v) // small values are exact
    h.record(v);
  CHECK(h.quantile(0.5) == 50);
  CHECK(h.quantile(0.99) == 99);
  CHECK(h.max() == 100);
  latency_histogram big;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const std::uint64_t v = rng() % 1'000'000'000'000ull; // up to 1000 s
    latency_histogram one;
    one.record(v);
    const std::uint64_t q = one.quantile(0.5);
    INFO(v);
    CHECK(q >= v);
    CHECK(q - v <= v / 64 + 1);
    big.record(v);
  }
  CHECK(big.count() == 10000);
  latency_histogram huge; // beyond 2^40 ns: clamped into the top bucket, the maximum kept exactly
  huge.record(std::uint64_t{1} << 50);
  CHECK(huge.max() == std::uint64_t{1} << 50);
  CHECK(huge.quantile(1.0) == std::uint64_t{1} << 50);
}

TEST_CASE("latency_histogram: merged histograms count everything", "[telemetry]") {
  latency_histogram a, b;
  a.record(5);
  b.record(500);
  b.record(7);
  a.merge(b);
  CHECK(a.count() == 3);
  CHECK(a.max() == 500);
  CHECK(a.quantile(0.5) == 7);
  CHECK(a.quantile(1.0) == 500);
}
