// A latency histogram in the manner of HdrHistogram: log-linear buckets (each power of two split
// in 64 linear sub-buckets), so every recorded value is kept to within 1/64 (1.6 %) of itself,
// from 1 ns to 2^40 ns (about 18 minutes; larger values are clamped into the top bucket, and the
// exact maximum is kept apart). Recording is two shifts and an increment; one histogram per thread,
// merged at the end. Percentiles report the upper bound of the bucket that holds the rank, as
// HdrHistogram's highest-equivalent value does (never below the true value). The load generator
// charges the spans a stall made it skip itself (it knows their scheduled times), which is what
// HdrHistogram's corrected mode estimates when the schedule is unknown.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

namespace otlpconc::loadgen {

class latency_histogram {
 public:
  static constexpr int sub_bits = 6; // 64 sub-buckets per power of two
  static constexpr std::uint64_t sub_count = std::uint64_t{1} << sub_bits;
  static constexpr int max_bits = 40;

  latency_histogram() : counts_(bucket_of(max_value) + 1, 0) {}

  void record(std::uint64_t ns) noexcept {
    ++counts_[bucket_of(std::min(ns, max_value))];
    ++total_;
    max_ = std::max(max_, ns);
  }
  void merge(const latency_histogram& other) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
  }

  std::uint64_t count() const noexcept { return total_; }
  std::uint64_t max() const noexcept { return max_; }
  // The value at quantile q (0..1): the smallest bucket bound with at least q of the values at or
  // below it; 0 when empty.
  std::uint64_t quantile(double q) const noexcept {
    if (total_ == 0)
      return 0;
    const auto rank = static_cast<std::uint64_t>(std::max(1.0, q * static_cast<double>(total_) + 0.5));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= std::min(rank, total_)) // (the top bucket holds the clamped values: its bound is the maximum)
        return i + 1 == counts_.size() ? max_ : std::min(upper_bound_of(i), max_);
    }
    return max_;
  }

 private:
  static constexpr std::uint64_t max_value = (std::uint64_t{1} << max_bits) - 1;

  // Values below 2 * sub_count map to themselves; above, a power of two's range is split in
  // sub_count buckets.
  static std::size_t bucket_of(std::uint64_t v) noexcept {
    if (v < 2 * sub_count)
      return static_cast<std::size_t>(v);
    const int shift = static_cast<int>(std::bit_width(v)) - 1 - sub_bits; // >= 1
    return static_cast<std::size_t>(static_cast<std::uint64_t>(shift + 1) * sub_count + ((v >> shift) - sub_count));
  }
  static std::uint64_t upper_bound_of(std::size_t bucket) noexcept {
    if (bucket < 2 * sub_count)
      return bucket;
    const std::uint64_t shift = bucket / sub_count - 1;
    const std::uint64_t mantissa = bucket % sub_count + sub_count;
    return ((mantissa + 1) << shift) - 1;
  }

  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

} // namespace otlpconc::loadgen
