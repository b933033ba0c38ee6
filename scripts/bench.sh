#!/usr/bin/env bash
# The benchmark comparison (run it after the main job, scripts/loadgen.sh): installs what is
# missing, builds the release preset and runs every implementation side by side in one binary.
# Each binary runs as several separate processes, round-robin with the other binaries (a regime
# that lasts a whole process, such as glibc's mutex falling into its worst hand-off pattern, then
# shows up as spread instead of passing for the figure); inside a process the repetitions are
# interleaved in random order. The report gives the median over every repetition of every process
# with its min-max, marks a figure whose spread exceeds 25% as noisy, and computes ratios repetition
# by repetition. Writes docs/benchmarks.md (tables + plots) and prints the tables.
#
# Usage: scripts/bench.sh [--quick] [--filter REGEX] [--out FILE]
#   --quick         3 processes x 1 repetition of 0.05 s instead of 3 x 3 of 0.2 s (a smoke run, noisy)
#   --filter REGEX  only benchmarks whose name matches (Google Benchmark's --benchmark_filter)
#   --out FILE      write the report to FILE instead of docs/benchmarks.md
# Environment: OTLPCONC_BENCH_PROCESSES (at least 3), OTLPCONC_BENCH_REPETITIONS (per process) and
# OTLPCONC_BENCH_MIN_TIME override the defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

procs=${OTLPCONC_BENCH_PROCESSES:-3}
reps=${OTLPCONC_BENCH_REPETITIONS:-3}
min_time=${OTLPCONC_BENCH_MIN_TIME:-0.2}
filter=.
out=docs/benchmarks.md
while (($#)); do
  case "$1" in
    --quick) reps=1 min_time=0.05 ;;
    --filter) filter=${2:?--filter needs a regex}; shift ;;
    --out) out=${2:?--out needs a file}; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ "$procs" =~ ^[0-9]+$ ]] || ((procs < 3)); then
  echo "bench: OTLPCONC_BENCH_PROCESSES must be a number >= 3, got '$procs'" >&2
  exit 2
fi
if ! [[ "$reps" =~ ^[0-9]+$ ]] || ((reps < 1)); then
  echo "bench: OTLPCONC_BENCH_REPETITIONS must be a number >= 1, got '$reps'" >&2
  exit 2
fi

scripts/deps.sh bench
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release

results=build/release/bench-results
rm -rf "$results"
mkdir -p "$results"
bins=()
for bin in build/release/bench/bench_*; do
  [[ -x "$bin" && -f "$bin" ]] && bins+=("$bin")
done
for ((p = 1; p <= procs; p++)); do
  # A new order every round, so no binary always runs right after the same neighbour.
  mapfile -t order < <(printf '%s\n' "${bins[@]}" | shuf)
  for bin in "${order[@]}"; do
    name=$(basename "$bin")
    echo "bench: process $p/$procs: $name ($reps interleaved repetitions, min time ${min_time}s each)"
    "$bin" --benchmark_filter="$filter" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
      --benchmark_enable_random_interleaving=true --benchmark_display_aggregates_only=true \
      --benchmark_out="$results/$name.p$p.json" --benchmark_out_format=json >"$results/$name.p$p.log" 2>&1 ||
      { cat "$results/$name.p$p.log" >&2; echo "bench: $name failed" >&2; exit 1; }
  done
done

# Debian's python3 has python3-matplotlib; a python3 earlier in PATH (pyenv, venv) may not.
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3
"$python" scripts/bench_report.py --out "$out" --img-dir "$(dirname "$out")/img" "$results"/*.json
