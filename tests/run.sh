#!/bin/bash
# The whole test suite on a fresh Debian 12 machine: installs what it needs,
# builds, and runs the unit suites and the e2e suites (which boot a real QEMU
# guest under TCG unless KVM is proven; see `hotmount accel`). Then a second
# pass in a clang ASan+UBSan build (BUILD_DIR-sanitize): the unit suites, a
# short run of each libFuzzer target, e2e-daemon and e2e-crash; and a third in
# a clang TSan build (BUILD_DIR-tsan): the threaded unit suites. See
# docs/testing.md. HM_SKIP_SANITIZE=1 skips both. Between them, the rootless
# pass (tests/rootless.sh): the e2e suites tagged `rootless` again as an
# unprivileged user it creates (hmci), who starts QEMU and hotmountd;
# HM_SKIP_ROOTLESS=1 skips it.
# Run as root: it installs packages and creates that user. The product itself
# needs no root (the rootless pass is the proof); the root pass checks that
# root mode keeps working.
#
#   bash tests/run.sh [BUILD_DIR]          (default: build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}

PKGS="meson ninja-build pkg-config make gcc g++ clang-format libjson-c-dev libglib2.0-dev
libssh-dev libcurl4-openssl-dev libmicrohttpd-dev check qemu-system-x86 qemu-utils
busybox-static kmod cpio python3 procps clang diod openssh-sftp-server
openssh-client dropbear-bin sshfs fuse3 mmdebstrap e2fsprogs libclang-rt-14-dev
uidmap acl passwd util-linux inotify-tools"

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (apt-get, and it creates the rootless pass's user)" >&2
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
# absolute: the other passes hand paths under it to tests (-Dguest_agent)
BUILD=$(cd "$BUILD" && pwd)
rc=0
# .ci/run counts every testlog*.json of these: none may be left from an
# earlier run.
rm -f "$BUILD"/meson-logs/testlog*.json "$BUILD"-sanitize/meson-logs/testlog*.json \
  "$BUILD"-tsan/meson-logs/testlog*.json
# The rootless pass's user first: the unit suites userns and jail then run
# their rootless cases as it (they skip without it).
if [ -z "${HM_SKIP_ROOTLESS:-}" ]; then
  bash "$ROOT/tests/rootless.sh" --setup "$BUILD" >/dev/null || rc=$?
fi
meson test -C "$BUILD" --print-errorlogs --num-processes 2 || rc=$?

# Rootless pass: e2e-virtiofs, e2e-9p, e2e-sshfs, e2e-daemon, e2e-crash and
# e2e-embed as the user hmci (log testlog-rootless-runuser.json, counted by
# .ci/run like the others)
if [ -z "${HM_SKIP_ROOTLESS:-}" ]; then
  bash "$ROOT/tests/rootless.sh" "$BUILD" || rc=$?
fi

if [ -z "${HM_SKIP_SANITIZE:-}" ]; then
  # Second pass, clang ASan+UBSan: the unit suites (every parser, the
  # instance engine, the loop and HTTP threads, the CLI against fakes), a
  # short run of each fuzz target, and two e2e suites that drive hotmount and
  # hotmountd hard: e2e-daemon (its load test: 8 clients, 200 operations) and
  # e2e-crash (the daemon killed at every step, restarts, reconcile). The
  # other e2e suites spend their time in TCG guests, not in our code. The
  # guests keep the first pass's static agent (-Dguest_agent): a sanitized
  # agent cannot link -static, and the busybox guest has no shared libraries.
  # Every sanitizer report of the host programs the e2e suites start goes to
  # $SAN/sanitizer-logs, and each suite fails on any (hmtest.py).
  SAN=$BUILD-sanitize
  san_opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dstatic_agent=false
            -Dfuzzing=true -De2e=true "-Dguest_agent=$BUILD/cli/agent/hotmount-agent")
  if [ -f "$SAN/build.ninja" ]; then
    meson setup --reconfigure "$SAN" "$ROOT" "${san_opts[@]}"
  else
    CC=clang meson setup "$SAN" "$ROOT" "${san_opts[@]}"
  fi
  ninja -C "$SAN"
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  meson test -C "$SAN" --no-rebuild --suite unit --suite fuzz --print-errorlogs \
    --num-processes 2 || rc=$?
  rm -rf "$SAN/sanitizer-logs"
  HM_SANITIZER_LOG_DIR=$SAN/sanitizer-logs meson test -C "$SAN" --no-rebuild \
    --logbase testlog-e2e --print-errorlogs e2e-daemon e2e-crash || rc=$?
  unset UBSAN_OPTIONS

  # Third pass, clang TSan (it cannot be combined with ASan): the suites
  # whose threads share the instance: loop (async add/remove, dispatch), core
  # (the instance engine) and http (server threads against the instance).
  TSAN=$BUILD-tsan
  tsan_opts=(-Db_sanitize=thread -Db_lundef=false -Dstatic_agent=false -Dfuzzing=false
             -De2e=false)
  if [ -f "$TSAN/build.ninja" ]; then
    meson setup --reconfigure "$TSAN" "$ROOT" "${tsan_opts[@]}"
  else
    CC=clang meson setup "$TSAN" "$ROOT" "${tsan_opts[@]}"
  fi
  ninja -C "$TSAN" tests/unit/loop/test-loop tests/unit/core/test-core \
    tests/unit/http/test-http cli/agent/hotmount-agent
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C "$TSAN" --no-rebuild --print-errorlogs --num-processes 2 loop core http || rc=$?
fi
exit "$rc"
