#include "lin_check.hpp"
#include "otlpconc/chase_lev_deque.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using otlpconc::chase_lev_deque;

TEST_CASE("chase_lev_deque: owner pops LIFO, thieves steal FIFO", "[chase_lev_deque]") {
  chase_lev_deque<int> d;
  REQUIRE(d.empty());
  REQUIRE_FALSE(d.pop().has_value());
  REQUIRE_FALSE(d.steal().has_value());
  for (int i = 0; i < 5; ++i)
    d.push(i);
  REQUIRE(d.size_approx() == 5);
  REQUIRE(d.steal() == 0);
  REQUIRE(d.pop() == 4);
  REQUIRE(d.steal() == 1);
  REQUIRE(d.pop() == 3);
  REQUIRE(d.pop() == 2);
  REQUIRE_FALSE(d.pop().has_value());
  REQUIRE_FALSE(d.steal().has_value());
  REQUIRE(d.empty());
  d.push(7); // usable after running empty through both ends
  REQUIRE(d.steal() == 7);
}

TEST_CASE("chase_lev_deque: capacity is checked and rounded up", "[chase_lev_deque]") {
  REQUIRE_THROWS_AS(chase_lev_deque<int>(0), std::invalid_argument);
  REQUIRE_THROWS_AS(chase_lev_deque<int>(chase_lev_deque<int>::max_capacity + 1), std::length_error);
  REQUIRE(chase_lev_deque<int>(1).capacity() == 2);
  REQUIRE(chase_lev_deque<int>(5).capacity() == 8);
  REQUIRE(chase_lev_deque<int>(64).capacity() == 64);
}

// The growth bug peers shipped: after the array grows, items come back wrong. A single thread with
// capacity 4 interleaving pushes and steals around each growth, and then a long random mix of every
// operation, checked item by item against std::deque.
TEST_CASE("chase_lev_deque: growth keeps every item, across wrap-around", "[chase_lev_deque]") {
  chase_lev_deque<std::uint64_t> d(4);
  std::deque<std::uint64_t> model;
  std::uint64_t next = 0;
  auto push = [&] {
    d.push(next);
    model.push_back(next++);
  };
  auto steal = [&] {
    auto v = d.steal();
    REQUIRE(v.has_value() == !model.empty());
    if (v) {
      REQUIRE(*v == model.front());
      model.pop_front();
    }
  };
  // Advance top so the live range wraps around the array, then grow with it wrapped.
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 3; ++i)
      push();
    steal();
    steal();
  }
  REQUIRE(d.capacity() >= 4);
  for (int i = 0; i < 40; ++i) { // several growths: 4 -> 8 -> 16 -> 32 -> 64
    push();
    if (i % 3 == 0)
      steal();
  }
  REQUIRE(d.capacity() >= 32);

  std::mt19937 rng(7);
  chase_lev_deque<std::uint64_t> other(2);
  for (int step = 0; step < 200000; ++step) {
    const auto r = rng() % 10;
    if (r < 5) {
      push();
    } else if (r < 7) {
      auto v = d.pop();
      REQUIRE(v.has_value() == !model.empty());
      if (v) {
        REQUIRE(*v == model.back());
        model.pop_back();
      }
    } else if (r < 9) {
      steal();
    } else {
      // steal_batch into another deque moves the oldest ceil(n/2) (at most 3) in order.
      const std::size_t n = model.size();
      const std::size_t moved = d.steal_batch(other, 3);
      REQUIRE(moved == std::min<std::size_t>(3, (n + 1) / 2));
      for (std::size_t k = 0; k < moved; ++k) {
        REQUIRE(other.steal() == model.front());
        model.pop_front();
      }
      REQUIRE(other.empty());
    }
    REQUIRE(d.size_approx() == model.size());
  }
}

