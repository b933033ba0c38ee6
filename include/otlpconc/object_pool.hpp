// otlpconc/object_pool.hpp: a pool of objects whose storage lives on the NUMA node that uses it.
//
// What: object_pool<T> hands out objects as pooled_ptr<T>, a std::unique_ptr whose deleter gives the
//   storage back to the pool. acquire(args...) constructs a T in a free slot; releasing the pointer
//   (reset, destruction) destroys the T and keeps the slot for the next acquire.
//   - Storage comes in slabs (about 64 KiB) allocated on the NUMA node of the thread that needs
//     them (otlpconc/topology.hpp). Each slot remembers its slab, each slab its home node.
//   - Each thread keeps a cache of free slots per pool: two magazines (Bonwick's design) of up to
//     magazine_size slots of the thread's node. Acquire and release are a few loads and stores on
//     the thread's own cache, with no atomic read-modify-write, until a magazine runs empty or full;
//     then a whole magazine is exchanged with the node's lock-free list of full magazines
//     (an ms_queue), so the shared lists are touched once per magazine_size objects.
//   - A released object goes back to its home node, wherever it is released: a thread on another
//     node collects such objects in a per-node remote magazine and hands it to the home node's list
//     when it is full. Placement survives cross-thread (and cross-node) hand-offs.
// When to use: many objects of one type created and destroyed at a high rate, especially when they
//   are created on one thread and destroyed on another (producer/consumer), or when they must stay
//   on the node that uses them.
// When not to: objects that live long (a pool never returns slabs to the OS before it is
//   destroyed: its footprint is its peak); mixed sizes (use an allocator); a single thread that
//   allocates rarely.
// Guarantees:
//   - acquire and release never take a lock when served by the thread's cache (the common case);
//     refilling or flushing a magazine is lock-free (ms_queue). Allocating a slab takes the pool's
//     growth mutex; at the limit, reclaiming other threads' caches takes the pool's cache mutex.
//   - Every slot is in exactly one place: a live object, a thread's cache, a node's list. Nothing is
//     lost: a thread's cache goes back to the pool when the thread exits; objects released after
//     their thread's cache is gone (other thread_locals' destructors) go straight to the node lists.
//   - Limit (options.max_objects > 0): the pool never holds more than max_objects objects (in use or
//     cached). An acquire that finds no free slot first reclaims the slots cached by other threads
//     (a thread in the middle of its own acquire/release at that instant is skipped), then applies
//     options.on_limit: fail (empty pooled_ptr), throw_exception (pool_exhausted), or wait until an
//     object is released. try_acquire never waits or throws for the limit.
//   - Placement (options.binding): strict binds every slab to the node asked for or throws
//     topology_error from acquire; best_effort (default) binds when the OS can and otherwise uses
//     ordinary memory, counted in stats().unbound_slabs; none never binds. The node a slab belongs
//     to is the node it was allocated for in every case, so the node lists behave the same with and
//     without binding (this is what tests on synthetic topologies check).
//   - Destroying the pool with objects still out is defined: the storage outlives them. The pool's
//     memory is freed when the pool is destroyed if every object is home, or else when the last
//     outstanding object is released.
// Memory: per slot sizeof(T) plus one pointer (rounded to alignof(T)); slabs are never returned
//   before the pool dies. Per thread that used the pool: one cache (two magazines + one remote
//   magazine per node), at most 2 * magazine_size + nodes * magazine_size cached slots; a pool's
//   cache table is max_threads pointers (8 KiB).
// Without NUMA (one node) or without hwloc: everything above holds with one node: slabs are
//   ordinary (or node-0-bound) memory and every release is local.
// Requirements on T: a complete, non-array object type, nothrow destructible, alignment at most
//   one page. acquire(args...) requires std::constructible_from<T, Args...>.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/counter.hpp"
#include "otlpconc/detail/asymmetric_fence.hpp"
#include "otlpconc/detail/cache_handshake.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/event_count.hpp"
#include "otlpconc/detail/pool_threads.hpp"
#include "otlpconc/ms_queue.hpp"
#include "otlpconc/topology.hpp"

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace otlpconc {

// What acquire does when the pool is at options.max_objects and no slot is free.
enum class pool_limit_policy {
  fail,            // return an empty pooled_ptr
  throw_exception, // throw pool_exhausted
  wait,            // block until an object is released
};

// How slabs are placed on their node (see the header comment).
enum class slab_binding { best_effort, strict, none };

class pool_exhausted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct object_pool_options {
  std::size_t max_objects = 0; // 0: no limit
  pool_limit_policy on_limit = pool_limit_policy::fail;
  std::size_t magazine_size = 0;    // slots per magazine; 0: about 32 KiB of slots, 8 to 256
  std::size_t objects_per_slab = 0; // 0: about 64 KiB of slots, at least two magazines
  slab_binding binding = slab_binding::best_effort;
  const topology* topo = nullptr; // nullptr: topology::system(). Must outlive the pool's storage.
  // The node whose slots the calling thread should use. Empty: the node of the CPU the thread runs
  // on (topo->current_node()), or node 0 on a topology that is not this machine's. Called when a
  // thread's cache needs refilling, not per acquire. Must return a node of topo.
  std::function<unsigned()> node_of_thread;
};

struct object_pool_stats {
  std::vector<std::size_t> slabs_per_node;
  std::size_t unbound_slabs = 0;    // slabs best_effort could not bind to their node
  std::size_t capacity = 0;         // slots in all slabs (objects in use + free)
  std::int64_t acquired = 0;        // slots handed out (a slot whose constructor threw counts as
  std::int64_t released = 0;        // acquired and released); slots returned
  std::int64_t in_use = 0;          // acquired - released (exact when quiescent)
  std::int64_t cache_misses = 0;    // slots taken other than from the calling thread's magazines
                                    // (acquired - cache_misses: the cache hits, when no constructor threw)
  std::int64_t remote_releases = 0; // releases, through the caller's cache, of an object homed on
                                    // another node than the caller's
  std::int64_t exhausted = 0;       // acquires that found the pool at its limit
};

template <class T>
class object_pool;

template <class T>
struct pool_deleter {
  void operator()(T* p) const noexcept { object_pool<T>::release(p); }
};

// The pointer acquire returns: one pointer wide (the deleter is empty).
template <class T>
using pooled_ptr = std::unique_ptr<T, pool_deleter<T>>;

template <class T>
class object_pool {
  static_assert(std::is_object_v<T> && !std::is_array_v<T>, "object_pool<T>: T must be a non-array object type");
  static_assert(std::is_nothrow_destructible_v<T>,
                "object_pool<T>: T must be nothrow destructible (objects are destroyed on release, which cannot fail)");
  static_assert(alignof(T) <= 4096, "object_pool<T>: T's alignment must not exceed a page (4096 bytes)");

  struct core;
  struct slab {
    core* owner;
    unsigned node;
    bool bound;
    void* memory;
    std::size_t bytes;
  };
  struct slot {
    slab* home;
    alignas(T) unsigned char storage[sizeof(T)];
  };
  static_assert(std::is_standard_layout_v<slot>);

 public:
  using value_type = T;
  using pointer = pooled_ptr<T>;
  static constexpr unsigned max_threads = detail::pool_thread_registry::max_threads;

  // Throws std::invalid_argument for inconsistent options (naming the field), topology_error if
  // the system topology cannot be loaded, std::bad_alloc.
  explicit object_pool(object_pool_options options = {}) : core_(new core(std::move(options))) {}
  object_pool(const object_pool&) = delete;
  object_pool& operator=(const object_pool&) = delete;
  // Defined with objects still out: see "Destroying the pool" above.
  ~object_pool() { core::close(core_); }

  // A new T(args...) in a free slot. At the limit: options.on_limit. Throws what T's constructor
  // throws (the slot is kept), pool_exhausted (throw_exception policy), topology_error (strict
  // binding refused), std::bad_alloc.
  template <class... Args>
    requires std::constructible_from<T, Args...>
  [[nodiscard]] pointer acquire(Args&&... args) {
    return construct(core_->take(core_->options_.on_limit), std::forward<Args>(args)...);
  }
  // As acquire, but at the limit returns an empty pointer whatever the policy.
  template <class... Args>
    requires std::constructible_from<T, Args...>
  [[nodiscard]] pointer try_acquire(Args&&... args) {
    return construct(core_->take(pool_limit_policy::fail), std::forward<Args>(args)...);
  }

  // Moves the calling thread's cached slots to the node lists (other threads can then use them).
  // Never needed for correctness: caches are reclaimed at the limit and when threads exit.
  void flush_thread_cache() noexcept { core_->flush_thread_cache(); }

  object_pool_stats stats() const { return core_->stats(); }
  const object_pool_options& options() const noexcept { return core_->options_; }
  std::size_t magazine_size() const noexcept { return core_->mag_; }
  std::size_t objects_per_slab() const noexcept { return core_->per_slab_; }
  const topology& topo() const noexcept { return *core_->topo_; }

  // The home node of an object of this pool (the node its slab was allocated for).
  static unsigned node_of(const T* p) noexcept { return slot_of(p)->home->node; }
  // The node an acquire on the calling thread allocates for (options.node_of_thread, else the node
  // of the current CPU). Throws std::out_of_range if the hook returns a node the topology lacks.
  unsigned node_of_calling_thread() const { return core_->thread_node(); }
  std::size_t nodes() const noexcept { return core_->nodes_.size(); }

 private:
  friend struct pool_deleter<T>;

  static slot* slot_of(const T* p) noexcept {
    auto* bytes = reinterpret_cast<unsigned char*>(const_cast<T*>(p));
    return reinterpret_cast<slot*>(bytes - offsetof(slot, storage));
  }

  template <class... Args>
  pointer construct(slot* s, Args&&... args) {
    if (s == nullptr)
      return pointer();
    T* obj;
    try {
      obj = ::new (static_cast<void*>(s->storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s->home->owner->put(s);
      throw;
    }
    return pointer(obj);
  }

  static void release(T* p) noexcept {
    slot* s = slot_of(p);
    p->~T();
    core* c = s->home->owner;
    c->put(s);
  }

  // A magazine: up to `mag_` free slots.
  struct batch {
    explicit batch(std::size_t capacity) : items(new slot*[capacity]) {}
    std::size_t count = 0;
    std::unique_ptr<slot*[]> items;
  };

  // One thread's cache in one pool. Owned by its thread, except while a reclaimer holds `request`
  // and has seen `busy` clear (the protocol in core::reclaim_caches).
  struct alignas(cache_line_size) local {
    detail::cache_handshake hs; // the owner's use against a reclaimer's (core's protocol below)
    unsigned node = 0;          // the node of every slot in loaded and previous
    batch* loaded = nullptr;
    batch* previous = nullptr;
    batch* spare = nullptr;     // an empty magazine kept for the next exchange (saves two queue operations)
    std::vector<batch*> remote; // per other node: slots homed there, released by this thread
    // Slots this thread took from / gave to the pool through this cache. Written only by the owner
    // (a load and a store, no RMW: see bump), read by stats() under locals_mutex_.
    std::atomic<std::int64_t> acquired{0};
    std::atomic<std::int64_t> released{0};

    local() = default;
    local(const local&) = delete;
    local& operator=(const local&) = delete;
    ~local() {
      delete loaded;
      delete previous;
      delete spare;
      for (batch* r : remote)
        delete r;
    }
  };

  struct node_state {
    ms_queue<batch*> full; // magazines of free slots homed on this node (count >= 1)
    std::mutex loose_mutex;
    std::vector<slot*> loose;                 // free slots not in a magazine (slab carving, fallbacks, reclaim)
    std::vector<std::unique_ptr<slab>> slabs; // under core::grow_mutex_
    std::size_t capacity = 0;                 // slots in `slabs`, under core::grow_mutex_
  };

  struct core final : detail::pool_core_base {
    explicit core(object_pool_options options)
        : options_(std::move(options)), topo_(options_.topo != nullptr ? options_.topo : &topology::system()),
          mag_(options_.magazine_size != 0 ? options_.magazine_size
                                           : std::clamp<std::size_t>(32768 / sizeof(slot), 8, 256)),
          per_slab_(options_.objects_per_slab != 0 ? options_.objects_per_slab
                                                   : std::max<std::size_t>(65536 / sizeof(slot), 2 * mag_)),
          nodes_(topo_->numa_nodes()), locals_(new std::atomic<local*>[max_threads]) {
      if (options_.magazine_size > (std::size_t{1} << 20))
        throw std::invalid_argument("object_pool: options.magazine_size must be at most 2^20 (0 picks a default)");
      if (options_.objects_per_slab > (std::size_t{1} << 30) / sizeof(slot))
        throw std::invalid_argument("object_pool: options.objects_per_slab makes a slab larger than 1 GiB");
      if (options_.on_limit != pool_limit_policy::fail && options_.on_limit != pool_limit_policy::throw_exception &&
          options_.on_limit != pool_limit_policy::wait)
        throw std::invalid_argument("object_pool: options.on_limit is not a pool_limit_policy");
      if (options_.binding != slab_binding::best_effort && options_.binding != slab_binding::strict &&
          options_.binding != slab_binding::none)
        throw std::invalid_argument("object_pool: options.binding is not a slab_binding");
      for (auto& n : nodes_)
        n = std::make_unique<node_state>();
      for (unsigned i = 0; i < max_threads; ++i)
        locals_[i].store(nullptr, std::memory_order_relaxed); // (O0) not shared yet
      detail::pool_thread_registry::instance().add(this);
    }

    // ---- the thread cache protocol ---------------------------------------------------------------
    // detail/cache_handshake.hpp (model-checked: tests/model, "[object_pool]"): the owner brackets
    // each use of its cache with try_enter (O1..O3) and leave (O4), and ends the operation with
    // finish (O7): busy is 2 in between (the cache is no longer in use, the pool still is: the
    // wait-policy check below); when no thread can wait (may_wait_ false) only O7 runs. A reclaimer
    // (reclaim_caches; one at a time under locals_mutex_) requests (R1), fences (R2), and takes the
    // caches whose owner is outside (R3) until it withdraws (R4); close() waits for busy == 0 and
    // never withdraws: after it, every operation bypasses the caches. O7 -> close's R3 orders the end
    // of the operation before the pool is freed.
    //
    // A reclaimer that skipped a busy cache relies on its owner to look for waiters afterwards (W4),
    // so every operation that stored busy = 1 ends with check_waiters() before O7, including one
    // whose enter failed.
    bool enter(local* l) noexcept {
      if (try_enter(l))
        return true;
      check_waiters(l);
      finish(l);
      return false;
    }
    bool try_enter(local* l) const noexcept {
      return l->hs.try_enter(asymmetric_ ? detail::fence_mode::asymmetric : detail::fence_mode::symmetric);
    }
    // Ends an operation whose cache use is over: the wait-policy check, then O7.
    void leave_and_finish(local* l) noexcept {
      if (may_wait_) [[unlikely]] {
        leave(l);
        check_waiters(l);
      }
      finish(l);
    }
    // Runs leave_and_finish when a scope ends, also by an exception.
    struct operation_end {
      core* c;
      local* l;
      ~operation_end() { c->leave_and_finish(l); }
    };
    // The owner's counter increment: it is the only writer, so a relaxed load and store suffice
    // (as sharded_counter's cells; stats() may read a value one behind while the owner runs).
    static void bump(std::atomic<std::int64_t>& c) noexcept {
      c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    static void leave(local* l) noexcept { l->hs.leave(); }   // (O4)
    static void finish(local* l) noexcept { l->hs.finish(); } // (O7)
    // The reader side of detail/asymmetric_fence.hpp, in the process-wide mode (read once).
    void light_fence() const noexcept {
      if (asymmetric_)
        detail::light_fence<detail::fence_mode::asymmetric>();
      else
        detail::light_fence<detail::fence_mode::symmetric>();
    }

    // The calling thread's cache, created on first use; nullptr when it has none (no thread index,
    // out of memory, or the pool is closed).
    local* my_local() noexcept {
      unsigned index = detail::pool_thread_index();
      if (index == detail::no_pool_index)
        return nullptr;
      local* l = locals_[index].load(std::memory_order_relaxed); // (O5) written by this thread (O6)
      return l != nullptr ? l : make_local(index);
    }
    OTLPCONC_NOINLINE local* make_local(unsigned index) noexcept {
      // (D1') relaxed: a hint only (closed_ below decides); spares the node hook after close.
      if (closed_flag_.load(std::memory_order_relaxed))
        return nullptr;
      try {
        auto l = std::make_unique<local>(); // frees whatever it holds if anything below throws
        l->node = thread_node();
        l->remote.assign(nodes_.size(), nullptr);
        l->loaded = new batch(mag_);
        l->previous = new batch(mag_);
        std::lock_guard lock(locals_mutex_);
        if (closed_)
          return nullptr;
        // (O6) relaxed: read by this thread (O5); by others only under locals_mutex_.
        locals_[index].store(l.get(), std::memory_order_relaxed);
        return l.release();
      } catch (...) {
        return nullptr; // works without a cache
      }
    }

    unsigned thread_node() const {
      unsigned n =
          options_.node_of_thread ? options_.node_of_thread() : (topo_->is_this_system() ? topo_->current_node() : 0);
      if (n >= nodes_.size())
        throw std::out_of_range("object_pool: options.node_of_thread returned node " + std::to_string(n) +
                                " but the topology has " + std::to_string(nodes_.size()));
      return n;
    }

    // ---- acquire ---------------------------------------------------------------------------------
    // The fast path, kept small so that it inlines into acquire: a slot from the loaded magazine.
    slot* take(pool_limit_policy policy) {
      local* l = cached_local();
      if (l != nullptr && enter(l)) [[likely]]
        return take_entered(l, policy);
      return take_without_cache(policy);
    }
    // The caller is inside enter(l). Ends the operation.
    slot* take_entered(local* l, pool_limit_policy policy) {
      batch* b = l->loaded;
      if (const std::size_t n = b->count; n != 0) [[likely]] {
        detail::std_sync::preempt(); // stress builds: a reclaim runs while this thread uses its cache
        slot* s = b->items[n - 1];
        b->count = n - 1;
        bump(l->acquired);
        leave_and_finish(l);
        return s;
      }
      return take_cache_miss(l, policy);
    }
    // The calling thread's cache if it has one already (no registration, no allocation).
    local* cached_local() const noexcept {
      unsigned index = detail::pool_thread_slot - 1;
      return index < max_threads ? locals_[index].load(std::memory_order_relaxed) // (O5) see O6
                                 : nullptr;
    }

    // The loaded magazine is empty; the caller is inside enter(l). Ends the operation.
    OTLPCONC_NOINLINE slot* take_cache_miss(local* l, pool_limit_policy policy) {
      slot* s = nullptr;
      {
        operation_end end{this, l};
        if (l->previous->count != 0) {
          std::swap(l->loaded, l->previous);
          s = l->loaded->items[--l->loaded->count];
        } else if ((s = refill(l)) != nullptr) {
          cache_misses_.increment();
        }
        if (s != nullptr)
          bump(l->acquired);
      }
      return s != nullptr ? s : take_slow(policy);
    }
    // No cache yet (first use on this thread), none available, or a reclaimer holds it.
    OTLPCONC_NOINLINE slot* take_without_cache(pool_limit_policy policy) {
      if (local* l = my_local(); l != nullptr && enter(l))
        return take_entered(l, policy);
      return take_slow(policy);
    }

    // Both magazines are empty: load one from the node's lists, or from a new slab. The caller is
    // inside enter/leave. Returns one slot, or nullptr at the limit.
    slot* refill(local* l) {
      unsigned node = thread_node();
      l->node = node; // both magazines are empty: switching nodes moves nothing
      if (batch* r = l->remote[node]; r != nullptr && r->count != 0) {
        // Slots of this node released here while the thread lived on another one.
        std::swap(l->loaded, l->remote[node]);
        return l->loaded->items[--l->loaded->count];
      }
      node_state& ns = *nodes_[node];
      batch* full = nullptr;
      if (ns.full.try_pop(full)) {
        std::swap(l->loaded, full);
        if (l->spare == nullptr) // the empty one
          l->spare = full;
        else
          recycle(full);
        return l->loaded->items[--l->loaded->count];
      }
      if (take_loose(ns, *l->loaded))
        return l->loaded->items[--l->loaded->count];
      return grow(node, l->loaded);
    }

    // Moves up to one magazine of loose slots into `into` (empty). False if there were none.
    bool take_loose(node_state& ns, batch& into) {
      std::lock_guard lock(ns.loose_mutex);
      if (ns.loose.empty())
        return false;
      std::size_t n = std::min(mag_, ns.loose.size());
      std::copy(ns.loose.end() - static_cast<std::ptrdiff_t>(n), ns.loose.end(), into.items.get());
      ns.loose.resize(ns.loose.size() - n);
      into.count = n;
      return true;
    }

    // Allocates a slab for `node` and returns one of its slots; the others fill `into` (when given,
    // empty) and the node's loose list. nullptr at the limit.
    slot* grow(unsigned node, batch* into) {
      node_state& ns = *nodes_[node];
      std::unique_lock lock(grow_mutex_);
      std::size_t n = per_slab_;
      if (options_.max_objects != 0)
        n = std::min(n, options_.max_objects - capacity_);
      if (n == 0)
        return nullptr;
      auto sl = std::make_unique<slab>(slab{this, node, false, nullptr, n * sizeof(slot)});
      allocate_slab(*sl);
      try {
        ns.slabs.push_back(nullptr);
        // The loose list can hold every slot homed on this node, so returning a slot to it never
        // allocates (releases cannot fail).
        std::lock_guard loose_lock(ns.loose_mutex);
        ns.loose.reserve(ns.capacity + n);
      } catch (...) {
        if (!ns.slabs.empty() && ns.slabs.back() == nullptr)
          ns.slabs.pop_back();
        topo_->deallocate(sl->memory, sl->bytes);
        throw;
      }
      ns.slabs.back() = std::move(sl);
      slab* s = ns.slabs.back().get();
      ns.capacity += n;
      capacity_ += n;
      if (!s->bound && options_.binding == slab_binding::best_effort)
        ++unbound_slabs_;
      lock.unlock();

      auto* slots = static_cast<slot*>(s->memory);
      for (std::size_t i = 0; i < n; ++i) {
        ::new (static_cast<void*>(slots + i)) slot; // storage left uninitialized
        slots[i].home = s;                          // touches every page: first touch on its node
      }
      std::size_t first_loose = 1;
      if (into != nullptr) {
        std::size_t k = std::min(mag_, n - 1);
        for (std::size_t i = 0; i < k; ++i)
          into->items[i] = slots + 1 + i;
        into->count = k;
        first_loose = 1 + k;
      }
      if (first_loose < n) {
        {
          std::lock_guard loose_lock(ns.loose_mutex);
          for (std::size_t i = first_loose; i < n; ++i)
            ns.loose.push_back(slots + i); // reserved above
        }
        after_publish();
      }
      return slots;
    }

    void allocate_slab(slab& s) {
      switch (options_.binding) {
      case slab_binding::strict:
        s.memory = topo_->allocate_on_node(s.bytes, s.node);
        s.bound = true;
        return;
      case slab_binding::best_effort:
        try {
          s.memory = topo_->allocate_on_node(s.bytes, s.node);
          s.bound = true;
          return;
        } catch (const topology_error&) {
        }
        [[fallthrough]];
      case slab_binding::none:
        s.memory = topo_->allocate(s.bytes);
        s.bound = false;
        return;
      }
    }

    // No cache (or it was bypassed): the node lists of the thread's node, then the other nodes',
    // then a new slab; at the limit, reclaim other threads' caches, then apply the policy.
    slot* take_slow(pool_limit_policy policy) {
      slot* s = take_from_pool(policy);
      if (s != nullptr) {
        cache_misses_.increment();
        acquired_.increment();
      }
      return s;
    }
    slot* take_from_pool(pool_limit_policy policy) {
      unsigned node = thread_node();
      if (slot* s = take_one_from_lists(node))
        return s;
      if (slot* s = grow(node, nullptr))
        return s;
      exhausted_.increment();
      for (;;) {
        if (slot* s = reclaim_and_take(node))
          return s;
        if (policy == pool_limit_policy::fail)
          return nullptr;
        if (policy == pool_limit_policy::throw_exception)
          throw pool_exhausted("object_pool: all " + std::to_string(options_.max_objects) +
                               " objects (options.max_objects) are in use");
        // wait: announce, look once more, then sleep until something reaches the node lists.
        waiters_.fetch_add(1, std::memory_order_seq_cst); // (W1) pairs with the fence in after_publish (W3)
        std::uint32_t key = wakeups_.prepare_wait();
        if (slot* s = reclaim_and_take(node)) {
          wakeups_.cancel_wait();
          waiters_.fetch_sub(1, std::memory_order_relaxed); // (W2) a count only
          return s;
        }
        wakeups_.wait(key);
        waiters_.fetch_sub(1, std::memory_order_relaxed); // (W2)
      }
    }

    slot* take_one_from_lists(unsigned preferred) {
      for (std::size_t k = 0; k < nodes_.size(); ++k) {
        node_state& ns = *nodes_[(preferred + k) % nodes_.size()];
        batch* b = nullptr;
        if (ns.full.try_pop(b)) {
          slot* s = b->items[--b->count];
          return_batch(b, ns);
          return s;
        }
        std::lock_guard lock(ns.loose_mutex);
        if (!ns.loose.empty()) {
          slot* s = ns.loose.back();
          ns.loose.pop_back();
          return s;
        }
      }
      return nullptr;
    }

    slot* reclaim_and_take(unsigned node) {
      reclaim_caches(false);
      return take_one_from_lists(node);
    }

    // ---- release ---------------------------------------------------------------------------------
    // The fast path, small enough to inline into release: into the loaded magazine.
    void put(slot* s) noexcept {
      local* l = cached_local();
      if (l != nullptr && enter(l)) [[likely]] {
        batch* b = l->loaded;
        if (const std::size_t n = b->count; s->home->node == l->node && n != mag_) [[likely]] {
          detail::std_sync::preempt(); // stress builds: a reclaim runs while this thread uses its cache
          b->items[n] = s;
          b->count = n + 1;
          bump(l->released);
          leave_and_finish(l);
          return;
        }
        put_cache_miss(l, s);
        return;
      }
      put_without_cache(s);
    }
    OTLPCONC_NOINLINE void put_without_cache(slot* s) noexcept {
      local* l = my_local();
      if (l != nullptr && enter(l)) {
        put_cache_miss(l, s);
        return;
      }
      put_bypass(s);
    }

    // The caller is inside enter(l); leaves it.
    OTLPCONC_NOINLINE void put_cache_miss(local* l, slot* s) noexcept {
      unsigned home = s->home->node;
      if (home == l->node) {
        if (l->loaded->count == mag_) {
          if (l->previous->count == 0) {
            std::swap(l->loaded, l->previous);
          } else {
            // Both full: the previous magazine goes to the node's list, the loaded one becomes
            // the previous, and an empty one is loaded.
            batch* empty = std::exchange(l->spare, nullptr);
            if (empty == nullptr && (empty = take_empty()) == nullptr) {
              leave_and_finish(l);
              put_bypass(s);
              return;
            }
            return_batch(l->previous, *nodes_[l->node]);
            l->previous = l->loaded;
            l->loaded = empty;
          }
        }
        l->loaded->items[l->loaded->count++] = s;
        bump(l->released);
      } else {
        remote_releases_.increment();
        batch*& r = l->remote[home];
        if (r == nullptr && (r = take_empty()) == nullptr) {
          leave_and_finish(l);
          put_bypass(s);
          return;
        }
        r->items[r->count++] = s;
        bump(l->released);
        if (r->count == mag_) {
          return_batch(r, *nodes_[home]);
          r = nullptr;
        }
      }
      leave_and_finish(l);
    }

    // After an operation that left slots in the calling thread's cache: if a thread waits for a
    // slot (wait policy at the limit), hand them to the node lists. Only pools that can wait pay.
    // Called after leave (busy == 2), before finish.
    void check_waiters(local* l) noexcept {
      if (!may_wait_) [[likely]]
        return;
      // (W4) the light fence orders O4 before the load of waiters_; pairs with R2 in the waiter's
      // reclaim: a waiter that announced itself (W1) before its reclaim either is seen here, or its
      // reclaim found this cache idle (O4 visible, busy != 1) and took the slots itself.
      light_fence();
      if (waiters_.load(std::memory_order_relaxed) != 0) [[unlikely]] // (W5) see W4
        flush_own_cache(l);
    }

    // A release without the thread cache. Also the path of releases into a closed pool.
    void put_bypass(slot* s) noexcept {
      released_.increment();
      // (D3) seq_cst RMW then (D4) seq_cst load: with close's D1 store and D2 load, either close
      // sees this release in flight and waits for it, or this release sees the pool closed.
      inflight_.fetch_add(1, std::memory_order_seq_cst);
      if (closed_flag_.load(std::memory_order_seq_cst)) {
        inflight_.fetch_sub(1, std::memory_order_release); // (D5) pairs with D2
        release_orphan();
        return;
      }
      push_loose(s);
      inflight_.fetch_sub(1, std::memory_order_release); // (D5)
    }

    void push_loose(slot* s) noexcept {
      node_state& ns = *nodes_[s->home->node];
      {
        std::lock_guard lock(ns.loose_mutex);
        push_loose_locked(ns, s);
      }
      after_publish();
    }
    static void push_loose_locked(node_state& ns, slot* s) noexcept {
      ns.loose.push_back(s); // never allocates: grow reserved room for every slot of the node
    }

    // Hands a magazine to node `ns`'s list (an empty one to the spare list).
    void return_batch(batch* b, node_state& ns) noexcept {
      if (b->count == 0) {
        recycle(b);
        return;
      }
      try {
        ns.full.push(b);
      } catch (...) { // no memory for the queue node: the slots go to the loose list instead
        {
          std::lock_guard lock(ns.loose_mutex);
          for (std::size_t i = 0; i < b->count; ++i)
            push_loose_locked(ns, b->items[i]);
        }
        b->count = 0;
        recycle(b);
      }
      after_publish();
    }
    void recycle(batch* b) noexcept {
      try {
        empties_.push(b);
      } catch (...) {
        delete b;
      }
    }
    batch* take_empty() noexcept {
      batch* b = nullptr;
      try {
        if (empties_.try_pop(b))
          return b;
        return new batch(mag_);
      } catch (...) {
        return nullptr;
      }
    }

    // After slots reached a node list: wake waiters, if any.
    void after_publish() noexcept {
      // (W3) seq_cst fence: between publishing the slots and reading waiters_; pairs with W1.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (waiters_.load(OTLPCONC_TSAN_ORDER(std::memory_order_relaxed, std::memory_order_seq_cst)) != 0)
        wakeups_.notify_all();
    }

    // Moves every slot of a cache (owned by the caller: its owner, a reclaimer, or the exit path)
    // to the loose lists of their nodes. Allocates nothing (it runs at thread exit, and ms_queue
    // would need hazard pointers).
    // Returns whether it moved any slot.
    bool drain_cache(local& l) noexcept {
      bool moved = false;
      auto drain = [&](batch* b, unsigned node) {
        if (b == nullptr || b->count == 0)
          return;
        moved = true;
        node_state& ns = *nodes_[node];
        std::lock_guard lock(ns.loose_mutex);
        for (std::size_t i = 0; i < b->count; ++i)
          push_loose_locked(ns, b->items[i]);
        b->count = 0;
      };
      drain(l.loaded, l.node);
      drain(l.previous, l.node);
      for (std::size_t n = 0; n < l.remote.size(); ++n)
        drain(l.remote[n], static_cast<unsigned>(n));
      return moved;
    }

    // Moves the calling thread's cached slots to the node lists. Leaves busy == 2 (the caller
    // finishes the operation).
    void flush_own_cache(local* l) noexcept {
      // A reclaimer holds `request` only while it drains caches; wait for it rather than leave
      // slots behind that a waiter may need. A closed pool keeps `request` set: its caches are
      // empty and stay unused.
      while (!try_enter(l)) {
        if (closed_flag_.load(std::memory_order_relaxed)) // (D1') only a hint to stop retrying
          return;
        std::this_thread::yield();
      }
      bool moved = drain_cache(*l);
      leave(l);
      if (moved)
        after_publish();
    }
    void flush_thread_cache() noexcept {
      if (local* l = my_local()) {
        flush_own_cache(l);
        finish(l);
      }
    }

    // Takes the caches of every thread not inside an operation on this pool. With `closing`, waits
    // for those that are, and leaves every request set (the pool is closed: caches stay bypassed).
    void reclaim_caches(bool closing) noexcept {
      std::lock_guard lock(locals_mutex_);
      bool moved = false;
      for (unsigned i = 0; i < max_threads; ++i)
        if (local* l = locals_[i].load(std::memory_order_relaxed)) // (O6') written under this mutex
          l->hs.request();                                         // (R1)
      // (R2) pairs with O2 and W4. If membarrier fails (the kernel may return ENOMEM), the owners got
      // no barrier: taking their caches now would be unsafe. An ordinary reclaim gives up this time;
      // closing must take them, so it retries (the failure is transient).
      while (!detail::heavy_fence()) {
        if (!closing) {
          for (unsigned i = 0; i < max_threads; ++i)
            if (local* l = locals_[i].load(std::memory_order_relaxed))
              l->hs.withdraw(); // (R4)
          return;
        }
        std::this_thread::yield();
      }
      for (unsigned i = 0; i < max_threads; ++i) {
        local* l = locals_[i].load(std::memory_order_relaxed);
        if (l == nullptr)
          continue;
        if (closing) {
          l->hs.wait_finished();             // (R3): the operation, including its tail, is over
        } else if (!l->hs.owner_outside()) { // (R3)
          l->hs.withdraw();                  // (R4) the owner keeps it
          continue;
        }
        moved = drain_cache(*l) || moved;
        if (!closing)
          l->hs.withdraw(); // (R4)
      }
      // Only when slots moved: a waiter's own reclaim must not wake itself (it would spin).
      if (moved)
        after_publish();
    }

    // Registry callback: thread `index` exits (it is the calling thread).
    void thread_exit(unsigned index) noexcept override {
      std::lock_guard lock(locals_mutex_);
      local* l = locals_[index].load(std::memory_order_relaxed); // (O6') under the mutex
      if (l == nullptr)
        return;
      locals_[index].store(nullptr, std::memory_order_relaxed);   // (O6') the next owner of the index starts afresh
      acquired_.add(l->acquired.load(std::memory_order_relaxed)); // this thread's own counts
      released_.add(l->released.load(std::memory_order_relaxed));
      if (drain_cache(*l))
        after_publish();
      delete l;
    }

    // ---- closing ---------------------------------------------------------------------------------
    // The pool object is destroyed. Frees everything now if every slot is home, else leaves the
    // core to the outstanding objects: the last release frees it.
    static void close(core* c) noexcept {
      detail::pool_thread_registry::instance().remove(c); // no thread_exit call runs or will start
      {
        std::lock_guard lock(c->locals_mutex_);
        c->closed_ = true; // no new caches
      }
      c->closed_flag_.store(true, std::memory_order_seq_cst); // (D1) see D3/D4
      c->reclaim_caches(true);                                // every cache drained; the owners bypass them from now on
      while (c->inflight_.load(std::memory_order_seq_cst) != 0) // (D2) seq_cst: see D3/D4; pairs with D5
        std::this_thread::yield();
      std::size_t free_slots = 0;
      try {
        for (auto& ns : c->nodes_) {
          batch* b = nullptr;
          while (ns->full.try_pop(b)) { // throws only if no hazard pointer can be allocated
            free_slots += b->count;
            delete b;
          }
          std::lock_guard lock(ns->loose_mutex);
          free_slots += ns->loose.size();
        }
      } catch (...) {
        return; // out of memory: the count is unknown, so the core is kept (a leak, not a crash)
      }
      std::size_t capacity;
      {
        std::lock_guard lock(c->grow_mutex_);
        capacity = c->capacity_;
      }
      std::size_t out = capacity - free_slots;
      if (out == 0) {
        delete c;
        return;
      }
      // (D6) acq_rel RMW: the releases' D7 see this count; the last one frees the core.
      if (c->outstanding_.fetch_add(static_cast<std::int64_t>(out), std::memory_order_acq_rel) +
              static_cast<std::int64_t>(out) ==
          0)
        delete c; // every outstanding object came back while we counted
    }
    void release_orphan() noexcept {
      // (D7) acq_rel RMW: the last release (count back to 0) sees every other release's effects.
      if (outstanding_.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0)
        delete this;
    }

    ~core() {
      for (unsigned i = 0; i < max_threads; ++i)
        if (local* l = locals_[i].load(std::memory_order_relaxed)) // (O0) exclusive now
          delete l;
      batch* b = nullptr;
      while (empties_.try_pop(b))
        delete b;
      for (auto& ns : nodes_)
        for (auto& s : ns->slabs)
          topo_->deallocate(s->memory, s->bytes);
    }

    object_pool_stats stats() const {
      object_pool_stats st;
      {
        std::lock_guard lock(grow_mutex_);
        for (auto& ns : nodes_)
          st.slabs_per_node.push_back(ns->slabs.size());
        st.unbound_slabs = unbound_slabs_;
        st.capacity = capacity_;
      }
      // Released first: every release follows its acquire, so in_use never reads negative. Under
      // locals_mutex_, so a thread's counts move from its cache to the totals (thread_exit) either
      // entirely before or entirely after this.
      {
        std::lock_guard lock(locals_mutex_);
        st.released = released_.load();
        for (unsigned i = 0; i < max_threads; ++i)
          if (local* l = locals_[i].load(std::memory_order_relaxed)) // (O6') under the mutex
            st.released += l->released.load(std::memory_order_relaxed);
        st.acquired = acquired_.load();
        for (unsigned i = 0; i < max_threads; ++i)
          if (local* l = locals_[i].load(std::memory_order_relaxed))
            st.acquired += l->acquired.load(std::memory_order_relaxed);
      }
      st.in_use = st.acquired - st.released;
      st.cache_misses = cache_misses_.load();
      st.remote_releases = remote_releases_.load();
      st.exhausted = exhausted_.load();
      return st;
    }

    const object_pool_options options_;
    const topology* const topo_;
    const std::size_t mag_;
    const std::size_t per_slab_;
    std::vector<std::unique_ptr<node_state>> nodes_;
    std::unique_ptr<std::atomic<local*>[]> locals_; // by thread index
    ms_queue<batch*> empties_;                      // spare empty magazines

    mutable std::mutex grow_mutex_;
    std::size_t capacity_ = 0;      // under grow_mutex_
    std::size_t unbound_slabs_ = 0; // under grow_mutex_

    mutable std::mutex locals_mutex_; // reclaiming, creating and deleting caches; stats
    bool closed_ = false;             // under locals_mutex_

    const bool asymmetric_ = detail::current_fence_mode() == detail::fence_mode::asymmetric;
    const bool may_wait_ = options_.max_objects != 0 && options_.on_limit == pool_limit_policy::wait;
    std::atomic<int> waiters_{0};
    detail::event_count wakeups_;

    std::atomic<bool> closed_flag_{false};
    std::atomic<std::int64_t> inflight_{0};
    std::atomic<std::int64_t> outstanding_{0};

    // acquired_ / released_: slots taken and returned without a cache, plus the counts of exited
    // threads' caches; the live caches count in local::acquired / released (no thread-local lookup
    // on the fast path: that alone cost 40% of an acquire + release pair).
    sharded_counter acquired_, released_, cache_misses_, remote_releases_, exhausted_;
  };

  core* core_;
};

} // namespace otlpconc
