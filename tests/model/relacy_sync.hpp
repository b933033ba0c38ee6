// tests/model/relacy_sync.hpp: the Relacy implementation of otlpconc's Sync policy (the model
// checking build only; nothing under include/ includes it).
//
// Same shape as otlpconc::detail::std_sync (include/otlpconc/detail/sync.hpp), so a primitive
// written as `template <class T, class Sync = detail::std_sync>` compiles unchanged with
// Sync = otlpconc_model::relacy_sync. Every access is reported to Relacy with the file, line and
// function of the *caller* (a defaulted `site` argument built from __builtin_FILE/LINE/FUNCTION,
// which g++ >= 9 and clang >= 9 evaluate at the outermost call site).
//
// Include this header first in a checker translation unit (before any otlpconc header): it pulls
// in Relacy and then removes every macro Relacy defines on ordinary names (new, delete, malloc,
// free, assert, errno, memory_order_*, pthread_*, EINVAL, ...), which would otherwise rewrite the
// library's code. Relacy's replacement of the global operator new/delete stays (it is a function
// definition, not a macro): heap use inside a simulated iteration is tracked for leaks.
#pragma once

// Standard headers used below and by the library: include them before Relacy's macros exist.
#include <atomic>
#include <cassert>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include <relacy/relacy.hpp>

// ---- undo Relacy's macros on ordinary names ---------------------------------------------------
#undef new
#undef delete
#undef malloc
#undef calloc
#undef realloc
#undef free
#undef assert
#undef errno
#undef memory_order_relaxed
#undef memory_order_consume
#undef memory_order_acquire
#undef memory_order_release
#undef memory_order_acq_rel
#undef memory_order_seq_cst
#undef VAR
#undef VAR_T
#undef TLS_T
#undef futex
#undef FUTEX_WAIT
#undef FUTEX_WAKE
#undef EINVAL
#undef ETIMEDOUT
#undef EBUSY
#undef EINTR
#undef EAGAIN
#undef EWOULDBLOCK
#undef sched_yield
#undef pthread_yield
#undef pthread_t
#undef pthread_attr_t
#undef pthread_create
#undef pthread_join
#undef pthread_mutex_t
#undef pthread_mutexattr_t
#undef pthread_mutex_init
#undef pthread_mutex_destroy
#undef pthread_mutex_lock
#undef pthread_mutex_try_lock
#undef pthread_mutex_timedlock
#undef pthread_mutex_unlock
#undef pthread_mutexattr_init
#undef pthread_mutexattr_destroy
#undef pthread_mutexattr_settype
#undef PTHREAD_MUTEX_NORMAL
#undef PTHREAD_MUTEX_ERRORCHECK
#undef PTHREAD_MUTEX_RECURSIVE
#undef PTHREAD_MUTEX_DEFAULT
#undef pthread_cond_t
#undef pthread_condattr_t
#undef pthread_cond_init
#undef pthread_cond_destroy
#undef pthread_cond_signal
#undef pthread_cond_broadcast
#undef pthread_cond_wait
#undef pthread_cond_timedwait
#undef pthread_rwlock_t
#undef pthread_rwlock_init
#undef pthread_rwlock_destroy
#undef pthread_rwlock_rdlock
#undef pthread_rwlock_tryrdlock
#undef pthread_rwlock_wrlock
#undef pthread_rwlock_trywrlock
#undef pthread_rwlock_unlock
#undef sem_t
#undef sem_init
#undef sem_destroy
#undef sem_wait
#undef sem_trywait
#undef sem_post
#undef sem_getvalue
#include <cassert> // give assert back its standard meaning (<cassert> may be included again)
#include <cerrno>  // errno is a macro from <errno.h>; the include guard keeps it undefined, so:
#ifndef errno
#define errno (*__errno_location())
#endif

#include "otlpconc/detail/asymmetric_fence.hpp" // fence_mode (included after the #undefs above)

