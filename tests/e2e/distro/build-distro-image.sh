#!/bin/bash
# Build the real-distribution e2e guest: a Debian 12 (bookworm) system with
# systemd and udev, from the Debian archive.
#
#   tests/e2e/distro/build-distro-image.sh OUTDIR
#
# Output in OUTDIR:
#   root.img          raw ext4 disk (root=/dev/vda), made with `mke2fs -d`
#                     from the mmdebstrap tree: no loop or root mounts needed
#   vmlinuz, initrd   the tree's own kernel and initramfs (initramfs-tools,
#                     MODULES=most: virtio_pci and virtio_blk are in it; the
#                     script checks)
#   ssh/              test keys, made once per OUTDIR and kept across rebuilds:
#                     id_ed25519(.pub) the client key root and hmuser accept,
#                     host_ed25519(.pub) the guest sshd's only host key
#   image.key         the cache key
#
# The image holds no hotmount-agent: the test installs it the way
# docs/guest-install.md tells users to. It has:
#   - hm-testd.service: the test channel on ttyS1 (the protocol of
#     tests/e2e/README.md, "Test channel"), a root shell loop that does not
#     depend on our agent;
#   - openssh-server with the host key above, key logins only;
#   - systemd-networkd with 10.0.2.15/24 via 10.0.2.2 on the virtio NIC (QEMU
#     user net), no wait-online;
#   - an unprivileged user hmuser (uid 1000).
#
# Cache: image.key = hash of this script, the candidate versions (host apt
# lists, the same archive) of every package named below, and the SSH keys.
# Same key: nothing is done. HM_IMAGE_FORCE=1 rebuilds.
set -euo pipefail

die() { echo "build-distro-image: $*" >&2; exit 1; }
log() { echo "build-distro-image: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
mkdir -p "$1"
OUTDIR=$(cd "$1" && pwd)
SELF=$(readlink -f "$0")
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap root mode, device nodes in the tree)"
for t in mmdebstrap mke2fs ssh-keygen; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install mmdebstrap e2fsprogs openssh-client)"
done

