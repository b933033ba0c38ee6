#!/usr/bin/env bash
# What one operation of the sharded LRU costs at 1 thread, counted by Valgrind's cachegrind instead
# of timed (bench/probe_lru_cost.cpp says what is counted and what is not): instructions, data
# reads and writes, L1 data misses and data misses of a simulated 1 MiB 8-way last-level cache
# (this machine's L2), per operation, for the single-mutex LRU and sharded_lru, and for the
# driver alone (a cache that holds nothing: its loop and key stream are in both other rows). The
# counts are the same from run to run. A count is necessary, not sufficient: time what it shows.
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
if (($# > 1)); then
  echo "lru_cost: too many arguments (usage: scripts/lru_cost.sh [--where] [OPS])" >&2
  exit 2
fi
ops=${1:-1048576}
if ! [[ "$ops" =~ ^[1-9][0-9]{0,9}$ ]] || ((ops > 4294967296)); then
  echo "lru_cost: OPS must be a number from 1 to 4294967296, got '$ops'" >&2
  exit 2
fi
for tool in valgrind cg_diff cg_annotate; do
  if ! command -v "$tool" >/dev/null; then
    echo "lru_cost: $tool is not installed (Debian package valgrind; scripts/deps.sh bench installs it)" >&2
    exit 1
  fi
done
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release --target probe_lru_cost >/dev/null
probe=build/release/bench/probe_lru_cost
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/summary.py" <<'EOF'
# Reads cachegrind's summary (stderr) and prints "Ir Dr Dw D1r D1w LLr LLw".
import re, sys
text = sys.stdin.read()
def field(name):
    m = re.search(name + r":\s+([\d,]+)\s+\(\s*([\d,]+) rd\s+\+\s+([\d,]+) wr\)", text)
    if not m:
        sys.exit("lru_cost: no '" + name + "' line in cachegrind's output:\n" + text)
    return [int(g.replace(",", "")) for g in m.groups()]
m = re.search(r"I\s+refs:\s+([\d,]+)", text)
if not m:
    sys.exit("lru_cost: no 'I refs' line in cachegrind's output:\n" + text)
_, dr, dw = field(r"D\s+refs")
_, d1r, d1w = field(r"D1\s+misses")
_, llr, llw = field(r"LLd\s+misses")
print(int(m.group(1).replace(",", "")), dr, dw, d1r, d1w, llr, llw)
EOF

# One run of the probe under cachegrind: its counts on stdout; cachegrind's file is kept as
# $tmp/<impl>-<workload>-<ops>. Fails (with the probe's output) if the probe fails.
counts() {
  if ! valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,8,64 --cachegrind-out-file="$tmp/$1-$2-$3" \
    "$probe" "$@" >"$tmp/out" 2>"$tmp/err"; then
    echo "lru_cost: probe_lru_cost $* failed:" >&2
    cat "$tmp/out" "$tmp/err" >&2
    return 1
  fi
  python3 "$tmp/summary.py" <"$tmp/err"
}

echo "Per operation, $ops operations after the warm-up (cachegrind; simulated LL: 1 MiB, 8-way):"
echo
echo "| workload | implementation | instructions | data reads | data writes | L1d misses | LL data misses |"
echo "|---|---|---:|---:|---:|---:|---:|"
for workload in read100 read_through put_new; do
  for impl in none mutex sharded; do
    base=$(counts "$impl" "$workload" 0)
    full=$(counts "$impl" "$workload" "$ops")
    python3 - "$workload" "$impl" "$ops" $base $full <<'EOF'
import sys
workload, impl, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = [int(x) for x in sys.argv[4:11]]
full = [int(x) for x in sys.argv[11:18]]
d = [(f - b) / ops for b, f in zip(base, full)]
name = {"none": "driver alone", "mutex": "single mutex", "sharded": "sharded_lru"}[impl]
print(f"| {workload} | {name} | {d[0]:.1f} | {d[1]:.1f} | {d[2]:.1f} | {d[3] + d[4]:.2f} | {d[5] + d[6]:.2f} |")
EOF
  done
done

((where)) || exit 0
cat >"$tmp/where.py" <<'EOF'
# cg_annotate's "file:function" rows, per operation, those of at least one instruction.
import re, sys
ops = int(sys.argv[1])
rows = 0
for line in sys.stdin:
    m = re.match(r"\s*([-\d,]+) \([^)]*\)\s+(\S+?):(.*)", line)
    if not m or m.group(2) in ("file", "Ir"):
        continue
    count = int(m.group(1).replace(",", ""))
    rows += 1
    if abs(count) >= ops:
        function = re.sub(r"otlpconc::sharded_lru_cache<.*?> >::", "", m.group(3))
        print(f"{count / ops:7.1f}  {m.group(2).split('/')[-1]}: {function[:100]}")
if rows == 0:
    sys.exit("lru_cost: no file:function rows in cg_annotate's output (a Valgrind whose format differs?)")
EOF
for workload in read100 read_through put_new; do
  echo
  echo "Where sharded_lru's instructions go, $workload, per operation (source file: function; ??? = no line information):"
  cg_diff "$tmp/sharded-$workload-0" "$tmp/sharded-$workload-$ops" >"$tmp/diff"
  cg_annotate --show=Ir --auto=no "$tmp/diff" >"$tmp/annotated"
  python3 "$tmp/where.py" "$ops" <"$tmp/annotated"
done
