#!/usr/bin/env bash
# The main job: installs what is missing, builds otlpconc-loadgen (release preset) and runs it.
#
# With no arguments: 2 application threads record spans for 5 s at 100 000 spans/s through the batch
# span processor into build/loadgen/otlpconc-spans.jsonl (OTLP JSON Lines), then every span in the
# file is read back and checked against the run's summary (tests/e2e/check_spans.py).
# With arguments: they are otlpconc-loadgen's own (see scripts/loadgen.sh --help), for example
#   scripts/loadgen.sh --threads 4 --duration 10 --rate 0 --policy drop
#   scripts/loadgen.sh --endpoint http://localhost:4318/v1/traces     # an OpenTelemetry Collector
# The benchmark comparison against the peers is scripts/bench.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh run >/dev/null
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release --target otlpconc-loadgen >/dev/null
loadgen=build/release/tools/otlpconc-loadgen

if (($#)); then
  exec "$loadgen" "$@"
fi
mkdir -p build/loadgen
"$loadgen" --output build/loadgen/otlpconc-spans.jsonl --summary-json build/loadgen/summary.json
python3 tests/e2e/check_spans.py build/loadgen/otlpconc-spans.jsonl build/loadgen/summary.json
