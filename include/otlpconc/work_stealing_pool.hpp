// otlpconc/work_stealing_pool.hpp: a work-stealing thread pool with fork-join task groups.
//
// What: N worker threads, each owning a chase_lev_deque of tasks. post()/submit() from outside the
//   pool go through an ms_queue injector; tasks spawned on a thread that owns a deque go to that
//   deque. An idle worker takes from its own deque, the spill list, the injector, then steals a
//   batch from a random victim, and finally parks on an event count (no spinning while idle).
// When to use: CPU-bound work split into many small tasks, recursive fork-join (task_group), and
//   fire-and-forget jobs (post) or jobs with a result (submit).
// When not to: blocking I/O inside tasks (a blocked worker is lost to the pool; use a dedicated
//   thread pool), or when tasks need strict FIFO order (the pool is LIFO per worker).
// Guarantees (docs/work_stealing.md explains them; each has a test):
//   - Isolation: a thread waiting in task_group::wait() runs only tasks that descend from that
//     group (its tasks, the tasks of groups they create, and so on). It never runs a post()ed job,
//     another fork-join tree, or a sibling branch, so it never runs a task that could wait on the
//     frame it is suspended on.
//   - Bounded stack: the tasks nested on one thread's stack form a chain in which each descends
//     from the group the one below it waits on, never the number of queued jobs. For structured
//     fork-join (a group lives on the stack of the task that waits on it) that is at most D + 1
//     tasks, D being how deeply task_groups nest. A program that chains waits through separate root
//     groups (task i waits on group i + 1) nests as deep as its chain, as it would on one thread.
//     stats().max_nesting reports the deepest nesting seen.
//   - No deadlock while a worker is idle: an idle worker runs any queued task, and isolation adds
//     no dependency the program did not have; a program whose waits form no cycle completes.
//     (Tasks that block on anything other than task_group::wait(), a future for example, hold
//     their worker: if every worker blocks so, the pool cannot progress, as with any fixed pool.)
//   - No lost wake-ups: a submission wakes a parked worker (event counts with Dekker pairs of
//     seq_cst fences, detail/event_count.hpp). An idle pool sleeps in futex waits.
//   - Exceptions, none of them calls std::terminate: from submit(), through the future; from a
//     task_group's tasks, the first one rethrown by wait() (the group's other tasks still run); if
//     the group is destroyed while an exception propagates, that exception wins. Exceptions that
//     lose (a group's second and later ones, or one superseded by a propagating exception) are
//     counted in stats().suppressed_exceptions. Exceptions from post()ed tasks, and from a group
//     destroyed without wait() and without an exception in flight, go to the pool's handler; with
//     no handler (or if it throws) they are counted in stats().unhandled_exceptions.
//   - Shutdown (shutdown() or the destructor) rejects new external submissions with
//     std::runtime_error, runs every task already accepted (and the tasks they spawn), joins, and
//     returns only after every post()/submit() call that overlapped it has returned.
// Threads outside the pool: task_group::wait() on such a thread takes one of the pool's
//   external_slots deques for the duration of the wait and helps like a worker (isolated); so does
//   a worker of another pool (nested pools help each other). If no slot is free (or the thread
//   already holds 4 pools' deques), it sleeps until the group is done.
// Spawning into a group from a thread or deque other than the one that created it (a task adding
//   work to an ancestor's group, a job spawning into main's group) goes through the pool's spill
//   list, a small mutex-protected list: correct, but slower than a group per frame.
// Memory: one small block per task (recycled through a per-thread cache), plus the deques.
// Requirements: callables are move constructible and invocable with no arguments.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/chase_lev_deque.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/event_count.hpp"
#include "otlpconc/detail/pool_task.hpp"
#include "otlpconc/ms_queue.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
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

// A deque of one pool that the calling thread owns: its worker's, or an external slot it holds for
// the duration of a wait.
struct pool_seat {
  work_stealing_pool* pool = nullptr;
  std::size_t slot = 0;
  bool worker = false;
  chase_lev_deque<task_ref>* deque = nullptr;
};

