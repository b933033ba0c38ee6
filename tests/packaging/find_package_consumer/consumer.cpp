// Built by the packaging test against an installed otlpconc (CMake package and pkg-config).
#include <otlpconc/cache_padded.hpp>
#include <otlpconc/counter.hpp>

#include <cstdio>
#include <thread>
#include <vector>

int main() {
  otlpconc::sharded_counter events;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        events.increment();
    });
  for (auto& t : threads)
    t.join();
  if (events.load() != 4000) {
    std::fprintf(stderr, "expected 4000 events, got %lld\n", static_cast<long long>(events.load()));
    return 1;
  }
  std::printf("ok: %lld events\n", static_cast<long long>(events.load()));
  return 0;
}
