// otlpconc/telemetry/detail/id_random.hpp: the per-thread random generator behind trace and span ids.
//
// xoshiro256** (Blackman and Vigna), one state per thread, seeded once from std::random_device mixed
// with the thread's address and the clock (so threads never share a sequence even where
// random_device is deterministic). About 1 ns per 64 bits, no shared state, no lock. Not a
// cryptographic generator: ids must be unique and uniformly random (the trace_id_ratio sampler reads
// their low 56 bits), not unpredictable.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace otlpconc::telemetry::detail {

class id_random {
 public:
  id_random() noexcept {
    std::uint64_t seed = 0;
    try {
      std::random_device device;
      seed = (std::uint64_t{device()} << 32) ^ device();
    } catch (...) { // no entropy source: the address and the clock still separate threads
    }
    seed ^= reinterpret_cast<std::uintptr_t>(this) * 0x9e3779b97f4a7c15ull;
    seed ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    for (auto& word : s_)
      word = splitmix(seed);
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  static id_random& local() noexcept {
    static thread_local id_random generator;
    return generator;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  std::uint64_t s_[4];
};

} // namespace otlpconc::telemetry::detail
