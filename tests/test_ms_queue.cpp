#include "counting_allocator.hpp"
#include "lin_check.hpp"
#include "otlpconc/ms_queue.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using otlpconc::ms_queue;
using otlpconc::testing::counting_allocator;
using otlpconc::testing::is_linearizable;
using otlpconc::testing::queue_model;
using otlpconc::testing::queue_op;

namespace {

struct counted {
  static inline std::atomic<int> alive{0};
  int v;
  explicit counted(int x) : v(x) { alive.fetch_add(1); }
  counted(counted&& o) noexcept : v(o.v) { alive.fetch_add(1); }
  counted& operator=(counted&& o) noexcept {
    v = o.v;
    return *this;
  }
  ~counted() { alive.fetch_sub(1); }
};

struct no_default {
  explicit no_default(int x) : v(x) {}
  int v;
};

struct throws_on_construct {
  explicit throws_on_construct(bool fail) {
    if (fail)
      throw std::runtime_error("constructor failed");
  }
};

} // namespace

TEST_CASE("ms_queue: FIFO in one thread", "[ms_queue]") {
  ms_queue<int> q;
  REQUIRE(q.empty());
  REQUIRE_FALSE(q.try_pop().has_value());
  for (int i = 0; i < 1000; ++i)
    q.push(i);
  REQUIRE_FALSE(q.empty());
  for (int i = 0; i < 1000; ++i) {
    auto v = q.try_pop();
    REQUIRE(v.has_value());
    REQUIRE(*v == i);
  }
  REQUIRE(q.empty());
  int out = -1;
  REQUIRE_FALSE(q.try_pop(out));
  REQUIRE(out == -1);
  q.emplace(5);
  REQUIRE(q.try_pop(out));
  REQUIRE(out == 5);
}

TEST_CASE("ms_queue: strings, move-only and non-default-constructible types", "[ms_queue]") {
  ms_queue<std::string> strings;
  const std::string long_text(100, 'x');
  strings.push(long_text);
  strings.push(std::string("short"));
  strings.emplace(3, 'z');
  REQUIRE(*strings.try_pop() == long_text);
  REQUIRE(*strings.try_pop() == "short");
  REQUIRE(*strings.try_pop() == "zzz");

  ms_queue<std::unique_ptr<int>> ptrs;
  ptrs.push(std::make_unique<int>(42));
  auto p = ptrs.try_pop();
  REQUIRE(p.has_value());
  REQUIRE(**p == 42);

  ms_queue<no_default> nd;
  nd.emplace(9);
  auto v = nd.try_pop();
  REQUIRE(v->v == 9);
}

TEST_CASE("ms_queue: a throwing constructor leaves the queue unchanged", "[ms_queue]") {
  using queue = ms_queue<throws_on_construct, counting_allocator<throws_on_construct>>;
  queue q;
  otlpconc::hazard_pointer_clean_up(); // nodes retired by earlier tests in this process are freed now
  queue::release_cached_nodes();
  const auto nodes_before = otlpconc::testing::live_allocations.load();
  q.emplace(false);
  REQUIRE_THROWS_AS(q.emplace(true), std::runtime_error);
  queue::release_cached_nodes(); // the failed node may sit in the node cache: give it back
  REQUIRE(otlpconc::testing::live_allocations.load() == nodes_before + 1); // no leaked node
  REQUIRE(q.try_pop().has_value());
  REQUIRE_FALSE(q.try_pop().has_value());
}

TEST_CASE("ms_queue: values are destroyed promptly and exactly once", "[ms_queue]") {
  REQUIRE(counted::alive.load() == 0);
  {
    ms_queue<counted> q;
    for (int i = 0; i < 10; ++i)
      q.emplace(i);
    REQUIRE(counted::alive.load() == 10);
    {
      auto v = q.try_pop();
      REQUIRE(v->v == 0);
      // The node's copy is already destroyed: only the 9 queued and the one we hold are alive,
      // even though the node itself is retired, not reclaimed.
      REQUIRE(counted::alive.load() == 10);
    }
    REQUIRE(counted::alive.load() == 9);
    counted out(-1);
    REQUIRE(q.try_pop(out));
    REQUIRE(out.v == 1);
    REQUIRE(counted::alive.load() == 9); // 8 queued + out
  }
  // The destructor destroyed the 8 remaining values; `out` is gone too.
  REQUIRE(counted::alive.load() == 0);
}

