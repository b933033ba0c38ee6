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
    """rates: {(impl, repetition): items/s} for the config threads:2 of component queue_u64."""
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
        boost = {0: 10.0, 1: 10.0, 2: 5.0}
        boost2 = {0: 10.0, 1: 4.0, 2: 10.0}
        ms = {0: 20.0, 1: 30.0, 2: 10.0}   # to Boost per pair: 2x, 3x, 2x
        ms2 = {0: 30.0, 1: 8.0, 2: 30.0}   # 3x, 2x, 3x
        xen = {0: 10.0, 1: 15.0, 2: 5.0}   # ms_queue / xenium per pair: 2x, 2x, 2x
        xen2 = {0: 15.0, 1: 4.0, 2: 10.0}  # 2x, 2x, 3x
        p1 = {("boost_lockfree", r): v * 1e6 for r, v in boost.items()}
        p1.update({("ms_queue", r): v * 1e6 for r, v in ms.items()})
        p1.update({("xenium_ms_hp", r): v * 1e6 for r, v in xen.items()})
        p2 = {("boost_lockfree", r): v * 1e6 for r, v in boost2.items()}
        p2.update({("ms_queue", r): v * 1e6 for r, v in ms2.items()})
        p2.update({("xenium_ms_hp", r): v * 1e6 for r, v in xen2.items()})
        process_json(os.path.join(tmp, "bench_queue.p1.json"), p1)
        process_json(os.path.join(tmp, "bench_queue.p2.json"), p2)
        out = os.path.join(tmp, "report.md")
        res = subprocess.run([sys.executable, os.path.join(scripts, "bench_report.py"), "--out", out, "--img-dir",
                              os.path.join(tmp, "img"), os.path.join(tmp, "bench_queue.p1.json"),
                              os.path.join(tmp, "bench_queue.p2.json")], capture_output=True, text=True)
        check(res.returncode == 0, f"bench_report failed: {res.stderr}")
        text = open(out).read() if os.path.exists(out) else ""
        row = next((line for line in text.splitlines() if line.startswith("| 1P1C/threads:2 | 10.00 M/s")), "")
        # Boost: samples 10,10,5,10,4,10 -> median 10, range 4-10, noisy (60% spread).
        check("10.00 M/s<br><sub>[4.00 M-10.00 M] **noisy**</sub>" in row, f"baseline cell wrong: {row!r}")
        # ms_queue: samples 20,30,10,30,8,30 -> median 25; per pair 2,3,2,3,2,3 -> median 2.5 (not 25/10).
        check("25.00 M/s (2.50x, 2.00-3.00)" in row, f"ms_queue's ratio is not the median per pair: {row!r}")
        # xenium: samples 10,15,5,15,4,10 -> median 10, noisy; to Boost per pair 1,1.5,1,1.5,1,1 -> 1.
        check("10.00 M/s (1.00x, 1.00-1.50)<br><sub>[4.00 M-15.00 M] **noisy**</sub>" in row,
              f"xenium cell wrong: {row!r}")
        # The second table: ms_queue / xenium per pair 2,2,2,2,2,3 -> median 2.00 (medians: 25/10 = 2.5).
        check("| `ms_queue` / `xenium_ms_hp` |" in text, "no table of ms_queue against the other peers")
        check("| 1P1C/threads:2 | 2.00x (2.00-3.00) |" in text, "ms_queue / xenium is not computed per pair")
    if failures:
        print("check_bench_report: " + "\n  ".join(["FAILED"] + failures))
        return 1
    print("check_bench_report: medians, ranges, noisy marks and per-pair ratios as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
