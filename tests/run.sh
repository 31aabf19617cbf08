#!/bin/bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs,
# builds, and runs the unit suites and the e2e suites (which boot a real QEMU
# guest under TCG unless KVM is proven; see `hotmount accel`). Then a second
# pass: the unit suites again in a clang ASan+UBSan build, and a short run of
# each libFuzzer target (BUILD_DIR-sanitize; HM_SKIP_SANITIZE=1 skips it).
# Run as root: QEMU's C virtiofsd needs it.
#
#   bash tests/run.sh [BUILD_DIR]          (default: build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}

PKGS="meson ninja-build pkg-config make gcc g++ clang-format libjson-c-dev libglib2.0-dev
libssh-dev libcurl4-openssl-dev libmicrohttpd-dev check qemu-system-x86 qemu-utils
busybox-static kmod cpio python3 procps clang diod openssh-sftp-server
openssh-client dropbear-bin sshfs fuse3 mmdebstrap e2fsprogs libclang-rt-14-dev"

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (apt-get, and QEMU's C virtiofsd for the e2e suites)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $PKGS

if [ -f "$BUILD/build.ninja" ]; then
  meson setup --reconfigure "$BUILD" "$ROOT"
else
  meson setup "$BUILD" "$ROOT"
fi
ninja -C "$BUILD"
rc=0
meson test -C "$BUILD" --print-errorlogs --num-processes 2 || rc=$?

if [ -z "${HM_SKIP_SANITIZE:-}" ]; then
  # Which suites get the second pass: the unit suites (every parser, the
  # instance engine, the loop and HTTP threads, the CLI against fakes) and the
  # fuzz smoke runs. The e2e suites stay single-pass: they spend their time
  # in TCG guests, not in our code.
  SAN=$BUILD-sanitize
  san_opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dstatic_agent=false
            -Dfuzzing=true -De2e=false)
  if [ -f "$SAN/build.ninja" ]; then
    meson setup --reconfigure "$SAN" "$ROOT" "${san_opts[@]}"
  else
    CC=clang meson setup "$SAN" "$ROOT" "${san_opts[@]}"
  fi
  ninja -C "$SAN"
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C "$SAN" --suite unit --suite fuzz --print-errorlogs --num-processes 2 || rc=$?
fi
exit "$rc"
