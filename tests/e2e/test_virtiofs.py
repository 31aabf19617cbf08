#!/usr/bin/env python3
"""e2e-virtiofs: the product, end to end, checked from inside a real guest.

One VM is booted with `hotmount qemu-args`, `hotmountd` serves it, and every
step goes through the `hotmount` CLI. What the guest sees is read through the
test channel (a shell on ttyS1), never through our own agent; what QEMU holds
is read through the test's own QMP monitor. Prints TAP.

Environment: HOTMOUNT_BIN (the CLI; hotmountd is next to it), HM_AGENT_BIN,
HM_E2E_IMAGE_DIR (see vm.py), HM_E2E_KEEP=1 keeps the work dir.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hmtest import (HOTMOUNT, hm, ownership_checks, rootless, run, start_daemon,  # noqa: E402
                    subid_base)


def case_readonly(c, host):
    t = c.t
    with open(os.path.join(host, "hello.txt"), "w") as f:
        f.write("hello from the host\n")
    t0 = time.monotonic()
    rc, out = hm("add", c.inst, host, "/mnt/ro")
    t.note("add took %.2f s" % (time.monotonic() - t0))
    t.ok(rc == 0, "add read-only virtiofs mount", out)
    rc, out = c.guest("cat /mnt/ro/hello.txt")
    t.ok(rc == 0 and out.strip() == "hello from the host", "guest reads the host file", out)
    rc, out = c.guest("grep ' /mnt/ro ' /proc/mounts")
    t.ok(rc == 0 and "virtiofs" in out and " ro," in out, "guest sees a ro virtiofs mount",
         out)
    rc, out = c.guest("echo x > /mnt/ro/new.txt")
    t.ok(rc != 0 and not os.path.exists(os.path.join(host, "new.txt")),
         "guest write refused", out)
    # guest root tries to lift the restriction: the host must still refuse
    rc1, out1 = c.guest("mount -o remount,rw /mnt/ro; echo tamper > /mnt/ro/hello.txt;"
                        " echo new > /mnt/ro/new2.txt")
    with open(os.path.join(host, "hello.txt")) as f:
        body = f.read()
    t.ok(body == "hello from the host\n" and
         not os.path.exists(os.path.join(host, "new2.txt")),
         "remount,rw in the guest still cannot change the host", out1)
    lst = c.list_json()
    t.ok(len(lst) == 1 and lst[0]["state"] == "mounted" and not lst[0]["writable"] and
         lst[0]["mountPoint"] == "/mnt/ro", "list --json shows it", lst)
    rc, out = hm("add", c.inst, host, "/mnt/ro")
    t.ok(rc == 5 and "already" in out, "second add on the same mount point: exit 5", out)
    t0 = time.monotonic()
    rc, out = hm("remove", c.inst, "/mnt/ro")
    t.note("remove took %.2f s" % (time.monotonic() - t0))
    t.ok(rc == 0, "remove", out)
    t.ok("/mnt/ro" not in c.guest_mounts(), "guest no longer has /mnt/ro")
    left = c.leftovers()
    t.ok(not left and c.pci_devices_behind_ports() == 0, "nothing left after remove", left)
    rc, out = hm("remove", c.inst, "/mnt/ro")
    t.ok(rc == 4, "remove of an unknown mount: exit 4", out)


def case_writable(c, host):
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/rw", "--writable")
    t.ok(rc == 0, "add writable mount", out)
    rc, out = c.guest("echo from-guest > /mnt/rw/g.txt && sync")
    with open(os.path.join(host, "g.txt")) as f:
        body = f.read() if rc == 0 else ""
    t.ok(body == "from-guest\n", "guest write visible on the host", out)
    with open(os.path.join(host, "h.txt"), "w") as f:
        f.write("from-host\n")
    rc, out = c.guest("cat /mnt/rw/h.txt")
    t.ok(out.strip() == "from-host", "host write visible in the guest", out)
    port = json.load(open(os.path.join(c.inst, "state.json")))["mounts"][0]["backend"]["port"]
    rc, out = hm("remove", c.inst, "/mnt/rw")
    t.ok(rc == 0 and not c.leftovers(), "remove writable mount, nothing left", out)
    # re-add: a freed slot is used again once its cool-down is over (a slot
    # just emptied is not handed out at once, see qemu_driver.c); all slots
    # are free again, so the lowest, hm-rp-0 (used and freed above), is next
    rc2, st = hm("status", c.inst, "--json")
    free_after = json.loads(st).get("slotsFree") if rc2 == 0 else None
    time.sleep(3.2)
    rc, out = hm("add", c.inst, host, "/mnt/rw")
    st = json.load(open(os.path.join(c.inst, "state.json")))
    port2 = st["mounts"][0]["backend"]["port"] if st["mounts"] else None
    rc2, out2 = c.guest("cat /mnt/rw/h.txt")
    t.ok(rc == 0 and free_after == 32 and port2 == "hm-rp-0" and out2.strip() == "from-host",
         "all 32 slots free after remove; re-add reuses freed slot hm-rp-0 (was on %s)" % port,
         "%s %s free=%s port=%s" % (out, out2, free_after, port2))
    rc, out = hm("remove", c.inst, "/mnt/rw")
    t.ok(rc == 0 and not c.leftovers(), "remove again, nothing left", out)


def case_awkward_path(c, work):
    t = c.t
    host = os.path.join(work, "dir with space, comma 'quote' ✓")
    os.makedirs(host)
    with open(os.path.join(host, "f.txt"), "w") as f:
        f.write("awkward\n")
    rc, out = hm("add", c.inst, host, "/mnt/awk ward")
    rc2, out2 = c.guest("cat '/mnt/awk ward/f.txt'")
    t.ok(rc == 0 and out2.strip() == "awkward",
         "host path with space, comma, quote, unicode; guest path with space", out + out2)
    rc, out = hm("remove", c.inst, "/mnt/awk ward")
    t.ok(rc == 0 and not c.leftovers(), "removed, nothing left", out)


def case_many(c, work, n=10):
    t = c.t
    dirs = []
    for i in range(n):
        d = os.path.join(work, "many%d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "id"), "w") as f:
            f.write("%d\n" % i)
        dirs.append(d)
    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda i: hm("add", c.inst, dirs[i], "/mnt/many/%d" % i), range(n)))
    t.note("%d concurrent adds took %.2f s" % (n, time.monotonic() - t0))
    t.ok(all(r[0] == 0 for r in res), "%d adds at once" % n, [r[1] for r in res if r[0]])
    rc, out = c.guest("for i in $(seq 0 %d); do cat /mnt/many/$i/id; done" % (n - 1))
    t.ok(out.split() == [str(i) for i in range(n)], "guest reads all %d mounts" % n, out)
    lst = c.list_json()
    t.ok(len(lst) == n and all(m["state"] == "mounted" for m in lst), "list shows %d" % n,
         lst)
    with ThreadPoolExecutor(n) as ex:
        res = list(ex.map(lambda i: hm("remove", c.inst, "/mnt/many/%d" % i), range(n)))
    t.ok(all(r[0] == 0 for r in res), "%d removes at once" % n, [r[1] for r in res if r[0]])
    left = c.leftovers()
    t.ok(not left and not [m for m in c.guest_mounts() if m.startswith("/mnt/many")],
         "nothing left after %d removes" % n, left)


def case_bad_input(c, work, host):
    t = c.t
    afile = os.path.join(work, "a-file")
    open(afile, "w").close()
    nl = os.path.join(work, "new\nline")
    os.makedirs(nl)
    cases = [
        ([os.path.join(work, "missing"), "/mnt/x"], 3, "does not exist"),
        ([afile, "/mnt/x"], 3, "not a directory"),
        ([nl, "/mnt/x"], 3, "control character"),
        ([host, "/"], 3, "/"),
        ([host, "/proc"], 3, "/proc"),
        ([host, "/etc"], 3, "/etc"),
        ([host, "relative/path"], 3, "absolute"),
        ([host, "/mnt/../etc"], 3, ".."),
        ([host, "/mnt/" + "a" * 4096], 3, "long"),
        ([host, "/mnt/x", "--type", "nfs"], 3, "unknown mount type"),
        ([host, "/mnt/x", "-o", "msize=1"], 3, "unknown option"),
    ]
    for args, code, needle in cases:
        rc, out = hm("add", c.inst, *args)
        t.ok(rc == code and needle in out,
             "bad input refused (%s): exit %d" % (needle, rc), out[:400])
    left = c.leftovers()
    t.ok(not left and c.pci_devices_behind_ports() == 0, "bad input left nothing behind", left)


def case_daemon_restart(c, host):
    """kill -9 of the daemon loses nothing: the mount keeps working, the new
    daemon lists it and can remove it (virtiofsd is no longer its child)."""
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/persist", "--writable")
    t.ok(rc == 0, "add before the daemon is killed", out)
    pid = int(open(os.path.join(c.inst, "hotmountd.pid")).read().strip())
    os.kill(pid, 9)
    time.sleep(0.2)
    rc, out = c.guest("cat /mnt/persist/h.txt")
    t.ok(out.strip() == "from-host", "the mount works while no daemon runs", out)
    d = start_daemon(c.inst)
    t.ok(d.returncode == 0, "daemon restarts after kill -9", d.stdout + d.stderr)
    lst = c.list_json()
    t.ok(len(lst) == 1 and lst[0]["mountPoint"] == "/mnt/persist" and
         lst[0]["state"] == "mounted", "restarted daemon lists the mount", lst)
    rc, out = hm("remove", c.inst, "/mnt/persist")
    left = c.leftovers()
    t.ok(rc == 0 and not left and "/mnt/persist" not in c.guest_mounts(),
         "restarted daemon removes it, nothing left", out + str(left))


def host_dir(c):
    """The test's shared host directory (made on first use)."""
    host = os.path.join(c.work, "host")
    os.makedirs(host, exist_ok=True)
    return host


