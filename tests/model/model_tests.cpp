// Model checking of the library's real headers under the C++ memory model (Relacy): every test
// instantiates a primitive with relacy_sync, which explores thread interleavings and the values a
// relaxed or acquire load may return, and reports data races on plain data, use of freed memory,
// leaks, assertion failures and deadlocks (a lost wake-up leaves a thread blocked forever).
//
// Usage: otlpconc_model [FILTER [full | bound N | random N]]
//   FILTER: a tag such as [hazard_pointer], or a substring of a name; "" or none runs all. The
//   optional search replaces every selected test's own. Exit status 0 when every test passed.
#include "model.hpp" // first

#include "otlpconc/chase_lev_deque.hpp"
#include "otlpconc/detail/cache_handshake.hpp"
#include "otlpconc/detail/event_count.hpp"
#include "otlpconc/detail/lru_chain.hpp"
#include "otlpconc/detail/park_lock.hpp"
#include "otlpconc/ms_queue.hpp"
#include "otlpconc/telemetry/detail/admission.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>

namespace {

using otlpconc::detail::fence_mode;
using otlpconc_model::model_test;
using otlpconc_model::registrar;
using otlpconc_model::relacy_sync;
using otlpconc_model::search;

// Exhaustive and context-bounded searches where they finish in seconds; elsewhere a random search
// of a fixed number of executions (scaled by OTLPCONC_STRESS_SCALE in main): a relaxed load may
// return any store its thread has not yet seen, and enumerating those choices is what makes the
// bounded search of the queue and the deque take hours.
constexpr search full{rl::sched_full, 1, 0};
constexpr search bound2{rl::sched_bound, 2, 0};
constexpr search random300k{rl::sched_random, 1, 300000};

// ---- event count: no lost wake-up ------------------------------------------------------------
// The waiter parks until it sees the flag; the notifier sets the flag (relaxed: the Dekker pair of
// fences orders it, as the pool's queues are ordered) and notifies. A lost wake-up leaves the
// waiter blocked with nobody left to wake it: Relacy reports a deadlock.
template <int Waiters>
struct event_count_no_lost_wakeup : model_test<event_count_no_lost_wakeup<Waiters>, Waiters + 1> {
  otlpconc::detail::basic_event_count<relacy_sync> ec;
  relacy_sync::atomic<bool> flag{false};

  void thread(unsigned index) {
    if (index < static_cast<unsigned>(Waiters)) {
      for (;;) {
        if (flag.load(std::memory_order_relaxed))
          break;
        const std::uint32_t key = ec.prepare_wait();
        if (flag.load(std::memory_order_relaxed)) {
          ec.cancel_wait();
          break;
        }
        ec.wait(key);
      }
    } else {
      flag.store(true, std::memory_order_relaxed);
      if constexpr (Waiters == 1)
        ec.notify_one();
      else
        ec.notify_all();
    }
    relacy_sync::thread_exit();
  }
};
[[maybe_unused]] const int r_ec1 =
    registrar::add<event_count_no_lost_wakeup<1>>("[event_count] park / notify_one, 2 threads: no lost wake-up", full);
[[maybe_unused]] const int r_ec2 = registrar::add<event_count_no_lost_wakeup<2>>(
    "[event_count] park / notify_all, 3 threads: no lost wake-up", bound2);

// ---- park lock (sharded_lru's shard lock): mutual exclusion, no lost wake-up ----------------
// Each thread increments a plain variable under the lock, Rounds times (thread 0 tries try_lock
// first: the Lockable entry point, and lock()'s own first step). Two holders at once, or a holder whose section does
// not happen after the previous one (an acquire or release weakened), is a data race on the
// variable; a thread parked with nobody left to wake it is a deadlock. Both are Relacy failures,
// and the final count checks that no increment was lost.
template <int Threads, int Rounds>
struct park_lock_exclusion : model_test<park_lock_exclusion<Threads, Rounds>, Threads> {
  otlpconc::detail::basic_park_lock<relacy_sync> lock;
  relacy_sync::var<int> count{0};

