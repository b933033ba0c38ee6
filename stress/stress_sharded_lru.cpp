// Stress: sharded_lru_cache under concurrent get / get_handle / put / erase / get_or_load / clear,
// with a monitor sampling size and charge against the capacity; single-flight loading in rounds;
// lookups racing bucket-array growth; every value destroyed exactly once; in-place overwrites read
// without tearing; the memory bound with concurrent readers; chains of loads without false cycles.
#include "../tests/counted_blob.hpp"
#include "otlpconc/sharded_lru.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using otlpconc::removal_cause;
using otlpconc::sharded_lru_cache;
using otlpconc::sharded_lru_options;
using otlpconc::stress::scaled;

namespace {

// A value that names its key (so a value returned for the wrong key is caught) and counts its
// live instances (so a value destroyed twice or never is caught).
struct payload {
  static inline std::atomic<std::int64_t> alive{0};
  std::int64_t key;
  std::int64_t version;
  payload(std::int64_t k, std::int64_t v) : key(k), version(v) { alive.fetch_add(1, std::memory_order_relaxed); }
  payload(const payload& o) : key(o.key), version(o.version) { alive.fetch_add(1, std::memory_order_relaxed); }
  ~payload() { alive.fetch_sub(1, std::memory_order_relaxed); }
};

using cache_type = sharded_lru_cache<std::int64_t, payload>;

void mixed_workload(const sharded_lru_options& options, bool weighted) {
  otlpconc::hazard_pointer_clean_up();
  const std::int64_t alive_before = payload::alive.load();
  constexpr int threads = 4;
  constexpr std::int64_t keys = 3000;
  const std::int64_t ops = scaled(300000);
  std::atomic<std::int64_t> wrong_values{0}, removal_callbacks{0}, over_capacity{0};
  std::atomic<bool> done{false};
  {
    cache_type::weigher_type weigher;
    if (weighted)
      weigher = [](const std::int64_t& k, const payload& p) {
        return static_cast<std::size_t>(1 + (k + p.version) % 8);
      };
    cache_type cache(options, weigher, [&](const std::int64_t& k, const payload& p, removal_cause) {
      removal_callbacks.fetch_add(1, std::memory_order_relaxed);
      if (p.key != k)
        wrong_values.fetch_add(1, std::memory_order_relaxed);
    });
    std::thread monitor([&] {
      while (!done.load(std::memory_order_relaxed)) {
        if (cache.size() > cache.capacity() || cache.total_charge() > cache.capacity())
          over_capacity.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::yield();
      }
    });
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::mt19937_64 rng(static_cast<std::uint64_t>(t) * 7919 + 1);
        // Skewed keys: a hot set that is read far more than it is written.
        std::uniform_int_distribution<std::int64_t> cold(0, keys - 1), hot(0, 63);
        std::uniform_int_distribution<int> op_dist(0, 999);
        auto check = [&](std::int64_t k, const payload& p) {
          if (p.key != k)
            wrong_values.fetch_add(1, std::memory_order_relaxed);
        };
        for (std::int64_t i = 0; i < ops; ++i) {
          const int op = op_dist(rng);
          const std::int64_t k = (op & 1) ? hot(rng) : cold(rng);
          if (op < 500) {
            if (auto v = cache.get(k))
              check(k, *v);
          } else if (op < 600) {
            if (auto h = cache.get_handle(k)) {
              check(k, *h);
              if (h.key() != k)
                wrong_values.fetch_add(1, std::memory_order_relaxed);
            }
          } else if (op < 800) {
            cache.put(k, payload(k, i));
          } else if (op < 880) {
            cache.erase(k);
          } else if (op < 998) {
            try {
              const payload p = cache.get_or_load(k, [&](const std::int64_t& key) {
                if (op_dist(rng) < 20)
                  throw std::runtime_error("flaky loader");
                return payload(key, -1);
              });
              check(k, p);
            } catch (const std::runtime_error&) {
            }
          } else {
            cache.clear();
          }
        }
      });
    for (auto& th : pool)
      th.join();
    done.store(true);
    monitor.join();
    CHECK(cache.size() <= cache.capacity());
    CHECK(cache.total_charge() <= cache.capacity());
    const auto s = cache.stats();
    CHECK(s.hits + s.misses > 0);
    // Every insert is either still cached or was removed (and reported) exactly once.
    CHECK(s.inserts == static_cast<std::int64_t>(cache.size()) + removal_callbacks.load() - s.updates);
  }
  otlpconc::hazard_pointer_clean_up();
  CHECK(wrong_values.load() == 0);
  CHECK(over_capacity.load() == 0);
  CHECK(payload::alive.load() == alive_before); // no value leaked or destroyed twice
}

} // namespace

