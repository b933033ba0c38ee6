// otlpconc/counter.hpp: statistics counters that do not become the bottleneck.
//
// What:
//   padded_counter   one std::atomic<int64_t> alone on its cache line(s). Every add is an atomic
//                    read-modify-write on that one line, so it returns the previous value and
//                    totally orders all adds, but concurrent writers serialize on the line.
//   sharded_counter  a LongAdder-style counter with one cell per (thread, counter), each thread's
//                    cells on lines no other thread writes. An add is a plain load and store on the
//                    thread's own cell: no lock prefix, no shared line. A read sums the cells.
// When to use: sharded_counter for statistics written from many threads and read rarely (events
//   accepted, dropped, exported). padded_counter when writers are few, or when the add must return a
//   value (sequence numbers) or reads are as frequent as writes.
// When not to: sharded_counter::load() takes a process-wide lock and walks every thread that ever
//   added to any sharded_counter and is still alive: O(threads). Do not poll it in a hot loop, do
//   not use it for values you branch on (limits, reference counts); use padded_counter there.
//   Constructing and destroying a sharded_counter also takes that lock: do not create them per
//   request.
// Guarantees:
//   padded_counter: lock-free (wait-free where the platform's fetch_add is), linearizable.
//   sharded_counter::add is wait-free once the calling thread is registered; a thread's first add
//   to any sharded_counter registers it (the registry lock and one mmap, once per thread).
//   add never allocates a cell it cannot get: on allocation failure, or while the thread is being
//   torn down, it falls back to an atomic add on the counter's own base. load() returns the exact
//   sum once writers are quiescent, and otherwise never misses an add that happens-before the call.
//   Threads may come and go freely: an exiting thread folds its cells into its counters.
//   Arithmetic wraps modulo 2^64 (never undefined behaviour).
// Memory: sharded_counter costs 16 bytes per counter. Each thread that adds reserves 8 MiB of
//   address space for cells (one 8-byte cell per counter id, 2^20 ids); only the 4 KiB pages holding
//   ids it actually touched become resident, and ids are reused lowest first, so a program with a
//   few hundred counters uses one or two pages per thread. The reservation is returned when the
//   thread exits. Counters beyond 2^20 alive at once still work but add with an atomic RMW.
// Ordering: neither counter orders other memory (relaxed); they count, they do not synchronize.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/counter_cells.hpp"

#include <atomic>
#include <cstdint>

namespace otlpconc {

class padded_counter {
 public:
  constexpr padded_counter() noexcept = default;
  constexpr explicit padded_counter(std::int64_t initial) noexcept : value_(std::in_place, initial) {}
  padded_counter(const padded_counter&) = delete;
  padded_counter& operator=(const padded_counter&) = delete;

  // Adds n and returns the value before the add.
  std::int64_t add(std::int64_t n) noexcept {
    // (P1) relaxed: a counter orders nothing else; RMWs on one atomic are totally ordered anyway.
    return value_->fetch_add(n, std::memory_order_relaxed);
  }
  std::int64_t increment() noexcept { return add(1); }
  std::int64_t decrement() noexcept { return add(-1); }

  std::int64_t load() const noexcept {
    // (P2) relaxed: sees every add that happens-before it (read-write coherence with P1).
    return value_->load(std::memory_order_relaxed);
  }
  void reset(std::int64_t value = 0) noexcept {
    // (P3) relaxed: see P1.
    value_->store(value, std::memory_order_relaxed);
  }

 private:
  cache_padded<std::atomic<std::int64_t>> value_{std::in_place, 0};
};

class sharded_counter {
 public:
  // Throws std::bad_alloc, or std::length_error past 2^32 - 1 live counters.
  sharded_counter() : id_(registry().acquire_id(&base_)) {}
  explicit sharded_counter(std::int64_t initial) : sharded_counter() {
    // (S0) relaxed: published to other threads by whatever publishes the counter itself.
    base_.store(static_cast<std::uint64_t>(initial), std::memory_order_relaxed);
  }
  ~sharded_counter() { registry().release_id(id_); }
  sharded_counter(const sharded_counter&) = delete;
  sharded_counter& operator=(const sharded_counter&) = delete;

  void add(std::int64_t n) noexcept {
    std::uint64_t* const cells = detail::counter_tls.cells;
    if (OTLPCONC_LIKELY(cells != nullptr && id_ < detail::max_counter_cells)) {
      detail::counter_cell cell(cells[id_]);
      // (S1) relaxed load + store, not an RMW: this thread is the cell's only writer while the
      // counter lives (the registry writes it only in C1, zeroing it when the previous owner of this
      // id was destroyed, which happens-before this counter exists), so the load returns the latest
      // value of the cell. Readers see the store through coherence (C6).
      cell.store(cell.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(n), std::memory_order_relaxed);
      return;
    }
    add_slow(n);
  }
  void increment() noexcept { add(1); }
  void decrement() noexcept { add(-1); }

  // The sum of all adds. Exact when no add runs concurrently; otherwise includes every add that
  // happens-before this call and any subset of the concurrent ones. Takes the registry lock.
  std::int64_t load() const { return static_cast<std::int64_t>(registry().sum(id_, base_)); }

  // Makes the counter read zero: every add that happens-before the reset is cleared, concurrent
  // ones are either cleared or kept in full. Takes the registry lock.
  void reset() { registry().reset(id_, base_); }

 private:
  static detail::counter_registry& registry() { return detail::counter_registry::instance(); }

  OTLPCONC_NOINLINE void add_slow(std::int64_t n) noexcept {
    if (id_ < detail::max_counter_cells && registry().register_thread()) {
      add(n);
      return;
    }
    // (S2) relaxed RMW on the base: no cell for this thread (the counter is past the first
    // max_counter_cells ids, the reservation failed, or the thread is past its exit fold); readers
    // see it through C6 like any folded value.
    base_.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
  }

  std::atomic<std::uint64_t> base_{0}; // folded cells of exited threads, fallback adds, reset offset
  const std::uint32_t id_;             // index of this counter's cell in every thread's array
};

} // namespace otlpconc