  void thread(unsigned index) {
    for (int r = 0; r < Rounds; ++r) {
      if (index != 0 || !lock.try_lock())
        lock.lock();
      const int c = count;
      count = c + 1;
      lock.unlock();
    }
    relacy_sync::thread_exit();
  }
  void after() {
    const int c = count;
    RL_ASSERT(c == Threads * Rounds);
  }
};
[[maybe_unused]] const int r_pl2 = registrar::add<park_lock_exclusion<2, 2>>(
    "[park_lock] 2 threads x 2 sections: mutual exclusion, ordered sections, no lost wake-up", full);
[[maybe_unused]] const int r_pl3 = registrar::add<park_lock_exclusion<3, 2>>(
    "[park_lock] 3 threads x 2 sections: mutual exclusion, ordered sections, no lost wake-up", bound2);

// ---- hazard pointers: protect / retire / scan ------------------------------------------------
// A reader protects the current object and reads it; a writer replaces it and retires the old one
// into a domain that scans on every retire. Reading a reclaimed object is ACCESS TO FREED MEMORY
// (the payload is an rl::var). Checked in both fence modes; at the end every retired object was
// reclaimed exactly once.
struct hp_node : otlpconc::basic_hazard_pointer_obj_base<hp_node, std::default_delete<hp_node>, relacy_sync> {
  explicit hp_node(int v) : value(v) {}
  // A write at reclamation: a reader's access that does not happen-before the scan's delete is a
  // data race Relacy reports (the delete alone is checked only against later accesses).
  ~hp_node() { value = -1; }
  relacy_sync::var<int> value;
};

template <fence_mode Mode, int Readers, int Writes>
struct hazard_pointer_protect_retire : model_test<hazard_pointer_protect_retire<Mode, Readers, Writes>, Readers + 1> {
  otlpconc_model::domain& domain = *this->default_domain;
  relacy_sync::atomic<hp_node*> src{nullptr};

