#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into docs/benchmarks.md: a table per component, every
implementation side by side with its ratio to the component's named baseline, and a PNG plot.

Benchmark names follow "<component>/<implementation>/<config...>". Each JSON file is one process
(scripts/bench.sh runs every binary as several processes); every repetition of every process is a
sample. A cell shows the median over all samples with their min-max; a figure whose spread
(max - min) exceeds 25% of its median is marked noisy. A ratio to the baseline is computed per
repetition pair (the same repetition of the same process) and its median and min-max are shown,
never a ratio of medians; so is the ratio of our implementation to each other peer, in a second
table. Prints the tables to stdout as well.
"""
import argparse
import json
import os
import platform
import re
import statistics
import sys
from collections import OrderedDict

NOISY_SPREAD = 0.25  # (max - min) / median above this: the figure is marked noisy

# The baseline each component is compared against (the first implementation seen otherwise).
BASELINES = {
    "counter": "std_atomic",
    "queue_u64": "boost_lockfree",
    "queue_u64_spinning": "boost_lockfree",
    "queue_string": "mutex_deque",
    "hazard_protect": "symmetric_seq_cst_fence",
    "hazard_scan_fence": "heavy_fence_other_core_idle",
    "deque_push_pop": "boost_lockfree_stack",
    "deque_owner_push_thief_steal": "xenium_chase_lev",
    "fork_join_fib": "tbb_task_group",
    "lru_read100": "single_mutex_lru",
    "lru_read90_write10": "single_mutex_lru",
    "lru_read_through": "single_mutex_lru",
    "lru_read_through_cold": "single_mutex_lru",
    "lru_read_through_pinned": "single_mutex_lru",
    "lru_put100": "single_mutex_lru",
    "lru_put_new": "single_mutex_lru",
    "pool_same_thread": "new_delete",
    "pool_same_thread_burst": "new_delete",
    "pool_producer_consumer": "new_delete",
    "telemetry_record": "otel_cpp_style",
    "telemetry_steady": "otel_cpp_style",
    "otlp_encode": "json",
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
    "queue_u64_spinning": "The same transfers with consumers that spin (retry at once) when the queue looks "
    "empty instead of yielding: a thread that loses a CAS keeps competing with the winner and, at 4P4C on 2 cores, "
    "with threads preempted mid-operation. Targets: `ms_queue` >= 2x Boost.Lockfree and >= 1.3x `xenium_ms_hp` at "
    "4P4C.",
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
    "lru_read_through_cold": "The read-through workload from an empty cache (no warm-up: the timed loop fills it, so "
    "more puts and evictions). Target (issue 21): sharded_lru >= 3x the baseline at 2 threads, cold and warm.",
    "lru_read_through_pinned": "The read-through workload with every thread pinned to CPU 0 (`sched_setaffinity`), as "
    "when another process holds the other core: threads run by time slices, and the baseline's mutex is "
    "uncontended. Target (issue 21): sharded_lru >= 0.9x the baseline.",
    "lru_put100": "Puts/s of the trace's keys (updates of present keys, and inserts that evict).",
    "lru_put_new": "Puts/s of keys never seen before: every put inserts and evicts; at 1 thread, 1 / rate is the "
    "cost of such a put. Target (issue 21): a single-thread put <= 200 ns (>= 5 M/s).",
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
    "call); `conventional_cv_buffer` is a leaner heap span without the Span object. opentelemetry-cpp itself "
    "is measured side by side in docs/telemetry.md (`bench_telemetry_otel_cpp`, not part of this run). "
    "Targets: >= 5x the baseline at 1, 2 and 4 threads; zero drops at 2 threads with `block`; p99 record latency "
    "<= 1 us at 2 threads.",
    "telemetry_steady": "One thread records a steady 20 000 spans/s for 2 s with the default options (counting "
    "exporter). Targets: batches average >= 500 spans (the final flush's partial batch included) and the export "
    "thread uses <= 1% of a core.",
    "otlp_encode": "Spans/s encoded into one export body on one thread: a batch of 512 spans of an HTTP server "
    "(a name, kind server, 7 attributes, random ids) as OTLP JSON or OTLP protobuf, alone or followed by the "
    "exporter's gzip (zlib level 6) or zstd (level 3) compression. Baseline: the JSON encoder. The size of each "
    "body is in docs/telemetry.md. Target: protobuf >= 2x the JSON encoder.",
    "telemetry_rss": "10^7 spans recorded by 2 threads and exported with the default options in `block` mode, alone "
    "in its process (bench_telemetry_rss). Target: peak RSS < 256 MB.",
    "hazard_scan_fence": "Store-load barriers/s of a hazard-pointer scan (one per scan that takes retired objects): "
    "`heavy_fence()` of the run's mode (membarrier in asymmetric mode) with the other core idle, and with another "
    "thread of the process spinning there (the kernel interrupts that core; in a VM, a VM exit); `seq_cst_fence` is "
    "the symmetric mode's barrier. 1 / rate is the cost of one barrier: divided by the objects a scan takes "
    "(R = 1000 for the default domain), the barrier's share of reclaiming one object.",
    "hazard_protect": "Protections/s on one thread: protect + reset with the reader-side fence of each mode, and "
    "the make_hazard_pointer + protect + release sequence a queue operation pays.",
}


def human(v):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


class Samples:
    """The samples of one (component, config, implementation): value per (process, repetition)."""

    def __init__(self):
        self.by_run = OrderedDict()

    def add(self, run, value):
        self.by_run[run] = value

    def values(self):
        return list(self.by_run.values())

    def median(self):
        return statistics.median(self.values())

    def spread(self):
        v, m = self.values(), self.median()
        return (max(v) - min(v)) / m if m else 0.0

    def noisy(self):
        return len(self.by_run) > 1 and self.spread() > NOISY_SPREAD

    def ratios_to(self, base):
        """Ratios repetition by repetition (pairs present in both)."""
        return [v / base.by_run[run] for run, v in self.by_run.items() if run in base.by_run and base.by_run[run]]


def load(paths):
    context = {}
    # component -> config -> impl -> Samples of items/s
    data = OrderedDict()
    # counter -> component -> config -> impl -> Samples of that counter
    extras = OrderedDict()
    processes = 0
    for process, path in enumerate(paths):
        with open(path) as f:
            doc = json.load(f)
        ctx = doc.get("context", {})
        context = context or dict(ctx)
        for key in ("peers_missing", "hazard_fence_mode"):
            if key in ctx:
                context[key] = ctx[key]
        counted = False
        for b in doc.get("benchmarks", []):
            if b.get("run_type") != "iteration" or b.get("error_occurred"):
                continue
            rate = b.get("items_per_second")
            if rate is None:
                continue
            parts = b["run_name"].split("/")
            if len(parts) < 2:
                continue
            counted = True
            component, impl = parts[0], parts[1]
            config = "/".join(p for p in parts[2:] if p not in ("real_time", "process_time")) or "-"
            run = (process, b.get("repetition_index", 0))
            data.setdefault(component, OrderedDict()).setdefault(config, OrderedDict()).setdefault(
                impl, Samples()).add(run, rate)
            for counter in COUNTERS:
                if counter in b:
                    extras.setdefault(counter, OrderedDict()).setdefault(component, OrderedDict()).setdefault(
                        config, OrderedDict()).setdefault(impl, Samples()).add(run, b[counter])
        processes += counted
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
    ("p99_record_ns", ("p99 latency of recording one span, ns (one span in 16 timed on average, at random gaps; median of the "
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


def markdown_table(columns, rows):
    """A table whose first column is the config: columns are the other headers, rows (config,
    cells) pairs."""
    lines = ["| config | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {config} | " + " | ".join(cells) + " |" for config, cells in rows]
    return "\n".join(lines)


def comparison_table(component, configs, cell, cell_vs_baseline):
    """One row per config, one column per implementation (baseline first); cell(samples) formats a
    figure, cell_vs_baseline(samples, base_samples) one compared with the baseline's of that row."""
    baseline, impls = ordered_impls(component, configs)
    rows = []
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
        rows.append((config, cells))
    return baseline, markdown_table([f"`{i}`" for i in impls], rows)


