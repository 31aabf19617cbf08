#!/bin/bash
# libhotmount demo: mount a host folder into a RUNNING VM, then take it out.
#
#   examples/demo.sh [HOST_FOLDER]
#
# 1. installs what it needs from apt (when missing), builds the project
#    (meson setup build && ninja -C build) and the small test guest
#    (Debian kernel + busybox, tests/e2e/guest/build-image.sh);
# 2. boots QEMU with the args `hotmount qemu-args demo` prints;
# 3. starts `hotmountd demo --foreground`;
# 4. hotmount add demo HOST_FOLDER /mnt/host; hotmount list demo;
#    reads a file from inside the guest; hotmount remove demo /mnt/host;
# 5. shuts everything down.
#
# Runs as a plain user: QEMU, hotmountd and virtiofsd are that user's
# processes (virtiofsd in a user namespace over the user's /etc/subuid
# range). Root is needed only to install missing packages: then it runs
# `sudo apt-get install ...`, or prints that command when sudo cannot run.
# It runs as root too. No KVM needed (TCG), ~10 s boot.
# Everything lives in a temp HOTMOUNT_HOME; the guest's console log is kept
# there. DEMO_KEEP=1 keeps that dir. The guest is driven through the e2e
# test channel (tests/e2e/vm.py guest-sh), not through hotmount itself.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DEMO_BUILD_DIR:-$ROOT/build}
IMAGE=${DEMO_IMAGE_DIR:-$BUILD/guest-image}
VMPY="$ROOT/tests/e2e/vm.py"

HOTMOUNT=$BUILD/cli/hotmount
HOTMOUNTD=$BUILD/cli/hotmountd
AGENT=$BUILD/cli/agent/hotmount-agent

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run()  { printf '$ %s\n' "$*"; "$@"; }
warn() { printf 'demo: %s\n' "$*" >&2; }
die()  { warn "$*"; exit 1; }

# --- 1. dependencies -----------------------------------------------------------------
say "Checking packages"
PKGS="meson ninja-build pkg-config gcc libjson-c-dev libglib2.0-dev libssh-dev
libcurl4-openssl-dev libmicrohttpd-dev check qemu-system-x86 qemu-utils
busybox-static kmod cpio python3 uidmap"
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    # the only step that needs root
    SUDO=
    if [ "$(id -u)" != 0 ]; then
        # sudo -n: never stop at a password prompt nobody sees coming
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            die "missing packages:$missing; install them (as root) with:
    sudo apt-get install -y$missing
then run $0 again as yourself"
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    run $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing ||
        die "apt-get install failed"
else
    echo "all present"
fi
if [ "$(id -u)" != 0 ] && ! grep -qE "^($(id -un)|$(id -u)):" /etc/subuid 2>/dev/null; then
    warn "$(id -un) has no subordinate ids in /etc/subuid: virtiofs without root needs them;"
    warn "as root, with ranges no other user has (see /etc/subuid, /etc/subgid):"
    warn "  usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $(id -un)"
fi
[ -x /usr/lib/qemu/virtiofsd ] || command -v virtiofsd >/dev/null ||
    warn "no virtiofsd found (Debian 12: /usr/lib/qemu/virtiofsd from qemu-system-common)"

# --- build -----------------------------------------------------------------------------
say "Building libhotmount"
if [ ! -f "$BUILD/build.ninja" ]; then
    run meson setup "$BUILD" "$ROOT" || warn "meson setup failed"
fi
run ninja -C "$BUILD" || warn "build failed: the demo goes on with what was built"

have_cli=1
for b in "$HOTMOUNT" "$HOTMOUNTD"; do
    [ -x "$b" ] || { warn "missing $b"; have_cli=; }
done
[ -x "$AGENT" ] || warn "missing $AGENT: the guest will run without the agent"

say "Building the guest image"
if [ -x "$AGENT" ]; then
    run "$ROOT/tests/e2e/guest/build-image.sh" "$IMAGE" "$AGENT" || die "image build failed"
else
    run "$ROOT/tests/e2e/guest/build-image.sh" "$IMAGE" || die "image build failed"
fi

# --- 2. boot --------------------------------------------------------------------------------
HOTMOUNT_HOME=$(mktemp -d /tmp/hotmount-demo.XXXXXX) || die "mktemp failed"
export HOTMOUNT_HOME
INST=$HOTMOUNT_HOME/demo
mkdir -p "$INST"
QEMU_PID=''
HMD_PID=''
cleanup() {
    [ -n "$HMD_PID" ] && kill "$HMD_PID" 2>/dev/null && wait "$HMD_PID" 2>/dev/null
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        python3 "$VMPY" poweroff "$INST/test.sock" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.2; done
        kill "$QEMU_PID" 2>/dev/null
        wait "$QEMU_PID" 2>/dev/null
    fi
    if [ -n "${DEMO_KEEP:-}" ]; then echo "kept $HOTMOUNT_HOME"; else rm -rf "$HOTMOUNT_HOME"; fi
}
trap cleanup EXIT

