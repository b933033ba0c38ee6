#include "otlpconc/topology.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

using otlpconc::topology;
using otlpconc::topology_error;

namespace {

int error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const topology_error& e) {
    return e.code().value();
  }
  return 0;
}

} // namespace

TEST_CASE("topology: the system's nodes partition its CPUs", "[topology]") {
  const topology& t = topology::system();
  REQUIRE(&t == &topology::system()); // loaded once, shared
  REQUIRE(t.is_this_system());
  REQUIRE(t.numa_nodes() >= 1);
  REQUIRE(t.cores() >= 1);
  REQUIRE(t.pus() >= t.cores());
  std::set<unsigned> seen;
  for (unsigned n = 0; n < t.numa_nodes(); ++n)
    for (unsigned cpu : t.cpus_of_node(n)) {
      REQUIRE(t.node_of_cpu(cpu) <= n); // first node holding it
      seen.insert(cpu);
    }
  for (unsigned c = 0; c < t.cores(); ++c)
    for (unsigned cpu : t.cpus_of_core(c))
      REQUIRE(seen.count(cpu) == 1);
  REQUIRE(t.current_node() < t.numa_nodes());
  REQUIRE(seen.count(topology::current_cpu()) == 1);
  if (!topology::hwloc_enabled) {
    REQUIRE(t.numa_nodes() == 1);
  }
}

TEST_CASE("topology: indexes that do not exist are rejected", "[topology]") {
  const topology& t = topology::system();
  REQUIRE_THROWS_AS(t.cpus_of_node(t.numa_nodes()), std::out_of_range);
  REQUIRE_THROWS_AS(t.cpus_of_core(t.cores()), std::out_of_range);
  REQUIRE_THROWS_AS(t.node_of_cpu(1u << 20), std::out_of_range);
  REQUIRE_THROWS_AS(t.pin_thread_to_node(t.numa_nodes()), std::out_of_range);
  REQUIRE_THROWS_AS(t.pin_thread_to_core(t.cores()), std::out_of_range);
  REQUIRE_THROWS_AS(t.allocate_on_node(4096, t.numa_nodes()), std::out_of_range);
  REQUIRE_THROWS_WITH(t.cpus_of_node(99), Catch::Contains("node 99 does not exist"));
}

TEST_CASE("topology: memory bound to a node lives on that node", "[topology]") {
  const topology& t = topology::system();
  for (unsigned n = 0; n < t.numa_nodes(); ++n) {
    const std::size_t bytes = 1 << 20;
    void* p = t.allocate_on_node(bytes, n);
    REQUIRE(reinterpret_cast<std::uintptr_t>(p) % topology::page_size() == 0);
    std::memset(p, 0x5a, bytes); // places the pages
    auto nodes = t.nodes_of(p, bytes);
    REQUIRE(nodes == std::vector<unsigned>{n});
    t.deallocate(p, bytes);
  }
  void* q = t.allocate(12345);
  std::memset(q, 1, 12345);
  REQUIRE(!t.nodes_of(q, 12345).empty());
  if (topology::hwloc_enabled) {
    REQUIRE_FALSE(t.binding_of(q, 12345).bound); // placed somewhere, but not bound: the check can fail
    for (unsigned n = 0; n < t.numa_nodes(); ++n) {
      void* p = t.allocate_on_node(4096, n);
      const auto b = t.binding_of(p, 4096);
      REQUIRE(b.bound);
      REQUIRE(b.nodes == std::vector<unsigned>{n});
      t.deallocate(p, 4096);
    }
  } else {
    REQUIRE_THROWS_AS(t.binding_of(q, 12345), otlpconc::topology_error);
  }
  t.deallocate(q, 12345);
}

TEST_CASE("topology: pinning moves the thread onto the core and back", "[topology]") {
  const topology& t = topology::system();
  std::vector<unsigned> ran_on;
  std::thread worker([&] { // a thread of its own: the test runner's affinity stays untouched
    for (unsigned c = 0; c < t.cores(); ++c) {
      t.pin_thread_to_core(c);
      for (int i = 0; i < 3; ++i) {
        std::this_thread::yield();
        unsigned cpu = topology::current_cpu();
        const auto& cpus = t.cpus_of_core(c);
        ran_on.push_back(std::find(cpus.begin(), cpus.end(), cpu) != cpus.end() ? 1u : 0u);
      }
    }
    t.pin_thread_to_node(0);
    unsigned cpu = topology::current_cpu();
    ran_on.push_back(t.node_of_cpu(cpu) == 0 ? 1u : 0u);
    t.unpin_thread();
  });
  worker.join();
  REQUIRE(ran_on.size() == 3 * t.cores() + 1);
  REQUIRE(std::count(ran_on.begin(), ran_on.end(), 1u) == static_cast<long>(ran_on.size()));
}

TEST_CASE("topology: a synthetic machine describes its nodes but binds nothing", "[topology]") {
  if (!topology::hwloc_enabled) {
    REQUIRE(error_of([] { (void)topology::synthetic("pack:2 numa:1 core:2 pu:1"); }) == ENOSYS);
    return;
  }
  topology t = topology::synthetic("pack:2 numa:1 core:2 pu:1");
  REQUIRE_FALSE(t.is_this_system());
  REQUIRE(t.numa_nodes() == 2);
  REQUIRE(t.cores() == 4);
  REQUIRE(t.pus() == 4);
  REQUIRE(t.cpus_of_node(0) == std::vector<unsigned>{0, 1});
  REQUIRE(t.cpus_of_node(1) == std::vector<unsigned>{2, 3});
  REQUIRE(t.cpus_of_core(3) == std::vector<unsigned>{3});
  REQUIRE(t.node_of_cpu(1) == 0);
  REQUIRE(t.node_of_cpu(2) == 1);
  // hwloc would silently "succeed" at binding on a topology that is not this machine's: we refuse.
  REQUIRE(error_of([&] { (void)t.allocate_on_node(4096, 1); }) == ENOSYS);
  REQUIRE(error_of([&] { t.pin_thread_to_core(0); }) == ENOSYS);
  REQUIRE(error_of([&] { (void)t.current_node(); }) == ENOSYS);
  REQUIRE(error_of([&] { (void)t.nodes_of(&t, 1); }) == ENOSYS);
  void* p = t.allocate(100); // no placement promised: allowed
  REQUIRE(p != nullptr);
  t.deallocate(p, 100);

  topology moved = std::move(t);
  REQUIRE(moved.numa_nodes() == 2);
  topology bigger = topology::synthetic("numa:4 core:2 pu:2");
  REQUIRE(bigger.numa_nodes() == 4);
  REQUIRE(bigger.pus() == 16);
  REQUIRE(bigger.node_of_cpu(15) == 3);
  moved = std::move(bigger);
  REQUIRE(moved.numa_nodes() == 4);
}

TEST_CASE("topology: a malformed synthetic description is rejected", "[topology]") {
  if (!topology::hwloc_enabled)
    return;
  REQUIRE_THROWS_AS(topology::synthetic("bogus:3"), std::invalid_argument);
  REQUIRE_THROWS_WITH(topology::synthetic(""), Catch::Contains("rejects the description"));
}