  void before() {
    relacy_sync::mode = Mode;
    src.store(new hp_node(0), std::memory_order_relaxed);
  }
  void thread(unsigned index) {
    if (index < static_cast<unsigned>(Readers)) {
      auto hp = otlpconc::make_hazard_pointer(domain);
      hp_node* p = hp.protect(src);
      const int v = p->value; // must not be freed
      RL_ASSERT(v >= 0 && v <= Writes);
      hp.reset_protection();
    } else {
      for (int w = 1; w <= Writes; ++w) {
        hp_node* old = src.exchange(new hp_node(w), std::memory_order_acq_rel);
        old->retire(std::default_delete<hp_node>(), domain);
      }
    }
    relacy_sync::thread_exit();
  }
  void after() {
    delete src.load(std::memory_order_relaxed);
    otlpconc::hazard_pointer_clean_up(domain);
    const auto st = domain.stats();
    RL_ASSERT(st.retired == Writes);
    RL_ASSERT(st.reclaimed == Writes);
  }
};
[[maybe_unused]] const int r_hp1 = registrar::add<hazard_pointer_protect_retire<fence_mode::symmetric, 1, 1>>(
    "[hazard_pointer] protect / retire / scan, symmetric fences, 1 reader, 1 write", bound2);
[[maybe_unused]] const int r_hp2 = registrar::add<hazard_pointer_protect_retire<fence_mode::asymmetric, 1, 1>>(
    "[hazard_pointer] protect / retire / scan, membarrier, 1 reader, 1 write", bound2);
[[maybe_unused]] const int r_hp3 = registrar::add<hazard_pointer_protect_retire<fence_mode::symmetric, 2, 1>>(
    "[hazard_pointer] protect / retire / scan, symmetric fences, 2 readers, 1 write", random300k);
[[maybe_unused]] const int r_hp4 = registrar::add<hazard_pointer_protect_retire<fence_mode::asymmetric, 2, 1>>(
    "[hazard_pointer] protect / retire / scan, membarrier, 2 readers, 1 write", random300k);
[[maybe_unused]] const int r_hp5 = registrar::add<hazard_pointer_protect_retire<fence_mode::symmetric, 1, 2>>(
    "[hazard_pointer] protect / retire / scan, symmetric fences, 1 reader, 2 writes", random300k);
[[maybe_unused]] const int r_hp6 = registrar::add<hazard_pointer_protect_retire<fence_mode::asymmetric, 1, 2>>(
    "[hazard_pointer] protect / retire / scan, membarrier, 1 reader, 2 writes", random300k);

// ---- ms_queue: push / pop with values that have destructors ------------------------------------
// A stateful allocator (not always equal) keeps the node cache out: every node comes from the
// allocator and is freed at reclamation, so a node freed too early is ACCESS TO FREED MEMORY.
template <class T>
struct model_allocator : std::allocator<T> {
  using is_always_equal = std::false_type;
  template <class U>
  struct rebind {
    using other = model_allocator<U>;
  };
  model_allocator() = default;
  template <class U>
  model_allocator(const model_allocator<U>&) noexcept {}
  // Scribbles over what it frees: Relacy marks a variable dead when it is destroyed, not when the
  // memory under it is freed, so a value still in a freed node would read as alive.
  void deallocate(T* p, std::size_t n) {
    std::memset(static_cast<void*>(p), 0xdd, n * sizeof(T));
    std::allocator<T>::deallocate(p, n);
  }
};

struct item {
  static inline int destroyed = 0; // per execution (reset in before()); the model runs on one OS thread
  relacy_sync::var<int> producer;
  relacy_sync::var<int> seq;
  bool live = true;
  // A slow move, scripted: when a test sets others_done, a consumer thread (index >= slow_from)
  // that moves the value of sequence 0 out of the queue first waits until another consumer has
  // finished (its pops, and the reclamation after each). The move reads a node that only the
  // moving pop's hazard pointer keeps alive: a pop that let go of it too early reads freed memory.
  // (Relacy's random scheduler would almost never leave a pop paused for a whole other pop.)
  static inline relacy_sync::atomic<int>* others_done = nullptr;
  static inline unsigned slow_from = 0;
  item(int p, int s) : producer(p), seq(s) {}
  item(item&& o) noexcept : producer(-1), seq(-1) {
    if (others_done != nullptr && rl::thread_index() >= slow_from && o.seq.load() == 0)
      while (others_done->load(std::memory_order_acquire) == 0) // pairs with the consumer's release
        relacy_sync::yield();
    producer = o.producer.load();
    seq = o.seq.load();
    o.live = false;
  }
  ~item() {
    if (live)
      ++destroyed;
  }
};

template <int Producers, int Consumers, int PerProducer, int Attempts>
struct ms_queue_push_pop
    : model_test<ms_queue_push_pop<Producers, Consumers, PerProducer, Attempts>, Producers + Consumers> {
  using queue = otlpconc::ms_queue<item, model_allocator<item>, relacy_sync>;
  otlpconc_model::domain& domain = *this->default_domain;
  std::optional<queue> q;
  int taken[Producers][PerProducer];
  int last_seq[Consumers + 1][Producers]; // the last row: the drain in after()

  relacy_sync::atomic<int> consumers_done{0};

  void before() {
    item::others_done = Consumers > 1 ? &consumers_done : nullptr;
    item::slow_from = Producers;
    // membarrier mode, the default on Linux: the readers' fence is then only a compiler barrier,
    // so it cannot stand in for an acquire the queue forgot (the symmetric seq_cst fence would).
    relacy_sync::mode = fence_mode::asymmetric;
    item::destroyed = 0;
    q.emplace(domain, model_allocator<item>());
    for (auto& row : taken)
      for (int& t : row)
        t = 0;
    for (auto& row : last_seq)
      for (int& s : row)
        s = -1;
  }
  void take(int c, const item& v) {
    const int p = v.producer, s = v.seq;
    RL_ASSERT(p >= 0 && p < Producers && s >= 0 && s < PerProducer);
    RL_ASSERT(s > last_seq[c][p]); // per-producer FIFO as each consumer sees it
    last_seq[c][p] = s;
    ++taken[p][s];
  }
  void thread(unsigned index) {
    if (index < static_cast<unsigned>(Producers)) {
      for (int s = 0; s < PerProducer; ++s)
        q->push(item(static_cast<int>(index), s));
    } else {
      // A fixed number of attempts (no spinning until everything arrived: a spin loop multiplies
      // the executions to explore); what is left is drained in after().
      for (int a = 0; a < Attempts; ++a)
        if (std::optional<item> v = q->try_pop()) {
          take(static_cast<int>(index) - Producers, *v);
          // Reclaim now (a scan that frees what nobody protects), while other pops may be inside
          // their moves: a node they still read and no longer protect is freed under them.
          otlpconc::hazard_pointer_clean_up(domain);
        }
      consumers_done.fetch_add(1, std::memory_order_release); // pairs with the slow move's acquire
    }
    relacy_sync::thread_exit();
  }
  void after() {
    item::others_done = nullptr;
    while (std::optional<item> v = q->try_pop())
      take(Consumers, *v);
    RL_ASSERT(q->empty());
    for (auto& row : taken)
      for (int t : row)
        RL_ASSERT(t == 1); // nothing lost, nothing duplicated
    q.reset();
    otlpconc::hazard_pointer_clean_up(domain);
    // Every pushed value destroyed exactly once (moved-from shells do not count).
    RL_ASSERT(item::destroyed == Producers * PerProducer);
  }
};
[[maybe_unused]] const int r_q1 =
    registrar::add<ms_queue_push_pop<1, 1, 2, 2>>("[ms_queue] 1 producer x 1 consumer, 2 values", random300k);
[[maybe_unused]] const int r_q2 =
    registrar::add<ms_queue_push_pop<2, 1, 1, 2>>("[ms_queue] 2 producers x 1 consumer, 1 value each", random300k);
[[maybe_unused]] const int r_q3 =
    registrar::add<ms_queue_push_pop<1, 2, 2, 1>>("[ms_queue] 1 producer x 2 consumers, 2 values", random300k);

// ---- chase_lev_deque: push / pop / steal / steal_batch across growth ---------------------------
// Capacity 2: the owner pushes 1, 2, 3 (the third push grows the array unless a thief took 1
// first), pops once, pushes 4 and drains. A thief whose read of bottom predates the growth may read
// the new array: only the release publication (C10) makes the copied slots visible to it (without
// it Relacy reports the slot's load as uninitialized). The hazard pointers run in membarrier mode,
// so that their fence does not hide a missing acquire. Every item is taken exactly once (by a pop,
// a steal or a batch), and an item read is the item pushed.
template <int Thieves, bool Batch>
struct chase_lev_push_pop_steal : model_test<chase_lev_push_pop_steal<Thieves, Batch>, Thieves + 1> {
  static constexpr int items = 4;
  using deque = otlpconc::chase_lev_deque<int, relacy_sync>;
  std::optional<deque> d;
  std::optional<deque> thief_deque[Thieves > 0 ? Thieves : 1];
  int taken[items + 1];

