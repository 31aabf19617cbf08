#!/usr/bin/env python3
"""Benchmark: virtiofs hot-mount latency under TCG, ours against a fixed
0.5 s retry loop (the reference design's guest strategy), in one run.

  add    = `hotmount add` issued -> the guest can read the directory
  remove = `hotmount remove` issued -> it returned (guest unmounted, device
           unplugged, virtiofsd stopped)
  ref    = the same device hot-plug done by hand over QMP (virtiofsd,
           chardev-add, device_add), then in the guest
           `until mount ...; do sleep 0.5; done` -> the guest can read it.
           This leaves out our CLI/HTTP/daemon overhead, so it favours the
           reference.

Median of N (default 10) each, printed with the ratio. Run on demand:
  meson test -C build --benchmark      or      python3 bench/bench_virtiofs.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import os
import statistics
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
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
N = int(os.environ.get("HM_BENCH_N", "10"))


def hm(*args):
    p = subprocess.run([HOTMOUNT] + list(args), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError("hotmount %s: %s" % (args, p.stdout + p.stderr))


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


def reference(vm, work, host, i):
    sock = os.path.join(work, "ref%d.sock" % i)
    vfs = subprocess.Popen([VIRTIOFSD, "--socket-path=" + sock, "-o", "source=" + host],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        t0 = time.monotonic()
        vm.qmp("chardev-add", {"id": "ref-chr%d" % i, "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": sock}}, "server": False}}})
        vm.qmp("device_add", {"driver": "vhost-user-fs-pci", "id": "ref-dev%d" % i,
                              "chardev": "ref-chr%d" % i, "tag": "ref%d" % i,
                              "bus": "hm-rp-31", "addr": "0"})
        rc, out = vm.sh("mkdir -p /mnt/r; until mount -t virtiofs ref%d /mnt/r 2>/dev/null;"
                        " do sleep 0.5; done; cat /mnt/r/probe" % i, timeout=60)
        t_add = time.monotonic() - t0
        if out.strip() != "probe":
            raise RuntimeError("reference: guest could not read: " + out)
        vm.sh("umount /mnt/r")
        vm.qmp("device_del", {"id": "ref-dev%d" % i})
        vm.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "ref-dev%d" % i, 30)
        vm.qmp("chardev-remove", {"id": "ref-chr%d" % i})
        return t_add
    finally:
        vfs.terminate()
        vfs.wait()


def main():
    if os.geteuid() != 0:
        print("bench_virtiofs: run as root (QEMU's C virtiofsd)")
        return 77
    image = os.environ.get("HM_E2E_IMAGE_DIR") or os.path.join(HERE, "..", "build",
                                                                "guest-image")
    build_image(image, AGENT)
    work = tempfile.mkdtemp(prefix="hm-bench-")
    inst = os.path.join(work, "inst")
    host = os.path.join(work, "host")
    os.makedirs(host)
    with open(os.path.join(host, "probe"), "w") as f:
        f.write("probe\n")
    adds, removes, refs = [], [], []
    with VM(work, image, instance_dir=inst) as vm:
        subprocess.run([HOTMOUNTD, inst], check=True)
        try:
            ours(vm, inst, host)  # warm-up: first-time module and cache effects
            for i in range(N):
                a, r = ours(vm, inst, host)
                adds.append(a)
                removes.append(r)
                refs.append(reference(vm, work, host, i))
        finally:
            subprocess.run(["pkill", "-f", "hotmountd " + inst])
    med = statistics.median
    print("virtiofs hot-mount under TCG, median of %d (one run, same VM):" % N)
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
