// otlpconc/ms_queue.hpp: unbounded lock-free MPMC FIFO queue (Michael & Scott, 1996) with hazard
// pointer reclamation.
//
// What: a linked list with a dummy head node; push links a node after the tail with one CAS (and
//   swings the tail with a second, which any thread may do); pop swings the head with one CAS. Nodes
//   are retired through otlpconc's hazard pointers and really freed.
// When to use: many producers and many consumers that need one linearizable FIFO order, unbounded
//   capacity, and arbitrary element types (std::string, std::unique_ptr, move-only types).
// When not to: single producer / single consumer (a ring buffer is several times faster); when
//   per-producer order is enough and throughput matters most (moodycamel::ConcurrentQueue batches
//   per producer and wins by far); when blocking is acceptable and contention is low (a mutex around
//   std::deque is simpler and, on few cores, often faster: see docs/ms_queue.md).
// Guarantees:
//   - Linearizable FIFO (checked by tests/lin_check.hpp). The link and unlink CAS loops are
//     lock-free; around them push may allocate a node (node cache, else the allocator), either may
//     allocate a hazard record, and one pop in about R runs the hazard pointer scan (allocation,
//     membarrier, deleters). Not async-signal-safe: the per-thread caches are not reentrant.
//   - A popped value is moved out by the only thread whose head CAS succeeded, and the node's copy is
//     destroyed right there, before pop returns: destructors run promptly, on the popping thread.
//   - An exception thrown while constructing a pushed value leaves the queue unchanged (nothing
//     allocated remains).
//   - The destructor destroys every remaining element exactly once.
//   - Memory: one node per element plus a dummy, plus retired nodes awaiting reclamation, bounded by
//     the hazard pointer domain's bound (see hazard_pointer.hpp); hazard_pointer_clean_up() frees all
//     of them once no thread is inside an operation. Freed nodes are recycled through a node cache
//     (when the allocator is stateless: always equal and default constructible) that holds at most
//     node_cache_per_thread nodes per thread plus node_cache_shared shared ones per queue type;
//     release_cached_nodes() returns them to the allocator, and a thread's share is returned when
//     it exits.
// Ordering: push of v happens-before the pop that returns v (release link CAS, acquire load of next).
// Requirements on T: nothrow move constructible (the popping thread moves the value out after it has
//   committed) and nothrow destructible; try_pop(T&) also needs nothrow move assignment.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/detail/backoff.hpp"
#include "otlpconc/detail/node_cache.hpp"
#include "otlpconc/detail/sync.hpp"
#include "otlpconc/hazard_pointer.hpp"

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

namespace otlpconc {

// Sync: the seam of detail/sync.hpp (std_sync by default; the model checker instantiates it with its
// own policy, tests/model).
template <class T, class Allocator = std::allocator<T>, class Sync = detail::std_sync>
class ms_queue {
  template <class U>
  using atomic = typename Sync::template atomic<U>;
  using domain_type = basic_hazard_pointer_domain<Sync>;
  using hazard = basic_hazard_pointer<Sync>;

  static_assert(std::is_object_v<T> && !std::is_array_v<T>, "ms_queue<T>: T must be a non-array object type");
  static_assert(std::is_nothrow_move_constructible_v<T>,
                "ms_queue<T>: T must be nothrow move constructible (pop moves the value out after committing)");
  static_assert(std::is_nothrow_destructible_v<T>, "ms_queue<T>: T must be nothrow destructible");

  struct node;
  using node_allocator = typename std::allocator_traits<Allocator>::template rebind_alloc<node>;
  using node_traits = std::allocator_traits<node_allocator>;
  using value_allocator = typename std::allocator_traits<Allocator>::template rebind_alloc<T>;
  using value_traits = std::allocator_traits<value_allocator>;

  using cache = detail::node_cache<node, node_allocator>;

  // Frees a node's memory (its value, if any, was destroyed by whoever popped it): into the node
  // cache when the allocator allows it, else to the allocator. Carries a copy of the allocator
  // because reclamation may happen after the queue is gone.
  struct node_deleter {
    [[no_unique_address]] node_allocator alloc;
    void operator()(node* n) noexcept {
      n->~node();
      if constexpr (cache::enabled)
        cache::deallocate(n);
      else
        node_traits::deallocate(alloc, n, 1);
    }
  };

