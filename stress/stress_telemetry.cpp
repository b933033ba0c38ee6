// Stress tests of the telemetry pipeline: many recording threads (waves of short-lived ones among
// them), random force_flush calls, an exporter that fails, throws, rejects or blocks at random, and
// shutdown while spans are still being recorded. Every span that ended sampled is accounted for:
// exported exactly once, or failed exactly once, or counted as dropped; never exported twice,
// never both exported and failed, never invented.
#include "stress_common.hpp"

#include "otlpconc/telemetry/tracer.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

using namespace otlpconc::telemetry;
using namespace std::chrono_literals;

namespace {

std::uint64_t key_of(const span_id& id) {
  return id.tail_u64(0);
}

// Records the span id of every span it receives, split by outcome.
class flaky_exporter final : public span_exporter {
 public:
  explicit flaky_exporter(unsigned seed) : rng_(seed) {}

  export_result export_spans(const span_batch_view& batch, clock::time_point deadline) override {
    if (in_export_.exchange(true))
      duplicate_call_ = true; // exports must be serialized
    std::vector<std::uint64_t> ids;
    for (const span_data* s : batch.spans) {
      ids.push_back(key_of(s->span_id()));
      if (s->name() != "work" || s->attribute_count() != 2 || s->end_time_unix_nano() < s->start_time_unix_nano())
        corrupt_ = true;
    }
    const auto roll = rng_() % 100;
    export_result result;
    if (roll < 10) {
      result = export_result::failure("injected failure");
    } else if (roll < 15) {
      record(ids, false, 0);
      in_export_ = false;
      throw std::runtime_error("injected exception");
    } else if (roll < 20) {
      std::this_thread::sleep_until(std::min(deadline, clock::now() + 5ms)); // a slow collector
    } else if (roll < 25 && !ids.empty()) {
      result.rejected_spans = 1; // partial success: the first span is rejected
    }
    if (result.status == export_status::failure)
      record(ids, false, 0);
    else
      record(ids, true, result.rejected_spans);
    in_export_ = false;
    return result;
  }

  void check(const batch_span_processor_stats& s, const std::unordered_set<std::uint64_t>& ended) {
    std::lock_guard lock(mutex_);
    CHECK_FALSE(duplicate_call_);
    CHECK_FALSE(corrupt_);
    CHECK(duplicates_ == 0);
    CHECK(static_cast<std::int64_t>(exported_.size()) == s.exported);
    CHECK(static_cast<std::int64_t>(failed_.size()) == s.failed);
    std::size_t unknown = 0;
    for (std::uint64_t id : exported_)
      unknown += ended.count(id) == 0;
    for (std::uint64_t id : failed_)
      unknown += ended.count(id) == 0;
    CHECK(unknown == 0);
    CHECK(s.accepted == static_cast<std::int64_t>(ended.size()));
    CHECK(s.accepted == s.exported + s.dropped + s.failed);
    CHECK(s.queued == 0);
  }

 private:
  void record(const std::vector<std::uint64_t>& ids, bool success, std::uint64_t rejected) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const bool failed = !success || i < rejected;
      const bool fresh = exported_.count(ids[i]) == 0 && failed_.count(ids[i]) == 0;
      duplicates_ += !fresh;
      (failed ? failed_ : exported_).insert(ids[i]);
    }
  }

  std::minstd_rand rng_; // export thread only
  std::atomic<bool> in_export_{false};
  std::mutex mutex_;
  std::unordered_set<std::uint64_t> exported_, failed_;
  std::size_t duplicates_ = 0;
  bool duplicate_call_ = false, corrupt_ = false;
};

// The ids of every sampled span, from all recording threads.
class ended_ids {
 public:
  void add(const std::vector<std::uint64_t>& ids) {
    std::lock_guard lock(mutex_);
    for (std::uint64_t id : ids)
      duplicates_ += !ids_.insert(id).second;
  }
  const std::unordered_set<std::uint64_t>& ids() const { return ids_; }
  std::size_t duplicates() const { return duplicates_; }

 private:
  std::mutex mutex_;
  std::unordered_set<std::uint64_t> ids_;
  std::size_t duplicates_ = 0;
};

void record_spans(tracer& t, std::int64_t n, ended_ids& ended, std::atomic<bool>* stop) {
  std::vector<std::uint64_t> ids;
  for (std::int64_t i = 0; i < n && !(stop && stop->load(std::memory_order_relaxed)); ++i) {
    auto s = t.start_span("work", {{"i", i}, {"thread", "recorder"}});
    if (s.context().sampled()) // accepted by the processor (recorded, or refused after shutdown: dropped)
      ids.push_back(key_of(s.context().span_id));
  }
  ended.add(ids);
}