// What a thread is doing for the pools. One per thread. A thread can own a deque of several pools at
// once (a worker of pool A waiting on a group of pool B borrows one of B's external slots), at most
// max_seats; seats are taken and given back in LIFO order.
struct pool_thread {
  static constexpr int max_seats = 4;
  pool_seat seats[max_seats];
  int seat_count = 0;
  task_group* group = nullptr;           // group of the innermost task running here (nullptr: none or a post)
  work_stealing_pool* running = nullptr; // pool of that task
  std::uintptr_t frame = 0;              // frame address of that task's run (0: no task running)
  std::uint32_t nesting = 0;             // tasks running on this thread's stack

  pool_seat* seat_of(const work_stealing_pool* p) noexcept {
    for (int i = 0; i < seat_count; ++i)
      if (seats[i].pool == p)
        return &seats[i];
    return nullptr;
  }
};
inline constinit thread_local pool_thread this_pool_thread{};

// The calling thread's stack pointer, or a bound below every object of the caller.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
inline std::uintptr_t stack_pointer() noexcept {
  std::uintptr_t sp;
  asm volatile("mov %%rsp, %0" : "=r"(sp));
  return sp;
}
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
inline std::uintptr_t stack_pointer() noexcept {
  std::uintptr_t sp;
  asm volatile("mov %0, sp" : "=r"(sp));
  return sp;
}
#else
// Not inlined: its own frame lies below every object of its caller.
OTLPCONC_NOINLINE inline std::uintptr_t stack_pointer() noexcept {
  return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}
#endif

// Whether p lies on the calling thread's stack between its stack pointer and `frame` (an older
// frame of this thread): then p is an object of a function still running above that frame, which
// is destroyed before that frame returns. Stacks grow downwards on every platform otlpconc
// supports. Under AddressSanitizer with detect_stack_use_after_return, locals live on its fake
// stack (heap memory): the real frame a fake frame stands for is what is compared. (Answering "no"
// there made every group created in a task a root, and a task that blocks on such a group's child,
// which only its ancestor's waiter can run, hung: the parked-waiter test, 12 runs of 12.)
inline bool on_stack_above(const void* p, std::uintptr_t frame) noexcept {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
#if OTLPCONC_ASAN
  // A live frame of this thread's fake stack belongs to a function still running on this thread;
  // ASan records for it a real-stack address taken at its entry (inside the runtime's allocation
  // call, so a little below the function's own frame): it ran above `frame` if that lies below it.
  if (void* fake = __asan_get_current_fake_stack())
    if (void* real = __asan_addr_is_in_fake_stack(fake, const_cast<void*>(p), nullptr, nullptr))
      return reinterpret_cast<std::uintptr_t>(real) < frame;
#endif
  return address >= stack_pointer() && address < frame;
}

} // namespace detail

// Counters of a pool (see the header comment for their meaning).
struct work_stealing_pool_stats {
  std::uint64_t unhandled_exceptions = 0;
  std::uint64_t suppressed_exceptions = 0;
  std::uint32_t max_nesting = 0; // the most tasks seen running nested on one thread's stack
};

class work_stealing_pool {
 public:
  using exception_handler = std::function<void(std::exception_ptr)>;

