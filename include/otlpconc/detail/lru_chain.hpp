// otlpconc/detail/lru_chain.hpp: the sharded LRU's hash chains, as readers and the lock holder
// share them: the lock-free walk of a lookup, the unlink (with its dead mark), the in-place
// replacement, the insert, and the doubling of a bucket array while readers walk it.
//
// Internal to sharded_lru_cache. Templated on the Sync policy (detail/sync.hpp) so that the model
// build checks the walk against unlink and resize under the C++ memory model (tests/model,
// "[sharded_lru]"); sharded_lru_cache instantiates it with std_sync (std::atomic: no cost).
//
// Node requirements: `typename Sync::template atomic<Node*> next` (the chain link; its low bit is
// the dead mark, so alignof(Node) >= 2), `typename Sync::template atomic<Node*>* pprev` (the link
// that points to the node: lock holder only) and `const std::uint64_t hash`.
//
// The protocol (the numbered atomic operations are in the functions below):
//   - a reader protects a bucket's first node with a hazard pointer (validated: the bucket still
//     holds it after the protection is visible), then each successor from the node it stands on;
//   - an unlink stores the successor into the predecessor's link (U1, release), then the dead
//     mark into the node's own link (U2, release), keeping the successor; a reader that validates
//     a marked link walks again from the bucket (the node's successor may be removed too);
//   - a resize moves every node once, to the head of its chain in the new array, between two
//     increments of a sequence (odd while it runs): a walk that met a moved node may miss its key,
//     so a miss is trusted only if the sequence did not move.
#pragma once

#include "otlpconc/detail/sync.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace otlpconc::detail {

// One bucket array. Replaced arrays stay allocated (chained through `previous`) until the cache is
// destroyed, so a reader may still load from the array it started with.
template <class Node, class Sync = std_sync>
struct lru_table {
  explicit lru_table(std::size_t buckets)
      : mask(buckets - 1), slots(std::make_unique<typename Sync::template atomic<Node*>[]>(buckets)) {}
  std::size_t mask;
  std::unique_ptr<typename Sync::template atomic<Node*>[]> slots;
  std::unique_ptr<lru_table> previous;
};

template <class Node, class Sync = std_sync>
struct lru_chain {
  template <class T>
  using atomic = typename Sync::template atomic<T>;
  using table = lru_table<Node, Sync>;

  static Node* marked_dead(Node* p) noexcept {
    return reinterpret_cast<Node*>(reinterpret_cast<std::uintptr_t>(p) | 1);
  }
  static bool is_dead(const Node* p) noexcept { return (reinterpret_cast<std::uintptr_t>(p) & 1) != 0; }

  enum class walk_result {
    hit,   // on_hit(n) was called while hp protected n
    miss,  // no node of the chain matched, and no resize ran during the walk
    unsure // a resize ran (or is running) during the walk: look again under the lock
  };

  // Walks h's chain. match(n) is called on protected nodes; on the first match, on_hit(n) is called
  // while hp protects n (on_hit may take hp's protection). hp_next is made by make_hp() only if the
  // walk goes past a chain's first node.
  template <class HP, class MakeHP, class Match, class OnHit>
  static walk_result walk(const atomic<std::uint64_t>& resize_seq, const atomic<table*>& tab, std::uint64_t h, HP& hp,
                          HP& hp_next, MakeHP&& make_hp, Match&& match, OnHit&& on_hit) {
    for (;;) {
      // (L1) acquire: pairs with the release store that ended the last resize (G4): the array it
      // published and its chains are visible.
      const std::uint64_t seq = resize_seq.load(std::memory_order_acquire);
      // (L2) acquire: pairs with the release store of a new array (G2).
      const table* t = tab.load(std::memory_order_acquire);
      // protect() validates that the bucket still holds n after the hazard pointer is visible, so n
      // was linked (not retired) at that instant. (H3's acquire pairs with the release stores that
      // link nodes: I1, I2, U1, G1.) Buckets never carry the dead mark.
      Node* n = hp.protect(t->slots[h & t->mask]);
      bool stale = false;
      while (n != nullptr) {
        if (n->hash == h && match(n)) {
          on_hit(n);
          return walk_result::hit;
        }
        // (L5) acquire, as L3 (for L4: a null written by a resize's relink, G1, must make L4 see
        // the odd sequence). The end of the chain needs no hazard pointer: an unmarked null is what
        // a validated protect of it (L3) returns, nothing followed n in its chain when this load
        // read it (a removal relinks n's predecessor to n's successor, here the same null, before
        // it marks n), so the walk ends as it would after L3. Saves a hazard pointer on every miss
        // that walks a non-empty chain.
        if (n->next.load(std::memory_order_acquire) == nullptr)
          break;
        if (hp_next.empty())
          hp_next = make_hp();
        // (L3) protect's validating load (H3, acquire) of n->next pairs with the release store of
        // the dead mark (U2): if the link it validated is unmarked, n was still linked after the
        // hazard pointer on next was visible, with next as its successor, so next was linked then
        // (a removed node's old predecessor never points to it again) and cannot be reclaimed. If
        // it is marked, n was removed and its successor may be too: walk again.
        Node* next = hp_next.protect(n->next);
        if (is_dead(next)) {
          stale = true;
          break;
        }
        hp.swap(hp_next);
        n = next;
      }
      if (stale)
        continue;
      // A miss is trusted only if no resize moved nodes between chains while we walked. (L4)
      // acquire: if the walk read any link written by a resize (release stores G1), this load sees
      // the odd value stored before it (G0) or a later one.
      if ((seq & 1) == 0 && resize_seq.load(std::memory_order_acquire) == seq)
        return walk_result::miss;
      return walk_result::unsure;
    }
  }