// Relacy replaces operator new/delete(void*) (and the array forms) but not the sized deletes that
// g++ calls by default since C++14 (-fsized-deallocation): libstdc++'s own sized delete then hands
// a Relacy-allocated pointer to free() ("free(): invalid pointer"). Route them to Relacy's.
// (Alternative: compile with -fno-sized-deallocation.)
// Replacement functions must not be inline ([replacement.functions]); Relacy's are, and so are these,
// so that the header can be included by several translation units. clang says so (-Winline-new-delete)
// outside system headers; the inline definitions work with g++ 12 and clang 14 (tested).
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winline-new-delete"
#endif
#if defined(__cpp_sized_deallocation) && !defined(OTLPCONC_MODEL_NO_SIZED_DELETE)
inline void operator delete(void* p, std::size_t) noexcept {
  ::operator delete(p);
}
inline void operator delete[](void* p, std::size_t) noexcept {
  ::operator delete[](p);
}
#endif

// Relacy does not replace the over-aligned forms either (C++17: any `new T` with alignof(T) >
// __STDCPP_DEFAULT_NEW_ALIGNMENT__, e.g. a cache-line-aligned hazard record), so such objects would
// escape leak tracking. Route them through Relacy's allocator as well: over-allocate, align, and
// keep the raw pointer and its origin just below the returned address.
namespace otlpconc_model::alloc_detail {
struct header {
  void* raw;
  bool from_relacy;
};
inline void* aligned_new(std::size_t n, std::align_val_t al) {
  const std::size_t a = static_cast<std::size_t>(al) < alignof(header) ? alignof(header) : static_cast<std::size_t>(al);
  const std::size_t total = n + a + sizeof(header);
  const bool rl_owned = rl::is_ctx();
  void* raw = rl_owned ? ::operator new(total) : (std::malloc)(total);
  if (raw == nullptr)
    throw std::bad_alloc();
  auto base = reinterpret_cast<std::uintptr_t>(raw) + sizeof(header);
  auto aligned = (base + a - 1) & ~(static_cast<std::uintptr_t>(a) - 1);
  ::new (reinterpret_cast<header*>(aligned) - 1) header{raw, rl_owned};
  return reinterpret_cast<void*>(aligned);
}
inline void aligned_delete(void* p) noexcept {
  if (p == nullptr)
    return;
  header h = *(static_cast<header*>(p) - 1);
  if (h.from_relacy)
    ::operator delete(h.raw); // Relacy's: reports a free from another simulation as a double free
  else
    (std::free)(h.raw);
}
} // namespace otlpconc_model::alloc_detail
#if !defined(OTLPCONC_MODEL_NO_ALIGNED_NEW)
inline void* operator new(std::size_t n, std::align_val_t al) {
  return otlpconc_model::alloc_detail::aligned_new(n, al);
}
inline void* operator new[](std::size_t n, std::align_val_t al) {
  return otlpconc_model::alloc_detail::aligned_new(n, al);
}
inline void operator delete(void* p, std::align_val_t) noexcept {
  otlpconc_model::alloc_detail::aligned_delete(p);
}
inline void operator delete[](void* p, std::align_val_t) noexcept {
  otlpconc_model::alloc_detail::aligned_delete(p);
}
inline void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  otlpconc_model::alloc_detail::aligned_delete(p);
}
inline void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  otlpconc_model::alloc_detail::aligned_delete(p);
}
#endif
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