  // One worker per hardware thread.
  work_stealing_pool() : work_stealing_pool(default_threads()) {}
  // Throws std::invalid_argument unless 1 <= threads <= max_threads. `on_unhandled_exception`
  // receives exceptions escaping post()ed tasks (and task groups destroyed without wait()); empty
  // means they are only counted (stats().unhandled_exceptions).
  explicit work_stealing_pool(std::size_t threads, exception_handler on_unhandled_exception = {})
      : workers_(threads), handler_(std::move(on_unhandled_exception)) {
    if (threads == 0 || threads > max_threads)
      throw std::invalid_argument("work_stealing_pool: thread count must be between 1 and 1024");
    slots_.reserve(threads + external_slots);
    for (std::size_t i = 0; i < threads + external_slots; ++i)
      slots_.push_back(std::make_unique<slot>());
    try {
      for (std::size_t i = 0; i < threads; ++i)
        slots_[i]->thread = std::thread([this, i] { worker_main(i); });
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
  // Deques that threads outside the pool borrow while they wait on a group.
  static constexpr std::size_t external_slots = 4;

  static std::size_t default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
  }

  std::size_t size() const noexcept { return workers_; }

  work_stealing_pool_stats stats() const noexcept {
    // (P9) relaxed: statistics, no ordering.
    return {unhandled_->load(std::memory_order_relaxed), suppressed_->load(std::memory_order_relaxed),
            max_nesting_->load(std::memory_order_relaxed)};
  }

  // Fire and forget. Throws std::runtime_error after shutdown began (from outside the pool's
  // tasks), std::bad_alloc if the task cannot be allocated.
  template <class F>
  void post(F&& f) {
    using fn = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn&>, "work_stealing_pool::post(f): f must be callable with no arguments");
    static_assert(std::is_move_constructible_v<fn>, "work_stealing_pool::post(f): f must be move constructible");
    const bool outside = !inside();
    // (P8) seq_cst: shutdown waits for posting_ to drop to zero (its acquire load pairs with the
    // release decrement below), so once shutdown() has returned no overlapping post() still
    // touches the pool, and the pool may be destroyed.
    if (outside)
      posting_->fetch_add(1, std::memory_order_seq_cst);
    struct leave {
      work_stealing_pool* pool;
      bool outside;
      ~leave() {
        if (outside)
          pool->posting_->fetch_sub(1, std::memory_order_release); // (P8): the call's last touch
      }
    } guard{this, outside};
    auto* t = detail::new_task<post_task<fn>>(this, std::forward<F>(f));
    // (P1) seq_cst, and the seq_cst load of closed_ after it, pair with shutdown's seq_cst exchange
    // of closed_ and load of outstanding_ (P3): either shutdown sees this task and waits for it, or
    // we see the pool closed and take the task back. Nothing accepted is stranded.
    outstanding_->fetch_add(1, std::memory_order_seq_cst);
    if (outside && closed_.load(std::memory_order_seq_cst)) {
      detail::delete_task(t);
      task_done();
      throw std::runtime_error("work_stealing_pool: submission after shutdown");
    }
    try {
      if (!outside)
        detail::this_pool_thread.seat_of(this)->deque->push(detail::task_ref::make(t, 0, 0));
      else
        injector_.push(t);
    } catch (...) { // the queues are unchanged when they throw
      detail::delete_task(t);
      task_done();
      throw;
    }
    notify_work();
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
  // workers. Idempotent. Throws std::logic_error if called from one of this pool's tasks.
  // Precondition: no other thread has a task_group of this pool in flight.
  void shutdown() {
    if (inside())
      throw std::logic_error("work_stealing_pool: shutdown from one of the pool's own tasks would deadlock");
    if (!closed_.exchange(true, std::memory_order_seq_cst)) { // (P3) seq_cst: see P1
      // (P3) seq_cst: see P1. It also pairs, as an acquire, with the completions' release (P2):
      // every accepted task has finished and its effects are visible.
      sleep_until([this] { return outstanding_->load(std::memory_order_seq_cst) == 0; });
      stop_and_join();
    } else {
      join_all();
    }
    // (P8) acquire: pairs with the release decrement that ends each post() call.
    while (posting_->load(std::memory_order_acquire) != 0)
      std::this_thread::yield();
  }

 private:
  friend class task_group;

  struct slot {
    chase_lev_deque<detail::task_ref> deque{256};
    std::thread thread;               // workers only
    std::uint64_t rng = 0;            // owner only
    std::uint32_t ticks = 0;          // owner only
    std::atomic<bool> claimed{false}; // external slots: held by a waiting thread
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
      wake_waiters(); // a shutdown may be waiting for the last task
  }

  // The calling thread is one of our workers, or is running one of our tasks.
  bool inside() const noexcept {
    detail::pool_thread& me = detail::this_pool_thread;
    if (me.running == this)
      return true;
    const detail::pool_seat* seat = me.seat_of(this);
    return seat != nullptr && seat->worker;
  }

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
    unhandled_->fetch_add(1, std::memory_order_relaxed); // (P9)
  }

