// Built by the packaging tests against an installed otlpconc (CMake package and pkg-config) and
// as a subproject. EXPECT_HWLOC (0/1), when defined, is what the build's hwloc option must be.
#include <otlpconc/cache_padded.hpp>
#include <otlpconc/counter.hpp>
#include <otlpconc/object_pool.hpp>
#include <otlpconc/telemetry/tracer.hpp>
#include <otlpconc/topology.hpp>

#include <memory>

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

#if defined(EXPECT_HWLOC)
  if (otlpconc::topology::hwloc_enabled != (EXPECT_HWLOC != 0)) {
    std::fprintf(stderr, "hwloc_enabled is %d, the build says %d\n", otlpconc::topology::hwloc_enabled, EXPECT_HWLOC);
    return 1;
  }
#endif
  const auto& topo = otlpconc::topology::system();
  if (!otlpconc::topology::hwloc_enabled && topo.numa_nodes() != 1) {
    std::fprintf(stderr, "without hwloc the topology must have one node, not %u\n", topo.numa_nodes());
    return 1;
  }
  // Strict placement works on both builds (one node without hwloc).
  otlpconc::object_pool_options options;
  options.binding = otlpconc::slab_binding::strict;
  otlpconc::object_pool<long> pool(options);
  std::vector<otlpconc::pooled_ptr<long>> objects;
  for (long i = 0; i < 1000; ++i)
    objects.push_back(pool.acquire(i));
  for (long i = 0; i < 1000; ++i)
    if (*objects[static_cast<std::size_t>(i)] != i ||
        topo.nodes_of(objects[static_cast<std::size_t>(i)].get(), 8).empty()) {
      std::fprintf(stderr, "object %ld is wrong or unplaced\n", i);
      return 1;
    }
  objects.clear();
  if (pool.stats().in_use != 0)
    return 1;
  // The telemetry pipeline: spans recorded on two threads, all exported.
  auto exporter = std::make_shared<otlpconc::telemetry::in_memory_exporter>();
  otlpconc::telemetry::batch_span_processor processor(exporter);
  otlpconc::telemetry::tracer tracer(processor);
  std::thread recorder([&] {
    for (int i = 0; i < 100; ++i)
      tracer.start_span("consumer", {{"i", i}});
  });
  for (int i = 0; i < 100; ++i)
    tracer.start_span("consumer", {{"i", i}});
  recorder.join();
  if (!processor.shutdown() || exporter->size() != 200) {
    std::fprintf(stderr, "expected 200 exported spans, got %zu\n", exporter->size());
    return 1;
  }
  std::printf("ok: %lld events, hwloc %s, %u NUMA node(s), %zu pooled objects, %zu spans\n",
              static_cast<long long>(events.load()), otlpconc::topology::hwloc_enabled ? "on" : "off",
              topo.numa_nodes(), pool.stats().capacity, exporter->size());
  return 0;
}
