// The sharded LRU's benchmark workload, shared by bench_lru and probe_lru_cost: the Zipf(0.99)
// key streams, and the single-mutex LRU (std::list + std::unordered_map) every figure is compared
// with.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

namespace otlpconc_bench {

inline constexpr std::size_t key_space = 1'000'000;
inline constexpr std::size_t capacity = 100'000;
inline constexpr std::size_t trace_length = std::size_t{1} << 22;

// Zipf(0.99) streams: ranks drawn by inverting the CDF, then scattered over the 32-bit space by an
// odd multiplier (a bijection), so hot keys are not small consecutive integers. `measured` is what
// the threads replay; `warmup` is an independent stream of the same distribution that fills the
// cache before the timed loop (so no thread starts on the very keys the warm-up inserted).
struct zipf_streams {
  std::vector<std::uint64_t> measured, warmup;
};
inline const zipf_streams& trace_streams() {
  static const zipf_streams streams = [] {
    std::vector<double> cdf(key_space);
    double sum = 0;
    for (std::size_t i = 0; i < key_space; ++i)
      cdf[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), 0.99));
    std::mt19937_64 rng(20261123);
    std::uniform_real_distribution<double> u(0.0, sum);
    auto draw = [&](std::size_t n) {
      std::vector<std::uint64_t> out(n);
      for (auto& k : out) {
        const auto rank = static_cast<std::uint64_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
        k = (rank * 0x9E3779B1u) & 0xffffffffu;
      }
      return out;
    };
    zipf_streams z;
    z.measured = draw(trace_length);
    z.warmup = draw(trace_length / 4);
    return z;
  }();
  return streams;
}

// The hand-written LRU most users write.
class mutex_lru {
 public:
  explicit mutex_lru(std::size_t cap) : capacity_(cap) { index_.reserve(cap + 1); }
  std::optional<std::uint64_t> get(std::uint64_t key) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end())
      return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }
  void put(std::uint64_t key, std::uint64_t value) {
    std::lock_guard lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) {
      it->second->second = value;
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    order_.emplace_front(key, value);
    index_.emplace(key, order_.begin());
    if (index_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }

 private:
  std::mutex mutex_;
  std::size_t capacity_;
  std::list<std::pair<std::uint64_t, std::uint64_t>> order_;
  std::unordered_map<std::uint64_t, std::list<std::pair<std::uint64_t, std::uint64_t>>::iterator> index_;
};

} // namespace otlpconc_bench
