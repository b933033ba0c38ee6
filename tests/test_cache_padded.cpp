#include "otlpconc/cache_padded.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

template <class T>
bool lines_are_disjoint(const T* a, const T* b) {
  auto lo = reinterpret_cast<std::uintptr_t>(a);
  auto hi = reinterpret_cast<std::uintptr_t>(b);
  return lo / otlpconc::cache_line_size != hi / otlpconc::cache_line_size &&
         (lo + sizeof(T) - 1) / otlpconc::cache_line_size < hi / otlpconc::cache_line_size;
}

} // namespace

TEST_CASE("cache_line_size is a power of two covering the prefetch pair", "[cache_padded]") {
  static_assert((otlpconc::cache_line_size & (otlpconc::cache_line_size - 1)) == 0);
#if defined(__x86_64__) || defined(__aarch64__)
  STATIC_REQUIRE(otlpconc::cache_line_size == 128);
#endif
}

TEST_CASE("cache_padded gives each element its own lines", "[cache_padded]") {
  STATIC_REQUIRE(alignof(otlpconc::cache_padded<char>) == otlpconc::cache_line_size);
  STATIC_REQUIRE(sizeof(otlpconc::cache_padded<char>) == otlpconc::cache_line_size);
  STATIC_REQUIRE(sizeof(otlpconc::cache_padded<char[otlpconc::cache_line_size + 1]>) == 2 * otlpconc::cache_line_size);

  otlpconc::cache_padded<std::atomic<int>> array[3];
  REQUIRE(lines_are_disjoint(&array[0], &array[1]));
  REQUIRE(lines_are_disjoint(&array[1], &array[2]));
  REQUIRE(reinterpret_cast<std::uintptr_t>(&array[0]) % otlpconc::cache_line_size == 0);

  // Heap allocation honours the over-alignment (C++17 aligned new), in vectors too.
  auto heap = std::make_unique<otlpconc::cache_padded<int>>(7);
  REQUIRE(reinterpret_cast<std::uintptr_t>(heap.get()) % otlpconc::cache_line_size == 0);
  std::vector<otlpconc::cache_padded<long>> v(5);
  for (auto& e : v)
    REQUIRE(reinterpret_cast<std::uintptr_t>(&e) % otlpconc::cache_line_size == 0);
}

TEST_CASE("cache_padded forwards construction and access", "[cache_padded]") {
  otlpconc::cache_padded<std::string> s(std::in_place, std::size_t{3}, 'x');
  REQUIRE(*s == "xxx");
  REQUIRE(s->size() == 3);
  s.get() += "y";
  REQUIRE(*s == "xxxy");

  const otlpconc::cache_padded<int> c(42);
  REQUIRE(*c == 42);
  REQUIRE(c.get() == 42);

  otlpconc::cache_padded<int> zero;
  REQUIRE(*zero == 0); // value-initialized, never garbage
}