namespace otlpconc_model {

// Where an access comes from: evaluated at the caller (see the header comment).
struct site {
  const char* file;
  const char* func;
  unsigned line;
  constexpr site(const char* f = __builtin_FILE(), const char* fn = __builtin_FUNCTION(),
                 unsigned l = __builtin_LINE()) noexcept
      : file(f), func(fn), line(l) {}
  rl::debug_info info() const noexcept { return rl::debug_info(func, file, line); }
};

inline rl::memory_order to_rl(std::memory_order mo) noexcept {
  switch (mo) {
  case std::memory_order_relaxed:
    return rl::mo_relaxed;
  case std::memory_order_consume:
    return rl::mo_acquire; // as every compiler does
  case std::memory_order_acquire:
    return rl::mo_acquire;
  case std::memory_order_release:
    return rl::mo_release;
  case std::memory_order_acq_rel:
    return rl::mo_acq_rel;
  case std::memory_order_seq_cst:
    return rl::mo_seq_cst;
  }
  return rl::mo_seq_cst;
}

// The failure order std derives from a single CAS order.
inline std::memory_order cas_failure_order(std::memory_order mo) noexcept {
  if (mo == std::memory_order_acq_rel)
    return std::memory_order_acquire;
  if (mo == std::memory_order_release)
    return std::memory_order_relaxed;
  return mo;
}

// Relacy accepts only success/failure pairs of C++11 (failure no stronger than success, and no
// acquire failure with a release/relaxed success). C++17 allows any pair; strengthen the success
// order to cover the failure order, which is what hardware does anyway.
inline std::memory_order cas_success_order(std::memory_order s, std::memory_order f) noexcept {
  auto has_acquire = [](std::memory_order m) {
    return m == std::memory_order_acquire || m == std::memory_order_consume || m == std::memory_order_acq_rel ||
           m == std::memory_order_seq_cst;
  };
  if (f == std::memory_order_seq_cst)
    return std::memory_order_seq_cst;
  if (has_acquire(f) && !has_acquire(s))
    return s == std::memory_order_release ? std::memory_order_acq_rel : std::memory_order_acquire;
  return s;
}

inline constexpr int max_model_threads = 32;

// std::atomic<T> look-alike over rl::atomic<T>. T: integral, pointer or enum (Relacy prints the
// values in its history, so T must be streamable; enums are stored as their underlying type).
template <class T>
class rl_atomic {
  // Enums are stored as their underlying type, pointers as void* (Relacy's events hold non-const
  // values, and print them).
  using S =
      std::conditional_t<std::is_enum_v<T>, std::underlying_type<T>,
                         std::conditional_t<std::is_pointer_v<T>, std::type_identity<void*>, std::type_identity<T>>>;
  using stored = typename S::type;
  static stored in(T v) noexcept {
    if constexpr (std::is_pointer_v<T>)
      return const_cast<void*>(static_cast<const volatile void*>(v));
    else
      return static_cast<stored>(v);
  }
  static T out(stored v) noexcept {
    if constexpr (std::is_pointer_v<T>)
      return static_cast<T>(v);
    else
      return static_cast<T>(v);
  }
  static constexpr bool arithmetic = std::is_integral_v<T> && !std::is_same_v<T, bool>;
  using diff_t = stored;

 public:
  using value_type = T;
  static constexpr bool is_always_lock_free = true;

  // C++20: a default-constructed std::atomic<T> holds T{}. The initial value is a relaxed store of
  // the constructing thread (one entry in Relacy's store history).
  rl_atomic(site s = site()) noexcept { a_.store(stored{}, rl::mo_relaxed, s.info()); }
  rl_atomic(T v, site s = site()) noexcept { a_.store(in(v), rl::mo_relaxed, s.info()); }
  rl_atomic(const rl_atomic&) = delete;
  rl_atomic& operator=(const rl_atomic&) = delete;

  bool is_lock_free() const noexcept { return true; }

  T load(std::memory_order mo = std::memory_order_seq_cst, site s = site()) const noexcept {
    return out(a_.load(to_rl(mo), s.info()));
  }
  void store(T v, std::memory_order mo = std::memory_order_seq_cst, site s = site()) noexcept {
    a_.store(in(v), to_rl(mo), s.info());
  }
  operator T() const noexcept { return load(); }
  T operator=(T v) noexcept {
    store(v);
    return v;
  }
  T exchange(T v, std::memory_order mo = std::memory_order_seq_cst, site s = site()) noexcept {
    return out(a_.exchange(in(v), to_rl(mo), s.info()));
  }

  bool compare_exchange_strong(T& expected, T desired, std::memory_order success, std::memory_order failure,
                               site s = site()) noexcept {
    return cas<false>(expected, desired, success, failure, s);
  }
  bool compare_exchange_strong(T& expected, T desired, std::memory_order mo = std::memory_order_seq_cst,
                               site s = site()) noexcept {
    return cas<false>(expected, desired, mo, cas_failure_order(mo), s);
  }
  // Relacy makes a weak CAS fail spuriously (once per atomic per execution under full search).
  bool compare_exchange_weak(T& expected, T desired, std::memory_order success, std::memory_order failure,
                             site s = site()) noexcept {
    return cas<true>(expected, desired, success, failure, s);
  }
  bool compare_exchange_weak(T& expected, T desired, std::memory_order mo = std::memory_order_seq_cst,
                             site s = site()) noexcept {
    return cas<true>(expected, desired, mo, cas_failure_order(mo), s);
  }

