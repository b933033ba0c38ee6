// An allocator that counts live allocations across all its rebinds (containers allocate nodes, not
// T), so tests can check that memory is returned.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>

namespace otlpconc::testing {

inline std::atomic<std::int64_t> live_allocations{0};
inline std::atomic<std::int64_t> total_allocations{0}; // allocate() calls ever made

template <class T>
struct counting_allocator {
  using value_type = T;
  counting_allocator() = default;
  template <class U>
  counting_allocator(const counting_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    // relaxed: a tally read after the threads that allocate are joined
    live_allocations.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    total_allocations.fetch_add(1, std::memory_order_relaxed);
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

// The same, declared stateful (instances are not interchangeable), as a user's arena allocator
// would be: containers must then free through it and may not pool its memory.
template <class T>
struct stateful_counting_allocator : counting_allocator<T> {
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = stateful_counting_allocator<U>;
  };
  stateful_counting_allocator() = default;
  template <class U>
  stateful_counting_allocator(const stateful_counting_allocator<U>&) noexcept {}
};

// std::allocator that throws std::bad_alloc while fail_allocations is set. Stateful, so containers
// do not pool its memory and every node allocation reaches it.
inline std::atomic<bool> fail_allocations{false};

template <class T>
struct failing_allocator : std::allocator<T> {
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = failing_allocator<U>;
  };
  failing_allocator() = default;
  template <class U>
  failing_allocator(const failing_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (fail_allocations.load(std::memory_order_relaxed)) // relaxed: set by the test's own thread
      throw std::bad_alloc();
    return std::allocator<T>::allocate(n);
  }
};

} // namespace otlpconc::testing
