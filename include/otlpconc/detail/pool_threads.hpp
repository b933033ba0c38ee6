// otlpconc/detail/pool_threads.hpp: dense thread indexes and thread-exit callbacks for object_pool.
//
// Each thread that uses an object_pool gets a small index (lowest free first, reused after the
// thread exits), which pools use to find the thread's cache in a flat array: one thread-local load
// and one array load on the hot path, no hashing. The registry also keeps the list of live pools,
// and when a thread exits it asks each of them to take back that thread's cache.
//
// Everything here takes the registry mutex, and only on slow paths: a thread's first use of any
// pool, thread exit, pool construction and destruction. The registry is leaked on purpose so that
// threads exiting after static destruction still find it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <vector>

namespace otlpconc::detail {

// A pool's shared state, as the registry sees it.
class pool_core_base {
 public:
  // The thread with this index is exiting: take back its cache. Called with the registry mutex
  // held, on the exiting thread.
  virtual void thread_exit(unsigned index) noexcept = 0;

 protected:
  ~pool_core_base() = default;
};

// The calling thread's index + 1; 0: not registered yet; no_pool_index: none (the thread is past
// its exit, or every index was taken): its pool operations bypass the thread caches.
inline constexpr unsigned no_pool_index = ~0u;
inline constinit thread_local unsigned pool_thread_slot = 0;

class pool_thread_registry {
 public:
  // Threads with a cache at the same time; further threads work without one (correct, slower).
  static constexpr unsigned max_threads = 1024;

  static pool_thread_registry& instance() {
    static pool_thread_registry* registry = new pool_thread_registry; // leaked on purpose (above)
    return *registry;
  }

  // Registers the calling thread (its first use of any pool). Returns its index, or no_pool_index.
  unsigned register_thread() noexcept {
    try {
      static thread_local exit_guard guard; // destroyed at thread exit: returns caches, frees the index
      (void)guard;
      std::lock_guard lock(mutex_);
      auto free = std::find(used_.begin(), used_.end(), false);
      if (free == used_.end()) {
        pool_thread_slot = no_pool_index;
        return no_pool_index;
      }
      *free = true;
      unsigned index = static_cast<unsigned>(free - used_.begin());
      pool_thread_slot = index + 1;
      return index;
    } catch (...) { // std::system_error from the mutex, or the guard's registration failed
      pool_thread_slot = no_pool_index;
      return no_pool_index;
    }
  }

  void add(pool_core_base* pool) {
    std::lock_guard lock(mutex_);
    pools_.push_back(pool);
  }
  // After this returns, no thread_exit call on `pool` is running or will start.
  void remove(pool_core_base* pool) noexcept {
    std::lock_guard lock(mutex_);
    pools_.erase(std::find(pools_.begin(), pools_.end(), pool));
  }

 private:
  struct exit_guard {
    ~exit_guard() { instance().thread_exit(); }
  };

  pool_thread_registry() : used_(max_threads, false) {}

  void thread_exit() noexcept {
    unsigned slot = pool_thread_slot;
    pool_thread_slot = no_pool_index; // later releases on this thread (other thread_locals) bypass caches
    if (slot == 0 || slot == no_pool_index)
      return;
    std::lock_guard lock(mutex_);
    for (pool_core_base* pool : pools_)
      pool->thread_exit(slot - 1);
    used_[slot - 1] = false;
  }

  std::mutex mutex_;
  std::vector<pool_core_base*> pools_;
  std::vector<bool> used_;
};

// The calling thread's index, registering it on first use; no_pool_index when it has none.
inline unsigned pool_thread_index() noexcept {
  unsigned slot = pool_thread_slot;
  if (slot - 1 < pool_thread_registry::max_threads) [[likely]]
    return slot - 1;
  if (slot == 0)
    return pool_thread_registry::instance().register_thread();
  return no_pool_index;
}

} // namespace otlpconc::detail
