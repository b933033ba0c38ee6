// otlpconc/sharded_lru.hpp: a sharded LRU cache whose hits take no lock.
//
// What: sharded_lru_cache<K, V, Hash, KeyEqual, Allocator> maps keys to values with least-recently-
//   used eviction, bounded by a capacity in entries or in charge units (a weigher gives each entry
//   its charge). Keys are spread over a power-of-two number of shards; each shard is an LRU list of
//   its share of the capacity, guarded by its own lock for writes (it spins for a moment, then
//   parks: detail/park_lock.hpp). Lookups walk the shard's hash chains under hazard pointers and
//   take no lock. A hit marks its entry (a byte in the line the lookup reads, written only if not
//   yet set); an eviction that finds the least recent entry marked unmarks it and makes it the
//   most recent instead (a second chance, as in CLOCK). With read_buffering off, a hit instead
//   moves its entry under the shard lock: exact LRU per shard.
// When to use: a read-mostly cache shared by many threads, where a single mutex around
//   std::list + std::unordered_map would serialize every hit.
// When not to: when you need a global LRU order across all keys (each shard evicts its own least
//   recent entry), frequency-aware admission (TinyLFU, ARC: better hit ratios on scan-heavy
//   traces), or a single thread (the hand-written list + map is as good and smaller).
// Progress (who can be held up by whom):
//   - contains: lock-free.
//   - get / get_handle, and get_or_load's hit, with read_buffering on (the default): lock-free,
//     except a miss that overlaps the doubling of a weighted shard's bucket array: it looks again
//     under the shard lock (it waits for the resize).
//   - get / get_handle with read_buffering off: NOT lock-free: every hit takes the shard lock to
//     move the entry (reads of one shard serialize, and wait for its writers). Misses as above.
//   - put / erase / clear and get_or_load's miss path take one shard lock (never two);
//     get_or_load waits for another thread's load of the same key.
//   - Outside these guarantees: copying V (get copies; V's copy constructor is the user's), the
//     removal callback, the first operation of a thread (hazard records and statistics cells are
//     allocated), and a removal that closes the cache's reclamation window (see
//     Memory): that thread then runs one hazard-pointer scan, which allocates, issues membarrier
//     and runs deleters. Removals happen in put, erase, clear, get_or_load's insert and the
//     destructor; handles never remove or retire anything.
// Guarantees:
//   - Capacity is strict: the entries in the cache never weigh more than capacity().
//   - A value returned by get, get_or_load or held by a handle was put (or loaded) for that key
//     and was in the cache at some instant during the call (get_handle's call for a handle).
//   - Values in place: for V trivially copyable and at most 64 bytes (in_place_values), put on a
//     present key overwrites the value inside the entry: no allocation, no retire, no new node.
//     Readers copy it lock-free without tearing (two slots per entry and a count of stores; a copy
//     is retried only if a store completed during it: detail/lru_support.hpp), and a handle holds
//     its own copy, taken when get_handle found the entry. Other V are immutable in the cache: put
//     on a present key installs a new entry, and a handle refers to the pinned entry's value.
//   - Recency: with read_buffering off, every hit moves its entry to the front under the shard lock
//     (textbook LRU; with one shard it is exactly the textbook algorithm). With read_buffering on
//     (the default), a hit marks its entry, and a put makes its entry the most recent, unmarked.
//     An eviction looks at the least recent entry: if it is marked, it is unmarked and made the
//     most recent instead of removed (a second chance), at most 16 times per put; the 17th
//     marked entry is removed (counted in stats().dropped_reads: its hit did not save it). The
//     entry being put is never removed by its own put. So a hit whose mark happens before a write
//     to its shard takes the lock (the hit returned before the write was called, on one thread or
//     through any synchronization) gets its entry a second chance in that write's evictions,
//     unless 16 marked entries come before it. A second chance is not a promise to survive: a put
//     that must remove more than the entries older than its own (a shard of one entry, a heavy
//     weighted put) removes the passed-over entries too, in LRU order. And a hit that finds the
//     mark already set writes nothing: if a write unmarks the entry between that hit's read and
//     its return, the hit leaves no mark (the hit that set it had its chance). Neither case is
//     counted in dropped_reads. The approximation: marked entries keep their relative order (the
//     order of their last put or second chance, not of their hits). docs/sharded_lru.md measures
//     the effect on hit ratio, 1 to 8 threads.
//   - get_or_load: concurrent misses on one key call the loader once; the others wait for it and
//     receive its value or its exception. An exception is not cached. A put, erase or clear while
//     the load runs wins: the loaded value is returned to the waiters but not inserted. A wait
//     that would never end because of a cycle of get_or_load calls throws std::logic_error: a
//     loader that asks for its own key on its thread, or loader(1) waiting for key 2 while
//     loader(2) waits for key 1 on other threads (any length, across caches of any type). Not
//     detected: a loader that blocks on something else (a thread join, a future, a lock) that in
//     turn waits for a load; that deadlocks.
//   - The removal callback runs on the thread that removed the entry, after the shard lock is
//     released, once per removed value (an in-place put reports the value it overwrote).
// Memory, in charge units (the weigher's, or 1 per entry). A removed entry is retired to the
//   default hazard-pointer domain by the thread that removed it. Each shard s counts the charge it
//   retires in its window and moves it to the cache's window when it passes S_s = floor(B_s / 4),
//   B_s = floor(C_s / 2) (C_s: the shard's capacity); the move that takes the cache's window past
//   B minus the sum of the S_s closes it and runs one scan (a forced scan: at most one per that much
//   removed charge, tested; detail/lru_support.hpp says why two levels).
//   Let C = capacity(), B = the sum of the B_s (reclamation_budget(), <= C / 2), w = the heaviest
//   entry's charge (<= max_charge()), t = threads inside put / erase / clear / get_or_load at that
//   instant, c = hazard-pointer scans running at that instant, and p and h = the lookups of this
//   cache that were running and the handles that were alive during the latest scan (a lookup
//   protects at most 2 entries, a handle 1). With one writing thread (t <= 1; removal callbacks
//   and value destructors that write to the cache count as writers), the charge of the entries
//   that were in the cache and are not yet destroyed is at most
//     C + (1 + c) * B + (t + 2p + h) * w;
//   when idle (t = c = 0): C + B + (2p + h) * w; with no lookups, handles or other scans:
//   C + B + w. (Tests check the last two at C = 16 MiB, w = 1 MiB, and the first with concurrent
//   readers.) With several writers it can exceed this by what is in flight between the windows:
//   a writer that has claimed its shard's window and not yet moved it holds up to a step plus the
//   entries other writers added to it, while they refill the shard; no formula is stated for that
//   case. The reasoning, that example, and the alternatives (a domain per cache, counting
//   objects): see docs/sharded_lru.md. Besides the values: per entry one node (key, value, ~90
//   bytes of links, counts and the mark, 64-byte aligned; nodes are recycled through a per-thread
//   node cache when the allocator is stateless, see detail/node_cache.hpp); per shard a bucket
//   array of at least one pointer per entry it can hold (weighted caches grow it by doubling; the
//   replaced arrays are kept until the cache is destroyed: less than the current array in total).
//   Each live handle holds a hazard record of the default domain, which every scan in the process
//   reads: keep handles short-lived.
// Requirements (checked at compile time): K and V non-array object types, nothrow destructible
//   (they are destroyed during reclamation) and move constructible; V copy constructible for get
//   and get_or_load. Hash and KeyEqual callable on const K& (concurrently from many threads).
//   Allocator: a standard allocator, rebound to the node type, nothrow copyable. For
//   in_place_values, a new entry's node is built under the shard lock (K moved in, V copied).
//   Handles may outlive the cache.
#pragma once

