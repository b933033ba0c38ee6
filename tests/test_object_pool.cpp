#include "otlpconc/object_pool.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <ctime>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using otlpconc::object_pool;
using otlpconc::object_pool_options;
using otlpconc::pool_exhausted;
using otlpconc::pool_limit_policy;
using otlpconc::pooled_ptr;
using otlpconc::slab_binding;
using otlpconc::topology;

namespace {

std::atomic<int> live_objects{0};

struct tracked {
  explicit tracked(int v, bool fail = false) : value(v) {
    if (fail)
      throw std::runtime_error("constructor failed");
    live_objects.fetch_add(1, std::memory_order_relaxed);
  }
  tracked(const tracked&) = delete;
  ~tracked() { live_objects.fetch_sub(1, std::memory_order_relaxed); }
  int value;
  char payload[200] = {};
};

// The node each test thread claims to run on (see options.node_of_thread).
thread_local unsigned fake_node = 0;

object_pool_options on_synthetic(const topology& t) {
  object_pool_options o;
  o.topo = &t;
  o.binding = slab_binding::none;
  o.node_of_thread = [] { return fake_node; };
  o.magazine_size = 8;
  o.objects_per_slab = 32;
  return o;
}

} // namespace

TEST_CASE("object_pool: acquire constructs, release destroys, slots are reused", "[object_pool]") {
  STATIC_REQUIRE(sizeof(pooled_ptr<tracked>) == sizeof(void*));
  object_pool<tracked> pool;
  {
    auto a = pool.acquire(7);
    REQUIRE(a->value == 7);
    REQUIRE(live_objects == 1);
    tracked* first = a.get();
    a.reset();
    REQUIRE(live_objects == 0);
    auto b = pool.acquire(8);
    REQUIRE(b.get() == first); // last released, first reused (the thread's magazine)
    REQUIRE(b->value == 8);
  }
  REQUIRE(live_objects == 0);
  std::vector<pooled_ptr<tracked>> many;
  for (int i = 0; i < 1000; ++i)
    many.push_back(pool.acquire(i));
  std::set<tracked*> distinct;
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(many[static_cast<std::size_t>(i)]->value == i);
    distinct.insert(many[static_cast<std::size_t>(i)].get());
  }
  REQUIRE(distinct.size() == 1000);
  auto st = pool.stats();
  REQUIRE(st.in_use == 1000);
  REQUIRE(st.acquired == 1002);
  REQUIRE(st.released == 2);
  REQUIRE(st.capacity >= 1000);
  REQUIRE(st.capacity < 1000 + pool.objects_per_slab());
  REQUIRE(st.cache_misses < 100); // refills: one per magazine
  many.clear();
  REQUIRE(live_objects == 0);
  REQUIRE(pool.stats().in_use == 0);
  // Reacquiring the same number allocates nothing new.
  for (int i = 0; i < 1000; ++i)
    many.push_back(pool.acquire(i));
  REQUIRE(pool.stats().capacity == st.capacity);
}

TEST_CASE("object_pool: a throwing constructor keeps the slot", "[object_pool]") {
  object_pool_options o;
  o.max_objects = 1;
  object_pool<tracked> pool(o);
  REQUIRE_THROWS_WITH(pool.acquire(1, true), "constructor failed");
  REQUIRE(live_objects == 0);
  auto p = pool.acquire(2); // the only slot came back
  REQUIRE(p);
  REQUIRE(pool.stats().acquired == 2); // the failed construction's slot was handed out and returned
  REQUIRE(pool.stats().released == 1);
  REQUIRE(pool.stats().in_use == 1);
}

TEST_CASE("object_pool: over-aligned types are aligned", "[object_pool]") {
  struct alignas(128) wide {
    char bytes[130];
  };
  object_pool<wide> pool;
  std::vector<pooled_ptr<wide>> v;
  for (int i = 0; i < 300; ++i) {
    v.push_back(pool.acquire());
    REQUIRE(reinterpret_cast<std::uintptr_t>(v.back().get()) % 128 == 0);
  }
}