  void suppressed() noexcept { suppressed_->fetch_add(1, std::memory_order_relaxed); } // (P9)

  // A group task. To the calling thread's deque when the group was created on it (then it is above
  // the group's mark, where the group's waiter looks); anything else (a group created on another
  // thread or deque, or a thread that owns none of ours) to the spill list, where every waiter of
  // the group finds it.
  void spawn(detail::pool_task* t, task_group& g);

  void spill(detail::pool_task* t) noexcept {
    spill_.push(t);
    notify_work();
  }

  // After publishing a task: wake an idle worker if one sleeps, otherwise every sleeping waiter
  // (the task may descend from the group one of them waits on).
  OTLPCONC_ALWAYS_INLINE void notify_work() noexcept {
    // (P7) seq_cst fence: the E4 of both event counts; pairs with the E2 of a thread parking on
    // either: either its re-check sees the task published before this fence, or we see it counted.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (idle_.has_waiters_after_fence())
      idle_.wake_one();
    else if (waiting_.has_waiters_after_fence())
      waiting_.wake_all();
  }

  // After a completion a waiter may be waiting for: the last task of a group, the last post()ed task.
  void wake_waiters() noexcept {
    // (P6) seq_cst fence: E4 of waiting_; pairs with E2 after a waiter's announcement: either the
    // waiter's re-check sees the count at zero, or we see it counted and wake it. The group itself
    // may be gone by now; the pool is not.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiting_.has_waiters_after_fence())
      waiting_.wake_all();
  }

  bool work_visible() const noexcept {
    if (!injector_.empty() || !spill_.empty())
      return true;
    for (const auto& s : slots_)
      if (!s->deque.empty())
        return true;
    return false;
  }

  // An idle worker's search: own deque, spill list, injector (first, one time in 32, so that a
  // stream of spawns cannot starve posted jobs), then a batch stolen from a random victim.
  detail::pool_task* find_any(std::size_t self) {
    slot& me = *slots_[self];
    if ((++me.ticks & 31) == 0)
      if (auto t = injector_.try_pop())
        return *t;
    if (auto r = me.deque.pop())
      return r->task();
    if (detail::pool_task* t = spill_.take_front())
      return t;
    if (auto t = injector_.try_pop())
      return *t;
    const std::size_t n = slots_.size();
    std::size_t start = static_cast<std::size_t>(next_random(me.rng) % n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t v = (start + k) % n;
      if (v == self)
        continue;
      slot& victim = *slots_[v];
      if (victim.deque.empty())
        continue;
      if (const std::size_t moved = victim.deque.steal_batch(me.deque, 32); moved > 0) {
        if (moved > 1 || !victim.deque.empty())
          notify_work(); // surplus here or left there: let another sleeper help
        if (auto r = me.deque.pop())
          return r->task();
      }
    }
    return nullptr;
  }

  // Whether task t descends from group g (its group is g, or was created inside a task that
  // descends from g). t's group is alive (t is pending in it), and so is every group above it: a
  // group has a parent only if it lives on the stack of a task of that parent (task_group's
  // constructor), so it is destroyed before that task ends.
  static bool descends(const detail::pool_task* t, const task_group& g) noexcept;

  // A waiting thread's search (it owns deque `self`): only tasks that descend from g. Its own
  // deque above `mark` (pushed since g was created), the spill list, then single steals of tasks
  // whose packed tag says they may descend from g. A task taken from a deque that turns out not to
  // descend from g is moved to the spill list, where idle workers and its own waiter find it.
  detail::pool_task* find_for(const task_group& g, std::size_t self, std::int64_t mark);
  // find_for's search beyond the own deque (not inlined: the cold part). The spill list, then single
  // steals of tasks whose packed tag says they may descend from g.
  template <class Group> // task_group, complete where this is instantiated
  OTLPCONC_NOINLINE detail::pool_task* find_elsewhere(const Group& g, std::size_t self) {
    if (detail::pool_task* t = spill_.take_if([&](const detail::pool_task* c) { return descends(c, g); }))
      return t;
    slot& me = *slots_[self];
    const std::size_t n = slots_.size();
    const std::size_t start = static_cast<std::size_t>(next_random(me.rng) % n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t v = (start + k) % n;
      if (v == self)
        continue;
      slot& victim = *slots_[v];
      if (victim.deque.empty())
        continue;
      auto r = victim.deque.steal_if([&](detail::task_ref c) { return c.may_descend(g.depth_, g.tree_); });
      if (!r)
        continue;
      detail::pool_task* t = r->task();
      if (descends(t, g))
        return t;
      spill(t); // another tree whose tag collides with ours
    }
    return nullptr;
  }