TEST_CASE("ms_queue: nodes are recycled, bounded and really freed", "[ms_queue]") {
  using alloc = counting_allocator<int>;
  using queue = ms_queue<int, alloc>;
  using otlpconc::testing::live_allocations;
  using otlpconc::testing::total_allocations;
  STATIC_REQUIRE(queue::node_cache_per_thread >= 16);
  STATIC_REQUIRE(queue::node_cache_shared >= queue::node_cache_per_thread);
  otlpconc::hazard_pointer_clean_up(); // nodes retired by earlier tests in this process are freed now
  queue::release_cached_nodes();
  const auto before = live_allocations.load();
  const auto allocated_before = total_allocations.load();
  constexpr int rounds = 10, per_round = 1000;
  {
    queue q;
    for (int round = 0; round < rounds; ++round) {
      for (int i = 0; i < per_round; ++i)
        q.push(i);
      for (int i = 0; i < per_round; ++i)
        REQUIRE(q.try_pop().has_value());
      otlpconc::hazard_pointer_clean_up(); // reclaimed nodes go to this thread's cache and the stash
      const auto cached = live_allocations.load() - before - 1;
      REQUIRE(cached >= 0);
      REQUIRE(static_cast<std::size_t>(cached) <= queue::node_cache_per_thread + queue::node_cache_shared);
    }
    // Without recycling every push allocates (rounds * per_round); the cache keeps up to
    // node_cache_per_thread + node_cache_shared nodes, so later rounds allocate far fewer.
    const auto allocated = total_allocations.load() - allocated_before;
    INFO("allocations " << allocated);
    REQUIRE(allocated < rounds * per_round / 2);
    queue::release_cached_nodes();
    REQUIRE(live_allocations.load() == before + 1); // only the dummy node
  }
  // The destructor's free of the dummy went to the cache.
  queue::release_cached_nodes();
  REQUIRE(live_allocations.load() == before);
}

TEST_CASE("ms_queue: a stateful allocator turns the node cache off", "[ms_queue]") {
  using queue = ms_queue<int, otlpconc::testing::stateful_counting_allocator<int>>;
  STATIC_REQUIRE(queue::node_cache_per_thread == 0);
  STATIC_REQUIRE(queue::node_cache_shared == 0);
  otlpconc::hazard_pointer_clean_up();
  const auto before = otlpconc::testing::live_allocations.load();
  {
    queue q;
    for (int i = 0; i < 500; ++i)
      q.push(i);
    for (int i = 0; i < 500; ++i)
      REQUIRE(q.try_pop() == i);
    otlpconc::hazard_pointer_clean_up();
    REQUIRE(otlpconc::testing::live_allocations.load() == before + 1); // freed at reclamation, not cached
  }
  REQUIRE(otlpconc::testing::live_allocations.load() == before);
}

TEST_CASE("ms_queue: an allocation failure in emplace leaves the queue unchanged", "[ms_queue]") {
  using alloc = otlpconc::testing::failing_allocator<counted>;
  {
    ms_queue<counted, alloc> q;
    q.emplace(1);
    otlpconc::testing::fail_allocations = true;
    REQUIRE_THROWS_AS(q.emplace(2), std::bad_alloc);
    REQUIRE_THROWS_AS(q.push(counted(3)), std::bad_alloc);
    otlpconc::testing::fail_allocations = false;
    REQUIRE(counted::alive.load() == 1); // the failed pushes left nothing behind
    q.emplace(4);
    REQUIRE(q.try_pop()->v == 1);
    REQUIRE(q.try_pop()->v == 4);
    REQUIRE(q.empty());
  }
  REQUIRE(counted::alive.load() == 0);
}

TEST_CASE("ms_queue: a queue on its own domain frees everything when queue and domain go", "[ms_queue]") {
  using queue = ms_queue<counted, counting_allocator<counted>>;
  using otlpconc::testing::live_allocations;
  otlpconc::hazard_pointer_clean_up();
  queue::release_cached_nodes();
  const auto before = live_allocations.load();
  const auto default_retired = otlpconc::hazard_pointer_default_domain().stats().retired;
  {
    otlpconc::hazard_pointer_domain domain(10000); // no scan during the test: retired nodes accumulate
    {
      queue q(domain);
      for (int i = 0; i < 2000; ++i)
        q.emplace(i);
      for (int i = 0; i < 1500; ++i)
        REQUIRE(q.try_pop()->v == i);
      REQUIRE(domain.stats().retired == 1500);
      REQUIRE(domain.stats().reclaimed == 0);
      REQUIRE(counted::alive.load() == 500); // popped values were destroyed at once, not at reclamation
      REQUIRE(otlpconc::hazard_pointer_default_domain().stats().retired == default_retired);
    }
    REQUIRE(counted::alive.load() == 0); // the queue's destructor destroyed the 500 left
  }                                      // the domain's destructor reclaims the 1500 retired nodes
  queue::release_cached_nodes();
  REQUIRE(live_allocations.load() == before);
}

