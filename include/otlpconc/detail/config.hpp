// otlpconc/detail/config.hpp: compiler and platform detection shared by every header.
//
// OTLPCONC_TSAN is 1 when the translation unit is built with ThreadSanitizer (g++ or clang).
// ThreadSanitizer does not model std::atomic_thread_fence; the headers that rely on standalone
// fences use this to substitute an equivalent ordered atomic operation (see each header), so that
// TSAN runs are clean without suppressions.
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
