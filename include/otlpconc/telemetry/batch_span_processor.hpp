// otlpconc/telemetry/batch_span_processor.hpp: OpenTelemetry's batch span processor, built from
// otlpconc's object pool, queue and counters.
//
// What: takes the spans that end on any thread (through a tracer, tracer.hpp), queues them, and
//   hands them in batches to one span_exporter on its own export thread.
//   - Span records come from an object_pool<span_data> (recycled, allocated on the recording
//     thread's NUMA node); the export thread releases them after the export.
//   - Each recording thread stages its ended spans in a batch of its own (up to 64, or the export
//     batch size if smaller), which enters the shared ms_queue when full: the queue and the queue
//     bound are touched once per staged batch, not per span. The export thread takes staged spans
//     out of idle threads' batches on the schedule, on force_flush, at shutdown, and when the queue
//     is full; a thread's staged spans enter the queue when the thread exits.
//   - Counts are sharded_counters (stats()).
// When to use: recording spans from hot code on many threads, when exporting may be slow or fail.
// When not to: when every span must be exported synchronously at its end (write a processor that
//   calls the exporter directly).
// Guarantees:
//   - Recording (on_end) never waits for the exporter with overflow_policy::drop (the default): a
//     span that finds the queue full is dropped and counted. With overflow_policy::block it waits
//     for room (or for shutdown, which drops it, counted).
//   - Accounting: every span handed to the processor is counted accepted, and then exactly one of
//     exported, dropped (queue full, ended after shutdown, left when shutdown's timeout expired) or
//     failed (its export failed or threw, or the receiver rejected it). accepted == exported +
//     dropped + failed + queued, and queued == 0 at every quiescent point (after a successful
//     force_flush with no recording in between, or after shutdown).
//   - Queue bound: at most max_queue_size spans wait (staged or queued); the batch being exported
//     is not counted in it (as OpenTelemetry). Up to 64 of the bound per thread may be reserved by
//     a thread's staging batch; a full queue makes the export thread take them back.
//   - Export (OpenTelemetry semantics): exports are serialized (one export thread); a batch is
//     exported when max_export_batch_size spans are queued (so batches are full under load; the
//     processor never drains in a tight loop), when schedule_delay has elapsed since the last
//     export (whatever is queued), or on force_flush; each export gets a deadline of export_timeout.
//   - force_flush(timeout): hands everything that ended before the call to the exporter (even
//     under sustained load), then calls the exporter's force_flush; returns false on timeout or if
//     that force_flush failed (failed exports are in stats()). Timeouts saturate: milliseconds::max()
//     means no deadline. shutdown(timeout): refuses new spans, exports what was accepted, shuts the exporter
//     down, and returns within its timeout even if the exporter blocks (false then; call it again
//     to wait longer). After shutdown's timeout the export thread finishes the export in progress
//     and counts what is left as dropped. The destructor calls shutdown(export_timeout) if it was
//     not called, and if the exporter still blocks after that, leaves the export thread to finish
//     on its own (it owns the shared state, so nothing dangles).
//   - Ordering: a span's writes on the recording thread happen-before the exporter reads it.
// Memory: spans in flight (max_queue_size waiting, one batch exporting, up to 64 per thread staged)
//   plus the pools' caches; per processor a table of 1024 thread slots (8 KiB).
// Requirements: the processor outlives its tracers and their spans. An exporter that may block past
//   the destructor's wait must not rely on static objects (its thread may outlive main). An
//   exporter that records spans itself never waits for room (its spans are dropped when full).
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/counter.hpp"
#include "otlpconc/detail/pool_threads.hpp"
#include "otlpconc/ms_queue.hpp"
#include "otlpconc/object_pool.hpp"
#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/span_data.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace otlpconc::telemetry {

// What a span that finds the queue full does.
enum class overflow_policy : std::uint8_t {
  drop, // dropped and counted (OpenTelemetry's behaviour; recording never waits)
  block // waits until the export thread makes room, or until shutdown (then dropped, counted)
};

struct batch_span_processor_options {
  std::size_t max_queue_size = 2048;               // OTEL_BSP_MAX_QUEUE_SIZE
  std::chrono::milliseconds schedule_delay{5000};  // OTEL_BSP_SCHEDULE_DELAY
  std::size_t max_export_batch_size = 512;         // OTEL_BSP_MAX_EXPORT_BATCH_SIZE
  std::chrono::milliseconds export_timeout{30000}; // OTEL_BSP_EXPORT_TIMEOUT; milliseconds::max(): no limit
  overflow_policy on_full = overflow_policy::drop;
  object_pool_options span_pool; // where span records live (NUMA binding, node hook); no limit allowed

