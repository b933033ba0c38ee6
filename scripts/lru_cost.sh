#!/usr/bin/env bash
# What one operation of the sharded LRU costs at 1 thread, counted by Valgrind's cachegrind instead
# of timed (bench/probe_lru_cost.cpp says what is counted and what is not): instructions, data
# reads and writes, L1 data misses and misses of a simulated 1 MiB last-level cache (this machine's
# L2 size), per operation, for the single-mutex LRU and sharded_lru. The counts are the same from
# run to run.
#
# Usage: scripts/lru_cost.sh [--where] [OPS]    (OPS: measured operations per run, default 1048576)
#   --where  also prints where sharded_lru's instructions go on each workload: per operation, by
#            source file and function (cg_annotate of the difference of the two runs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

where=0
if [[ ${1:-} == --where ]]; then
  where=1
  shift
fi
ops=${1:-1048576}
if ! [[ "$ops" =~ ^[0-9]+$ ]] || ((ops < 1)); then
  echo "lru_cost: OPS must be a positive number, got '$ops'" >&2
  exit 2
fi
if ! command -v valgrind >/dev/null; then
  echo "lru_cost: valgrind is not installed (scripts/deps.sh bench installs it)" >&2
  exit 1
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release --target probe_lru_cost >/dev/null
probe=build/release/bench/probe_lru_cost

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Prints "Ir Dr Dw D1r D1w LLr LLw" for one run; keeps cachegrind's file as $tmp/<impl>-<workload>-<ops>.
counts() {
  valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 --cachegrind-out-file="$tmp/$1-$2-$3" \
    "$probe" "$@" 2>&1 >/dev/null | python3 -c '
import re, sys
text = sys.stdin.read()
def field(name):
    m = re.search(name + r":\s+([\d,]+)(?:\s+\(\s*([\d,]+) rd\s+\+\s+([\d,]+) wr\))?", text)
    if not m:
        sys.exit("lru_cost: no \"" + name + "\" line in cachegrind output:\n" + text)
    return [int(g.replace(",", "")) for g in m.groups() if g is not None]
ir = field(r"I\s+refs")[0]
_, dr, dw = field(r"D\s+refs")
_, d1r, d1w = field(r"D1\s+misses")
_, llr, llw = field(r"LLd\s+misses")
print(ir, dr, dw, d1r, d1w, llr, llw)'
}

echo "Per operation, $ops operations after the warm-up (cachegrind, simulated LL 1 MiB 16-way):"
echo
echo "| workload | implementation | instructions | data reads | data writes | L1d misses | LL misses |"
echo "|---|---|---:|---:|---:|---:|---:|"
for workload in read100 read_through; do
  for impl in mutex sharded; do
    read -r -a base <<<"$(counts "$impl" "$workload" 0)"
    read -r -a full <<<"$(counts "$impl" "$workload" "$ops")"
    python3 - "$workload" "$impl" "$ops" "${base[@]}" "${full[@]}" <<'EOF'
import sys
workload, impl, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = [int(x) for x in sys.argv[4:11]]
full = [int(x) for x in sys.argv[11:18]]
d = [(f - b) / ops for b, f in zip(base, full)]
print(f"| {workload} | {impl} | {d[0]:.1f} | {d[1]:.1f} | {d[2]:.1f} | {d[3] + d[4]:.2f} | {d[5] + d[6]:.2f} |")
EOF
  done
done

((where)) || exit 0
cat >"$tmp/where.py" <<'EOF'
import re, sys
ops = int(sys.argv[1])
for line in sys.stdin:
    m = re.match(r"\s*([-\d,]+) \([^)]*\)\s+(/\S+?):(.*)", line)
    if not m:
        continue
    count = int(m.group(1).replace(",", ""))
    if abs(count) >= ops:  # at least one instruction per operation
        function = re.sub(r"otlpconc::sharded_lru_cache<.*?> >::", "", m.group(3))
        print(f"{count / ops:7.1f}  {m.group(2).split('/')[-1]}: {function[:100]}")
EOF
for workload in read100 read_through; do
  echo
  echo "Where sharded_lru's instructions go, $workload, per operation (source file: function):"
  cg_diff "$tmp/sharded-$workload-0" "$tmp/sharded-$workload-$ops" >"$tmp/diff" 2>/dev/null
  cg_annotate --show=Ir --auto=no "$tmp/diff" | python3 "$tmp/where.py" "$ops"
done
