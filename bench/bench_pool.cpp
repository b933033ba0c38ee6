// Object pools: acquire + release pairs of a 256-byte object.
//
// Components:
//   pool_same_thread          every thread keeps a window of 32 live objects and replaces the
//                             oldest each iteration (acquire one, release one, same thread)
//   pool_same_thread_burst    every thread acquires 64 objects, then releases them in order
//   pool_producer_consumer    threads in pairs: the producer acquires 32 objects and hands them
//                             over a single-producer single-consumer channel, the consumer releases
//                             them (every release on another thread than its acquire; 1 thread
//                             plays both roles with two batches in flight)
// Implementations:
//   new_delete                 new / delete (glibc malloc)
//   object_pool                otlpconc::object_pool (magazines, NUMA-homed slabs)
//   boost_object_pool_mutex    boost::object_pool behind a std::mutex (it is not thread-safe)
//   tbb_scalable_allocator     oneTBB's tbbmalloc (scalable_allocator), when installed
// Items: acquire + release pairs, all threads together.
#include "bench_common.hpp"
#include "otlpconc/cache_padded.hpp"
#include "otlpconc/object_pool.hpp"

#include <boost/pool/object_pool.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(OTLPCONC_BENCH_HAVE_TBB)
#include <tbb/scalable_allocator.h>
#endif

namespace {

struct object {
  explicit object(std::uint64_t id_) : id(id_) { payload[0] = static_cast<char>(id_); }
  std::uint64_t id;
  char payload[248];
};
static_assert(sizeof(object) == 256);

// Each implementation: acquire(id) -> handle, release(handle); handle is movable.
struct new_delete {
  using handle = object*;
  handle acquire(std::uint64_t id) { return new object(id); }
  void release(handle p) { delete p; }
};

struct pool_ours {
  using handle = otlpconc::pooled_ptr<object>;
  otlpconc::object_pool<object> pool;
  handle acquire(std::uint64_t id) { return pool.acquire(id); }
  void release(handle p) { p.reset(); }
};

struct boost_pool_mutex {
  using handle = object*;
  std::mutex mutex;
  boost::object_pool<object> pool;
  handle acquire(std::uint64_t id) {
    std::lock_guard lock(mutex);
    return pool.construct(id);
  }
  void release(handle p) {
    std::lock_guard lock(mutex);
    pool.destroy(p);
  }
};

#if defined(OTLPCONC_BENCH_HAVE_TBB)
struct tbb_scalable {
  using handle = object*;
  tbb::scalable_allocator<object> alloc;
  handle acquire(std::uint64_t id) {
    object* p = alloc.allocate(1);
    return ::new (static_cast<void*>(p)) object(id);
  }
  void release(handle p) {
    p->~object();
    alloc.deallocate(p, 1);
  }
};
#endif

template <class Impl>
struct shared {
  static inline std::unique_ptr<Impl> impl;
};

void keep(const object& o) {
  benchmark::DoNotOptimize(o.id);
}

template <class Impl>
void same_thread(benchmark::State& state) {
  using handle = typename Impl::handle;
  if (state.thread_index() == 0)
    shared<Impl>::impl = std::make_unique<Impl>();
  Impl* impl = nullptr;
  std::array<handle, 32> window{};
  std::size_t at = 0;
  std::uint64_t id = 0;
  for (auto _ : state) {
    if (impl == nullptr) { // first iteration: the harness started every thread after setup
      impl = shared<Impl>::impl.get();
      for (auto& h : window)
        h = impl->acquire(++id);
    }
    impl->release(std::move(window[at]));
    window[at] = impl->acquire(++id);
    keep(*window[at]);
    at = (at + 1) % window.size();
  }
  for (auto& h : window)
    impl->release(std::move(h));
  state.SetItemsProcessed(state.iterations());
}

// A bounded single-producer single-consumer channel.
template <class T, std::size_t size>
class spsc_channel {
 public:
  bool try_push(T& v) {
    std::size_t t = tail_->load(std::memory_order_relaxed); // own index
    if (t - head_->load(std::memory_order_acquire) == size) // acquire: pairs with pop's release
      return false;
    slots_[t % size] = std::move(v);
    tail_->store(t + 1, std::memory_order_release); // release: publishes the slot to pop's acquire
    return true;
  }
  bool try_pop(T& out) {
    std::size_t h = head_->load(std::memory_order_relaxed); // own index
    if (h == tail_->load(std::memory_order_acquire))        // acquire: pairs with push's release
      return false;
    out = std::move(slots_[h % size]);
    head_->store(h + 1, std::memory_order_release); // release: the slot may be reused by push
    return true;
  }