  // A waiting thread that owns a deque of ours: runs g's descendants until g is done, parking on
  // waiting_ when there are none.
  void help_wait(const task_group& g, std::int64_t mark);

  // Waits on g from whatever thread: helps if the thread owns one of our deques or can borrow an
  // external slot, otherwise sleeps. Does not throw.
  void wait_for(task_group& g) noexcept;

  template <class Done>
  void sleep_until(Done done) noexcept {
    for (int i = 0; i < 16 && !done(); ++i)
      std::this_thread::yield();
    while (!done()) {
      const std::uint32_t key = waiting_.prepare_wait(); // (E1, E2) then the re-check
      if (done()) {
        waiting_.cancel_wait();
        return;
      }
      waiting_.wait(key);
    }
  }

  // Runs t on the calling thread, which owns one of our deques. Not inlined: the frame address
  // bounds the stack of the task, for task_group's parent detection.
  OTLPCONC_NOINLINE void run_task(detail::pool_task* t) noexcept {
    detail::pool_thread& me = detail::this_pool_thread;
    task_group* const outer_group = me.group;
    work_stealing_pool* const outer_running = me.running;
    const std::uintptr_t outer_frame = me.frame;
    me.group = t->group;
    me.running = this;
    me.frame = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
    const std::uint32_t depth = ++me.nesting;
    // (P9) relaxed: a statistic.
    if (OTLPCONC_UNLIKELY(depth > max_nesting_->load(std::memory_order_relaxed)))
      raise_max_nesting(depth);
    t->run(t);
    --me.nesting;
    me.group = outer_group;
    me.running = outer_running;
    me.frame = outer_frame;
  }

  OTLPCONC_NOINLINE void raise_max_nesting(std::uint32_t depth) noexcept {
    std::uint32_t seen = max_nesting_->load(std::memory_order_relaxed);
    while (seen < depth && !max_nesting_->compare_exchange_weak(seen, depth, std::memory_order_relaxed)) {
    }
  }

  // An external slot for the calling thread, or SIZE_MAX if none is free.
  std::size_t claim_slot() noexcept {
    for (std::size_t i = workers_; i < slots_.size(); ++i) {
      bool expected = false;
      // (P10) acquire on success: pairs with the release in release_slot: the previous holder's
      // operations on the deque happen-before ours (a deque has one owner at a time).
      if (!slots_[i]->claimed.load(std::memory_order_relaxed) &&
          slots_[i]->claimed.compare_exchange_strong(expected, true, std::memory_order_acquire,
                                                     std::memory_order_relaxed))
        return i;
    }
    return static_cast<std::size_t>(-1);
  }

  // Gives an external slot back; tasks still in it (spawned into groups that outlive the wait)
  // move to the spill list.
  void release_slot(std::size_t i) noexcept {
    slot& s = *slots_[i];
    while (auto r = s.deque.pop())
      spill(r->task());
    s.claimed.store(false, std::memory_order_release); // (P10)
  }

