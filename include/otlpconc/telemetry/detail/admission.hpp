// otlpconc/telemetry/detail/admission.hpp: the batch span processor's admission count, with
// per-thread credits that keep the shared count off the recording path.
//
// What: a count of the spans waiting (admitted, not yet handed to the exporter) plus credits:
//   admissions a recording thread reserved several at a time and keeps in a credit cell of its own.
//   A thread admits most spans by taking one of its credits (a CAS on its own cache line) instead
//   of incrementing the shared count (a line every recording core writes: at 2 threads it was most
//   of the recording path's `end`, docs/telemetry.md).
// Guarantees (at any number of threads):
//   - Bound: the count never exceeds max_waiting (reservations and exact admissions are CASes that
//     check the room first), and spans waiting <= count, so at most max_waiting spans wait.
//   - Refused only when full: admit_after_reclaim takes every cell's unused credits back and then
//     decides; it returns false only if the count is full with no credit in it that could still be
//     taken back, i.e. max_waiting spans wait (counting admissions other threads are making at that
//     moment). A reservation counter, incremented before every reservation, tells it whether a
//     thread reserved between its sweep and its decision: then it sweeps again. A reservation in
//     progress (the cell holds `reserving`) and another reclaimer's move of a cell's credits back
//     (`taking`, until they have left the count) are waited for: each is a few atomic operations
//     on a thread that does not block there. (Found by the model: without `taking`, a reclaimer decided
//     "full" while another held credits it had taken from a cell and not yet removed.)
//   - Progress: admit_with_credit is lock-free (a CAS loop that fails only when another thread
//     changed the count); admit_after_reclaim waits for reservations in progress (a preempted
//     reserver delays it), so it is not lock-free.
//   - Ordering: the count orders nothing (spans travel with their own release/acquire); the
//     seq_cst operations (K2, K3, K4, R5, R6, R7, A2, Q2) are what make "refused only when full"
//     exact. The protocol is model-checked (tests/model, "[admission]": 3 threads, nothing leaving
//     the count), which kills its logic mutants and two orders weakened together; one order
//     weakened alone is not found there (see K3).
// Memory: per thread one cell (in the processor's stage); credits are at most `chunk` a thread.
// Requirements: a cell is owned by one thread at a time (the stage's owner); other threads only
//   take its credits back (take_back). Sync: detail/sync.hpp (std_sync, or relacy_sync in the model).
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/sync.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace otlpconc::telemetry::detail {

template <class Sync = otlpconc::detail::std_sync>
class basic_admission {
 public:
  using credit_cell = typename Sync::template atomic<std::int64_t>;
  static constexpr std::int64_t reserving = -1; // a cell's value while its owner reserves
  static constexpr std::int64_t taking = -2;    // a cell's value while a reclaimer moves its credits back

  // max_waiting: the bound. A reservation takes min(chunk, max(1, room / divisor)) admissions, so
  // that credits shrink as the queue fills (at most room / divisor each, never the last ones).
  basic_admission(std::int64_t max_waiting, std::int64_t chunk, std::int64_t divisor) noexcept
      : max_(max_waiting), chunk_(chunk), divisor_(divisor) {}

  struct result {
    bool admitted = false;
    std::int64_t before = 0; // the count before this admission or reservation (for the batch trigger)
    std::int64_t added = 0;  // what it added to the count (0 when it took a credit)
    std::int64_t taken = 0;  // admit_after_reclaim: credits it moved back out of the count
  };

  // The cell's owner admits one span: with a credit of its cell, else by reserving up to
  // min(chunk, chunk_limit) admissions (one for this span, the rest left in the cell); a limit of 1
  // reserves nothing (one exact admission). Not admitted when the count is full.
  result admit_with_credit(credit_cell& cell, std::int64_t chunk_limit) noexcept {
    // (K1) relaxed: a credit is a count; the CAS's atomicity gives each credit to one taker.
    std::int64_t c = cell.load(std::memory_order_relaxed);
    if (c > 0 && cell.compare_exchange_strong(c, c - 1, std::memory_order_relaxed)) [[likely]] // (K1)
      return {true, 0, 0};
    // No credit. Only the owner moves a cell away from 0, so c is 0, or `taking` while a reclaimer
    // moves the cell's credits back: then this span is admitted exactly and nothing is reserved
    // (the owner never waits for another thread here).
    // (K2) seq_cst: a reclaimer whose load (R5) of this cell comes after this CAS in the single
    // total order waits for the reservation to finish; one whose load came before sees the
    // reservation counter move (K3) before it decides (R6).
    const std::int64_t chunk = std::min(chunk_, chunk_limit);
    if (chunk <= 1 || c != 0 ||
        !cell.compare_exchange_strong(c, reserving, std::memory_order_seq_cst, std::memory_order_relaxed))
      return admit_exact();
    Sync::preempt();                                         // a reclaimer meets a reservation in progress
    std::int64_t v = count_.load(std::memory_order_relaxed); // (K4') relaxed: the CAS (K4) decides
    bool counted = false;
    for (;;) {
      const std::int64_t room = max_ - v;
      if (room <= 0) {
        cell.store(0, std::memory_order_release); // (K5) release: see below; nothing reserved
        return {false, v, 0};
      }
      if (!counted) {
        // (K3) seq_cst: two jobs. (a) Message passing with a reclaimer's first (R6) load and then
        // its (R5) load of this cell: if it reads this increment, it must read `reserving` (K2)
        // or later in the cell, else it would pass the cell, see no counter move, and refuse at
        // a count these credits filled. (b) Before the reservation (K4), so that a reclaimer whose
        // decision (A2) reads the reservation in the count reads this increment in its second
        // (R6). Relaxing it alone is not caught by the model (K3 and K4 together are).
        reservations_.fetch_add(1, std::memory_order_seq_cst);
        counted = true;
        Sync::preempt(); // a reclaimer sweeps and decides between (K3) and (K4)
      }
      const std::int64_t k = std::min(chunk, std::max<std::int64_t>(1, room / divisor_));
      // (K4) seq_cst: see (K3).
      if (count_.compare_exchange_weak(v, v + k, std::memory_order_seq_cst, std::memory_order_relaxed)) {
        // (K5) release: the reservation (K3, K4) happens-before a reclaimer's read of the credits
        // (R5, seq_cst, so acquire), which waited while the cell held `reserving`. One is this span's.
        cell.store(k - 1, std::memory_order_release);
        return {true, v, k};
      }
    }
  }

  // One span, exactly: a CAS that never counts a refused span (so concurrent refusals cannot make
  // each other look full).
  result admit_exact() noexcept {
    // (A2) seq_cst: a reclaimer's decision that the count is full; ordered against (K3) and (K4).
    std::int64_t v = count_.load(std::memory_order_seq_cst);
    do {
      if (v >= max_)
        return {false, v, 0};
    } while (!count_.compare_exchange_weak(v, v + 1, std::memory_order_seq_cst)); // (A2)
    return {true, v, 1};
  }

  // One span by an increment (a thread without a cell); refused (and undone by the caller's
  // remove(1)) when the count was full.
  result admit_increment() noexcept {
    // (A1) relaxed: the count orders nothing; its atomicity is what makes the bound exact.
    const std::int64_t before = count_.fetch_add(1, std::memory_order_relaxed);
    return {before < max_, before, 1};
  }

  // Spans handed to the exporter, refusals undone, credits taken back: they leave the count.
  void remove(std::int64_t n) noexcept {
    count_.fetch_sub(n, std::memory_order_seq_cst); // (Q2) seq_cst: pairs with the processor's (Q3)
  }

  // Moves the cell's unused credits back out of the count: marks the cell `taking`, removes them
  // from the count, then empties the cell, so that a reclaimer that meets the cell meanwhile waits
  // until the count no longer holds them (three atomic steps: the window never blocks). With
  // exact, a reservation or another reclaimer's move in progress is waited for; without, the cell
  // is left as it is (its credits are taken next time). Returns how many credits it moved (the
  // caller wakes whatever waits for room).
  std::int64_t take_back(credit_cell& cell, bool exact) noexcept {
    // (R5) seq_cst: see (K2) and (R7).
    std::int64_t c = cell.load(std::memory_order_seq_cst);
    for (;;) {
      if (c == reserving || c == taking) {
        if (!exact)
          return 0;
        Sync::yield(); // the owner is between (K2) and (K5), or a reclaimer between (R5) and (R7)
        c = cell.load(std::memory_order_seq_cst); // (R5)
        continue;
      }
      if (c <= 0)
        return 0;
      if (cell.compare_exchange_weak(c, taking, std::memory_order_seq_cst, std::memory_order_seq_cst)) { // (R5)
        Sync::preempt(); // another reclaimer meets the cell while its credits are moved back
        remove(c);
        // (R7) seq_cst: after the removal; a reclaimer that reads this 0 (R5) decides after it.
        cell.store(0, std::memory_order_seq_cst);
        return c;
      }
    }
  }

  // Admits one span after taking every cell's unused credits back (for_each_cell(f) calls f(cell)
  // for every cell). Not admitted only when max_waiting spans wait. `taken` says how many credits
  // it moved back (the caller wakes whatever waits for room).
  template <class ForEachCell>
  result admit_after_reclaim(ForEachCell&& for_each_cell) noexcept {
    std::int64_t taken = 0;
    for (;;) {
      const std::uint64_t before = reservations_.load(std::memory_order_seq_cst); // (R6) seq_cst: see (K3)
      for_each_cell([&](credit_cell& cell) { taken += take_back(cell, true); });
      Sync::preempt(); // threads reserve between the sweep and the decision
      if (result r = admit_exact(); r.admitted) {
        r.taken = taken;
        return r;
      }
      if (reservations_.load(std::memory_order_seq_cst) == before) // (R6)
        return {false, 0, 0, taken};
    }
  }

  // The count (spans waiting plus credits): a snapshot (relaxed, (W0)), or the processor's check
  // (Q3) of a thread that waits for room (seq_cst).
  std::int64_t count(std::memory_order order = std::memory_order_relaxed) const noexcept { return count_.load(order); }
  std::int64_t max_waiting() const noexcept { return max_; }

 private:
  const std::int64_t max_, chunk_, divisor_;
  // One line for both: a reservation writes them back to back (K3, K4), so it moves one line
  // between cores, not two (a reservation was a third of the slow spans at 2 threads:
  // docs/telemetry.md, "What the last 1% is made of").
  alignas(cache_line_size) typename Sync::template atomic<std::int64_t> count_{0};
  typename Sync::template atomic<std::uint64_t> reservations_{0};
};

using admission = basic_admission<>;

} // namespace otlpconc::telemetry::detail