  void before() {
    relacy_sync::mode = fence_mode::asymmetric; // as in the queue's test: no fence in protect
    d.emplace(2);
    for (auto& td : thief_deque)
      td.emplace(2);
    for (int& t : taken)
      t = 0;
  }
  void take(int v) {
    RL_ASSERT(v >= 1 && v <= items);
    ++taken[v];
  }
  void thread(unsigned index) {
    if (index == 0) {
      for (int v = 1; v <= items; ++v) {
        d->push(v);
        if (v == 3)
          if (auto x = d->pop())
            take(*x);
      }
      while (auto x = d->pop())
        take(*x);
    } else {
      deque& mine = *thief_deque[index - 1];
      for (int attempt = 0; attempt < 2; ++attempt) {
        if constexpr (Batch) {
          if (d->steal_batch(mine, 2) > 0)
            while (auto x = mine.pop())
              take(*x);
        } else if (auto x = d->steal()) {
          take(*x);
        }
      }
    }
    relacy_sync::thread_exit();
  }
  void after() {
    for (int v = 1; v <= items; ++v)
      RL_ASSERT(taken[v] == 1);
    d.reset();
    for (auto& td : thief_deque)
      td.reset();
  }
};
[[maybe_unused]] const int r_d1 = registrar::add<chase_lev_push_pop_steal<1, false>>(
    "[chase_lev_deque] owner push / pop, 1 thief steal, across growth", random300k);
[[maybe_unused]] const int r_d2 = registrar::add<chase_lev_push_pop_steal<2, false>>(
    "[chase_lev_deque] owner push / pop, 2 thieves steal, across growth", random300k);
[[maybe_unused]] const int r_d3 = registrar::add<chase_lev_push_pop_steal<1, true>>(
    "[chase_lev_deque] owner push / pop, 1 thief steal_batch, across growth", random300k);

// ---- object_pool: a reclaimer takes a thread's cache only while its owner is outside it --------
// The cache's contents are an rl::var: the owner writes them inside try_enter / leave, the
// reclaimer once owner_outside() (after its request and the heavy fence) or, closing, once
// wait_finished(). The pool's state is another: an operation's tail (after leave, before finish)
// writes it, and so does a close once the owner's operations are finished. Two writes not ordered by the handshake
// are a data race Relacy reports. Both fence modes; a reclaim that withdraws (the owner uses its
// cache again afterwards) and a close.
template <fence_mode Mode, bool Closing>
struct cache_handshake_reclaim : model_test<cache_handshake_reclaim<Mode, Closing>, 2> {
  static constexpr int ops = 2;
  otlpconc::detail::basic_cache_handshake<relacy_sync> hs;
  relacy_sync::var<int> cache; // slots in the cache
  relacy_sync::var<int> pool;  // the pool's own state (an operation's tail uses it)

