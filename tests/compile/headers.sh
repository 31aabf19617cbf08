#!/bin/sh
# Each public header compiles alone, as C99 and as C++11, with no warnings.
# Usage: headers.sh SRC_INCLUDE_DIR BUILD_INCLUDE_DIR CC CXX
set -eu
src=$1 bld=$2 cc=$3 cxx=$4
status=0
for h in "$src"/hotmount/*.h "$bld"/hotmount/version.h; do
  name=hotmount/$(basename "$h")
  for mode in c99 c++; do
    if [ $mode = c99 ]; then
      out=$(printf '#include <%s>\nint main(void) { return 0; }\n' "$name" |
        "$cc" -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$src" -I"$bld" -x c - 2>&1) || true
    else
      command -v "$cxx" >/dev/null 2>&1 || { echo "ok - $name as C++ (skipped: no C++ compiler)"; continue; }
      out=$(printf '#include <%s>\nint main() { return 0; }\n' "$name" |
        "$cxx" -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$src" -I"$bld" -x c++ - 2>&1) || true
    fi
    if [ -n "$out" ]; then
      echo "not ok - $name as $mode"; echo "$out" | sed 's/^/#   /'; status=1
    else
      echo "ok - $name as $mode"
    fi
  done
done
exit $status
