// otlpconc/detail/config.hpp: compiler and platform detection shared by every header.
//
// OTLPCONC_TSAN is 1 when the translation unit is built with ThreadSanitizer (g++ or clang).
// ThreadSanitizer does not model std::atomic_thread_fence (g++ says so with -Wtsan). Fences stay in
// TSAN builds (they are real barriers on the hardware). Where a fence creates a happens-before edge
// that TSAN must see to avoid false reports (the Chase-Lev deque, the event counts), the
// neighbouring access is strengthened under TSAN with OTLPCONC_TSAN_ORDER below. Where a fence only
// orders a store before a load and creates no happens-before edge (the hazard pointers' protect /
// scan barrier: the slots' release/acquire pairs carry the edges TSAN checks), nothing is
// strengthened. The project's TSAN preset builds with clang, which does not warn.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define OTLPCONC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OTLPCONC_TSAN 1
#endif
#endif
#ifndef OTLPCONC_TSAN
#define OTLPCONC_TSAN 0
#endif

// OTLPCONC_ASAN is 1 when the translation unit is built with AddressSanitizer (its interface
// header is then included: work_stealing_pool.hpp maps its fake-stack frames to real ones).
#if defined(__SANITIZE_ADDRESS__)
#define OTLPCONC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OTLPCONC_ASAN 1
#endif
#endif
#ifndef OTLPCONC_ASAN
#define OTLPCONC_ASAN 0
#endif
#if OTLPCONC_ASAN
#include <sanitizer/asan_interface.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define OTLPCONC_LIKELY(x) __builtin_expect(!!(x), 1)
#define OTLPCONC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define OTLPCONC_NOINLINE __attribute__((noinline))
#define OTLPCONC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define OTLPCONC_LIKELY(x) (x)
#define OTLPCONC_UNLIKELY(x) (x)
#define OTLPCONC_NOINLINE
#define OTLPCONC_ALWAYS_INLINE inline
#endif

// OTLPCONC_TSAN_ORDER(usual, under_tsan): the memory order of an atomic access next to a
// standalone std::atomic_thread_fence that provides its ordering (Chase-Lev deque, the pool's event
// count). In normal builds it is `usual` (often relaxed: the fence does the work). ThreadSanitizer
// does not model fences, so under TSAN it is `under_tsan`, the order that makes the access itself
// carry the synchronization the fence provides, so TSAN sees it. The fences stay in both builds.
// This macro is the only place where otlpconc strengthens a memory order for TSAN's sake.
#define OTLPCONC_TSAN_ORDER(usual, under_tsan) (OTLPCONC_TSAN ? (under_tsan) : (usual))