def spread_note(samples, fmt):
    """'[min-max]' of the samples, and 'noisy' when the spread exceeds NOISY_SPREAD."""
    v = samples.values()
    note = f"[{fmt(min(v))}-{fmt(max(v))}]" if len(v) > 1 else ""
    return note + (" **noisy**" if samples.noisy() else "")


def rate_cell(samples):
    return f"{human(samples.median())}/s<br><sub>{spread_note(samples, human)}</sub>"


def rate_vs_baseline(samples, base):
    ratios = samples.ratios_to(base)
    ratio = ""
    if ratios:
        lo, hi = min(ratios), max(ratios)
        ratio = f" ({statistics.median(ratios):.2f}x" + (f", {lo:.2f}-{hi:.2f}" if len(ratios) > 1 else "") + ")"
    return f"{human(samples.median())}/s{ratio}<br><sub>{spread_note(samples, human)}</sub>"


def table(component, configs):
    """Median items/s [min-max] with the ratio to the baseline (median of per-repetition ratios)."""
    return comparison_table(component, configs, rate_cell, rate_vs_baseline)


def subject_table(component, configs):
    """Our implementation (the first of OURS after the baseline) against every implementation that
    is neither it nor the baseline: the ratio per repetition pair, median and min-max, so that a
    comparison with a peer other than the baseline is never a ratio of medians. (None, None) when
    there is no such peer."""
    baseline, impls = ordered_impls(component, configs)
    subject = next((i for i in impls if i in OURS and i != baseline), None)
    others = [i for i in impls if i not in (baseline, subject)]
    if subject is None or not others:
        return None, None
    rows = []
    for config, per_impl in configs.items():
        mine = per_impl.get(subject)
        cells = []
        for other in others:
            ratios = mine.ratios_to(per_impl[other]) if mine is not None and other in per_impl else []
            if not ratios:
                cells.append("n/a")
            elif len(ratios) == 1:
                cells.append(f"{ratios[0]:.2f}x")
            else:
                cells.append(f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
        rows.append((config, cells))
    return subject, markdown_table([f"`{subject}` / `{i}`" for i in others], rows)


def counter_table(counter, component, configs):
    """One counter's values (median of the samples), compared with the baseline's where that means
    something."""
    _, cell, cell_vs_baseline = COUNTERS[counter]
    return comparison_table(
        component,
        configs,
        lambda s: cell(s.median()),
        (lambda s, base: cell_vs_baseline(s.median(), base.median())) if cell_vs_baseline else
        (lambda s, base: cell(s.median())),
    )[1]


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
        samples = [configs[n].get(impl) for n in names]
        ys = [x.median() if x else 0 for x in samples]
        lo = [x.median() - min(x.values()) if x else 0 for x in samples]
        hi = [max(x.values()) - x.median() if x else 0 for x in samples]
        ax.bar(xs, ys, width, label=impl, yerr=[lo, hi], capsize=2)
    ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_yscale("log")
    ax.set_ylabel("items/s (median, min-max bars; log scale)")
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
        sys.exit("bench_report: no benchmark repetitions found in " + " ".join(args.json))
    os.makedirs(args.img_dir, exist_ok=True)
    per_process = sorted({b.get("repetitions") for p in args.json for b in json.load(open(p)).get("benchmarks", [])} -
                         {None})
    processes = {}
    for p in args.json:  # <binary>.p<N>.json: count the processes of each binary
        m = re.match(r"(.*)\.p(\d+)\.json$", os.path.basename(p))
        if m:
            processes.setdefault(m.group(1), set()).add(m.group(2))
    procs = sorted({len(v) for v in processes.values()}) or [1]
    out = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench.sh` (do not edit by hand). Every implementation of a component runs in the",
        "same binary. Each binary ran as several **separate processes**, round-robin with the other binaries,",
        "and inside a process the repetitions ran interleaved in random order. A cell shows the **median** over",
        "every repetition of every process, with the **min-max** below it; a figure whose spread (max - min)",
        f"exceeds {int(NOISY_SPREAD * 100)}% of its median is marked **noisy**: do not read more into it than its",
        "range. The ratio in parentheses is to the component's baseline, computed **per repetition** (the same",
        "repetition of the same process, so both ran back to back) and summarized by its median and min-max;",
        "where a component has other peers, a second table gives our implementation's ratio to each of them,",
        "computed the same way.",
        "",
        f"- Machine: {machine(context)}",
        f"- Processes per binary: {', '.join(map(str, procs))}; repetitions per process: "
        f"{', '.join(map(str, per_process)) or '?'}",
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
        subject, tab_s = subject_table(component, configs)
        if tab_s:
            out += [f"`{subject}` against the other implementations, ratio per repetition pair (median, min-max):",
                    "", tab_s, ""]
        for counter, per_component in extras.items():
            if component in per_component:
                tab_c = counter_table(counter, component, per_component[component])
                out += [COUNTERS[counter][0] + ":", "", tab_c, ""]
                print(f"\n{component} {counter}\n{tab_c}")
        if plot(component, configs, img):
            out += [f"![{component}]({os.path.relpath(img, os.path.dirname(args.out) or '.')})", ""]
        print(f"\n{component} (median items/s [min-max], ratio to {baseline} per repetition)\n{tab}")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print(f"\nbench_report: wrote {args.out}")


if __name__ == "__main__":
    main()
