#!/usr/bin/env python3
"""Reads an otlpconc-loadgen JSON Lines file back and checks every span against the summary.

Each line must be one OTLP TracesData JSON object with OTLP JSON's rules (hex ids of the right
length, 64-bit integers as decimal strings, enums as integers). Every span carries loadgen.thread
and loadgen.seq, each (thread, seq) at most once with seq < recorded[thread], and the file holds as
many spans as were exported. The accounts balance: recorded = accepted + sampled out, and accepted =
exported + dropped + failed. With a sample ratio below 1, every exported span's trace id passes the
trace_id_ratio rule (its low 56 bits R >= T = round((1 - ratio) 2^56)). When nothing was dropped or
failed, the spans of thread t are seq 0 .. recorded[t]-1 less exactly as many as were sampled out
(all of them when nothing was sampled out).
Usage: check_spans.py SPANS.jsonl SUMMARY.json
"""
import json
import re
import sys

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DEC = re.compile(r"^-?[0-9]+$")


def fail(msg):
    sys.exit(f"check_spans: {msg}")


def main(spans_path, summary_path):
    with open(summary_path) as f:
        summary = json.load(f)
    ratio = summary.get("sample_ratio", 1.0)
    threshold = round((1 - ratio) * 2**56) if ratio < 1 else None
    sampled_out = summary.get("sampled_out", 0)
    seen = {}
    span_ids = set()
    count = 0
    with open(spans_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n"):
                fail(f"line {lineno} is not terminated (a partial write?)")
            doc = json.loads(line)
            for rs in doc["resourceSpans"]:
                attrs = {a["key"]: a["value"] for a in rs["resource"].get("attributes", [])}
                if attrs.get("service.name") != {"stringValue": "otlpconc-loadgen"}:
                    fail(f"line {lineno}: wrong resource {attrs}")
                for ss in rs["scopeSpans"]:
                    if ss["scope"]["name"] != "otlpconc.loadgen":
                        fail(f"line {lineno}: wrong scope {ss['scope']}")
                    for s in ss["spans"]:
                        count += 1
                        if not HEX32.match(s["traceId"]) or not HEX16.match(s["spanId"]):
                            fail(f"line {lineno}: bad ids {s['traceId']} {s['spanId']}")
                        if s["spanId"] in span_ids:
                            fail(f"span id {s['spanId']} exported twice")
                        span_ids.add(s["spanId"])
                        if s["name"] != "loadgen.work" or s["kind"] != 1:
                            fail(f"line {lineno}: bad name or kind: {s['name']} {s['kind']}")
                        start, end = s["startTimeUnixNano"], s["endTimeUnixNano"]
                        if not (DEC.match(start) and DEC.match(end)) or int(end) < int(start):
                            fail(f"line {lineno}: bad times {start} {end}")
                        a = {x["key"]: x["value"] for x in s["attributes"]}
                        t, seq = int(a["loadgen.thread"]["intValue"]), int(a["loadgen.seq"]["intValue"])
                        key = (t, seq)
                        if key in seen:
                            fail(f"thread {t} seq {seq} exported twice")
                        if not (0 <= t < len(summary["per_thread"]) and 0 <= seq < summary["per_thread"][t]):
                            fail(f"thread {t} seq {seq} was never recorded")
                        if threshold is not None and int(s["traceId"][18:], 16) < threshold:
                            fail(f"span {s['spanId']} of trace {s['traceId']} should have been sampled out")
                        seen[key] = True
    if count != summary["exported"]:
        fail(f"{count} spans in the file, the summary says {summary['exported']} exported")
    if summary["accepted"] != summary["exported"] + summary["dropped"] + summary["failed"]:
        fail(f"summary does not balance: {summary}")
    if summary["recorded"] != summary["accepted"] + sampled_out or sum(summary["per_thread"]) != summary["recorded"]:
        fail(f"recorded != accepted + sampled out, or the threads' counts disagree: {summary}")
    if summary["dropped"] == 0 and summary["failed"] == 0:
        missing = sum(summary["per_thread"]) - len(seen)
        if missing != sampled_out:
            fail(f"{missing} spans missing, {sampled_out} were sampled out")
        if sampled_out == 0:
            for t, n in enumerate(summary["per_thread"]):
                for seq in range(n):
                    if (t, seq) not in seen:
                        fail(f"thread {t} seq {seq} is missing")
    what = "every span once" if sampled_out == 0 else f"every sampled span once, {sampled_out} sampled out"
    print(f"check_spans: {count} spans checked, {len(summary['per_thread'])} threads, {what}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
