// otlpconc/detail/counter_cells.hpp: per-thread cells behind otlpconc::sharded_counter.
//
// Every live sharded_counter owns a small integer id. Every thread that has added to a counter owns
// a cell array indexed by id; the thread is the only writer of its cells while their counters live
// (the zeroing below happens when no add can run), so an add is a relaxed load and store on memory
// no other thread writes. A reader sums the counter's base and the cell at its id in every live
// thread.
//
// Each thread's array is reserved once, at its first add, for max_counter_cells ids: address space
// only (an anonymous private mapping, zero-filled on first touch), so a thread pays physical memory
// only for the pages of the ids it touches, and the array never moves or grows. That keeps the
// hot path to one thread-local load (the array pointer, null until registered) with no size check;
// see counter.hpp. Counters beyond max_counter_cells live at once get no cells and add to their
// base atomically (correct, slower).
//
// One process-wide registry (leaked on purpose, so threads that exit after static destruction still
// find it) holds the list of live threads and the id -> counter table under a mutex. The mutex is
// taken only on slow paths: a thread's first add, a read, a reset, counter construction and
// destruction, and thread exit. No add takes it once its thread is registered.
//
// Invariants, all maintained under the registry mutex:
//  - on thread exit the cells are folded into their counters' bases and the record is unlinked in
//    one critical section: a reader sees each add either in a cell or in a base, never in both and
//    never in neither;
//  - when a counter is destroyed its cell is zeroed in every live thread, so an id reused by a new
//    counter starts from zero.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <mutex>
#include <new>
#include <queue>
#include <stdexcept>
#include <vector>

#if __has_include(<sys/mman.h>)
#include <sys/mman.h>
#define OTLPCONC_HAVE_MMAP 1
#else
#define OTLPCONC_HAVE_MMAP 0
#endif

namespace otlpconc::detail {

// Ids that get per-thread cells: 2^20 live counters, 8 MiB of address space per registered thread
// (of which only touched pages become resident).
inline constexpr std::uint32_t max_counter_cells = 1u << 20;

// A cell is a plain uint64_t accessed only through std::atomic_ref, so the reserved zero pages need
// no constructor to run over them (uint64_t is an implicit-lifetime type).
using counter_cell = std::atomic_ref<std::uint64_t>;
static_assert(counter_cell::required_alignment <= alignof(std::uint64_t) && counter_cell::is_always_lock_free,
              "sharded_counter needs lock-free 64-bit atomics");

struct counter_thread_record {
  std::uint64_t* cells = nullptr;
  counter_thread_record* prev = nullptr;
  counter_thread_record* next = nullptr;
};

// The hot path reads only `cells`: trivially constructible and destructible, constant-initialized,
// so accessing it is a plain TLS access with no guard or wrapper call.
struct counter_thread_view {
  std::uint64_t* cells;          // null until this thread registers, and again after it exits
  counter_thread_record* record; // this thread's entry in the registry
  bool no_cells;                 // this thread will not get cells again: its cells were folded at
                                 // thread exit, or its reservation failed (adds go to the base)
};
inline constinit thread_local counter_thread_view counter_tls{nullptr, nullptr, false};

class counter_registry {
 public:
  static counter_registry& instance() {
    // Leaked on purpose: threads may exit (and fold their cells) after static destruction.
    static counter_registry* const registry = new counter_registry;
    return *registry;
  }

  std::uint32_t acquire_id(std::atomic<std::uint64_t>* base) {
    std::lock_guard lock(mutex_);
    if (!free_ids_.empty()) {
      std::uint32_t id = free_ids_.top();
      free_ids_.pop();
      bases_[id] = base;
      return id;
    }
    if (bases_.size() >= std::numeric_limits<std::uint32_t>::max())
      throw std::length_error("otlpconc::sharded_counter: too many live counters");
    bases_.push_back(base);
    return static_cast<std::uint32_t>(bases_.size() - 1);
  }

  void release_id(std::uint32_t id) noexcept {
    std::lock_guard lock(mutex_);
    if (id < max_counter_cells)
      for (counter_thread_record* t = threads_; t != nullptr; t = t->next) {
        counter_cell cell(t->cells[id]);
        // (C1) relaxed: the counter is being destroyed, so by the caller's contract no thread adds
        // to it concurrently; the registry mutex orders this store before any later reader (C6).
        // Only non-zero cells are written, so untouched pages stay unbacked.
        if (cell.load(std::memory_order_relaxed) != 0)
          cell.store(0, std::memory_order_relaxed);
      }
    bases_[id] = nullptr;
    try {
      free_ids_.push(id);
    } catch (...) {
      // Could not record the id for reuse: it is simply never reused.
    }
  }

