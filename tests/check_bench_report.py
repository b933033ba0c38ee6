#!/usr/bin/env python3
"""Checks scripts/bench_report.py on a synthetic run whose answers are known: the cell is the median
over every repetition of every process with its min-max, a spread over 25% is marked noisy, and a
ratio (to the baseline, and of our implementation to another peer) is the median of the ratios of
the same repetition of the same process, which here differs from the ratio of the medians.

Usage: check_bench_report.py SCRIPTS_DIR (the directory holding bench_report.py)."""
import json
import os
import subprocess
import sys
import tempfile


def process_json(path, rates):
    """rates: {(impl, repetition): items/s} for the config 1P1C/threads:2 of component queue_u64."""
    benchmarks = []
    for (impl, rep), rate in rates.items():
        benchmarks.append({
            "name": f"queue_u64/{impl}/1P1C/real_time/threads:2",
            "run_name": f"queue_u64/{impl}/1P1C/real_time/threads:2",
            "run_type": "iteration",
            "repetitions": 3,
            "repetition_index": rep,
            "items_per_second": rate,
        })
    with open(path, "w") as f:
        json.dump({"context": {"num_cpus": 2, "mhz_per_cpu": 1000, "library_build_type": "release"},
                   "benchmarks": benchmarks}, f)


def main():
    scripts = sys.argv[1]
    failures = []

    def check(condition, what):
        if not condition:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        # Two processes x 3 repetitions, chosen so that every median of per-pair ratios differs from
        # the ratio of the medians: a report that divides medians fails.
        rates = {
            "boost_lockfree": ([10.0, 10.0, 5.0], [10.0, 4.0, 10.0]),  # the baseline
            "ms_queue": ([20.0, 30.0, 15.0], [30.0, 8.0, 20.0]),       # ours
            "xenium_ms_hp": ([10.0, 15.0, 7.5], [15.0, 16.0, 10.0]),
            # Around the noisy threshold (spread > 25% of the median): 24% and exactly 25% are not
            # noisy, 26% is.
            "tbb": ([10.0, 10.0, 10.0], [10.0, 10.0, 12.4]),
            "mutex_deque": ([10.0, 10.0, 10.0], [10.0, 10.0, 12.5]),
            "moodycamel": ([10.0, 10.0, 10.0], [10.0, 10.0, 12.6]),
        }
        p1 = {(impl, r): v * 1e6 for impl, (first, _) in rates.items() for r, v in enumerate(first)}
        p2 = {(impl, r): v * 1e6 for impl, (_, second) in rates.items() for r, v in enumerate(second)}
        process_json(os.path.join(tmp, "bench_queue.p1.json"), p1)
        process_json(os.path.join(tmp, "bench_queue.p2.json"), p2)
        out = os.path.join(tmp, "report.md")
        res = subprocess.run([sys.executable, os.path.join(scripts, "bench_report.py"), "--out", out, "--img-dir",
                              os.path.join(tmp, "img"), os.path.join(tmp, "bench_queue.p1.json"),
                              os.path.join(tmp, "bench_queue.p2.json")], capture_output=True, text=True)
        check(res.returncode == 0, f"bench_report failed: {res.stderr}")
        text = open(out).read() if os.path.exists(out) else ""
        row = next((line for line in text.splitlines() if line.startswith("| 1P1C/threads:2 | 10.00 M/s")), "")
        cells = dict(zip(["boost_lockfree", "ms_queue", "moodycamel", "mutex_deque", "tbb", "xenium_ms_hp"],
                         [c.strip() for c in row.strip("|").split("|")[1:]]))
        # Boost: samples 10,10,5,10,4,10 -> median 10, range 4-10, noisy (60% spread).
        check(cells.get("boost_lockfree") == "10.00 M/s<br><sub>[4.00 M-10.00 M] **noisy**</sub>",
              f"baseline cell wrong: {row!r}")
        # ms_queue: samples 20,30,15,30,8,20 -> median 20; to Boost per pair 2,3,3,3,2,2 -> median 2.5
        # (the ratio of the medians would be 2.0).
        check(cells.get("ms_queue") == "20.00 M/s (2.50x, 2.00-3.00)<br><sub>[8.00 M-30.00 M] **noisy**</sub>",
              f"ms_queue's ratio is not the median per pair: {row!r}")
        # xenium: samples 10,15,7.5,15,16,10 -> median 12.5; per pair 1,1.5,1.5,1.5,4,1 -> 1.5 (medians: 1.25).
        check(cells.get("xenium_ms_hp") == "12.50 M/s (1.50x, 1.00-4.00)<br><sub>[7.50 M-16.00 M] **noisy**</sub>",
              f"xenium's ratio is not the median per pair: {row!r}")
        check(cells.get("tbb", "").endswith("<sub>[10.00 M-12.40 M]</sub>"), f"a 24% spread marked noisy: {row!r}")
        check(cells.get("mutex_deque", "").endswith("<sub>[10.00 M-12.50 M]</sub>"),
              f"a spread of exactly 25% marked noisy: {row!r}")
        check(cells.get("moodycamel", "").endswith("<sub>[10.00 M-12.60 M] **noisy**</sub>"),
              f"a 26% spread not marked noisy: {row!r}")
        # The second table: ms_queue / xenium per pair 2,2,2,2,0.5,2 -> median 2.00 (medians: 1.6).
        header = next((line for line in text.splitlines() if line.startswith("| config | `ms_queue` / ")), "")
        check("`ms_queue` / `xenium_ms_hp`" in header and "boost_lockfree" not in header,
              f"no table of ms_queue against the other peers, or one with the baseline: {header!r}")
        second = next((line for line in text.splitlines() if line.startswith("| 1P1C/threads:2 | ") and
                       "M/s" not in line), "")
        check(second.rstrip().endswith("| 2.00x (0.50-2.00) |"), f"ms_queue / xenium is not computed per pair: {second!r}")
    if failures:
        print("check_bench_report: " + "\n  ".join(["FAILED"] + failures))
        return 1
    print("check_bench_report: medians, ranges, noisy marks and per-pair ratios as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
