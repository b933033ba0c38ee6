#!/usr/bin/env node
// Decodes OTLP protobuf request bodies with OpenTelemetry's own generated model (the protobufjs
// model of the official .proto files that npm @opentelemetry/otlp-transformer ships), so that the
// end-to-end receiver checks otlpconc's protobuf encoder against an independent decoder.
//
// Reads frames from stdin, each a 4-byte big-endian length then that many bytes of an
// ExportTraceServiceRequest, and writes one JSON line per frame to stdout:
//   {"doc": {...}, "canonical": true|false}   the request in OTLP JSON's shape (hex ids, 64-bit
//                                             integers as decimal strings, enums as numbers, bytes
//                                             as base64); canonical: re-encoding the decoded
//                                             message gives the same bytes
// The model's .proto files predate Span.flags (field 16) and Span.Link.flags (field 6 of a link),
// both fixed32 (opentelemetry-proto 1.1): the model would drop them as unknown fields. So they are
// taken out of the bytes here (and nothing else: any other unknown field makes the request
// non-canonical), added to the decoded span and links as "flags", and the rest must re-encode to
// exactly the bytes without them.
//   {"error": "..."}                          the bytes are not an ExportTraceServiceRequest
// Usage: node otlp_decode.js   (run from anywhere: the model is found beside this file, in
//        tests/e2e/node/node_modules, installed by scripts/deps.sh test)
'use strict';
const path = require('path');

let root;
try {
  root = require(path.join(__dirname, 'node', 'node_modules', '@opentelemetry', 'otlp-transformer', 'build', 'src',
                           'generated', 'root'));
} catch (e) {
  process.stderr.write(`otlp_decode.js: OpenTelemetry's model is not installed (scripts/deps.sh test): ${e.message}\n`);
  process.exit(3);
}
const Request = root.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

const hexFields = new Set(['traceId', 'spanId', 'parentSpanId']);
function toOtlpJson(value, key) {
  if (Array.isArray(value))
    return value.map((v) => toOtlpJson(v, undefined));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value))
      out[k] = toOtlpJson(v, k);
    return out;
  }
  if (hexFields.has(key) && typeof value === 'string')
    return Buffer.from(value, 'base64').toString('hex');
  return value;
}

// Protobuf fields of a message: [number, wireType, start, end (of the whole field), payload?].
function fields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let v = 0n, shift = 0n;
    for (;;) {
      if (i >= buf.length)
        throw new Error('truncated varint');
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (b < 0x80)
        return v;
    }
  };
  while (i < buf.length) {
    const start = i;
    const key = varint();
    const number = Number(key >> 3n), wire = Number(key & 7n);
    let payload;
    if (wire === 0)
      payload = varint();
    else if (wire === 1)
      payload = buf.subarray(i, (i += 8));
    else if (wire === 5)
      payload = buf.subarray(i, (i += 4));
    else if (wire === 2) {
      const n = Number(varint());
      payload = buf.subarray(i, (i += n));
    } else
      throw new Error(`wire type ${wire}`);
    if (i > buf.length)
      throw new Error('truncated field');
    out.push([number, wire, start, i, payload]);
  }
  return out;
}
function lengthDelimited(number, payload) {
  const bytes = [];
  for (let v = BigInt(number << 3 | 2);; v >>= 7n) {
    if (v < 0x80n) { bytes.push(Number(v)); break; }
    bytes.push(Number(v & 0x7fn) | 0x80);
  }
  for (let v = payload.length;; v = Math.floor(v / 128)) {
    if (v < 0x80) { bytes.push(v); break; }
    bytes.push((v & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from(bytes), payload]);
}
// Rebuilds buf along `path` (field numbers of nested messages), where `leaf` maps a message at the
// path's end to its new bytes.
function rebuild(buf, path, leaf) {
  if (path.length === 0)
    return leaf(buf);
  return Buffer.concat(fields(buf).map(([number, wire, start, end, payload]) =>
    number === path[0] && wire === 2 ? lengthDelimited(number, rebuild(payload, path.slice(1), leaf))
                                     : buf.subarray(start, end)));
}
// Takes the fixed32 field `number` out of a message: [the message without it, its value or null].
function takeFixed32(message, number) {
  let value = null;
  const kept = fields(message).filter(([n, wire, , , payload]) => {
    if (n !== number || wire !== 5)
      return true;
    value = payload.readUInt32LE(0);
    return false;
  });
  return [Buffer.concat(kept.map(([, , start, end]) => message.subarray(start, end))), value];
}
function stripSpanFlags(frame) {
  const flags = [], linkFlags = [];
  const stripped = rebuild(frame, [1, 2, 2], (span) => {
    const [rest, f] = takeFixed32(span, 16);
    flags.push(f);
    const mine = [];
    linkFlags.push(mine);
    return Buffer.concat(fields(rest).map(([number, wire, start, end, payload]) => {
      if (number !== 13 || wire !== 2)
        return rest.subarray(start, end);
      const [link, lf] = takeFixed32(payload, 6);
      mine.push(lf);
      return lengthDelimited(13, link);
    }));
  });
  return {stripped, flags, linkFlags};
}

function decode(frame) {
  try {
    const {stripped, flags, linkFlags} = stripSpanFlags(frame);
    frame = stripped;
    const message = Request.decode(frame);
    const err = Request.verify(message);
    if (err)
      return {error: `not a valid ExportTraceServiceRequest: ${err}`};
    const again = Buffer.from(Request.encode(message).finish());
    const doc = toOtlpJson(Request.toObject(message, {longs: String, enums: Number, bytes: String, defaults: false}));
    let k = 0;
    for (const rs of doc.resourceSpans || [])
      for (const ss of rs.scopeSpans || [])
        for (const span of ss.spans || [])
        {
          if (flags[k] !== null)
            span.flags = flags[k];
          (span.links || []).forEach((link, j) => {
            if (linkFlags[k][j] !== null)
              link.flags = linkFlags[k][j];
          });
          ++k;
        }
    return {doc, canonical: again.equals(frame) && k === flags.length};
  } catch (e) {
    return {error: `not an ExportTraceServiceRequest: ${e.message}`};
  }
}

let pending = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 4) {
    const n = pending.readUInt32BE(0);
    if (pending.length < 4 + n)
      break;
    const frame = pending.subarray(4, 4 + n);
    pending = pending.subarray(4 + n);
    process.stdout.write(JSON.stringify(decode(Buffer.from(frame))) + '\n');
  }
});
process.stdin.on('end', () => process.exit(pending.length === 0 ? 0 : 1));