TEST_CASE("chase_lev_deque: steal_batch moves half, bounded, and publishes in order", "[chase_lev_deque]") {
  chase_lev_deque<int> victim(2), thief(2);
  for (int i = 0; i < 11; ++i)
    victim.push(i);
  REQUIRE(victim.steal_batch(thief, 100) == 6); // ceil(11 / 2)
  REQUIRE(thief.size_approx() == 6);
  REQUIRE(victim.size_approx() == 5);
  REQUIRE(thief.pop() == 5); // the thief's owner pops the newest stolen item first
  REQUIRE(thief.steal() == 0);
  REQUIRE(victim.steal_batch(thief, 2) == 2); // bounded by the limit
  REQUIRE(victim.steal_batch(thief, 0) == 0);
  REQUIRE(thief.pop() == 7);
  REQUIRE(thief.pop() == 6);
  REQUIRE(victim.pop() == 10);
  REQUIRE_THROWS_AS(victim.steal_batch(victim, 1), std::invalid_argument);
  chase_lev_deque<int> empty_one;
  REQUIRE(empty_one.steal_batch(thief, 5) == 0);
}

TEST_CASE("chase_lev_deque: replaced arrays are retired and reclaimed", "[chase_lev_deque]") {
  auto& domain = otlpconc::hazard_pointer_default_domain();
  otlpconc::hazard_pointer_clean_up();
  const auto before = domain.stats();
  {
    chase_lev_deque<int> d(2);
    for (int i = 0; i < 1024; ++i) // 2 -> 1024: nine growths, nine arrays retired
      d.push(i);
    REQUIRE(d.capacity() == 1024);
    REQUIRE(domain.stats().retired - before.retired == 9);
  }
  otlpconc::hazard_pointer_clean_up();
  const auto after = domain.stats();
  REQUIRE(after.unreclaimed() == 0);
  REQUIRE(after.reclaimed - before.reclaimed == 9);
}

namespace {

// Sequential model of a work-stealing deque: push and pop at the back, steal at the front.
struct deque_op : otlpconc::testing::timestamps {
  enum kind_t { push, pop, steal } kind = push;
  int value = 0;
  bool empty = false;
};

// The queue model's storage (items from `front` on, hash, equality) with deque operations.
struct deque_model : otlpconc::testing::queue_model {
  bool apply(const deque_op& op) {
    switch (op.kind) {
    case deque_op::push:
      items.push_back(op.value);
      return true;
    case deque_op::pop:
      if (front == items.size())
        return op.empty;
      if (op.empty || items.back() != op.value)
        return false;
      items.pop_back();
      return true;
    case deque_op::steal:
      if (front == items.size())
        return op.empty;
      if (op.empty || items[front] != op.value)
        return false;
      ++front;
      return true;
    }
    return false;
  }
};

// Thread 0 owns the deque (random push / pop), threads 1.. steal. Returns the non-linearizable count.
int count_bad_deque_histories(int histories, int thieves, int ops, std::size_t capacity) {
  std::mt19937 rng(2024);
  int bad = 0;
  for (int h = 0; h < histories; ++h) {
    chase_lev_deque<int> d(capacity);
    std::vector<unsigned> choice(static_cast<std::size_t>(ops));
    for (auto& c : choice)
      c = static_cast<unsigned>(rng() % 3);
    auto history = otlpconc::testing::record_history<deque_op>(
        thieves + 1, ops, [&](int t, int i, std::atomic<std::uint64_t>& clock) {
          deque_op op;
          op.kind = t != 0                                     ? deque_op::steal
                    : choice[static_cast<std::size_t>(i)] != 0 ? deque_op::push
                                                               : deque_op::pop;
          op.invoke = clock.fetch_add(1, std::memory_order_seq_cst);
          std::optional<int> v;
          if (op.kind == deque_op::push) {
            op.value = i + 1;
            d.push(op.value);
          } else {
            v = op.kind == deque_op::pop ? d.pop() : d.steal();
            op.empty = !v.has_value();
            op.value = v.value_or(0);
          }
          op.response = clock.fetch_add(1, std::memory_order_seq_cst);
          return op;
        });
    if (!otlpconc::testing::is_linearizable(history, deque_model{}))
      ++bad;
  }
  return bad;
}

} // namespace

TEST_CASE("chase_lev_deque: random concurrent histories are linearizable", "[chase_lev_deque][lin_check]") {
  REQUIRE(count_bad_deque_histories(400, 2, 6, 2) == 0); // capacity 2: histories cross growths
  REQUIRE(count_bad_deque_histories(300, 3, 5, 64) == 0);
}

