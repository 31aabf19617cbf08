#!/usr/bin/env python3
"""e2e-daemon: hotmountd under a slow guest and under load, in a real guest.

1. The guest agent is restarted with --delay-mount (it waits before carrying
   out each mount): while an add waits on it, `hotmount list --json` and
   GET /v1/status still answer, a second add on the same mount point is
   refused (exit 5, HTTP 409), and adds on different mount points run side
   by side. Latencies are printed as TAP comments; speed targets belong to
   benchmarks, so the assertions are only about what answered while the add
   was still pending.
2. 8 concurrent clients do 200 add/remove/list operations on 6 mount points
   over the HTTP API, so they collide; only 409 (busy, in use) and 404
   (nothing mounted there at that moment) are expected failures. Afterwards
   the registry must match the guest, and once everything is removed nothing
   may be left on the host, in QEMU or in the guest.

One VM for everything. Prints TAP. Environment: see hmtest.py.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hmtest import HOTMOUNT, api, hm, run  # noqa: E402

DELAY_MS = 3000
LIST_ROUNDS = 10
CLIENTS = 8
OPS = 200
POOL = 6
STATES = ("attaching", "mounted", "detaching")  # broken is an error here
SEED = int(os.environ.get("HM_E2E_SEED", "1"))


def ms(seconds):
    return seconds * 1000.0


def figures(name, lat):
    """One TAP comment with the latencies (seconds) of one kind of request."""
    worst = max(lat)
    return ("%s: median %.0f ms, max %.0f ms (n=%d); under 100 ms: %s"
            % (name, ms(statistics.median(lat)), ms(worst), len(lat),
               "yes" if worst < 0.1 else "no"))


def find(mounts, mount_point):
    for m in mounts if isinstance(mounts, list) else []:
        if m.get("mountPoint") == mount_point:
            return m
    return None


def start_add(inst, host, mount_point):
    return subprocess.Popen([HOTMOUNT, "add", inst, host, mount_point],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_waiting_on_guest(c, add, mount_point, timeout=60):
    """Waits until the pending add has its device plugged in (the entry has a
    tag) and is still attaching, i.e. it now waits on the guest agent.
    Returns the entry, or None if the add ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and add.poll() is None:
        st, body = api(c.inst, "GET", "/v1/mounts")
        m = find(body, mount_point) if st == 200 else None
        if m and m.get("state") == "attaching" and m.get("tag"):
            return m
        time.sleep(0.05)
    return None


def case_slow_guest(c):
    t = c.t
    host = os.path.join(c.work, "slow")
    os.makedirs(host)
    with open(os.path.join(host, "f.txt"), "w") as f:
        f.write("slow\n")
    t.ok(c.restart_agent("--delay-mount %d" % DELAY_MS),
         "agent restarted with --delay-mount %d" % DELAY_MS, c.agent())
    try:
        slow_guest_list(c, host)
        slow_guest_side_by_side(c, host)
    finally:
        t.ok(c.restart_agent(""), "agent restarted without options", c.agent())