  void before() {
    relacy_sync::mode = Mode;
    cache = 0;
    pool = 0;
  }
  void thread(unsigned index) {
    if (index == 0) { // the owner: two operations, each using the cache if it may
      for (int i = 0; i < ops; ++i) {
        if (hs.try_enter(Mode)) {
          cache = cache + 1;
          hs.leave();
          pool = pool + 1; // the operation's tail (say, the wait-policy check)
        }
        hs.finish();
      }
    } else { // the reclaimer
      hs.request();
      RL_ASSERT(relacy_sync::heavy_fence());
      if constexpr (Closing) {
        hs.wait_finished();
        cache = 0; // taken for good: an owner that used the cache after this would race with it
        pool = -1; // closing changes the pool's state: ordered after every tail by wait_finished
      } else {
        if (hs.owner_outside())
          cache = 0; // taken
        hs.withdraw();
      }
    }
    relacy_sync::thread_exit();
  }
};
[[maybe_unused]] const int r_op1 = registrar::add<cache_handshake_reclaim<fence_mode::symmetric, false>>(
    "[object_pool] cache reclaim handshake, symmetric fences", full);
[[maybe_unused]] const int r_op2 = registrar::add<cache_handshake_reclaim<fence_mode::asymmetric, false>>(
    "[object_pool] cache reclaim handshake, membarrier", full);
[[maybe_unused]] const int r_op3 = registrar::add<cache_handshake_reclaim<fence_mode::symmetric, true>>(
    "[object_pool] cache taken by close, symmetric fences", full);
[[maybe_unused]] const int r_op4 = registrar::add<cache_handshake_reclaim<fence_mode::asymmetric, true>>(
    "[object_pool] cache taken by close, membarrier", full);

// ---- sharded_lru: the hash chains (a lookup's walk against unlink and resize) ----------------
// detail/lru_chain.hpp, the code sharded_lru_cache runs. One bucket holds the chain 1, 2, 3; a
// reader looks up key 3, which is never removed, while the lock holder unlinks keys 1 and 2
// (retiring both, then scanning), or doubles the bucket array (keys move to two chains, each to the
// head of its new chain), or both. The lookup never reports a miss (a resize may make it "unsure",
// which the cache answers under the lock), and never reads a reclaimed node (its key is checked
// against a record of the destructors run, and the destructor's write races with a read not ordered
// before it). The resize is searched exhaustively up to one preemption (a miss trusted without the
// sequence check needs only that); the unlink at random (a walk past a dead node's successor is
// found at execution 89049 with symmetric fences). The resize and the membarrier unlink also run
// with the hazard pointers' preemption points as plain steps instead of yields: after a yield
// Relacy returns only the newest store of a variable the thread had seen before it, so with the
// yields no search lets a walk read the resize sequence from before a resize it met (a relaxed
// relink, G1, is found at execution 2 without them), and in membarrier mode the reader always
// publishes before the scan (the walk past a dead node is found at execution 31 without them; 3
// million executions with them did not find it).
struct chain_node : otlpconc::basic_hazard_pointer_obj_base<chain_node, std::default_delete<chain_node>, relacy_sync> {
  chain_node(int k, std::uint64_t h) : hash(h), key(k) {}
  ~chain_node() {
    // Relacy does not flag a read of a var whose destructor ran once a later fence of the scan
    // (membarrier: a fence in every thread) orders it: the reclamation is also recorded here, with
    // a seq_cst store that the reader's seq_cst check reads (one total order, executed in turn).
    reclaimed->fetch_or(1u << key.load(), std::memory_order_seq_cst);
    key = -1; // (the hash stays: the walk then calls match on a reclaimed node, which checks it)
  }
  relacy_sync::atomic<chain_node*> next{nullptr};
  relacy_sync::atomic<chain_node*>* pprev = nullptr;
  relacy_sync::var<std::uint64_t> hash;
  relacy_sync::var<int> key;
  static inline relacy_sync::atomic<unsigned>* reclaimed = nullptr; // the running execution's
};

template <fence_mode Mode, bool Remove, bool Grow, bool PreemptYields = true>
struct lru_chain_walk : model_test<lru_chain_walk<Mode, Remove, Grow, PreemptYields>, 2> {
  using chain = otlpconc::detail::lru_chain<chain_node, relacy_sync>;
  using table = chain::table;
  using hazard_pointer = otlpconc::basic_hazard_pointer<relacy_sync>;
  static constexpr int keys = 3; // 1, 2, 3
  otlpconc_model::domain& domain = *this->default_domain;
  relacy_sync::atomic<table*> tab{nullptr};
  relacy_sync::atomic<std::uint64_t> resize_seq{0};
  relacy_sync::atomic<unsigned> reclaimed{0}; // bit k: node k's destructor ran
  chain_node* nodes[keys + 1] = {};

