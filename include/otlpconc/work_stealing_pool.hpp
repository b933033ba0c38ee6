// otlpconc/work_stealing_pool.hpp: a work-stealing thread pool with fork-join task groups.
//
// What: N worker threads, each owning a chase_lev_deque of tasks. Tasks submitted from outside the
//   pool go through an ms_queue injector; tasks spawned by a task inside the pool go to its worker's
//   deque. An idle worker tries its own deque, then the injector, then steals a batch from a random
//   victim, and finally parks on an event count (no spinning while idle).
// When to use: CPU-bound work split into many small tasks, recursive fork-join (task_group), and
//   fire-and-forget jobs (post) or jobs with a result (submit).
// When not to: blocking I/O inside tasks (a blocked worker is lost to the pool; use a dedicated
//   thread pool), or when tasks need strict FIFO order (the pool is LIFO per worker).
// Guarantees:
//   - No lost wake-ups: a submission wakes a parked worker (event count with a Dekker pair of
//     seq_cst fences, detail/event_count.hpp). An idle pool sleeps in futex waits.
//   - task_group::wait() runs pending tasks (its own or others') while it waits, so recursive
//     fork-join neither deadlocks nor needs more threads than the pool has.
//   - Exceptions: from submit(), through the future; from a task_group task, rethrown by wait()
//     (the first one; the group's other tasks still run); from post(), passed to the pool's
//     unhandled-exception handler (default: std::terminate, as std::thread does).
//   - Shutdown (shutdown() or the destructor) rejects new external submissions with
//     std::runtime_error, runs every task already accepted (and the tasks they spawn), then joins.
// Memory: one small block per task (recycled through a per-thread cache), plus the deques.
// Requirements: callables are move constructible and invocable with no arguments.
#pragma once