TEST_CASE("lin_check: the deque model rejects wrong answers", "[lin_check]") {
  auto op = [](deque_op::kind_t k, int v, bool empty, std::uint64_t a, std::uint64_t b) {
    deque_op o;
    o.kind = k;
    o.value = v;
    o.empty = empty;
    o.invoke = a;
    o.response = b;
    return o;
  };
  using K = deque_op;
  // pop takes the newest, steal the oldest.
  REQUIRE(otlpconc::testing::is_linearizable(std::vector{op(K::push, 1, false, 0, 1), op(K::push, 2, false, 2, 3),
                                                         op(K::pop, 2, false, 4, 5), op(K::steal, 1, false, 6, 7)},
                                             deque_model{}));
  REQUIRE_FALSE(otlpconc::testing::is_linearizable(
      std::vector{op(K::push, 1, false, 0, 1), op(K::push, 2, false, 2, 3), op(K::pop, 1, false, 4, 5)},
      deque_model{}));
  REQUIRE_FALSE(otlpconc::testing::is_linearizable(
      std::vector{op(K::push, 1, false, 0, 1), op(K::push, 2, false, 2, 3), op(K::steal, 2, false, 4, 5)},
      deque_model{}));
  // The same item taken twice.
  REQUIRE_FALSE(otlpconc::testing::is_linearizable(
      std::vector{op(K::push, 1, false, 0, 1), op(K::pop, 1, false, 2, 3), op(K::steal, 1, false, 2, 4)},
      deque_model{}));
}

TEST_CASE("chase_lev_deque: steal_if refuses without taking", "[chase_lev_deque]") {
  otlpconc::chase_lev_deque<int> d(2);
  for (int i = 0; i < 5; ++i)
    d.push(i);
  REQUIRE(d.bottom_index() == 5);
  std::vector<int> seen;
  REQUIRE_FALSE(d.steal_if([&](int v) {
                   seen.push_back(v);
                   return v != 0;
                 }).has_value());
  REQUIRE(seen == std::vector<int>{0}); // the oldest item was offered and refused
  REQUIRE(d.size_approx() == 5);        // and left in place
  REQUIRE(d.steal_if([](int v) { return v == 0; }) == 0);
  REQUIRE(d.steal_if([](int) { return true; }) == 1);
  REQUIRE(d.pop() == 4);
  REQUIRE(d.bottom_index() == 4);
  REQUIRE(d.steal() == 2);
  REQUIRE(d.pop() == 3);
  REQUIRE_FALSE(d.steal_if([](int) { return true; }).has_value()); // empty
}

TEST_CASE("chase_lev_deque: concurrent steal_if takes only what it accepts, each item once", "[chase_lev_deque]") {
  // The owner pushes and pops; two thieves take only even items, two take anything. Every item is
  // taken exactly once and the even-only thieves never got an odd one.
  constexpr int items = 200000;
  otlpconc::chase_lev_deque<std::uint32_t> d(2);
  std::vector<std::atomic<int>> taken(items);
  std::atomic<bool> done{false};
  std::atomic<int> odd_taken_by_picky{0};
  std::vector<std::thread> thieves;
  for (int t = 0; t < 4; ++t)
    thieves.emplace_back([&, t] {
      const bool picky = t < 2;
      for (;;) {
        const bool finished = done.load(std::memory_order_acquire);
        auto v = picky ? d.steal_if([](std::uint32_t x) { return x % 2 == 0; }) : d.steal();
        if (v) {
          taken[*v].fetch_add(1, std::memory_order_relaxed);
          if (picky && *v % 2 != 0)
            odd_taken_by_picky.fetch_add(1);
        } else if (finished) {
          return;
        }
      }
    });
  std::mt19937 rng(3);
  for (std::uint32_t i = 0; i < static_cast<std::uint32_t>(items); ++i) {
    d.push(i);
    if (rng() % 3 == 0)
      if (auto v = d.pop())
        taken[*v].fetch_add(1, std::memory_order_relaxed);
  }
  while (auto v = d.pop())
    taken[*v].fetch_add(1, std::memory_order_relaxed);
  done.store(true, std::memory_order_release);
  for (auto& t : thieves)
    t.join();
  while (auto v = d.steal())
    taken[*v].fetch_add(1, std::memory_order_relaxed);
  int wrong = 0;
  for (auto& c : taken)
    wrong += c.load() != 1;
  REQUIRE(wrong == 0);
  REQUIRE(odd_taken_by_picky.load() == 0);
}