  T fetch_add(diff_t v, std::memory_order mo = std::memory_order_seq_cst,
              site s = site()) noexcept requires arithmetic {
    return out(a_.fetch_add(v, to_rl(mo), s.info()));
  }
  T fetch_sub(diff_t v, std::memory_order mo = std::memory_order_seq_cst,
              site s = site()) noexcept requires arithmetic {
    return out(a_.fetch_sub(v, to_rl(mo), s.info()));
  }
  T fetch_and(T v, std::memory_order mo = std::memory_order_seq_cst, site s = site()) noexcept requires arithmetic {
    return a_.fetch_and(v, to_rl(mo), s.info());
  }
  T fetch_or(T v, std::memory_order mo = std::memory_order_seq_cst, site s = site()) noexcept requires arithmetic {
    return a_.fetch_or(v, to_rl(mo), s.info());
  }
  T fetch_xor(T v, std::memory_order mo = std::memory_order_seq_cst, site s = site()) noexcept requires arithmetic {
    return a_.fetch_xor(v, to_rl(mo), s.info());
  }
  T operator++() noexcept requires arithmetic { return fetch_add(1) + 1; }
  T operator++(int) noexcept requires arithmetic { return fetch_add(1); }
  T operator--() noexcept requires arithmetic { return fetch_sub(1) - 1; }
  T operator--(int) noexcept requires arithmetic { return fetch_sub(1); }
  T operator+=(diff_t v) noexcept requires arithmetic { return fetch_add(v) + v; }
  T operator-=(diff_t v) noexcept requires arithmetic { return fetch_sub(v) - v; }

  // C++20 wait/notify, modelled on the guarantee of [atomics.wait]: a waiter that blocked after
  // observing value X is woken by any notify that happens after a store later than X. The check
  // of the current value and the blocking are one step (no scheduling point between them), and
  // the check reads the newest value in modification order without creating any happens-before
  // edge (no hidden fence, unlike Relacy's own futex, which adds seq_cst fences on both sides).
  // The caller-visible result is then re-read with `mo`, as std::atomic::wait does.
  void wait(T old, std::memory_order mo = std::memory_order_seq_cst, site s = site()) const noexcept {
    for (;;) {
      if (load(mo, s) != old) // a scheduling point: the waiter may be preempted right after it
        return;
      rl::context& c = rl::ctx();
      if (out(a_.debug_value()) == old) { // the "kernel" check, atomic with the blocking below
        auto& self = const_cast<rl_atomic&>(*this);
        const auto me = static_cast<rl::thread_id_t>(rl::thread_index());
        RL_ASSERT(self.nwaiters_ < max_model_threads);
        self.waiters_[self.nwaiters_++] = me;
        if (c.park_current_thread(false, false, false, s.info()) != rl::unpark_reason_normal)
          self.remove_waiter(me);
      }
      // Changed (EAGAIN) or woken: re-read. A Relacy yield guarantees the next load returns a
      // store newer than those this thread saw before it (otherwise the model could keep
      // returning the stale `old` and report a livelock no real futex has).
      rl::yield(1, s.info());
    }
  }
  void notify_one(site s = site()) noexcept { wake(1, s); }
  void notify_all(site s = site()) noexcept { wake(max_model_threads, s); }

  T debug_value() const noexcept { return out(a_.debug_value()); } // newest value, no model effect

 private:
  template <bool Weak>
  bool cas(T& expected, T desired, std::memory_order success, std::memory_order failure, site s) noexcept {
    stored e = in(expected);
    const bool ok = a_.compare_exchange(rl::bool_t<Weak>(), e, in(desired), to_rl(cas_success_order(success, failure)),
                                        to_rl(failure), s.info());
    expected = out(e);
    return ok;
  }

  void wake(int count, site s) noexcept {
    rl::context& c = rl::ctx();
    c.sched();
    while (count-- > 0 && nwaiters_ > 0) {
      // Which waiter a notify_one wakes is a choice the search explores.
      const int i = nwaiters_ == 1 ? 0 : static_cast<int>(rl::rand(static_cast<unsigned>(nwaiters_)));
      const rl::thread_id_t th = waiters_[i];
      remove_waiter(th);
      c.unpark_thread(th, false, s.info());
    }
  }
  void remove_waiter(rl::thread_id_t th) noexcept {
    for (int i = 0; i < nwaiters_; ++i)
      if (waiters_[i] == th) {
        for (int j = i + 1; j < nwaiters_; ++j)
          waiters_[j - 1] = waiters_[j];
        --nwaiters_;
        return;
      }
  }

