#!/usr/bin/env python3
"""Benchmark: sequential read and write of a 64 MiB file through a hot 9p
mount (virtserialport + diod + the agent's relay) next to a boot-time
virtio-9p-pci mount (-virtfs local,security_model=none) of the same
directory, in the same VM, in one run; ratio hot/boot. TCG: the figures say
how the two compare here, not what KVM gives.

  write = dd if=/dev/zero of=MNT/f bs=1M count=64 conv=fsync
  read  = dd if=MNT/f of=/dev/null bs=1M, after dropping the guest's caches

Best of N (default 3) each. Run on demand:
  meson test -C build --benchmark      or      python3 bench/bench_9p.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from vm import VM, build_image  # noqa: E402

HOTMOUNT = os.environ.get("HOTMOUNT_BIN", os.path.join(HERE, "..", "build", "cli", "hotmount"))
HOTMOUNTD = os.path.join(os.path.dirname(HOTMOUNT), "hotmountd")
AGENT = os.environ.get("HM_AGENT_BIN",
                       os.path.join(os.path.dirname(HOTMOUNT), "agent", "hotmount-agent"))
N = int(os.environ.get("HM_BENCH_N", "3"))
MIB = 64


def hm(*args):
    p = subprocess.run([HOTMOUNT] + list(args), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError("hotmount %s: %s" % (args, p.stdout + p.stderr))


def timed(vm, cmd):
    """Seconds the guest took for cmd (its own clock, so the test channel's
    latency is not counted)."""
    rc, out = vm.sh("a=$(cat /proc/uptime); %s >/dev/null 2>&1; r=$?; b=$(cat /proc/uptime); "
                    "echo $r ${a%%%% *} ${b%%%% *}" % cmd, timeout=600)
    m = re.search(r"(\d+) ([\d.]+) ([\d.]+)\s*$", out)
    if rc != 0 or not m or m.group(1) != "0":
        raise RuntimeError("guest: %s: %s" % (cmd, out))
    return float(m.group(3)) - float(m.group(2))


def measure(vm, mnt):
    w = min(timed(vm, "dd if=/dev/zero of=%s/f bs=1M count=%d conv=fsync" % (mnt, MIB))
            for _ in range(N))
    r = []
    for _ in range(N):
        vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
        r.append(timed(vm, "dd if=%s/f of=/dev/null bs=1M" % mnt))
    vm.sh("rm -f %s/f" % mnt)
    return MIB / w, MIB / min(r)


def with_virtio_9p(image, work):
    """A copy of the e2e image whose initramfs also carries 9pnet_virtio (the
    e2e image ships only the trans=fd transport): the module is taken from
    the kernel .deb kept in the image dir and appended as a second cpio
    archive (the kernel unpacks concatenated archives)."""
    out = os.path.join(work, "image")
    os.makedirs(out)
    shutil.copy(os.path.join(image, "vmlinuz"), out)
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
    return out


def main():
    if os.geteuid() != 0:
        print("bench_9p: run as root (diod's read-only bind, QEMU's virtfs)")
        return 77
    image = os.environ.get("HM_E2E_IMAGE_DIR") or os.path.join(HERE, "..", "build",
                                                                "guest-image")
    build_image(image, AGENT)
    work = tempfile.mkdtemp(prefix="hm-bench9p-")
    inst = os.path.join(work, "inst")
    share = os.path.join(work, "share")
    os.makedirs(share)
    image = with_virtio_9p(image, work)
    extra = ["-virtfs", "local,path=%s,mount_tag=boot9p,security_model=none" % share]
    with VM(work, image, instance_dir=inst, extra_args=extra) as vm:
        subprocess.run([HOTMOUNTD, inst], check=True)
        try:
            vm.check("insmod /9pnet_virtio.ko; mkdir -p /mnt/boot && "
                     "mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap "
                     "boot9p /mnt/boot")
            t0 = time.monotonic()
            hm("add", inst, share, "/mnt/hot", "--type", "9p", "--writable")
            t_add = time.monotonic() - t0
            boot_w, boot_r = measure(vm, "/mnt/boot")
            hot_w, hot_r = measure(vm, "/mnt/hot")
            hm("remove", inst, "/mnt/hot")
        finally:
            subprocess.run(["pkill", "-f", "hotmountd " + inst])
    print("9p under TCG, %d MiB sequential, best of %d (one run, same VM, same directory):"
          % (MIB, N))
    print("  hot 9p (virtserialport + diod + relay), msize 65536: write %7.1f MiB/s  "
          "read %7.1f MiB/s" % (hot_w, hot_r))
    print("  boot-time virtio-9p-pci (-virtfs), msize 262144:     write %7.1f MiB/s  "
          "read %7.1f MiB/s" % (boot_w, boot_r))
    print("  ratio hot / boot:                                    write %7.2f x       "
          "read %7.2f x" % (hot_w / boot_w, hot_r / boot_r))
    print("  hot 9p add (hotmount add returns, guest mounted):   %.2f s" % t_add)
    return 0


if __name__ == "__main__":
    sys.exit(main())
