// otlpconc/telemetry/batch_span_processor.hpp: OpenTelemetry's batch span processor, built from
// otlpconc's object pool, queue and counters.
//
// What: takes the spans that end on any thread (through a tracer, tracer.hpp), queues them, and
//   hands them in batches to one span_exporter from its own export thread.
//   - Span records come from an object_pool<span_data> (recycled, allocated on the recording
//     thread's NUMA node); whole exported batches of records go back to the recording thread that
//     filled them (at most as many batches as the queue holds, between 8 and 32 a thread; the rest,
//     and those of exited threads, to any recording thread of the records' node). A thread
//     prefetches the records it is about to reuse a few spans ahead.
//   - Each recording thread stages its ended spans in a batch of its own (up to 64, or the export
//     batch size if smaller), which enters the shared ms_queue when full: the queue is touched once
//     per staged batch, not per span. The export thread takes staged spans out of the threads'
//     batches when it needs them (a batch to fill, the schedule, force_flush, shutdown); a thread's
//     staged spans enter the queue when the thread exits.
//   - One shared count of the spans waiting (staged or queued) plus the credits the threads hold
//     (admissions reserved up to 16 at a time, telemetry/detail/admission.hpp) enforces the queue
//     bound and fires the batch trigger; most spans take a credit from their own thread's stage
//     instead of touching the shared count. The other counts are sharded_counters (stats()).
// When to use: recording spans from hot code on many threads, when exporting may be slow or fail.
// When not to: when every span must be exported synchronously at its end (write a processor that
//   calls the exporter directly).
// Guarantees (at any number of recording threads):
//   - Queue bound: at most max_queue_size spans wait (staged or queued). Spans handed to the
//     exporter are no longer waiting (as OpenTelemetry).
//   - Drops only when full: with overflow_policy::drop (the default) a span is dropped only when
//     max_queue_size spans are waiting as it ends (counting those other threads are handing over
//     at that moment); recording never waits for the exporter. With overflow_policy::block it waits
//     for room instead (or for shutdown, which drops it, counted).
//   - Accounting: every span handed to the processor is counted accepted, and then exactly one of
//     exported, dropped (queue full, ended after shutdown, left when shutdown's timeout expired) or
//     failed (its export failed or threw, or the receiver rejected it). accepted == exported +
//     dropped + failed + queued, and queued == 0 at every quiescent point (after a successful
//     force_flush with no recording in between, or after shutdown). Exports still in flight in an
//     asynchronous exporter count as queued until they report.
//   - Export (OpenTelemetry semantics): the exporter's export calls are serialized (one export
//     thread; an exporter may keep several exports in flight, exporter.hpp). A batch is exported as
//     soon as max_export_batch_size spans are waiting, staged ones included (when the count
//     reached a batch through the threads' reserved admissions first: at the export thread's next
//     look, 0.1 to 1.6 ms later, or when a span finds the queue full; so batches are full
//     under load; the processor never drains in a tight loop), when schedule_delay has elapsed
//     since the last export (whatever is waiting), or on force_flush; each export gets a deadline
//     of export_timeout.
//   - force_flush(timeout): hands everything that ended before the call to the exporter (even
//     under sustained load), calls the exporter's force_flush and waits for the exports in flight
//     to report; returns false on timeout or if that force_flush failed (failed exports are in
//     stats()). Timeouts saturate: milliseconds::max() means no deadline. shutdown(timeout):
//     refuses new spans, exports what was accepted, calls the exporter's force_flush then its
//     shutdown (OpenTelemetry: Shutdown includes the effects of ForceFlush), and returns within
//     its timeout even if the exporter blocks (false then; call it again to wait longer). After
//     shutdown's timeout the export thread finishes the export in progress and counts what is left
//     as dropped. The destructor calls shutdown(export_timeout) if it was not called, and if the
//     exporter still blocks after that, leaves the export thread to finish on its own (it owns the
//     shared state, so nothing dangles).
//   - Ordering: a span's writes on the recording thread happen-before the exporter reads it.
// Memory: spans in flight (max_queue_size waiting, one batch exporting) plus the pools' caches and
//   the exported records kept for reuse (per recording thread at most max_queue_size / 64 batches
//   of 64, clamped to 8..32, plus one: 2112 records with the default queue of 2048; the rest in the
//   per-node lists); per processor a table of 1024 thread slots (8 KiB).
// Requirements: the processor outlives its tracers and their spans. An exporter that may block past
//   the destructor's wait must not rely on static objects (its thread may outlive main). An
//   exporter that records spans itself never waits for room (its spans are dropped when full).
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/counter.hpp"
#include "otlpconc/detail/pool_threads.hpp"
#include "otlpconc/ms_queue.hpp"
#include "otlpconc/object_pool.hpp"
#include "otlpconc/telemetry/detail/admission.hpp"
#include "otlpconc/telemetry/detail/env.hpp"
#include "otlpconc/telemetry/diagnostics.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/span_data.hpp"

#include <algorithm>
#include <atomic>
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
  std::int64_t batches = 0;              // exports that reported
  std::int64_t failed_batches = 0;       // exports that failed, threw, or reported rejections
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
  static constexpr std::uint32_t no_origin = ~std::uint32_t{0};
  std::uint32_t size = 0;  // spans in spans[0, size)
  std::uint32_t taken = 0; // export thread: spans[0, taken) already handed to an export
  // The thread index whose stage filled this batch (no_origin: none): after the export its records
  // go back to that stage, whose thread wrote them last, so their lines are likely in its cache.
  std::uint32_t origin = no_origin;
  bsp_batch* next_returned = nullptr; // link in a stage's list of returned batches
  pooled_ptr<span_data> spans[capacity];
};