  // Sum of the base and every live thread's cell for `id`.
  std::uint64_t sum(std::uint32_t id, const std::atomic<std::uint64_t>& base) const {
    std::lock_guard lock(mutex_);
    return sum_locked(id, base);
  }

  // Subtracts the current total from the base, so the counter reads zero once writers are
  // quiescent. Adds that race with the reset are either cleared or kept, never half-applied.
  void reset(std::uint32_t id, std::atomic<std::uint64_t>& base) {
    std::lock_guard lock(mutex_);
    // (C2) relaxed RMW: concurrent fallback adds to the base (S2) are not lost; the mutex orders
    // this with every other reader and with thread-exit folding (C4).
    base.fetch_sub(sum_locked(id, base), std::memory_order_relaxed);
  }

  // Registers the calling thread (reserves its cell array). Returns false when it cannot: the
  // reservation failed, or the thread is past its exit fold; the caller then adds to the counter's
  // base instead.
  bool register_thread() noexcept {
    counter_thread_view& view = counter_tls;
    if (view.no_cells)
      return false;
    if (view.cells != nullptr)
      return true;
    std::uint64_t* cells = reserve_cells();
    if (cells == nullptr) {
      view.no_cells = true; // sticky: do not retry the mmap on every add
      return false;
    }
    try {
      std::lock_guard lock(mutex_);
      auto* rec = new counter_thread_record{cells, nullptr, threads_};
      if (threads_ != nullptr)
        threads_->prev = rec;
      threads_ = rec;
      view.record = rec;
      view.cells = cells;
      static thread_local exit_guard guard; // destroyed at thread exit: folds this thread's cells
      guard.armed = true;
      return true;
    } catch (...) {
      release_cells(cells);
      view.no_cells = true;
      return false;
    }
  }

  std::size_t live_threads() const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (counter_thread_record* t = threads_; t != nullptr; t = t->next)
      ++n;
    return n;
  }

 private:
  static constexpr std::size_t reservation_bytes = std::size_t{max_counter_cells} * sizeof(std::uint64_t);

  struct exit_guard {
    bool armed = false;
    ~exit_guard() {
      if (armed)
        instance().thread_exit();
    }
  };

  counter_registry() = default;

  std::uint64_t sum_locked(std::uint32_t id, const std::atomic<std::uint64_t>& base) const {
    // (C6) relaxed loads: each cell has one writer and the value is a statistic; read-write
    // coherence guarantees that an add which happens-before this read is seen. Thread records and
    // folded bases only change under the mutex we hold.
    std::uint64_t total = base.load(std::memory_order_relaxed);
    if (id < max_counter_cells)
      for (counter_thread_record* t = threads_; t != nullptr; t = t->next)
        total += counter_cell(t->cells[id]).load(std::memory_order_relaxed);
    return total;
  }

  void thread_exit() noexcept {
    counter_thread_view& view = counter_tls;
    std::lock_guard lock(mutex_);
    counter_thread_record* rec = view.record;
    view = counter_thread_view{nullptr, nullptr, true};
    if (rec == nullptr)
      return;
    const std::size_t ids = std::min<std::size_t>(bases_.size(), max_counter_cells);
    for (std::size_t i = 0; i < ids; ++i) {
      // Own cell: this thread is its only writer (S1).
      std::uint64_t v = counter_cell(rec->cells[i]).load(std::memory_order_relaxed);
      if (v != 0 && bases_[i] != nullptr)
        // (C4) relaxed RMW under the mutex: the fold and the unlink below are one critical
        // section, so readers (C6) count this value exactly once.
        bases_[i]->fetch_add(v, std::memory_order_relaxed);
    }
    if (rec->prev != nullptr)
      rec->prev->next = rec->next;
    else
      threads_ = rec->next;
    if (rec->next != nullptr)
      rec->next->prev = rec->prev;
    release_cells(rec->cells);
    delete rec;
  }

  static std::uint64_t* reserve_cells() noexcept {
#if OTLPCONC_HAVE_MMAP
#ifdef MAP_NORESERVE
    constexpr int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
#else
    constexpr int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#endif
    void* p = ::mmap(nullptr, reservation_bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<std::uint64_t*>(p);
#else
    return static_cast<std::uint64_t*>(std::calloc(max_counter_cells, sizeof(std::uint64_t)));
#endif
  }

  static void release_cells(std::uint64_t* cells) noexcept {
#if OTLPCONC_HAVE_MMAP
    ::munmap(cells, reservation_bytes);
#else
    std::free(cells);
#endif
  }

  mutable std::mutex mutex_;
  std::vector<std::atomic<std::uint64_t>*> bases_; // id -> base of the live counter, or nullptr
  std::priority_queue<std::uint32_t, std::vector<std::uint32_t>, std::greater<>> free_ids_; // lowest first
  counter_thread_record* threads_ = nullptr;
};

} // namespace otlpconc::detail