#include "otlpconc/cache_padded.hpp"
#include "otlpconc/counter.hpp"
#include "otlpconc/detail/config.hpp"
#include "otlpconc/detail/lru_chain.hpp"
#include "otlpconc/detail/lru_support.hpp"
#include "otlpconc/detail/node_cache.hpp"
#include "otlpconc/detail/park_lock.hpp"
#include "otlpconc/detail/sync.hpp"
#include "otlpconc/hazard_pointer.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace otlpconc {

// Why an entry left the cache (passed to the removal callback).
enum class removal_cause {
  evicted,  // least recently used, to make room (counted in stats().evictions)
  replaced, // put on a key already present
  erased,   // erase()
  cleared,  // clear()
  rejected, // put of an entry heavier than a shard's capacity: the old value for the key is removed
};

struct sharded_lru_options {
  // Entries, or charge units when the cache has a weigher. Must be >= 1 and >= shards.
  std::size_t capacity = 0;
  // A power of two, or 0: derived from std::thread::hardware_concurrency() (16 per hardware thread,
  // at most 256), halved while a shard would hold fewer than 64 units of capacity.
  std::size_t shards = 0;
  // Hits mark their entry and take no lock; eviction gives marked entries a second chance (true).
  // Or every hit moves its entry to the front under the shard lock (false: exact LRU per shard,
  // reads serialize per shard). (The name is older than the marks: hits used to be buffered.)
  bool read_buffering = true;
};

struct sharded_lru_stats {
  std::int64_t hits = 0;          // get / get_handle / get_or_load found the key
  std::int64_t misses = 0;        // ... did not
  std::int64_t inserts = 0;       // put or load added a key that was absent
  std::int64_t updates = 0;       // put replaced the value of a present key
  std::int64_t evictions = 0;     // entries removed to respect the capacity
  std::int64_t loads = 0;         // loader calls that returned a value
  std::int64_t load_failures = 0; // loader calls that threw
  std::int64_t dropped_reads = 0; // marked entries evicted: a put had given its 16 second chances
  double hit_ratio() const noexcept {
    return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(hits + misses);
  }
};

namespace detail {

// The 64-bit finalizer of MurmurHash3: std::hash of an integer is the identity on libstdc++, and
// the shard index uses the top bits and the bucket index the low bits, so both need mixed bits.
constexpr std::uint64_t mix_hash(std::uint64_t h) noexcept {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

} // namespace detail

template <class K, class V, class Hash = std::hash<K>, class KeyEqual = std::equal_to<K>,
          class Allocator = std::allocator<std::pair<const K, V>>>
class sharded_lru_cache {
  static_assert(std::is_object_v<K> && std::is_object_v<V> && !std::is_array_v<K> && !std::is_array_v<V>,
                "sharded_lru_cache<K, V>: K and V must be non-array object types");
  static_assert(std::is_nothrow_destructible_v<K> && std::is_nothrow_destructible_v<V>,
                "sharded_lru_cache<K, V>: K and V must be nothrow destructible (entries are destroyed during "
                "hazard-pointer reclamation, which cannot report an exception)");
  static_assert(std::is_move_constructible_v<K> && std::is_move_constructible_v<V>,
                "sharded_lru_cache<K, V>: K and V must be move constructible");
  static_assert(std::is_invocable_r_v<std::size_t, const Hash&, const K&>,
                "sharded_lru_cache<K, V, Hash>: Hash must be callable as hash(const K&) -> size_t");
  static_assert(std::is_invocable_r_v<bool, const KeyEqual&, const K&, const K&>,
                "sharded_lru_cache<K, V, Hash, KeyEqual>: KeyEqual must be callable as eq(const K&, const K&) -> bool");

