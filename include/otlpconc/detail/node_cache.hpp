// otlpconc/detail/node_cache.hpp: recycles the raw memory of fixed-size nodes (ms_queue nodes)
// through a per-thread cache and a small shared stash of whole batches.
//
// Why: in a queue the producer allocates nodes and the consumer's hazard pointer scan frees them.
// With malloc that is a cross-thread free on every element (glibc returns the chunk to the
// producer's arena under its lock). Here a freed node goes to the freeing thread's local list; when
// that list is full it is handed, whole, to one of `stash_slots` shared slots; a thread whose list is
// empty takes a whole batch from a slot. One atomic exchange moves `local_capacity` nodes.
//
// ABA: there is no lock-free pop of single nodes. A slot is either empty or owns one batch; a batch
// is installed with a CAS from nullptr and taken with an exchange to nullptr, so no thread ever
// reads a link of a batch it does not own.
//
// Memory bound: each thread caches at most local_capacity nodes (returned to the stash or freed
// when the thread exits); the stash holds at most stash_slots * local_capacity nodes. Anything
// beyond goes back to the allocator at once. trim() frees the calling thread's list and the stash.
//
// Used only with allocators that are always equal and default constructible (any instance can free
// any node, and the cache can make one when it frees a node long after the container is gone).
#pragma once

#include "otlpconc/cache_padded.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>

namespace otlpconc::detail {

template <class Node, class NodeAllocator>
class node_cache {
  using traits = std::allocator_traits<NodeAllocator>;

 public:
  static constexpr bool enabled = traits::is_always_equal::value && std::is_default_constructible_v<NodeAllocator>;

  // About 16 KiB of nodes per thread, between 16 and 256 nodes.
  static constexpr std::size_t local_capacity = std::clamp<std::size_t>(16384 / sizeof(Node), 16, 256);
  static constexpr std::size_t stash_slots = 8;
  static constexpr std::size_t max_stashed = stash_slots * local_capacity;

  // Raw storage for one Node (not constructed).
  static Node* allocate() {
    if constexpr (enabled) {
      local_list& l = local;
      if (l.count == 0 && !l.exited) {
        if (!l.registered)
          register_exit(); // a refilled list must be given back when the thread exits
        refill(l);
      }
      if (l.count > 0) {
        free_block* b = l.head;
        l.head = b->next;
        --l.count;
        // The blocks were last written by the thread that freed them: fetch the next one now, so
        // the next allocation's read of its link does not stall on a cache miss.
        if (l.head != nullptr)
          __builtin_prefetch(l.head, 1);
        b->~free_block();
        return reinterpret_cast<Node*>(b);
      }
    }
    NodeAllocator a;
    return traits::allocate(a, 1);
  }

  // Takes back the raw storage of a destroyed Node.
  static void deallocate(Node* n) noexcept {
    if constexpr (enabled) {
      local_list& l = local;
      if (!l.exited) {
        if (!l.registered)
          register_exit();
        if (l.count == local_capacity && stash(l))
          l = local_list{nullptr, 0, l.registered, l.exited};
        if (l.count < local_capacity) {
          l.head = ::new (static_cast<void*>(n)) free_block{l.head, 0};
          ++l.count;
          return;
        }
      }
    }
    NodeAllocator a;
    traits::deallocate(a, n, 1);
  }

  // Frees the calling thread's cached nodes and every stashed batch.
  static void trim() noexcept {
    if constexpr (enabled) {
      local_list& l = local;
      free_chain(l.head);
      l.head = nullptr;
      l.count = 0;
      for (auto& slot : stash_) {
        // (N2) acquire: pairs with the release install (N1): the batch's links are visible.
        free_chain(slot->exchange(nullptr, std::memory_order_acquire));
      }
    }
  }

 private:
  struct free_block {
    free_block* next;
    std::size_t count; // number of blocks in the batch, valid in a stashed batch's first block
  };
  static_assert(sizeof(Node) >= sizeof(free_block) && alignof(Node) >= alignof(free_block),
                "node_cache: a node must be able to hold the free-list link");

  struct local_list {
    free_block* head;
    std::size_t count;
    bool registered; // the exit guard exists
    bool exited;     // the exit guard has run: no more caching on this thread
  };

  struct exit_guard {
    ~exit_guard() {
      local_list& l = local;
      if (l.count > 0 && !stash(l))
        free_chain(l.head);
      l = local_list{nullptr, 0, true, true};
    }
  };

  static void register_exit() noexcept {
    static thread_local exit_guard guard;
    (void)guard;
    local.registered = true;
  }

  // Hands the whole local list to an empty slot; false if every slot is full.
  static bool stash(local_list& l) noexcept {
    l.head->count = l.count;
    for (auto& slot : stash_) {
      free_block* expected = nullptr;
      // (N1) release on success: publishes the batch's links to the thread that takes it (N2).
      if (slot->load(std::memory_order_relaxed) == nullptr &&
          slot->compare_exchange_strong(expected, l.head, std::memory_order_release, std::memory_order_relaxed))
        return true;
    }
    return false;
  }

  static void refill(local_list& l) noexcept {
    for (auto& slot : stash_) {
      // (N2) acquire: pairs with the release install (N1).
      if (slot->load(std::memory_order_relaxed) != nullptr) {
        if (free_block* batch = slot->exchange(nullptr, std::memory_order_acquire)) {
          l.head = batch;
          l.count = batch->count;
          return;
        }
      }
    }
  }

  static void free_chain(free_block* b) noexcept {
    NodeAllocator a;
    while (b != nullptr) {
      free_block* next = b->next;
      b->~free_block();
      traits::deallocate(a, reinterpret_cast<Node*>(b), 1);
      b = next;
    }
  }

  static inline constinit thread_local local_list local{nullptr, 0, false, false};
  static inline constinit cache_padded<std::atomic<free_block*>> stash_[stash_slots]{};
};

} // namespace otlpconc::detail
