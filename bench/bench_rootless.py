#!/usr/bin/env python3
"""Benchmark: virtiofs rootless against root, in one run (issue 13).

Run as root: each round boots a guest twice, once with QEMU and hotmountd
(so virtiofsd) run by root and once by the unprivileged user of the
rootless CI pass (tests/rootless.sh --setup makes it: hmci, or
HM_CI_USER), alternating root, rootless, root, rootless... so that the
load of this shared machine falls on both alike. Per boot:

  add     `hotmount add` issued -> the guest reads a file in the directory
          (median of N, HM_BENCH_N, default 10; one warm-up first)
  remove  `hotmount remove` issued -> it returned
  write   dd if=/dev/zero of=MNT/f bs=1M count=MIB conv=fsync, guest clock
  read    dd if=MNT/f of=/dev/null bs=1M after dropping the guest's caches
          (MIB = HM_BENCH_MIB, default 256; best of 3 each)

Printed: per mode the median over rounds of each figure, the ratio
rootless/root, and every round's figures (the spread is the noise).
Rounds: HM_BENCH_ROUNDS (default 2). Under TCG the guest's CPU bounds
throughput, so these compare the two modes here, not what KVM gives.

  meson test -C build --benchmark rootless   or   sudo python3 bench/bench_rootless.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def one(n, mib):
    """One boot as the current user; prints one JSON line of figures."""
    from common import bench_vm, hm, measure_rw
    from bench_virtiofs import ours  # add -> the guest reads; remove
    adds, removes = [], []
    with bench_vm("hm-benchrl-") as b:
        vm, inst = b.vm, b.inst
        host = os.path.join(b.work, "host")
        os.makedirs(host)
        with open(os.path.join(host, "probe"), "w") as f:
            f.write("probe\n")
        for i in range(n + 1):
            a, r = ours(vm, inst, host)
            if i:  # the first is the warm-up
                adds.append(a)
                removes.append(r)
        hm("add", inst, host, "/mnt/rw", "--writable")
        procs = [l for l in subprocess.run(["pgrep", "-a", "-u", str(os.geteuid()), "virtiofsd"],
                                           capture_output=True, text=True).stdout.splitlines()
                 if b.work in l]
        w, r = measure_rw(vm, "/mnt/rw", mib, 3)
        hm("remove", inst, "/mnt/rw")
    print(json.dumps({"uid": os.geteuid(), "add": statistics.median(adds),
                      "remove": statistics.median(removes), "write": w, "read": r,
                      "virtiofsd_as_user": bool(procs)}))
    return 0


def run_as(user, image_dir, n, mib):
    env = dict(os.environ)
    env["HM_E2E_IMAGE_DIR"] = image_dir
    cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--one", str(n), str(mib)]
    if user:
        env.pop("XDG_RUNTIME_DIR", None)
        keep = ["%s=%s" % (k, env[k]) for k in ("HOTMOUNT_BIN", "HM_AGENT_BIN",
                                                "HM_E2E_IMAGE_DIR", "PATH") if k in env]
        cmd = ["runuser", "-u", user, "--", "env"] + keep + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError("%s run failed (%d): %s%s" % (user or "root", p.returncode,
                                                         p.stdout[-2000:], p.stderr[-2000:]))
    return json.loads(lines[-1])


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        return one(int(sys.argv[2]), int(sys.argv[3]))
    if os.geteuid() != 0:
        print("bench_rootless: run as root (it runs each round as root and as the "
              "rootless CI user)")
        return 77
    from common import HOTMOUNT
    n = int(os.environ.get("HM_BENCH_N", "10"))
    mib = int(os.environ.get("HM_BENCH_MIB", "256"))
    rounds = int(os.environ.get("HM_BENCH_ROUNDS", "2"))
    build = os.path.dirname(os.path.dirname(os.path.abspath(HOTMOUNT)))
    setup = subprocess.run(["bash", os.path.join(HERE, "..", "tests", "rootless.sh"), "--setup",
                            build], capture_output=True, text=True)
    if setup.returncode:
        print("bench_rootless: tests/rootless.sh --setup failed: " + setup.stderr)
        return 1
    user, user_images = setup.stdout.split()
    # the image tests/rootless.sh built (or found) for the e2e suites
    root_images = os.environ.get("HM_E2E_IMAGE_DIR") or os.path.join(
        build, "tests", "e2e", "image-cache")
    res = {"root": [], "rootless": []}
    for i in range(rounds):
        res["root"].append(run_as(None, root_images, n, mib))
        res["rootless"].append(run_as(user, user_images, n, mib))
    bad = [r for r in res["rootless"] if r["uid"] == 0 or not r["virtiofsd_as_user"]]
    if bad:
        print("bench_rootless: the rootless runs did not run as %s with its own virtiofsd: %s"
              % (user, bad))
        return 1
    med = {m: {k: statistics.median(r[k] for r in res[m])
               for k in ("add", "remove", "write", "read")} for m in res}
    print("virtiofs, root vs rootless (user %s), TCG; %d rounds alternating, each one boot "
          "per mode; add/remove median of %d, %d MiB dd best of 3:" % (user, rounds, n, mib))
    print("  %-9s %9s %9s %12s %12s" % ("mode", "add", "remove", "write", "read"))
    for m in ("root", "rootless"):
        f = med[m]
        print("  %-9s %7.3f s %7.3f s %6.1f MiB/s %6.1f MiB/s"
              % (m, f["add"], f["remove"], f["write"], f["read"]))
    q = {k: med["rootless"][k] / med["root"][k] for k in med["root"]}
    print("  rootless/root: add %.2fx  remove %.2fx  write %.2fx  read %.2fx"
          % (q["add"], q["remove"], q["write"], q["read"]))
    print("  every round (add s, remove s, write MiB/s, read MiB/s):")
    for m in ("root", "rootless"):
        for i, r in enumerate(res[m]):
            print("    %-9s %d: %.3f %.3f %.1f %.1f" % (m, i + 1, r["add"], r["remove"],
                                                     r["write"], r["read"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
