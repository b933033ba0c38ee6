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
#else
#define OTLPCONC_LIKELY(x) (x)
#define OTLPCONC_UNLIKELY(x) (x)
#define OTLPCONC_NOINLINE
#endif
