#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting, then configures, builds and runs
# every test with the presets of CMakePresets.json:
#   debug  (g++)       unit, packaging (find_package + pkg-config, add_subdirectory), stress, examples
#   clang  (clang++)   every target warning-free with clang, unit and stress tests
#   asan   (g++)       unit and stress tests under AddressSanitizer + UBSan + LeakSanitizer
#   tsan   (clang++)   unit and stress tests under ThreadSanitizer
# OTLPCONC_STRESS_SCALE=N runs the stress tests N times longer (default 1, the CI size).
# Usage: scripts/test.sh [preset ...]    (default: all four)
#        scripts/test.sh mutants [FILE...] (the mutation campaign, scripts/mutants.sh; not part of the
#                                           default run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == "mutants" ]]; then
  shift
  exec scripts/mutants.sh "$@"
fi

scripts/deps.sh test
scripts/check_format.sh

presets=("$@")
((${#presets[@]})) || presets=(debug clang asan tsan)
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

passed=0 failed=0 status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for preset in "${presets[@]}"; do
  echo "=== preset $preset"
  start=$SECONDS
  if ! cmake --workflow --preset "$preset" --fresh 2>&1 | tee "$log"; then status=1; fi
  # ctest's own summary line: "N% tests passed, F tests failed out of T"
  if summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1); then
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
    bad=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$summary")
    passed=$((passed + total - bad)) failed=$((failed + bad))
  else
    echo "=== preset $preset did not reach its tests" >&2
    status=1
  fi
  echo "=== preset $preset done in $((SECONDS - start)) s"
done
((failed == 0)) || status=1
echo "test: $passed passed, $failed failed"
exit $status