void run_pipeline(overflow_policy policy, unsigned seed) {
  const std::int64_t spans_per_thread = otlpconc::stress::scaled(20000);
  const int waves = static_cast<int>(otlpconc::stress::scaled(6));
  auto exporter = std::make_shared<flaky_exporter>(seed);
  batch_span_processor_options options;
  options.max_queue_size = 256; // small: the queue fills, drops or blocking happen
  options.max_export_batch_size = 32;
  options.schedule_delay = 2ms;
  options.export_timeout = 50ms;
  options.on_full = policy;
  batch_span_processor processor(exporter, options);
  tracer t(processor, {.span_sampler = trace_id_ratio(0.9)});
  ended_ids ended;

  std::atomic<bool> stop{false};
  std::vector<std::thread> long_lived;
  for (int i = 0; i < 2; ++i)
    long_lived.emplace_back([&] { record_spans(t, spans_per_thread * 4, ended, &stop); });
  std::thread flusher([&] {
    std::minstd_rand rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      (void)processor.force_flush(std::chrono::milliseconds(rng() % 20));
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    }
  });
  // Waves of short-lived threads: their staged spans enter the queue when they exit.
  for (int w = 0; w < waves; ++w) {
    std::vector<std::thread> wave;
    for (int i = 0; i < 3; ++i)
      wave.emplace_back([&] { record_spans(t, spans_per_thread / 4, ended, nullptr); });
    for (auto& th : wave)
      th.join();
  }
  // Shutdown while the long-lived threads are still recording. Before it, block mode has dropped
  // nothing (exporter failures are counted as failed, not dropped).
  const auto before = processor.stats();
  if (policy == overflow_policy::block)
    CHECK(before.dropped == 0);
  const bool clean = processor.shutdown(5s);
  stop = true;
  for (auto& th : long_lived)
    th.join();
  flusher.join();
  (void)clean;                   // may be false: spans left at the deadline are counted as dropped
  (void)processor.shutdown(30s); // waits for the export thread to finish (queued == 0 below checks it)
  const auto s = processor.stats();
  CHECK(ended.duplicates() == 0);
  exporter->check(s, ended.ids());
  CHECK(s.exported > 0);
}

} // namespace

TEST_CASE("telemetry pipeline: every span accounted with a flaky exporter, drop policy", "[telemetry]") {
  for (unsigned seed : {1u, 2u})
    run_pipeline(overflow_policy::drop, seed);
}

TEST_CASE("telemetry pipeline: every span accounted with a flaky exporter, block policy", "[telemetry]") {
  for (unsigned seed : {3u, 4u})
    run_pipeline(overflow_policy::block, seed);
}

TEST_CASE("telemetry pipeline: shutdown with an exporter that blocks past the timeout", "[telemetry]") {
  // The first export ignores its deadline: it waits until the test releases it (10 s at most).
  struct stuck final : span_exporter {
    std::atomic<int> calls{0};
    std::atomic<bool> entered{false}, released{false};
    export_result export_spans(const span_batch_view&, clock::time_point) override {
      if (calls++ == 0) {
        entered.store(true);
        const auto give_up = clock::now() + 10s;
        while (!released.load() && clock::now() < give_up)
          std::this_thread::sleep_for(1ms);
      }
      return {};
    }
  };
  auto exporter = std::make_shared<stuck>();
  batch_span_processor_options options;
  options.max_export_batch_size = 8;
  options.max_queue_size = 64;
  batch_span_processor processor(exporter, options);
  tracer t(processor);
  ended_ids ended;
  std::vector<std::thread> recorders;
  for (int i = 0; i < 3; ++i)
    recorders.emplace_back([&] { record_spans(t, otlpconc::stress::scaled(2000), ended, nullptr); });
  // Shutdown begins while the first export is stuck (a fixed sleep here could miss it on a loaded
  // machine: shut down before any span, or after the export returned).
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (!exporter->entered.load() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(1ms);
  REQUIRE(exporter->entered.load());
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(processor.shutdown(50ms));                // the exporter is stuck
  CHECK(std::chrono::steady_clock::now() - start < 2s); // bounded by the timeout, not the exporter
  exporter->released.store(true);
  for (auto& r : recorders)
    r.join();
  (void)processor.shutdown(10s);
  const auto s = processor.stats();
  CHECK(s.accepted == static_cast<std::int64_t>(ended.ids().size()));
  CHECK(s.accepted == s.exported + s.dropped + s.failed);
  CHECK(s.queued == 0);
}

TEST_CASE("telemetry pipeline: shutdown racing recording threads, many times", "[telemetry]") {
  const int rounds = static_cast<int>(otlpconc::stress::scaled(60));
  for (int round = 0; round < rounds; ++round) {
    auto exporter = std::make_shared<in_memory_exporter>();
    batch_span_processor_options options;
    options.max_queue_size = 64;
    options.max_export_batch_size = 16;
    options.on_full = round % 2 ? overflow_policy::block : overflow_policy::drop;
    batch_span_processor processor(exporter, options);
    tracer t(processor);
    ended_ids ended;
    std::atomic<bool> stop{false};
    std::vector<std::thread> recorders;
    for (int i = 0; i < 2; ++i)
      recorders.emplace_back([&] { record_spans(t, 1'000'000, ended, &stop); });
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 8)));
    (void)processor.shutdown(std::chrono::milliseconds(round % 3)); // spans keep ending meanwhile
    std::this_thread::sleep_for(std::chrono::microseconds(100 * (round % 5)));
    stop = true;
    for (auto& r : recorders)
      r.join();
    (void)processor.shutdown(30s);
    const auto s = processor.stats();
    INFO("round " << round);
    CHECK(ended.duplicates() == 0);
    CHECK(s.accepted == static_cast<std::int64_t>(ended.ids().size()));
    CHECK(s.accepted == s.exported + s.dropped + s.failed);
    CHECK(s.exported == static_cast<std::int64_t>(exporter->size()));
  }
}

