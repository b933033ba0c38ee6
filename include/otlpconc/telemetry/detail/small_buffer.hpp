// otlpconc/telemetry/detail/small_buffer.hpp: a growable array of trivially copyable elements with inline
// storage, for the span records of the telemetry pipeline.
//
// The first N elements live inside the object (no allocation for the common span: a name, a few
// attributes); beyond that the contents move to the heap, doubling. Constructing one writes three
// words (the inline storage is left uninitialized), which is what keeps a pooled span record cheap
// to construct on every acquire. Not copyable or movable: data() may point into the object itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>

namespace otlpconc::telemetry::detail {

// Copies n bytes; short copies (names, keys, small values) are a few moves inlined instead of a
// call to memcpy. The ranges must not overlap.
inline void copy_bytes(char* out, const char* in, std::size_t n) noexcept {
  if (n >= 8 && n <= 16) {
    std::uint64_t a, b;
    std::memcpy(&a, in, 8);
    std::memcpy(&b, in + n - 8, 8);
    std::memcpy(out, &a, 8);
    std::memcpy(out + n - 8, &b, 8);
  } else if (n > 16 && n <= 32) {
    std::uint64_t a[2], b[2];
    std::memcpy(a, in, 16);
    std::memcpy(b, in + n - 16, 16);
    std::memcpy(out, a, 16);
    std::memcpy(out + n - 16, b, 16);
  } else if (n >= 4 && n < 8) {
    std::uint32_t a, b;
    std::memcpy(&a, in, 4);
    std::memcpy(&b, in + n - 4, 4);
    std::memcpy(out, &a, 4);
    std::memcpy(out + n - 4, &b, 4);
  } else if (n < 4) {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = in[i];
  } else {
    std::memcpy(out, in, n);
  }
}

template <class T, std::uint32_t N>
class small_buffer {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "small_buffer<T>: T must be trivially copyable and destructible (contents are moved with memcpy)");
  static_assert(N > 0, "small_buffer<T, N>: N must be at least 1");

 public:
  small_buffer() noexcept : data_(inline_data()) {}
  small_buffer(const small_buffer&) = delete;
  small_buffer& operator=(const small_buffer&) = delete;
  ~small_buffer() {
    if (data_ != inline_data())
      std::allocator<T>().deallocate(data_, capacity_);
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::uint32_t size() const noexcept { return size_; }
  bool on_heap() const noexcept { return data_ != inline_data(); }
  T& operator[](std::uint32_t i) noexcept { return data_[i]; }
  const T& operator[](std::uint32_t i) const noexcept { return data_[i]; }

  // Appends n uninitialized elements and returns a pointer to the first. Throws std::length_error
  // beyond 2^32 - 1 elements and std::bad_alloc; on a throw the contents are unchanged.
  T* extend(std::size_t n) {
    if (n > std::size_t{max_size} - size_)
      throw std::length_error("otlpconc: span record larger than 4 GiB");
    const auto needed = static_cast<std::uint32_t>(size_ + n);
    if (needed > capacity_)
      grow(needed);
    T* out = data_ + size_;
    size_ = needed;
    return out;
  }
  // Makes room for n more elements (the contents may move). Throws as extend() does.
  void reserve_more(std::size_t n) {
    if (room(n))
      return;
    if (n > std::size_t{max_size} - size_)
      throw std::length_error("otlpconc: span record larger than 4 GiB");
    grow(static_cast<std::uint32_t>(size_ + n));
  }
  // extend() for n elements that fit in the current storage (room(n)): nothing moves.
  bool room(std::size_t n) const noexcept { return n <= std::size_t{capacity_} - size_; }
  T* extend_in_place(std::size_t n) noexcept {
    T* out = data_ + size_;
    size_ += static_cast<std::uint32_t>(n);
    return out;
  }
  OTLPCONC_ALWAYS_INLINE void push_back(const T& v) {
    if (room(1)) [[likely]]
      *extend_in_place(1) = v;
    else
      *extend(1) = v;
  }
  void clear() noexcept { size_ = 0; }
  // Empty, and back to the inline storage (frees the heap storage, if any).
  void reset() noexcept {
    if (data_ != inline_data()) {
      std::allocator<T>().deallocate(data_, capacity_);
      data_ = inline_data();
      capacity_ = N;
    }
    size_ = 0;
  }

 private:
  static constexpr std::uint32_t max_size = std::numeric_limits<std::uint32_t>::max();

  T* inline_data() noexcept { return std::launder(reinterpret_cast<T*>(storage_)); }
  const T* inline_data() const noexcept { return std::launder(reinterpret_cast<const T*>(storage_)); }

  void grow(std::uint32_t needed) {
    std::uint64_t cap = std::uint64_t{capacity_} * 2;
    if (cap < needed)
      cap = needed;
    if (cap > max_size)
      cap = max_size;
    T* fresh = std::allocator<T>().allocate(static_cast<std::size_t>(cap));
    if (size_ != 0)
      std::memcpy(static_cast<void*>(fresh), static_cast<const void*>(data_), std::size_t{size_} * sizeof(T));
    if (data_ != inline_data())
      std::allocator<T>().deallocate(data_, capacity_);
    data_ = fresh;
    capacity_ = static_cast<std::uint32_t>(cap);
  }

  T* data_;
  std::uint32_t size_ = 0;
  std::uint32_t capacity_ = N;
  alignas(T) unsigned char storage_[N * sizeof(T)]; // uninitialized on purpose
};

} // namespace otlpconc::telemetry::detail