  void worker_main(std::size_t index) {
    detail::pool_thread& me = detail::this_pool_thread;
    me = {};
    me.seats[0] = {this, index, true, &slots_[index]->deque};
    me.seat_count = 1;
    slots_[index]->rng = 0x9e3779b97f4a7c15ULL * (index + 1);
    int idle_rounds = 0;
    bool after_park = false;
    for (;;) {
      detail::pool_task* found = nullptr;
      try {
        found = find_any(index);
      } catch (...) {
        // No memory for a hazard record (steals and the injector need one) or a deque growth:
        // nothing was taken. Let the allocator recover instead of spinning on it.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      if (detail::pool_task* t = found) {
        // A wake-up may have been meant for other work too: pass it on while work is left.
        if (after_park && work_visible())
          notify_work();
        after_park = false;
        run_task(t);
        idle_rounds = 0;
        continue;
      }
      // (P4') relaxed: a hint that ends the spin early (on a busy machine 64 yields can take 64 time
      // slices); the decision to stop is taken below with the acquire load (P4).
      if (++idle_rounds < spin_rounds && !stop_.load(std::memory_order_relaxed)) {
        std::this_thread::yield();
        continue;
      }
      const std::uint32_t key = idle_.prepare_wait();
      after_park = true;
      // (P4) acquire: pairs with stop_and_join's release store.
      if (work_visible() || stop_.load(std::memory_order_acquire)) {
        idle_.cancel_wait();
        if (stop_.load(std::memory_order_acquire) && !work_visible())
          break;
        continue;
      }
      idle_.wait(key);
      idle_rounds = 0;
    }
    me = {};
  }

  void stop_and_join() {
    stop_.store(true, std::memory_order_release); // (P4)
    std::atomic_thread_fence(std::memory_order_seq_cst);
    idle_.wake_all();
    join_all();
  }

  void join_all() {
    std::lock_guard lock(join_mutex_); // concurrent shutdown() calls must not join a thread twice
    for (std::size_t i = 0; i < workers_; ++i)
      if (slots_[i]->thread.joinable())
        slots_[i]->thread.join();
  }

  static std::uint64_t next_random(std::uint64_t& s) noexcept {
    if (s == 0)
      s = 0x2545f4914f6cdd1dULL ^ reinterpret_cast<std::uintptr_t>(&s);
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }

  static constexpr int spin_rounds = 64;

  std::size_t workers_;
  std::vector<std::unique_ptr<slot>> slots_; // workers' deques, then the external slots
  ms_queue<detail::pool_task*> injector_;    // post()/submit() from outside the pool
  detail::spill_list spill_;                 // group tasks in no deque
  detail::event_count idle_;                 // idle workers park here
  detail::event_count waiting_;              // threads in task_group::wait() and shutdown() park here
  cache_padded<std::atomic<std::int64_t>> outstanding_{std::in_place, 0}; // post/submit tasks not finished
  cache_padded<std::atomic<std::int64_t>> posting_{std::in_place, 0};     // post() calls from outside in progress
  cache_padded<std::atomic<std::uint64_t>> unhandled_{std::in_place, std::uint64_t{0}};
  cache_padded<std::atomic<std::uint64_t>> suppressed_{std::in_place, std::uint64_t{0}};
  cache_padded<std::atomic<std::uint32_t>> max_nesting_{std::in_place, std::uint32_t{0}};
  std::atomic<bool> closed_{false};
  std::atomic<bool> stop_{false};
  exception_handler handler_;
  std::mutex join_mutex_;
};