TEST_CASE("object_pool: limit policies fail, throw and try_acquire", "[object_pool]") {
  object_pool_options o;
  o.max_objects = 10;
  o.magazine_size = 4;
  object_pool<tracked> fail_pool(o);
  std::vector<pooled_ptr<tracked>> held;
  for (int i = 0; i < 10; ++i)
    held.push_back(fail_pool.acquire(i));
  REQUIRE_FALSE(fail_pool.acquire(10));
  REQUIRE(fail_pool.stats().exhausted == 1);
  REQUIRE(fail_pool.stats().capacity == 10);
  held.pop_back();
  REQUIRE(fail_pool.acquire(11));

  o.on_limit = pool_limit_policy::throw_exception;
  object_pool<tracked> throw_pool(o);
  std::vector<pooled_ptr<tracked>> held2;
  for (int i = 0; i < 10; ++i)
    held2.push_back(throw_pool.acquire(i));
  REQUIRE_THROWS_AS(throw_pool.acquire(10), pool_exhausted);
  REQUIRE_THROWS_WITH(throw_pool.acquire(10), Catch::Contains("max_objects"));
  REQUIRE_FALSE(throw_pool.try_acquire(10));
  REQUIRE(live_objects == 19); // 9 + 10: the 11th above was released at once
}

TEST_CASE("object_pool: at the limit, slots cached by an idle thread are reclaimed", "[object_pool]") {
  object_pool_options o;
  o.max_objects = 40;
  o.magazine_size = 32;
  object_pool<tracked> pool(o);
  std::promise<void> cached, done;
  std::thread idle([&] {
    std::vector<pooled_ptr<tracked>> v;
    for (int i = 0; i < 40; ++i)
      v.push_back(pool.acquire(i));
    v.clear(); // all 40 go to this thread's cache (and the node list once a magazine is full)
    cached.set_value();
    done.get_future().wait(); // alive, idle, holding its cache
  });
  cached.get_future().wait();
  std::vector<pooled_ptr<tracked>> mine;
  for (int i = 0; i < 40; ++i) {
    mine.push_back(pool.acquire(i));
    REQUIRE(mine.back());
  }
  REQUIRE_FALSE(pool.acquire(41));
  REQUIRE(pool.stats().capacity == 40);
  done.set_value();
  idle.join();
}

