#include "otlpconc/hazard_pointer.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

using otlpconc::hazard_pointer;
using otlpconc::hazard_pointer_domain;
using otlpconc::make_hazard_pointer;

namespace {

struct tracked : otlpconc::hazard_pointer_obj_base<tracked> {
  explicit tracked(int v, std::atomic<int>* destroyed) : value(v), on_destroy(destroyed) {}
  ~tracked() { on_destroy->fetch_add(1, std::memory_order_relaxed); }
  int value;
  std::atomic<int>* on_destroy;
};

struct deleted_by_functor;
struct counting_deleter {
  std::atomic<int>* calls;
  void operator()(deleted_by_functor* p) noexcept;
};
struct deleted_by_functor : otlpconc::hazard_pointer_obj_base<deleted_by_functor, counting_deleter> {
  explicit deleted_by_functor(std::atomic<int>* destroyed) : on_destroy(destroyed) {}
  ~deleted_by_functor() { on_destroy->fetch_add(1, std::memory_order_relaxed); }
  std::atomic<int>* on_destroy;
};
void counting_deleter::operator()(deleted_by_functor* p) noexcept {
  calls->fetch_add(1, std::memory_order_relaxed);
  delete p;
}

struct with_deleter : otlpconc::hazard_pointer_obj_base<with_deleter, std::function<void(with_deleter*)>> {};

// Reclaiming a chain_link retires the next one.
struct chain_link;
struct retire_next {
  hazard_pointer_domain* domain;
  std::atomic<int>* freed;
  void operator()(chain_link* l) const noexcept;
};
struct chain_link : otlpconc::hazard_pointer_obj_base<chain_link, retire_next> {
  chain_link* next = nullptr;
};
void retire_next::operator()(chain_link* l) const noexcept {
  if (l->next != nullptr)
    l->next->retire(retire_next{domain, freed}, *domain);
  freed->fetch_add(1, std::memory_order_relaxed);
  delete l;
}

} // namespace

TEST_CASE("hazard_pointer: empty, move, swap", "[hazard_pointer]") {
  hazard_pointer empty;
  REQUIRE(empty.empty());
  hazard_pointer hp = make_hazard_pointer();
  REQUIRE_FALSE(hp.empty());
  hazard_pointer moved(std::move(hp));
  REQUIRE(hp.empty()); // NOLINT(bugprone-use-after-move): moved-from state is specified
  REQUIRE_FALSE(moved.empty());
  swap(moved, empty);
  REQUIRE(moved.empty());
  REQUIRE_FALSE(empty.empty());
  moved = std::move(empty);
  REQUIRE_FALSE(moved.empty());
  REQUIRE(empty.empty());
}

TEST_CASE("hazard_pointer: protect and try_protect follow P2530", "[hazard_pointer]") {
  hazard_pointer_domain domain;
  std::atomic<int> destroyed{0};
  auto* a = new tracked(1, &destroyed);
  auto* b = new tracked(2, &destroyed);
  std::atomic<tracked*> src{a};
  {
    hazard_pointer hp = make_hazard_pointer(domain);
    REQUIRE(hp.protect(src) == a);

    tracked* ptr = b; // stale guess: fails, ptr updated to the current value, protection cleared
    REQUIRE_FALSE(hp.try_protect(ptr, src));
    REQUIRE(ptr == a);
    REQUIRE(hp.try_protect(ptr, src));
    REQUIRE(ptr == a);

    // a is protected: retiring and cleaning up must not free it.
    src.store(b);
    a->retire(std::default_delete<tracked>(), domain);
    hazard_pointer_clean_up(domain);
    REQUIRE(destroyed.load() == 0);
    REQUIRE(a->value == 1); // still readable (ASan would flag a use after free)

    hp.reset_protection();
    hazard_pointer_clean_up(domain);
    REQUIRE(destroyed.load() == 1);

    // reset_protection(ptr) protects without validation.
    hp.reset_protection(b);
    b->retire(std::default_delete<tracked>(), domain);
    hazard_pointer_clean_up(domain);
    REQUIRE(destroyed.load() == 1);
    hp.reset_protection(nullptr);
  }
  hazard_pointer_clean_up(domain);
  REQUIRE(destroyed.load() == 2);
  auto s = domain.stats();
  REQUIRE(s.retired == 2);
  REQUIRE(s.reclaimed == 2);
  REQUIRE(s.unreclaimed() == 0);
}

