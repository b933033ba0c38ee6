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

# Quiet when all goes well; on a failure the step's whole output is shown (a compile error used to
# print nothing and exit 1).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() {
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "loadgen.sh: '$*' failed (its output is above)" >&2
    exit 1
  fi
}
step scripts/deps.sh run
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
step cmake --preset release
step cmake --build --preset release --target otlpconc-loadgen
loadgen=build/release/tools/otlpconc-loadgen

if (($#)); then
  trap - EXIT
  rm -f "$log"
  exec "$loadgen" "$@"
fi
mkdir -p build/loadgen
"$loadgen" --output build/loadgen/otlpconc-spans.jsonl --summary-json build/loadgen/summary.json
python3 tests/e2e/check_spans.py build/loadgen/otlpconc-spans.jsonl build/loadgen/summary.json
