#!/usr/bin/env python3
"""A scripted OTLP/HTTP receiver on loopback, for the exporter's tests and the end-to-end test.

Usage: otlp_server.py PORT_FILE LOG_FILE [--tls-cert=PEM --tls-key=PEM [--tls-client-ca=PEM]] [RESPONSE ...]
With --tls-cert and --tls-key it speaks https (TLS) with that certificate; with --tls-client-ca it
also requires a client certificate that this file verifies (mutual TLS).
Listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE once listening) and answers each POST
with the next scripted response, then 200 for every later request. A response is STATUS followed
by '|'-separated options:
  retry-after=VALUE  a Retry-After header (seconds or an HTTP date)
  partial=N          a partialSuccess body rejecting N spans, errorMessage "scripted rejection"
                     (protobuf when the request was, else JSON)
  status=TEXT        a protobuf google.rpc.Status body with this message (for error statuses)
  body=TEXT          this response body instead of the empty response ({} or an empty protobuf)
  hang=SECONDS       wait this long before answering
  wait=PATH          wait until the file PATH exists (at most 60 s) before answering
  location=URL       a Location header (with a 3xx status: a redirect)
  close              close the connection without answering (a transport error)
OTLP_SERVER_DELAY_MS=N in the environment delays every answer by N ms (a distant Collector).
With OTLP_SERVER_SINK=1 it only reads each body and answers 200, checking nothing; it logs one line
per request with the status and the span count only (a fast receiver, for throughput runs of
otlpconc-loadgen --endpoint).
Otherwise every request is checked and appended to LOG_FILE as one JSON line: path, request headers
(lower-cased names), arrival time, status returned, span count, span ids, the spans' loadgen.thread
and loadgen.seq attributes when present, the body's size on the wire and decompressed, and for
protobuf whether it is canonical. The checks: POST to /v1/traces; Content-Encoding absent, identity,
gzip (zlib) or zstd (the zstd command), and the body decompresses; Content-Type application/json
with an OTLP TracesData body, or application/x-protobuf with an ExportTraceServiceRequest that
OpenTelemetry's generated model decodes (otlp_decode.js, npm @opentelemetry/otlp-transformer); span
ids of 32/16 hex digits. A request that fails the checks is answered 400 and its "error" logged.
Responses are protobuf (application/x-protobuf) to a protobuf request, JSON otherwise.
"""
import http.server
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib

port_file, log_file, script = sys.argv[1], sys.argv[2], list(sys.argv[3:])
tls = {}
while script and script[0].startswith("--tls-"):
    k, _, v = script.pop(0)[2:].partition("=")
    tls[k] = v
lock = threading.Lock()
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
SINK = os.environ.get("OTLP_SERVER_SINK") == "1"
DELAY = float(os.environ.get("OTLP_SERVER_DELAY_MS", "0")) / 1000.0
DECODER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "otlp_decode.js")
decoder = None  # the otlp_decode.js process, started at the first protobuf request
decoder_lock = threading.Lock()


