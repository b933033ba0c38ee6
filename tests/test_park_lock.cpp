// The park lock (detail/park_lock.hpp), sharded_lru's shard lock: the Lockable contract, and a
// thread that parked is woken by the unlock. Orderings and interleavings: tests/model
// ("[park_lock]") and stress/stress_park_lock.cpp.
#include "otlpconc/detail/park_lock.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

using otlpconc::detail::park_lock;

TEST_CASE("park_lock: try_lock fails while held and succeeds when free, and lock_guard and unique_lock work",
          "[park_lock]") {
  park_lock lock;
  REQUIRE(lock.try_lock());
  CHECK_FALSE(lock.try_lock());
  lock.unlock();
  {
    std::lock_guard guard(lock);
    CHECK_FALSE(lock.try_lock());
  }
  std::unique_lock held(lock, std::try_to_lock);
  CHECK(held.owns_lock());
  held.unlock();
  CHECK(lock.try_lock());
  lock.unlock();
}

TEST_CASE("park_lock: a thread parked in lock() is woken by unlock", "[park_lock]") {
  // The holder keeps the lock until the waiter has run out of spins and marked it contended, then
  // 200 ms more: the waiter parks. The unlock must wake it. If it does not (a lost wake-up) the
  // waiter stays parked: the test fails after 10 s and leaves it parked (the lock is leaked so
  // that it outlives the thread).
  auto* lock = new park_lock;
  lock->lock();
  std::atomic<bool> entered{false};
  std::promise<void> acquired;
  std::future<void> acquired_future = acquired.get_future();
  std::thread waiter([lock, &entered, p = std::move(acquired)]() mutable {
    entered.store(true);
    lock->lock();
    p.set_value();
    lock->unlock();
  });
  while (!entered.load())
    std::this_thread::yield();
  // The waiter ran out of spins and marked the lock (K3): it parks, or is about to.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!lock->contended() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!lock->contended()) { // never marked within 10 s: the waiter did not run out of spins
    lock->unlock();
    waiter.join();
    delete lock;
    FAIL("the waiter did not mark the lock contended within 10 s");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));                             // time to fall asleep
  CHECK(acquired_future.wait_for(std::chrono::seconds(0)) == std::future_status::timeout); // excluded
  lock->unlock();
  const bool woken = acquired_future.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!woken) {
    waiter.detach(); // still parked: a lost wake-up
    FAIL("the waiter parked in lock() was not woken by unlock() within 10 s");
  }
  waiter.join();
  delete lock;
}
