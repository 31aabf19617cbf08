#!/bin/sh
# The out-of-tree backend example (examples/backend-oot) builds against an
# installed libhotmount, headers and `pkg-config hotmount` only, and passes
# its own checks (TAP on stdout) through a real instance.
# Usage: backend-oot.sh MESON BUILD_ROOT SOURCE_ROOT
set -eu
meson=$1 build=$2 src=$3
command -v make >/dev/null 2>&1 || { echo "make not installed: skipped"; exit 77; }
tmp=$(mktemp -d /tmp/hm-oot.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$meson" install -C "$build" --no-rebuild --quiet --destdir "$tmp/dest" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; echo "meson install --destdir failed"; exit 1; }
pc=$(find "$tmp/dest" -name hotmount.pc | head -n 1)
[ -n "$pc" ] || { echo "no hotmount.pc installed"; exit 1; }
libdir=$(dirname "$(find "$tmp/dest" -name 'libhotmount.so' | head -n 1)")
# A copy, so nothing of the source tree (lib/, include/) is within reach.
cp -r "$src/examples/backend-oot" "$tmp/oot"
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
case "$(pkg-config --cflags hotmount)" in
  *"$tmp/dest"*) ;;
  *) echo "pkg-config does not point into the staged install: $(pkg-config --cflags hotmount)"; exit 1;;
esac
# CC and HM_OOT_SANITIZE: the compiler and sanitizers the library was built
# with (a sanitized library needs a sanitized program).
san=${HM_OOT_SANITIZE:-}
CFLAGS="-O2 -g $san" LDFLAGS="$san" make -s -C "$tmp/oot" >"$tmp/make.log" 2>&1 ||
  { cat "$tmp/make.log"; echo "make failed"; exit 1; }
echo "built against $(pkg-config --cflags --libs hotmount)"
mkdir -m 0700 "$tmp/instance"
mkdir "$tmp/root" "$tmp/share"
LD_LIBRARY_PATH="$libdir" "$tmp/oot/oot-demo" "$tmp/root" "$tmp/instance" "$tmp/share"
