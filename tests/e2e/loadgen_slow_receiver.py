#!/usr/bin/env python3
"""End to end: otlpconc-loadgen with its defaults (2 threads, 5 s, 100 000 spans/s) against an
OTLP/HTTP receiver that answers every request after 50 ms, like a Collector in another zone. One
request at a time could export about 10 000 spans/s (512 spans per 50 ms); the exporter keeps up
to 16 requests in flight.

Usage: loadgen_slow_receiver.py LOADGEN WORK_DIR [RATE]
  RATE (spans/s, default the loadgen's 100 000): the ThreadSanitizer build runs at 10 000, the
  AddressSanitizer and unoptimized (Debug) builds at 30 000, rates their pipelines sustain on 2
  cores; the throughput promise is checked by the optimized builds.
  - block policy, the checking receiver (every body parsed): nothing dropped, every recorded span
    reached the receiver in a 2xx answer exactly once, the counts reconcile;
  - drop policy, the sink receiver (bodies read and counted, not parsed): less than 1 % dropped,
    and the spans the receiver counted are the ones exported.
Prints the exported spans/s of each run.
"""
import json
import os
import subprocess
import sys
import time

RATE_ARGS = []

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    sys.exit(f"loadgen_slow_receiver: {msg}")


def run_against(loadgen, work, name, policy, sink):
    port_file, log_file, summary_file = (os.path.join(work, f"{name}.{n}") for n in ("port", "log", "summary.json"))
    for f in (port_file, log_file, summary_file):
        if os.path.exists(f):
            os.remove(f)
    env = dict(os.environ, OTLP_SERVER_DELAY_MS="50")
    if sink:
        env["OTLP_SERVER_SINK"] = "1"
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "otlp_server.py"), port_file, log_file], env=env)
    try:
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if server.poll() is not None or time.time() > deadline:
                fail("the receiver did not start")
            time.sleep(0.05)
        port = open(port_file).read().strip()
        run = subprocess.run([loadgen, "--policy", policy, "--quiet", "--endpoint",
                              f"http://127.0.0.1:{port}/v1/traces", "--summary-json", summary_file] + RATE_ARGS,
                             capture_output=True, text=True, timeout=600)
        print(run.stdout, end="")
        if server.poll() is not None:
            fail(f"the receiver exited during the run (status {server.returncode})")
    finally:
        server.terminate()
        server.wait()
    summary = json.load(open(summary_file))
    log = [json.loads(line) for line in open(log_file)]
    if run.returncode != 0:
        fail(f"{name}: otlpconc-loadgen exited {run.returncode}: {run.stderr}")
    if summary["accepted"] != summary["exported"] + summary["dropped"] + summary["failed"] or summary["failed"]:
        fail(f"{name}: the accounts: {summary}")
    if summary["http_requests"] != len(log):
        fail(f"{name}: {summary['http_requests']} requests sent, {len(log)} received")
    if sum(e["spans"] for e in log if 200 <= e["status"] < 300) != summary["exported"]:
        fail(f"{name}: the receiver took {sum(e['spans'] for e in log)} spans, {summary['exported']} exported")
    return summary, log


def main(loadgen, work):
    os.makedirs(work, exist_ok=True)
    summary, log = run_against(loadgen, work, "block", "block", sink=False)
    if summary["dropped"] != 0:
        fail(f"block policy dropped {summary['dropped']} spans")
    delivered = set()
    for e in log:
        if "error" in e:
            fail(f"the receiver refused a request: {e['error']}")
        for t, seq in e["keys"]:
            if (t, seq) in delivered:
                fail(f"thread {t} seq {seq} delivered twice")
            delivered.add((t, seq))
    for t, n in enumerate(summary["per_thread"]):
        for seq in range(n):
            if (t, seq) not in delivered:
                fail(f"thread {t} seq {seq} never reached the receiver")
    block_rate = summary["exported"] / summary["duration_s"]
    print(f"loadgen_slow_receiver: block: {summary['exported']} spans exported ({block_rate:.0f}/s over the "
          f"{summary['duration_s']:.2f} s run), none dropped, at most {summary['http_max_in_flight']} requests in "
          f"flight, every span received once")

    summary, _ = run_against(loadgen, work, "drop", "drop", sink=True)
    if summary["dropped_pct"] >= 1.0:
        fail(f"drop policy dropped {summary['dropped_pct']:.3f} %")
    drop_rate = summary["exported"] / summary["duration_s"]
    print(f"loadgen_slow_receiver: drop: {summary['exported']} spans exported ({drop_rate:.0f}/s), "
          f"{summary['dropped_pct']:.3f} % dropped, at most {summary['http_max_in_flight']} requests in flight")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    if len(sys.argv) == 4:
        RATE_ARGS = ["--rate", sys.argv[3]]
    main(sys.argv[1], sys.argv[2])