def slow_guest_list(c, host):
    t = c.t
    t0 = time.monotonic()
    add = start_add(c.inst, host, "/mnt/slow")
    try:
        m = wait_waiting_on_guest(c, add, "/mnt/slow")
        t.ok(m is not None, "pending add reaches the guest wait (attaching, device plugged)",
             add.communicate(timeout=120)[0] if m is None else "")
        if m is None:
            return
        cli, mounts, status = [], [], []
        problems = []
        for i in range(LIST_ROUNDS):
            s = time.monotonic()
            rc, out = hm("list", c.inst, "--json")
            cli.append(time.monotonic() - s)
            pending = add.poll() is None
            try:
                entry = find(json.loads(out), "/mnt/slow") if rc == 0 else None
            except ValueError:
                entry = None
            if rc != 0 or not pending or not entry or entry.get("state") != "attaching":
                problems.append("cli list %d: rc %d, add pending %s, entry %s, out %s"
                                % (i, rc, pending, entry, out[:300]))

            s = time.monotonic()
            st, body = api(c.inst, "GET", "/v1/mounts")
            mounts.append(time.monotonic() - s)
            pending = add.poll() is None
            entry = find(body, "/mnt/slow") if st == 200 else None
            if st != 200 or not pending or not entry or entry.get("state") != "attaching":
                problems.append("GET /v1/mounts %d: %d, add pending %s, entry %s"
                                % (i, st, pending, entry))

            s = time.monotonic()
            st, body = api(c.inst, "GET", "/v1/status")
            status.append(time.monotonic() - s)
            pending = add.poll() is None
            if st != 200 or not pending:
                problems.append("GET /v1/status %d: %d, add pending %s, body %s"
                                % (i, st, pending, str(body)[:300]))
        t.note(figures("list while add pending (hotmount list --json, whole CLI run)", cli))
        t.note(figures("list while add pending (GET /v1/mounts)", mounts))
        t.note(figures("status while add pending (GET /v1/status)", status))
        t.ok(not problems, "%d lists and statuses answered while the add was pending, "
             "showing it attaching" % (3 * LIST_ROUNDS), "\n".join(problems))

        s = time.monotonic()
        rc, out = hm("add", c.inst, host, "/mnt/slow")
        took = time.monotonic() - s
        pending = add.poll() is None
        t.note("second add on the same mount point answered in %.0f ms" % ms(took))
        t.ok(rc == 5 and pending, "second add on the pending mount point: exit 5 while the "
             "first is pending", "rc %d, first pending %s: %s" % (rc, pending, out))
        st, body = api(c.inst, "POST", "/v1/mounts",
                       {"hostPath": host, "mountPoint": "/mnt/slow"})
        pending = add.poll() is None
        t.ok(st == 409 and pending, "same over HTTP: 409", "%d, pending %s: %s"
             % (st, pending, body))

        out, _ = add.communicate(timeout=120)
        t.note("the slow add took %.2f s (agent delay %.1f s)"
               % (time.monotonic() - t0, DELAY_MS / 1000))
        t.ok(add.returncode == 0, "the slow add succeeds", out)
    finally:
        if add.poll() is None:
            add.kill()
            add.wait()
    lst = c.list_json()
    m = find(lst, "/mnt/slow")
    rc, out = c.guest("cat /mnt/slow/f.txt")
    t.ok(m and m["state"] == "mounted" and out.strip() == "slow",
         "listed mounted; the guest reads it", "%s %s" % (lst, out))
    rc, out = hm("remove", c.inst, "/mnt/slow")
    t.ok(rc == 0, "remove it", out)


def slow_guest_side_by_side(c, host):
    t = c.t
    t0 = time.monotonic()
    adds = [start_add(c.inst, host, mp) for mp in ("/mnt/side/a", "/mnt/side/b")]
    outs = [a.communicate(timeout=120)[0] for a in adds]
    total = time.monotonic() - t0
    t.note("two adds on different mount points, side by side: %.2f s in all "
           "(agent delay %.1f s each, 2x = %.1f s)" % (total, DELAY_MS / 1000,
                                                       2 * DELAY_MS / 1000))
    t.ok(all(a.returncode == 0 for a in adds), "both adds on different mount points succeed",
         "\n".join(outs))
    rc, out = c.guest("cat /mnt/side/a/f.txt /mnt/side/b/f.txt")
    t.ok(out.split() == ["slow", "slow"], "the guest reads both", out)
    res = [hm("remove", c.inst, mp) for mp in ("/mnt/side/a", "/mnt/side/b")]
    left = c.leftovers()
    t.ok(all(r[0] == 0 for r in res) and not left, "both removed, nothing left",
         "%s %s" % (res, left))


class Load:
    """The clients and their results (gathered under a lock).

    Each client does its share of the operations one after another, with a
    short pause between them and a longer back-off after a 409, as a real
    client would: without it, busy answers (a few ms) would use up all the
    operations while the first adds (a second each under TCG) are still
    running, and nothing would be removed or added again."""

    def __init__(self, c, hosts):
        self.c, self.hosts = c, hosts
        self.lock = threading.Lock()
        self.results = []  # (kind, mount point or None, status, seconds, body on error)

    def client(self, idx):
        rng = random.Random(SEED * 1000 + idx)
        share = OPS // CLIENTS + (1 if idx < OPS % CLIENTS else 0)
        for _ in range(share):
            time.sleep(rng.uniform(0, 0.2))
            i = rng.randrange(POOL)
            mp = "/mnt/load/%d" % i
            r = rng.random()
            kind = "add" if r < 0.45 else "remove" if r < 0.8 else "list"
            s = time.monotonic()
            try:
                if kind == "add":
                    st, body = api(self.c.inst, "POST", "/v1/mounts",
                                   {"hostPath": self.hosts[i], "mountPoint": mp})
                    good = st in (201, 409)
                elif kind == "remove":
                    st, body = api(self.c.inst, "DELETE", "/v1/mounts", {"mountPoint": mp})
                    good = st in (200, 404, 409)
                else:
                    mp = None
                    st, body = api(self.c.inst, "GET", "/v1/mounts")
                    # a snapshot: each mount point once, in a known state
                    good = (st == 200 and isinstance(body, list) and
                            len({m.get("mountPoint") for m in body}) == len(body) and
                            all(m.get("state") in STATES for m in body))
            except Exception as ex:  # a dropped connection is an error too
                st, body, good = -1, repr(ex), False
            took = time.monotonic() - s
            with self.lock:
                self.results.append((kind, mp, st, took, None if good else body))
            if st == 409:
                time.sleep(rng.uniform(0.2, 0.6))


