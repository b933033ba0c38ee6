#!/usr/bin/env python3
"""A scripted OTLP/HTTP receiver on loopback, for the exporter's tests.

Usage: otlp_server.py PORT_FILE LOG_FILE [RESPONSE ...]
Listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE), answers POST /v1/traces with the
scripted responses in order, then 200 for every later request. A response is STATUS[:retry-after=S]
[:partial=N]. Every request is checked (path, Content-Type: application/json, a TracesData body)
and appended to LOG_FILE as one JSON line: status returned, span count, span ids.
"""
import http.server
import json
import sys
import threading

port_file, log_file, script = sys.argv[1], sys.argv[2], list(sys.argv[3:])
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        entry = {"path": self.path, "content_type": self.headers.get("Content-Type")}
        try:
            doc = json.loads(body)
            ids = [s["spanId"] for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
            entry["spans"], entry["ids"] = len(ids), ids
        except Exception as e:  # a malformed body is recorded, answered 400
            entry["error"] = str(e)
        with lock:
            spec = script.pop(0) if script else "200"
        parts = spec.split(":")
        status = int(parts[0])
        headers, reply = {}, b"{}"
        for p in parts[1:]:
            k, v = p.split("=", 1)
            if k == "retry-after":
                headers["Retry-After"] = v
            elif k == "partial":
                reply = json.dumps({"partialSuccess": {"rejectedSpans": v, "errorMessage": "scripted rejection"}}).encode()
        if "error" in entry or self.path != "/v1/traces" or entry["content_type"] != "application/json":
            status = 400
        entry["status"] = status
        with lock, open(log_file, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
