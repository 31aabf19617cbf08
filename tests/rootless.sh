#!/bin/bash
# The rootless pass: the e2e suites tagged `rootless` (tests/e2e/meson.build)
# run as an unprivileged user, so QEMU, hotmountd, virtiofsd, diod and
# sftp-server are that user's processes. Called by tests/run.sh after the
# root pass; runs as root only to set the user up.
#
#   bash tests/rootless.sh [BUILD_DIR [TEST...]]   (default: build, every
#                                              suite tagged rootless)
#   bash tests/rootless.sh --setup BUILD_DIR   only set the user up; prints
#                                              "USER IMAGE_DIR" (bench/)
#
# - creates the user (HM_CI_USER, default hmci) with `useradd -m`, which on
#   Debian 12 also gives it /etc/subuid and /etc/subgid ranges (virtiofsd's
#   user namespace needs them, with newuidmap from the uidmap package); a
#   user made without ranges gets a free 65536-id range;
# - lets that user traverse the directories above the tree (an ACL entry
#   u:USER:x, only where it could not) and checks it can read the build;
# - copies the guest image cache into the user's home (one copy per build
#   dir): the SSH test keys in it are 0600 and the client refuses a key
#   readable by others;
# - meson test --wrapper 'runuser -u USER -- ...' --suite rootless, log
#   BUILD/meson-logs/testlog-rootless-runuser.json (.ci/run counts it). Meson itself
#   stays root and writes its logs as root; only the test programs switch.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SETUP_ONLY=
if [ "${1:-}" = --setup ]; then SETUP_ONLY=1; shift; fi
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
shift $(( $# > 0 ? 1 : 0 ))
if [ $# -gt 0 ]; then WHAT=("$@"); else WHAT=(--suite rootless); fi
U=${HM_CI_USER:-hmci}

die() { echo "tests/rootless.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root: it creates the user $U (the tests run as $U)"
[ -f "$BUILD/build.ninja" ] || die "$BUILD is not a meson build dir"
for t in useradd runuser newuidmap newgidmap setfacl; do
  command -v "$t" >/dev/null || die "$t missing (packages passwd, util-linux, uidmap, acl)"
done

if ! id -u "$U" >/dev/null 2>&1; then
  useradd -m -s /bin/bash -c "libhotmount rootless CI" "$U" >&2
fi
HOMEDIR=$(getent passwd "$U" | cut -d: -f6)
[ -d "$HOMEDIR" ] || die "$U has no home directory ($HOMEDIR)"

# subordinate ids (useradd adds them when /etc/login.defs allows; an older
# user may have none): the next free 65536 ids past every existing range
for f in /etc/subuid /etc/subgid; do
  grep -q "^$U:" "$f" 2>/dev/null && continue
  start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' \
    "$f" 2>/dev/null || echo 100000)
  if [ "$f" = /etc/subuid ]; then
    usermod --add-subuids "$start-$((start + 65535))" "$U"
  else
    usermod --add-subgids "$start-$((start + 65535))" "$U"
  fi
done

as_user() { runuser -u "$U" -- "$@"; }

# every directory above the tree and the build: traversable by the user
for top in "$ROOT" "$BUILD"; do
  d=$top
  while [ "$d" != / ]; do
    as_user test -x "$d" || setfacl -m "u:$U:x" "$d"
    d=$(dirname "$d")
  done
done
for f in "$ROOT/tests/e2e/vm.py" "$ROOT/tests/e2e/hmtest.py" \
  "$ROOT/tests/e2e/guest/build-image.sh" "$BUILD/cli/hotmount" "$BUILD/cli/hotmountd" \
  "$BUILD/cli/agent/hotmount-agent"; do
  as_user test -r "$f" || die "$U cannot read $f (umask?): make the tree world-readable"
done

# the guest image: built (or found cached) as root, then the user's own copy
IMAGES=$BUILD/tests/e2e/image-cache
"$ROOT/tests/e2e/guest/build-image.sh" "$IMAGES" "$BUILD/cli/agent/hotmount-agent" >&2
# one copy per build dir: two trees tested at once must not swap images
UIMAGES=$HOMEDIR/hm-image-cache-$(printf %s "$BUILD" | sha256sum | cut -c1-12)
if ! cmp -s "$IMAGES/image.key" "$UIMAGES/image.key" 2>/dev/null; then
  rm -rf "$UIMAGES"
  mkdir "$UIMAGES"
  cp -a "$IMAGES"/. "$UIMAGES"/
  rm -rf "$UIMAGES"/.work.* "$UIMAGES/accel.json"
  chown -R "$U:" "$UIMAGES"
fi
if [ -n "$SETUP_ONLY" ]; then
  echo "$U $UIMAGES"
  exit 0
fi

# meson names the log LOGBASE-WRAPPER: testlog-rootless-runuser.json
rm -f "$BUILD"/meson-logs/testlog-rootless*.json
# env: the user's image copy; no root runtime dir leaking into the user's
# processes (hotmount falls back to its own paths)
meson test -C "$BUILD" --no-rebuild --print-errorlogs --logbase testlog-rootless \
  "${WHAT[@]}" \
  --wrapper "runuser -u $U -- env -u XDG_RUNTIME_DIR HOME=$HOMEDIR HM_E2E_IMAGE_DIR=$UIMAGES"
