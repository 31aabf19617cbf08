#!/bin/bash
# Build the e2e guest: OUTDIR/vmlinuz + OUTDIR/initramfs.cpio.gz.
#
#   tests/e2e/guest/build-image.sh OUTDIR [AGENT_BINARY]
#
# The kernel comes from Debian's linux-image-amd64 (the 6.1 generic flavour:
# the cloud one has no 9p), fetched with `apt-get download` and unpacked with
# `dpkg -x`; nothing is installed on the host except the tools below when they
# are missing. Userspace is busybox-static plus an optional hotmount-agent.
#
# Cache: OUTDIR/image.key holds a hash of this script, the agent binary and the
# package versions. When it matches, the image is reused; the kernel .deb is
# kept in OUTDIR too. Set HM_IMAGE_FORCE=1 to rebuild anyway.
#
# The guest's /init and its test channel are described in tests/e2e/README.md.
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [AGENT_BINARY]"
OUTDIR=$1
AGENT=${2:-}
if [ -n "$AGENT" ] && [ ! -f "$AGENT" ]; then
    log "agent binary $AGENT not found: building the image without an agent"
    AGENT=
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SELF=$(readlink -f "$0")

# Kernel modules to ship; their dependencies are added from modules.dep.
MODULES="virtio_pci virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
fuse virtiofs netfs fscache 9pnet 9pnet_fd 9p virtio_console
virtio_net net_failover failover"

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

apt_updated=
apt_update_once() {
    [ -n "$apt_updated" ] && return 0
    apt_updated=1
    log "apt-get update"
    $SUDO apt-get update -qq >&2 || log "apt-get update failed"
}

need_pkg() { # need_pkg PACKAGE FILE...: install PACKAGE unless every FILE exists
    local pkg=$1 f missing=; shift
    for f in "$@"; do [ -e "$f" ] || missing=1; done
    [ -z "$missing" ] && return 0
    log "installing $pkg"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >&2 ||
        die "cannot install $pkg"
}

need_pkg binutils /usr/bin/readelf
need_pkg busybox-static /bin/busybox
file_is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'; }
if ! file_is_static /bin/busybox; then
    # the dynamic `busybox` package is installed instead; swap it
    apt_update_once
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq busybox-static >&2 ||
        die "cannot install busybox-static"
fi
need_pkg kmod /sbin/depmod
need_pkg cpio /usr/bin/cpio

# --- resolve the kernel package -------------------------------------------
resolve_kernel() {
    LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.1[^ ]*-amd64\)$/\1/p' | head -n1
}
KPKG=$(resolve_kernel || true)
if [ -z "$KPKG" ]; then
    apt_update_once
    KPKG=$(resolve_kernel || true)
fi
KDEB=
if [ -n "$KPKG" ]; then
    KVER_DEB=$(LC_ALL=C apt-cache policy "$KPKG" | sed -n 's/^ *Candidate: //p')
    [ -n "$KVER_DEB" ] && [ "$KVER_DEB" != "(none)" ] || die "no candidate for $KPKG"
    KDEB="$OUTDIR/${KPKG}_${KVER_DEB//:/%3a}_amd64.deb"