// Fork-join: run() spawns tasks, wait() runs tasks until all of them have finished and rethrows the
// first exception one of them threw. Reusable after wait(). The destructor waits too (see the
// header comment for what happens to an exception nobody waited for).
//
// A group created on the stack of one of the pool's tasks is a child of that task's group: its
// tasks descend from it, which is what lets the task's waiter run them. Any other group (created
// outside a task, or on the heap) is the root of its own fork-join tree.
class task_group {
 public:
  explicit task_group(work_stealing_pool& pool) noexcept : pool_(&pool) {
    detail::pool_thread& me = detail::this_pool_thread;
    if (me.frame != 0 && me.group != nullptr && detail::on_stack_above(this, me.frame)) {
      parent_ = me.group;
      depth_ = parent_->depth_ + 1;
      tree_ = parent_->tree_;
    } else {
      const auto a = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(this));
      tree_ = static_cast<std::uint8_t>(((a >> 4) * 0x9e3779b97f4a7c15ULL) >> 56);
    }
    if (detail::pool_seat* seat = me.seat_of(&pool)) {
      mark_thread_ = &me;
      mark_deque_ = seat->deque;
      mark_ = seat->deque->bottom_index();
    }
  }
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;

  // Waits for the group's tasks. Never throws and never terminates: see the header comment.
  ~task_group() {
    if (!done())
      pool_->wait_for(*this);
    if (std::exception_ptr e = take_error()) {
      // An exception propagating (std::uncaught_exceptions() > 0: this destructor runs during
      // unwinding) wins. (A group created and destroyed inside a destructor that runs during
      // unwinding counts as unwinding too: its unobserved exception is counted as suppressed.)
      if (std::uncaught_exceptions() > 0)
        pool_->suppressed();
      else
        pool_->unhandled(std::move(e));
    }
  }

  // Spawns f. On a thread that owns one of the pool's deques (a worker, or a thread waiting on a
  // group) it goes to that deque; elsewhere to the pool's spill list. Allowed during the pool's
  // shutdown drain only from the pool's tasks. Throws std::bad_alloc if the task cannot be
  // allocated.
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
      pool_->spawn(t, *this);
    } catch (...) { // the queues are unchanged when they throw
      detail::delete_task(t);
      if (pending_->fetch_sub(1, std::memory_order_acq_rel) == 1) // (G2)
        pool_->wake_waiters();
      throw;
    }
  }

  // Runs this group's tasks (and their descendants, nothing else) until every task of this group
  // has finished, then rethrows the first exception.
  void wait() {
    if (!done())
      pool_->wait_for(*this);
    if (std::exception_ptr e = take_error())
      std::rethrow_exception(e);
  }

 private:
  friend class work_stealing_pool;

  template <class F>
  struct group_task : detail::pool_task {
    group_task(task_group* g, F&& fn) : f(std::move(fn)) { init(g); }
    group_task(task_group* g, const F& fn) : f(fn) { init(g); }
    void init(task_group* g) noexcept {
      run = &execute;
      group = g;
    }
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
        pool->wake_waiters(); // a waiter may be parked
    }
    F f;
  };

  // (G2') acquire: pairs with the release decrements (G2): the tasks' effects are visible.
  bool done() const noexcept { return pending_->load(std::memory_order_acquire) == 0; }

  void record(std::exception_ptr e) noexcept {
    // (G4) acq_rel: one task wins the right to store its exception; the others are counted.
    if (!error_claimed_.exchange(true, std::memory_order_acq_rel)) {
      error_ = std::move(e);
      has_error_.store(true, std::memory_order_release); // (G3)
    } else {
      pool_->suppressed();
    }
  }

  // After the tasks finished: the recorded exception, if any, and the group ready for reuse.
  std::exception_ptr take_error() noexcept {
    // (G3') acquire: pairs with the release store of has_error_ (G3). The exchange (only when set:
    // an RMW on every wait would cost as much as the rest of it) lets only one of two threads
    // waiting on the same group take it.
    if (!has_error_.load(std::memory_order_acquire) || !has_error_.exchange(false, std::memory_order_acquire))
      return nullptr;
    std::exception_ptr e = std::move(error_);
    error_ = nullptr;
    error_claimed_.store(false, std::memory_order_relaxed); // no task is running now
    return e;
  }

  work_stealing_pool* pool_;
  const task_group* parent_ = nullptr; // the group of the task on whose stack this one lives
  std::uint32_t depth_ = 1;            // parent's + 1; 1 for a root
  std::uint8_t tree_ = 0;              // a hash of the root's address, the same in the whole tree
  // The deque of the creating thread (if it owned one of the pool's) and its index below which
  // nothing of this group lies: the bottom when the group was created, lowered by each spawn (a pop
  // by another group's wait may have taken the bottom below it meanwhile).
  const detail::pool_thread* mark_thread_ = nullptr;
  const chase_lev_deque<detail::task_ref>* mark_deque_ = nullptr;
  std::int64_t mark_ = 0;
  cache_padded<std::atomic<std::int64_t>> pending_{std::in_place, 0};
  std::atomic<bool> error_claimed_{false};
  std::atomic<bool> has_error_{false};
  std::exception_ptr error_;
};

