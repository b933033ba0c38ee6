#!/usr/bin/env bash
# Installs the Debian packages the project needs, and only those that are missing.
# Usage: scripts/deps.sh run|test|bench|all
#   run    what building and running otlpconc-loadgen needs (scripts/loadgen.sh)
#   test   what the test command needs (compilers, sanitizer runtimes, Catch2, clang-format, ...),
#          and OpenTelemetry's generated OTLP model from npm (@opentelemetry/otlp-transformer, the
#          version pinned by tests/e2e/node/package-lock.json) for the end-to-end receiver's decoder
#   bench  what the benchmark comparison needs, plus the optional peers (and valgrind, for
#          scripts/lru_cost.sh) when they can be installed
# As root, missing packages are installed with apt-get (after one 'apt-get update'). Otherwise the
# script stops and prints the exact command to run. Optional benchmark peers never stop it.
set -euo pipefail

mode=${1:-all}
common=(cmake g++ ninja-build pkg-config catch2 libboost-dev libbenchmark-dev libhwloc-dev libcurl4-openssl-dev zlib1g-dev libzstd-dev python3)
test_only=(clang libclang-rt-14-dev clang-format relacy-dev protobuf-compiler zstd openssl)
bench_only=(python3-matplotlib)
# The optional peers, and valgrind for scripts/lru_cost.sh (not used by the comparison itself).
optional=(libconcurrentqueue-dev libtbb-dev libxenium-dev valgrind)

case "$mode" in
  run) required=("${common[@]}"); want_optional=0 ;;
  test) required=("${common[@]}" "${test_only[@]}"); want_optional=0 ;;
  bench) required=("${common[@]}" "${bench_only[@]}"); want_optional=1 ;;
  all) required=("${common[@]}" "${test_only[@]}" "${bench_only[@]}"); want_optional=1 ;;
  *) echo "usage: $0 run|test|bench|all" >&2; exit 2 ;;
esac
want_node=0
[[ $mode == test || $mode == all ]] && want_node=1
# Node.js and npm: Debian's packages, unless the machine already has them (from another source).
if ((want_node)) && ! { command -v node && command -v npm; } >/dev/null; then required+=(nodejs npm); fi

# The end-to-end receiver's protobuf decoder (tests/e2e/otlp_decode.js) needs OpenTelemetry's
# generated model: installed once from npm, exactly as the lock file pins it, without install scripts.
node_modules() {
  ((want_node)) || return 0
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e/node"
  if [[ -f $dir/node_modules/.otlpconc-installed && $dir/node_modules/.otlpconc-installed -nt $dir/package-lock.json ]]; then
    return 0
  fi
  echo "deps: npm ci in tests/e2e/node (@opentelemetry/otlp-transformer)"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$dir/node_modules/.otlpconc-installed"
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing_of() { local p; for p in "$@"; do installed "$p" || echo "$p"; done; }

mapfile -t missing < <(missing_of "${required[@]}")
optional_missing=()
if ((want_optional)); then mapfile -t optional_missing < <(missing_of "${optional[@]}"); fi

if ((${#missing[@]} == 0 && ${#optional_missing[@]} == 0)); then
  echo "deps: all packages present"
  node_modules
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  if ((${#missing[@]} > 0)); then
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run this, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]} ${optional_missing[*]}" >&2
    exit 1
  fi
  echo "deps: note: optional packages not installed (a benchmark peer's benchmarks are skipped; without valgrind, scripts/lru_cost.sh stops): ${optional_missing[*]}"
  echo "deps: to include them: sudo apt-get install -y ${optional_missing[*]}"
  node_modules
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps: installing: ${missing[*]} ${optional_missing[*]}"
apt-get update -qq
if ((${#missing[@]} > 0)); then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for p in "${optional_missing[@]}"; do
  if ! apt-get install -y -qq --no-install-recommends "$p" >/dev/null; then
    echo "deps: note: optional package $p could not be installed (a benchmark peer's benchmarks are skipped; without valgrind, scripts/lru_cost.sh stops)"
  fi
done
mapfile -t still < <(missing_of "${required[@]}")
if ((${#still[@]} > 0)); then
  echo "deps: still missing after apt-get: ${still[*]}" >&2
  exit 1
fi
node_modules
echo "deps: ok"