else
    # offline: fall back to a .deb cached earlier
    KDEB=$(ls -1 "$OUTDIR"/linux-image-6.1*-amd64_*_amd64.deb 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$KDEB" ] || die "cannot resolve linux-image-amd64 (apt lists?) and no cached kernel .deb"
    KPKG=$(basename "$KDEB" | cut -d_ -f1)
    log "apt resolution failed; using cached $KDEB"
fi
KREL=${KPKG#linux-image-}            # e.g. 6.1.0-56-amd64
BB_VER=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || busybox 2>&1 | head -n1)

# --- cache check ---------------------------------------------------------------
agent_sum=none
[ -n "$AGENT" ] && agent_sum=$(sha256sum "$AGENT" | cut -d' ' -f1)
KEY=$( { sha256sum "$SELF" | cut -d' ' -f1; echo "agent=$agent_sum";
         echo "kernel=$(basename "$KDEB")"; echo "busybox=$BB_VER"; } | sha256sum | cut -d' ' -f1)
if [ -z "${HM_IMAGE_FORCE:-}" ] && [ -f "$OUTDIR/image.key" ] &&
   [ "$(cat "$OUTDIR/image.key")" = "$KEY" ] &&
   [ -s "$OUTDIR/vmlinuz" ] && [ -s "$OUTDIR/initramfs.cpio.gz" ]; then
    log "image up to date in $OUTDIR ($KREL, agent: ${AGENT:-none})"
    exit 0
fi

# --- fetch + unpack the kernel ---------------------------------------------------
if [ ! -s "$KDEB" ]; then
    log "downloading $KPKG"
    rm -f "$OUTDIR"/linux-image-6.1*-amd64_*_amd64.deb
    # apt-get download writes into the current directory; _apt cannot write
    # into root-owned dirs, so download into a temp dir it can use.
    dl=$(mktemp -d)
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -qq "$KPKG" >&2) || {
        apt_update_once
        (cd "$dl" && apt-get download -qq "$KPKG" >&2) || die "apt-get download $KPKG failed"
    }
    mv "$dl"/*.deb "$KDEB"
    rmdir "$dl" 2>/dev/null || rm -rf "$dl"
fi

WORK=$(mktemp -d "$OUTDIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "unpacking $(basename "$KDEB")"
dpkg -x "$KDEB" "$WORK/k"
KMOD="$WORK/k/lib/modules/$KREL"
[ -d "$KMOD" ] || die "no /lib/modules/$KREL in $KDEB"
# The .deb ships no modules.dep (postinst makes it): make one to resolve deps.
depmod -b "$WORK/k" "$KREL"

# --- initramfs tree -----------------------------------------------------------------
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,mnt,root,lib/modules/"$KREL"}
cp /bin/busybox "$R/bin/busybox"
for app in $(/bin/busybox --list-full); do
    [ -e "$R/$app" ] || ln -s /bin/busybox "$R/$app"
done

# modules: resolve each requested module plus its dependencies, in load order
declare -A seen=()
ORDER=()
modpath() { # module name -> path relative to $KMOD (empty if builtin/unknown)
    awk -F: -v m="$1" '{ n=$1; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n);
                         gsub(/-/, "_", n); if (n == m) { print $1; exit } }' "$KMOD/modules.dep"
}
add_module() {
    local rel=$1 dep
    [ -n "${seen[$rel]:-}" ] && return 0
    seen[$rel]=1
    for dep in $(grep -E "^$rel:" "$KMOD/modules.dep" | cut -d: -f2-); do
        add_module "$dep"
    done
    ORDER+=("$rel")
}
for m in $MODULES; do
    rel=$(modpath "$m")
    if [ -z "$rel" ]; then
        grep -qE "/$m\.ko" "$KMOD/modules.builtin" && { log "module $m is built in"; continue; }
        die "module $m not found in $KREL"
    fi
    add_module "$rel"
done
: > "$R/etc/hm-modules"
for rel in "${ORDER[@]}"; do
    mkdir -p "$R/lib/modules/$KREL/$(dirname "$rel")"
    case $rel in
        *.ko.xz) xz -dc "$KMOD/$rel" > "$R/lib/modules/$KREL/${rel%.xz}"; rel=${rel%.xz} ;;
        *.ko.zst) zstd -qdc "$KMOD/$rel" > "$R/lib/modules/$KREL/${rel%.zst}"; rel=${rel%.zst} ;;
        *) cp "$KMOD/$rel" "$R/lib/modules/$KREL/$rel" ;;
    esac
    echo "$rel" >> "$R/etc/hm-modules"
done
cp "$KMOD"/modules.builtin* "$KMOD"/modules.order "$R/lib/modules/$KREL/"
depmod -b "$R" "$KREL"
log "modules: $(sed 's,.*/,,; s,\.ko$,,' "$R/etc/hm-modules" | tr '\n' ' ')"

# agent (+ its shared libraries if it is not static)
if [ -n "$AGENT" ]; then
    install -m 0755 "$AGENT" "$R/usr/sbin/hotmount-agent"
    if ! file_is_static "$AGENT"; then
        for lib in $(ldd "$AGENT" 2>/dev/null | grep -oE '/[^ ]+' | sort -u); do
            mkdir -p "$R$(dirname "$lib")"
            cp -L "$lib" "$R$lib"
        done
        # the loader is found through the path in PT_INTERP (/lib64/...)
        [ -e "$R/lib64" ] || { [ -d "$R/usr/lib64" ] && ln -s usr/lib64 "$R/lib64"; } || true
    fi
    log "agent: $AGENT"
fi

cat > "$R/etc/inittab" <<'EOF'
# busybox init: reaps orphans and respawns the services below
::sysinit:/etc/hm-rc
ttyS1::respawn:/bin/hm-testd
::respawn:/etc/hm-agent-run
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
EOF

