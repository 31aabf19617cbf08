#!/bin/sh
# The library as a macOS build makes it, checked on Linux: configured with
# -Dplatform=posix -Dlinux_backends=disabled (no lib/drivers/qemu, no
# lib/drivers/sshfs, no guest agent, no test suites) in a scratch build dir,
#   - libhotmount builds and links (with the build's usual --no-undefined);
#   - it exports exactly the symbols of the normal build (MAIN_LIBRARY);
#   - a program calling hm_qemu_hotplugger_new, hm_qemu_config_new and
#     hm_sshfs_hotplugger_new gets HM_E_UNSUPPORTED, a NULL *out and a
#     message saying the backend is Linux-only.
# Usage: no-linux-backends.sh MESON SOURCE_ROOT MAIN_LIBRARY CC...
set -eu
meson=$1 src=$2 mainlib=$3; shift 3
cc="$*"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0 status=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; printf '%s\n' "$2" | sed 's/^/#   /'; status=1; }
exports() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' |
  grep -v '^HOTMOUNT_' | sort -u; }

bld=$tmp/build
if ! out=$(CC="$cc" "$meson" setup "$bld" "$src" -Dplatform=posix -Dlinux_backends=disabled \
      -Dtests=false -De2e=false -Dstatic_agent=false -Dbuildtype=plain 2>&1); then
  notok "meson setup -Dplatform=posix -Dlinux_backends=disabled" "$(printf '%s\n' "$out" | tail -15)"
  echo "1..$n"; exit 1
fi
if out=$("$meson" compile -C "$bld" lib/hotmount:shared_library 2>&1); then
  ok "libhotmount builds and links without the Linux backends (platform posix)"
else
  notok "build of libhotmount without the Linux backends" "$(printf '%s\n' "$out" | tail -15)"
  echo "1..$n"; exit 1
fi
lib=$bld/lib/libhotmount.so

if grep -q 'linux_only_stubs' "$bld/build.ninja" && ! grep -q 'qemu_driver\.c' "$bld/build.ninja" &&
   ! grep -q 'sshfs_driver\.c' "$bld/build.ninja" && ! grep -q '^build cli/agent/hotmount-agent' "$bld/build.ninja"; then
  ok "neither lib/drivers/qemu, lib/drivers/sshfs nor the agent is built; the stubs are"
else
  notok "what the build compiles" "$(grep -oE '[a-z_/]*(qemu_driver|sshfs_driver|linux_only_stubs)\.c|^build cli/agent/hotmount-agent' "$bld/build.ninja" | sort -u)"
fi

exports "$mainlib" > "$tmp/main.sym"
exports "$lib" > "$tmp/stub.sym"
if d=$(diff "$tmp/main.sym" "$tmp/stub.sym"); then
  ok "same exported symbols as the normal build ($(wc -l < "$tmp/main.sym"))"
else
  notok "exports differ from the normal build (< normal, > without Linux backends)" "$d"
fi

cat > "$tmp/probe.c" <<'C'
#include <hotmount/hotmount.h>
#include <hotmount/qemu.h>
#include <hotmount/sshfs.h>
#include <stdio.h>
#include <string.h>

static int check(const char *what, int rc, const void *out, hm_error *err, const char *want) {
  const char *msg = err ? hm_error_message(err) : "(no error)";
  int good = rc == HM_E_UNSUPPORTED && out == NULL && err && strstr(msg, want);
  printf("%s %s: rc %d, message \"%s\"\n", good ? "good" : "BAD", what, rc, msg);
  hm_error_free(err);
  return good ? 0 : 1;
}

int main(void) {
  int bad = 0;
  hm_error *err = NULL;
  hm_qemu_config *cfg = (hm_qemu_config *)&bad;
  int rc = hm_qemu_config_new(&cfg, "/tmp", &err);
  bad |= check("hm_qemu_config_new", rc, cfg, err, "QEMU backend is Linux-only");
  hm_fs_hotplugger *hp = (hm_fs_hotplugger *)&bad;
  err = NULL;
  rc = hm_qemu_hotplugger_new(&hp, NULL, &err);
  bad |= check("hm_qemu_hotplugger_new", rc, hp, err, "QEMU backend is Linux-only");
  hp = (hm_fs_hotplugger *)&bad;
  err = NULL;
  rc = hm_sshfs_hotplugger_new(&hp, NULL, "/tmp", &err);
  bad |= check("hm_sshfs_hotplugger_new", rc, hp, err, "sshfs backend is Linux-only");
  hm_qemu_config_free(NULL);
  return bad;
}
C
# (meson test's LD_LIBRARY_PATH points at the normal build: override it.)
# shellcheck disable=SC2086
if out=$($cc -std=c11 -I"$src/include" -I"$bld/include" "$tmp/probe.c" -o "$tmp/probe" \
      -L"$bld/lib" -lhotmount 2>&1) && out=$(LD_LIBRARY_PATH="$bld/lib" "$tmp/probe" 2>&1); then
  ok "the stubs answer HM_E_UNSUPPORTED naming the backend"
  printf '%s\n' "$out" | sed 's/^/#   /'
else
  notok "the stubs' answers" "$out"
fi

# Control: the normal build's hm_qemu_hotplugger_new is the real one (the
# probe would fail against it), so the probe can tell the two apart.
if nm -D --defined-only "$mainlib" >/dev/null 2>&1 && ! strings "$mainlib" | grep -q 'Linux-only (not in this build)' &&
   strings "$lib" | grep -q 'QEMU backend is Linux-only'; then
  ok "the normal build has the real backends, this one the stubs"
else
  notok "control: stub message found in the normal build, or missing here" ""
fi
echo "1..$n"
exit $status