TEST_CASE("telemetry pipeline: while nothing leaves the queue a thread's kept spans are a prefix of its spans",
          "[telemetry]") {
  // Drops only when full, under preemption: the first export waits at a gate, so nothing leaves
  // the queue and once it is full it stays full. A span dropped before the queue was full (other
  // threads' unused admissions not taken back, a reservation in progress missed, one made between
  // the sweep and the decision) lets a later span of the same thread be kept: a gap.
  struct recording_gate final : span_exporter {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
    int at_gate = 0;
    std::vector<std::string> names;
    export_result export_spans(const span_batch_view& batch, clock::time_point deadline) override {
      std::unique_lock lock(m);
      for (const span_data* s : batch.spans)
        names.emplace_back(s->name());
      ++at_gate;
      cv.notify_all();
      cv.wait_until(lock, deadline, [&] { return open; });
      return {};
    }
  };
  const auto rounds = otlpconc::stress::scaled(40);
  for (std::int64_t round = 0; round < rounds; ++round) {
    auto exporter = std::make_shared<recording_gate>();
    batch_span_processor_options options; // reservations of 14 to 16 (512 / (4 x stages), at most 16)
    options.max_queue_size = 1024;
    options.max_export_batch_size = 512;
    batch_span_processor processor(exporter, options);
    tracer t(processor);
    for (int i = 0; i < 512; ++i)
      t.start_span("warm").end();
    {
      std::unique_lock lock(exporter->m);
      REQUIRE(exporter->cv.wait_for(lock, 30s, [&] { return exporter->at_gate > 0; }));
    }
    constexpr int threads = 8, per_thread = 200; // 1600 spans for 1024 places
    std::vector<std::thread> workers;
    for (int id = 0; id < threads; ++id)
      workers.emplace_back([&t, id] {
        const std::string prefix = std::to_string(id) + ":";
        for (int i = 0; i < per_thread; ++i)
          t.start_span(prefix + std::to_string(i)).end();
      });
    for (auto& w : workers)
      w.join();
    {
      std::lock_guard lock(exporter->m);
      exporter->open = true;
      exporter->cv.notify_all();
    }
    REQUIRE(processor.force_flush(30s));
    std::vector<std::vector<int>> kept(threads);
    {
      std::lock_guard lock(exporter->m);
      for (const std::string& name : exporter->names) {
        const auto colon = name.find(':');
        if (colon != std::string::npos)
          kept[static_cast<std::size_t>(std::stoi(name.substr(0, colon)))].push_back(std::stoi(name.substr(colon + 1)));
      }
    }
    std::size_t total = 0, gaps = 0;
    for (auto& k : kept) {
      std::sort(k.begin(), k.end());
      for (std::size_t i = 0; i < k.size(); ++i)
        gaps += k[i] != static_cast<int>(i);
      total += k.size();
    }
    CAPTURE(round);
    REQUIRE(gaps == 0);     // a span dropped before the queue was full
    REQUIRE(total == 1024); // the queue filled exactly
    REQUIRE(processor.stats().dropped == threads * per_thread - 1024);
  }
}