// How the spans waiting are counted (`admission_` below, telemetry/detail/admission.hpp): the
// count holds the spans admitted and not yet handed to the exporter, plus credits: admissions a
// recording thread reserved (up to 16 at a time, fewer as the queue fills) and keeps in its stage,
// so that most spans are admitted without touching the shared count (one lock xadd per span on a
// line every core wrote: at 2 threads it was most of `end`, docs/telemetry.md). The count never
// passes max_queue_size, so the bound is exact. A thread that finds the count full takes every
// stage's unused credits back before it refuses a span, and a reservation counter tells it
// whether a thread reserved meanwhile (then it looks again): so "drops only when full" stays exact
// at any thread count. (An earlier version reserved queue slots 64 at a time per thread and never
// took them back: with 33 or more threads the reservations used up the queue while almost nothing
// waited.) A count that reaches a batch through credits, not spans, exports nothing: the export
// thread looks again after a pause (0.1 to 1.6 ms, or at once when a span finds the queue full),
// and takes credits back when a thread waits for room and once per schedule_delay.
class bsp_core final : public pool_core_base {
 public:
  using clock = std::chrono::steady_clock;

  bsp_core(std::shared_ptr<span_exporter> exporter, batch_span_processor_options options, resource res,
           instrumentation_scope scope)
      : options_((options.validate(), std::move(options))),
        exporter_(exporter ? std::move(exporter)
                           : throw std::invalid_argument("batch_span_processor: the exporter is null")),
        resource_(std::move(res)), scope_(std::move(scope)), spans_(options_.span_pool),
        batch_size_(static_cast<std::int64_t>(options_.max_export_batch_size)),
        stage_capacity_(
            static_cast<std::uint32_t>(std::min<std::size_t>(bsp_batch::capacity, options_.max_export_batch_size))),
        returned_cap_(returned_cap_for(options_.max_queue_size, stage_capacity_)),
        stages_(new std::atomic<stage*>[pool_thread_registry::max_threads]),
        admission_(static_cast<std::int64_t>(options_.max_queue_size), credit_chunk, 16) {
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i)
      stages_[i].store(nullptr, std::memory_order_relaxed);
    for (std::size_t n = 0; n < spans_.nodes(); ++n)
      recycled_.push_back(std::make_unique<ms_queue<bsp_batch*>>());
    taking_.reserve(options_.max_export_batch_size);
    pending_.reserve(options_.max_export_batch_size + 8);
    held_.reserve(options_.max_export_batch_size); // at most one batch per span: never grows
    pool_thread_registry::instance().add(this);
  }

  ~bsp_core() {
    pool_thread_registry::instance().remove(this); // no thread_exit runs after this
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i) {
      stage* st = stages_[i].load(std::memory_order_relaxed);
      if (st != nullptr) {
        pooled_ptr<bsp_batch>{st->fresh}.reset();
        for (bsp_batch* b = take_returned(st); b != nullptr; b = take_returned(st))
          pooled_ptr<bsp_batch>{b}.reset();
      }
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
  // the pool. The thread first reuses the batches its own stage filled (returned to it: their lines
  // were last written by this thread), then any batch of its node. At 2 recording threads on 2
  // cores, taking the other thread's records made the first writes to a record cache misses: a
  // fifth of the recording time and most of the p99 (docs/telemetry.md, "Where a span's time
  // goes"). Throws what object_pool::acquire throws.
  pooled_ptr<span_data> acquire_span() {
    const unsigned index = pool_thread_index();
    stage* st = index == no_pool_index ? nullptr : stage_of(index);
    if (st != nullptr) {
      bsp_batch* fresh = st->fresh;
      if (fresh == nullptr || fresh->size == 0) [[unlikely]] {
        st->fresh = nullptr; // before anything can throw: never leave a released batch here
        pooled_ptr<bsp_batch>{fresh}.reset();
        if (st->vacant.load(std::memory_order_relaxed)) [[unlikely]] // (R4) a new thread owns the index
          st->vacant.store(false, std::memory_order_relaxed);
        st->fresh = fresh = take_returned(st);
        if (fresh == nullptr)
          st->fresh = fresh = take_recycled();
      }
      if (fresh != nullptr) [[likely]] {
        pooled_ptr<span_data> span = std::move(fresh->spans[--fresh->size]);
        prefetch_ahead(st, fresh);
        span->reset();
        return span;
      }
    }
    return spans_.acquire();
  }
  const batch_span_processor_options& options() const noexcept { return options_; }

  // A span that ended or was refused at its start: counted, and dropped at once.
  void count_refused() noexcept {
    accepted_.increment();
    dropped_.increment();
  }

  bool closed() const noexcept {
    return closed_.load(std::memory_order_acquire); // (P1) acquire: pairs with the seq_cst store (P2)
  }

  // The recording thread hands over an ended, sampled span.
  void on_end(pooled_ptr<span_data> span) noexcept {
    if (closed()) {
      count_refused();
      return;
    }
    const unsigned index = pool_thread_index();
    stage* st = index == no_pool_index ? nullptr : stage_of(index);
    if (st == nullptr) [[unlikely]] {
      accepted_.increment();
      submit_unstaged(std::move(span));
      return;
    }
    // (A0) relaxed: the stage's owner is the count's only writer (a load and a store, no
    // read-modify-write); stats() reads it as a statistic.
    st->accepted.store(st->accepted.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    // (S1) acquire: pairs with the release stores (S2) of this thread's previous operation (same
    // thread) and with a collector's release CAS (C1) that emptied or closed the slot. The span is
    // admitted while the stage is busy, so a collector that waits out busy stages finds every
    // admitted span staged.
    bsp_batch* raw = st->slot.exchange(busy(), std::memory_order_acquire);
    if (raw == closed_slot()) [[unlikely]] {
      st->slot.store(closed_slot(), std::memory_order_relaxed); // nothing was published
      dropped_.increment();
      return;
    }
    if (!admit_with_credit(st)) [[unlikely]] {
      // The slow path may wait (block) or yield: the stage is not left busy meanwhile.
      st->slot.store(raw, std::memory_order_release); // (S2)
      if (!admit_slow(st))                            // counts the drop when it refuses
        return;
      raw = st->slot.exchange(busy(), std::memory_order_acquire); // (S1)
      if (raw == closed_slot()) {                                 // shutdown closed the stage meanwhile
        st->slot.store(closed_slot(), std::memory_order_relaxed);
        leave(1);
        dropped_.increment();
        return;
      }
    }
    pooled_ptr<bsp_batch> batch(raw);
    if (!batch) {
      batch = new_batch();
      if (!batch) [[unlikely]] {                            // out of memory: the span is dropped, counted
        st->slot.store(nullptr, std::memory_order_release); // (S2)
        leave(1);
        dropped_.increment();
        return;
      }
      batch->origin = index;
    }
    batch->spans[batch->size++] = std::move(span);
    if (batch->size == stage_capacity_) {
      enqueue(batch.release());
      st->slot.store(nullptr, std::memory_order_release); // (S2)
    } else {
      park(st, std::move(batch));
    }
  }

  // The calling thread (index) exits: its staged spans enter the queue. Registry mutex held.
  void thread_exit(unsigned index) noexcept override {
    stage* st = stages_[index].load(std::memory_order_acquire); // (T1) acquire: pairs with (S3)
    if (st == nullptr)
      return;
    // Batches returned to this stage go to the node's queue, for any thread. (R4) relaxed: a hint;
    // a batch the export thread returns after it waits in the stage for the index's next thread
    // (at most returned_cap_ batches: see return_to_stage), which clears the flag (registry mutex).
    st->vacant.store(true, std::memory_order_relaxed);
    // The thread's unused credits go back to the count now (tidiness: left in the cell, they would
    // still be taken back by the next reclaim or collection, or used by the index's next thread).
    if (admission_.take_back(st->credit, false) > 0) // (a reclaimer moving them finishes on its own)
      wake_room_waiters();
    recycle(pooled_ptr<bsp_batch>{std::exchange(st->fresh, nullptr)}, /*to_origin=*/false);
    for (bsp_batch* b = take_returned(st); b != nullptr; b = take_returned(st))
      recycle(pooled_ptr<bsp_batch>{b}, /*to_origin=*/false);
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

  // Whether shutdown finished without dropping spans at its deadline, and the exporter's
  // force_flush succeeded and its shutdown did not throw.
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

  batch_span_processor_stats stats() const {
    batch_span_processor_stats s;
    // Outcomes first, then accepted: a span is accepted before its outcome, so queued >= 0 is likely
    // even while spans flow (it is exact only when quiescent).
    s.exported = exported_.load();
    s.dropped = dropped_.load();
    s.failed = failed_.load();
    s.batches = batches_count_.load();
    s.failed_batches = failed_batches_.load();
    s.accepted = accepted_.load();
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i)
      if (const stage* st = stages_[i].load(std::memory_order_acquire)) // (S3') acquire: pairs with (S3)
        s.accepted += static_cast<std::int64_t>(st->accepted.load(std::memory_order_relaxed)); // (A0)
    s.queued = s.accepted - s.exported - s.dropped - s.failed;
    s.export_thread_cpu_ns = export_cpu_ns_.load(std::memory_order_relaxed); // a statistic
    std::lock_guard lock(mutex_);
    s.last_error = last_error_;
    return s;
  }

  // Spans waiting now (staged or queued; a snapshot), for tests, monitoring and the export thread's
  // hint: the count less the credits the stages hold (exact when no thread records; a
  // reservation in progress counts as spans).
  std::int64_t waiting() const noexcept {
    std::int64_t n = admission_.count(); // (W0) a statistic or a hint
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i)
      if (const stage* st = stages_[i].load(std::memory_order_acquire))             // (S3') acquire: pairs with (S3)
        n -= std::max<std::int64_t>(0, st->credit.load(std::memory_order_relaxed)); // (W0)
    return std::max<std::int64_t>(0, n);
  }

  // The export thread's body.
  void run() noexcept {
    bsp_export_thread_core = this;
    auto last_export = clock::now();
    for (;;) {
      bool timer = false, flush = false, closing = false;
      std::uint64_t flush_ticket = 0;
      {
        std::unique_lock lock(mutex_);
        const auto due = after(last_export, options_.schedule_delay);
        for (;;) {
          closing = closing_;
          flush = flush_requested_ != flush_done_;
          if (closing || flush)
            break;
          if (full_batch_waiting()) {
            if (credits_ahead_ == 0)
              break;
            // The count held a batch of credits, not spans, last time (export_full_batches): look
            // again after a pause, or at once on a flush, a shutdown or a wake-up (a crossing of
            // the batch, or a span that found the queue full).
            const auto pause = std::chrono::microseconds(100) * (1 << (credits_ahead_ - 1));
            wake_pending_ = false;
            if (!work_cv_.wait_until(lock, std::min(due, clock::now() + pause),
                                     [&] { return closing_ || flush_requested_ != flush_done_ || wake_pending_; }) ||
                wake_pending_) {
              timer = clock::now() >= due;
              break;
            }
            continue;
          }
          credits_ahead_ = 0; // the count fell below a batch: the next crossing is looked at at once
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
      // Each loop stops when shutdown begins: the final drain takes over, under shutdown's deadline
      // (a flush cut short this way is answered by the shutdown).
      constexpr auto no_deadline = clock::time_point::max();
      if (flush) {
        // Everything that ended before the request is staged or queued: staged spans enter the
        // queue first, then the marker, and everything before the marker is exported.
        collect_stages(false);
        enqueue_marker(flush_marker());
        while (!closed() && export_one(flush_marker(), no_deadline))
          ;
        if (!closed()) {
          const bool ok = call_exporter_flush();
          wait_exports_reported();
          std::lock_guard lock(mutex_);
          flush_done_ = flush_ticket;
          flush_ok_ = ok;
          done_cv_.notify_all();
        }
      } else if (timer) {
        // Under sustained load this loop could go on for ever: a pending flush or shutdown sends
        // the thread back to the top, where it is answered. Credits that idle threads keep would
        // hold the count at a batch: taken back once per schedule.
        credits_ahead_ = 0;
        take_back_credits();
        collect_stages(false);
        while (!needs_attention() && export_one(nullptr, no_deadline))
          ;
      } else {
        export_full_batches();
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
    // Admissions the owner reserved and has not used (counted in admission_), or
    // admission::reserving while the owner reserves (telemetry/detail/admission.hpp).
    admission::credit_cell credit{0};
    bsp_batch* fresh = nullptr; // owner only: recycled records to reuse (spans[0, size))
    bsp_batch* spare = nullptr; // owner only: returned batches taken from `returned`, not used yet
    // Exported batches this stage filled, pushed by the export thread (a list through
    // next_returned), taken whole by the owner; at most returned_cap_ counted in `returned_count`.
    std::atomic<bsp_batch*> returned{nullptr};
    std::atomic<std::uint32_t> returned_count{0};
    std::atomic<bool> vacant{false}; // its thread exited: the export thread returns nothing here
    // Spans the owners of this stage (one thread at a time) handed over: a per-thread share of
    // stats().accepted, written where the thread writes anyway (a shared counter cost a lookup
    // of the thread's counter cell on every span).
    std::atomic<std::uint64_t> accepted{0};
  };
  static bsp_batch* busy() noexcept { return reinterpret_cast<bsp_batch*>(std::uintptr_t{1}); }
  static bsp_batch* closed_slot() noexcept { return reinterpret_cast<bsp_batch*>(std::uintptr_t{2}); }

  // How many spans ahead acquire_span prefetches the record it will reuse: a recycled record's
  // lines are often out of this core's cache (a thread cycles through up to a queue's worth of
  // records), and a span takes about as long as a miss. Measured with probe_record_latency
  // (docs/telemetry.md, "The p99 at 2 threads"): 3 ahead, with the next batch lined up, cut the
  // 1-thread p99 from about 600 to 470 ns; 1 and 2 ahead left more of it.
  static constexpr std::uint32_t prefetch_distance = 3;
  static void prefetch_for_write(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 1, 3);
#else
    (void)p;
#endif
  }
  static void prefetch_record(const span_data* r) noexcept {
    const char* bytes = reinterpret_cast<const char*>(r);
    for (std::size_t offset = 0; offset < sizeof(span_data); offset += 64)
      prefetch_for_write(bytes + offset);
  }
  // After a record was taken from fresh: prefetches the one prefetch_distance takes ahead. In the
  // batch's last spans it lines up the next batch (the spare, else the returned list's head, which
  // the owner alone takes): its header and the returned list's line first, then two records a span,
  // so that the first records of the next batch are warm too. A hint only: nothing is taken here.
  void prefetch_ahead(stage* st, const bsp_batch* fresh) noexcept {
    const std::uint32_t left = fresh->size;
    if (left >= prefetch_distance) [[likely]] {
      prefetch_record(fresh->spans[left - prefetch_distance].get());
      return;
    }
    // (R3') acquire: pairs with (R2), so that the head batch's size and record pointers may be read;
    // they do not change until the owner (this thread) takes the batch.
    const bsp_batch* next = st->spare != nullptr ? st->spare : st->returned.load(std::memory_order_acquire);
    if (next == nullptr)
      return;
    if (left == prefetch_distance - 1) {
      prefetch_for_write(next);
      if (st->spare == nullptr)
        prefetch_for_write(&st->returned); // taken by an exchange at the batch's end
      return;
    }
    const std::uint32_t first = 2 * (prefetch_distance - 2 - left);
    for (std::uint32_t j = first; j < first + 2 && j < next->size; ++j) {
      prefetch_for_write(&next->spans[next->size - 1 - j]);
      prefetch_record(next->spans[next->size - 1 - j].get());
    }
  }
  // Queue entries that are not batches: a flush's and the final drain's end of queue. A flush cut
  // short by shutdown leaves its marker behind, which later exports skip.
  bsp_batch* flush_marker() noexcept {
    return reinterpret_cast<bsp_batch*>(&markers_[0]);
  }
  bsp_batch* final_marker() noexcept {
    return reinterpret_cast<bsp_batch*>(&markers_[1]);
  }
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
    stage_count_.fetch_add(1, std::memory_order_relaxed); // (N1)
    // (S3) seq_cst: publishes the stage to collectors and thread_exit (acquire loads) and is
    // ordered before the re-check (P3) against the seq_cst store of closed_ (P2).
    stages_[index].store(st, std::memory_order_seq_cst);
    // (N2) relaxed: raises the end of the sweep (admit_after_reclaim) past this stage. Happens
    // before every reservation of a thread with this index (K3, seq_cst, so release): sequenced
    // before this thread's, and before a later owner's of a reused index through the thread
    // registry's mutex. A sweep acquires K3 in (R6) before it loads the end (N2'). A sweep whose
    // first R6 missed the K3 and whose decision saw the credits (K4) finds the reservation count
    // moved at its second R6 and sweeps again with the end reloaded; a decision that did not see
    // them refused correctly.
    unsigned end = stage_end_.load(std::memory_order_relaxed);
    while (end <= index && !stage_end_.compare_exchange_weak(end, index + 1, std::memory_order_relaxed))
      ;
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

  // ---- admission: the queue bound and the batch trigger -----------------------------------------

  // Every admission goes through admission_ (telemetry/detail/admission.hpp); a count that reaches
  // a full batch wakes the export thread.
  bool admitted(const admission::result& r) noexcept {
    if (r.admitted && r.added > 0 && r.before < batch_size_ && r.before + r.added >= batch_size_) [[unlikely]]
      wake_export_thread();
    return r.admitted;
  }
  // A thread without a stage: one increment; a refusal is undone and decided again exactly by
  // admit_exact.
  bool admit_fast() noexcept {
    const admission::result r = admission_.admit_increment();
    if (!r.admitted)
      leave(1);
    return admitted(r);
  }
  bool admit_exact() noexcept {
    return admitted(admission_.admit_exact());
  }
  // The owner of st (its stage busy): a credit of its stage, else a reservation of up to
  // credit_chunk admissions, fewer as the queue fills, and fewer as threads multiply: at most a
  // quarter of a batch among all the stages (batch / (4 x stages)), so that credits alone rarely
  // bring the count to a batch (the export thread would look again until they turned into spans:
  // with 48 threads and 16 each, measured at 4x its CPU). From 128 threads on (default batch)
  // each span is one exact admission, as before credits. False when the count is full.
  static constexpr std::int64_t credit_chunk = 16;
  bool admit_with_credit(stage* st) noexcept {
    // (N1) relaxed: a bound on a hint; the count of stages only grows.
    const auto stages = static_cast<std::int64_t>(stage_count_.load(std::memory_order_relaxed));
    return admitted(admission_.admit_with_credit(st->credit, batch_size_ / (4 * std::max<std::int64_t>(1, stages))));
  }
  // Admits one span after taking every stage's unused credits back: false only when
  // max_queue_size spans wait.
  bool admit_after_reclaim() noexcept {
    // Only up to the highest thread index that has a stage: indices are handed out lowest first,
    // so at T threads the sweep reads about T slots, not the table's 1024.
    auto each_stage = [this](auto&& f) {
      const unsigned end = stage_end_.load(std::memory_order_relaxed); // (N2') relaxed: see (N2)
      for (unsigned i = 0; i < end; ++i)
        if (stage* st = stages_[i].load(std::memory_order_acquire)) // (S3') acquire: pairs with (S3)
          f(st->credit);
    };
    const admission::result r = admission_.admit_after_reclaim(each_stage);
    if (r.taken > 0)
      wake_room_waiters();
    return admitted(r);
  }
  // The queue looked full. drop: takes the other threads' unused credits back and decides again,
  // then yields once (on a busy machine the export thread may be runnable but not running: it gets
  // this CPU) and decides again; then the span is dropped, counted. block: the thread's own staged
  // spans become exportable, then it waits for room (or shutdown: dropped). Returns whether the
  // span was admitted.
  bool admit_slow(stage* st) noexcept {
    if (admit_after_reclaim())
      return true;
    // Full: the export thread may be pausing while credits turned into a batch of spans unseen.
    wake_export_thread();
    if (drops_when_full()) {
      std::this_thread::yield();
      if (admit_after_reclaim())
        return true;
      dropped_.increment();
      return false;
    }
    for (;;) {
      flush_own_stage(st);
      if (!wait_for_room_or_drop())
        return false;
      if (admit_after_reclaim())
        return true;
    }
  }
  // Spans handed to the exporter (or refused after admission) no longer wait.
  void leave(std::int64_t n) noexcept {
    admission_.remove(n); // (Q2) seq_cst: pairs with (Q3)
    wake_room_waiters();
  }
  // After the count went down (Q2, or a take_back's removal, also seq_cst).
  void wake_room_waiters() noexcept {
    if (room_waiters_.load(std::memory_order_seq_cst) != 0) { // (Q3')
      { std::lock_guard lock(mutex_); }
      done_cv_.notify_all();
    }
  }
  bool full_batch_waiting() const noexcept {
    return admission_.count() >= batch_size_; // (W0) a hint: the pops synchronize
  }
  // The count reached a full batch: the export thread re-checks under the mutex before it sleeps,
  // so taking it here is enough for the wake-up not to be lost.
  void wake_export_thread() noexcept {
    std::lock_guard lock(mutex_);
    wake_pending_ = true; // ends a pause of run() too
    work_cv_.notify_one();
  }

  // Block mode: the calling thread's staged spans enter the queue (the export thread would collect
  // them too; this saves it the wait).
  void flush_own_stage(stage* st) noexcept {
    bsp_batch* raw = st->slot.exchange(busy(), std::memory_order_acquire); // (S1)
    if (raw == closed_slot()) {
      st->slot.store(closed_slot(), std::memory_order_relaxed);
      return;
    }
    if (raw != nullptr)
      enqueue(raw);
    st->slot.store(nullptr, std::memory_order_release); // (S2)
  }

  // What a span that finds the queue full does: dropped with the drop policy, and always on the
  // export thread (an exporter recording spans must not wait for room only its own thread makes).
  bool drops_when_full() const noexcept {
    return options_.on_full == overflow_policy::drop || bsp_export_thread_core == this;
  }

  // Block policy: waits for room. False when shutdown ended the wait: the span is dropped, counted.
  bool wait_for_room_or_drop() noexcept {
    try {
      std::unique_lock lock(mutex_);
      // (Q3) seq_cst: either this waiter's check below sees the decrement (Q2), or the decrementer
      // sees this count (Q3') and notifies under the mutex.
      room_waiters_.fetch_add(1, std::memory_order_seq_cst);
      // Credits reserved after this thread took them back count as waiting until their threads use
      // them, or until the export thread takes them back (export_full_batches), which wakes it.
      done_cv_.wait(lock, [&] { return closing_ || admission_.count(std::memory_order_seq_cst) < max_waiting(); });
      room_waiters_.fetch_sub(1, std::memory_order_relaxed);
    } catch (...) { // the mutex failed: give the CPU away and look again
      std::this_thread::yield();
    }
    if (!closed())
      return true;
    dropped_.increment();
    return false;
  }

  // ---- the queue ---------------------------------------------------------------------------------

  // A batch enters the queue (its spans are admitted already). Never throws: if the queue cannot
  // allocate its node, the spans are dropped (counted).
  void enqueue(bsp_batch* batch) noexcept {
    const std::int64_t n = batch->size;
    if (n == 0) {
      pooled_ptr<bsp_batch>{batch}.reset();
      return;
    }
    try {
      ready_.push(batch); // release: pairs with the acquire in the export thread's pop
    } catch (...) {
      pooled_ptr<bsp_batch>{batch}.reset();
      leave(n);
      dropped_.add(n);
    }
  }

  // A thread with no thread index (more than 1024 live threads, or past its exit) submits one span.
  void submit_unstaged(pooled_ptr<span_data> span) noexcept {
    // (P4) seq_cst, with the load of closed_ after it: pairs with (P2) and the final drain's wait for
    // unstaged_ to reach 0.
    unstaged_->fetch_add(1, std::memory_order_seq_cst);
    struct leave_guard {
      std::atomic<std::int64_t>& n;
      ~leave_guard() { n.fetch_sub(1, std::memory_order_release); } // (P5) release: pairs with (P6)
    } guard{*unstaged_};
    if (closed_.load(std::memory_order_seq_cst)) {
      dropped_.increment();
      return;
    }
    if (!admit_fast()) {
      // As a staged span's admit_slow: the stages' unused credits are taken back before a refusal.
      bool admitted = admit_after_reclaim();
      if (!admitted && drops_when_full()) {
        std::this_thread::yield();
        admitted = admit_after_reclaim();
      }
      while (!admitted && !drops_when_full()) {
        if (!wait_for_room_or_drop())
          return;
        admitted = admit_after_reclaim();
      }
      if (!admitted) {
        dropped_.increment();
        return;
      }
    }
    pooled_ptr<bsp_batch> batch = new_batch();
    if (!batch) {
      leave(1);
      dropped_.increment();
      return;
    }
    batch->spans[batch->size++] = std::move(span);
    enqueue(batch.release());
  }

  // Every stage's unused credits leave the count (reservations in progress are left).
  void take_back_credits() noexcept {
    std::int64_t taken = 0;
    for (unsigned i = 0; i < pool_thread_registry::max_threads; ++i)
      if (stage* st = stages_[i].load(std::memory_order_acquire)) // (S3') acquire: pairs with (S3)
        taken += admission_.take_back(st->credit, false);
    if (taken > 0)
      wake_room_waiters();
  }

  // Takes every thread's staged batch into the queue; closing also closes the stages. (The export
  // thread, when it needs the staged spans.)
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
      // Closing: the stage's unused credits leave the count (a closed stage reserves nothing more:
      // on_end finds the slot closed before it admits).
      if (closing && admission_.take_back(st->credit, false) > 0)
        wake_room_waiters();
    }
  }

  // A batch whose records were exported goes back to the stage that filled it (return_to_stage), or
  // else to a recording thread of the records' node.
  void recycle(pooled_ptr<bsp_batch> batch, bool to_origin = true) noexcept {
    if (!batch || batch->size == 0)
      return; // destroyed (an empty batch, or nothing to recycle)
    batch->taken = 0;
    if (to_origin && return_to_stage(batch))
      return;
    const unsigned node = object_pool<span_data>::node_of(batch->spans[0].get());
    try {
      recycled_[node]->push(batch.get()); // release: pairs with the acquire pop in take_recycled
      batch.release();
    } catch (...) { // no memory for a queue node: the records go back to the pool instead
    }
  }

  // Batches a stage may hold returned and not yet taken: as many as the queue holds
  // (max_queue_size / stage capacity, rounded up), clamped to 8..32 (32 with the defaults). A thread
  // whose share of a full queue was in flight gets it all back, so it does not run out of its own
  // records while the export thread catches up. With 8 at the default queue, 2 recording threads
  // took about 35% of their batches from the node's shared list (a queue pop and the other core's
  // records: 535-677 ns each, the 2-thread p99; docs/telemetry.md). Memory: a thread holds at most
  // returned_cap_ + 1 batches of records it does not use (the whole bound: a stage whose thread
  // exited is left alone, up to the returned_cap_ batches a return racing with the exit put there,
  // reused by the index's next thread).
  static std::uint32_t returned_cap_for(std::size_t max_queue_size, std::uint32_t stage_capacity) noexcept {
    const std::size_t batches = (max_queue_size + stage_capacity - 1) / stage_capacity;
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(batches, 8, 32));
  }

  // The export thread returns an exported batch to the stage that filled it. False (the batch is
  // still the caller's) when it has no origin, the stage's thread exited, or the stage holds
  // returned_cap_ batches.
  bool return_to_stage(pooled_ptr<bsp_batch>& batch) noexcept {
    const std::uint32_t origin = batch->origin;
    if (origin >= pool_thread_registry::max_threads)
      return false;
    stage* st = stages_[origin].load(std::memory_order_acquire); // (S3') acquire: pairs with (S3)
    // (R1) relaxed: both are bounds and hints; the batch itself travels by (R2).
    if (st == nullptr || st->vacant.load(std::memory_order_relaxed) ||
        st->returned_count.load(std::memory_order_relaxed) >= returned_cap_)
      return false;
    st->returned_count.fetch_add(1, std::memory_order_relaxed); // (R1)
    bsp_batch* b = batch.release();
    bsp_batch* head = st->returned.load(std::memory_order_relaxed);
    do {
      b->next_returned = head;
      // (R2) release: the batch (its records' pointers, size, link) happens-before the owner's
      // acquire exchange (R3). The owner only ever takes the whole list, so a head seen here
      // cannot come back while this CAS is pending (no ABA).
    } while (!st->returned.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
    return true;
  }

  // The owner of st (or the thread exit, or the destructor) takes one returned batch, or null.
  bsp_batch* take_returned(stage* st) noexcept {
    if (st->spare == nullptr) {
      // (R3) acquire: pairs with (R2). Loaded first, so that an empty list costs no exchange.
      if (st->returned.load(std::memory_order_relaxed) == nullptr)
        return nullptr;
      st->spare = st->returned.exchange(nullptr, std::memory_order_acquire); // (R3)
      if (st->spare == nullptr)
        return nullptr;
    }
    bsp_batch* b = std::exchange(st->spare, st->spare->next_returned);
    b->next_returned = nullptr;
    st->returned_count.fetch_sub(1, std::memory_order_relaxed); // (R1)
    return b;
  }

  bsp_batch* take_recycled() {
    const unsigned node = recycled_.size() == 1 ? 0 : spans_.node_of_calling_thread();
    std::optional<bsp_batch*> batch = recycled_[node]->try_pop();
    return batch ? *batch : nullptr;
  }

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

  // ---- exporting ---------------------------------------------------------------------------------

  // Full batches while max_export_batch_size spans wait. The queue holds the staged batches that
  // filled; when it holds less than a batch, the other waiting spans are staged: they are
  // collected (a thread between its admission and its staging is waited for by the collection).
  void export_full_batches() noexcept {
    while (!needs_attention() && full_batch_waiting()) {
      if (queued_spans() < batch_size_) {
        if (waiting() < batch_size_ || (collect_stages(false), waiting() < batch_size_)) {
          // The count holds a batch, the spans do not: the rest are credits the recording threads
          // hold (or a reservation in progress). They turn into spans without touching the count,
          // so nothing would wake this thread: run() looks again after a pause that doubles while
          // this lasts (0.1 to 1.6 ms: the delay of an export once the spans make a batch; a span
          // that finds the queue full wakes it at once). Credits are taken back only for threads
          // that wait for room (taking them from active threads makes each reserve again, crossing
          // the batch again: a wake-up per reservation with many threads).
          if (room_waiters_.load(std::memory_order_relaxed) != 0) // (Q3'') relaxed: a hint
            take_back_credits();
          credits_ahead_ = std::min(credits_ahead_ + 1, 5);
          return;
        }
      }
      if (queued_spans() < batch_size_) {
        // Admitted spans not staged yet (their threads are between the count and the stage): the
        // count is ahead of the queue for a moment.
        std::this_thread::yield();
        collect_stages(false);
      }
      credits_ahead_ = 0;
      export_one(nullptr, clock::time_point::max());
    }
  }

  // The spans queued (and in the partly exported batch), counted up to a full batch: the export
  // thread pops queue entries into its own FIFO (pending_) to count them (the pops synchronize
  // with the pushes); export_one takes from that FIFO first, so the order is kept.
  std::int64_t queued_spans() noexcept {
    if (pending_head_ != 0) { // drop the entries already taken (no allocation)
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(pending_head_));
      pending_head_ = 0;
    }
    while (pending_spans_ + carry_spans() < batch_size_ && pending_.size() < pending_.capacity()) {
      std::optional<bsp_batch*> next = ready_.try_pop();
      if (!next)
        break;
      pending_.push_back(*next); // never grows: reserved for a full batch of one-span entries
      if (!is_marker(*next))
        pending_spans_ += (*next)->size;
    }
    return pending_spans_ + carry_spans();
  }
  std::int64_t carry_spans() const noexcept {
    return carry_ ? carry_->size - carry_->taken : 0;
  }

  // The next queue entry: from what queued_spans() popped first, then from the queue.
  std::optional<bsp_batch*> next_entry() noexcept {
    if (pending_head_ < pending_.size()) {
      bsp_batch* b = pending_[pending_head_++];
      if (pending_head_ == pending_.size()) {
        pending_.clear();
        pending_head_ = 0;
      }
      if (!is_marker(b))
        pending_spans_ -= b->size;
      return b;
    }
    return ready_.try_pop();
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
        std::optional<bsp_batch*> next = next_entry();
        if (!next)
          break;
        if (*next == stop_marker) {
          marker_seen = true;
          break;
        }
        if (is_marker(*next))
          continue; // a flush's marker left behind by shutdown
        carry_.reset(*next);
      }
      while (taking_.size() < limit && carry_->taken < carry_->size)
        taking_.push_back(carry_->spans[carry_->taken++].get());
      if (carry_->taken == carry_->size)
        held_.push_back(std::move(carry_)); // released after the export
    }
    const bool more = stop_marker != nullptr ? !marker_seen : taking_.size() == limit;
    if (taking_.empty())
      return false; // nothing queued (with a stop marker: it was reached)
    const auto n = static_cast<std::int64_t>(taking_.size());
    leave(n);
    const auto now = clock::now();
    if (now >= hard_deadline) { // shutdown's timeout has passed: what is left is dropped
      dropped_.add(n);
      late_drops_ = true;
    } else {
      const auto deadline = std::min(hard_deadline, after(now, options_.export_timeout));
      {
        std::lock_guard lock(in_flight_mutex_);
        ++in_flight_;
      }
      try {
        exporter_->export_spans_async(span_batch_view{resource_, scope_, taking_}, deadline,
                                      [this, n](export_result result) noexcept { exported(n, std::move(result)); });
      } catch (const std::exception& e) {
        exported(n, export_result::failure(std::string("exporter threw: ") + e.what()));
      } catch (...) {
        exported(n, export_result::failure("exporter threw a non-standard exception"));
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

  // An export's outcome (on the export thread, or on an asynchronous exporter's thread).
  void exported(std::int64_t n, export_result result) noexcept {
    batches_count_.increment();
    if (result.status == export_status::success) {
      const auto rejected =
          static_cast<std::int64_t>(std::min<std::uint64_t>(result.rejected_spans, static_cast<std::uint64_t>(n)));
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
    // The decrement is the callback's last touch of this object, under the mutex the export thread
    // checks it with: once that thread sees 0 it may let the object go.
    std::lock_guard lock(in_flight_mutex_);
    if (--in_flight_ == 0)
      in_flight_cv_.notify_all();
  }

  // Export thread: waits until every export it started has reported (an asynchronous exporter's
  // callbacks use this object: the thread keeps it alive until then).
  void wait_exports_reported() noexcept {
    std::unique_lock lock(in_flight_mutex_);
    in_flight_cv_.wait(lock, [&] { return in_flight_ == 0; });
  }

  void note_error(std::string message) noexcept {
    try {
      std::lock_guard lock(mutex_);
      last_error_ = std::move(message);
    } catch (...) {
    }
  }

  bool call_exporter_flush(clock::time_point deadline) noexcept {
    try {
      return exporter_->force_flush(deadline);
    } catch (...) {
      return false;
    }
  }
  bool call_exporter_flush() noexcept {
    return call_exporter_flush(after(clock::now(), options_.export_timeout));
  }

  bool needs_attention() const noexcept {
    return closed() || flush_pending_.load(std::memory_order_relaxed);
  }

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

  // Shutdown: everything accepted is exported (or dropped at the deadline), then the exporter is
  // flushed and shut down, and every export it has in flight reports.
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
    clean = call_exporter_flush(deadline) && clean; // OpenTelemetry: Shutdown includes ForceFlush
    try {
      exporter_->shutdown(deadline);
    } catch (...) {
      clean = false;
    }
    wait_exports_reported();
    note_cpu_time();
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    clean_shutdown_ = clean && !late_drops_;
    done_cv_.notify_all();
  }

  bool wait_shut_down(std::unique_lock<std::mutex>& lock, clock::time_point deadline) {
    return done_cv_.wait_until(lock, deadline, [&] { return shut_down_; });
  }

  const batch_span_processor_options options_;
  const std::shared_ptr<span_exporter> exporter_;
  const resource resource_;
  const instrumentation_scope scope_;
  object_pool<span_data> spans_;
  object_pool<bsp_batch> batches_;
  ms_queue<bsp_batch*> ready_;
  std::int64_t max_waiting() const noexcept {
    return admission_.max_waiting();
  }
  const std::int64_t batch_size_;
  const std::uint32_t stage_capacity_;
  const std::uint32_t returned_cap_; // returned_cap_for: batches a stage may hold returned
  std::unique_ptr<std::atomic<stage*>[]> stages_;
  std::vector<std::unique_ptr<ms_queue<bsp_batch*>>> recycled_; // per node: exported batches to reuse

  admission admission_;                  // spans staged or queued, plus the credits the stages hold
  std::atomic<unsigned> stage_count_{0}; // stages created (one per thread index ever used)
  std::atomic<unsigned> stage_end_{0};   // one past the highest thread index with a stage
  cache_padded<std::atomic<std::int64_t>> unstaged_{std::in_place, 0}; // unstaged submissions in progress
  std::atomic<bool> closed_{false};
  std::atomic<bool> flush_pending_{false}; // a hint: a force_flush waits (the mutex-guarded counts decide)
  std::atomic<int> room_waiters_{0};
  std::atomic<std::int64_t> export_cpu_ns_{0};

  // accepted_: spans refused at once (after shutdown) and those of threads without a stage; the
  // others are counted in their stage.
  sharded_counter accepted_, exported_, dropped_, failed_, batches_count_, failed_batches_;

  mutable std::mutex mutex_;
  std::condition_variable work_cv_; // the export thread waits for work
  std::condition_variable done_cv_; // flushes, shutdowns and block-mode recorders wait
  std::uint64_t flush_requested_ = 0, flush_done_ = 0;
  bool closing_ = false, shut_down_ = false, clean_shutdown_ = false, flush_ok_ = true;
  bool wake_pending_ = false; // mutex_: wake_export_thread ran since run() began its pause
  clock::time_point shutdown_deadline_{};
  std::string last_error_;
  std::mutex in_flight_mutex_;
  std::condition_variable in_flight_cv_;
  std::int64_t in_flight_ = 0; // exports started, not yet reported (in_flight_mutex_)

  // Export thread only.
  int credits_ahead_ = 0;                   // rounds in a row the count held a batch and the spans did not (at most 5)
  pooled_ptr<bsp_batch> carry_;             // a queued batch whose spans are partly exported
  std::vector<bsp_batch*> pending_;         // entries popped from the queue, not yet taken
  std::size_t pending_head_ = 0;            // the next of pending_ to take
  std::int64_t pending_spans_ = 0;          // the spans in pending_[pending_head_, end)
  std::vector<const span_data*> taking_;    // the batch being exported
  std::vector<pooled_ptr<bsp_batch>> held_; // wholly taken batches, released after the export
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
  // Spans waiting now (staged or queued), at most max_queue_size; a snapshot.
  std::int64_t waiting() const noexcept { return core_->waiting(); }
  const batch_span_processor_options& options() const noexcept { return core_->options(); }

  // For tracer.
  detail::bsp_core& core() noexcept { return *core_; }

 private:
  std::shared_ptr<detail::bsp_core> core_;
  std::thread thread_;
  std::mutex join_mutex_;
};

} // namespace otlpconc::telemetry