  // Throws std::invalid_argument naming the field that is out of range.
  void validate() const {
    auto fail = [](const char* what) {
      throw std::invalid_argument(std::string("batch_span_processor_options: ") + what);
    };
    if (max_queue_size == 0 || max_queue_size > (std::size_t{1} << 40))
      fail("max_queue_size must be between 1 and 2^40");
    if (max_export_batch_size == 0)
      fail("max_export_batch_size must be at least 1");
    if (max_export_batch_size > max_queue_size)
      fail("max_export_batch_size must not exceed max_queue_size");
    if (schedule_delay.count() <= 0)
      fail("schedule_delay must be positive");
    if (export_timeout.count() <= 0)
      fail("export_timeout must be positive (milliseconds::max() for no limit)");
    if (span_pool.max_objects != 0)
      fail("span_pool.max_objects must be 0 (the queue bound limits spans; live spans are the application's)");
    if (span_pool.on_limit != pool_limit_policy::fail)
      fail("span_pool.on_limit must be left at its default");
  }

  // Reads the OpenTelemetry environment variables over `base`, with the specification's rules
  // (detail/env.hpp): OTEL_BSP_SCHEDULE_DELAY (milliseconds, at least 1), OTEL_BSP_EXPORT_TIMEOUT
  // (milliseconds, 0 = no limit), OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE (1 to
  // 2^40). An unset or empty variable keeps base's value; a malformed or out-of-range one is
  // reported to the warning handler (diagnostics.hpp) and ignored. A batch size above the queue
  // size is lowered to it, with a warning. base itself is validated (std::invalid_argument), so
  // the environment never makes this throw.
  static batch_span_processor_options from_env(batch_span_processor_options base);
  static batch_span_processor_options from_env();
};

