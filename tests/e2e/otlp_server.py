#!/usr/bin/env python3
"""A scripted OTLP/HTTP receiver on loopback, for the exporter's tests and the end-to-end test.

Usage: otlp_server.py PORT_FILE LOG_FILE [RESPONSE ...]
Listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE once listening) and answers each POST
with the next scripted response, then 200 for every later request. A response is STATUS followed
by '|'-separated options:
  retry-after=VALUE  a Retry-After header (seconds or an HTTP date)
  partial=N          a partialSuccess body rejecting N spans, errorMessage "scripted rejection"
  body=TEXT          this response body instead of {}
  hang=SECONDS       wait this long before answering
  wait=PATH          wait until the file PATH exists (at most 60 s) before answering
  location=URL       a Location header (with a 3xx status: a redirect)
  close              close the connection without answering (a transport error)
OTLP_SERVER_DELAY_MS=N in the environment delays every answer by N ms (a distant Collector).
With OTLP_SERVER_SINK=1 it only reads each body and answers 200, checking nothing; it logs one line
per request with the status and the span count only (a fast receiver, for throughput runs of
otlpconc-loadgen --endpoint).
Otherwise every request is checked (POST to /v1/traces, Content-Type: application/json, an OTLP TracesData
body whose spans have 32/16-hex ids) and appended to LOG_FILE as one JSON line: path, request
headers (lower-cased names), arrival time, status returned, span count, span ids, and the spans' loadgen.thread
and loadgen.seq attributes when present. A request that fails the checks is answered 400 and its
"error" logged.
"""
import http.server
import json
import os
import re
import sys
import threading
import time

port_file, log_file, script = sys.argv[1], sys.argv[2], list(sys.argv[3:])
lock = threading.Lock()
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
SINK = os.environ.get("OTLP_SERVER_SINK") == "1"
DELAY = float(os.environ.get("OTLP_SERVER_DELAY_MS", "0")) / 1000.0


def parse_spans(body):
    doc = json.loads(body)
    ids, keys = [], []
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                if not HEX32.match(s["traceId"]) or not HEX16.match(s["spanId"]):
                    raise ValueError(f"bad ids {s['traceId']} {s['spanId']}")
                ids.append(s["spanId"])
                a = {x["key"]: x["value"] for x in s.get("attributes", [])}
                if "loadgen.thread" in a and "loadgen.seq" in a:
                    keys.append([int(a["loadgen.thread"]["intValue"]), int(a["loadgen.seq"]["intValue"])])
    return ids, keys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a Collector does
    disable_nagle_algorithm = True  # the status line, headers and body are separate writes

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if SINK:
            if DELAY:
                time.sleep(DELAY)
            with lock, open(log_file, "a") as f:
                f.write(json.dumps({"status": 200, "spans": body.count(b'"spanId"')}) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        entry = {"path": self.path, "time": time.time(), "headers": {k.lower(): v for k, v in self.headers.items()}}
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"wrong path {self.path}")
            if self.headers.get("Content-Type") != "application/json":
                raise ValueError(f"wrong Content-Type {self.headers.get('Content-Type')}")
            entry["ids"], entry["keys"] = parse_spans(body)
            entry["spans"] = len(entry["ids"])
        except Exception as e:  # recorded, answered 400
            entry["error"] = str(e)
        with lock:
            spec = script.pop(0) if script else "200"
        parts = spec.split("|")
        status = int(parts[0])
        headers, reply, hang, close, wait = {}, b"{}", DELAY, False, None
        for p in parts[1:]:
            k, _, v = p.partition("=")
            if k == "retry-after":
                headers["Retry-After"] = v
            elif k == "partial":
                reply = json.dumps({"partialSuccess": {"rejectedSpans": v, "errorMessage": "scripted rejection"}}).encode()
            elif k == "body":
                reply = v.encode()
            elif k == "hang":
                hang = float(v)
            elif k == "wait":
                wait = v
            elif k == "location":
                headers["Location"] = v
            elif k == "close":
                close = True
            else:
                raise SystemExit(f"otlp_server.py: unknown response option {p}")
        if "error" in entry:
            status = 400
        entry["status"] = 0 if close else status
        entry["scripted_retry_after"] = 1 if "Retry-After" in headers else 0
        with lock, open(log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if hang:
            time.sleep(hang)
        if wait:
            give_up = time.time() + 60
            while not os.path.exists(wait) and time.time() < give_up:
                time.sleep(0.01)
        if close:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, shutdown)
            self.close_connection = True

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