  // Without a resize every node has one hash, so the walk compares every key it meets (and checks
  // that the node is not reclaimed); with one, the hash is the key, so the nodes move to two chains.
  static std::uint64_t hash_of(int k) { return Grow ? static_cast<std::uint64_t>(k) : 0; }
  void before() {
    relacy_sync::mode = Mode;
    relacy_sync::preempt_yields = PreemptYields;
    chain_node::reclaimed = &reclaimed;
    tab.store(new table(1), std::memory_order_relaxed);
    for (int k = keys; k >= 1; --k) { // each is inserted at the head: the chain is 1, 2, 3
      nodes[k] = new chain_node(k, hash_of(k));
      chain::insert(tab, nodes[k]);
    }
  }
  typename chain::walk_result lookup(int key) {
    hazard_pointer hp = otlpconc::make_hazard_pointer(domain);
    hazard_pointer hp_next;
    return chain::walk(
        resize_seq, tab, hash_of(key), hp, hp_next, [&] { return otlpconc::make_hazard_pointer(domain); },
        [&](const chain_node* n) {
          const int k = n->key;
          RL_ASSERT(k >= 1 && k <= keys);
          RL_ASSERT((reclaimed.load(std::memory_order_seq_cst) & (1u << k)) == 0); // not reclaimed
          return k == key;
        },
        [&](chain_node* n) {
          const int k = n->key; // still protected
          RL_ASSERT(k == key);
        });
  }
  void thread(unsigned index) {
    if (index == 0) {
      RL_ASSERT(lookup(keys) != chain::walk_result::miss);
    } else {
      if (Remove) {
        chain::unlink(nodes[1]);
        chain::unlink(nodes[2]);
        // 2 last: its scan's fence (membarrier: a fence in every thread) is the last one, so a
        // reader's access to 2 after its reclamation is not ordered after it by a later scan.
        for (int k : {1, 2})
          std::exchange(nodes[k], nullptr)->retire(std::default_delete<chain_node>(), domain);
        otlpconc::hazard_pointer_clean_up(domain); // a scan now: what the reader does not protect is freed
      }
      if (Grow)
        RL_ASSERT(chain::grow(resize_seq, tab));
    }
    relacy_sync::thread_exit();
  }
  void after() {
    RL_ASSERT(lookup(keys) == chain::walk_result::hit); // quiescent: exact
    RL_ASSERT(lookup(2) == (Remove ? chain::walk_result::miss : chain::walk_result::hit));
    for (chain_node*& n : nodes)
      delete std::exchange(n, nullptr);
    delete tab.load(std::memory_order_relaxed); // and the arrays it replaced
    otlpconc::hazard_pointer_clean_up(domain);
    const auto st = domain.stats();
    RL_ASSERT(st.retired == (Remove ? 2 : 0));
    RL_ASSERT(st.reclaimed == st.retired);
    chain_node::reclaimed = nullptr;
  }
};
constexpr search bound1{rl::sched_bound, 1, 0};
[[maybe_unused]] const int r_lc1 = registrar::add<lru_chain_walk<fence_mode::symmetric, true, false>>(
    "[sharded_lru] chain walk against unlink, symmetric fences", random300k);
[[maybe_unused]] const int r_lc2 = registrar::add<lru_chain_walk<fence_mode::asymmetric, true, false>>(
    "[sharded_lru] chain walk against unlink, membarrier", random300k);
[[maybe_unused]] const int r_lc3 = registrar::add<lru_chain_walk<fence_mode::asymmetric, false, true>>(
    "[sharded_lru] chain walk against a resize", bound1);
[[maybe_unused]] const int r_lc5 = registrar::add<lru_chain_walk<fence_mode::asymmetric, false, true, false>>(
    "[sharded_lru] chain walk against a resize, no yields", random300k);
[[maybe_unused]] const int r_lc6 = registrar::add<lru_chain_walk<fence_mode::asymmetric, true, false, false>>(
    "[sharded_lru] chain walk against unlink, membarrier, no yields", random300k);
[[maybe_unused]] const int r_lc4 = registrar::add<lru_chain_walk<fence_mode::asymmetric, true, true>>(
    "[sharded_lru] chain walk against unlink and a resize", random300k);

} // namespace