#include "otlpconc/chase_lev_deque.hpp"
#include "otlpconc/detail/event_count.hpp"
#include "otlpconc/detail/node_cache.hpp"
#include "otlpconc/ms_queue.hpp"

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace otlpconc {

class work_stealing_pool;
class task_group;

namespace detail {

// A type-erased task. run() executes it, accounts for it and frees it.
struct pool_task {
  void (*run)(pool_task*) noexcept;
};

// Small tasks live in fixed-size blocks recycled through a node cache.
struct alignas(std::max_align_t) task_block {
  unsigned char bytes[128];
};
using task_block_cache = node_cache<task_block, std::allocator<task_block>>;

template <class Impl>
constexpr bool fits_task_block = sizeof(Impl) <= sizeof(task_block) && alignof(Impl) <= alignof(task_block);

template <class Impl, class... Args>
Impl* new_task(Args&&... args) {
  if constexpr (fits_task_block<Impl>) {
    void* mem = task_block_cache::allocate();
    try {
      return ::new (mem) Impl(std::forward<Args>(args)...);
    } catch (...) {
      task_block_cache::deallocate(static_cast<task_block*>(mem));
      throw;
    }
  } else {
    return new Impl(std::forward<Args>(args)...);
  }
}

template <class Impl>
void delete_task(Impl* t) noexcept {
  if constexpr (fits_task_block<Impl>) {
    t->~Impl();
    task_block_cache::deallocate(reinterpret_cast<task_block*>(t));
  } else {
    delete t;
  }
}

struct worker_context {
  work_stealing_pool* pool = nullptr;    // the pool whose worker this thread is
  std::size_t index = 0;                 // its worker index
  work_stealing_pool* helping = nullptr; // a pool whose task this (non-worker) thread is running
};
inline constinit thread_local worker_context current_worker{};

} // namespace detail

class work_stealing_pool {
 public:
  using exception_handler = std::function<void(std::exception_ptr)>;

  // One worker per hardware thread.
  work_stealing_pool() : work_stealing_pool(default_threads()) {}
  // Throws std::invalid_argument unless 1 <= threads <= max_threads. `on_unhandled_exception`
  // receives exceptions escaping post()ed tasks (and task groups destroyed without wait()); empty
  // means std::terminate.
  explicit work_stealing_pool(std::size_t threads, exception_handler on_unhandled_exception = {})
      : handler_(std::move(on_unhandled_exception)) {
    if (threads == 0 || threads > max_threads)
      throw std::invalid_argument("work_stealing_pool: thread count must be between 1 and 1024");
    workers_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i)
      workers_.push_back(std::make_unique<worker>());
    try {
      for (std::size_t i = 0; i < threads; ++i)
        workers_[i]->thread = std::thread([this, i] { worker_main(i); });
    } catch (...) {
      stop_and_join();
      throw;
    }
  }
  work_stealing_pool(const work_stealing_pool&) = delete;
  work_stealing_pool& operator=(const work_stealing_pool&) = delete;

  // Runs every accepted task, then joins. Must not run on one of this pool's workers.
  ~work_stealing_pool() { shutdown(); }

  static constexpr std::size_t max_threads = 1024;
  static std::size_t default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
  }

  std::size_t size() const noexcept { return workers_.size(); }

  // Fire and forget. Throws std::runtime_error after shutdown began (from outside the pool's
  // tasks), std::bad_alloc if the task cannot be allocated.
  template <class F>
  void post(F&& f) {
    using fn = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn&>, "work_stealing_pool::post(f): f must be callable with no arguments");
    static_assert(std::is_move_constructible_v<fn>, "work_stealing_pool::post(f): f must be move constructible");
    auto* t = detail::new_task<post_task<fn>>(this, std::forward<F>(f));
    // (P1) seq_cst, and the seq_cst load of closed_ after it, pair with shutdown's seq_cst exchange
    // of closed_ and load of outstanding_ (P3): either shutdown sees this task and waits for it, or
    // we see the pool closed and take the task back. Nothing accepted is stranded.
    outstanding_->fetch_add(1, std::memory_order_seq_cst);
    if (closed_.load(std::memory_order_seq_cst) && !inside()) {
      detail::delete_task(t);
      task_done();
      throw std::runtime_error("work_stealing_pool: submission after shutdown");
    }
    try {
      enqueue(t);
    } catch (...) { // the queues are unchanged when they throw
      detail::delete_task(t);
      task_done();
      throw;
    }
  }

  // Runs f() on the pool; its result or exception arrives through the future.
  template <class F>
  auto submit(F&& f) -> std::future<std::invoke_result_t<std::decay_t<F>&>> {
    using fn = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn&>, "work_stealing_pool::submit(f): f must be callable with no arguments");
    using result = std::invoke_result_t<fn&>;
    std::packaged_task<result()> task(std::forward<F>(f));
    auto future = task.get_future();
    post(std::move(task)); // packaged_task stores exceptions in the future: nothing reaches the handler
    return future;
  }

  // Stops accepting external submissions, runs every accepted task (and what they spawn), joins the
  // workers. Idempotent. Throws std::logic_error if called from one of this pool's workers.
  void shutdown() {
    if (inside())
      throw std::logic_error("work_stealing_pool: shutdown from one of the pool's own tasks would deadlock");
    if (closed_.exchange(true, std::memory_order_seq_cst)) { // (P3) seq_cst: see P1
      join_all();
      return;
    }
    // (P3) seq_cst: see P1. It also pairs, as an acquire, with the completions' release (P2):
    // every accepted task has finished and its effects are visible.
    help_until([this] { return outstanding_->load(std::memory_order_seq_cst) == 0; }, false);
    stop_and_join();
  }

 private:
  friend class task_group;

  struct worker {
    chase_lev_deque<detail::pool_task*> deque{256};
    std::thread thread;
    std::uint64_t rng = 0;
  };

  template <class F>
  struct post_task : detail::pool_task {
    post_task(work_stealing_pool* p, F&& fn) : pool(p), f(std::move(fn)) { run = &execute; }
    post_task(work_stealing_pool* p, const F& fn) : pool(p), f(fn) { run = &execute; }
    static void execute(detail::pool_task* base) noexcept {
      auto* self = static_cast<post_task*>(base);
      work_stealing_pool* p = self->pool;
      try {
        self->f();
      } catch (...) {
        p->unhandled(std::current_exception());
      }
      detail::delete_task(self);
      p->task_done();
    }
    work_stealing_pool* pool;
    F f;
  };

  // Accounts for a finished (or rejected) post()ed task.
  void task_done() noexcept {
    // (P2) acq_rel: release publishes the task's effects to shutdown's load (P3).
    if (outstanding_->fetch_sub(1, std::memory_order_acq_rel) == 1)
      parking_.notify_all(); // a shutdown may be waiting for the last task
  }

  // The calling thread is one of our workers, or is running one of our tasks.
  bool inside() const noexcept { return detail::current_worker.pool == this || detail::current_worker.helping == this; }

  // task_group::run's check (post() does its own, ordered against shutdown, see P1).
  void check_open() const {
    // (P3') acquire: pairs with shutdown's exchange. Tasks of this pool may still submit while
    // shutdown drains (their work was accepted); other threads may not.
    if (closed_.load(std::memory_order_acquire) && !inside())
      throw std::runtime_error("work_stealing_pool: submission after shutdown");
  }

  void unhandled(std::exception_ptr e) noexcept {
    if (handler_) {
      try {
        handler_(std::move(e));
        return;
      } catch (...) {
      }
    }
    std::terminate();
  }

  // From one of this pool's workers: its own deque (LIFO, cache-hot). Otherwise the injector.
  void enqueue(detail::pool_task* t) {
    const detail::worker_context& w = detail::current_worker;
    if (w.pool == this)
      workers_[w.index]->deque.push(t);
    else
      injector_.push(t);
    parking_.notify_one(); // after publishing: pairs with a parking worker's re-check
  }

  // Own deque, injector, then a batch stolen from a random victim into our deque.
  detail::pool_task* find_task(std::size_t self) {
    worker& me = *workers_[self];
    if (auto t = me.deque.pop())
      return *t;
    if (auto t = injector_.try_pop())
      return *t;
    const std::size_t n = workers_.size();
    if (n > 1) {
      std::size_t start = static_cast<std::size_t>(next_random(me.rng) % n);
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t v = (start + k) % n;
        if (v == self)
          continue;
        worker& victim = *workers_[v];
        if (victim.deque.empty())
          continue;
        if (const std::size_t moved = victim.deque.steal_batch(me.deque, 32); moved > 0) {
          if (moved > 1 || !victim.deque.empty())
            parking_.notify_one(); // surplus here or left there: let another sleeper help
          if (auto t = me.deque.pop())
            return *t;
        }
      }
    }
    return nullptr;
  }

  // From a thread that is not one of our workers: the injector, then single steals.
  detail::pool_task* find_task_external() {
    if (auto t = injector_.try_pop())
      return *t;
    for (auto& w : workers_)
      if (!w->deque.empty())
        if (auto t = w->deque.steal())
          return *t;
    return nullptr;
  }

  detail::pool_task* find_any() {
    const detail::worker_context& w = detail::current_worker;
    return w.pool == this ? find_task(w.index) : find_task_external();
  }

  bool work_visible() const noexcept {
    if (!injector_.empty())
      return true;
    for (auto& w : workers_)
      if (!w->deque.empty())
        return true;
    return false;
  }

  // Runs tasks until done() holds; parks when there is nothing to run. done() must become true only
  // through a task completion that wakes parked threads: the last task of a group wakes them if a
  // group waiter is parked (group_waiters_), the last post()ed task always does.
  template <class Done>
  void help_until(Done done, bool group_wait) {
    int idle_rounds = 0;
    bool slept = false;
    while (!done()) {
      if (detail::pool_task* t = find_any()) {
        run_here(t);
        idle_rounds = 0;
        continue;
      }
      if (++idle_rounds < spin_rounds) {
        std::this_thread::yield();
        continue;
      }
      // (P5) relaxed: ordered before the re-check of done() by prepare_wait's fence (E2); pairs
      // with the fence and load in group_task::execute.
      if (group_wait)
        group_waiters_->fetch_add(1, OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst));
      const std::uint32_t key = parking_.prepare_wait();
      if (done() || work_visible()) {
        parking_.cancel_wait();
      } else {
        parking_.wait(key);
        slept = true;
      }
      if (group_wait)
        group_waiters_->fetch_sub(1, std::memory_order_relaxed); // (P5)
      idle_rounds = 0;
    }
    // A wake-up meant for a worker may have woken us instead, and we are leaving: pass it on.
    if (slept && work_visible())
      parking_.notify_one();
  }

  // Runs t on the calling thread; a thread outside the pool is marked as running one of its tasks,
  // so the task may spawn work while the pool shuts down.
  void run_here(detail::pool_task* t) noexcept {
    detail::worker_context& w = detail::current_worker;
    if (w.pool == this) {
      t->run(t);
      return;
    }
    work_stealing_pool* previous = std::exchange(w.helping, this);
    t->run(t);
    w.helping = previous;
  }

  // Called by the last task of a group after its decrement: wakes parked threads if one of them
  // may be waiting for a group (the group itself may be gone by now; the pool is not).
  void group_finished() noexcept {
    // (P6) seq_cst fence: pairs with E2 after a waiter's P5 increment: either the waiter's re-check
    // sees pending == 0, or we see its count and wake it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (group_waiters_->load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst)) != 0)
      parking_.notify_all();
  }

  void worker_main(std::size_t index) {
    detail::current_worker = {this, index};
    workers_[index]->rng = 0x9e3779b97f4a7c15ULL * (index + 1);
    int idle_rounds = 0;
    for (;;) {
      if (detail::pool_task* t = find_task(index)) {
        t->run(t);
        idle_rounds = 0;
        continue;
      }
      if (++idle_rounds < spin_rounds) {
        std::this_thread::yield();
        continue;
      }
      const std::uint32_t key = parking_.prepare_wait();
      // (P4) acquire: pairs with stop_and_join's release store.
      if (work_visible() || stop_.load(std::memory_order_acquire)) {
        parking_.cancel_wait();
        if (stop_.load(std::memory_order_acquire) && !work_visible())
          break;
        continue;
      }
      parking_.wait(key);
      idle_rounds = 0;
    }
    detail::current_worker = {};
  }

  void stop_and_join() {
    stop_.store(true, std::memory_order_release); // (P4)
    parking_.notify_all();
    join_all();
  }

  void join_all() {
    std::lock_guard lock(join_mutex_); // concurrent shutdown() calls must not join a thread twice
    for (auto& w : workers_)
      if (w->thread.joinable())
        w->thread.join();
  }

  static std::uint64_t next_random(std::uint64_t& s) noexcept {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }

  static constexpr int spin_rounds = 64;

  std::vector<std::unique_ptr<worker>> workers_;
  ms_queue<detail::pool_task*> injector_;
  detail::event_count parking_;
  cache_padded<std::atomic<std::int64_t>> outstanding_{std::in_place, 0};   // post/submit tasks not finished
  cache_padded<std::atomic<std::int32_t>> group_waiters_{std::in_place, 0}; // threads parked in task_group::wait
  std::atomic<bool> closed_{false};
  std::atomic<bool> stop_{false};
  exception_handler handler_;
  std::mutex join_mutex_;
};

