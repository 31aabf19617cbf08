#!/bin/sh
# The VZ shim (and the VZ example) type-check as Objective-C with ARC for
# macOS, against declaration stubs of Foundation, libdispatch and
# Virtualization.framework (tests/compile/vz-stubs): a misspelt selector, a
# wrong argument type or a macOS 13 call outside @available fails here, on
# Linux. Nothing is linked or run. SKIPs when clang is not installed.
# Usage: vz-shim.sh SOURCE_ROOT BUILD_INCLUDE_DIR
set -eu
src=$1 bld=$2
clang=$(command -v clang || true)
if [ -z "$clang" ]; then echo "1..0 # SKIP clang not installed"; exit 0; fi
stubs=$src/tests/compile/vz-stubs
# macOS 11 as the deployment target: the shim must guard what is newer.
flags="-target x86_64-apple-macosx11.0 -x objective-c -std=gnu11 -fobjc-arc -fblocks
  -fsyntax-only -nostdlibinc -Werror -Wall -Wextra -Wno-unused-parameter
  -Wunguarded-availability -Wnullable-to-nonnull-conversion -Wobjc-method-access
  -Wundeclared-selector -Wstrict-selector-match -Wincompatible-pointer-types
  -isystem $stubs -isystem $stubs/libc -I$src/include -I$bld -I$src/lib/drivers/vz"
n=0 status=0
check() { # check NAME CLANG_ARGS...
  name=$1; shift; n=$((n + 1))
  # shellcheck disable=SC2086
  if out=$("$clang" $flags "$@" 2>&1) && [ -z "$out" ]; then
    echo "ok $n - $name"
  else
    echo "not ok $n - $name"; printf '%s\n' "$out" | sed 's/^/#   /'; status=1
  fi
}
check "lib/drivers/vz/vz_shim.m type-checks" -DHM_HAVE_VZ_SHIM=1 "$src/lib/drivers/vz/vz_shim.m"
check "examples/vz-embed.m type-checks" "$src/examples/vz-embed.m"
# The check must be able to fail: the same snippet passes with the right
# member and fails, naming the selector, with a wrong one.
snippet() {
  printf '#import <Virtualization/Virtualization.h>\n'
  printf 'API_AVAILABLE(macos(13.0)) void f(VZVirtioFileSystemDevice *d);\n'
  printf 'void f(VZVirtioFileSystemDevice *d) { (void)[d %s]; }\n' "$1"
}
n=$((n + 1))
# shellcheck disable=SC2086
good=$(snippet share | "$clang" $flags - 2>&1) && good_rc=0 || good_rc=1
# shellcheck disable=SC2086
bad=$(snippet 'shareWithTag:@"x"' | "$clang" $flags - 2>&1) && bad_rc=0 || bad_rc=1
if [ $good_rc = 0 ] && [ -z "$good" ] && [ $bad_rc = 1 ] && printf '%s' "$bad" | grep -q shareWithTag; then
  echo "ok $n - a wrong selector is refused, the right one accepted"
else
  echo "not ok $n - control snippet: right member rc=$good_rc, wrong selector rc=$bad_rc"
  printf '%s\n%s\n' "$good" "$bad" | sed 's/^/#   /'; status=1
fi
echo "1..$n"
exit $status
