// The README's example: count events from many threads without a shared hot cache line.
#include <otlpconc/counter.hpp>

#include <cstdio>
#include <thread>
#include <vector>

int main() {
  otlpconc::sharded_counter requests; // one per statistic, created once
  std::vector<std::jthread> workers;
  for (int t = 0; t < 4; ++t)
    workers.emplace_back([&] {
      for (int i = 0; i < 100000; ++i)
        requests.increment(); // a plain store to this thread's own cell
    });
  workers.clear();                                                          // join
  std::printf("requests: %lld\n", static_cast<long long>(requests.load())); // exact: writers are done
  return requests.load() == 400000 ? 0 : 1;
}
