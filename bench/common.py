"""Shared setup of the benchmarks in bench/: the product's binaries, one
guest (tests/e2e/vm.py) with hotmountd serving its instance, guest-timed
commands and the sequential read/write measurement.

Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR);
HM_BENCH_N overrides each benchmark's repetition count.
"""

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "tests", "e2e")
os.environ.setdefault("HOTMOUNT_BIN", os.path.join(HERE, "..", "build", "cli", "hotmount"))
os.environ.setdefault("HM_AGENT_BIN", os.path.join(os.path.dirname(os.environ["HOTMOUNT_BIN"]),
                                                   "agent", "hotmount-agent"))
sys.path.insert(0, E2E)
import hmtest  # noqa: E402
from vm import VM, build_image, free_tcp_port  # noqa: E402,F401

HOTMOUNT = os.environ["HOTMOUNT_BIN"]
AGENT = os.environ["HM_AGENT_BIN"]


def reps(default):
    return int(os.environ.get("HM_BENCH_N", str(default)))


def hm(*args):
    rc, out = hmtest.hm(*args, timeout=300)
    if rc:
        raise RuntimeError("hotmount %s: %s" % (" ".join(args), out))
    return out


def timed_cpu(vm, cmd, timeout=600):
    """(seconds, guest CPU seconds) of cmd: the guest's own clock (the test
    channel's latency is not counted) and its /proc/stat, busy time summed
    over the vCPUs (user, system, interrupts)."""
    rc, out = vm.sh("s0=$(head -1 /proc/stat); a=$(cat /proc/uptime); %s >/dev/null 2>&1; r=$?; "
                    "b=$(cat /proc/uptime); s1=$(head -1 /proc/stat); "
                    "echo \"$r ${a%%%% *} ${b%%%% *} | $s0 | $s1\"" % cmd, timeout=timeout)
    m = re.search(r"(\d+) ([\d.]+) ([\d.]+) \| (cpu .*) \| (cpu .*)$", out.strip())
    if rc != 0 or not m or m.group(1) != "0":
        raise RuntimeError("guest: %s: %s" % (cmd, out))

    def busy(line):
        v = [int(x) for x in line.split()[1:]]
        return sum(v) - v[3] - v[4]  # all but idle and iowait, in USER_HZ (100)

    return (float(m.group(3)) - float(m.group(2)),
            (busy(m.group(5)) - busy(m.group(4))) / 100.0)


def timed(vm, cmd, timeout=600):
    """Seconds the guest took for cmd (its own clock)."""
    return timed_cpu(vm, cmd, timeout)[0]


def measure_rw(vm, mnt, mib=64, n=3, cpu=False):
    """Best-of-n sequential write and read of a mib MiB file in the guest
    directory mnt, in MiB/s:
      write = dd if=/dev/zero of=MNT/f bs=1M count=MIB conv=fsync
      read  = dd if=MNT/f of=/dev/null bs=1M, after dropping the guest's caches
    The file is removed afterwards. cpu: also the guest CPU seconds of the
    fastest write and read."""
    w = min(timed_cpu(vm, "dd if=/dev/zero of=%s/f bs=1M count=%d conv=fsync" % (mnt, mib))
            for _ in range(n))
    r = []
    for _ in range(n):
        vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
        r.append(timed_cpu(vm, "dd if=%s/f of=/dev/null bs=1M" % mnt))
    vm.sh("rm -f %s/f" % mnt)
    r = min(r)
    return (mib / w[0], mib / r[0], w[1], r[1]) if cpu else (mib / w[0], mib / r[0])


def image_with_virtio_9p(image, work):
    """A copy of the e2e image whose initramfs also carries 9pnet_virtio (the
    e2e image ships only the trans=fd transport), as /9pnet_virtio.ko: the
    module is taken from the kernel .deb kept in the image dir and appended
    as a second cpio archive (the kernel unpacks concatenated archives)."""
    out = os.path.join(work, "image")
    os.makedirs(out)
    for f in ("vmlinuz", "ssh"):
        src = os.path.join(image, f)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(out, f))
    deb = glob.glob(os.path.join(image, "linux-image-*.deb"))[0]
    kx = os.path.join(work, "kx")
    subprocess.run(["dpkg", "-x", deb, kx], check=True)
    ko = glob.glob(os.path.join(kx, "lib/modules/*/kernel/net/9p/9pnet_virtio.ko*"))[0]
    root = os.path.join(work, "extra")
    os.makedirs(root)
    shutil.copy(ko, os.path.join(root, "9pnet_virtio.ko"))
    cpio = subprocess.run("cd %s && echo 9pnet_virtio.ko | cpio -o -H newc | gzip" % root,
                          shell=True, check=True, capture_output=True).stdout
    with open(os.path.join(out, "initramfs.cpio.gz"), "wb") as f:
        f.write(open(os.path.join(image, "initramfs.cpio.gz"), "rb").read())
        f.write(cpio)
    shutil.rmtree(kx)
    shutil.rmtree(root)
    return out


