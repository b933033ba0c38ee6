// otlpconc/detail/cache_handshake.hpp: the handshake by which a reclaimer takes a thread's cache
// while the thread (its owner) may be using it: object_pool's per-thread magazines.
//
// The owner brackets every use of its cache:
//   (O1) busy = 1 relaxed; (O2) light fence; (O3) request.load acquire: if set, the owner does not
//   touch its cache this time (try_enter returns false). ... uses the cache ...; (O4) busy = 2
//   release (leave: the use is over, the operation's tail may still run); (O7) busy = 0 release
//   (finish).
// A reclaimer (the caller runs one at a time, under its own mutex):
//   (R1) request = 1 release; (R2) the heavy fence (one for all the caches it wants); (R3)
//   busy.load acquire: unless the owner is inside (busy == 1), the cache is the reclaimer's until
//   (R4) request = 0 release. Closing instead waits for busy == 0 and never withdraws: after it,
//   every try_enter fails.
// O1..O3 against R1..R3 is a Dekker handshake: the owner sees the request, or the reclaimer sees
// busy == 1 and leaves the cache alone. O4 -> R3 orders the owner's last use before the
// reclaimer's; R4 -> O3 orders the reclaimer's use before the owner's next one. The fences are
// asymmetric (detail/asymmetric_fence.hpp): the owner's is a compiler barrier when membarrier is
// available, the reclaimer's the system-wide barrier; reclaiming is rare, using a cache is not.
//
// Templated on the Sync policy (detail/sync.hpp) so that the model-checking build explores it
// under the C++ memory model (tests/model, "[object_pool]").
#pragma once
#include "otlpconc/detail/sync.hpp"

#include <cstdint>

namespace otlpconc::detail {

template <class Sync = std_sync>
class basic_cache_handshake {
 public:
  // ---- the owner ------------------------------------------------------------------------------
  // Whether the owner may use its cache now. False when a reclaimer holds it (the owner is then
  // left as after leave(): it still calls finish()).
  bool try_enter(fence_mode mode) noexcept {
    busy_.store(1, std::memory_order_relaxed); // (O1) ordered before O3 by O2
    if (mode == fence_mode::asymmetric)        // (O2) pairs with R2
      Sync::template light_fence<fence_mode::asymmetric>();
    else
      Sync::template light_fence<fence_mode::symmetric>();
    if (request_.load(std::memory_order_acquire) == 0) // (O3) acquire: pairs with R4 (and R1)
      return true;
    leave();
    return false;
  }
  // The use of the cache is over (the operation's tail may still run).
  void leave() noexcept { busy_.store(2, std::memory_order_release); } // (O4) release: pairs with R3
  // The operation is over.
  void finish() noexcept { busy_.store(0, std::memory_order_release); } // (O7) release: pairs with R3 in close

  // ---- a reclaimer ----------------------------------------------------------------------------
  void request() noexcept { request_.store(1, std::memory_order_release); } // (R1) pairs with O3
  // After the heavy fence (R2): whether the owner is outside its cache, which is then the
  // reclaimer's until withdraw().
  bool owner_outside() const noexcept {
    return busy_.load(std::memory_order_acquire) != 1; // (R3) acquire: pairs with O4
  }
  void withdraw() noexcept { request_.store(0, std::memory_order_release); } // (R4) release: pairs with O3
  // Closing: waits until the owner's operation, including its tail, is over.
  void wait_finished() const noexcept {
    while (busy_.load(std::memory_order_acquire) != 0) // (R3) acquire: pairs with O7
      Sync::yield();
  }

 private:
  typename Sync::template atomic<std::uint32_t> busy_{0};    // 0 idle, 1 using its cache, 2 finishing
  typename Sync::template atomic<std::uint32_t> request_{0}; // a reclaimer (or closing) wants the cache
};

using cache_handshake = basic_cache_handshake<>;

} // namespace otlpconc::detail
