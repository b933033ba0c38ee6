#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into docs/benchmarks.md: a table per component, every
implementation side by side with its ratio to the component's named baseline, and a PNG plot.

Benchmark names follow "<component>/<implementation>/<config...>". Only the median aggregate of the
repetitions is used. Prints the tables to stdout as well.
"""
import argparse
import json
import os
import platform
import re
import sys
from collections import OrderedDict

# The baseline each component is compared against (the first implementation seen otherwise).
BASELINES = {
    "counter": "std_atomic",
    "queue_u64": "boost_lockfree",
    "queue_string": "mutex_deque",
    "hazard_protect": "symmetric_seq_cst_fence",
    "deque_push_pop": "boost_lockfree_stack",
    "deque_owner_push_thief_steal": "xenium_chase_lev",
    "fork_join_fib": "tbb_task_group",
    "lru_read100": "single_mutex_lru",
    "lru_read90_write10": "single_mutex_lru",
    "lru_read_through": "single_mutex_lru",
    "pool_same_thread": "new_delete",
    "pool_same_thread_burst": "new_delete",
    "pool_producer_consumer": "new_delete",
    "telemetry_record": "otel_cpp_style",
    "telemetry_steady": "otel_cpp_style",
}
# One line per component saying what is measured.
DESCRIPTIONS = {
    "counter": "Increments/s summed over all threads (64 increments per iteration). "
    "`std_atomic` is one shared `std::atomic<int64_t>::fetch_add` (baseline); "
    "`thread_local_plain` is a non-atomic thread-local increment, the floor. "
    "Targets: `sharded_counter` >= 5x `std_atomic` at 2+ threads, within 1.5x of `thread_local_plain` at 1.",
    "queue_u64": "MPMC transfers/s of `std::uint64_t` (P producers x C consumers, 256 items per producer per "
    "iteration, consumers yield when the queue is empty). Baseline: Boost.Lockfree `queue`. "
    "Targets: `ms_queue` >= 1.5x it in every configuration, and >= 1.0x `xenium_ms_hp`. "
    "`ms_queue_no_node_cache` is ms_queue with a stateful allocator (every node from malloc, freed at "
    "reclamation): what the node cache buys.",
    "queue_string": "MPMC transfers/s of 32-character `std::string` (Boost.Lockfree cannot hold it). "
    "Baseline: `std::mutex` + `std::deque`.",
    "deque_push_pop": "Owner push + pop pairs/s on one thread (items/s counts pairs). Baseline: "
    "`boost::lockfree::stack` (the Boost peer for LIFO operations). Target: chase_lev_deque <= 8 ns per pair.",
    "deque_owner_push_thief_steal": "Owner pushes/s while one thief steals (256 pushes per iteration, the owner pops "
    "what the thief left; 64 steal attempts per thief iteration).",
    "fork_join_fib": "Tasks/s of recursive fib(25) with one task spawned per call (121392 tasks), at 1 and 2 "
    "workers. Baseline: oneTBB `task_group` in a `task_arena` of that size. `mutex_pool` is one mutex-protected "
    "deque with a helping wait(). Target: work_stealing_pool >= 1.0x oneTBB at 2 workers.",
    "lru_read100": "Lookups/s, all threads together, on a Zipf(0.99) trace over 10^6 keys, capacity 10^5 entries "
    "(u64 -> u64), cache filled beforehand by an independent stream of the same distribution; misses are not "
    "inserted. Baseline: one `std::mutex` around `std::list` + `std::unordered_map`. `sharded_mutex_lru`: the "
    "same per shard (as many shards as sharded_lru uses). `sharded_lru_exact`: sharded_lru with "
    "`read_buffering = false`. Target: sharded_lru >= 3x the baseline at 2+ threads.",
    "lru_read90_write10": "Operations/s on the same trace: 90% `get`, 10% `put` of the trace's key. Target: "
    "sharded_lru >= 3x the baseline at 2+ threads.",
    "lru_read_through": "Operations/s on the same trace, read-through: `get`, and `put` on a miss (oneTBB's "
    "`concurrent_lru_cache` does this itself: it has no `put`). The hit ratio table below is the cache's "
    "quality: target within 1 percentage point of the exact LRU (`single_mutex_lru`).",
    "pool_same_thread": "Acquire + release pairs/s of a 256-byte object, all threads together: each thread keeps "
    "32 live objects and replaces the oldest one per iteration. Baseline: `new`/`delete` (glibc malloc, whose "
    "per-thread tcache serves exactly this pattern). `boost_object_pool_mutex`: `boost::object_pool` behind a "
    "`std::mutex`; `tbb_scalable_allocator`: oneTBB's tbbmalloc. Target: object_pool >= 2x `new`/`delete` at 2 "
    "threads.",
    "pool_same_thread_burst": "Acquire + release pairs/s of a 256-byte object: each thread acquires 64 objects, "
    "then releases them in the same order (a batch's lifecycle; more than glibc's tcache holds).",
    "pool_producer_consumer": "Acquire + release pairs/s of a 256-byte object released on another thread: threads "
    "in producer/consumer pairs; the producer hands batches of 32 objects over a bounded single-producer "
    "single-consumer channel (batches amortize the channel's cache-line transfers, so the allocators are what is "
    "compared), the consumer releases them (1 thread: both roles, two batches in flight). Target: object_pool "
    ">= 2x `new`/`delete` at 2 threads.",
    "telemetry_record": "Exported spans/s: N threads each record 200 000 spans (a name and 2 attributes: "
    "start, 2 attributes, end), then the processor shuts down; time from the first span to the end of the final "
    "flush; counting exporter. Default options (queue 2048, batch 512, delay 5 s) with the `drop` (default) or "
    "`block` overflow policy. The baselines share one processor written the way opentelemetry-cpp's is (a worker "
    "thread, a condition variable, a shared buffer; OpenTelemetry has no block policy, here a second condition "
    "variable). `otel_cpp_style` records the way opentelemetry-cpp's SDK does (a shared_ptr Span owning a "
    "separate recordable with an `std::unordered_map` of attributes and a shared_ptr context, its mutex locked per "
    "call); `conventional_cv_buffer` is a leaner heap span without the Span object. Both are faster than "
    "opentelemetry-cpp itself (1.22 / 0.97 / 0.62 M spans/s at 1 / 2 / 4 threads in the reference notes). "
    "Targets: >= 5x the baseline at 1, 2 and 4 threads; zero drops at 2 threads with `block`; p99 record latency "
    "<= 1 us at 2 threads.",
    "telemetry_steady": "One thread records a steady 20 000 spans/s for 2 s with the default options (counting "
    "exporter). Targets: batches average >= 500 spans (the final flush's partial batch included) and the export "
    "thread uses <= 1% of a core.",
    "telemetry_rss": "10^7 spans recorded by 2 threads and exported with the default options in `block` mode, alone "
    "in its process (bench_telemetry_rss). Target: peak RSS < 256 MB.",
    "hazard_protect": "Protections/s on one thread: protect + reset with the reader-side fence of each mode, and "
    "the make_hazard_pointer + protect + release sequence a queue operation pays.",
}


def human(v):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


def load(paths):
    context = {}
    # component -> config -> impl -> items/s (median)
    data = OrderedDict()
    # counter -> component -> config -> impl -> value (median), for benchmarks that report one
    extras = OrderedDict()
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        ctx = doc.get("context", {})
        context = context or dict(ctx)
        for key in ("peers_missing", "hazard_fence_mode"):
            if key in ctx:
                context[key] = ctx[key]
        for b in doc.get("benchmarks", []):
            if b.get("run_type") != "aggregate" or b.get("aggregate_name") != "median":
                continue
            rate = b.get("items_per_second")
            if rate is None:
                continue
            parts = b["run_name"].split("/")
            if len(parts) < 2:
                continue
            component, impl = parts[0], parts[1]
            config = "/".join(p for p in parts[2:] if p not in ("real_time", "process_time")) or "-"
            data.setdefault(component, OrderedDict()).setdefault(config, OrderedDict())[impl] = rate
            for counter in COUNTERS:
                if counter in b:
                    extras.setdefault(counter, OrderedDict()).setdefault(component, OrderedDict()).setdefault(
                        config, OrderedDict())[impl] = b[counter]
    # Configs in natural order (threads:2 before threads:10), whatever order the interleaved run used.
    for component, configs in data.items():
        data[component] = OrderedDict(sorted(configs.items(), key=lambda kv: natural_key(kv[0])))
    for per_component in extras.values():
        for component, configs in per_component.items():
            per_component[component] = OrderedDict(sorted(configs.items(), key=lambda kv: natural_key(kv[0])))
    return context, data, extras


def natural_key(text):
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text)]


def machine(context):
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown CPU")
    except OSError:
        model = platform.processor() or "unknown CPU"
    return (
        f"{context.get('num_cpus', os.cpu_count())} cores ({model}), {platform.system()} {platform.release()}, "
        f"compiler {context.get('compiler', 'unknown')}, Google Benchmark build {context.get('library_build_type', '?')}, "
        f"run {context.get('date', '?')}"
    )


# Our own implementations, listed right after the baseline; peers follow alphabetically.
OURS = ("sharded_counter", "padded_counter", "ms_queue", "ms_queue_no_node_cache", "chase_lev_deque",
        "work_stealing_pool", "asymmetric_membarrier", "make_protect_release_default_mode", "sharded_lru",
        "sharded_lru_exact", "object_pool", "batch_span_processor")

# Counters some benchmarks report besides items/s: a table each, below the component's table.
# name -> (heading, format of a value, format of a value against the baseline's or None)
COUNTERS = OrderedDict([
    ("hit_ratio", ("Hit ratio over the run (median of the repetitions, averaged over threads; difference to the "
                   "baseline in percentage points)", lambda v: f"{100 * v:.2f}%",
                   lambda v, base: f"{100 * v:.2f}% ({100 * (v - base):+.2f} pp)")),
    ("dropped_pct", ("Spans dropped, percent of the spans recorded (median)", lambda v: f"{v:.2f}%", None)),
    ("p99_record_ns", ("p99 latency of recording one span, ns (one span in 16 timed; median of the "
                       "repetitions)", lambda v: f"{v:.0f}", None)),
    ("p999_record_ns", ("p99.9 latency of recording one span, ns", lambda v: f"{v:.0f}", None)),
    ("avg_batch", ("Average spans per export (median)", lambda v: f"{v:.1f}", None)),
    ("export_cpu_pct", ("CPU time of the export thread, percent of one core (median)", lambda v: f"{v:.3f}%", None)),
    ("peak_rss_mb", ("Peak resident set of the process, MB (median)", lambda v: f"{v:.1f}", None)),
])


def ordered_impls(component, configs):
    seen = {impl for per_impl in configs.values() for impl in per_impl}
    baseline = BASELINES.get(component) if BASELINES.get(component) in seen else sorted(seen)[0]
    ours = [i for i in OURS if i in seen and i != baseline]
    rest = sorted(seen - {baseline} - set(ours))
    return baseline, [baseline] + ours + rest


def comparison_table(component, configs, cell, cell_vs_baseline):
    """One row per config, one column per implementation (baseline first); cell(v) formats a value,
    cell_vs_baseline(v, base) one compared with the baseline's value of that row."""
    baseline, impls = ordered_impls(component, configs)
    lines = [
        "| config | " + " | ".join(f"`{i}`" for i in impls) + " |",
        "|---|" + "---:|" * len(impls),
    ]
    for config, per_impl in configs.items():
        base = per_impl.get(baseline)
        cells = []
        for impl in impls:
            v = per_impl.get(impl)
            if v is None:
                cells.append("n/a")
            elif base is not None and impl != baseline:
                cells.append(cell_vs_baseline(v, base))
            else:
                cells.append(cell(v))
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return baseline, "\n".join(lines)