 private:
  otlpconc::cache_padded<std::atomic<std::size_t>> head_{std::in_place, std::size_t{0}},
      tail_{std::in_place, std::size_t{0}};
  std::array<T, size> slots_{};
};

// Objects cross threads in batches of 32 (as a pipeline hands over work), so the channel's cache
// line transfers are amortized and the benchmark measures the allocator, not the channel.
constexpr std::size_t handoff_size = 32;
constexpr std::size_t channel_batches = 8;
template <class Impl>
using handoff = std::array<typename Impl::handle, handoff_size>;

template <class Impl>
struct pair_state {
  static inline std::vector<std::unique_ptr<spsc_channel<handoff<Impl>, channel_batches>>> channels;
};

// Threads 2k (producer) and 2k+1 (consumer) form a pair with their own channel. A producer
// acquires and pushes, waiting while the channel is full; its consumer pops, waiting while it is
// empty, and releases. Both run the same number of iterations, so neither waits forever. One
// thread alone plays both roles: it keeps 64 objects in flight and releases them in FIFO order.
template <class Impl>
void producer_consumer(benchmark::State& state) {
  const auto me = static_cast<std::size_t>(state.thread_index());
  const auto n = static_cast<std::size_t>(state.threads());
  if (me == 0) {
    shared<Impl>::impl = std::make_unique<Impl>();
    pair_state<Impl>::channels.clear();
    for (std::size_t i = 0; i < (n + 1) / 2; ++i)
      pair_state<Impl>::channels.push_back(std::make_unique<spsc_channel<handoff<Impl>, channel_batches>>());
  }
  const bool alone = n == 1;
  const bool producer = alone || me % 2 == 0;
  Impl* impl = nullptr;
  spsc_channel<handoff<Impl>, channel_batches>* channel = nullptr;
  std::uint64_t id = 0;
  std::size_t in_flight = 0;
  handoff<Impl> batch{};
  auto release_all = [&] {
    for (auto& h : batch) {
      keep(*h);
      impl->release(std::move(h));
    }
  };
  for (auto _ : state) {   // one iteration: one batch of handoff_size objects
    if (impl == nullptr) { // first iteration: every thread starts after thread 0's setup
      impl = shared<Impl>::impl.get();
      channel = pair_state<Impl>::channels[me / 2].get();
    }
    if (producer) {
      for (auto& h : batch)
        h = impl->acquire(++id);
      while (!channel->try_push(batch))
        std::this_thread::yield();
      if (alone && ++in_flight > 2) { // alone: two batches in flight, released in FIFO order
        channel->try_pop(batch);
        release_all();
        --in_flight;
      }
    } else {
      while (!channel->try_pop(batch))
        std::this_thread::yield();
      release_all();
    }
  }
  if (alone)
    while (channel->try_pop(batch))
      release_all();
  // Pairs: counted once, by the producer.
  state.SetItemsProcessed(producer ? state.iterations() * static_cast<std::int64_t>(handoff_size) : 0);
}

// Bursts: acquire 64 objects, then release them in the same order (a batch's lifecycle).
template <class Impl>
void burst(benchmark::State& state) {
  using handle = typename Impl::handle;
  if (state.thread_index() == 0)
    shared<Impl>::impl = std::make_unique<Impl>();
  Impl* impl = nullptr;
  std::array<handle, 64> batch{};
  std::uint64_t id = 0;
  for (auto _ : state) {
    if (impl == nullptr)
      impl = shared<Impl>::impl.get();
    for (auto& h : batch)
      h = impl->acquire(++id);
    for (auto& h : batch) {
      keep(*h);
      impl->release(std::move(h));
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch.size()));
}

template <class Impl>
void add(const char* impl_name) {
  for (int threads : {1, 2, 4}) {
    benchmark::RegisterBenchmark((std::string("pool_same_thread/") + impl_name).c_str(), same_thread<Impl>)
        ->Threads(threads)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("pool_same_thread_burst/") + impl_name).c_str(), burst<Impl>)
        ->Threads(threads)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("pool_producer_consumer/") + impl_name).c_str(), producer_consumer<Impl>)
        ->Threads(threads)
        ->UseRealTime();
  }
}

void register_all() {
  add<new_delete>("new_delete");
  add<pool_ours>("object_pool");
  add<boost_pool_mutex>("boost_object_pool_mutex");
  std::string missing;
#if defined(OTLPCONC_BENCH_HAVE_TBB)
  add<tbb_scalable>("tbb_scalable_allocator");
#else
  missing += " tbb(libtbb-dev)";
#endif
  benchmark::AddCustomContext("peers_missing", missing.empty() ? "none" : missing);
}

[[maybe_unused]] const int registered = (register_all(), 0);

} // namespace

OTLPCONC_BENCHMARK_MAIN()
