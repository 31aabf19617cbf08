#!/bin/bash
# Build the e2e guest: OUTDIR/vmlinuz + OUTDIR/initramfs.cpio.gz.
#
#   tests/e2e/guest/build-image.sh OUTDIR [AGENT_BINARY [EXTRA_BINARY...]]
#
# EXTRA_BINARY: more static programs for the guest's /usr/bin (by their base
# name), e.g. the hostile-guest suite's raw 9P client; "" for AGENT_BINARY
# builds without an agent.
#
# The kernel comes from Debian's linux-image-amd64 (the 6.1 generic flavour:
# the cloud one has no 9p), fetched with `apt-get download` and unpacked with
# `dpkg -x`; nothing is installed on the host except the tools below when they
# are missing. Userspace is busybox-static, an optional hotmount-agent, and
# for the reverse-sshfs transport dropbear (sshd on port 22, key logins only),
# sshfs and fusermount3, and inotifywait (e2e-notify), each with the shared
# libraries it needs.
#
# SSH test keys, made once per OUTDIR and kept across rebuilds (OUTDIR/ssh/):
#   id_ed25519, id_ed25519.pub   client key (OpenSSH), authorized for root
#   host_ed25519.dropbear        the guest's host key (baked into the image)
#   host_ed25519.pub             its public line, "ssh-ed25519 AAAA..."
#   wrong_host_ed25519.pub       another host key's line, for bad-key tests
#   wrong_id_ed25519(.pub)       a client key the guest does NOT authorize
#
# Cache: OUTDIR/image.key holds a hash of this script, the agent binary, the
# package versions, every host file copied into the image (binaries and their
# libraries) and the SSH keys. When it matches, the image is reused; the kernel
# .deb is kept in OUTDIR too. Set HM_IMAGE_FORCE=1 to rebuild anyway.
#
# The guest's /init and its test channel are described in tests/e2e/README.md.
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 OUTDIR [AGENT_BINARY [EXTRA_BINARY...]]"
OUTDIR=$1
AGENT=${2:-}
shift $(( $# >= 2 ? 2 : 1 ))
EXTRAS=("$@")
for x in "${EXTRAS[@]}"; do
    [ -f "$x" ] || die "extra binary $x not found"
done
if [ -n "$AGENT" ] && [ ! -f "$AGENT" ]; then
    log "agent binary $AGENT not found: building the image without an agent"
    AGENT=
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
SELF=$(readlink -f "$0")

# Kernel modules to ship; their dependencies are added from modules.dep.
MODULES="virtio_pci virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev
fuse virtiofs netfs fscache 9pnet 9pnet_fd 9pnet_virtio 9p virtio_console
virtio_net net_failover failover virtio_rng"

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
# reverse-sshfs: the guest runs dropbear + sshfs; ssh-keygen makes the client key
need_pkg dropbear-bin /usr/sbin/dropbear /usr/bin/dropbearkey
need_pkg sshfs /usr/bin/sshfs
need_pkg fuse3 /usr/bin/fusermount3
need_pkg openssh-client /usr/bin/ssh-keygen
# --notify (e2e-notify): a real file watcher in the guest; busybox-static has
# no inotifyd
need_pkg inotify-tools /usr/bin/inotifywait

# Host programs copied into the guest, with the shared libraries ldd lists.
GUEST_BINS="/usr/sbin/dropbear /usr/bin/sshfs /usr/bin/fusermount3 /usr/bin/inotifywait"
# glibc dlopens libgcc_s for pthread_cancel (libfuse's threads at sshfs's exit;
# without it sshfs aborts after the unmount), and ldd does not list it.
DLOPEN_LIBS=
for f in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
    [ -e "$f" ] && { DLOPEN_LIBS=$f; break; }
done
[ -n "$DLOPEN_LIBS" ] || die "no libgcc_s.so.1 on this host"
shared_libs() { # shared_libs FILE...: the libraries (and loader) they load
    local f
    for f in "$@"; do
        file_is_static "$f" || ldd "$f" 2>/dev/null | grep -oE '/[^ ]+'
    done | sort -u
}

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
PKG_VERS=$(dpkg-query -W -f='${Package}=${Version} ' dropbear-bin sshfs fuse3 2>/dev/null || true)

# --- SSH test keys (made once per OUTDIR, kept across rebuilds) --------------------
SSHDIR="$OUTDIR/ssh"
mkdir -p "$SSHDIR"
chmod 0700 "$SSHDIR"
make_client_key() { # make_client_key NAME: OpenSSH ed25519 key pair SSHDIR/NAME(.pub)
    [ -s "$SSHDIR/$1" ] && [ -s "$SSHDIR/$1.pub" ] && return 0
    rm -f "$SSHDIR/$1" "$SSHDIR/$1.pub" "$SSHDIR/.$1.tmp" "$SSHDIR/.$1.tmp.pub"
    ssh-keygen -q -t ed25519 -N '' -C "hotmount-e2e-$1" -f "$SSHDIR/.$1.tmp" >&2 ||
        die "ssh-keygen failed"
    mv "$SSHDIR/.$1.tmp.pub" "$SSHDIR/$1.pub"
    mv "$SSHDIR/.$1.tmp" "$SSHDIR/$1"
    log "made client key $SSHDIR/$1"
}
make_host_key() { # make_host_key NAME: dropbear key SSHDIR/NAME.dropbear + NAME.pub
    local pub
    if [ ! -s "$SSHDIR/$1.dropbear" ]; then
        rm -f "$SSHDIR/.$1.tmp"
        dropbearkey -t ed25519 -f "$SSHDIR/.$1.tmp" >/dev/null 2>&1 ||
            die "dropbearkey -t ed25519 failed"
        mv "$SSHDIR/.$1.tmp" "$SSHDIR/$1.dropbear"
        rm -f "$SSHDIR/$1.pub"
        log "made host key $SSHDIR/$1.dropbear"
    fi
    if [ ! -s "$SSHDIR/$1.pub" ]; then
        # dropbearkey -y prints "ssh-ed25519 AAAA... user@host" among other lines
        pub=$(dropbearkey -y -f "$SSHDIR/$1.dropbear" 2>/dev/null |
              awk '$1 == "ssh-ed25519" { print $1, $2; exit }')
        [ -n "$pub" ] || die "cannot read the public key of $SSHDIR/$1.dropbear"
        echo "$pub" > "$SSHDIR/$1.pub"
    fi
}
make_client_key id_ed25519
make_client_key wrong_id_ed25519
make_host_key host_ed25519
make_host_key wrong_host_ed25519
cmp -s "$SSHDIR/host_ed25519.pub" "$SSHDIR/wrong_host_ed25519.pub" &&
    die "host_ed25519 and wrong_host_ed25519 are the same key"

# --- cache check ---------------------------------------------------------------
agent_sum=none
[ -n "$AGENT" ] && agent_sum=$(sha256sum "$AGENT" | cut -d' ' -f1)
extras_sum=none
[ ${#EXTRAS[@]} -gt 0 ] && extras_sum=$(for x in "${EXTRAS[@]}"; do
    echo "$(basename "$x") $(sha256sum "$x" | cut -d' ' -f1)"; done | sha256sum | cut -d' ' -f1)
# shellcheck disable=SC2046,SC2086
KEY=$( { sha256sum "$SELF" | cut -d' ' -f1; echo "agent=$agent_sum"; echo "extras=$extras_sum";
         echo "kernel=$(basename "$KDEB")"; echo "busybox=$BB_VER"; echo "pkgs=$PKG_VERS";
         sha256sum $GUEST_BINS $(shared_libs $GUEST_BINS) $DLOPEN_LIBS | cut -d' ' -f1;
         sha256sum "$SSHDIR/host_ed25519.dropbear" "$SSHDIR/id_ed25519.pub" | cut -d' ' -f1;
       } | sha256sum | cut -d' ' -f1)
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

copy_libs() { # copy_libs FILE...: the shared libraries of FILEs, at the same paths
    local lib
    for lib in $(shared_libs "$@"); do
        [ -e "$R$lib" ] && continue
        mkdir -p "$R$(dirname "$lib")"
        cp -L "$lib" "$R$lib"
    done
    # the loader is found through the path in PT_INTERP (/lib64/...)
    [ -e "$R/lib64" ] || { [ -d "$R/usr/lib64" ] && ln -s usr/lib64 "$R/lib64"; } || true
}

# agent (+ its shared libraries if it is not static)
if [ -n "$AGENT" ]; then
    install -m 0755 "$AGENT" "$R/usr/sbin/hotmount-agent"
    copy_libs "$AGENT"
    log "agent: $AGENT"
fi

# extra static programs (tests' own guest tools)
for x in "${EXTRAS[@]}"; do
    file_is_static "$x" || die "extra binary $x is not static"
    install -m 0755 "$x" "$R/usr/bin/$(basename "$x")"
    log "extra: $x"
done

# reverse-sshfs: sshd (dropbear), sshfs, fusermount3; busybox has none of them
install -m 0755 /usr/sbin/dropbear "$R/usr/sbin/dropbear"
install -m 0755 /usr/bin/sshfs "$R/usr/bin/sshfs"
install -m 4755 /usr/bin/fusermount3 "$R/usr/bin/fusermount3"
ln -sfn fusermount3 "$R/usr/bin/fusermount"
# e2e-notify's guest file watcher
install -m 0755 /usr/bin/inotifywait "$R/usr/bin/inotifywait"
# shellcheck disable=SC2086
copy_libs $GUEST_BINS
mkdir -p "$R$(dirname "$DLOPEN_LIBS")"
cp -L "$DLOPEN_LIBS" "$R$DLOPEN_LIBS"
# fusermount3 keeps no mtab of its own when /etc/mtab is this link
ln -sfn /proc/self/mounts "$R/etc/mtab"
mkdir -p "$R/etc/dropbear" "$R/var/log" "$R/root/.ssh"
install -m 0600 "$SSHDIR/host_ed25519.dropbear" "$R/etc/dropbear/dropbear_ed25519_host_key"
install -m 0600 "$SSHDIR/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
chmod 0700 "$R/root" "$R/root/.ssh"
# dropbear looks the user up in /etc/passwd and its shell in /etc/shells
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' > "$R/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > "$R/etc/group"
printf '%s\n' /bin/sh /bin/ash > "$R/etc/shells"
log "sshd: dropbear, sshfs, fusermount3 ($PKG_VERS)"

cat > "$R/etc/inittab" <<'EOF'
# busybox init: reaps orphans and respawns the services below
::sysinit:/etc/hm-rc
ttyS1::respawn:/bin/hm-testd
::respawn:/etc/hm-agent-run
::respawn:/etc/hm-sshd-run
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
# network: lo, and eth0 when the VM has a NIC (QEMU user net: 10.0.2.0/24)
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip addr add 10.0.2.15/24 dev eth0
    ip link set eth0 up
    ip route add default via 10.0.2.2
    echo "hm-init: eth0 up, 10.0.2.15/24"
fi
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
# The word hm.noagent on the kernel command line keeps it from starting.
if grep -qw 'hm\.noagent' /proc/cmdline; then
    echo "hm-init: hm.noagent: not starting hotmount-agent"
    exec sleep 2147483647
fi
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

# sshd for reverse-sshfs: root by key only (-s: no password logins), logs to
# the console (-E), stays in the foreground (-F) so init respawns it; no
# forwarding (-j -k), no motd (-m); a 1 MiB receive window (-W) instead of
# 24 KiB, for what the host sends (file reads over sshfs).
cat > "$R/etc/hm-sshd-run" <<'EOF'
#!/bin/sh
echo "hm-init: starting dropbear on port 22"
/usr/sbin/dropbear -F -E -s -m -j -k -W 1048576 -p 22 -P /run/dropbear.pid \
    -r /etc/dropbear/dropbear_ed25519_host_key </dev/null >/dev/console 2>&1
echo "hm-init: dropbear exited with status $?; restarting in 1s"
sleep 1
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
chmod 0755 "$R/init" "$R/etc/hm-rc" "$R/etc/hm-vport-link" "$R/etc/hm-agent-run" \
    "$R/etc/hm-sshd-run" "$R/bin/hm-testd"

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