TEST_CASE("sharded_lru stress: mixed operations, unweighted, buffered reads", "[sharded_lru][stress]") {
  mixed_workload(sharded_lru_options{500, 4, true}, false);
}

TEST_CASE("sharded_lru stress: mixed operations, weighted (bucket arrays grow), buffered reads",
          "[sharded_lru][stress]") {
  mixed_workload(sharded_lru_options{2000, 2, true}, true);
}

TEST_CASE("sharded_lru stress: mixed operations, one shard, exact recency", "[sharded_lru][stress]") {
  mixed_workload(sharded_lru_options{300, 1, false}, false);
}

TEST_CASE("sharded_lru stress: get_or_load calls the loader once per key per miss burst", "[sharded_lru][stress]") {
  constexpr int threads = 4;
  constexpr int keys = 64;
  const int rounds = static_cast<int>(scaled(600));
  cache_type cache(sharded_lru_options{1024, 4});
  std::vector<std::atomic<int>> calls(keys);
  std::atomic<std::int64_t> wrong_values{0};
  std::barrier sync(threads + 1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(t) + 11);
      std::vector<std::int64_t> order(keys);
      std::iota(order.begin(), order.end(), 0);
      for (int r = 0; r < rounds; ++r) {
        sync.arrive_and_wait(); // the cache was emptied
        std::shuffle(order.begin(), order.end(), rng);
        for (const std::int64_t k : order) {
          const payload p = cache.get_or_load(k, [&](const std::int64_t& key) {
            calls[static_cast<std::size_t>(key)].fetch_add(1, std::memory_order_relaxed);
            std::this_thread::yield(); // widen the window for the others to miss too
            return payload(key, r);
          });
          if (p.key != k || p.version != r)
            wrong_values.fetch_add(1, std::memory_order_relaxed);
        }
        sync.arrive_and_wait(); // round over
      }
    });
  int bad_rounds = 0;
  for (int r = 0; r < rounds; ++r) {
    cache.clear();
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    for (int k = 0; k < keys; ++k)
      if (calls[static_cast<std::size_t>(k)].load() != r + 1)
        ++bad_rounds;
  }
  for (auto& th : pool)
    th.join();
  CHECK(bad_rounds == 0);
  CHECK(wrong_values.load() == 0);
  CHECK(cache.stats().loads == static_cast<std::int64_t>(rounds) * keys);
}

