#!/usr/bin/env bash
# The mutation campaign: proves that the tests can fail. Each mutant (a weakened memory order, a
# dropped fence, a skipped validation, ...) is applied alone to a scratch copy of the repository
# (build/mutants/src, one incremental ASan build in build/mutants/build, and one without a sanitizer
# in build/mutants/model for the model checks and the allocation-failure tests); the model, unit,
# allocation-failure and stress tests of the mutated component are built and run with a time limit.
# A mutant is `killed` when a test fails, crashes or times out, `survived` otherwise; `invalid` when
# its text to find does not occur exactly once. Prints one line per mutant and `N passed, N failed`
# (killed counts as passed); exits 0 only when every mutant was killed.
#
# Usage: scripts/mutants.sh [FILE...]     (default: the project's list, tests/mutants/*.txt)
#   A mutant file holds one mutant per line: path<TAB>text to find<TAB>replacement<TAB>description
#   (\t, \n and \\ escapes in the two text fields; lines starting with # are comments).
# Environment: OTLPCONC_MUTANT_TIMEOUT (seconds per test command, default 300),
#   OTLPCONC_STRESS_SCALE (default 1). Also run by `scripts/test.sh mutants`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
scripts/deps.sh test
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
exec python3 scripts/mutants.py "$@"
