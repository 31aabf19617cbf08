#!/bin/bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs,
# builds, and runs the unit suites and the e2e suites (which boot a real QEMU
# guest under TCG; no KVM needed). Run as root: QEMU's C virtiofsd needs it.
#
#   bash tests/run.sh [BUILD_DIR]          (default: build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}

PKGS="meson ninja-build pkg-config gcc g++ clang-format libjson-c-dev libglib2.0-dev
libssh-dev libcurl4-openssl-dev libmicrohttpd-dev check qemu-system-x86 qemu-utils
busybox-static kmod cpio python3 procps clang diod openssh-sftp-server
openssh-client dropbear-bin sshfs fuse3 mmdebstrap e2fsprogs"

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
meson test -C "$BUILD" --print-errorlogs --num-processes 2
