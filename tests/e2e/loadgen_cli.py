#!/usr/bin/env python3
"""End to end: otlpconc-loadgen's behaviour as a tool, each promise of its --help checked.

Usage: loadgen_cli.py LOADGEN WORK_DIR
  - pacing: a run ends at its duration even when the next span is far away (--rate 1 --duration
    0.5), durations are not rounded, every scheduled span is recorded or skipped;
  - a stall (the process stopped for 0.4 s) is not caught up in a burst: its spans are skipped and
    charged to the latency from the scheduled start, not to the one from the actual start;
  - Ctrl-C ends a run at once, with the summary;
  - the summary: target and achieved rate, drop percentage, sampled-out spans, both latency
    histograms (p50/p90/p99/p99.9/max), in text and JSON; a sampled run passes check_spans.py;
  - exit statuses: 2 for a bad --summary-json path or a bad --protocol / --compression, before
    anything runs; 4 when every export
    failed (nothing listening; then nothing counts as sent); 3 when more than --max-drop-percent
    was lost, 0 when the threshold allows it;
  - a progress line on standard error every 5 s when it is not a terminal.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    sys.exit(f"loadgen_cli: {msg}")


def run(loadgen, *args, timeout=120, env=None):
    started = time.time()
    p = subprocess.run([loadgen, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return p, time.time() - started


def start_under_way(loadgen, out, *args):
    """Starts a paced run that writes its spans to `out` and returns once the first batch is in the
    file: the run is under way, so a signal sent now lands in it rather than in start-up (a fixed
    sleep did not ensure that on a loaded machine)."""
    if os.path.exists(out):
        os.remove(out)
    proc = subprocess.Popen([loadgen, *args, "--output", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not (os.path.exists(out) and os.path.getsize(out) > 0):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            _, err = proc.communicate()
            fail(f"loadgen {' '.join(args)} exported nothing (exit {proc.returncode}): {err}")
        time.sleep(0.01)
    return proc


def start_server(work, name, script, env_extra=None):
    port_file, log_file = os.path.join(work, name + ".port"), os.path.join(work, name + ".log")
    for f in (port_file, log_file):
        if os.path.exists(f):
            os.remove(f)
    env = dict(os.environ, **(env_extra or {}))
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "otlp_server.py"), port_file, log_file] + script,
                              env=env)
    deadline = time.time() + 30
    while not os.path.exists(port_file):
        if server.poll() is not None or time.time() > deadline:
            fail("the receiver did not start")
        time.sleep(0.05)
    return server, int(open(port_file).read()), log_file


def main(loadgen, work):
    os.makedirs(work, exist_ok=True)
    out, summary = os.path.join(work, "cli.jsonl"), os.path.join(work, "cli-summary.json")

    # A slow rate does not stretch the run; the duration is kept to the millisecond.
    p, took = run(loadgen, "--rate", "1", "--duration", "0.5", "--output", out, "--quiet")
    if p.returncode != 0 or not 0.45 <= took < 3.0:
        fail(f"--rate 1 --duration 0.5 took {took:.2f} s, exit {p.returncode}: {p.stderr}")
    p, _ = run(loadgen, "--rate", "2000", "--duration", "0.33", "--output", out, "--quiet", "--summary-json", summary)
    s = json.load(open(summary))
    if p.returncode != 0 or abs(s["duration_s"] - 0.33) > 1e-6:
        fail(f"--duration 0.33 ran {s['duration_s']} s (exit {p.returncode})")
    if abs(s["recorded"] + s["skipped"] - 2000 * 0.33) > s["threads"]:
        fail(f"recorded {s['recorded']} + skipped {s['skipped']} is not the 660 scheduled spans")

    # A stall: the process is stopped for 0.4 s in the middle of a paced run (4 s: the stall lands
    # inside it even when the run is seen under way late).
    proc = start_under_way(loadgen, out, "--rate", "2000", "--duration", "4", "--quiet", "--summary-json", summary)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.4)
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=60)
    s = json.load(open(summary))
    if proc.returncode != 0:
        fail(f"the stalled run exited {proc.returncode}")
    if abs(s["recorded"] + s["skipped"] - 8000) > s["threads"]:
        fail(f"after a stall: recorded {s['recorded']} + skipped {s['skipped']} is not the 8000 scheduled spans")
    if s["skipped"] < 2000 * 0.4 - 2 * 2 * 2:  # the stall's spans, less 1 ms of catch-up per thread
        fail(f"a 0.4 s stall at 2000 spans/s skipped only {s['skipped']} spans: it was caught up in a burst")
    if s["latency_scheduled_ns"]["max"] < 0.39e9:
        fail(f"the stall is missing from the latency from the scheduled start: {s['latency_scheduled_ns']}")
    if s["latency_scheduled_ns"]["count"] != s["recorded"] + s["skipped"]:
        fail("the latency from the scheduled start does not count every scheduled span")
    if s["latency_actual_ns"]["p50"] > 0.39e9 or s["latency_actual_ns"]["count"] != s["recorded"]:
        fail(f"the latency from the actual start: {s['latency_actual_ns']}")

    # Ctrl-C ends a long run at once, with the summary.
    proc = start_under_way(loadgen, out, "--rate", "1000", "--duration", "60", "--quiet")
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=30)
    if time.time() - t0 > 3.0 or proc.returncode != 0 or "recorded" not in stdout:
        fail(f"Ctrl-C took {time.time() - t0:.2f} s to end the run (exit {proc.returncode})")

    # The summary, and a sampled run checked span by span.
    p, _ = run(loadgen, "--rate", "20000", "--duration", "1", "--sample-ratio", "0.5", "--output", out,
               "--summary-json", summary, "--quiet")
    s = json.load(open(summary))
    for line in ("rate            target 20.0 kspans/s, achieved", "sampled out", "dropped", "% of those handed",
                 "latency, from the actual start     p50", "latency, from the scheduled start  p50", "p99.9",
                 "max"):
        if line not in p.stdout:
            fail(f"the summary lacks '{line}':\n{p.stdout}")
    for key in ("target_rate", "achieved_rate", "dropped_pct", "sampled_out", "latency_actual_ns",
                "latency_scheduled_ns"):
        if key not in s:
            fail(f"the JSON summary lacks {key}")
    for q in ("p50", "p90", "p99", "p999", "max"):
        if q not in s["latency_actual_ns"] or q not in s["latency_scheduled_ns"]:
            fail(f"the JSON latency lacks {q}")
    if p.returncode != 0 or not 0 < s["sampled_out"] < s["recorded"]:
        fail(f"a sampled run: exit {p.returncode}, sampled out {s['sampled_out']} of {s['recorded']}")
    check = subprocess.run([sys.executable, os.path.join(HERE, "check_spans.py"), out, summary],
                           capture_output=True, text=True)
    if check.returncode != 0:
        fail(f"check_spans.py refused a sampled run: {check.stdout}{check.stderr}")

    # A bad --summary-json path is reported at once, before the run.
    p, took = run(loadgen, "--duration", "30", "--output", out, "--summary-json", "/nonexistent/dir/s.json")
    if p.returncode != 2 or took > 5 or "summary-json" not in p.stderr:
        fail(f"a bad --summary-json: exit {p.returncode} after {took:.1f} s: {p.stderr}")

    # Bad --protocol and --compression values, and either without --endpoint: exit 2, named.
    for args, named in ((["--endpoint", "http://127.0.0.1:9/v1/traces", "--protocol", "grpc"], "--protocol"),
                        (["--endpoint", "http://127.0.0.1:9/v1/traces", "--compression", "br"], "--compression"),
                        (["--protocol", "http/json"], "only with --endpoint"),
                        (["--compression", "gzip"], "only with --endpoint")):
        p, took = run(loadgen, "--duration", "30", *args)
        if p.returncode != 2 or took > 5 or named not in p.stderr:
            fail(f"{args}: exit {p.returncode} after {took:.1f} s: {p.stderr}")

    # Nothing listening: every export fails (exit 4), and nothing counts as sent.
    server, port, _ = start_server(work, "gone", [])
    server.terminate()
    server.wait()
    p, _ = run(loadgen, "--spans", "2000", "--rate", "0", "--endpoint", f"http://127.0.0.1:{port}/v1/traces",
               "--export-timeout-ms", "2000", "--summary-json", summary, "--quiet")
    s = json.load(open(summary))
    if p.returncode != 4 or s["exported"] != 0 or s["failed"] != 2000 or s["http_bytes_sent"] != 0:
        fail(f"nothing listening: exit {p.returncode}, {s}")

    # More than --max-drop-percent lost: the receiver rejects 100 of 1000 spans (10 %).
    for threshold, status in (("1", 3), ("20", 0)):
        server, port, _ = start_server(work, "partial", ["200|partial=100"])
        try:
            p, _ = run(loadgen, "--spans", "1000", "--rate", "0", "--batch-size", "100", "--endpoint",
                       f"http://127.0.0.1:{port}/v1/traces", "--max-drop-percent", threshold, "--quiet")
        finally:
            server.terminate()
            server.wait()
        if p.returncode != status:
            fail(f"10 % lost with --max-drop-percent {threshold}: exit {p.returncode}, expected {status}")

    # Not a terminal: a progress line every 5 s.
    p, _ = run(loadgen, "--rate", "1000", "--duration", "6.5", "--output", out)
    lines = [l for l in p.stderr.splitlines() if "accepted" in l]
    if len(lines) < 2 or not 4.9 < float(lines[0].split()[0]) < 6.5:
        fail(f"progress lines on a pipe: {lines}")
    print("loadgen_cli: pacing, stalls, Ctrl-C, summary, sampled runs, exit statuses and progress lines checked")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