TEST_CASE("lin_check: accepts legal and rejects illegal queue histories", "[lin_check]") {
  auto push = [](int v, std::uint64_t a, std::uint64_t b) {
    queue_op op;
    op.kind = queue_op::push;
    op.value = v;
    op.invoke = a;
    op.response = b;
    return op;
  };
  auto pop = [](std::optional<int> v, std::uint64_t a, std::uint64_t b) {
    queue_op op;
    op.kind = queue_op::pop;
    op.empty = !v.has_value();
    op.value = v.value_or(0);
    op.invoke = a;
    op.response = b;
    return op;
  };
  // Sequential FIFO.
  REQUIRE(is_linearizable(std::vector{push(1, 0, 1), push(2, 2, 3), pop(1, 4, 5), pop(2, 6, 7)}, queue_model{}));
  // LIFO order is not FIFO.
  REQUIRE_FALSE(is_linearizable(std::vector{push(1, 0, 1), push(2, 2, 3), pop(2, 4, 5)}, queue_model{}));
  // Empty after a completed push with no pop.
  REQUIRE_FALSE(is_linearizable(std::vector{push(1, 0, 1), pop(std::nullopt, 2, 3)}, queue_model{}));
  // Overlapping: the pop may linearize after the push it overlaps, or before it (empty).
  REQUIRE(is_linearizable(std::vector{push(1, 0, 5), pop(1, 1, 2)}, queue_model{}));
  REQUIRE(is_linearizable(std::vector{push(1, 0, 5), pop(std::nullopt, 1, 2)}, queue_model{}));
  // Concurrent pushes may take either order, but two pops must agree with one of them.
  REQUIRE(is_linearizable(std::vector{push(1, 0, 3), push(2, 1, 2), pop(2, 4, 5), pop(1, 6, 7)}, queue_model{}));
  REQUIRE_FALSE(is_linearizable(std::vector{push(1, 0, 1), push(2, 2, 3), pop(2, 4, 5), pop(1, 6, 7)}, queue_model{}));
  // A value popped twice.
  REQUIRE_FALSE(is_linearizable(std::vector{push(1, 0, 1), pop(1, 2, 3), pop(1, 4, 5)}, queue_model{}));
  // empty(): must agree with the model at its linearization point.
  auto empty = [](bool answer, std::uint64_t a, std::uint64_t b) {
    queue_op op;
    op.kind = queue_op::is_empty;
    op.empty = answer;
    op.invoke = a;
    op.response = b;
    return op;
  };
  REQUIRE(is_linearizable(std::vector{empty(true, 0, 1), push(1, 2, 3), empty(false, 4, 5)}, queue_model{}));
  REQUIRE_FALSE(is_linearizable(std::vector{push(1, 0, 1), empty(true, 2, 3)}, queue_model{}));
  REQUIRE_FALSE(is_linearizable(std::vector{empty(false, 0, 1)}, queue_model{}));
  REQUIRE(is_linearizable(std::vector{push(1, 0, 5), empty(true, 1, 2), empty(false, 3, 4)}, queue_model{}));
}

namespace {

// Records `histories` random concurrent histories on fresh queues made by make_queue and returns how
// many were not linearizable.
template <class MakeQueue>
int count_non_linearizable(int histories, int threads, int ops_per_thread, MakeQueue make_queue) {
  std::mt19937 rng(12345);
  int bad = 0;
  for (int h = 0; h < histories; ++h) {
    auto q = make_queue();
    // Half pushes; the rest split between both try_pop forms and empty().
    std::vector<std::vector<queue_op::kind_t>> kind(static_cast<std::size_t>(threads));
    for (auto& v : kind)
      for (int i = 0; i < ops_per_thread; ++i) {
        const auto r = rng() % 20;
        v.push_back(r < 10   ? queue_op::push
                    : r < 14 ? queue_op::pop
                    : r < 17 ? queue_op::pop_into
                             : queue_op::is_empty);
      }
    auto history = otlpconc::testing::record_queue_history(*q, threads, ops_per_thread, [&](int t, int i) {
      return kind[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)];
    });
    if (!is_linearizable(history, queue_model{}))
      ++bad;
  }
  return bad;
}

// Deliberately wrong: a stack that claims to be a queue. The checker must catch it.
struct lifo_impostor {
  std::mutex m;
  std::vector<int> items;
  void push(int v) {
    std::lock_guard lock(m);
    items.push_back(v);
  }
  std::optional<int> try_pop() {
    std::lock_guard lock(m);
    if (items.empty())
      return std::nullopt;
    int v = items.back();
    items.pop_back();
    return v;
  }
  bool try_pop(int& out) {
    auto v = try_pop();
    out = v.value_or(out);
    return v.has_value();
  }
  bool empty() {
    std::lock_guard lock(m);
    return items.empty();
  }
};

} // namespace

TEST_CASE("ms_queue: random concurrent histories are linearizable", "[ms_queue][lin_check]") {
  REQUIRE(count_non_linearizable(600, 3, 5, [] { return std::make_unique<ms_queue<int>>(); }) == 0);
  REQUIRE(count_non_linearizable(300, 4, 4, [] { return std::make_unique<ms_queue<int>>(); }) == 0);
}

TEST_CASE("lin_check: the same harness rejects a LIFO impostor", "[lin_check]") {
  REQUIRE(count_non_linearizable(200, 3, 5, [] { return std::make_unique<lifo_impostor>(); }) > 0);
}