inline batch_span_processor_options batch_span_processor_options::from_env(batch_span_processor_options base) {
  base.validate();
  constexpr std::uint64_t limit = std::uint64_t{1} << 40;
  if (auto v = detail::env_millis("OTEL_BSP_SCHEDULE_DELAY", 1, limit, false))
    base.schedule_delay = *v;
  if (auto v = detail::env_millis("OTEL_BSP_EXPORT_TIMEOUT", 1, limit, true))
    base.export_timeout = *v;
  if (auto v = detail::env_uint("OTEL_BSP_MAX_QUEUE_SIZE", 1, limit))
    base.max_queue_size = static_cast<std::size_t>(*v);
  if (auto v = detail::env_uint("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, limit))
    base.max_export_batch_size = static_cast<std::size_t>(*v);
  if (base.max_export_batch_size > base.max_queue_size) {
    warn("OTEL_BSP_MAX_EXPORT_BATCH_SIZE / OTEL_BSP_MAX_QUEUE_SIZE: the batch size " +
         std::to_string(base.max_export_batch_size) + " exceeds the queue size " + std::to_string(base.max_queue_size) +
         ": lowered to it");
    base.max_export_batch_size = base.max_queue_size;
  }
  base.validate();
  return base;
}

inline batch_span_processor_options batch_span_processor_options::from_env() {
  return from_env(batch_span_processor_options());
}

struct batch_span_processor_stats {
  std::int64_t accepted = 0;             // spans handed to the processor (sampled spans that ended)
  std::int64_t exported = 0;             // spans the exporter took
  std::int64_t dropped = 0;              // queue full, ended after shutdown, left at shutdown's timeout
  std::int64_t failed = 0;               // spans of failed (or throwing) exports, and rejected spans
  std::int64_t queued = 0;               // accepted - exported - dropped - failed: in the pipeline now
  std::int64_t batches = 0;              // export calls
  std::int64_t failed_batches = 0;       // export calls that failed, threw, or reported rejections
  std::int64_t export_thread_cpu_ns = 0; // CPU time of the export thread (exports included)
  std::string last_error;                // the last failed export's message ("" if none)
};

} // namespace otlpconc::telemetry

namespace otlpconc::telemetry::detail {

using otlpconc::detail::no_pool_index;
using otlpconc::detail::pool_core_base;
using otlpconc::detail::pool_thread_index;
using otlpconc::detail::pool_thread_registry;

// The processor whose export thread the calling thread is (an exporter that records spans itself
// must not block waiting for room that only its own thread can make).
inline constinit thread_local const void* bsp_export_thread_core = nullptr;

// A thread's staged spans, then a unit of the queue.
struct bsp_batch {
  static constexpr std::uint32_t capacity = 64;
  std::uint32_t size = 0;     // spans in spans[0, size)
  std::uint32_t reserved = 0; // queue-bound slots held (>= size); reduced to size when queued
  std::uint32_t taken = 0;    // export thread: spans[0, taken) already handed to an export
  pooled_ptr<telemetry::span_data> spans[capacity];
};

class bsp_core final : public pool_core_base {
 public:
  using clock = std::chrono::steady_clock;

  bsp_core(std::shared_ptr<telemetry::span_exporter> exporter, telemetry::batch_span_processor_options options,
           telemetry::resource res, telemetry::instrumentation_scope scope)
      : options_((options.validate(), std::move(options))),
        exporter_(exporter ? std::move(exporter)
                           : throw std::invalid_argument("batch_span_processor: the exporter is null")),
        resource_(std::move(res)), scope_(std::move(scope)), spans_(options_.span_pool),
        stage_capacity_(
            static_cast<std::uint32_t>(std::min<std::size_t>(bsp_batch::capacity, options_.max_export_batch_size))),
        reserve_chunk_(
            static_cast<std::uint32_t>(std::clamp<std::size_t>(options_.max_queue_size / 32, 1, stage_capacity_))),
        stages_(new std::atomic<stage*>[pool_thread_registry::max_threads]) {
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i)
      stages_[i].store(nullptr, std::memory_order_relaxed);
    for (std::size_t n = 0; n < spans_.nodes(); ++n)
      recycled_.push_back(std::make_unique<ms_queue<bsp_batch*>>());
    taking_.reserve(options_.max_export_batch_size);
    held_.reserve(options_.max_export_batch_size); // at most one batch per span: never grows
    pool_thread_registry::instance().add(this);
  }

  ~bsp_core() {
    pool_thread_registry::instance().remove(this); // no thread_exit runs after this
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i) {
      stage* st = stages_[i].load(std::memory_order_relaxed);
      if (st != nullptr)
        pooled_ptr<bsp_batch>{st->fresh}.reset();
      delete st;
    }
    while (auto b = ready_.try_pop())
      if (!is_marker(*b))
        pooled_ptr<bsp_batch>{*b}.reset();
    for (auto& q : recycled_)
      while (auto b = q->try_pop())
        pooled_ptr<bsp_batch>{*b}.reset();
  }

  // A blank span record for the calling thread: one its earlier exported spans left behind (whole
  // exported batches come back to the recording threads, which reset the records they are about to
  // write anyway: the export thread never touches a record after its export), else a new one from
  // the pool. Throws what object_pool::acquire throws.
  pooled_ptr<telemetry::span_data> acquire_span() {
    const unsigned index = pool_thread_index();
    stage* st = index == no_pool_index ? nullptr : stage_of(index);
    if (st != nullptr) {
      bsp_batch* fresh = st->fresh;
      if (fresh == nullptr || fresh->size == 0) {
        st->fresh = nullptr; // before anything can throw: never leave a released batch here
        pooled_ptr<bsp_batch>{fresh}.reset();
        st->fresh = fresh = take_recycled();
      }
      if (fresh != nullptr) {
        pooled_ptr<telemetry::span_data> span = std::move(fresh->spans[--fresh->size]);
        span->reset();
        return span;
      }
    }
    return spans_.acquire();
  }
  const telemetry::batch_span_processor_options& options() const noexcept { return options_; }

  // A span that ended or was refused at its start: counted, and dropped at once.
  void count_refused() noexcept {
    accepted_.increment();
    dropped_.increment();
  }

  bool closed() const noexcept {
    return closed_.load(std::memory_order_acquire); // (P1) acquire: pairs with the seq_cst store (P2)
  }

  // The recording thread hands over an ended, sampled span.
  void on_end(pooled_ptr<telemetry::span_data> span) noexcept {
    accepted_.increment();
    if (closed()) {
      dropped_.increment();
      return;
    }
    const unsigned index = pool_thread_index();
    stage* st = index == no_pool_index ? nullptr : stage_of(index);
    if (st == nullptr) {
      submit_unstaged(std::move(span));
      return;
    }
    bool yielded = false;
    for (;;) {
      // (S1) acquire: pairs with the release stores (S2) of this thread's previous operation (same
      // thread) and with the collector's release CAS (C1) that emptied or closed the slot.
      bsp_batch* raw = st->slot.exchange(busy(), std::memory_order_acquire);
      if (raw == closed_slot()) {
        st->slot.store(closed_slot(), std::memory_order_relaxed); // nothing was published
        dropped_.increment();
        return;
      }
      pooled_ptr<bsp_batch> batch(raw);
      if (!batch) {
        batch = new_batch();
        if (!batch) {                                         // out of memory: the span is dropped, counted
          st->slot.store(nullptr, std::memory_order_release); // (S2)
          dropped_.increment();
          return;
        }
      }
      if (batch->size == batch->reserved && !reserve(*batch)) {
        // The queue is full. Let the export thread take back what idle threads hold.
        request_collect();
        if (drops_when_full()) {
          park(st, std::move(batch));
          if (!yielded) {
            // On a busy machine the export thread may be runnable but not running: give it this
            // CPU once, then look again. (Not a wait: yield returns at once when nothing else runs.)
            yielded = true;
            std::this_thread::yield();
            continue;
          }
          dropped_.increment();
          return;
        }
        // block: our own staged spans become exportable before we sleep, then retry.
        if (batch->size != 0)
          enqueue(batch.release());
        else
          batch.reset();
        st->slot.store(nullptr, std::memory_order_release); // (S2)
        if (!wait_for_room_or_drop())
          return;
        continue;
      }
      batch->spans[batch->size++] = std::move(span);
      if (batch->size == stage_capacity_) {
        enqueue(batch.release());
        st->slot.store(nullptr, std::memory_order_release); // (S2)
      } else {
        park(st, std::move(batch));
      }
      return;
    }
  }

  // The calling thread (index) exits: its staged spans enter the queue. Registry mutex held.
  void thread_exit(unsigned index) noexcept override {
    stage* st = stages_[index].load(std::memory_order_acquire); // (T1) acquire: pairs with (S3)
    if (st == nullptr)
      return;
    recycle(pooled_ptr<bsp_batch>{std::exchange(st->fresh, nullptr)});
    bsp_batch* raw = st->slot.exchange(busy(), std::memory_order_acquire); // (S1), as on_end
    if (raw == closed_slot()) {
      st->slot.store(closed_slot(), std::memory_order_relaxed);
      return;
    }
    if (raw != nullptr)
      enqueue(raw);
    st->slot.store(nullptr, std::memory_order_release); // (S2)
  }

  bool force_flush(std::chrono::milliseconds timeout) {
    const auto deadline = after(clock::now(), timeout);
    std::unique_lock lock(mutex_);
    if (closing_)
      return wait_shut_down(lock, deadline) && clean_shutdown_;
    const std::uint64_t ticket = ++flush_requested_;
    flush_pending_.store(true, std::memory_order_relaxed); // a hint for the export loops (F1)
    work_cv_.notify_one();
    if (!done_cv_.wait_until(lock, deadline, [&] { return flush_done_ >= ticket || shut_down_; }))
      return false;
    return flush_done_ >= ticket ? flush_ok_ : clean_shutdown_;
  }

  // Whether shutdown finished without dropping spans at its deadline (and the exporter's shutdown
  // did not throw).
  bool shut_down_cleanly() const {
    std::lock_guard lock(mutex_);
    return shut_down_ && clean_shutdown_;
  }

  // Starts the shutdown (first call) and waits up to timeout for it to finish. Returns whether the
  // export thread has finished.
  bool shutdown(std::chrono::milliseconds timeout) {
    const auto deadline = after(clock::now(), timeout);
    std::unique_lock lock(mutex_);
    if (!closing_) {
      closing_ = true;
      shutdown_deadline_ = deadline;
      // (P2) seq_cst: pairs with the seq_cst loads in stage_of (P3) and submit_unstaged (P4): a thread
      // that installs a stage or submits unstaged after this sees it, or the final drain sees its span.
      closed_.store(true, std::memory_order_seq_cst);
      work_cv_.notify_one();
      done_cv_.notify_all(); // block-mode waiters give up
    }
    return wait_shut_down(lock, deadline);
  }

  telemetry::batch_span_processor_stats stats() const {
    telemetry::batch_span_processor_stats s;
    // Outcomes first, then accepted: a span is accepted before its outcome, so queued >= 0 is likely
    // even while spans flow (it is exact only when quiescent).
    s.exported = exported_.load();
    s.dropped = dropped_.load();
    s.failed = failed_.load();
    s.batches = batches_count_.load();
    s.failed_batches = failed_batches_.load();
    s.accepted = accepted_.load();
    s.queued = s.accepted - s.exported - s.dropped - s.failed;
    s.export_thread_cpu_ns = export_cpu_ns_.load(std::memory_order_relaxed); // a statistic
    std::lock_guard lock(mutex_);
    s.last_error = last_error_;
    return s;
  }

  // The export thread's body.
  void run() noexcept {
    bsp_export_thread_core = this;
    auto last_export = clock::now();
    for (;;) {
      bool timer = false, flush = false, collect = false, closing = false;
      std::uint64_t flush_ticket = 0;
      {
        std::unique_lock lock(mutex_);
        const auto due = after(last_export, options_.schedule_delay);
        for (;;) {
          closing = closing_;
          flush = flush_requested_ != flush_done_;
          // (W1) acquire: pairs with the release exchange in request_collect (R1).
          collect = collect_requested_.exchange(false, std::memory_order_acquire);
          if (closing || flush || collect || full_batch_ready())
            break;
          if (clock::now() >= due) {
            timer = true;
            break;
          }
          work_cv_.wait_until(lock, due);
        }
        flush_ticket = flush_requested_;
        flush_pending_.store(false, std::memory_order_relaxed); // (F1) this round answers them
      }
      if (closing)
        break;
      if (timer || flush || collect)
        collect_stages(false);
      // Each loop stops when shutdown begins: the final drain takes over, under shutdown's deadline
      // (a flush cut short this way is answered by the shutdown).
      constexpr auto no_deadline = clock::time_point::max();
      if (flush) {
        // Everything queued before the marker ended before the flush request.
        enqueue_marker(flush_marker());
        while (!closed() && export_one(flush_marker(), no_deadline))
          ;
        if (!closed()) {
          const bool ok = call_exporter_flush();
          std::lock_guard lock(mutex_);
          flush_done_ = flush_ticket;
          flush_ok_ = ok;
          done_cv_.notify_all();
        }
      } else if (timer) {
        // Under sustained load these loops could go on for ever: a pending flush or shutdown sends
        // the thread back to the top, where it is answered.
        while (!needs_attention() && export_one(nullptr, no_deadline))
          ;
      } else {
        while (!needs_attention() && full_batch_ready())
          export_one(nullptr, no_deadline);
      }
      if (timer || flush || exported_since_wait_)
        last_export = clock::now();
      exported_since_wait_ = false;
      note_cpu_time();
    }
    final_drain();
  }

 private:
  struct alignas(cache_line_size) stage {
    // nullptr: nothing staged; busy(): the owner is using it; closed_slot(): shut down; otherwise
    // the owner's staging batch.
    std::atomic<bsp_batch*> slot{nullptr};
    bsp_batch* fresh = nullptr; // owner only: recycled records to reuse (spans[0, size))
  };
  static bsp_batch* busy() noexcept { return reinterpret_cast<bsp_batch*>(std::uintptr_t{1}); }
  static bsp_batch* closed_slot() noexcept { return reinterpret_cast<bsp_batch*>(std::uintptr_t{2}); }
  // Queue entries that are not batches: a flush's and the final drain's end of queue. A flush cut
  // short by shutdown leaves its marker behind, which later exports skip.
  bsp_batch* flush_marker() noexcept { return reinterpret_cast<bsp_batch*>(&markers_[0]); }
  bsp_batch* final_marker() noexcept { return reinterpret_cast<bsp_batch*>(&markers_[1]); }
  bool is_marker(const bsp_batch* b) const noexcept {
    return b == reinterpret_cast<const bsp_batch*>(&markers_[0]) ||
           b == reinterpret_cast<const bsp_batch*>(&markers_[1]);
  }

  stage* stage_of(unsigned index) noexcept {
    stage* st = stages_[index].load(std::memory_order_acquire); // (S3') acquire: pairs with (S3)
    if (st != nullptr) [[likely]]
      return st;
    st = new (std::nothrow) stage;
    if (st == nullptr)
      return nullptr;
    // (S3) seq_cst: publishes the stage to collectors and thread_exit (acquire loads) and is
    // ordered before the re-check (P3) against the seq_cst store of closed_ (P2).
    stages_[index].store(st, std::memory_order_seq_cst);
    if (closed_.load(std::memory_order_seq_cst))                // (P3)
      st->slot.store(closed_slot(), std::memory_order_relaxed); // the final drain may or may not visit it
    return st;
  }

  // An empty batch, or null when out of memory (a slab cannot be allocated).
  pooled_ptr<bsp_batch> new_batch() noexcept {
    try {
      return batches_.try_acquire();
    } catch (...) {
      return nullptr;
    }
  }

  void park(stage* st, pooled_ptr<bsp_batch> batch) noexcept {
    // (S2) release: the batch's contents (the spans' records) happen-before a collector's (C1).
    st->slot.store(batch.release(), std::memory_order_release);
  }

  // Reserves queue slots for batch (up to the reserve chunk). False: the queue is full.
  bool reserve(bsp_batch& batch) noexcept {
    const std::int64_t want = std::min<std::int64_t>(reserve_chunk_, stage_capacity_ - batch.reserved);
    // (Q1) seq_cst: part of the Dekker pair with wait_for_room's waiter count (see release_slots).
    std::int64_t used = queued_slots_->load(std::memory_order_seq_cst);
    std::int64_t take = 0;
    do {
      const std::int64_t room = static_cast<std::int64_t>(options_.max_queue_size) - used;
      if (room <= 0)
        return false;
      take = std::min(room, want);
    } while (!queued_slots_->compare_exchange_weak(used, used + take, std::memory_order_seq_cst,
                                                   std::memory_order_seq_cst)); // (Q1)
    batch.reserved += static_cast<std::uint32_t>(take);
    return true;
  }

  void release_slots(std::int64_t n) noexcept {
    if (n == 0)
      return;
    queued_slots_->fetch_sub(n, std::memory_order_seq_cst);   // (Q2) seq_cst: pairs with (Q3)
    if (room_waiters_.load(std::memory_order_seq_cst) != 0) { // (Q3')
      { std::lock_guard lock(mutex_); }
      done_cv_.notify_all();
    }
  }

  // What a span that finds the queue full does: dropped with the drop policy, and always on the
  // export thread (an exporter recording spans must not wait for room only its own thread makes).
  bool drops_when_full() const noexcept {
    return options_.on_full == telemetry::overflow_policy::drop || bsp_export_thread_core == this;
  }

  // Block policy: waits for room. False when shutdown ended the wait: the span is dropped, counted.
  bool wait_for_room_or_drop() {
    wait_for_room();
    if (!closed())
      return true;
    dropped_.increment();
    return false;
  }

  void wait_for_room() {
    std::unique_lock lock(mutex_);
    // (Q3) seq_cst: either this waiter's check below sees the release (Q2), or the releaser sees
    // this count (Q3') and notifies under the mutex.
    room_waiters_.fetch_add(1, std::memory_order_seq_cst);
    done_cv_.wait(lock, [&] {
      return closing_ ||
             queued_slots_->load(std::memory_order_seq_cst) < static_cast<std::int64_t>(options_.max_queue_size);
    });
    room_waiters_.fetch_sub(1, std::memory_order_relaxed);
  }

  void request_collect() noexcept {
    if (collect_requested_.load(std::memory_order_relaxed)) // a hint: already requested
      return;
    // (R1) release: pairs with (W1); the export thread then visits every stage.
    if (!collect_requested_.exchange(true, std::memory_order_release)) {
      std::lock_guard lock(mutex_);
      work_cv_.notify_one();
    }
  }

  // A batch enters the queue; its unused reservation is returned. Never throws: if the queue cannot
  // allocate its node, the spans are dropped (counted).
  void enqueue(bsp_batch* batch) noexcept {
    const std::int64_t unused = batch->reserved - batch->size;
    batch->reserved = batch->size;
    const std::int64_t n = batch->size;
    if (n == 0) { // nothing staged (a reservation at most): nothing to queue
      pooled_ptr<bsp_batch>{batch}.reset();
      release_slots(unused);
      return;
    }
    try {
      ready_.push(batch); // release: pairs with the acquire in the export thread's pop
    } catch (...) {
      dropped_.add(n);
      pooled_ptr<bsp_batch>{batch}.reset();
      release_slots(unused + n);
      return;
    }
    release_slots(unused);
    // (Q4) release: the count follows the push; the export thread's acquire load in
    // full_batch_ready() only decides when to look.
    const std::int64_t before = ready_spans_->fetch_add(n, std::memory_order_release);
    const auto threshold = static_cast<std::int64_t>(options_.max_export_batch_size);
    if (before < threshold && before + n >= threshold) {
      std::lock_guard lock(mutex_); // the export thread re-checks under the mutex before it sleeps
      work_cv_.notify_one();
    }
  }

  // A thread with no thread index (more than 1024 live threads, or past its exit) submits one span.
  void submit_unstaged(pooled_ptr<telemetry::span_data> span) noexcept {
    // (P4) seq_cst, with the load of closed_ after it: pairs with (P2) and the final drain's wait for
    // unstaged_ to reach 0.
    unstaged_->fetch_add(1, std::memory_order_seq_cst);
    struct leave {
      std::atomic<std::int64_t>& n;
      ~leave() { n.fetch_sub(1, std::memory_order_release); } // (P5) release: pairs with (P6)
    } guard{*unstaged_};
    if (closed_.load(std::memory_order_seq_cst)) {
      dropped_.increment();
      return;
    }
    for (;;) {
      pooled_ptr<bsp_batch> batch = new_batch();
      if (!batch) {
        dropped_.increment();
        return;
      }
      if (!reserve(*batch)) {
        request_collect();
        if (drops_when_full()) {
          dropped_.increment();
          return;
        }
        batch.reset();
        if (!wait_for_room_or_drop())
          return;
        continue;
      }
      batch->spans[batch->size++] = std::move(span);
      enqueue(batch.release());
      return;
    }
  }

  // Export thread: takes every thread's staged batch into the queue; closing also closes the stages.
  void collect_stages(bool closing) noexcept {
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i) {
      // (C0) seq_cst: in the final drain, ordered after (P2) against the stage's (S3) / (P3).
      stage* st = stages_[i].load(std::memory_order_seq_cst);
      if (st == nullptr)
        continue;
      bsp_batch* cur = st->slot.load(std::memory_order_acquire); // (C1') acquire: pairs with (S2)
      for (;;) {
        if (cur == busy()) { // the owner is inside on_end for a moment
          std::this_thread::yield();
          cur = st->slot.load(std::memory_order_acquire);
          continue;
        }
        if (cur == closed_slot() || (cur == nullptr && !closing))
          break;
        // (C1) acq_rel: acquire pairs with the owner's release (S2) (the batch's contents); release
        // pairs with the owner's next acquire exchange (S1).
        if (st->slot.compare_exchange_weak(cur, closing ? closed_slot() : nullptr, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
          if (cur != nullptr)
            enqueue(cur);
          break;
        }
      }
    }
  }

  // A batch whose records were exported goes back to a recording thread of the records' node.
  void recycle(pooled_ptr<bsp_batch> batch) noexcept {
    if (!batch || batch->size == 0)
      return; // destroyed (an empty batch, or nothing to recycle)
    batch->taken = batch->reserved = 0;
    const unsigned node = object_pool<telemetry::span_data>::node_of(batch->spans[0].get());
    try {
      recycled_[node]->push(batch.get()); // release: pairs with the acquire pop in take_recycled
      batch.release();
    } catch (...) { // no memory for a queue node: the records go back to the pool instead
    }
  }

  bsp_batch* take_recycled() {
    const unsigned node = recycled_.size() == 1 ? 0 : spans_.node_of_calling_thread();
    std::optional<bsp_batch*> batch = recycled_[node]->try_pop();
    return batch ? *batch : nullptr;
  }

  bool full_batch_ready() const noexcept {
    // (Q5) acquire: pairs with (Q4); a hint, the pops are what synchronize.
    return carry_spans() + ready_spans_->load(std::memory_order_acquire) >=
           static_cast<std::int64_t>(options_.max_export_batch_size);
  }
  std::int64_t carry_spans() const noexcept { return carry_ ? carry_->size - carry_->taken : 0; }

  void enqueue_marker(bsp_batch* marker) {
    for (;;) {
      try {
        ready_.push(marker);
        return;
      } catch (...) { // out of memory: try again shortly
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }

  // Export thread: exports one batch of up to max_export_batch_size spans. stop_marker: stop there
  // (and export a partial batch); otherwise a partial batch is exported only when
  // nothing more is queued. Returns whether it should be called again.
  bool export_one(const bsp_batch* stop_marker, clock::time_point hard_deadline) noexcept {
    const std::size_t limit = options_.max_export_batch_size;
    bool marker_seen = false;
    taking_.clear();
    while (taking_.size() < limit) {
      if (!carry_) {
        std::optional<bsp_batch*> next = ready_.try_pop();
        if (!next)
          break;
        if (*next == stop_marker) {
          marker_seen = true;
          break;
        }
        if (is_marker(*next))
          continue; // a flush's marker left behind by shutdown
        carry_.reset(*next);
        ready_spans_->fetch_sub(carry_->size, std::memory_order_relaxed); // a hint (see Q5)
      }
      while (taking_.size() < limit && carry_->taken < carry_->size)
        taking_.push_back(carry_->spans[carry_->taken++].get());
      if (carry_->taken == carry_->size)
        held_.push_back(std::move(carry_)); // released after the export
    }
    const bool more = stop_marker != nullptr ? !marker_seen : taking_.size() == limit;
    if (taking_.empty())
      return false; // nothing queued (with a stop marker: it was reached)
    release_slots(static_cast<std::int64_t>(taking_.size()));
    const auto now = clock::now();
    if (now >= hard_deadline) { // shutdown's timeout has passed: what is left is dropped
      dropped_.add(static_cast<std::int64_t>(taking_.size()));
      late_drops_ = true;
    } else {
      const auto deadline = std::min(hard_deadline, after(now, options_.export_timeout));
      telemetry::export_result result;
      try {
        result = exporter_->export_spans(telemetry::span_batch_view{resource_, scope_, taking_}, deadline);
      } catch (const std::exception& e) {
        result = telemetry::export_result::failure(std::string("exporter threw: ") + e.what());
      } catch (...) {
        result = telemetry::export_result::failure("exporter threw a non-standard exception");
      }
      const auto n = static_cast<std::int64_t>(taking_.size());
      batches_count_.increment();
      if (result.status == telemetry::export_status::success) {
        const auto rejected = static_cast<std::int64_t>(std::min<std::uint64_t>(result.rejected_spans, taking_.size()));
        exported_.add(n - rejected);
        if (rejected != 0) {
          failed_.add(rejected);
          failed_batches_.increment();
          note_error(result.error.empty() ? std::string("the receiver rejected spans") : std::move(result.error));
        }
      } else {
        failed_.add(n);
        failed_batches_.increment();
        note_error(result.error.empty() ? std::string("export failed") : std::move(result.error));
      }
    }
    exported_since_wait_ = true;
    // Wholly exported batches go back to the recording threads with their records; a partly taken
    // one (carry_) keeps its exported records until it is wholly taken.
    for (pooled_ptr<bsp_batch>& b : held_)
      recycle(std::move(b));
    held_.clear();
    taking_.clear();
    return more;
  }

  void note_error(std::string message) noexcept {
    try {
      std::lock_guard lock(mutex_);
      last_error_ = std::move(message);
    } catch (...) {
    }
  }

  bool call_exporter_flush() noexcept {
    try {
      return exporter_->force_flush(after(clock::now(), options_.export_timeout));
    } catch (...) {
      return false;
    }
  }

  bool needs_attention() const noexcept { return closed() || flush_pending_.load(std::memory_order_relaxed); }

  // t + d, saturated at time_point::max() (a timeout of milliseconds::max() means "no deadline").
  static clock::time_point after(clock::time_point t, std::chrono::milliseconds d) noexcept {
    if (d.count() <= 0)
      return t;
    if (d >= std::chrono::duration_cast<std::chrono::milliseconds>(clock::time_point::max() - t))
      return clock::time_point::max();
    return t + std::chrono::duration_cast<clock::duration>(d);
  }

  void note_cpu_time() noexcept {
    timespec ts{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
      export_cpu_ns_.store(std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec, std::memory_order_relaxed);
  }

  void final_drain() noexcept {
    clock::time_point deadline;
    {
      std::lock_guard lock(mutex_);
      deadline = shutdown_deadline_;
    }
    collect_stages(true);
    // (P6) seq_cst: after (P2) in the single total order, so it sees every (P4) increment whose
    // submitter read closed_ as false; acquire pairs with (P5): their spans are queued.
    while (unstaged_->load(std::memory_order_seq_cst) != 0)
      std::this_thread::yield();
    enqueue_marker(final_marker());
    while (export_one(final_marker(), deadline))
      ;
    bool clean = clock::now() < deadline;
    try {
      exporter_->shutdown(deadline);
    } catch (...) {
      clean = false;
    }
    note_cpu_time();
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    clean_shutdown_ = clean && !late_drops_;
    done_cv_.notify_all();
  }

  bool wait_shut_down(std::unique_lock<std::mutex>& lock, clock::time_point deadline) {
    return done_cv_.wait_until(lock, deadline, [&] { return shut_down_; });
  }

  const telemetry::batch_span_processor_options options_;
  const std::shared_ptr<telemetry::span_exporter> exporter_;
  const telemetry::resource resource_;
  const telemetry::instrumentation_scope scope_;
  object_pool<telemetry::span_data> spans_;
  object_pool<bsp_batch> batches_;
  ms_queue<bsp_batch*> ready_;
  const std::uint32_t stage_capacity_;
  const std::uint32_t reserve_chunk_;
  std::unique_ptr<std::atomic<stage*>[]> stages_;
  std::vector<std::unique_ptr<ms_queue<bsp_batch*>>> recycled_; // per node: exported batches to reuse

  cache_padded<std::atomic<std::int64_t>> queued_slots_{std::in_place, 0}; // reserved against the bound
  cache_padded<std::atomic<std::int64_t>> ready_spans_{std::in_place, 0};  // spans in ready_ (a hint)
  cache_padded<std::atomic<std::int64_t>> unstaged_{std::in_place, 0};     // unstaged submissions in progress
  std::atomic<bool> closed_{false};
  std::atomic<bool> collect_requested_{false};
  std::atomic<bool> flush_pending_{false}; // a hint: a force_flush waits (the mutex-guarded counts decide)
  std::atomic<int> room_waiters_{0};
  std::atomic<std::int64_t> export_cpu_ns_{0};

  sharded_counter accepted_, exported_, dropped_, failed_, batches_count_, failed_batches_;

  mutable std::mutex mutex_;
  std::condition_variable work_cv_; // the export thread waits for work
  std::condition_variable done_cv_; // flushes, shutdowns and block-mode recorders wait
  std::uint64_t flush_requested_ = 0, flush_done_ = 0;
  bool closing_ = false, shut_down_ = false, clean_shutdown_ = false, flush_ok_ = true;
  clock::time_point shutdown_deadline_{};
  std::string last_error_;

  // Export thread only.
  pooled_ptr<bsp_batch> carry_;                     // a queued batch whose spans are partly exported
  std::vector<const telemetry::span_data*> taking_; // the batch being exported
  std::vector<pooled_ptr<bsp_batch>> held_;         // wholly taken batches, released after the export
  bool exported_since_wait_ = false;
  bool late_drops_ = false;
  char markers_[2] = {};
};

} // namespace otlpconc::telemetry::detail

namespace otlpconc::telemetry {

class tracer;

class batch_span_processor {
 public:
  explicit batch_span_processor(std::shared_ptr<span_exporter> exporter, batch_span_processor_options options = {},
                                resource res = resource::for_service(), instrumentation_scope scope = {})
      : core_(std::make_shared<detail::bsp_core>(std::move(exporter), std::move(options), std::move(res),
                                                 std::move(scope))) {
    thread_ = std::thread([core = core_] { core->run(); });
  }
  batch_span_processor(const batch_span_processor&) = delete;
  batch_span_processor& operator=(const batch_span_processor&) = delete;

  ~batch_span_processor() {
    if (!thread_.joinable())
      return;
    if (core_->shutdown(core_->options().export_timeout))
      thread_.join();
    else
      thread_.detach(); // the exporter still blocks: the thread owns the core and finishes alone
  }

  bool force_flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(30000)) {
    return core_->force_flush(timeout);
  }
  // Returns true once every accepted span is exported, dropped or failed and the exporter is shut
  // down, within timeout; false otherwise (and also when spans were dropped at the timeout).
  bool shutdown(std::chrono::milliseconds timeout = std::chrono::milliseconds(30000)) {
    const bool done = core_->shutdown(timeout);
    if (done) {
      std::lock_guard lock(join_mutex_); // concurrent shutdown calls join once
      if (thread_.joinable())
        thread_.join();
    }
    return done && core_->shut_down_cleanly();
  }

  batch_span_processor_stats stats() const { return core_->stats(); }
  const batch_span_processor_options& options() const noexcept { return core_->options(); }

  // For tracer.
  detail::bsp_core& core() noexcept { return *core_; }

 private:
  std::shared_ptr<detail::bsp_core> core_;
  std::thread thread_;
  std::mutex join_mutex_;
};

} // namespace otlpconc::telemetry
