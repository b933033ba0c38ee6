#!/usr/bin/env bash
# The benchmark comparison (run it after the main job, scripts/loadgen.sh): installs what is
# missing, builds the release preset and runs every implementation side by side in one binary,
# repetitions interleaved in random order, medians reported. Writes docs/benchmarks.md (tables +
# plots) and prints the tables.
#
# Usage: scripts/bench.sh [--quick] [--filter REGEX] [--out FILE]
#   --quick         2 repetitions of 0.05 s instead of 5 of 0.2 s (a smoke run, noisy)
#   --filter REGEX  only benchmarks whose name matches (Google Benchmark's --benchmark_filter)
#   --out FILE      write the report to FILE instead of docs/benchmarks.md
# Environment: OTLPCONC_BENCH_REPETITIONS, OTLPCONC_BENCH_MIN_TIME override the defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

reps=${OTLPCONC_BENCH_REPETITIONS:-5}
min_time=${OTLPCONC_BENCH_MIN_TIME:-0.2}
filter=.
out=docs/benchmarks.md
while (($#)); do
  case "$1" in
    --quick) reps=2 min_time=0.05 ;;
    --filter) filter=${2:?--filter needs a regex}; shift ;;
    --out) out=${2:?--out needs a file}; shift ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/deps.sh bench
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release

results=build/release/bench-results
rm -rf "$results"
mkdir -p "$results"
for bin in build/release/bench/bench_*; do
  [[ -x "$bin" && -f "$bin" ]] || continue
  name=$(basename "$bin")
  echo "bench: running $name ($reps interleaved repetitions, min time ${min_time}s each)"
  "$bin" --benchmark_filter="$filter" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
    --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
    --benchmark_out="$results/$name.json" --benchmark_out_format=json >"$results/$name.log" 2>&1 ||
    { cat "$results/$name.log" >&2; echo "bench: $name failed" >&2; exit 1; }
done

# Debian's python3 has python3-matplotlib; a python3 earlier in PATH (pyenv, venv) may not.
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3
"$python" scripts/bench_report.py --out "$out" --img-dir "$(dirname "$out")/img" "$results"/*.json