def case_booted_with_qemu_args(c):
    c.t.ok(c.vm.args_source == HOTMOUNT, "VM booted with hotmount qemu-args", c.vm.args_source)


def case_ownership(c):
    """Ownership both ways (hmtest.ownership_checks). Rootless, virtiofsd
    runs in a user namespace over the user's subordinate ids: guest root is
    the host user, guest uid N (N >= 1) is subordinate id BASE+N-1; with
    mapUid/mapGid=1000, guest 1000 is the host user and guest root is BASE.
    With root, virtiofsd acts as each guest id (passthrough) and a map is
    refused."""
    if rootless():
        ub, gb = subid_base("/etc/subuid"), subid_base("/etc/subgid")
        if ub is None or gb is None:
            c.t.ok(False, "virtiofs ownership: this user has subordinate ids",
                   (ub, gb))
            return
        expect = {"host_in_guest": (0, 0), "user_to_host": (ub + 999, gb + 999),
                  "map": {"other": (ub, gb)}}
    else:
        expect = {"host_in_guest": (0, 0), "user_to_host": (1000, 1000), "map": None,
                  "map_refused": "without root"}
    ownership_checks(c, "virtiofs", [], expect)


def case_doctor_userns(c):
    """`hotmount doctor` (through the daemon) says what virtiofsd's and
    sftp-server's user namespace needs: without root one check each for
    user namespaces, newuidmap, the subuid and subgid ranges (ok here, the
    range the one /etc/subuid gives); as root a single skip."""
    rc, out = hm("doctor", c.inst, "--json")
    try:
        checks = {ch["name"]: ch for ch in json.loads(out)["checks"]}
    except (ValueError, KeyError):
        checks = {}
    if rootless():
        ub, gb = subid_base("/etc/subuid"), subid_base("/etc/subgid")
        want = {"userns": None, "newuidmap": None,
                "subuid": "%d-" % ub if ub is not None else "?",
                "subgid": "%d-" % gb if gb is not None else "?"}
        good = all(k in checks and checks[k]["status"] == "ok" and
                   (v is None or checks[k]["detail"].startswith(v)) for k, v in want.items())
        ro = checks.get("readonly", {})
        c.t.ok(good and ro.get("status") == "ok" and "user namespace" in ro.get("detail", ""),
               "doctor: userns, newuidmap, subuid, subgid ok; read-only by a bind in "
               "virtiofsd's user namespace", {k: checks.get(k) for k in list(want) + ["readonly"]})
    else:
        u = checks.get("userns", {})
        c.t.ok(u.get("status") == "skip" and "root" in u.get("detail", "") and
               "subuid" not in checks, "doctor: as root the user-namespace checks are one skip",
               u or out)


CASES = [
    case_booted_with_qemu_args,
    case_doctor_userns,
    lambda c: case_bad_input(c, c.work, host_dir(c)),
    lambda c: case_readonly(c, host_dir(c)),
    lambda c: case_writable(c, host_dir(c)),
    lambda c: case_awkward_path(c, c.work),
    lambda c: case_many(c, c.work),
    lambda c: case_daemon_restart(c, host_dir(c)),
    case_ownership,
]


if __name__ == "__main__":
    sys.exit(run("hm-e2e-", CASES))