def decode_protobuf(body):
    """The request as OTLP JSON, decoded by OpenTelemetry's generated model; and whether canonical."""
    global decoder
    with decoder_lock:
        if decoder is None or decoder.poll() is not None:
            decoder = subprocess.Popen(["node", DECODER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        decoder.stdin.write(struct.pack(">I", len(body)) + body)
        decoder.stdin.flush()
        line = decoder.stdout.readline()
    if not line:
        raise ValueError("otlp_decode.js ended (is OpenTelemetry's model installed? scripts/deps.sh test)")
    out = json.loads(line)
    if "error" in out:
        raise ValueError(out["error"])
    return out["doc"], out["canonical"]


def decompress(body, encoding):
    if encoding in (None, "", "identity"):
        return body
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a gzip member, nothing after it
        out = d.decompress(body) + d.flush()
        if not d.eof or d.unused_data:
            raise ValueError("not one complete gzip member")
        return out
    if encoding == "zstd":
        r = subprocess.run(["zstd", "-d", "-c", "-q"], input=body, capture_output=True)
        if r.returncode != 0:
            raise ValueError(f"zstd -d failed: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout
    raise ValueError(f"unknown Content-Encoding {encoding}")


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_field(number, payload):  # a length-delimited field
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def count_protobuf_spans(body):
    """Spans of an ExportTraceServiceRequest (resource_spans 1 > scope_spans 2 > spans 2), for SINK."""

    def read_varint(b, i):  # (value, index after it)
        v, shift = 0, 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = read_varint(b, i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, i = read_varint(b, i)
                yield number, None
            elif wire == 1:
                i += 8
                yield number, None
            elif wire == 5:
                i += 4
                yield number, None
            elif wire == 2:
                n, i = read_varint(b, i)
                yield number, b[i : i + n]
                i += n
            else:
                raise ValueError("bad wire type")

    return sum(
        1
        for n1, rs in fields(body)
        if n1 == 1
        for n2, ss in fields(rs)
        if n2 == 2
        for n3, _ in fields(ss)
        if n3 == 2
    )


def parse_spans(doc):
    """Span ids, [thread, seq] of the spans that have loadgen.thread and loadgen.seq, and for those
    with events or links ("rich": otlpconc-loadgen --span-shape rich, the exporter's tests)
    [thread, seq, span id, [event name, its loadgen.seq or None] per event, [linked span id, flags]
    per link, the loadgen.key int array or None]."""
    ids, keys, rich = [], [], []
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                if not HEX32.match(s["traceId"]) or not HEX16.match(s["spanId"]):
                    raise ValueError(f"bad ids {s['traceId']} {s['spanId']}")
                ids.append(s["spanId"])
                a = {x["key"]: x["value"] for x in s.get("attributes", [])}
                if "loadgen.thread" in a and "loadgen.seq" in a:
                    key = [int(a["loadgen.thread"]["intValue"]), int(a["loadgen.seq"]["intValue"])]
                    keys.append(key)
                    if s.get("events") or s.get("links") or "loadgen.key" in a:
                        events = []
                        for e in s.get("events", []):
                            ea = {x["key"]: x["value"] for x in e.get("attributes", [])}
                            events.append([e["name"], int(ea["loadgen.seq"]["intValue"]) if "loadgen.seq" in ea else None])
                        links = [[l["spanId"], l.get("flags")] for l in s.get("links", [])]
                        array = None
                        if "loadgen.key" in a:
                            array = [int(v["intValue"]) for v in a["loadgen.key"]["arrayValue"].get("values", [])]
                        rich.append(key + [s["spanId"], events, links, array])
    return ids, keys, rich


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a Collector does
    disable_nagle_algorithm = True  # the status line, headers and body are separate writes

    def do_POST(self):
        wire_body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        protobuf = self.headers.get("Content-Type") == "application/x-protobuf"
        if SINK:
            if DELAY:
                time.sleep(DELAY)
            try:
                body = decompress(wire_body, self.headers.get("Content-Encoding"))
                spans = count_protobuf_spans(body) if protobuf else body.count(b'"spanId"')
                status = 200
            except Exception:
                spans, status = 0, 400
            with lock, open(log_file, "a") as f:
                f.write(json.dumps({"status": status, "spans": spans, "bytes": len(wire_body)}) + "\n")
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf" if protobuf else "application/json")
            reply = b"" if protobuf else b"{}"
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        entry = {"path": self.path, "time": time.time(), "headers": {k.lower(): v for k, v in self.headers.items()}}
        entry["bytes"] = len(wire_body)
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"wrong path {self.path}")
            body = decompress(wire_body, self.headers.get("Content-Encoding"))
            entry["decoded_bytes"] = len(body)
            if protobuf:
                doc, entry["canonical"] = decode_protobuf(body)
            elif self.headers.get("Content-Type") == "application/json":
                doc = json.loads(body)
            else:
                raise ValueError(f"wrong Content-Type {self.headers.get('Content-Type')}")
            entry["ids"], entry["keys"], rich = parse_spans(doc)
            if rich:
                entry["rich"] = rich
            entry["spans"] = len(entry["ids"])
        except Exception as e:  # recorded, answered 400
            entry["error"] = str(e)
        with lock:
            spec = script.pop(0) if script else "200"
        parts = spec.split("|")
        status = int(parts[0])
        headers, reply, hang, close, wait = {}, (b"" if protobuf else b"{}"), DELAY, False, None
        reply_type = "application/x-protobuf" if protobuf else "application/json"
        for p in parts[1:]:
            k, _, v = p.partition("=")
            if k == "retry-after":
                headers["Retry-After"] = v
            elif k == "partial":
                if protobuf:  # ExportTraceServiceResponse.partial_success {rejected_spans, error_message}
                    reply = pb_field(1, varint(1 << 3) + varint(int(v)) + pb_field(2, b"scripted rejection"))
                else:
                    reply = json.dumps({"partialSuccess": {"rejectedSpans": v, "errorMessage": "scripted rejection"}}).encode()
            elif k == "status":  # google.rpc.Status {code 1, message 2}
                reply, reply_type = varint(1 << 3) + varint(3) + pb_field(2, v.encode()), "application/x-protobuf"
            elif k == "body":
                reply, reply_type = v.encode(), "application/json"
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
            self.send_header("Content-Type", reply_type)
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
if not SINK:
    # The decoder starts (and loads OpenTelemetry's model: a quarter of a second, more on a loaded
    # machine) before the port is announced, so no request waits for it: a test that bounds an
    # export's time would otherwise see its first request answered late. An empty request is a
    # valid one; a decoder that cannot start is reported at the first protobuf request instead.
    try:
        decode_protobuf(b"")
    except Exception:
        pass
if tls:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["tls-cert"], tls["tls-key"])
    if "tls-client-ca" in tls:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls["tls-client-ca"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
