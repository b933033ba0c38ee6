// Stress: hazard pointers directly, in a domain that scans every few retires, so reclamation races
// with readers all the time. Reclaimed objects are poisoned and parked (not freed until the end),
// so a reader that dereferences a reclaimed object sees the poison in every build, not only under
// AddressSanitizer.
#include "otlpconc/hazard_pointer.hpp"
#include "stress_common.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

using otlpconc::hazard_pointer;
using otlpconc::hazard_pointer_domain;
using otlpconc::make_hazard_pointer;
using otlpconc::stress::scaled;

namespace {

constexpr std::uint64_t live_magic = 0x600dc0ffee600dULL;
constexpr std::uint64_t dead_magic = 0xdeadbeefdeadULL;

struct graveyard;

struct object;
struct park_deleter {
  graveyard* yard;
  void operator()(object* p) const noexcept;
};

struct object : otlpconc::hazard_pointer_obj_base<object, park_deleter> {
  explicit object(std::uint64_t i) : id(i), check(i * 7 + 1) {}
  // relaxed: readers compare it only while they hold a hazard pointer; the scan's ordering (a slot
  // cleared with release, read with acquire) is what the test checks.
  std::atomic<std::uint64_t> magic{live_magic};
  std::uint64_t id;
  std::uint64_t check;
};

struct graveyard {
  std::mutex m;
  std::vector<object*> parked;
  std::atomic<std::int64_t> double_reclaims{0};
  ~graveyard() {
    for (object* p : parked)
      delete p;
  }
};

void park_deleter::operator()(object* p) const noexcept {
  // A second reclaim of the same object finds it already dead.
  if (p->magic.exchange(dead_magic, std::memory_order_relaxed) != live_magic)
    yard->double_reclaims.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(yard->m);
  yard->parked.push_back(p);
}

struct run_result {
  std::int64_t retired = 0;
  std::int64_t reads = 0;
  std::int64_t dead_reads = 0;
  std::int64_t torn_reads = 0;
};

run_result hammer(std::int64_t min_scan_threshold, int writers, int readers, std::int64_t writes_per_writer) {
  graveyard yard;
  run_result out;
  {
    hazard_pointer_domain domain(min_scan_threshold);
    constexpr int slot_count = 4;
    std::atomic<object*> slots[slot_count];
    std::atomic<std::uint64_t> next_id{0};
    for (auto& s : slots)
      s.store(new object(next_id.fetch_add(1)), std::memory_order_relaxed);
    std::atomic<int> writers_done{0};
    std::atomic<std::int64_t> retired{0}, reads{0}, dead{0}, torn{0};
    std::vector<std::thread> pool;
    for (int w = 0; w < writers; ++w)
      pool.emplace_back([&, w] {
        std::minstd_rand rng(static_cast<unsigned>(w + 1));
        for (std::int64_t i = 0; i < writes_per_writer; ++i) {
          auto* fresh = new object(next_id.fetch_add(1, std::memory_order_relaxed));
          // acq_rel: release publishes fresh to readers' acquire in protect; acquire orders the
          // old object's publication before our retire.
          object* old = slots[rng() % slot_count].exchange(fresh, std::memory_order_acq_rel);
          old->retire(park_deleter{&yard}, domain);
          retired.fetch_add(1, std::memory_order_relaxed);
        }
        writers_done.fetch_add(1, std::memory_order_release);
      });
    for (int r = 0; r < readers; ++r)
      pool.emplace_back([&, r] {
        std::minstd_rand rng(static_cast<unsigned>(100 + r));
        std::int64_t my_reads = 0, my_dead = 0, my_torn = 0;
        // Short-lived hazard pointers and a long-lived pair, try_protect and protect, and
        // hand-over between two hazard pointers by swap. (Not by reset_protection(p) on the second
        // one: once p may be retired, a scan that reads the new slot before the store and the old
        // slot after its release misses both; see reset_protection's precondition.)
        hazard_pointer a = make_hazard_pointer(domain);
        hazard_pointer b = make_hazard_pointer(domain);
        while (writers_done.load(std::memory_order_acquire) < writers) {
          auto& src = slots[rng() % slot_count];
          object* p = nullptr;
          switch (rng() % 3) {
          case 0:
            p = a.protect(src);
            break;
          case 1: {
            p = src.load(std::memory_order_relaxed);
            while (!a.try_protect(p, src)) {
            }
            break;
          }
          default: {
            hazard_pointer fresh = make_hazard_pointer(domain);
            p = fresh.protect(src);
            swap(a, fresh); // a takes over fresh's slot: the protection never lapses
            break;
          }
          }
          swap(a, b); // hand-over: b holds p now, a holds b's empty slot
          a.reset_protection();
          // No yield here: a yield after protecting made readers rare between the load and the
          // publication, the window that matters; the schedule noise preempts inside it (in
          // try_protect) and inside the scans.
          if (p->magic.load(std::memory_order_relaxed) != live_magic)
            ++my_dead;
          if (p->check != p->id * 7 + 1)
            ++my_torn;
          b.reset_protection();
          ++my_reads;
        }
        reads.fetch_add(my_reads);
        dead.fetch_add(my_dead);
        torn.fetch_add(my_torn);
      });
    for (auto& t : pool)
      t.join();
    out.retired = retired.load();
    out.reads = reads.load();
    out.dead_reads = dead.load();
    out.torn_reads = torn.load();
    for (auto& s : slots)
      s.load(std::memory_order_relaxed)->retire(park_deleter{&yard}, domain);
    out.retired += slot_count;
    hazard_pointer_clean_up(domain);
    auto st = domain.stats();
    CHECK(st.retired == out.retired);
    CHECK(st.reclaimed == out.retired);
  } // the domain's destructor runs here: it must find nothing left
  CHECK(static_cast<std::int64_t>(yard.parked.size()) == out.retired);
  CHECK(yard.double_reclaims.load() == 0);
  return out;
}

} // namespace

TEST_CASE("hazard_pointer: readers never see a reclaimed object while scans run constantly",
          "[stress][hazard_pointer]") {
  const std::int64_t writes = scaled(OTLPCONC_TSAN ? 20000 : 200000);
  for (std::int64_t threshold : {1, 4, 64}) {
    INFO("min scan threshold " << threshold);
    run_result r = hammer(threshold, 2, 2, writes);
    INFO("reads " << r.reads << ", retired " << r.retired);
    REQUIRE(r.reads > 0);
    REQUIRE(r.dead_reads == 0);
    REQUIRE(r.torn_reads == 0);
  }
}