  struct node;
  using node_allocator = typename std::allocator_traits<Allocator>::template rebind_alloc<node>;
  using node_traits = std::allocator_traits<node_allocator>;
  using node_cache = detail::node_cache<node, node_allocator>;
  static_assert(std::is_nothrow_copy_constructible_v<node_allocator>,
                "sharded_lru_cache<..., Allocator>: the allocator must be nothrow copy constructible");

  // Destroys a node and frees its memory: into the node cache when the allocator allows it, else to
  // the allocator (a copy is kept in each node: reclamation may happen after the cache is gone).
  struct node_deleter {
    [[no_unique_address]] node_allocator alloc;
    void operator()(node* n) noexcept {
      n->~node();
      if constexpr (node_cache::enabled)
        node_cache::deallocate(n);
      else
        node_traits::deallocate(alloc, n, 1);
    }
  };

  using value_cell = detail::lru_value<V>;

  // One entry. What a lookup reads and writes (the mark, chain link, hash, key, value) comes first:
  // with the hazard-pointer header it fills one 64-byte line for small keys and values (u64 ->
  // u64), so a hit costs the bucket's line and this one. The rest is written under the shard
  // lock only.
  struct alignas(64) node : hazard_pointer_obj_base<node, node_deleter> {
    template <class KK, class VV>
    node(std::uint64_t h, std::size_t c, const node_allocator& al, KK&& k, VV&& v)
        : hash(h), key(std::forward<KK>(k)), value(std::forward<VV>(v)), charge(c), alloc(al) {}

    // Hit since it was last made the most recent (read_buffering): set by lookups (E1, E2), read
    // and cleared by the shard lock's holder (E3 to E5). Declared first: with an empty deleter it
    // fits in the tail padding of the hazard-pointer header (g++ and clang, Itanium ABI), so the
    // line that lookups read holds it too.
    std::atomic<std::uint8_t> marked{0};
    // The hash chain. Its low bit is the dead mark: set (under the shard lock, release) when the
    // node is unlinked, never cleared; a reader that finds it walks again (detail/lru_chain.hpp).
    std::atomic<node*> next{nullptr};
    const std::uint64_t hash;
    const K key;
    value_cell value;
    std::atomic<node*>* pprev = nullptr;          // the link that points to this node (shard lock)
    node* newer = nullptr;                        // LRU list, towards the most recent (shard lock)
    node* older = nullptr;                        // LRU list, towards the least recent (shard lock)
    std::size_t charge;                           // shard lock (an in-place put may change it)
    removal_cause cause = removal_cause::evicted; // set when removed (shard lock)
    [[no_unique_address]] node_allocator alloc;
  };
  static_assert(alignof(node) >= 2, "the dead mark needs a free low bit in node pointers");

  using chain = detail::lru_chain<node>; // the hash chains' protocol (walk, unlink, resize)
  using table = typename chain::table;

 public:
  using key_type = K;
  using mapped_type = V;
  using allocator_type = Allocator;
  using weigher_type = std::function<std::size_t(const K&, const V&)>;
  using removal_callback = std::function<void(const K&, const V&, removal_cause)>;

  // Whether put on a present key overwrites the value in place (V trivially copyable, <= 64 bytes).
  static constexpr bool in_place_values = detail::lru_value_in_place<V>;

  // A pinned entry: a hazard pointer that keeps the entry's memory alive (even after eviction,
  // and after the cache is destroyed) until the handle is destroyed or reset. The value is, for
  // in_place_values, a copy taken by get_handle; otherwise the pinned entry's own value. Move-only.
  // Each live handle holds one hazard record of the default domain (every hazard-pointer scan in the
  // process reads it): keep handles short-lived rather than by the thousand.
  class handle {
    struct no_copy {};
    using snapshot = std::conditional_t<in_place_values, std::optional<V>, no_copy>;

   public:
    handle() noexcept = default;
    handle(handle&& other) noexcept
        : node_(std::exchange(other.node_, nullptr)), hp_(std::move(other.hp_)), copy_(std::move(other.copy_)) {}
    handle& operator=(handle&& other) noexcept {
      if (this != &other) {
        node_ = std::exchange(other.node_, nullptr);
        hp_ = std::move(other.hp_); // releases our protection
        copy_ = std::move(other.copy_);
      }
      return *this;
    }
    ~handle() = default;

    explicit operator bool() const noexcept { return node_ != nullptr; }
    // Preconditions for the accessors: *this is not empty.
    const K& key() const noexcept { return node_->key; }
    const V& value() const noexcept {
      if constexpr (in_place_values)
        return *copy_;
      else
        return node_->value.ref();
    }
    const V& operator*() const noexcept { return value(); }
    const V* operator->() const noexcept { return &value(); }
    void reset() noexcept {
      node_ = nullptr;
      hp_ = hazard_pointer(); // releases the protection: the entry may now be reclaimed
    }

   private:
    friend class sharded_lru_cache;
    // n is protected by hp (validated while n was linked).
    handle(node* n, hazard_pointer&& hp) noexcept : node_(n), hp_(std::move(hp)) {
      if constexpr (in_place_values)
        copy_.emplace(n->value.load());
    }
    node* node_ = nullptr;
    hazard_pointer hp_;
    [[no_unique_address]] snapshot copy_{};
  };

  // A cache of `capacity` entries with the default shard count and read buffering.
  explicit sharded_lru_cache(std::size_t capacity) : sharded_lru_cache(sharded_lru_options{capacity}) {}

