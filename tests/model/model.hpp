// tests/model/model.hpp: the harness of the model-checking build. Include it first.
//
// A model test is a Relacy test suite over the library's real headers instantiated with
// relacy_sync. Each explored execution gets fresh per-thread state and its own default hazard
// pointer domain (scan threshold 1: every retire scans), destroyed at its end, so that nothing one
// execution allocates is seen by the next (Relacy would report leaks or double frees).
#pragma once

#include "relacy_sync.hpp" // first: it tames Relacy's macros

#include "otlpconc/hazard_pointer.hpp"

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace otlpconc_model {

using domain = otlpconc::basic_hazard_pointer_domain<relacy_sync>;

template <class Derived, int Threads>
struct model_test : rl::test_suite<Derived, Threads> {
  model_test() {
    relacy_sync::begin_execution();
    default_domain = new domain(1);
    relacy_sync::default_domain = default_domain;
  }
  ~model_test() {
    delete default_domain; // reclaims what the execution retired
    relacy_sync::default_domain = nullptr;
    relacy_sync::end_execution();
  }
  domain* default_domain;
};

// A search: exhaustive ("full"), preemption-bounded ("bound", with a context bound), or random
// ("random", a number of executions).
struct search {
  rl::scheduler_type_e type = rl::sched_full;
  unsigned context_bound = 1;
  unsigned long long iterations = 0;
};

struct entry {
  std::string name; // "[tag] what it checks"
  std::function<bool(const search&)> run;
  search how;
};

inline std::vector<entry>& registry() {
  static std::vector<entry> tests;
  return tests;
}

template <class Test>
bool simulate(const search& how, const char* name) {
  rl::test_params p;
  p.search_type = how.type;
  p.context_bound = how.context_bound;
  if (how.iterations != 0)
    p.iteration_count = how.iterations;
  p.execution_depth_limit = 20000;
  rl::ostringstream log; // allocates outside Relacy's heap (see relacy_sync.hpp)
  p.output_stream = &log;
  p.progress_stream = &log;
  const bool ok = rl::simulate<Test>(p);
  if (!ok) {
    std::printf("model check failed: %s: %s (execution %llu)\n", name, rl::test_result_str(p.test_result),
                static_cast<unsigned long long>(p.stop_iteration));
    const std::string history = log.str().c_str();
    std::fwrite(history.data(), 1, history.size() < 20000 ? history.size() : 20000, stdout);
    std::printf("\n");
  }
  return ok;
}

struct registrar {
  template <class Test>
  static int add(const char* name, search how) {
    registry().push_back({name, [name](const search& h) { return simulate<Test>(h, name); }, how});
    return 0;
  }
};

} // namespace otlpconc_model
