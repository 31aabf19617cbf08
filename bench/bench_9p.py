#!/usr/bin/env python3
"""Benchmark: sequential read and write of a 64 MiB file through a hot 9p
mount (virtserialport + diod + the agent's relay) next to a boot-time
virtio-9p-pci mount (-virtfs local,security_model=none) of the same
directory, in the same VM, in one run; ratio hot/boot. TCG: the figures say
how the two compare here, not what KVM gives.

  write = dd if=/dev/zero of=MNT/f bs=1M count=64 conv=fsync
  read  = dd if=MNT/f of=/dev/null bs=1M, after dropping the guest's caches

Best of N (HM_BENCH_N, default 3) each. bench_throughput.py has the same
two next to virtiofs and reverse-sshfs; bench_9p_pieces.py takes the hot
path apart. Run on demand:
  meson test -C build --benchmark      or      python3 bench/bench_9p.py
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
        print("bench_9p: run as root (diod's read-only bind, QEMU's virtfs)")
        return 77
    n = reps(3)
    share = tempfile.mkdtemp(prefix="hm-bench9p-share-")
    try:
        with bench_vm("hm-bench9p-", virtfs_share=share) as b:
            mount_boot_9p(b.vm)
            t0 = time.monotonic()
            hm("add", b.inst, share, "/mnt/hot", "--type", "9p", "--writable")
            t_add = time.monotonic() - t0
            boot_w, boot_r = measure_rw(b.vm, "/mnt/boot", MIB, n)
            hot_w, hot_r = measure_rw(b.vm, "/mnt/hot", MIB, n)
            hm("remove", b.inst, "/mnt/hot")
    finally:
        shutil.rmtree(share, ignore_errors=True)
    print("9p under TCG, %d MiB sequential, best of %d (one run, same VM, same directory):"
          % (MIB, n))
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