  // capacity is in charge units when a weigher is given (each entry weighs weigher(key, value)),
  // in entries otherwise. Throws std::invalid_argument naming the problem: capacity 0, shards not a
  // power of two, or fewer capacity units than shards.
  explicit sharded_lru_cache(const sharded_lru_options& options, weigher_type weigher = {},
                             removal_callback on_removal = {}, Hash hash = Hash(), KeyEqual eq = KeyEqual(),
                             const Allocator& alloc = Allocator())
      : hash_(std::move(hash)), eq_(std::move(eq)), weigher_(std::move(weigher)), on_removal_(std::move(on_removal)),
        alloc_(alloc), capacity_(options.capacity), read_buffering_(options.read_buffering) {
    if (options.capacity == 0)
      throw std::invalid_argument("sharded_lru_cache: capacity must be at least 1");
    std::size_t shards = options.shards;
    if (shards == 0) {
      const std::size_t hw = std::max<std::size_t>(1, std::thread::hardware_concurrency());
      shards = std::min<std::size_t>(256, std::bit_ceil(16 * hw));
      while (shards > 1 && options.capacity / shards < 64)
        shards /= 2;
    } else if (!std::has_single_bit(shards)) {
      throw std::invalid_argument("sharded_lru_cache: shards must be a power of two (got " + std::to_string(shards) +
                                  "; use " + std::to_string(std::bit_floor(shards)) + " or " +
                                  std::to_string(std::bit_ceil(shards)) + ")");
    } else if (shards > options.capacity) {
      throw std::invalid_argument("sharded_lru_cache: capacity " + std::to_string(options.capacity) +
                                  " cannot be split over " + std::to_string(shards) +
                                  " shards (each needs at least 1); use fewer shards");
    }
    shard_bits_ = static_cast<unsigned>(std::countr_zero(shards));
    shards_ = std::make_unique<shard[]>(shards);
    for (std::size_t i = 0; i < shards; ++i) {
      shard& s = shards_[i];
      s.capacity = capacity_ / shards + (i < capacity_ % shards ? 1 : 0);
      s.account.budget = s.capacity / 2;
      s.account.step = s.account.budget / 4;
      reclaim_->budget += s.account.budget - s.account.step; // B - sum of the steps (lru_cache_window)
      // Unweighted: one bucket per entry the shard can hold, never resized. Weighted: grows.
      const std::size_t buckets = weigher_ ? 64 : std::bit_ceil(s.capacity);
      auto t = std::make_unique<table>(buckets);
      // (C1) relaxed: the cache is published to other threads by whatever shares the cache.
      s.tab.store(t.release(), std::memory_order_relaxed);
    }
  }

  sharded_lru_cache(const sharded_lru_cache&) = delete;
  sharded_lru_cache& operator=(const sharded_lru_cache&) = delete;

  // Precondition: no other thread uses the cache (handles may live on). Every entry is retired and
  // hazard_pointer_clean_up() reclaims those no handle pins (the others are reclaimed by a scan
  // after their handle is released).
  ~sharded_lru_cache() {
    bool retired = false;
    for (std::size_t i = 0; i < shard_count(); ++i) {
      shard& s = shards_[i];
      for (node* n = s.newest; n != nullptr;) {
        node* older = n->older;
        n->retire(node_deleter{n->alloc});
        retired = true;
        n = older;
      }
      // (C2) relaxed: no concurrent readers (precondition).
      delete s.tab.load(std::memory_order_relaxed);
      // (C4) relaxed: written by this cache's retires, all sequenced before (precondition).
      retired = retired || s.account.window.load(std::memory_order_relaxed) != 0;
    }
    // (C5) relaxed: as C4.
    retired = retired || reclaim_->window.load(std::memory_order_relaxed) != 0;
    if (retired)
      hazard_pointer_clean_up();
  }

  // The value for key, or nullopt. Lock-free with read buffering; marks the entry for recency.
  std::optional<V> get(const K& key) requires std::copy_constructible<V> {
    std::optional<V> out;
    lookup(key, [&](node* n, hazard_pointer&) { out.emplace(n->value.load()); });
    return out;
  }

  // A handle pinning key's entry (empty if absent). Lock-free with read buffering; marks the entry.
  handle get_handle(const K& key) {
    handle out;
    lookup(key, [&](node* n, hazard_pointer& hp) {
      out = handle(n, std::move(hp)); // the protection moves into the handle
    });
    return out;
  }

  // Whether key is present. Does not count as a hit or miss and does not update recency.
  bool contains(const K& key) const {
    const std::uint64_t h = hash_of(key);
    return find_node(shard_for(h), key, h, [](node*, hazard_pointer&) {});
  }

  // Inserts or replaces key's value (the entry becomes the most recent) and evicts least recently
  // used entries to stay within capacity. Returns false if the entry weighs more than a shard's
  // capacity (max_charge()): it is not cached, and any previous value for key is removed.
  bool put(K key, V value) {
    const std::uint64_t h = hash_of(key);
    const std::size_t charge = weigher_ ? weigher_(key, value) : 1;
    shard& s = shard_for(h);
    removed_list removed;
    bool admitted = true;
    fresh_node fresh; // destroyed after the lock is dropped if not linked
    if constexpr (!in_place_values)
      // Built before taking the lock (allocation and copies stay outside it).
      fresh = make_node(h, charge, std::move(key), std::move(value));
    prefetch_bucket(s, h);
    {
      std::lock_guard lock(s.mutex);
      prefetch_victim_locked(s);
      if constexpr (in_place_values) {
        node* old = find_locked(s, key, h);
        if (old != nullptr && charge <= s.capacity) {
          invalidate_load_locked(s, key);
          overwrite_locked(s, old, key, value, charge, removed); // no node, no retire
        } else {
          // A new entry: built under the lock (V is a copy of bytes; the memory comes from the
          // node cache, and from the allocator only when that is empty).
          fresh = make_node(h, charge, std::move(key), value);
          invalidate_load_locked(s, fresh->key);
          admitted = link_locked(s, fresh, old, removed);
        }
      } else {
        invalidate_load_locked(s, fresh->key);
        admitted = link_locked(s, fresh, find_locked(s, fresh->key, h), removed);
      }
    }
    notify(s, removed); // before `key` or `fresh` is destroyed: an overwrite reports that key
    return admitted;
  }