  // The node of h's chain for which match(n) holds, or nullptr. Lock holder only.
  template <class Match>
  static Node* find_locked(const atomic<table*>& tab, std::uint64_t h, Match&& match) {
    // (M1) relaxed: the array is written only under the lock we hold.
    const table* t = tab.load(std::memory_order_relaxed);
    // (M2) relaxed: as M1.
    for (Node* c = t->slots[h & t->mask].load(std::memory_order_relaxed); c != nullptr;
         c = c->next.load(std::memory_order_relaxed))
      if (c->hash == h && match(c))
        return c;
    return nullptr;
  }

  // Links n (not yet reachable) at the head of its chain. Lock holder only.
  static void insert(const atomic<table*>& tab, Node* n) noexcept {
    const table* t = tab.load(std::memory_order_relaxed); // (M5) relaxed: as M1
    atomic<Node*>& bucket = t->slots[n->hash & t->mask];
    Node* first = bucket.load(std::memory_order_relaxed); // (M8) relaxed: as M1
    n->next.store(first, std::memory_order_relaxed);      // (M7') relaxed: n is not yet reachable; I2 publishes it
    n->pprev = &bucket;
    if (first != nullptr)
      first->pprev = &n->next;
    // (I2) release: publishes n's contents to readers' acquire loads (H3).
    bucket.store(n, std::memory_order_release);
  }

  // Puts n (not yet reachable) in old's place in its chain and marks old dead: readers see either.
  // Lock holder only.
  static void replace(Node* old, Node* n) noexcept {
    Node* succ = old->next.load(std::memory_order_relaxed); // (M6) relaxed: as M1
    // (M7) relaxed: n is not yet reachable; I1 publishes it.
    n->next.store(succ, std::memory_order_relaxed);
    n->pprev = old->pprev;
    if (succ != nullptr)
      succ->pprev = &n->next;
    // (I1) release: publishes n's contents to readers' acquire loads (H3).
    n->pprev->store(n, std::memory_order_release);
    // (U2') release: the dead mark, as U2.
    old->next.store(marked_dead(succ), std::memory_order_release);
  }

  // Unlinks n through its back link (no walk of its chain: the bucket and predecessor are only
  // written, so their cache misses do not stall the lock holder) and marks it dead. Lock holder only.
  static void unlink(Node* n) noexcept {
    Node* succ = n->next.load(std::memory_order_relaxed); // (M9) relaxed: as M1
    // (U1) release: readers that load the new link see the successor's contents (published to us
    // by the lock) as well.
    n->pprev->store(succ, std::memory_order_release);
    if (succ != nullptr)
      succ->pprev = n->pprev;
    // (U2) release: the dead mark; pairs with the readers' validating acquire (L3). The successor
    // is kept: a reader standing on n sees the mark and walks again.
    n->next.store(marked_dead(succ), std::memory_order_release);
  }

  // Doubles the bucket array. Readers may be walking the old chains: every node is moved once, to
  // the head of its new chain, so a walk still ends; a walk that met a moved node may miss its
  // key, which the resize sequence (L1/L4) detects. Returns false, changing nothing, when the new
  // array cannot be allocated (longer chains, still correct). Lock holder only.
  static bool grow(atomic<std::uint64_t>& resize_seq, atomic<table*>& tab) noexcept {
    table* old = tab.load(std::memory_order_relaxed); // (M10) relaxed: as M1
    table* grown;
    try {
      grown = new table((old->mask + 1) * 2);
    } catch (const std::bad_alloc&) {
      return false;
    }
    // (M11) relaxed: written only under the lock.
    const std::uint64_t seq = resize_seq.load(std::memory_order_relaxed);
    // (G0) relaxed: made visible to readers by the release stores after it (G1, G2).
    resize_seq.store(seq + 1, std::memory_order_relaxed);
    for (std::size_t b = 0; b <= old->mask; ++b) {
      // (M12) relaxed: as M1.
      for (Node* n = old->slots[b].load(std::memory_order_relaxed); n != nullptr;) {
        Node* next = n->next.load(std::memory_order_relaxed); // (M13) relaxed: as M1
        atomic<Node*>& head = grown->slots[n->hash & grown->mask];
        Node* first = head.load(std::memory_order_relaxed); // (M15) relaxed: as M1
        // (G1) release: a reader that follows this link sees G0 and the chain behind it.
        n->next.store(first, std::memory_order_release);
        n->pprev = &head;
        if (first != nullptr)
          first->pprev = &n->next;
        head.store(n, std::memory_order_relaxed); // (M14) relaxed: published by G2
        n = next;
      }
    }
    // (G2) release: pairs with L2.
    tab.store(grown, std::memory_order_release);
    // Empty the old array so a reader that starts from it fails protect()'s validation or walks
    // nothing (and then fails the sequence check).
    for (std::size_t b = 0; b <= old->mask; ++b)
      old->slots[b].store(nullptr, std::memory_order_release); // (G3) release: as G1
    grown->previous.reset(old);
    // (G4) release: pairs with L1 and L4.
    resize_seq.store(seq + 2, std::memory_order_release);
    return true;
  }
};

} // namespace otlpconc::detail
