// Stress: the Chase-Lev deque's owner pushing and popping against 3 thieves through many growths
// (starting at capacity 2), with single steals and batch steals: every item is taken exactly once.
#include "otlpconc/chase_lev_deque.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

using otlpconc::chase_lev_deque;
using otlpconc::stress::scaled;

namespace {

struct outcome {
  std::int64_t missing = 0;
  std::int64_t duplicated = 0;
  std::int64_t taken_by_owner = 0;
  std::int64_t taken_by_thieves = 0;
};

// Items 0..total-1 are pushed by the owner in bursts, each burst followed by some pops, while the
// thieves steal (or batch-steal into their own deque and pop from it). A fresh deque every `round`
// items keeps growths frequent.
outcome run(std::int64_t total, bool batch) {
  constexpr int thieves = 3;
  std::vector<std::atomic<std::uint8_t>> seen(static_cast<std::size_t>(total));
  auto take = [&](std::uint64_t v) { seen[v].fetch_add(1, std::memory_order_relaxed); };
  std::atomic<std::int64_t> by_thieves{0};
  std::int64_t by_owner = 0;

  constexpr std::int64_t round = 4096;
  std::atomic<chase_lev_deque<std::uint64_t>*> current{nullptr};
  std::atomic<bool> done{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < thieves; ++t)
    pool.emplace_back([&] {
      chase_lev_deque<std::uint64_t> mine(2);
      std::int64_t n = 0;
      while (!done.load(std::memory_order_acquire)) {
        // acquire: pairs with the release store of a new deque below. Replaced deques stay alive
        // until the end (a thief may still be stealing from one).
        auto* d = current.load(std::memory_order_acquire);
        if (d == nullptr)
          continue;
        if (batch) {
          if (d->steal_batch(mine, 7) > 0)
            while (auto v = mine.pop()) {
              take(*v);
              ++n;
            }
        } else if (auto v = d->steal()) {
          take(*v);
          ++n;
        }
      }
      by_thieves.fetch_add(n);
    });

  // The owner. Deques are replaced per round but freed only at the end (thieves may still hold one).
  std::vector<std::unique_ptr<chase_lev_deque<std::uint64_t>>> deques;
  std::uint64_t next = 0;
  while (static_cast<std::int64_t>(next) < total) {
    deques.push_back(std::make_unique<chase_lev_deque<std::uint64_t>>(2));
    auto* d = deques.back().get();
    current.store(d, std::memory_order_release);
    const std::uint64_t end = std::min<std::uint64_t>(next + round, static_cast<std::uint64_t>(total));
    std::uint64_t burst = 1;
    while (next < end) {
      for (std::uint64_t i = 0; i < burst && next < end; ++i)
        d->push(next++);
      for (std::uint64_t i = 0; i < burst / 3; ++i)
        if (auto v = d->pop()) {
          take(*v);
          ++by_owner;
        }
      burst = burst * 2 % 61 + 1;
    }
    while (auto v = d->pop()) { // drain what the thieves left
      take(*v);
      ++by_owner;
    }
  }
  done.store(true, std::memory_order_release);
  for (auto& t : pool)
    t.join();
  outcome o;
  for (auto& s : seen) {
    const auto c = s.load(std::memory_order_relaxed);
    o.missing += c == 0;
    o.duplicated += c > 1;
  }
  o.taken_by_owner = by_owner;
  o.taken_by_thieves = by_thieves.load();
  return o;
}

} // namespace

TEST_CASE("chase_lev_deque: owner vs 3 thieves through growths, every item exactly once", "[stress][chase_lev_deque]") {
  const std::int64_t total = scaled(OTLPCONC_TSAN ? 100000 : 1000000);
  for (bool batch : {false, true}) {
    INFO((batch ? "steal_batch" : "steal"));
    outcome o = run(total, batch);
    INFO("owner took " << o.taken_by_owner << ", thieves " << o.taken_by_thieves);
    REQUIRE(o.missing == 0);
    REQUIRE(o.duplicated == 0);
    REQUIRE(o.taken_by_owner + o.taken_by_thieves == total);
    REQUIRE(o.taken_by_thieves > 0); // the thieves really competed
  }
}
