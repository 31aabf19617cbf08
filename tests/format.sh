#!/bin/sh
# Every C source and header the repository tracks follows .clang-format.
# Usage: format.sh SOURCE_ROOT
set -eu
cd "$1"
command -v clang-format >/dev/null || { echo "1..0 # SKIP clang-format not installed"; exit 0; }
bad=$(git ls-files '*.c' '*.h' '*.m' 2>/dev/null | while read -r f; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
if [ -n "$bad" ]; then
  echo "not ok 1 - not clang-format clean (run clang-format -i): $(echo $bad)"; echo "1..1"; exit 1
fi
echo "ok 1 - all sources clang-format clean"; echo "1..1"
