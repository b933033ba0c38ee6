// otlpconc/detail/pool_task.hpp: the task representation of work_stealing_pool.
//
// - pool_task: a type-erased task (run() executes, accounts for and frees it) with the group it
//   belongs to and a link for the pool's spill list.
// - task blocks: small tasks live in fixed 128-byte blocks recycled through a node cache.
// - task_ref: what the deques hold: a task pointer with the task's fork-join depth and tree packed
//   in bits a pointer does not use, so that a waiting thread can refuse another deque's oldest task
//   without dereferencing it (chase_lev_deque::steal_if).
// - spill_list: a mutex-protected FIFO for tasks that are in no deque: spawned into a group from a
//   thread that owns no deque, or taken by a waiting thread that may not run them. A waiting
//   thread takes from it the first task it may run, wherever it is in the list.
#pragma once

#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/node_cache.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

namespace otlpconc {
class task_group;
} // namespace otlpconc

namespace otlpconc::detail {

struct pool_task {
  void (*run)(pool_task*) noexcept = nullptr;
  task_group* group = nullptr; // the group it belongs to; nullptr for post() and submit()
  pool_task* next = nullptr;   // link in spill_list
};

// Small tasks live in fixed-size blocks recycled through a node cache.
struct alignas(16) task_block {
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

// A task pointer packed with a 20-bit tag: bits 0..7 the task's tree (a hash of the outermost
// group of its fork-join tree), bits 8..19 its depth (saturating at max_depth). Tasks are 16-byte
// aligned and user-space addresses are below 2^48, so the pointer shifted left by 16 leaves bits
// 0..19 free. A task whose address does not fit is refused with an exception, never corrupted.
struct task_ref {
  std::uint64_t bits = 0;

  static constexpr std::uint32_t max_depth = 4095;

  static task_ref make(pool_task* t, std::uint32_t depth, std::uint8_t tree) {
    const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(t));
    if (OTLPCONC_UNLIKELY((address >> 48) != 0 || (address & 15) != 0))
      throw std::runtime_error("work_stealing_pool: a task's address does not fit the 48-bit, 16-byte aligned "
                               "form the deques pack it in");
    const std::uint64_t d = depth < max_depth ? depth : max_depth;
    return task_ref{(address << 16) | (d << 8) | tree};
  }
  pool_task* task() const noexcept {
    return reinterpret_cast<pool_task*>(static_cast<std::uintptr_t>((bits >> 16) & ~std::uint64_t{15}));
  }
  std::uint32_t depth() const noexcept { return static_cast<std::uint32_t>((bits >> 8) & 0xfff); }
  std::uint8_t tree() const noexcept { return static_cast<std::uint8_t>(bits & 0xff); }

  // Whether the task may belong to, or descend from, a group of this depth and tree (a task carries
  // its group's depth: the group's own tasks have its depth, its descendants more). False is exact
  // (a task of another tree, or of a shallower group, never does); true must be confirmed on the
  // task.
  bool may_descend(std::uint32_t group_depth, std::uint8_t group_tree) const noexcept {
    if (tree() != group_tree)
      return false;
    return depth() >= group_depth || depth() == max_depth;
  }
};
static_assert(alignof(task_block) >= 16 && __STDCPP_DEFAULT_NEW_ALIGNMENT__ >= 16,
              "work_stealing_pool packs task pointers assuming 16-byte aligned tasks");

// FIFO of tasks under a mutex, with a size readable without it (the parking re-checks use it; the
// caller orders it with its own fences, see work_stealing_pool).
class spill_list {
 public:
  void push(pool_task* t) noexcept {
    std::lock_guard lock(mutex_);
    t->next = nullptr;
    if (tail_ != nullptr)
      tail_->next = t;
    else
      head_ = t;
    tail_ = t;
    // (S1) relaxed: read by the parking re-checks, ordered by the seq_cst fences around them
    // (work_stealing_pool P7 and the event count's E2).
    size_.store(size_.load(std::memory_order_relaxed) + 1,
                OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst));
  }

  // The oldest task, or nullptr.
  pool_task* take_front() noexcept {
    return take_if([](const pool_task*) { return true; });
  }

  // The oldest task for which accept(task) holds, or nullptr. accept runs under the lock: the
  // tasks it sees cannot be taken meanwhile.
  template <class Accept>
  pool_task* take_if(Accept accept) noexcept {
    if (empty())
      return nullptr;
    std::lock_guard lock(mutex_);
    pool_task* prev = nullptr;
    for (pool_task* t = head_; t != nullptr; prev = t, t = t->next) {
      if (!accept(static_cast<const pool_task*>(t)))
        continue;
      (prev != nullptr ? prev->next : head_) = t->next;
      if (tail_ == t)
        tail_ = prev;
      size_.store(size_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed); // (S1)
      t->next = nullptr;
      return t;
    }
    return nullptr;
  }

  bool empty() const noexcept {
    return size_.load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst)) == 0; // (S1)
  }

 private:
  std::mutex mutex_;
  pool_task* head_ = nullptr;
  pool_task* tail_ = nullptr;
  std::atomic<std::size_t> size_{0};
};

} // namespace otlpconc::detail