  struct node : basic_hazard_pointer_obj_base<node, node_deleter, Sync> {
    atomic<node*> next{nullptr};
    alignas(T) unsigned char storage[sizeof(T)];
    T* raw() noexcept { return reinterpret_cast<T*>(storage); } // before the value is constructed
    T* value() noexcept { return std::launder(raw()); }         // while it lives
  };

 public:
  using value_type = T;
  using allocator_type = Allocator;

  ms_queue() : ms_queue(Allocator()) {}
  explicit ms_queue(const Allocator& alloc) : ms_queue(detail::default_hazard_domain<Sync>(), alloc) {}
  // Extension: reclaim nodes through `domain` (which must outlive every node retired into it, i.e.
  // be cleaned up or destroyed after the queue).
  explicit ms_queue(domain_type& domain, const Allocator& alloc = Allocator()) : domain_(&domain), alloc_(alloc) {
    node* dummy = new_node();
    // (Q0) relaxed: the queue is not shared yet; publishing the queue publishes these.
    head_->store(dummy, std::memory_order_relaxed);
    tail_->store(dummy, std::memory_order_relaxed);
  }
  ms_queue(const ms_queue&) = delete;
  ms_queue& operator=(const ms_queue&) = delete;

  // Precondition: no other thread is using the queue. Destroys the remaining elements and frees
  // every node not already retired.
  ~ms_queue() {
    node* n = head_->load(std::memory_order_relaxed); // (Q0) single-threaded now
    node* next = n->next.load(std::memory_order_relaxed);
    free_node(n); // the dummy holds no value
    value_allocator va(alloc_);
    while (next != nullptr) {
      n = next;
      next = n->next.load(std::memory_order_relaxed);
      value_traits::destroy(va, n->value());
      free_node(n);
    }
  }

  void push(const T& value) requires std::is_copy_constructible_v<T> { emplace(value); }
  void push(T&& value) { emplace(std::move(value)); }

  template <class... Args>
    requires std::is_constructible_v<T, Args...>
  void emplace(Args&&... args) {
    // The hazard pointer first: if it cannot be had (std::bad_alloc), nothing is allocated yet.
    hazard hp = make_hazard_pointer(*domain_);
    node* n = new_node();
    value_allocator va(alloc_);
    try {
      value_traits::construct(va, n->raw(), std::forward<Args>(args)...);
    } catch (...) {
      free_node(n); // never linked: the queue is unchanged
      throw;
    }
    link(n, hp);
  }

  std::optional<T> try_pop() {
    std::optional<T> out;
    pop_with([&](T& v) noexcept { out.emplace(std::move(v)); });
    return out;
  }

  bool try_pop(T& out) requires std::is_nothrow_move_assignable_v<T> {
    return pop_with([&](T& v) noexcept { out = std::move(v); });
  }

  // A snapshot: true if the queue was empty at some instant during the call. If no hazard pointer
  // can be allocated (memory exhausted) it answers false, which may be wrong for an empty queue.
  [[nodiscard]] bool empty() const noexcept {
    try {
      hazard hp = make_hazard_pointer(*domain_);
      node* h = hp.protect(*head_);
      // (Q8) acquire: as Q4. Null: empty at the instant protect validated head == h (see pop_with).
      // Non-null: non-empty at the read if h is still head, else at the instant some pop moved head
      // from h, which needed h->next linked; both instants lie within this call.
      return h->next.load(std::memory_order_acquire) == nullptr;
    } catch (...) {
      // No hazard record could be allocated, so nothing may be dereferenced. head == tail does not
      // prove emptiness (the tail may lag behind a linked node), so answer the safe "not empty".
      return false;
    }
  }

  allocator_type get_allocator() const noexcept { return alloc_; }

  // Extension: frees the nodes this thread keeps for reuse and the shared stash of this queue type
  // (every ms_queue<T, Allocator> shares them). Other threads' caches (at most
  // node_cache_per_thread nodes each) are returned when those threads exit. For tests and for
  // programs that want memory back after a burst; never needed for correctness.
  static void release_cached_nodes() noexcept { cache::trim(); }
  // Bounds of the node cache (0 when the allocator is stateful and the cache is off).
  static constexpr std::size_t node_cache_per_thread = cache::enabled ? cache::local_capacity : 0;
  static constexpr std::size_t node_cache_shared = cache::enabled ? cache::max_stashed : 0;