def table(component, configs):
    """Median items/s with the ratio to the baseline."""
    return comparison_table(
        component,
        configs,
        lambda v: f"{human(v)}/s",
        lambda v, base: f"{human(v)}/s ({v / base:.2f}x)" if base else f"{human(v)}/s",
    )


def counter_table(counter, component, configs):
    """One counter's values, compared with the baseline's where that means something."""
    _, cell, cell_vs_baseline = COUNTERS[counter]
    return comparison_table(component, configs, cell, cell_vs_baseline or (lambda v, base: cell(v)))[1]


def plot(component, configs, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench_report: matplotlib not available (Debian: python3-matplotlib), plot skipped", file=sys.stderr)
        return False
    _, impls = ordered_impls(component, configs)
    names = list(configs)
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names) + 2), 4))
    for k, impl in enumerate(impls):
        xs = [i + k * width for i in range(len(names))]
        ys = [configs[n].get(impl, 0) for n in names]
        ax.bar(xs, ys, width, label=impl)
    ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_yscale("log")
    ax.set_ylabel("items/s (median, log scale)")
    ax.set_title(component)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--img-dir", default="docs/img")
    args = ap.parse_args()

    context, data, extras = load(args.json)
    if not data:
        sys.exit("bench_report: no median aggregates found (run with --benchmark_repetitions >= 2)")
    os.makedirs(args.img_dir, exist_ok=True)
    reps = sorted({b.get("repetitions") for p in args.json for b in json.load(open(p)).get("benchmarks", [])} - {None})
    out = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.sh` (do not edit by hand). Every implementation of a component runs in the",
        "same binary; repetitions are interleaved in random order and the table shows the **median** items/s,",
        "with the ratio to the component's baseline in parentheses.",
        "",
        f"- Machine: {machine(context)}",
        f"- Repetitions per benchmark: {', '.join(map(str, reps)) or '?'}",
        f"- Optional peers not installed (skipped): {context.get('peers_missing', 'none')}",
        f"- Hazard pointer fence mode of this run: {context.get('hazard_fence_mode', '?')}",
        "- With 2 cores, runs at 4 and 8 threads are oversubscribed: they show what happens when threads are",
        "  preempted mid-operation.",
        "",
    ]
    for component, configs in data.items():
        baseline, tab = table(component, configs)
        img = os.path.join(args.img_dir, f"{component}.png")
        out += [f"## {component}", "", DESCRIPTIONS.get(component, ""), "", f"Baseline: `{baseline}`.", "", tab, ""]
        for counter, per_component in extras.items():
            if component in per_component:
                tab_c = counter_table(counter, component, per_component[component])
                out += [COUNTERS[counter][0] + ":", "", tab_c, ""]
                print(f"\n{component} {counter}\n{tab_c}")
        if plot(component, configs, img):
            out += [f"![{component}]({os.path.relpath(img, os.path.dirname(args.out) or '.')})", ""]
        print(f"\n{component} (median items/s, ratio to {baseline})\n{tab}")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"\nbench_report: wrote {args.out}")


if __name__ == "__main__":
    main()