inline bool work_stealing_pool::descends(const detail::pool_task* t, const task_group& g) noexcept {
  const task_group* h = t->group;
  if (h == &g)
    return true;
  if (h == nullptr || h->depth_ <= g.depth_)
    return false;
  do
    h = h->parent_; // non-null: depth_ > 1
  while (h->depth_ > g.depth_);
  return h == &g;
}

OTLPCONC_ALWAYS_INLINE detail::pool_task* work_stealing_pool::find_for(const task_group& g, std::size_t self,
                                                                       std::int64_t mark) {
  chase_lev_deque<detail::task_ref>& own = slots_[self]->deque;
  while (own.bottom_index() > mark) {
    auto r = own.pop();
    if (!r)
      break;
    detail::pool_task* t = r->task();
    if (OTLPCONC_LIKELY(descends(t, g)))
      return t;
    spill(t); // pushed since g was created, but into another group: not ours to run here
  }
  return find_elsewhere(g, self);
}

OTLPCONC_ALWAYS_INLINE void work_stealing_pool::help_wait(const task_group& g, std::int64_t mark) {
  const std::size_t self = detail::this_pool_thread.seat_of(this)->slot;
  int idle_rounds = 0;
  while (!g.done()) {
    if (detail::pool_task* t = find_for(g, self, mark)) {
      run_task(t);
      idle_rounds = 0;
      continue;
    }
    if (++idle_rounds < spin_rounds) {
      std::this_thread::yield();
      continue;
    }
    const std::uint32_t key = waiting_.prepare_wait(); // (E1, E2), then the re-checks
    if (g.done()) {
      waiting_.cancel_wait();
      break;
    }
    if (detail::pool_task* t = find_for(g, self, mark)) {
      waiting_.cancel_wait();
      run_task(t);
      idle_rounds = 0;
      continue;
    }
    waiting_.wait(key);
    idle_rounds = 0;
  }
}

inline void work_stealing_pool::spawn(detail::pool_task* t, task_group& g) {
  detail::pool_thread& me = detail::this_pool_thread;
  detail::pool_seat* seat = me.seat_of(this);
  if (seat != nullptr && g.mark_thread_ == &me && g.mark_deque_ == seat->deque) {
    const std::int64_t bottom = seat->deque->bottom_index();
    if (bottom < g.mark_)
      g.mark_ = bottom; // only this thread reads or writes the mark
    seat->deque->push(detail::task_ref::make(t, g.depth_, g.tree_));
  } else {
    spill_.push(t);
  }
  notify_work();
}

inline void work_stealing_pool::wait_for(task_group& g) noexcept {
  if (g.done())
    return;
  detail::pool_thread& me = detail::this_pool_thread;
  try {
    if (detail::pool_seat* seat = me.seat_of(this)) {
      // The group's tasks pushed on this deque lie above its mark (spawn keeps it so); any other
      // group's tasks were spawned elsewhere or into the spill list: then only what is pushed from
      // now on (by tasks run during this wait) can be on this deque.
      const bool marked = g.mark_thread_ == &me && g.mark_deque_ == seat->deque;
      help_wait(g, marked ? g.mark_ : seat->deque->bottom_index());
      return;
    }
    if (me.seat_count < detail::pool_thread::max_seats) {
      const std::size_t s = claim_slot();
      if (s != static_cast<std::size_t>(-1)) {
        me.seats[me.seat_count++] = {this, s, false, &slots_[s]->deque};
        struct give_back {
          work_stealing_pool* pool;
          detail::pool_thread& me;
          std::size_t s;
          ~give_back() {
            pool->release_slot(s);
            --me.seat_count;
          }
        } guard{this, me, s};
        help_wait(g, slots_[s]->deque.bottom_index());
        return;
      }
    }
  } catch (...) {
    // Helping needs a hazard pointer for steals; if one cannot be allocated, sleep instead.
  }
  sleep_until([&] { return g.done(); });
}

} // namespace otlpconc