def case_load(c):
    t = c.t
    hosts = []
    for i in range(POOL):
        d = os.path.join(c.work, "load%d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "id"), "w") as f:
            f.write("%d\n" % i)
        hosts.append(d)
    load = Load(c, hosts)
    threads = [threading.Thread(target=load.client, args=(i,)) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    res = load.results
    ok = [r for r in res if r[4] is None and r[2] in (200, 201)]
    busy = [r for r in res if r[2] == 409]
    gone = [r for r in res if r[2] == 404]
    other = [r for r in res if r[4] is not None]
    t.note("load: %d clients, %d ops (seed %d) in %.1f s = %.1f ops/s: %d ok, %d 409, %d 404, "
           "%d other errors" % (CLIENTS, len(res), SEED, wall, len(res) / wall, len(ok),
                                len(busy), len(gone), len(other)))
    for kind in ("add", "remove", "list"):
        k = [r for r in res if r[0] == kind]
        kok = [r for r in k if r[2] in (200, 201)]
        if k:
            t.note("  %-6s %3d: %3d ok, %3d 409, %3d 404; ok median %.0f ms, max %.0f ms"
                   % (kind, len(k), len(kok), len([r for r in k if r[2] == 409]),
                      len([r for r in k if r[2] == 404]),
                      ms(statistics.median([r[3] for r in kok])) if kok else 0,
                      ms(max(r[3] for r in kok)) if kok else 0))
    t.ok(len(res) == OPS, "%d operations done" % OPS, len(res))
    t.ok(not other, "no errors beyond 409 and 404",
         "\n".join("%s %s: %s %s" % (r[0], r[1], r[2], str(r[4])[:300]) for r in other[:20]))
    t.ok(len([r for r in ok if r[0] == "add"]) > 0 and
         len([r for r in ok if r[0] == "remove"]) > 0,
         "adds and removes succeeded under contention")

    # What the daemon says must be what the guest has.
    lst = c.list_json()
    listed = sorted(m["mountPoint"] for m in lst if m["state"] == "mounted")
    in_guest = sorted(m for m in c.guest_mounts() if m.startswith("/mnt/load/"))
    t.ok(listed == in_guest and len(listed) == len(lst),
         "after the load the registry matches the guest (%d mounted, none broken or pending)"
         % len(listed), "registry %s\nguest %s" % (lst, in_guest))
    rc, out = c.guest("for f in %s; do cat $f/id; done" % " ".join(listed)) if listed else (0, "")
    t.ok(out.split() == [mp.rsplit("/", 1)[1] for mp in listed],
         "each mounted one serves its own directory", out)

    # Remove everything; a remove still running (it should not be) gets a few
    # more tries.
    errs = []
    for m in lst:
        for _ in range(20):
            st, body = api(c.inst, "DELETE", "/v1/mounts", {"mountPoint": m["mountPoint"]})
            if st != 409:
                break
            time.sleep(0.5)
        if st != 200:
            errs.append("%s: %d %s" % (m["mountPoint"], st, body))
    t.ok(not errs, "remove the %d left" % len(lst), "\n".join(errs))
    left = c.leftovers()
    gm = [m for m in c.guest_mounts() if m.startswith("/mnt/load")]
    pci = c.pci_devices_behind_ports()
    t.ok(not left and not gm and pci == 0, "zero leaks after the load test",
         "%s; guest mounts %s; PCI devices behind root ports %d" % (left, gm, pci))


if __name__ == "__main__":
    sys.exit(run("hm-e2e-d-", [case_slow_guest, case_load]))