 private:
  node* new_node() {
    node* n;
    if constexpr (cache::enabled) {
      n = cache::allocate();
    } else {
      node_allocator na(alloc_);
      n = node_traits::allocate(na, 1);
    }
    ::new (static_cast<void*>(n)) node();
    return n;
  }

  void free_node(node* n) noexcept { node_deleter{node_allocator(alloc_)}(n); }

  void link(node* n, hazard& hp) noexcept {
    detail::basic_backoff<Sync> contention;
    for (;;) {
      node* t = hp.protect(*tail_); // t cannot be freed while we look at it
      Sync::preempt();              // stress builds: other pushes link after t, pops pass it
      // (Q1) acquire: pairs with the release link CAS (Q2) that set t->next.
      node* next = t->next.load(std::memory_order_acquire);
      if (next != nullptr) {
        // Tail is lagging: help swing it, then retry. (Q3) release: pairs with protect's acquire
        // load of the tail (H3), publishing next's initialization to the next pusher.
        tail_->compare_exchange_weak(t, next, std::memory_order_release, std::memory_order_relaxed);
        continue;
      }
      // (Q2) release on success: publishes n's value and next == nullptr; pairs with the acquire
      // loads of next in pop (Q4) and in link (Q1).
      if (t->next.compare_exchange_weak(next, n, std::memory_order_release, std::memory_order_relaxed)) {
        Sync::preempt(); // stress builds: pops and pushes meet the linked node before the tail moves
        // (Q3) release; failure means another thread already swung the tail past t.
        tail_->compare_exchange_strong(t, n, std::memory_order_release, std::memory_order_relaxed);
        return;
      }
      contention.pause(); // another push linked first
    }
  }

  // Pops the front value into `sink` (which moves it out) if there is one.
  template <class Sink>
  bool pop_with(Sink&& sink) {
    hazard hp_head = make_hazard_pointer(*domain_);
    hazard hp_next; // taken only when there is something to pop
    detail::basic_backoff<Sync> contention;
    for (;;) {
      node* h = hp_head.protect(*head_);
      // (Q4) acquire: pairs with the release link CAS (Q2): next's value and fields are visible.
      node* next = h->next.load(std::memory_order_acquire);
      if (next == nullptr) {
        // Empty at the instant protect validated head == h: next pointers only go from null to
        // non-null, so h->next was null then too, and h was the last node.
        return false;
      }
      if (hp_next.empty())
        hp_next = make_hazard_pointer(*domain_);
      // (H4) release, no validation: next is dereferenced only after our head CAS from h to next
      // succeeds (Q6). next can be retired only by a later pop that moves head past it, whose
      // acquire load of head (in protect) reads our release CAS or a later RMW in its release
      // sequence; so this store happens-before that retire and before the scan that could free next.
      hp_next.reset_protection(next);
      Sync::preempt();                                  // stress builds: other pops move head past h and retire it
      node* t = tail_->load(std::memory_order_acquire); // (Q5) acquire: pairs with Q3
      if (h == t) {
        // Tail lags behind a linked node: swing it first so head never passes tail.
        tail_->compare_exchange_strong(t, next, std::memory_order_release, std::memory_order_relaxed); // (Q3)
        continue;
      }
      // (Q6) release on success: pairs with protect's acquire load of head by later poppers, which
      // will retire `next`; acquire is not needed (next's value is ordered by Q4).
      if (head_->compare_exchange_strong(h, next, std::memory_order_release, std::memory_order_relaxed)) {
        // We won: next is the new dummy and its value is ours alone. Move it out and destroy the
        // node's copy now, while hp_next still protects next from reclamation.
        T* v = next->value();
        sink(*v);
        value_allocator va(alloc_);
        value_traits::destroy(va, v);
        hp_next.reset_protection(); // (H4) release: our use of next precedes its reclamation
        hp_head.reset_protection();
        h->retire(node_deleter{node_allocator(alloc_)}, *domain_);
        return true;
      }
      contention.pause(); // another pop took h
    }
  }

  cache_padded<atomic<node*>> head_;
  cache_padded<atomic<node*>> tail_;
  domain_type* domain_;
  [[no_unique_address]] Allocator alloc_;
};

} // namespace otlpconc