TEST_CASE("sharded_lru stress: lookups never miss a present key while bucket arrays grow", "[sharded_lru][stress]") {
  // One shard, unbounded in practice: a writer inserts fresh keys (the bucket array doubles from
  // 64 to 2^15), readers look up anchor keys that are never removed. A walk confused by the
  // relinking that is not caught by the resize sequence shows up as a false miss.
  const std::int64_t fresh_keys = std::min<std::int64_t>(scaled(200000), 1 << 22);
  cache_type cache(sharded_lru_options{1 << 22, 1}, [](const std::int64_t&, const payload&) { return std::size_t{1}; });
  constexpr std::int64_t anchors = 200;
  for (std::int64_t k = 0; k < anchors; ++k)
    cache.put(-1 - k, payload(-1 - k, 0));
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> false_misses{0}, lookups{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::int64_t k = t;
      while (!done.load(std::memory_order_relaxed)) {
        const std::int64_t key = -1 - (k++ % anchors);
        auto v = (k & 1) ? cache.get(key) : std::optional<payload>();
        if (!(k & 1)) {
          if (auto h = cache.get_handle(key))
            v.emplace(*h);
        }
        if (!v || v->key != key)
          false_misses.fetch_add(1, std::memory_order_relaxed);
        lookups.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (std::int64_t k = 0; k < fresh_keys; ++k)
    cache.put(k, payload(k, 0));
  done.store(true);
  for (auto& th : readers)
    th.join();
  CHECK(false_misses.load() == 0);
  CHECK(lookups.load() > 0);
  CHECK(cache.size() == static_cast<std::size_t>(anchors + fresh_keys));
}

namespace {
// A value that says whether it is still alive: a reader that copies a reclaimed value sees the
// poison its destructor wrote (the memory is freed at once: see the reclaiming thread below).
struct canary {
  static constexpr std::uint64_t alive_mark = 0x0a11ce5a11ce0a11ULL;
  std::uint64_t mark = alive_mark;
  std::int64_t key;
  explicit canary(std::int64_t k) : key(k) {}
  canary(const canary& o) : mark(o.mark), key(o.key) {}
  ~canary() { mark = 0xdeadULL; }
};
struct single_chain_hash {
  std::size_t operator()(std::int64_t) const noexcept { return 1; }
};
// std::allocator declared stateful: the cache then frees every reclaimed node to the allocator
// instead of recycling it through the node cache, so a node a walk should not reach is really
// freed (ASan reports it; elsewhere malloc reuses the memory and the canary catches it).
template <class T>
struct freeing_allocator : std::allocator<T> {
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = freeing_allocator<U>;
  };
  freeing_allocator() = default;
  template <class U>
  freeing_allocator(const freeing_allocator<U>&) noexcept {}
  friend bool operator==(const freeing_allocator&, const freeing_allocator&) noexcept { return true; }
};
} // namespace

TEST_CASE("sharded_lru stress: walks on one churning chain while retired entries are reclaimed at once",
          "[sharded_lru][stress]") {
  // Every key in one chain; a writer puts and erases constantly; a thread reclaims retired nodes
  // in a loop, and the allocator frees them, so a node a reader should not be standing on is
  // really freed (ASan) or reused (the canary). Catches a walk that skips validation (the dead mark,
  // the hazard pointer on next) or a handle that does not protect its node.
  using cache_t = sharded_lru_cache<std::int64_t, canary, single_chain_hash, std::equal_to<std::int64_t>,
                                    freeing_allocator<std::pair<const std::int64_t, canary>>>;
  const bool buffered = GENERATE(true, false);
  cache_t cache(sharded_lru_options{12, 1, buffered});
  const std::int64_t ops = scaled(150000);
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> bad{0};
  std::thread reclaimer([&] {
    while (!done.load(std::memory_order_relaxed))
      otlpconc::hazard_pointer_clean_up();
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < 3; ++t)
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(t) + 1);
      std::uniform_int_distribution<std::int64_t> key(0, 15);
      for (std::int64_t i = 0; i < ops; ++i) {
        const std::int64_t k = key(rng);
        if (t == 0) {
          if (i & 1)
            cache.erase(k);
          else
            cache.put(k, canary(k));
        } else if (i & 1) {
          if (auto v = cache.get(k); v && (v->mark != canary::alive_mark || v->key != k))
            bad.fetch_add(1, std::memory_order_relaxed);
        } else if (auto h = cache.get_handle(k); h && (h->mark != canary::alive_mark || h->key != k || h.key() != k)) {
          bad.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  for (auto& th : pool)
    th.join();
  done.store(true);
  reclaimer.join();
  CHECK(bad.load() == 0);
}

namespace {
// 40 bytes: stored in place as five words, two slots (the multi-word path of detail::lru_value).
// Word 0 names the key, words 1..4 all hold the put's version: a torn copy mixes versions.
struct versioned {
  std::uint64_t key;
  std::uint64_t version[4];
  bool whole() const noexcept {
    return version[0] == version[1] && version[1] == version[2] && version[2] == version[3];
  }
};
} // namespace

TEST_CASE("sharded_lru stress: in-place overwrites are never read torn, and a reader never goes back in time",
          "[sharded_lru][stress]") {
  // One writer overwrites 8 entries (one shard, never evicted) with increasing versions; readers copy
  // them with get, get_handle and get_or_load's hit path. A copy must be whole (one put's words),
  // name its key, and per reader and key never be older than the previous copy (the copy is of a
  // value that was in the cache during the call).
  using cache_t = sharded_lru_cache<std::uint64_t, versioned>;
  static_assert(cache_t::in_place_values);
  cache_t cache(sharded_lru_options{8, 1});
  constexpr std::uint64_t keys = 8;
  for (std::uint64_t k = 0; k < keys; ++k)
    cache.put(k, versioned{k, {0, 0, 0, 0}});
  const std::int64_t writes = scaled(400000);
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> torn{0}, wrong_key{0}, backwards{0}, missing{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::uint64_t seen[keys] = {};
      std::uint64_t i = static_cast<std::uint64_t>(t);
      while (!done.load(std::memory_order_relaxed)) {
        const std::uint64_t k = i % keys;
        std::optional<versioned> v;
        switch (i++ % 3) {
        case 0:
          v = cache.get(k);
          break;
        case 1:
          if (auto h = cache.get_handle(k))
            v = *h;
          break;
        default:
          v = cache.get_or_load(k, [](const std::uint64_t& key) { return versioned{key, {0, 0, 0, 0}}; });
          break;
        }
        reads.fetch_add(1, std::memory_order_relaxed);
        if (!v) {
          missing.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (!v->whole())
          torn.fetch_add(1, std::memory_order_relaxed);
        if (v->key != k)
          wrong_key.fetch_add(1, std::memory_order_relaxed);
        if (v->version[0] < seen[k])
          backwards.fetch_add(1, std::memory_order_relaxed);
        seen[k] = std::max(seen[k], v->version[0]);
      }
    });
  for (std::int64_t i = 1; i <= writes; ++i) {
    const auto k = static_cast<std::uint64_t>(i) % keys;
    const auto version = static_cast<std::uint64_t>(i);
    cache.put(k, versioned{k, {version, version, version, version}});
  }
  done.store(true);
  for (auto& th : readers)
    th.join();
  INFO("reads " << reads.load());
  CHECK(torn.load() == 0);
  CHECK(wrong_key.load() == 0);
  CHECK(backwards.load() == 0);
  CHECK(missing.load() == 0);
  CHECK(cache.stats().updates == writes);
  CHECK(reads.load() > 0);
}

using otlpconc::testing::blob;

TEST_CASE("sharded_lru stress: a weighted cache's memory bound holds with concurrent readers",
          "[sharded_lru][stress]") {
  // One writer replaces 64 KiB values in a 2 MiB cache while two readers copy them. The header's
  // bound with t = 1 writer, c <= 1 scan at a time (only the writer retires), h = 0 handles and
  // p <= 2 lookups: C + 2B + 5w at any instant, C + B + 4w once idle.
  otlpconc::hazard_pointer_clean_up();
  const std::int64_t base = blob::live.load();
  constexpr std::int64_t w = 64 << 10, capacity = 2 << 20;
  const std::size_t shards = GENERATE(std::size_t{1}, std::size_t{2});
  sharded_lru_cache<int, blob> cache(sharded_lru_options{static_cast<std::size_t>(capacity), shards},
                                     [](const int&, const blob& b) { return b.size; });
  const auto budget = static_cast<std::int64_t>(cache.reclamation_budget());
  blob::peak.store(blob::live.load());
  const std::int64_t puts = scaled(20000);
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      for (int i = t; !done.load(std::memory_order_relaxed); ++i) {
        if (auto v = cache.get(i % 40); v && v->size != static_cast<std::size_t>(w))
          std::abort(); // a value of the wrong size was returned
        reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  for (std::int64_t i = 0; i < puts; ++i)
    cache.put(static_cast<int>(i % 40), blob(static_cast<std::size_t>(w))); // 40 keys: evictions too
  done.store(true);
  for (auto& th : readers)
    th.join();
  const std::int64_t peak = blob::peak.load() - base;
  const std::int64_t idle = blob::live.load() - base;
  INFO("peak " << peak / 1024 << " KiB, idle " << idle / 1024 << " KiB, C " << capacity / 1024 << " KiB, B "
               << budget / 1024 << " KiB, w " << w / 1024 << " KiB, reads " << reads.load());
  CHECK(peak <= capacity + 2 * budget + 5 * w);
  CHECK(idle <= capacity + budget + 4 * w);
}

TEST_CASE("sharded_lru stress: chains of get_or_load across threads never report a false cycle",
          "[sharded_lru][stress]") {
  // loader(k) asks for key k + 1 (up to 15): every wait follows the chain upwards, so no cycle can
  // form, however the threads interleave and whichever loads finish while others walk the graph.
  // Rounds start from an empty cache. Any std::logic_error is a false positive; a hang fails by
  // the suite's timeout.
  constexpr int threads = 4, keys = 16;
  const int rounds = static_cast<int>(scaled(300));
  cache_type cache(sharded_lru_options{64, 4});
  std::atomic<std::int64_t> false_cycles{0}, wrong_values{0};
  std::barrier sync(threads + 1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(t) + 3);
      std::uniform_int_distribution<std::int64_t> key(0, keys - 1);
      std::function<payload(const std::int64_t&)> loader = [&](const std::int64_t& k) {
        std::this_thread::yield(); // let other threads join or start loads
        if (k + 1 == keys)
          return payload(k, 1);
        return payload(k, cache.get_or_load(k + 1, loader).version + 1);
      };
      for (int r = 0; r < rounds; ++r) {
        sync.arrive_and_wait();
        for (int i = 0; i < keys; ++i) {
          const std::int64_t k = key(rng);
          try {
            const payload p = cache.get_or_load(k, loader);
            if (p.key != k || p.version != keys - k)
              wrong_values.fetch_add(1, std::memory_order_relaxed);
          } catch (const std::logic_error&) {
            false_cycles.fetch_add(1, std::memory_order_relaxed);
          }
        }
        sync.arrive_and_wait();
      }
    });
  for (int r = 0; r < rounds; ++r) {
    cache.clear();
    sync.arrive_and_wait();
    sync.arrive_and_wait();
  }
  for (auto& th : pool)
    th.join();
  CHECK(false_cycles.load() == 0);
  CHECK(wrong_values.load() == 0);
}

TEST_CASE("sharded_lru stress: every hit of 8 contending threads keeps its entry through the next evictions",
          "[sharded_lru][stress]") {
  // 8 threads (more than this machine's cores: they are preempted between their hits) hit the 16
  // least recent entries of a one-shard cache, each thread every key at least once, in its own
  // order. After they are joined, 240 puts evict 240 entries: the first put gives the 16 marked
  // entries their second chances (16 is the most a put gives) and every later one evicts an
  // unmarked entry, so all 16 must survive, with no marked entry evicted. A hit whose mark is
  // lost (not stored, stored on another entry, or cleared by a concurrent hit) fails this.
  constexpr int threads = 8;
  constexpr int capacity = 256;
  constexpr int hot = 16;
  const std::int64_t rounds = scaled(20);
  std::int64_t lost_rounds = 0;
  for (std::int64_t round = 0; round < rounds; ++round) {
    sharded_lru_cache<int, int> cache(sharded_lru_options{capacity, 1, true});
    for (int k = 0; k < capacity; ++k)
      cache.put(k, k); // 0..15 are the least recent
    std::atomic<int> ready{0};
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < threads)
          std::this_thread::yield();
        std::uint32_t x = 977u * static_cast<std::uint32_t>(round) + static_cast<std::uint32_t>(t);
        for (int i = 0; i < 2000; ++i) {
          x = x * 1103515245u + 12345u;
          // Each key once in the first lap (a rotation per thread), then at random.
          const int key = i < hot ? (i + t) % hot : static_cast<int>((x >> 8) % hot);
          if (cache.get(key) != key)
            wrong.fetch_add(1);
        }
      });
    for (auto& th : pool)
      th.join();
    for (int k = 0; k < capacity - hot; ++k)
      cache.put(capacity + k, k);
    bool all = true;
    for (int k = 0; k < hot; ++k)
      all = all && cache.contains(k);
    if (!all || cache.stats().dropped_reads != 0 || wrong.load() != 0)
      ++lost_rounds;
  }
  INFO("rounds " << rounds);
  CHECK(lost_rounds == 0);
}