TEST_CASE("hazard_pointer: custom deleters are called exactly once", "[hazard_pointer]") {
  hazard_pointer_domain domain;
  std::atomic<int> destroyed{0}, calls{0};
  for (int i = 0; i < 10; ++i) {
    auto* p = new deleted_by_functor(&destroyed);
    p->retire(counting_deleter{&calls}, domain);
  }
  hazard_pointer_clean_up(domain);
  REQUIRE(calls.load() == 10);
  REQUIRE(destroyed.load() == 10);

  // A stateful, non-trivially-movable deleter (std::function) works too.
  int ran = 0;
  auto* w = new with_deleter;
  w->retire([&ran](with_deleter* p) {
    ++ran;
    delete p;
  });
  otlpconc::hazard_pointer_clean_up();
  REQUIRE(ran == 1);
}

TEST_CASE("hazard_pointer: a protection held by another thread blocks reclamation", "[hazard_pointer]") {
  hazard_pointer_domain domain;
  std::atomic<int> destroyed{0};
  auto* obj = new tracked(7, &destroyed);
  std::atomic<tracked*> src{obj};
  std::atomic<int> phase{0};
  std::atomic<int> seen_value{0}; // Catch2 assertions belong on the main thread
  std::thread reader([&] {
    hazard_pointer hp = make_hazard_pointer(domain);
    tracked* p = hp.protect(src);
    phase.store(1, std::memory_order_release);
    while (phase.load(std::memory_order_acquire) != 2)
      std::this_thread::yield();
    seen_value.store(p->value); // must still be alive (ASan flags a use after free)
    hp.reset_protection();
    phase.store(3, std::memory_order_release);
  });
  while (phase.load(std::memory_order_acquire) != 1)
    std::this_thread::yield();
  src.store(nullptr);
  obj->retire(std::default_delete<tracked>(), domain);
  hazard_pointer_clean_up(domain);
  REQUIRE(destroyed.load() == 0);
  phase.store(2, std::memory_order_release);
  while (phase.load(std::memory_order_acquire) != 3)
    std::this_thread::yield();
  reader.join();
  REQUIRE(seen_value.load() == 7);
  hazard_pointer_clean_up(domain);
  REQUIRE(destroyed.load() == 1);
}

TEST_CASE("hazard_pointer: retired garbage stays within the documented bound", "[hazard_pointer]") {
  hazard_pointer_domain domain;
  std::atomic<int> destroyed{0};
  const std::int64_t threshold = domain.scan_threshold();
  std::int64_t max_pending = 0;
  for (int i = 0; i < 20000; ++i) {
    (new tracked(i, &destroyed))->retire(std::default_delete<tracked>(), domain);
    auto s = domain.stats();
    max_pending = std::max(max_pending, s.unreclaimed());
  }
  // R * (1 + S) + H + 64 * T with one retiring thread: S <= 1 and no batching (not the default domain).
  REQUIRE(max_pending <= 2 * threshold + domain.stats().hazard_records + 64);
  REQUIRE(destroyed.load() >= 20000 - max_pending);
  hazard_pointer_clean_up(domain);
  REQUIRE(destroyed.load() == 20000);
}