  mutable rl::atomic<stored> a_;
  rl::thread_id_t waiters_[max_model_threads] = {};
  int nwaiters_ = 0;
};

// Plain shared data: rl::var<T> (race and use-after-free checks) behind `=` and conversion to T.
// Write `T x = v;`, not `auto x = v;` (auto would copy the wrapper).
template <class T>
class rl_var {
 public:
  rl_var(site s = site()) : v_(T{}) { (void)s; }
  rl_var(T v, site s = site()) : v_(v) { (void)s; }
  rl_var(const rl_var&) = delete;
  rl_var& operator=(const rl_var&) = delete;
  operator T() const { return load(); }
  rl_var& operator=(T v) {
    store(v);
    return *this;
  }
  T load(site s = site()) const { return v_(s.info()).load(); }
  void store(T v, site s = site()) { v_(s.info()).store(v); }

 private:
  rl::var<T> v_;
};

// ---- per-thread state ------------------------------------------------------------------------
// A real thread_local would be one object shared by all simulated threads (they are fibers of one
// OS thread) and would survive from one explored execution to the next. Instead: one lazily
// constructed T per (Tag, T, simulated thread index). thread_exit() destroys the calling thread's
// objects (as a thread's exit runs its thread_local destructors, inside the thread); end_execution()
// destroys whatever is left, so every execution starts from fresh state and no rl::atomic inside a T
// outlives the execution (Relacy would report it as a resource leak).
namespace tls_detail {
struct registry_entry {
  void (*destroy)(int thread); // destroys the slot of one thread, if alive
  void (*abandon)();           // forgets every slot without running destructors
  registry_entry* next;
};
inline registry_entry* registry = nullptr;

template <class Tag, class T>
struct slots {
  alignas(T) static inline unsigned char storage[max_model_threads][sizeof(T)];
  static inline bool alive[max_model_threads];
  static inline bool registered = false;
  static void destroy(int th) {
    if (alive[th]) {
      alive[th] = false;
      std::launder(reinterpret_cast<T*>(storage[th]))->~T();
    }
  }
  static void abandon() {
    for (bool& a : alive)
      a = false;
  }
  static inline registry_entry entry{&destroy, &abandon, nullptr};

  static T& get(int th) {
    if (!registered) {
      registered = true;
      entry.next = registry;
      registry = &entry;
    }
    if (!alive[th]) {
      ::new (static_cast<void*>(storage[th])) T{};
      alive[th] = true;
    }
    return *std::launder(reinterpret_cast<T*>(storage[th]));
  }
};
} // namespace tls_detail

// rl::mutex / rl::condition_variable behind the std interface (std::lock_guard, std::unique_lock).
class rl_mutex {
 public:
  void lock(site s = site()) { m_.lock(s.info()); }
  bool try_lock(site s = site()) { return m_.try_lock(s.info()); } // may fail spuriously, as std allows
  void unlock(site s = site()) { m_.unlock(s.info()); }
  rl::mutex& native() noexcept { return m_; }

 private:
  rl::mutex m_;
};

class rl_condition_variable {
 public:
  void notify_one(site s = site()) { cv_.notify_one(s.info()); }
  void notify_all(site s = site()) { cv_.notify_all(s.info()); }
  void wait(std::unique_lock<rl_mutex>& lk, site s = site()) { cv_.wait(lk.mutex()->native(), s.info()); }
  template <class Pred>
  void wait(std::unique_lock<rl_mutex>& lk, Pred pred, site s = site()) {
    while (!pred())
      wait(lk, s);
  }

 private:
  rl::condition_variable cv_;
};

struct relacy_sync {
  static constexpr bool is_model = true;

  template <class T>
  using atomic = rl_atomic<T>;
  template <class T>
  using var = rl_var<T>;

