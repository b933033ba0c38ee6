// An allocator that counts live allocations across all its rebinds (containers allocate nodes, not
// T), so tests can check that memory is returned.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace otlpconc::testing {

inline std::atomic<std::int64_t> live_allocations{0};

template <class T>
struct counting_allocator {
  using value_type = T;
  counting_allocator() = default;
  template <class U>
  counting_allocator(const counting_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    // relaxed: a tally read after the threads that allocate are joined
    live_allocations.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    live_allocations.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>&) const noexcept {
    return true;
  }
};

} // namespace otlpconc::testing
