#!/usr/bin/env python3
"""Benchmark: sequential throughput of every transport, one table.

One guest under TCG, one host directory, mounted writable four ways at once:
  virtiofs        hotmount add --type virtiofs (vhost-user-fs, virtiofsd)
  9p (hot)        hotmount add --type 9p (virtserialport + diod + agent relay)
  reverse-sshfs   hotmount add --type reverse-sshfs (guest sshfs -> host sftp)
  9p (boot-time)  -virtfs at boot (virtio-9p-pci, QEMU's own 9p server),
                  msize 262144, cache=mmap: the reference issue 4 asks for
For each: 64 MiB written with dd conv=fsync, read back with dd after the
guest dropped its caches; best of N (HM_BENCH_N, default 3), MiB/s. Ratios:
hot 9p / boot-time 9p, and each / virtiofs. The figures say how the
transports compare here (TCG, shared cores), not what KVM gives.

Run on demand:  meson test -C build --benchmark   or   python3 bench/bench_throughput.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_vm, hm, measure_rw, mount_boot_9p, reps  # noqa: E402

MIB = 64


def main():
    if os.geteuid() != 0:
        print("bench_throughput: run as root (virtiofsd, diod's bind, -virtfs)")
        return 77
    n = reps(3)
    share = os.environ.get("HM_BENCH_SHARE")  # default: a fresh directory in the work dir
    rows = []
    share = share or tempfile.mkdtemp(prefix="hm-bench-share-")
    try:
        with bench_vm("hm-benchtp-", virtfs_share=share, ssh=True) as b:
            vm, inst = b.vm, b.inst
            mount_boot_9p(vm)
            hot = [("virtiofs", "virtiofs", "/mnt/vfs"), ("9p (hot)", "9p", "/mnt/hot9p"),
                   ("reverse-sshfs", "reverse-sshfs", "/mnt/sshfs")]
            adds = {}
            for name, typ, mnt in hot:
                t0 = time.monotonic()
                hm("add", inst, share, mnt, "--type", typ, "--writable")
                adds[name] = time.monotonic() - t0
            for name, typ, mnt in hot:
                rows.append((name, mnt) + measure_rw(vm, mnt, MIB, n, cpu=True))
            rows.append(("9p (boot-time)", "/mnt/boot") +
                        measure_rw(vm, "/mnt/boot", MIB, n, cpu=True))
            opts = {}
            for name, mnt in ((r[0], r[1]) for r in rows):
                line = vm.check("grep ' %s ' /proc/mounts" % mnt).split()
                opts[name] = "%s %s" % (line[2], line[3])
            for name, typ, mnt in hot:
                hm("remove", inst, mnt)
    finally:
        if not os.environ.get("HM_BENCH_SHARE"):
            shutil.rmtree(share, ignore_errors=True)
    by = {r[0]: r for r in rows}
    vfs = by["virtiofs"]
    print("Sequential throughput under TCG, %d MiB, best of %d; one VM, one host directory, "
          "all mounted writable:" % (MIB, n))
    print("  %-15s %11s %11s %9s %9s %9s %9s" % ("transport", "write", "read", "write/vfs",
                                                  "read/vfs", "wr CPU", "rd CPU"))
    for name, mnt, w, r, cw, cr in rows:
        print("  %-15s %6.1f MiB/s %6.1f MiB/s %8.2fx %8.2fx %7.2f s %7.2f s"
              % (name, w, r, w / vfs[2], r / vfs[3], cw, cr))
    print("  (CPU: guest CPU seconds, all vCPUs, during the fastest 64 MiB write / read)")
    hot9, boot9 = by["9p (hot)"], by["9p (boot-time)"]
    print("  ratio hot 9p / boot-time 9p:  write %.2fx  read %.2fx"
          % (hot9[2] / boot9[2], hot9[3] / boot9[3]))
    print("  hotmount add took: " + ", ".join("%s %.2f s" % kv for kv in adds.items()))
    print("  guest mounts:")
    for name in opts:
        print("    %-15s %s" % (name, opts[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
