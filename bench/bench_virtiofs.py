#!/usr/bin/env python3
"""Benchmark: virtiofs hot-mount latency under TCG, ours against a fixed
0.5 s retry loop (the reference design's guest strategy), in one run.

  add    = `hotmount add` issued -> the guest can read the directory
  remove = `hotmount remove` issued -> it returned (guest unmounted, device
           unplugged, virtiofsd stopped)
  ref    = the same add, the same pipeline, with the guest agent restarted
           with --retry-interval 500: it retries mount(2) every 0.5 s instead
           of waiting for the device's uevents.

Median of N (default 10) each, printed with the ratio. Run on demand:
  meson test -C build --benchmark      or      python3 bench/bench_virtiofs.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_vm, hm, reps, restart_agent  # noqa: E402


def ours(vm, inst, host):
    t0 = time.monotonic()
    hm("add", inst, host, "/mnt/b")
    rc, out = vm.sh("cat /mnt/b/probe")
    t_add = time.monotonic() - t0
    if out.strip() != "probe":
        raise RuntimeError("guest could not read: " + out)
    t0 = time.monotonic()
    hm("remove", inst, "/mnt/b")
    return t_add, time.monotonic() - t0


def main():
    if os.geteuid() != 0:
        print("bench_virtiofs: run as root (QEMU's C virtiofsd)")
        return 77
    n = reps(10)
    adds, removes, refs = [], [], []
    with bench_vm("hm-bench-") as b:
        vm, inst = b.vm, b.inst
        host = os.path.join(b.work, "host")
        os.makedirs(host)
        with open(os.path.join(host, "probe"), "w") as f:
            f.write("probe\n")
        ours(vm, inst, host)  # warm-up: first-time module and cache effects
        for i in range(n):
            a, r = ours(vm, inst, host)
            adds.append(a)
            removes.append(r)
        # The same pipeline, only the guest's wait for the device differs.
        restart_agent(vm, "--retry-interval 500")
        for i in range(n):
            refs.append(ours(vm, inst, host)[0])
        restart_agent(vm, "")
    med = statistics.median
    print("virtiofs hot-mount under TCG, median of %d (one run, same VM):" % n)
    print("  add    (hotmount add -> guest reads)        %6.3f s  (min %.3f, max %.3f)"
          % (med(adds), min(adds), max(adds)))
    print("  remove (hotmount remove returns)            %6.3f s  (min %.3f, max %.3f)"
          % (med(removes), min(removes), max(removes)))
    print("  add with a fixed 0.5 s guest retry loop     %6.3f s  (min %.3f, max %.3f)"
          % (med(refs), min(refs), max(refs)))
    print("  ratio retry-loop add / our add              %6.2f x" % (med(refs) / med(adds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
