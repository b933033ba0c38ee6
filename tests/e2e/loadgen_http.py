#!/usr/bin/env python3
"""End to end over OTLP/HTTP: otlpconc-loadgen -> the scripted loopback receiver, with injected 503s,
a 429 and Retry-After, then every count reconciled between the load generator's summary and what
the receiver logged.

Usage: loadgen_http.py LOADGEN WORK_DIR [PROTOCOL COMPRESSION [SHAPE]]
  PROTOCOL: http/protobuf (default) or http/json; COMPRESSION: none (default), gzip or zstd; SHAPE:
  plain (default) or rich (--span-shape rich). The receiver decompresses every request and decodes
  protobuf with OpenTelemetry's generated model. With rich, every delivered span must carry its
  loadgen.key array [thread, seq], one event loadgen.event with its seq, and (after the thread's
  first span) a link to the span id the receiver got for (thread, seq - 1).
Checks: every request has the protocol's Content-Type and the compression's Content-Encoding, and a
protobuf body re-encodes byte for byte (canonical); the bytes the receiver got are the bytes the
load generator reports sent; every span the threads recorded reached the receiver in a request it answered 2xx, exactly
once; the receiver's request count is the exporter's; exported = delivered - rejected; failed =
rejected; nothing dropped; accepted = exported + dropped + failed; the retries are the scripted
ones, and the Retry-After waits were honoured (each such request came again a second later or more).
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = ["503|retry-after=1", "503", "429|retry-after=1", "200|partial=5"]
SCRIPTED_RETRIES = 3
REJECTED = 5


def fail(msg):
    sys.exit(f"loadgen_http: {msg}")


def main(loadgen, work, protocol="http/protobuf", compression="none", shape="plain"):
    os.makedirs(work, exist_ok=True)
    port_file, log_file, summary_file = (os.path.join(work, n) for n in ("port", "requests.jsonl", "summary.json"))
    for f in (port_file, log_file, summary_file):
        if os.path.exists(f):
            os.remove(f)
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "otlp_server.py"), port_file, log_file] + SCRIPT)
    try:
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if server.poll() is not None or time.time() > deadline:
                fail("the receiver did not start")
            time.sleep(0.05)
        port = open(port_file).read().strip()
        started = time.time()
        run = subprocess.run([loadgen, "--threads", "3", "--spans", "30000", "--batch-size", "512", "--quiet",
                              "--endpoint", f"http://127.0.0.1:{port}/v1/traces", "--header", "x-e2e=loadgen",
                              "--protocol", protocol, "--compression", compression, "--span-shape", shape,
                              "--summary-json", summary_file], capture_output=True, text=True, timeout=600)
        took = time.time() - started
        print(run.stdout, end="")
        if run.returncode != 0:
            fail(f"otlpconc-loadgen exited {run.returncode}: {run.stderr}")
        if server.poll() is not None:
            fail(f"the receiver exited during the run (status {server.returncode})")
    finally:
        server.terminate()
        server.wait()

    summary = json.load(open(summary_file))
    log = [json.loads(line) for line in open(log_file)]
    # Exports run concurrently: the scripted answers went to whichever requests came first.
    statuses = sorted(e["status"] for e in log)
    if statuses.count(503) != 2 or statuses.count(429) != 1 or len(statuses) != statuses.count(200) + 3:
        fail(f"the receiver's answers were {statuses}")
    for e in log:
        if "error" in e:
            fail(f"the receiver refused a request: {e['error']}")
        if e["headers"].get("x-e2e") != "loadgen":
            fail(f"a request without the --header: {e['headers']}")
        want_type = "application/x-protobuf" if protocol == "http/protobuf" else "application/json"
        if e["headers"].get("content-type") != want_type:
            fail(f"Content-Type {e['headers'].get('content-type')}, expected {want_type}")
        if e["headers"].get("content-encoding", "none") != compression:
            fail(f"Content-Encoding {e['headers'].get('content-encoding')}, expected {compression}")
        if protocol == "http/protobuf" and e.get("canonical") is not True:
            fail("a protobuf request does not re-encode to the same bytes with OpenTelemetry's model")
    received = sum(e["bytes"] for e in log)
    if summary["http_bytes_sent"] != received:
        fail(f"the receiver got {received} bytes, the load generator reports {summary['http_bytes_sent']} sent")
    delivered = {}
    for e in log:
        if 200 <= e["status"] < 300:
            for t, seq in e["keys"]:
                if (t, seq) in delivered:
                    fail(f"thread {t} seq {seq} delivered twice")
                delivered[(t, seq)] = True
    if summary["dropped"] != 0:
        fail(f"block policy dropped {summary['dropped']} spans")
    for t, n in enumerate(summary["per_thread"]):
        for seq in range(n):
            if (t, seq) not in delivered:
                fail(f"thread {t} seq {seq} never reached the receiver")
    if len(delivered) != summary["recorded"]:
        fail(f"{len(delivered)} spans delivered, {summary['recorded']} recorded")
    checks = {
        "requests": (summary["http_requests"], len(log)),
        "retries": (summary["http_retries"], SCRIPTED_RETRIES),
        "exported": (summary["exported"], len(delivered) - REJECTED),
        "failed": (summary["failed"], REJECTED),
        "accepted": (summary["accepted"], summary["exported"] + summary["dropped"] + summary["failed"]),
    }
    for name, (got, want) in checks.items():
        if got != want:
            fail(f"{name}: {got}, expected {want}")
    # Each request answered with Retry-After: 1 was sent again (the same spans) a second later or more.
    waited = 0
    for i, e in enumerate(log):
        if e["status"] in (503, 429) and e["ids"]:
            again = [x for x in log[i + 1:] if x["ids"] and x["ids"][0] == e["ids"][0]]
            if not again:
                fail(f"a request answered {e['status']} was never sent again")
            gap = again[0]["time"] - e["time"]
            if e["scripted_retry_after"] and gap < 0.95:
                fail(f"a Retry-After: 1 was not honoured: the retry came {gap:.2f} s later")
            waited += e["scripted_retry_after"]
    if waited != 2 or took < 1.0:
        fail(f"{waited} Retry-After waits seen, the run took {took:.2f} s")
    if shape == "rich":
        ids, rich = {}, {}
        for e in log:
            if 200 <= e["status"] < 300:
                for t, seq, span_id, events, links, array in e.get("rich", []):
                    ids[(t, seq)] = span_id
                    rich[(t, seq)] = (events, links, array)
        if len(rich) != len(delivered):
            fail(f"{len(delivered) - len(rich)} delivered spans lack their event, link or array")
        for (t, seq), (events, links, array) in rich.items():
            if array != [t, seq] or events != [["loadgen.event", seq]]:
                fail(f"thread {t} seq {seq}: array {array}, events {events}")
            want = [] if seq == 0 else [ids.get((t, seq - 1))]
            if [l[0] for l in links] != want or any(l[1] & 0x300 != 0x100 for l in links):
                fail(f"thread {t} seq {seq}: links {links}, expected a local link to {want}")
        print(f"loadgen_http: every span carried its array, event and link to its predecessor")
    if summary["http_protocol"] != protocol or summary["http_compression"] != compression:
        fail(f"the summary says {summary['http_protocol']} {summary['http_compression']}")
    ratio = summary["http_bytes_encoded"] / max(summary["http_bytes_compressed"], 1)
    if compression != "none" and ratio < 2:  # random 24-byte ids per span do not compress
        fail(f"{compression} made the bodies only {ratio:.1f}x smaller")
    print(f"loadgen_http: {protocol}, {compression}: {summary['http_bytes_encoded'] / len(delivered):.0f} bytes "
          f"per span encoded, {summary['http_bytes_sent'] / len(delivered):.0f} sent")
    print(f"loadgen_http: {len(log)} requests, {len(delivered)} spans delivered once each, "
          f"{REJECTED} rejected and counted failed, {SCRIPTED_RETRIES} retries, counts reconciled")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5, 6):
        sys.exit(__doc__)
    main(*sys.argv[1:])