// Fork-join: run() spawns tasks, wait() runs tasks until all of them have finished and rethrows the
// first exception one of them threw. Reusable after wait(). The destructor waits too; an exception
// nobody waited for goes to the pool's unhandled-exception handler.
class task_group {
 public:
  explicit task_group(work_stealing_pool& pool) noexcept : pool_(&pool) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  ~task_group() {
    try {
      wait();
    } catch (...) {
      pool_->unhandled(std::current_exception());
    }
  }

  // Spawns f. On one of the pool's workers it goes to that worker's deque (it will most likely run
  // it itself, inside wait()); elsewhere to the injector. Allowed during the pool's shutdown drain
  // only from the pool's tasks. Throws std::bad_alloc if the task cannot be allocated.
  template <class F>
  void run(F&& f) {
    using fn = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn&>, "task_group::run(f): f must be callable with no arguments");
    static_assert(std::is_move_constructible_v<fn>, "task_group::run(f): f must be move constructible");
    pool_->check_open();
    auto* t = detail::new_task<group_task<fn>>(this, std::forward<F>(f));
    // (G1) relaxed: counted before the task can run; ordered for wait() by the decrement (G2).
    pending_->fetch_add(1, std::memory_order_relaxed);
    try {
      pool_->enqueue(t);
    } catch (...) { // the queues are unchanged when they throw
      detail::delete_task(t);
      if (pending_->fetch_sub(1, std::memory_order_acq_rel) == 1) // (G2)
        pool_->group_finished();
      throw;
    }
  }

  // Runs pool tasks until every task of this group has finished, then rethrows the first exception.
  void wait() {
    // (G2') acquire: pairs with the release decrements (G2): the tasks' effects are visible.
    pool_->help_until([this] { return pending_->load(std::memory_order_acquire) == 0; }, true);
    // (G3') acquire: pairs with the release store of has_error_ (G3).
    if (has_error_.load(std::memory_order_acquire)) {
      std::exception_ptr e = std::move(error_);
      error_ = nullptr;
      has_error_.store(false, std::memory_order_relaxed); // no task is running now
      error_claimed_.store(false, std::memory_order_relaxed);
      std::rethrow_exception(e);
    }
  }

 private:
  template <class F>
  struct group_task : detail::pool_task {
    group_task(task_group* g, F&& fn) : group(g), f(std::move(fn)) { run = &execute; }
    group_task(task_group* g, const F& fn) : group(g), f(fn) { run = &execute; }
    static void execute(detail::pool_task* base) noexcept {
      auto* self = static_cast<group_task*>(base);
      task_group* g = self->group;
      try {
        self->f();
      } catch (...) {
        g->record(std::current_exception());
      }
      detail::delete_task(self);
      work_stealing_pool* pool = g->pool_;
      // (G2) acq_rel: release publishes the task's effects to wait()'s acquire (G2'). After this the
      // group may be gone: only `pool` is used.
      if (g->pending_->fetch_sub(1, std::memory_order_acq_rel) == 1)
        pool->group_finished(); // a waiter may be parked
    }
    task_group* group;
    F f;
  };

  void record(std::exception_ptr e) noexcept {
    // (G4) acq_rel: one task wins the right to store its exception.
    if (!error_claimed_.exchange(true, std::memory_order_acq_rel)) {
      error_ = std::move(e);
      has_error_.store(true, std::memory_order_release); // (G3)
    }
  }

  work_stealing_pool* pool_;
  cache_padded<std::atomic<std::int64_t>> pending_{std::in_place, 0};
  std::atomic<bool> error_claimed_{false};
  std::atomic<bool> has_error_{false};
  std::exception_ptr error_;
};

} // namespace otlpconc