// ---- telemetry admission: a span is refused only when the queue is full -----------------------
// telemetry/detail/admission.hpp, the batch span processor's count. Nothing leaves the count (no
// export), so once it holds max_waiting spans it stays full: a thread whose span was refused must
// never have a later span admitted (that span found room the refusal should have found), and if
// any span was refused, max_waiting spans were admitted in the end. Each thread records its spans
// as the processor does: a credit of its own cell, else a reservation, else admit_after_reclaim.
// Max 4, reservations of up to 3: thread 0 records 1 span (reserving 3: 2 credits left), threads 1
// and 2 record 2 spans each (5 spans for 4 places). The schedules that matter: a reclaimer sweeps
// while a thread is between (K2) and (K4) (it must wait for it), and a thread reserves credits
// between a reclaimer's sweep and its decision (the reservation counter must send it back).
template <int Spans0, int Spans1, int Spans2, bool PreemptYields = true>
struct admission_refused_only_when_full
    : model_test<admission_refused_only_when_full<Spans0, Spans1, Spans2, PreemptYields>, 3> {
  using admission_type = otlpconc::telemetry::detail::basic_admission<relacy_sync>;
  static constexpr std::int64_t max_waiting = 4;
  std::optional<admission_type> adm;
  relacy_sync::atomic<std::int64_t> cells[3] = {0, 0, 0};
  relacy_sync::atomic<int> kept{0}, refused{0};

  void before() {
    relacy_sync::preempt_yields = PreemptYields;
    adm.emplace(max_waiting, 3, 1);
  }
  bool admit(unsigned index) {
    if (adm->admit_with_credit(cells[index], 3).admitted)
      return true;
    auto each_cell = [this](auto&& f) {
      for (auto& c : cells)
        f(c);
    };
    return adm->admit_after_reclaim(each_cell).admitted;
  }
  void thread(unsigned index) {
    static constexpr int spans[3] = {Spans0, Spans1, Spans2};
    bool was_refused = false;
    for (int s = 0; s < spans[index]; ++s) {
      if (admit(index)) {
        RL_ASSERT(!was_refused); // admitted after a refusal: the refusal was not at a full count
        kept.fetch_add(1, std::memory_order_relaxed);
      } else {
        was_refused = true;
        refused.fetch_add(1, std::memory_order_relaxed);
      }
    }
    relacy_sync::thread_exit();
  }
  void after() {
    const int k = kept.load(std::memory_order_relaxed);
    RL_ASSERT(k + refused.load(std::memory_order_relaxed) == Spans0 + Spans1 + Spans2);
    if (refused.load(std::memory_order_relaxed) > 0)
      RL_ASSERT(k == max_waiting); // refusals only at a full count
    RL_ASSERT(k <= max_waiting);   // the bound
    std::int64_t credits = 0;
    for (auto& c : cells)
      credits += c.load(std::memory_order_relaxed);
    RL_ASSERT(adm->count() == k + credits); // every reservation is a span or a credit
    adm.reset();
  }
};
[[maybe_unused]] const int r_ad1 = registrar::add<admission_refused_only_when_full<1, 2, 2>>(
    "[admission] 3 threads, 5 spans for 4 places: refused only when full", random300k);