SUITE=bookworm
MIRROR=${HM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${HM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
PACKAGES="systemd-sysv udev kmod linux-image-amd64 initramfs-tools fuse3 openssh-server
sshfs procps psmisc iproute2 inotify-tools"
DISK_SIZE=3G

# --- SSH test keys (made once per OUTDIR) -------------------------------------
SSHDIR=$OUTDIR/ssh
mkdir -p "$SSHDIR"
chmod 700 "$SSHDIR"
for k in id_ed25519 host_ed25519; do
    if [ ! -s "$SSHDIR/$k" ] || [ ! -s "$SSHDIR/$k.pub" ]; then
        rm -f "$SSHDIR/$k" "$SSHDIR/$k.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hotmount-distro-$k" -f "$SSHDIR/$k" >&2 ||
            die "ssh-keygen failed"
        log "made $SSHDIR/$k"
    fi
done

# --- cache key -----------------------------------------------------------------
versions() { # one "package: candidate" line per package (one apt-cache run)
    # shellcheck disable=SC2086
    LC_ALL=C apt-cache policy $PACKAGES 2>/dev/null |
        awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}'
}
KEY=$( { sha256sum "$SELF" | cut -d' ' -f1; versions; echo "$MIRROR $SECURITY $SUITE";
         cat "$SSHDIR/id_ed25519.pub" "$SSHDIR/host_ed25519.pub"; } | sha256sum | cut -d' ' -f1)
if [ -z "${HM_IMAGE_FORCE:-}" ] && [ -f "$OUTDIR/image.key" ] &&
   [ "$(cat "$OUTDIR/image.key")" = "$KEY" ] &&
   [ -s "$OUTDIR/root.img" ] && [ -s "$OUTDIR/vmlinuz" ] && [ -s "$OUTDIR/initrd" ]; then
    log "cached image in $OUTDIR (key $KEY)"
    exit 0
fi
rm -f "$OUTDIR/image.key"

# --- the tree --------------------------------------------------------------------
TREE=$OUTDIR/tree
rm -rf "$TREE"
HOOKS=$OUTDIR/hooks
rm -rf "$HOOKS"
mkdir -p "$HOOKS"
cp "$SSHDIR/host_ed25519" "$SSHDIR/host_ed25519.pub" "$SSHDIR/id_ed25519.pub" "$HOOKS/"

# Runs on the host after the packages are installed; $1 is the tree.
cat > "$HOOKS/customize.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
R=$1
H=$(dirname "$(readlink -f "$0")")
echo hm-distro > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 hm-distro\n' > "$R/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$R/etc/fstab"

# network: QEMU user net, static (no DHCP wait)
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/10-user-net.network" <<'NET'
[Match]
Type=ether

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
chroot "$R" systemctl enable systemd-networkd.service
chroot "$R" systemctl disable systemd-networkd-wait-online.service 2>/dev/null || true

# sshd: one known host key, key logins only
rm -f "$R"/etc/ssh/ssh_host_*
install -m 0600 "$H/host_ed25519" "$R/etc/ssh/ssh_host_ed25519_key"
install -m 0644 "$H/host_ed25519.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
cat > "$R/etc/ssh/sshd_config.d/hm-e2e.conf" <<'SSHD'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
SSHD
install -d -m 0700 "$R/root/.ssh"
install -m 0600 "$H/id_ed25519.pub" "$R/root/.ssh/authorized_keys"

# an unprivileged user
chroot "$R" useradd -m -u 1000 -s /bin/bash hmuser

# the test channel on ttyS1 (tests/e2e/README.md "Test channel"): a root shell
# loop independent of hotmount-agent
cat > "$R/usr/local/sbin/hm-testd" <<'TESTD'
#!/bin/bash
# e2e test channel: host -> "HMX <id> <timeout_s> <base64 sh script>",
# guest -> "\nHMB <id>\n<output>\nHME <id> <status>\n"
stty raw -echo 2>/dev/null
printf '\nHMREADY\n'
while read -r tag id to b64; do
    [ "$tag" = HMX ] || continue
    if ! printf '%s' "$b64" | base64 -d > /run/hm-testd.sh 2>/dev/null; then
        printf '\nHMB %s\nbad base64\nHME %s 254\n' "$id" "$id"
        continue
    fi
    printf '\nHMB %s\n' "$id"
    (cd / && exec timeout -s KILL "$to" sh /run/hm-testd.sh </dev/null 2>&1)
    rc=$?
    printf '\nHME %s %d\n' "$id" "$rc"
done
TESTD
chmod 0755 "$R/usr/local/sbin/hm-testd"
cat > "$R/etc/systemd/system/hm-testd.service" <<'UNIT'
[Unit]
Description=e2e test channel on ttyS1 (not part of hotmount)
After=local-fs.target

[Service]
ExecStart=/usr/local/sbin/hm-testd
StandardInput=tty
StandardOutput=tty
StandardError=journal
TTYPath=/dev/ttyS1
Restart=always
RestartSec=1
# commands it runs start services and mounts; they must not die with it
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
chroot "$R" systemctl enable hm-testd.service
# the console is a file: no getty on it
chroot "$R" systemctl mask serial-getty@ttyS0.service getty@tty1.service
# boot faster under TCG: the journal stays in memory (flushing it to disk took
# over a minute of a loaded machine's boot), and nothing here needs the timers
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$R/etc/systemd/journald.conf.d/hm-e2e.conf"
chroot "$R" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer 2>/dev/null || true

# initramfs: root=/dev/vda must be reachable from it
# (a module may also be built in: modules.builtin)
chroot "$R" sh -c 'lsinitramfs /boot/initrd.img-*' > "$H/initramfs.list"
for m in virtio_pci virtio_blk; do
    grep -q "/$m\.ko" "$H/initramfs.list" || grep -q "/$m\.ko\$" "$R"/lib/modules/*/modules.builtin ||
        { echo "initramfs lacks $m" >&2; exit 1; }
done
EOF
chmod +x "$HOOKS/customize.sh"

log "mmdebstrap $SUITE ($MIRROR) into $TREE"
t0=$(date +%s)
# The downloaded .debs are kept in OUTDIR/debs for the next build (mmdebstrap's
# documented sync-in/sync-out pattern), then dropped from the image.
mkdir -p "$OUTDIR/debs"
# shellcheck disable=SC2016,SC2086 # $1 is for mmdebstrap's hook shell; words joined
mmdebstrap --mode=root --variant=minbase --include="$(echo $PACKAGES | tr ' ' ',')" \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $OUTDIR/debs /var/cache/apt/archives/" \
    --customize-hook="$HOOKS/customize.sh \"\$1\"" \
    --customize-hook="sync-out /var/cache/apt/archives $OUTDIR/debs" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    "$SUITE" "$TREE" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY $SUITE-security main" >&2 || die "mmdebstrap failed"
log "mmdebstrap took $(( $(date +%s) - t0 )) s"

kernel=$(printf '%s\n' "$TREE"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$TREE/boot/initrd.img-${kernel##*/vmlinuz-}
[ -s "$initrd" ] || die "no initrd next to $kernel"
cp "$kernel" "$OUTDIR/vmlinuz.tmp"
cp "$initrd" "$OUTDIR/initrd.tmp"
rm -f "$OUTDIR/root.img.tmp"
mke2fs -q -t ext4 -L hm-root -d "$TREE" "$OUTDIR/root.img.tmp" "$DISK_SIZE" >&2 ||
    die "mke2fs -d failed"
mv "$OUTDIR/vmlinuz.tmp" "$OUTDIR/vmlinuz"
mv "$OUTDIR/initrd.tmp" "$OUTDIR/initrd"
mv "$OUTDIR/root.img.tmp" "$OUTDIR/root.img"
rm -rf "$TREE" "$HOOKS"
echo "$KEY" > "$OUTDIR/image.key"
log "built $OUTDIR/root.img ($(du -h "$OUTDIR/root.img" | cut -f1) used) in $(( $(date +%s) - t0 )) s"
