// otlpconc/detail/asymmetric_fence.hpp: the store-load barrier of hazard pointers, made cheap for
// readers.
//
// A hazard pointer reader stores the pointer it is about to use, then re-reads the source; a
// reclaimer unlinks an object, then reads every hazard. Each side needs a store-load barrier between
// its two steps (otherwise both may read stale values and the object is freed while used).
//
// asymmetric mode (Linux with membarrier): the reader's barrier is a compiler barrier only
//   (light_fence), and the reclaimer calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (heavy_fence),
//   which makes every running thread of the process execute a full memory barrier, so each reader
//   is on one side of it: either its hazard store is visible to the reclaimer's reads, or its
//   re-read of the source happens after the barrier and sees the unlink.
// symmetric mode (fallback): both sides issue std::atomic_thread_fence(seq_cst); the usual
//   fence-fence argument of the C++ memory model.
//
// The mode is chosen once per process, before the first hazard pointer operation: asymmetric when
// membarrier's PRIVATE_EXPEDITED command can be registered, symmetric otherwise, under
// ThreadSanitizer (which models neither fences nor membarrier; the hazard slots' release/acquire
// pairs give it the happens-before edges it checks), or when the environment variable
// OTLPCONC_HAZARD_POINTER_FENCE=symmetric asks for it (to measure or test the fallback).
#pragma once

#include "otlpconc/detail/config.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__linux__) && __has_include(<linux/membarrier.h>)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#define OTLPCONC_HAVE_MEMBARRIER 1
#else
#define OTLPCONC_HAVE_MEMBARRIER 0
#endif

namespace otlpconc::detail {

enum class fence_mode { asymmetric, symmetric };

inline fence_mode choose_fence_mode() noexcept {
  const char* forced = std::getenv("OTLPCONC_HAZARD_POINTER_FENCE");
  if (forced != nullptr && std::strcmp(forced, "symmetric") == 0)
    return fence_mode::symmetric;
#if OTLPCONC_TSAN || !OTLPCONC_HAVE_MEMBARRIER
  return fence_mode::symmetric;
#else
  long supported = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (supported < 0 || (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
    return fence_mode::symmetric;
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
    return fence_mode::symmetric;
  return fence_mode::asymmetric;
#endif
}

// The process-wide mode: decided once (thread-safe static initialization), identical for every
// reader and reclaimer afterwards.
inline fence_mode current_fence_mode() noexcept {
  static const fence_mode mode = choose_fence_mode();
  return mode;
}

// Reader side, between publishing a hazard and re-reading its source.
template <fence_mode Mode>
inline void light_fence() noexcept {
  if constexpr (Mode == fence_mode::asymmetric)
    std::atomic_signal_fence(std::memory_order_seq_cst); // compiler barrier; heavy_fence does the rest
  else
    std::atomic_thread_fence(std::memory_order_seq_cst); // pairs with the fence in heavy_fence
}

// Reclaimer side, between taking retired objects and reading the hazards. Returns false if the
// barrier could not be issued (membarrier failed after a successful registration: the kernel may
// return ENOMEM); the caller must then reclaim nothing, since readers had no barrier.
inline bool heavy_fence() noexcept {
#if OTLPCONC_HAVE_MEMBARRIER && !OTLPCONC_TSAN
  if (current_fence_mode() == fence_mode::asymmetric)
    return ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst); // pairs with light_fence<symmetric>
  return true;
}

} // namespace otlpconc::detail
