// otlpconc/cache_padded.hpp: give a value its own cache line(s).
//
// What: otlpconc::cache_line_size, the false-sharing granule this library pads to, and
//   otlpconc::cache_padded<T>, a wrapper that aligns T to that granule and rounds its size up to a
//   multiple of it, so no other object shares a line with it.
// When to use: a value written by one thread and read or written by others (an atomic counter, a
//   queue's head and tail) that sits next to other hot data.
// When not to: read-mostly data, or large arrays of small values where padding each element
//   multiplies memory by 128/sizeof(T); pad groups instead.
// Guarantees: alignof(cache_padded<T>) >= cache_line_size and sizeof is a multiple of it, for any T,
//   in arrays and in heap allocations (C++17 aligned new).
// Requirements on T: an object type (not a reference, not an array of unknown bound).
//
// cache_line_size is 128 on x86-64, aarch64 and ppc64: x86's adjacent-line prefetcher pulls lines
// in pairs, several aarch64 cores and POWER have 128-byte lines; 64 elsewhere. Define OTLPCONC_CACHE_LINE_SIZE
// (a power of two) before including any otlpconc header to override it. We do not use
// std::hardware_destructive_interference_size: g++ warns when it is used in a header
// (-Winterference-size, the value may differ between TUs) and clang 14 does not provide it.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace otlpconc {

#if defined(OTLPCONC_CACHE_LINE_SIZE)
inline constexpr std::size_t cache_line_size = OTLPCONC_CACHE_LINE_SIZE;
#elif defined(__x86_64__) || defined(_M_X64) || defined(__aarch64__) || defined(_M_ARM64) || defined(__powerpc64__)
inline constexpr std::size_t cache_line_size = 128;
#else
inline constexpr std::size_t cache_line_size = 64;
#endif

static_assert(cache_line_size >= alignof(std::max_align_t) && (cache_line_size & (cache_line_size - 1)) == 0,
              "OTLPCONC_CACHE_LINE_SIZE must be a power of two no smaller than alignof(std::max_align_t)");

template <class T>
class alignas(cache_line_size) cache_padded {
  static_assert(std::is_object_v<T> && !std::is_unbounded_array_v<T>,
                "cache_padded<T>: T must be an object type (not a reference or an array of unknown bound)");

 public:
  using value_type = T;

  constexpr cache_padded() noexcept(
      std::is_nothrow_default_constructible_v<T>) requires std::is_default_constructible_v<T> : value_() {}

  template <class... Args>
    requires std::is_constructible_v<T, Args...>
  constexpr explicit cache_padded(std::in_place_t, Args&&... args) noexcept(std::is_nothrow_constructible_v<T, Args...>)
      : value_(std::forward<Args>(args)...) {}

  template <class U>
    requires std::is_constructible_v<T, U> &&(!std::is_same_v<std::remove_cvref_t<U>, cache_padded>)&&(
        !std::is_same_v<
            std::remove_cvref_t<U>,
            std::in_place_t>)constexpr explicit cache_padded(U&& value) noexcept(std::is_nothrow_constructible_v<T, U>)
        : value_(std::forward<U>(value)) {}

    constexpr T& get() noexcept {
      return value_;
    }
    constexpr const T& get() const noexcept {
      return value_;
    }
    constexpr T& operator*() noexcept {
      return value_;
    }
    constexpr const T& operator*() const noexcept {
      return value_;
    }
    constexpr T* operator->() noexcept {
      return &value_;
    }
    constexpr const T* operator->() const noexcept {
      return &value_;
    }

   private:
    T value_;
};

} // namespace otlpconc
