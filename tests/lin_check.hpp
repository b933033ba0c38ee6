// A linearizability checker for short concurrent histories (Wing & Gong's search with Lowe's
// memoization of visited (linearized set, model state) pairs), reusable for any object with a
// sequential model: the queue here, the work-stealing deque later.
//
// A history is a vector of operations, each with an invocation and a response timestamp taken from
// one global sequentially consistent ticket counter (record_history below does that), so "a
// responded before b was invoked" implies a happens-before b. The history is linearizable when some
// total order of the operations respects that real-time order and, replayed on the model, produces
// exactly the recorded results.
//
// Model requirements: copyable, operator==, a member `std::size_t hash() const`, and
// `bool apply(const Op&)` which performs the operation on the model and returns whether the
// recorded result matches the model's.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace otlpconc::testing {

struct timestamps {
  std::uint64_t invoke = 0;
  std::uint64_t response = 0;
};

namespace detail {

template <class Model>
struct visited_key {
  std::uint64_t done;
  Model model;
  bool operator==(const visited_key&) const = default;
};

template <class Model>
struct visited_hash {
  std::size_t operator()(const visited_key<Model>& k) const noexcept {
    return std::hash<std::uint64_t>{}(k.done) * 31 + k.model.hash();
  }
};

template <class Op, class Model>
bool search(const std::vector<Op>& ops, std::uint64_t done, const Model& model,
            std::unordered_set<visited_key<Model>, visited_hash<Model>>& failed) {
  const std::uint64_t all = ops.size() == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << ops.size()) - 1;
  if (done == all)
    return true;
  if (failed.count(visited_key<Model>{done, model}) != 0)
    return false;
  // An operation may go next only if no other pending operation responded before it was invoked.
  std::uint64_t min_response = UINT64_MAX;
  for (std::size_t i = 0; i < ops.size(); ++i)
    if ((done >> i & 1) == 0 && ops[i].response < min_response)
      min_response = ops[i].response;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if ((done >> i & 1) != 0 || ops[i].invoke > min_response)
      continue;
    Model next = model;
    if (next.apply(ops[i]) && search(ops, done | std::uint64_t{1} << i, next, failed))
      return true;
  }
  failed.insert(visited_key<Model>{done, model});
  return false;
}

} // namespace detail

// True when `history` (at most 64 operations, each with .invoke and .response) has a legal
// sequential witness starting from `initial`.
template <class Op, class Model>
bool is_linearizable(const std::vector<Op>& history, const Model& initial) {
  if (history.size() > 64)
    throw std::invalid_argument("is_linearizable: at most 64 operations per history");
  std::unordered_set<detail::visited_key<Model>, detail::visited_hash<Model>> failed;
  return detail::search(history, 0, initial, failed);
}

// Runs one concurrent history: `threads` threads released together by a barrier, thread t calling
// run_op(t, i, clock) for i in [0, ops_per_thread). run_op performs one operation and returns the
// Op it recorded; it must take op.invoke = clock.fetch_add(1) just before the operation and
// op.response = clock.fetch_add(1) just after it (seq_cst tickets, see above).
template <class Op, class RunOp>
std::vector<Op> record_history(int threads, int ops_per_thread, RunOp run_op) {
  std::atomic<std::uint64_t> clock{0};
  std::vector<std::vector<Op>> per_thread(static_cast<std::size_t>(threads));
  std::barrier start(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < ops_per_thread; ++i)
        per_thread[static_cast<std::size_t>(t)].push_back(run_op(t, i, clock));
    });
  for (auto& th : pool)
    th.join();
  std::vector<Op> all;
  for (auto& v : per_thread)
    all.insert(all.end(), v.begin(), v.end());
  return all;
}

// A FIFO queue model for histories of push(value), try_pop() -> value or empty (pop: the optional
// form; pop_into: the bool try_pop(T&) form) and empty() -> bool.
struct queue_op : timestamps {
  enum kind_t { push, pop, pop_into, is_empty } kind = push;
  int value = 0;      // pushed value, or popped value when !empty
  bool empty = false; // pop found the queue empty, or empty() answered true
};

struct queue_model {
  std::vector<int> items; // front at index `front`
  std::size_t front = 0;

  bool apply(const queue_op& op) {
    if (op.kind == queue_op::push) {
      items.push_back(op.value);
      return true;
    }
    if (op.kind == queue_op::is_empty)
      return op.empty == (front == items.size());
    if (front == items.size())
      return op.empty;
    if (op.empty || items[front] != op.value)
      return false;
    ++front;
    return true;
  }
  std::size_t hash() const noexcept {
    std::size_t h = front;
    for (std::size_t i = front; i < items.size(); ++i)
      h = h * 1000003u + static_cast<std::size_t>(items[i]);
    return h;
  }
  bool operator==(const queue_model& o) const {
    return items.size() - front == o.items.size() - o.front &&
           std::equal(items.begin() + static_cast<std::ptrdiff_t>(front), items.end(),
                      o.items.begin() + static_cast<std::ptrdiff_t>(o.front));
  }
};

// One random concurrent history on `q`: thread t's i-th operation is choose(t, i), either a
// queue_op::kind_t or a bool (true: push, false: try_pop). Pushes push t * 100 + i.
template <class Queue, class Choose>
std::vector<queue_op> record_queue_history(Queue& q, int threads, int ops_per_thread, Choose choose) {
  return record_history<queue_op>(threads, ops_per_thread, [&](int t, int i, std::atomic<std::uint64_t>& clock) {
    queue_op op;
    if constexpr (std::is_same_v<decltype(choose(t, i)), bool>)
      op.kind = choose(t, i) ? queue_op::push : queue_op::pop;
    else
      op.kind = choose(t, i);
    op.invoke = clock.fetch_add(1, std::memory_order_seq_cst);
    switch (op.kind) {
    case queue_op::push:
      op.value = t * 100 + i;
      q.push(op.value);
      break;
    case queue_op::pop: {
      auto v = q.try_pop();
      op.empty = !v.has_value();
      op.value = v.value_or(0);
      break;
    }
    case queue_op::pop_into:
      op.empty = !q.try_pop(op.value);
      break;
    case queue_op::is_empty:
      op.empty = q.empty();
      break;
    }
    op.response = clock.fetch_add(1, std::memory_order_seq_cst);
    return op;
  });
}

} // namespace otlpconc::testing