[[maybe_unused]] const int r_ad2 = registrar::add<admission_refused_only_when_full<1, 2, 2, false>>(
    "[admission] 3 threads, 5 spans for 4 places, preemption points as plain steps: refused only when full",
    random300k);

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : "";
  // Optional: a search overriding each test's own: full | bound N | random N.
  std::optional<search> forced;
  if (argc > 2) {
    search f;
    f.type = std::strcmp(argv[2], "full") == 0    ? rl::sched_full
             : std::strcmp(argv[2], "bound") == 0 ? rl::sched_bound
                                                  : rl::sched_random;
    if (argc > 3) {
      if (f.type == rl::sched_bound)
        f.context_bound = static_cast<unsigned>(std::strtoul(argv[3], nullptr, 10));
      else
        f.iterations = std::strtoull(argv[3], nullptr, 10);
    }
    forced = f;
  }
  // OTLPCONC_STRESS_SCALE=N runs N times as many random executions (as it lengthens the stress tests).
  unsigned long long scale = 1;
  if (const char* e = std::getenv("OTLPCONC_STRESS_SCALE"))
    scale = std::max(1ULL, std::strtoull(e, nullptr, 10));
  int passed = 0, failed = 0;
  for (const auto& t : otlpconc_model::registry()) {
    if (*filter != '\0' && t.name.find(filter) == std::string::npos)
      continue;
    search how = forced ? *forced : t.how;
    if (how.type == rl::sched_random)
      how.iterations *= scale;
    const auto start = std::chrono::steady_clock::now();
    const bool ok = t.run(how);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const char* kind = how.type == rl::sched_full ? "exhaustive" : how.type == rl::sched_bound ? "bounded" : "random";
    const std::string detail = how.type == rl::sched_bound    ? ", context bound " + std::to_string(how.context_bound)
                               : how.type == rl::sched_random ? ", " + std::to_string(how.iterations) + " executions"
                                                              : "";
    std::printf("%-6s %s  (%s search%s, %.1f s)\n", ok ? "passed" : "FAILED", t.name.c_str(), kind, detail.c_str(), s);
    std::fflush(stdout);
    (ok ? passed : failed) += 1;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
