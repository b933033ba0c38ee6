#!/usr/bin/env bash
# Fails (exit 1) when a C++ file of the project is not formatted as .clang-format says.
# Usage: scripts/check_format.sh [--fix]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clang_format=$(command -v clang-format-14 || command -v clang-format || true)
if [[ -z "$clang_format" ]]; then
  echo "check_format: clang-format not found (install the Debian package clang-format)" >&2
  exit 1
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.hpp' '*.cpp' '*.h' | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
else
  mapfile -t files < <(find include tests stress bench examples -name '*.hpp' -o -name '*.cpp' -o -name '*.h')
fi

if [[ "${1:-}" == "--fix" ]]; then
  "$clang_format" -i "${files[@]}"
  echo "check_format: formatted ${#files[@]} files"
  exit 0
fi

if ! "$clang_format" --dry-run --Werror "${files[@]}"; then
  echo "check_format: the files above are not formatted; run scripts/check_format.sh --fix" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