  static void thread_fence(std::memory_order mo, site s = site()) noexcept {
    if (mo != std::memory_order_relaxed) // a relaxed fence is a no-op in C++; Relacy rejects it
      rl::atomic_thread_fence(to_rl(mo), s.info());
  }
  // Orders nothing between threads: recorded in the history only (a compiler barrier).
  static void signal_fence(std::memory_order mo, site s = site()) noexcept {
    rl::atomic_signal_fence(to_rl(mo), s.info());
  }
  // membarrier(PRIVATE_EXPEDITED) / FlushProcessWriteBuffers: Relacy's system-wide fence makes
  // every simulated thread synchronise with every other at this point.
  static void system_fence(site s = site()) noexcept { rl::systemwide_fence(s.info()); }

  static void yield(site s = site()) noexcept { rl::yield(1, s.info()); }
  // A point where a preemption matters: a yield, which makes Relacy's random scheduler run the
  // other threads from here (it otherwise switches at random on every step, so a window that
  // another thread needs twenty steps to exploit is almost never left open long enough).
  // A test may turn it into a plain step (preempt_yields = false, reset by begin_execution()):
  // Relacy lets a thread that yielded read only the newest store of a variable it had seen before
  // the yield, so a yield here hides a stale read made after it (a walk that follows a relaxed link
  // and then reads an old resize sequence) from every search.
  static inline bool preempt_yields = true;
  static void preempt(site s = site()) noexcept {
    if (preempt_yields)
      rl::yield(1, s.info());
  }

  template <class Tag, class T>
  static T& tls() {
    return tls_detail::slots<Tag, T>::get(static_cast<int>(rl::thread_index()));
  }
  // Call at the end of each simulated thread's body: runs its per-thread destructors there.
  static void thread_exit() {
    const int th = static_cast<int>(rl::thread_index());
    for (auto* e = tls_detail::registry; e != nullptr; e = e->next)
      e->destroy(th);
  }
  // Call at the start of each execution (the harness does it in its constructor). Objects still
  // alive here belong to an execution that failed (Relacy abandons a failed execution without
  // destroying anything, then replays it): they are forgotten, not destroyed, since the atomics and
  // memory they refer to belonged to that execution.
  static void begin_execution() {
    preempt_yields = true;
    for (auto* e = tls_detail::registry; e != nullptr; e = e->next)
      e->abandon();
  }
  // Call once per execution after the threads finished (the harness does it in its destructor).
  static void end_execution() {
    for (auto* e = tls_detail::registry; e != nullptr; e = e->next)
      for (int th = 0; th < max_model_threads; ++th)
        e->destroy(th);
  }

  using mutex = rl_mutex;
  using condition_variable = rl_condition_variable;

  // A small number per simulated thread: its index (deterministic from one execution to the next).
  static std::size_t thread_number() noexcept { return static_cast<std::size_t>(rl::thread_index()); }

  // The hazard pointers' store-load barrier. The mode is chosen by the test (both are checked):
  // asymmetric, the reader's side orders nothing between threads (a compiler barrier) and the
  // reclaimer's side is a system-wide fence, how membarrier(PRIVATE_EXPEDITED) behaves; symmetric,
  // both sides are seq_cst fences.
  static inline otlpconc::detail::fence_mode mode = otlpconc::detail::fence_mode::symmetric;
  static otlpconc::detail::fence_mode hazard_fence_mode() noexcept { return mode; }
  template <otlpconc::detail::fence_mode Mode>
  static void light_fence(site s = site()) noexcept {
    if constexpr (Mode == otlpconc::detail::fence_mode::asymmetric)
      signal_fence(std::memory_order_seq_cst, s);
    else
      thread_fence(std::memory_order_seq_cst, s);
  }
  static bool heavy_fence(site s = site()) noexcept {
    if (mode == otlpconc::detail::fence_mode::asymmetric)
      system_fence(s);
    else
      thread_fence(std::memory_order_seq_cst, s);
    return true;
  }

  // The default hazard pointer domain of the model: one per explored execution, made by the
  // harness (model.hpp), so that nothing outlives an execution.
  static inline void* default_domain = nullptr;
  template <class Domain>
  static Domain& default_hazard_domain() noexcept {
    return *static_cast<Domain*>(default_domain);
  }
};

} // namespace otlpconc_model