say "Booting the VM with \`hotmount qemu-args demo\`"
HM_ARGS=()
if [ -n "$have_cli" ] && out=$("$HOTMOUNT" qemu-args demo) && [ -n "$out" ]; then
    mapfile -t HM_ARGS <<<"$out"
    printf '$ hotmount qemu-args demo\n'; printf '  %s\n' "${HM_ARGS[@]}" | head -n 8
    echo "  ... (${#HM_ARGS[@]} lines)"
else
    warn "hotmount qemu-args is not available: using the equivalent args from tests/e2e/vm.py"
    mapfile -t HM_ARGS < <(python3 "$VMPY" qemu-args "$INST")
fi
# KVM only where it was seen to boot this kernel (a /dev/kvm that opens may
# still not run a guest); HOTMOUNT_ACCEL=kvm|tcg overrides. Says which, and why.
if [ -n "$have_cli" ]; then
    accel=$("$HOTMOUNT" accel --kernel "$IMAGE/vmlinuz") || die "hotmount accel failed"
else
    accel=$(python3 "$VMPY" accel "$IMAGE/vmlinuz")
fi
echo "demo: accelerator $accel"
QEMU=(qemu-system-x86_64 -M q35 -accel "$accel" -m 1G -smp 2 -nographic -nodefaults -no-reboot
      -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initramfs.cpio.gz"
      -append "console=ttyS0 panic=-1 loglevel=4"
      "${HM_ARGS[@]}"
      -chardev "file,id=con,path=$INST/console.log" -serial chardev:con
      -chardev "socket,id=test,path=$INST/test.sock,server=on,wait=off" -serial chardev:test)
"${QEMU[@]}" </dev/null >"$INST/qemu.out" 2>&1 &
QEMU_PID=$!
t0=$(date +%s%N)
python3 "$VMPY" wait-ready "$INST/test.sock" 180 ||
    { cat "$INST/qemu.out"; tail -n 20 "$INST/console.log"; die "the guest did not come up"; }
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf 'guest up in %d.%03d s (console log: %s)\n' $((ms / 1000)) $((ms % 1000)) "$INST/console.log"

guest() { printf 'guest$ %s\n' "$1"; python3 "$VMPY" guest-sh "$INST/test.sock" "$1" 60; }

# --- 3..5. the hot-mount --------------------------------------------------------------------
if [ -z "$have_cli" ]; then
    say "hotmount / hotmountd are not built yet: stopping here"
    echo "The VM is hot-mount ready (see the args above); with the CLI built this demo runs:"
    echo "  hotmountd demo --foreground &"
    echo "  hotmount add demo ${1:-HOST_FOLDER} /mnt/host"
    echo "  hotmount list demo"
    echo "  hotmount remove demo /mnt/host"
    guest 'cat /sys/class/virtio-ports/*/name'
    exit 2
fi

FOLDER=${1:-}
if [ -z "$FOLDER" ]; then
    FOLDER=$HOTMOUNT_HOME/some/folder
    mkdir -p "$FOLDER"
    echo "Hello from the host, $(date)" > "$FOLDER/hello.txt"
fi
FOLDER=$(cd "$FOLDER" && pwd) || die "no such folder: $FOLDER"

say "Starting the host daemon"
printf '$ hotmountd demo --foreground &\n'
"$HOTMOUNTD" demo --foreground >"$INST/hotmountd.out" 2>&1 &
HMD_PID=$!
for _ in $(seq 100); do [ -S "$INST/hotmountd.sock" ] && break; sleep 0.1; done
[ -S "$INST/hotmountd.sock" ] || { cat "$INST/hotmountd.out"; die "hotmountd did not start"; }

rc=0
say "Mounting $FOLDER at /mnt/host in the running VM"
run "$HOTMOUNT" add demo "$FOLDER" /mnt/host || rc=1
run "$HOTMOUNT" list demo || rc=1

say "Inside the guest"
guest 'grep /mnt/host /proc/mounts' || rc=1
guest 'ls -l /mnt/host && cat /mnt/host/hello.txt 2>/dev/null || true'
guest 'touch /mnt/host/written-by-guest 2>&1 || echo "(read-only, as asked: no --writable)"'

say "Taking it out again"
run "$HOTMOUNT" remove demo /mnt/host || rc=1
run "$HOTMOUNT" list demo || rc=1
guest '! grep /mnt/host /proc/mounts && echo "/mnt/host is gone"' || rc=1

say "Shutting down"
kill "$HMD_PID" 2>/dev/null; wait "$HMD_PID" 2>/dev/null; HMD_PID=
python3 "$VMPY" poweroff "$INST/test.sock"
wait "$QEMU_PID" 2>/dev/null; QEMU_PID=
[ $rc = 0 ] && echo "demo: done" || { echo "demo: some steps failed; logs in $INST"; DEMO_KEEP=1; }
exit $rc
