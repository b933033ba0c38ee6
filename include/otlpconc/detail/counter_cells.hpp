// otlpconc/detail/counter_cells.hpp: per-thread cells behind otlpconc::sharded_counter.
//
// Every live sharded_counter owns a small integer id. Every thread that has added to a counter owns
// an array of cells indexed by id; the thread is the only writer of its cells (except for the
// zeroing described below), so an add is a relaxed load and store on a line no other thread
// writes. A reader sums the counter's base and the cell at its id in every live thread.
//
// One process-wide registry (leaked on purpose, so threads that exit after static destruction still
// find it) holds the list of live threads and the id -> counter table under a mutex. The mutex is
// taken only on slow paths: a thread's first add to a counter whose id is past its array, a read,
// a reset, counter construction and destruction, and thread exit. The hot path takes no lock.
//
// Invariants, all maintained under the registry mutex:
//  - a thread record's cell array is replaced only by its owner and only under the mutex, so readers
//    (who hold the mutex) never see an array being freed;
//  - on thread exit the cells are folded into their counters' bases and the record is unlinked in
//    one critical section: a reader sees each increment either in a cell or in a base, never in
//    both and never in neither;
//  - when a counter is destroyed its cells are zeroed in every live thread, so an id reused by a new
//    counter starts from zero.
#pragma once

#include "otlpconc/cache_padded.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <new>
#include <queue>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace otlpconc::detail {

using counter_cell = std::atomic<std::uint64_t>;

struct counter_thread_record {
  counter_cell* cells = nullptr; // guarded by the registry mutex for every thread but the owner's reads
  std::size_t size = 0;
  counter_thread_record* prev = nullptr;
  counter_thread_record* next = nullptr;
};

// The hot path reads only this: trivially constructible and destructible, constant-initialized,
// so accessing it is a plain TLS access with no guard or wrapper call.
struct counter_thread_view {
  counter_cell* cells;
  std::size_t size;
  counter_thread_record* record;
  bool exited; // set once this thread's cells have been folded at thread exit
};
inline constinit thread_local counter_thread_view counter_tls{nullptr, 0, nullptr, false};

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
    for (counter_thread_record* t = threads_; t != nullptr; t = t->next)
      if (id < t->size)
        // (C1) relaxed: the counter is being destroyed, so by the caller's contract no thread adds
        // to it concurrently; the registry mutex orders this store before any later reader.
        t->cells[id].store(0, std::memory_order_relaxed);
    bases_[id] = nullptr;
    try {
      free_ids_.push(id);
    } catch (...) {
      // Could not record the id for reuse: it is simply never reused (a few bytes per thread).
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
    // (C2) relaxed RMW: concurrent fallback adds to the base (C5) are not lost; the mutex orders
    // this with every other reader and with thread-exit folding (C4).
    base.fetch_sub(sum_locked(id, base), std::memory_order_relaxed);
  }

  // Makes the calling thread's cell array cover `id`. Returns false when it cannot (allocation
  // failed, or the thread is exiting); the caller then adds to the counter's base instead.
  bool ensure_cell(std::uint32_t id) noexcept {
    counter_thread_view& view = counter_tls;
    if (view.exited)
      return false;
    try {
      std::lock_guard lock(mutex_);
      if (view.record == nullptr) {
        auto* rec = new counter_thread_record;
        rec->next = threads_;
        if (threads_ != nullptr)
          threads_->prev = rec;
        threads_ = rec;
        view.record = rec;
        static thread_local exit_guard guard; // destroyed at thread exit: folds this thread's cells
        guard.armed = true;
      }
      counter_thread_record* rec = view.record;
      std::size_t want = std::max<std::size_t>({std::size_t{id} + 1, rec->size * 2, cells_per_line});
      want = (want + cells_per_line - 1) / cells_per_line * cells_per_line; // whole lines only
      counter_cell* fresh = allocate_cells(want);
      for (std::size_t i = 0; i < rec->size; ++i)
        // (C3) relaxed: only the owner (this thread) writes its cells, and other threads read them
        // only under the mutex we hold, so the copy sees every value and nobody sees it half done.
        fresh[i].store(rec->cells[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
      free_cells(rec->cells, rec->size);
      rec->cells = fresh;
      rec->size = want;
      view.cells = fresh;
      view.size = want;
      return true;
    } catch (...) {
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
  static constexpr std::size_t cells_per_line = cache_line_size / sizeof(counter_cell);

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
    // coherence guarantees that an add which happens-before this read is seen. Thread records,
    // arrays and folded bases only change under the mutex we hold.
    std::uint64_t total = base.load(std::memory_order_relaxed);
    for (counter_thread_record* t = threads_; t != nullptr; t = t->next)
      if (id < t->size)
        total += t->cells[id].load(std::memory_order_relaxed);
    return total;
  }

  void thread_exit() noexcept {
    counter_thread_view& view = counter_tls;
    std::lock_guard lock(mutex_);
    counter_thread_record* rec = view.record;
    view = counter_thread_view{nullptr, 0, nullptr, true};
    if (rec == nullptr)
      return;
    for (std::size_t i = 0; i < rec->size; ++i) {
      std::uint64_t v = rec->cells[i].load(std::memory_order_relaxed); // own cell, see (C3)
      if (v != 0 && i < bases_.size() && bases_[i] != nullptr)
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
    free_cells(rec->cells, rec->size);
    delete rec;
  }

  static counter_cell* allocate_cells(std::size_t n) {
    void* raw = ::operator new (n * sizeof(counter_cell), std::align_val_t{cache_line_size});
    auto* cells = static_cast<counter_cell*>(raw);
    for (std::size_t i = 0; i < n; ++i)
      new (&cells[i]) counter_cell(0);
    return cells;
  }

  static void free_cells(counter_cell* cells, std::size_t n) noexcept {
    if (cells == nullptr)
      return;
    static_assert(std::is_trivially_destructible_v<counter_cell>);
    (void)n; // clang 14 does not declare sized deallocation without -fsized-deallocation
    ::operator delete (static_cast<void*>(cells), std::align_val_t{cache_line_size});
  }

  mutable std::mutex mutex_;
  std::vector<std::atomic<std::uint64_t>*> bases_; // id -> base of the live counter, or nullptr
  std::priority_queue<std::uint32_t, std::vector<std::uint32_t>, std::greater<>> free_ids_; // lowest first
  counter_thread_record* threads_ = nullptr;
};

} // namespace otlpconc::detail