TEST_CASE("hazard_pointer: a domain's scan threshold floor is configurable and checked", "[hazard_pointer]") {
  REQUIRE_THROWS_WITH(hazard_pointer_domain(0), Catch::Contains("min_scan_threshold"));
  REQUIRE_THROWS_AS(hazard_pointer_domain(-5), std::invalid_argument);
  hazard_pointer_domain domain(3);
  REQUIRE(domain.scan_threshold() == 3);
  std::atomic<int> destroyed{0};
  for (int i = 0; i < 3; ++i) // the third retire reaches the threshold and scans
    (new tracked(i, &destroyed))->retire(std::default_delete<tracked>(), domain);
  REQUIRE(destroyed.load() == 3);
  REQUIRE(hazard_pointer_domain().scan_threshold() == 1000);
}

TEST_CASE("hazard_pointer: deleters may retire further objects", "[hazard_pointer]") {
  // A chain where reclaiming one chain_link retires the next (as a tree node retiring its children).
  hazard_pointer_domain domain;
  std::atomic<int> freed{0};
  chain_link* head = nullptr;
  for (int i = 0; i < 50; ++i) {
    auto* l = new chain_link;
    l->next = head;
    head = l;
  }
  head->retire(retire_next{&domain, &freed}, domain);
  hazard_pointer_clean_up(domain); // loops while deleters retire more
  REQUIRE(freed.load() == 50);
  REQUIRE(domain.stats().unreclaimed() == 0);
  REQUIRE(domain.stats().retired == 50);
}

TEST_CASE("hazard_pointer: records are reused after their threads exit", "[hazard_pointer]") {
  auto& domain = otlpconc::hazard_pointer_default_domain();
  auto run_round = [] {
    std::vector<std::thread> pool;
    std::barrier all_hold(4); // every round needs 12 records at the same instant
    for (int t = 0; t < 4; ++t)
      pool.emplace_back([&all_hold] {
        hazard_pointer a = make_hazard_pointer();
        hazard_pointer b = make_hazard_pointer();
        hazard_pointer c = make_hazard_pointer();
        all_hold.arrive_and_wait();
      });
    for (auto& th : pool)
      th.join();
  };
  run_round();
  const std::int64_t after_first = domain.stats().hazard_records;
  for (int round = 0; round < 50; ++round)
    run_round();
  REQUIRE(domain.stats().hazard_records == after_first);
}

TEST_CASE("hazard_pointer: a thread_local hazard_pointer outliving the thread's exit guard", "[hazard_pointer]") {
  // The thread_local below is constructed (empty) before the library's per-thread exit guard, so it
  // is destroyed after it: its record must go back to the domain, not to a dead cache.
  auto& domain = otlpconc::hazard_pointer_default_domain();
  auto run = [] {
    std::thread t([] {
      static thread_local hazard_pointer held;
      held = make_hazard_pointer(); // registers the exit guard now, after `held` was constructed
      std::atomic<int*> src{nullptr};
      (void)held.protect(src);
    });
    t.join();
  };
  run();
  const std::int64_t records = domain.stats().hazard_records;
  for (int i = 0; i < 30; ++i)
    run();
  REQUIRE(domain.stats().hazard_records == records); // every record was reused, none stranded
}

TEST_CASE("hazard_pointer: objects retired by exiting threads are reclaimed", "[hazard_pointer]") {
  std::atomic<int> destroyed{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&destroyed] {
      for (int i = 0; i < 10; ++i) // fewer than the default domain's count batch: the tally is flushed at exit
        (new tracked(i, &destroyed))->retire();
    });
  for (auto& th : pool)
    th.join();
  otlpconc::hazard_pointer_clean_up();
  REQUIRE(destroyed.load() == 40);
}

TEST_CASE("hazard_pointer: Linux uses the asymmetric fence unless told otherwise", "[hazard_pointer]") {
  using otlpconc::detail::fence_mode;
  [[maybe_unused]] fence_mode m = otlpconc::detail::current_fence_mode();
#if defined(__linux__) && !OTLPCONC_TSAN
  // On Linux with membarrier (every kernel since 4.14), the asymmetric mode is used unless forced off.
  const char* forced = std::getenv("OTLPCONC_HAZARD_POINTER_FENCE");
  if (forced == nullptr)
    CHECK(m == fence_mode::asymmetric);
#endif
}