TEST_CASE("object_pool: the wait policy wakes on a release into the releaser's cache", "[object_pool]") {
  object_pool_options o;
  o.max_objects = 4;
  o.on_limit = pool_limit_policy::wait;
  object_pool<tracked> pool(o);
  std::vector<pooled_ptr<tracked>> held;
  for (int i = 0; i < 4; ++i)
    held.push_back(pool.acquire(i));
  auto waiter = std::async(std::launch::async, [&] { return pool.acquire(99)->value; });
  REQUIRE(waiter.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  held.pop_back(); // lands in this thread's magazine, which is not empty
  bool woke = waiter.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  if (!woke)
    pool.flush_thread_cache(); // let the waiter finish so the test can report instead of hanging
  REQUIRE(woke);
  REQUIRE(waiter.get() == 99);
  REQUIRE(pool.stats().exhausted >= 1);
}

TEST_CASE("object_pool: a waiter sleeps, it does not spin", "[object_pool]") {
  object_pool_options o;
  o.max_objects = 2;
  o.on_limit = pool_limit_policy::wait;
  object_pool<tracked> pool(o);
  auto a = pool.acquire(1);
  auto b = pool.acquire(2);
  std::atomic<double> waiter_cpu_ms{-1};
  std::thread waiter([&] {
    timespec t0{}, t1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    auto p = pool.acquire(3);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    waiter_cpu_ms =
        static_cast<double>(t1.tv_sec - t0.tv_sec) * 1e3 + static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e6;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  a.reset();
  waiter.join();
  INFO("CPU used by the waiting thread over 500 ms: " << waiter_cpu_ms.load() << " ms");
  REQUIRE(waiter_cpu_ms.load() >= 0);
  REQUIRE(waiter_cpu_ms.load() < 100);
}

TEST_CASE("object_pool: a node hook that throws on a releasing thread loses nothing", "[object_pool]") {
  object_pool_options o;
  o.node_of_thread = [] {
    if (fake_node == 7)
      throw std::runtime_error("no node for this thread");
    return 0u;
  };
  object_pool<tracked> pool(o);
  std::vector<pooled_ptr<tracked>> v;
  for (int i = 0; i < 100; ++i)
    v.push_back(pool.acquire(i));
  std::thread([&] {
    fake_node = 7; // this thread cannot get a cache: its releases bypass it (ASan: no leak)
    v.clear();
    REQUIRE_THROWS_WITH(pool.acquire(1), "no node for this thread");
  }).join();
  REQUIRE(live_objects == 0);
  auto st = pool.stats();
  REQUIRE(st.released == 100);
  REQUIRE(st.in_use == 0);
  for (int i = 0; i < 100; ++i)
    v.push_back(pool.acquire(i));
  REQUIRE(pool.stats().capacity == st.capacity); // the 100 came back
}

TEST_CASE("object_pool: a thread's cache returns to the pool when it exits", "[object_pool]") {
  object_pool_options o;
  o.magazine_size = 16;
  o.objects_per_slab = 64;
  object_pool<tracked> pool(o);
  std::thread([&] {
    std::vector<pooled_ptr<tracked>> v;
    for (int i = 0; i < 30; ++i)
      v.push_back(pool.acquire(i));
  }).join(); // 30 released into the thread's magazines, then it exits
  REQUIRE(pool.stats().capacity == 64);
  std::vector<pooled_ptr<tracked>> mine;
  for (int i = 0; i < 64; ++i)
    mine.push_back(pool.acquire(i));
  REQUIRE(pool.stats().capacity == 64); // nothing was lost in the dead thread's cache
  REQUIRE(pool.stats().slabs_per_node == std::vector<std::size_t>{1});
}

TEST_CASE("object_pool: destroying the pool with objects out is defined", "[object_pool]") {
  auto pool = std::make_unique<object_pool<tracked>>();
  auto a = pool->acquire(1);
  auto b = pool->acquire(2);
  std::vector<pooled_ptr<tracked>> returned;
  for (int i = 0; i < 50; ++i)
    returned.push_back(pool->acquire(i));
  returned.clear();
  pool.reset();
  REQUIRE(live_objects == 2);
  REQUIRE(a->value == 1);                 // the storage outlives the pool
  std::thread([&] { b.reset(); }).join(); // released on another thread: no cache of a closed pool
  a.reset();                              // the last one frees the pool's memory (ASan checks)
  REQUIRE(live_objects == 0);

  auto empty_pool = std::make_unique<object_pool<tracked>>();
  { auto c = empty_pool->acquire(3); }
  empty_pool.reset(); // everything home: freed at once
}

TEST_CASE("object_pool: bad options and a bad node hook are reported", "[object_pool]") {
  object_pool_options o;
  o.magazine_size = std::size_t{1} << 21;
  REQUIRE_THROWS_AS(object_pool<tracked>(o), std::invalid_argument);
  o = {};
  o.objects_per_slab = std::size_t{1} << 40;
  REQUIRE_THROWS_WITH(object_pool<tracked>(o), Catch::Contains("objects_per_slab"));
  o = {};
  o.node_of_thread = [] { return 5u; };
  object_pool<tracked> pool(o);
  REQUIRE_THROWS_AS(pool.acquire(1), std::out_of_range);
  REQUIRE(live_objects == 0);
}

TEST_CASE("object_pool: slabs are placed on the node asked for (hwloc_get_area_memlocation)", "[object_pool]") {
  const topology& t = topology::system();
  for (unsigned node = 0; node < t.numa_nodes(); ++node) {
    object_pool_options o;
    o.binding = slab_binding::strict;
    o.node_of_thread = [node] { return node; };
    object_pool<tracked> pool(o);
    std::vector<pooled_ptr<tracked>> v;
    for (std::size_t i = 0; i < 3 * pool.objects_per_slab(); ++i)
      v.push_back(pool.acquire(static_cast<int>(i)));
    REQUIRE(pool.stats().slabs_per_node[node] == 3);
    REQUIRE(pool.stats().unbound_slabs == 0);
    // Every page of every slab holds slots, so checking every object checks every page. Where the
    // pages live says nothing on a one-node machine (everything is on node 0): the binding itself
    // is checked too, which unbound memory fails there as well.
    for (auto& p : v) {
      REQUIRE(object_pool<tracked>::node_of(p.get()) == node);
      REQUIRE(t.nodes_of(p.get(), sizeof(tracked)) == std::vector<unsigned>{node});
      if (topology::hwloc_enabled) {
        const auto b = t.binding_of(p.get(), sizeof(tracked));
        REQUIRE(b.bound);
        REQUIRE(b.nodes == std::vector<unsigned>{node});
      }
    }
  }
}

TEST_CASE("object_pool: on a synthetic two-node machine, objects stay with their home node", "[object_pool]") {
  if (!topology::hwloc_enabled)
    return;
  topology t = topology::synthetic("pack:2 numa:1 core:2 pu:1");
  object_pool<tracked> pool(on_synthetic(t));
  auto acquire_on = [&](unsigned node, int n) {
    std::vector<pooled_ptr<tracked>> v;
    std::thread([&] {
      fake_node = node;
      for (int i = 0; i < n; ++i)
        v.push_back(pool.acquire(i));
    }).join();
    return v;
  };
  auto on0 = acquire_on(0, 100);
  auto on1 = acquire_on(1, 100);
  for (auto& p : on0)
    REQUIRE(object_pool<tracked>::node_of(p.get()) == 0);
  for (auto& p : on1)
    REQUIRE(object_pool<tracked>::node_of(p.get()) == 1);
  auto st = pool.stats();
  REQUIRE(st.slabs_per_node == std::vector<std::size_t>{4, 4}); // 100 objects, 32 per slab
  REQUIRE(st.capacity == 256);

  // Node 0's objects released by a thread on node 1 go home, not into node 1's cache.
  std::thread([&] {
    fake_node = 1;
    on0.clear();
  }).join();
  REQUIRE(pool.stats().remote_releases == 100);
  // A node-1 thread now gets only node-1 objects: node 1's 28 free slots, then one new slab.
  auto more1 = acquire_on(1, 60);
  for (auto& p : more1)
    REQUIRE(object_pool<tracked>::node_of(p.get()) == 1);
  REQUIRE(pool.stats().slabs_per_node == std::vector<std::size_t>{4, 5});
  // And a node-0 thread finds node 0's 100 released objects at home: no growth.
  auto again0 = acquire_on(0, 128);
  for (auto& p : again0)
    REQUIRE(object_pool<tracked>::node_of(p.get()) == 0);
  REQUIRE(pool.stats().slabs_per_node == std::vector<std::size_t>{4, 5});
}

TEST_CASE("object_pool: binding on a machine that cannot bind", "[object_pool]") {
  if (!topology::hwloc_enabled)
    return;
  topology t = topology::synthetic("pack:2 numa:1 core:2 pu:1");
  object_pool_options o = on_synthetic(t);
  o.binding = slab_binding::strict;
  object_pool<tracked> strict(o);
  REQUIRE_THROWS_AS(strict.acquire(1), otlpconc::topology_error); // never silently unbound
  REQUIRE(strict.stats().capacity == 0);
  o.binding = slab_binding::best_effort;
  object_pool<tracked> relaxed(o);
  auto p = relaxed.acquire(1);
  REQUIRE(p->value == 1);
  REQUIRE(relaxed.stats().unbound_slabs == 1);
}