cat > "$R/init" <<'EOF'
#!/bin/sh
# PID 1 of the e2e guest: bring the system up, then hand over to busybox init.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname hmguest
exec /sbin/init
EOF

cat > "$R/etc/hm-rc" <<'EOF'
#!/bin/sh
kver=$(uname -r)
t0=$(cut -d' ' -f1 /proc/uptime)
while read -r m; do
    insmod "/lib/modules/$kver/$m" || echo "hm-init: insmod $m failed"
done < /etc/hm-modules
# /dev/virtio-ports/NAME links like udev makes, for cold and hot-plugged ports
# (the kernel has no CONFIG_UEVENT_HELPER: mdev listens on netlink instead)
mdev -d
mdev -s
echo "hm-init: modules loaded at ${t0}s..$(cut -d' ' -f1 /proc/uptime)s"
EOF

cat > "$R/etc/mdev.conf" <<'EOF'
vport[0-9]+p[0-9]+ 0:0 0600 */etc/hm-vport-link
EOF

cat > "$R/etc/hm-vport-link" <<'EOF'
#!/bin/sh
# mdev helper: keep /dev/virtio-ports/NAME -> ../vportXpY
mkdir -p /dev/virtio-ports
case $ACTION in
remove)
    for l in /dev/virtio-ports/*; do
        [ "$(readlink "$l")" = "../$MDEV" ] && rm -f "$l"
    done ;;
*)
    n=$(cat "/sys/class/virtio-ports/$MDEV/name" 2>/dev/null)
    [ -n "$n" ] && ln -sfn "../$MDEV" "/dev/virtio-ports/$n" ;;
esac
exit 0
EOF

cat > "$R/etc/hm-agent-run" <<'EOF'
#!/bin/sh
# Start the agent if the image has one; keep it running, log to the console.
if [ ! -x /usr/sbin/hotmount-agent ]; then
    echo "hm-init: no /usr/sbin/hotmount-agent in this image"
    exec sleep 2147483647
fi
while :; do
    # Extra options for the next start (tests and benchmarks write this file).
    args=$(cat /etc/hm-agent-args 2>/dev/null)
    echo "hm-init: starting hotmount-agent $args"
    # shellcheck disable=SC2086
    /usr/sbin/hotmount-agent $args </dev/null >/dev/console 2>&1
    echo "hm-init: hotmount-agent exited with status $?; restarting in 1s"
    sleep 1
done
EOF

# The test command channel on ttyS1 (see tests/e2e/README.md):
#   host -> guest  "HMX <id> <timeout_s> <base64 script>\n"
#   guest -> host  "\nHMB <id>\n" <stdout+stderr> "\nHME <id> <status>\n"
cat > "$R/bin/hm-testd" <<'EOF'
#!/bin/sh
stty raw -echo -opost 2>/dev/null
printf '\nHMREADY\n'
while read -r tag id tmo b64; do
    [ "$tag" = HMX ] || continue
    case $id in *[!A-Za-z0-9_.-]*|'') continue ;; esac
    case $tmo in *[!0-9]*|'') tmo=60 ;; esac
    f=/tmp/.hm-cmd.$id
    printf '%s\n' "$b64" | base64 -d > "$f" 2>/dev/null
    (cd / && timeout -s KILL "$tmo" sh "$f" </dev/null >"$f.out" 2>&1)
    rc=$?
    printf '\nHMB %s\n' "$id"
    cat "$f.out"
    printf '\nHME %s %s\n' "$id" "$rc"
    rm -f "$f" "$f.out"
done
EOF
chmod 0755 "$R/init" "$R/etc/hm-rc" "$R/etc/hm-vport-link" "$R/etc/hm-agent-run" "$R/bin/hm-testd"

# --- pack ---------------------------------------------------------------------------
log "packing initramfs"
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet) | gzip -6 > "$WORK/initramfs.cpio.gz"
cp "$WORK/k/boot/vmlinuz-$KREL" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$OUTDIR/vmlinuz"
mv -f "$WORK/initramfs.cpio.gz" "$OUTDIR/initramfs.cpio.gz"
echo "$KREL" > "$OUTDIR/kernel.release"
echo "$KEY" > "$OUTDIR/image.key"
log "built $OUTDIR/vmlinuz + initramfs.cpio.gz ($KREL, $(du -h "$OUTDIR/initramfs.cpio.gz" | cut -f1), agent: ${AGENT:-none})"