  // Removes key; returns whether it was present.
  bool erase(const K& key) {
    const std::uint64_t h = hash_of(key);
    shard& s = shard_for(h);
    removed_list removed;
    {
      std::lock_guard lock(s.mutex);
      invalidate_load_locked(s, key);
      node* n = find_locked(s, key, h);
      if (n == nullptr)
        return false;
      remove_locked(s, n, removal_cause::erased, removed);
      publish_size_locked(s);
    }
    notify(s, removed);
    return true;
  }

  // The cached value, or loader(key)'s result, which is inserted. Concurrent misses on one key call
  // the loader once (the others wait). A loader exception reaches every waiter and is not cached.
  // Throws std::logic_error instead of waiting for a load that waits, directly or through a chain
  // of other loads, for a load this thread is running (it would wait forever).
  template <class Loader>
    requires std::invocable<Loader&, const K&> && std::convertible_to<std::invoke_result_t<Loader&, const K&>, V> &&
        std::copy_constructible<V> && std::copy_constructible<K>
            V get_or_load(const K& key, Loader&& loader) {
      std::optional<V> hit;
      if (lookup(key, [&](node* n, hazard_pointer&) { hit.emplace(n->value.load()); }))
        return std::move(*hit);

      const std::uint64_t h = hash_of(key);
      shard& s = shard_for(h);
      std::shared_ptr<load_state> state; // this thread is the leader if set and `running` is not
      bool leader = false;
      {
        std::lock_guard lock(s.mutex);
        if (node* n = find_locked(s, key, h)) // loaded by someone else since our lookup
          return n->value.load();
        if (!s.loads)
          s.loads = std::make_unique<load_map>(8, hash_, eq_);
        if (auto it = s.loads->find(key); it != s.loads->end()) {
          state = it->second; // kept alive while registered in the wait-for graph
        } else {
          state = std::make_shared<load_state>(); // before the map entry: a throw leaves no trace
          s.loads->emplace(key, state);
          leader = true;
        }
      }
      if (!leader) {
        detail::lru_wait_graph& graph = detail::lru_wait_graph::instance();
        graph.begin_wait(*state); // throws std::logic_error on a cycle
        struct end_wait {
          detail::lru_wait_graph& g;
          ~end_wait() { g.end_wait(); }
        } registered{graph};
        return V(state->result.get()); // rethrows the loader's exception
      }

      // The leader. Every path below fulfils the promise exactly once before anything that can
      // throw after the load (inserting may evict, and the removal callback may throw), and removes
      // the in-flight entry: a waiter never waits for a load that ended.
      std::optional<V> loaded;
      try {
        loaded.emplace(std::invoke(loader, key));
      } catch (...) {
        stats_.load_failures.increment();
        deliver_exception(*state, std::current_exception());
        end_load(s, key, h, state, nullptr);
        throw;
      }
      stats_.loads.increment();
      try {
        detail::lru_wait_graph::instance().finish(*state);
        state->promise.set_value(*loaded);
      } catch (...) { // copying the value threw: the waiters get that exception
        state->promise.set_exception(std::current_exception());
        end_load(s, key, h, state, nullptr);
        throw;
      }
      end_load(s, key, h, state, &*loaded);
      return std::move(*loaded);
    }

  // Removes every entry (removal cause `cleared`); loads running meanwhile are not inserted. If a
  // removal callback throws, every shard is still cleared; the first exception is rethrown.
  void clear() {
    std::exception_ptr first_error;
    for (std::size_t i = 0; i < shard_count(); ++i) {
      shard& s = shards_[i];
      removed_list removed;
      {
        std::lock_guard lock(s.mutex);
        if (s.loads)
          s.loads->clear(); // detach running loads: they finish, but do not insert
        while (s.oldest != nullptr)
          remove_locked(s, s.oldest, removal_cause::cleared, removed);
        publish_size_locked(s);
      }
      try {
        notify(s, removed);
      } catch (...) {
        if (!first_error)
          first_error = std::current_exception();
      }
    }
    if (first_error)
      std::rethrow_exception(first_error);
  }