def restart_agent(vm, args):
    """Restarts the guest agent with these options (the image's runner reads
    /etc/hm-agent-args at each start); the daemon reconnects on its next
    request. Mounts the old agent relayed (9p) break."""
    if args:
        vm.check("echo '%s' > /etc/hm-agent-args" % args)
    else:
        vm.check("rm -f /etc/hm-agent-args")
    vm.check("killall hotmount-agent; true")
    time.sleep(2.0)  # the guest's respawn loop waits 1 s


class Bench:
    """What a benchmark body gets: vm, inst (instance dir), work (scratch
    dir, removed afterwards), images (the e2e image dir), ssh_port and
    known_hosts/ssh material when booted with ssh=True."""


def mount_boot_9p(vm, tag="boot9p", mnt="/mnt/boot", msize=262144, cache="mmap"):
    """Mounts the boot-time virtio-9p-pci share (virtfs_share) in the guest."""
    vm.check("lsmod | grep -q '^9pnet_virtio' || insmod /9pnet_virtio.ko; mkdir -p %s && "
             "mount -t 9p -o trans=virtio,version=9p2000.L,msize=%d,cache=%s %s %s"
             % (mnt, msize, cache, tag, mnt))


@contextlib.contextmanager
def bench_vm(prefix, virtfs_share=None, ssh=False, extra_args=None, daemon=True,
             qemu_args_extra=None):
    """One guest booted with `hotmount qemu-args`, hotmountd serving it.

    virtfs_share: a host directory also given to QEMU at boot as a
    virtio-9p-pci share (-virtfs, mount tag boot9p; mount it with
    mount_boot_9p); the image then carries 9pnet_virtio.
    ssh: forward a free loopback port to the guest's dropbear and start
    hotmountd with the --ssh-* options reverse-sshfs needs.
    qemu_args_extra: more options for `hotmount qemu-args` (--9p-slots ...).
    Runs as any user; the benchmarks that need root (diod's bind, -virtfs
    with passthrough) check it themselves."""
    images = hmtest.image_dir() if os.environ.get("HM_E2E_IMAGE_DIR") else os.path.join(
        HERE, "..", "build", "guest-image")
    build_image(images, AGENT)
    b = Bench()
    b.images = images
    b.work = tempfile.mkdtemp(prefix=prefix)
    b.inst = os.path.join(b.work, "inst")
    os.environ["HOTMOUNT_HOME"] = b.work
    image = images
    extra = list(extra_args or [])
    if virtfs_share:
        image = image_with_virtio_9p(images, b.work)
        extra += ["-virtfs", "local,path=%s,mount_tag=boot9p,security_model=none" % virtfs_share]
    daemon_args = []
    b.ssh_port = None
    if ssh:
        b.ssh_port = free_tcp_port()
        m = hmtest.ssh_material(images)
        b.known_hosts = hmtest.write_known_hosts(os.path.join(b.work, "known_hosts"),
                                                 b.ssh_port, m["host_key_line"])
        daemon_args = ["--ssh-host", "127.0.0.1", "--ssh-port", str(b.ssh_port),
                       "--ssh-identity", m["client_key"], "--ssh-known-hosts", b.known_hosts]
    try:
        with VM(b.work, image, instance_dir=b.inst, extra_args=extra,
                ssh_port=b.ssh_port, qemu_args_extra=qemu_args_extra) as vm:
            b.vm = vm
            if daemon:
                d = hmtest.start_daemon(b.inst, *daemon_args)
                if d.returncode:
                    raise RuntimeError("hotmountd: " + d.stdout + d.stderr)
            try:
                yield b
            finally:
                hmtest.stop_daemon(b.inst)
    finally:
        hmtest.kill_virtiofsd(b.work)
        if os.environ.get("HM_E2E_KEEP"):
            print("# kept " + b.work)
        else:
            shutil.rmtree(b.work, ignore_errors=True)