  // Entries in the cache (a sum of per-shard counts read without locks: exact when quiescent).
  std::size_t size() const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < shard_count(); ++i)
      // (Z1) relaxed: a statistic; each shard's value respects its capacity at every instant.
      total += shards_[i].published_size.load(std::memory_order_relaxed);
    return total;
  }
  // Sum of the charges of the entries in the cache (== size() without a weigher).
  std::size_t total_charge() const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < shard_count(); ++i)
      // (Z2) relaxed: as Z1.
      total += shards_[i].published_charge.load(std::memory_order_relaxed);
    return total;
  }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t shard_count() const noexcept { return std::size_t{1} << shard_bits_; }
  // The heaviest entry put() accepts: the smallest shard's capacity.
  std::size_t max_charge() const noexcept { return capacity_ / shard_count(); }
  // B = the sum over shards of floor(shard capacity / 2): the retired charge the shard and cache
  // windows hold at most at rest before a forced scan (the B of the memory bound above).
  std::size_t reclamation_budget() const noexcept {
    std::size_t total = 0;
    for (std::size_t i = 0; i < shard_count(); ++i)
      total += shards_[i].account.budget;
    return total;
  }
  bool read_buffering() const noexcept { return read_buffering_; }
  allocator_type get_allocator() const noexcept { return allocator_type(alloc_); }

  sharded_lru_stats stats() const {
    return {stats_.hits.load(),      stats_.misses.load(), stats_.inserts.load(),       stats_.updates.load(),
            stats_.evictions.load(), stats_.loads.load(),  stats_.load_failures.load(), stats_.dropped_reads.load()};
  }

 private:
  // A running load. It stays in the shard's map until it ends, or until a put, erase or clear of
  // its key detaches it (then it does not insert its value, and the next miss starts a new load).
  struct load_state : detail::lru_load_base {
    std::promise<V> promise;
    std::shared_future<V> result = promise.get_future().share();
  };
  using load_map = std::unordered_map<K, std::shared_ptr<load_state>, Hash, KeyEqual>;

  struct shard {
    // Read by every lookup, written only by a resize: on lines the writers do not write.
    alignas(cache_line_size) std::atomic<table*> tab{nullptr};
    std::atomic<std::uint64_t> resize_seq{0}; // odd while the bucket array is being replaced
    // The writers' state (the shard lock: spins for a moment, then parks; detail/park_lock.hpp).
    alignas(cache_line_size) detail::park_lock mutex;
    node* newest = nullptr; // LRU list
    node* oldest = nullptr;
    std::size_t capacity = 0;
    std::size_t size = 0; // entries
    std::size_t charge = 0;
    std::atomic<std::size_t> published_size{0};
    std::atomic<std::size_t> published_charge{0};
    std::unique_ptr<load_map> loads; // keys being loaded
    detail::lru_account account;     // written after the lock, by the retiring thread
  };

  // A node built but not linked (yet): destroyed, and its memory recycled, unless released.
  struct fresh_deleter {
    void operator()(node* n) const noexcept { destroy_node(n); }
  };
  using fresh_node = std::unique_ptr<node, fresh_deleter>;

  // Entries removed under the lock, linked through `newer`, handed to the callback and released
  // after the lock is dropped (a value's destructor or the callback may use the cache). An in-place
  // put records the value it overwrote instead (its entry stays in the cache).
  struct removed_list {
    node* first = nullptr;
    node* last = nullptr;
    const K* overwritten_key = nullptr;
    std::optional<V> overwritten_value;
    void add(node* n, removal_cause cause) noexcept {
      n->cause = cause;
      n->newer = nullptr;
      (last != nullptr ? last->newer : first) = n;
      last = n;
    }
  };

  struct statistics {
    sharded_counter hits, misses, inserts, updates, evictions, loads, load_failures, dropped_reads;
  };

  std::uint64_t hash_of(const K& key) const { return detail::mix_hash(static_cast<std::uint64_t>(hash_(key))); }
  shard& shard_for(std::uint64_t h) const noexcept {
    return shards_[shard_bits_ == 0 ? 0 : static_cast<std::size_t>(h >> (64 - shard_bits_))];
  }

  template <class KK, class VV>
  fresh_node make_node(std::uint64_t h, std::size_t charge, KK&& key, VV&& value) {
    node* raw;
    if constexpr (node_cache::enabled) {
      raw = node_cache::allocate();
    } else {
      node_allocator a(alloc_);
      raw = node_traits::allocate(a, 1);
    }
    try {
      ::new (static_cast<void*>(raw)) node(h, charge, alloc_, std::forward<KK>(key), std::forward<VV>(value));
    } catch (...) {
      if constexpr (node_cache::enabled) {
        node_cache::deallocate(raw);
      } else {
        node_allocator a(alloc_);
        node_traits::deallocate(a, raw, 1);
      }
      throw;
    }
    return fresh_node(raw);
  }

  // Cache misses a put will take, started early so they overlap (the chain walk, the victim and
  // the victim's neighbours are otherwise fetched one after the other, each a dependent load).
  static void prefetch_bucket(shard& s, std::uint64_t h) noexcept {
    // (P1) acquire: as L2 (a prefetch needs no ordering, but the array must be a published one).
    const table* t = s.tab.load(std::memory_order_acquire);
    detail::lru_prefetch(&t->slots[h & t->mask], false);
  }
  static void prefetch_victim_locked(shard& s) noexcept {
    if (s.charge >= s.capacity && s.oldest != nullptr) { // a put will evict it
      detail::lru_prefetch(s.oldest, true);
      detail::lru_prefetch(reinterpret_cast<const char*>(s.oldest) + 64, true);
    }
  }

  // Destroys a node no hazard pointer can protect (never linked, or no reader can exist).
  static void destroy_node(node* n) noexcept { node_deleter{n->alloc}(n); }

  // Walks key's chain under hazard pointers; calls on_hit(n, hp) while hp protects n (on_hit may
  // take the protection: get_handle moves hp into the handle). Returns whether key was found.
  template <class OnHit>
  bool find_node(shard& s, const K& key, std::uint64_t h, OnHit&& on_hit) const {
    hazard_pointer hp = make_hazard_pointer();
    hazard_pointer hp_next; // made only if the walk goes past the chain's first node
    const auto walked = chain::walk(
        s.resize_seq, s.tab, h, hp, hp_next, [] { return make_hazard_pointer(); },
        [&](const node* n) { return eq_(n->key, key); }, [&](node* n) { on_hit(n, hp); });
    if (walked != chain::walk_result::unsure)
      return walked == chain::walk_result::hit;
    // A resize ran or is running: look under the lock (which waits for the resize to end) rather
    // than spin while a possibly preempted writer finishes it.
    std::lock_guard lock(s.mutex);
    node* found = find_locked(s, key, h);
    if (found == nullptr)
      return false;
    // The node cannot be retired before we unlock (removals take the lock), so this unvalidated
    // protection is published before any retire of it (reset_protection's rule).
    hp.reset_protection(found);
    on_hit(found, hp);
    return true;
  }

  template <class OnHit>
  bool lookup(const K& key, OnHit&& on_hit) {
    const std::uint64_t h = hash_of(key);
    shard& s = shard_for(h);
    const node* hit = nullptr;
    const bool found = find_node(s, key, h, [&](node* n, hazard_pointer& hp) {
      if (read_buffering_ && n->marked.load(std::memory_order_relaxed) == 0) // (E1) relaxed: see E2
        // (E2) relaxed: a hint that the shard lock's holder reads (E3) when this entry is the
        // eviction candidate. No other data is published with it. A mark that happens before a
        // write's lock acquisition is visible to that write's E3 by coherence (the lock's
        // acquire orders it); a concurrent one may be seen or not. Written while n is protected
        // (memory alive), even if n was removed meanwhile (then the mark is never read).
        n->marked.store(1, std::memory_order_relaxed);
      hit = n; // only compared from now on (promote_on_hit does not dereference it)
      on_hit(n, hp);
    });
    if (!found) {
      stats_.misses.increment();
      return false;
    }
    stats_.hits.increment();
    if (!read_buffering_)
      promote_on_hit(s, hit, h);
    return true;
  }

  // read_buffering off: every hit moves its entry to the front under the shard lock.
  void promote_on_hit(shard& s, const node* n, std::uint64_t h) {
    std::lock_guard lock(s.mutex);
    promote_locked(s, n, h);
  }

  // Moves the entry whose address is n to the front, if it is still in the cache. n is never
  // dereferenced: it is found (or not) by walking h's chain under the lock, so an entry that was
  // removed since the lookup is ignored. (If its memory was reused by a new entry in the same
  // chain, that entry is promoted: a harmless recency error.)
  void promote_locked(shard& s, const void* n, std::uint64_t h) noexcept {
    node* c = chain::find_locked(s.tab, h, [n](const node* candidate) { return candidate == n; });
    if (c == nullptr)
      return;
    lru_unlink(s, c);
    lru_push_front(s, c);
  }

  node* find_locked(shard& s, const K& key, std::uint64_t h) const {
    return chain::find_locked(s.tab, h, [&](const node* c) { return eq_(c->key, key); });
  }

  // Puts `fresh`'s key and value in the cache (end_load): see link_locked.
  bool insert_locked(shard& s, fresh_node& fresh, removed_list& removed) {
    invalidate_load_locked(s, fresh->key); // a load's own entry is already gone (end_load)
    return link_locked(s, fresh, find_locked(s, fresh->key, fresh->hash), removed);
  }

  // Puts `fresh`'s key and value in the cache, where `old` is the entry with that key (or null):
  // overwrites old's value in place (in_place_values), or links `fresh` in place of old. Evicts to
  // fit. Returns false if fresh is too heavy for the shard (then old is removed). `fresh` stays
  // owned by the caller unless linked: it is destroyed after the lock is dropped (its value's
  // destructor may use the cache). Precondition: loads of the key are detached.
  bool link_locked(shard& s, fresh_node& fresh, node* old, removed_list& removed) {
    if (fresh->charge > s.capacity) {
      if (old != nullptr) {
        remove_locked(s, old, removal_cause::rejected, removed);
        publish_size_locked(s);
      }
      return false;
    }
    if constexpr (in_place_values) {
      if (old != nullptr) {
        overwrite_locked(s, old, fresh->key, fresh->value.load(), fresh->charge, removed);
        return true;
      }
    }
    node* n = fresh.release();
    if (old != nullptr) {
      chain::replace(old, n); // readers see either the old or the new entry
      lru_unlink(s, old);
      s.size -= 1;
      s.charge -= old->charge;
      stats_.updates.increment();
      removed.add(old, removal_cause::replaced);
    } else {
      chain::insert(s.tab, n);
      stats_.inserts.increment();
    }
    lru_push_front(s, n);
    s.size += 1;
    s.charge += n->charge;
    evict_locked(s, n, removed);
    // (M5) relaxed: the array is written only under the lock we hold.
    if (weigher_ && s.size > s.tab.load(std::memory_order_relaxed)->mask + 1)
      chain::grow(s.resize_seq, s.tab);
    publish_size_locked(s);
    return true;
  }

  // Overwrites a present entry's value in place (in_place_values): readers copy either the old or
  // the new value (detail::lru_value). The entry becomes the most recent; `key` (the caller's, alive
  // until notify) and the old value go to the removal callback.
  void overwrite_locked(shard& s, node* old, const K& key, const V& value, std::size_t charge, removed_list& removed) {
    if (on_removal_) {
      removed.overwritten_value.emplace(old->value.load());
      removed.overwritten_key = &key;
    }
    old->value.store(value);
    s.charge = s.charge - old->charge + charge;
    old->charge = charge;
    stats_.updates.increment();
    lru_unlink(s, old);
    lru_push_front(s, old);
    evict_locked(s, old, removed);
    publish_size_locked(s);
  }

  // A put gives at most this many second chances (bounds its work: each is a list move).
  static constexpr int max_second_chances = 16;

  // Evicts least recently used entries until the shard fits. A marked least recent entry gets a
  // second chance (unmarked, made the most recent), up to max_second_chances times; after that,
  // marked entries are evicted too (counted as dropped_reads). Never `keep`, the entry this put made
  // the most recent (it alone fits): if second chances brought it to the end of the list, every
  // other entry has been passed over once, and it goes back to the front.
  void evict_locked(shard& s, node* keep, removed_list& removed) {
    int chances = 0;
    while (s.charge > s.capacity) {
      node* victim = s.oldest;
      if (victim == keep) {
        lru_unlink(s, victim);
        lru_push_front(s, victim);
        continue;
      }
      // (E3) relaxed: see E2. Under the shard lock.
      const bool marked = victim->marked.load(std::memory_order_relaxed) != 0;
      if (marked && chances < max_second_chances) {
        ++chances;
        lru_unlink(s, victim);
        lru_push_front(s, victim); // unmarks it
        continue;
      }
      if (marked)
        stats_.dropped_reads.increment();
      stats_.evictions.increment();
      remove_locked(s, victim, removal_cause::evicted, removed);
    }
  }

  // Unlinks n from its chain (chain::unlink: marked dead, readers standing on it walk again) and
  // from the LRU list.
  void remove_locked(shard& s, node* n, removal_cause cause, removed_list& removed) {
    chain::unlink(n);
    lru_unlink(s, n);
    s.size -= 1;
    s.charge -= n->charge;
    removed.add(n, cause);
  }

  // Detaches a running load of key: it will not insert its (older) value, and a later miss starts a
  // new load instead of joining it.
  void invalidate_load_locked(shard& s, const K& key) {
    if (s.loads && !s.loads->empty())
      s.loads->erase(key);
  }

  static void deliver_exception(load_state& state, std::exception_ptr error) noexcept {
    detail::lru_wait_graph::instance().finish(state);
    state.promise.set_exception(std::move(error));
  }

  // Ends the leader's load (its promise is already fulfilled): removes its in-flight entry and,
  // with a value, inserts it, unless a put, erase or clear detached the load meanwhile.
  void end_load(shard& s, const K& key, std::uint64_t h, const std::shared_ptr<load_state>& state, const V* value) {
    fresh_node fresh; // built outside the lock, destroyed after it if not inserted
    if (value != nullptr) {
      try {
        const std::size_t charge = weigher_ ? weigher_(key, *value) : 1;
        fresh = make_node(h, charge, key, *value);
      } catch (...) {
        // Not cached, but delivered: the waiters and the caller have the value.
      }
    }
    removed_list removed;
    {
      std::lock_guard lock(s.mutex);
      const auto it = s.loads->find(key);
      const bool attached = it != s.loads->end() && it->second == state;
      if (attached)
        s.loads->erase(it);
      if (fresh && attached)
        insert_locked(s, fresh, removed);
    }
    notify(s, removed);
  }

  void publish_size_locked(shard& s) noexcept {
    // (Z3) relaxed: read by size() (Z1) and total_charge() (Z2) as statistics.
    s.published_size.store(s.size, std::memory_order_relaxed);
    s.published_charge.store(s.charge, std::memory_order_relaxed); // (Z4) relaxed: as Z3
  }

  static void lru_unlink(shard& s, node* n) noexcept {
    (n->newer != nullptr ? n->newer->older : s.newest) = n->older;
    (n->older != nullptr ? n->older->newer : s.oldest) = n->newer;
    n->newer = n->older = nullptr;
  }
  // Makes n the most recent, unmarked: a mark means "hit since it was last made the most recent".
  static void lru_push_front(shard& s, node* n) noexcept {
    // (E4) relaxed: see E2; only written when set (the line is the one lookups read). A lookup's
    // concurrent E2 may land before or after it: either way a recent hit is remembered or lost,
    // never an entry's memory or links.
    if (n->marked.load(std::memory_order_relaxed) != 0) // (E5) relaxed: as E3
      n->marked.store(0, std::memory_order_relaxed);
    n->older = s.newest;
    n->newer = nullptr;
    (s.newest != nullptr ? s.newest->newer : s.oldest) = n;
    s.newest = n;
  }

  // Runs the removal callback for each removed value, retires each removed entry, and charges the
  // shard's account (which may force a reclamation: see detail::lru_account). If a callback
  // throws, the others still run and every entry is retired; the first exception is rethrown.
  void notify(shard& s, removed_list& removed) {
    std::exception_ptr first_error;
    if (removed.overwritten_value) {
      try {
        on_removal_(*removed.overwritten_key, *removed.overwritten_value, removal_cause::replaced);
      } catch (...) {
        first_error = std::current_exception();
      }
      removed.overwritten_value.reset();
    }
    std::size_t charge = 0;
    for (node* n = removed.first; n != nullptr;) {
      node* next = n->newer;
      if (on_removal_) {
        try {
          if constexpr (in_place_values)
            on_removal_(n->key, n->value.load(), n->cause);
          else
            on_removal_(n->key, n->value.ref(), n->cause);
        } catch (...) {
          if (!first_error)
            first_error = std::current_exception();
        }
      }
      charge += n->charge;
      n->retire(node_deleter{n->alloc}); // n may be reclaimed from here on
      n = next;
    }
    removed.first = removed.last = nullptr;
    if (charge != 0)
      s.account.retired(charge, *reclaim_);
    if (first_error)
      std::rethrow_exception(first_error);
  }

  Hash hash_;
  KeyEqual eq_;
  weigher_type weigher_;
  removal_callback on_removal_;
  node_allocator alloc_;
  std::size_t capacity_;
  bool read_buffering_;
  unsigned shard_bits_ = 0;
  std::unique_ptr<shard[]> shards_;
  cache_padded<detail::lru_cache_window> reclaim_; // the cache-wide level of the shards' accounts
  statistics stats_;
};

} // namespace otlpconc
