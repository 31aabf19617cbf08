#!/usr/bin/env python3
"""e2e-shared: virtiofs mounts over the one shared device (-o device=shared),
checked from inside a real guest (test channel on ttyS1), from QEMU (the
test's own QMP monitor) and from the hub virtiofsd's own mount namespace
(/proc/PID/mountinfo of its sandbox process). Prints TAP.

The shared device (hm-hub-dev), its chardev and its one virtiofsd stay while
the VM lives, by design (docs/architecture.md): leftovers() here is the
common one less those three.
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hmtest import (api, hm, run, start_daemon, start_daemon_fault, stop_daemon_wait,  # noqa: E402
                    wait_daemon_dead)

SHARED = ("-o", "device=shared")


def hub_pids(c):
    """(parent, sandbox) pids of this instance's hub virtiofsd, or (None, None)."""
    mine = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = open("/proc/%s/comm" % pid).read().strip()
            env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
            ppid = int(open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (comm == "virtiofsd" and b"HOTMOUNT_MOUNT=hm-hub" in env and
                ("HOTMOUNT_INSTANCE=" + c.inst).encode() in env):
            mine.append((int(pid), ppid))
    pids = {p for p, _ in mine}
    parent = [p for p, pp in mine if pp not in pids]
    child = [p for p, pp in mine if pp in pids]
    return (parent[0] if parent else None, child[0] if child else None)


def hub_binds(c):
    """Mount points of hub entries in the hub virtiofsd's sandbox namespace
    (it is pivoted into the hub: entries are /hm-N)."""
    parent, child = hub_pids(c)
    if not parent:
        return []
    if not child:
        return ["no hub virtiofsd sandbox process"]
    with open("/proc/%d/mountinfo" % child) as f:
        return [l.split()[4] for l in f if l.split()[4].startswith("/hm-")]


def leftovers(c):
    left = []
    for item in c.leftovers():
        if item.startswith("virtiofsd: "):
            procs = [p for p in eval(item[len("virtiofsd: "):]) if "announce_submounts" not in p]
            if procs:
                left.append("virtiofsd: %s" % procs)
        elif item.startswith("devices: "):
            devs = [d for d in eval(item[len("devices: "):]) if d != "hm-hub-dev"]
            if devs:
                left.append("devices: %s" % devs)
        elif item.startswith("chardevs: "):
            chrs = [d for d in eval(item[len("chardevs: "):]) if d != "hm-hub-chr"]
            if chrs:
                left.append("chardevs: %s" % chrs)
        else:
            left.append(item)
    binds = hub_binds(c)
    if binds:
        left.append("hub binds in virtiofsd's namespace: %s" % binds)
    hub = os.path.join(c.inst, "hub")
    if os.path.isdir(hub) and os.listdir(hub):
        left.append("hub entries: %s" % os.listdir(hub))
    marks = [f for f in os.listdir(c.inst) if "-hub-r" in f]
    if marks:
        left.append("hub markers: %s" % marks)
    rc, out = c.guest("grep -c ' /run/hotmount/hub/' /proc/mounts")
    if out.strip() not in ("", "0"):
        left.append("guest hub submounts: %s" % out.strip())
    return left


def case_readonly(c, host):
    t = c.t
    with open(os.path.join(host, "hello.txt"), "w") as f:
        f.write("hello from the host\n")
    t0 = time.monotonic()
    rc, out = hm("add", c.inst, host, "/mnt/ro", *SHARED)
    t.note("first shared add (plugs the device) took %.2f s" % (time.monotonic() - t0))
    t.ok(rc == 0, "add read-only shared mount", out)
    rc, out = c.guest("cat /mnt/ro/hello.txt")
    t.ok(rc == 0 and out.strip() == "hello from the host", "guest reads the host file", out)
    rc, out = c.guest("grep ' /mnt/ro ' /proc/mounts")
    t.ok(rc == 0 and "virtiofs" in out and " ro," in out, "guest sees a ro virtiofs mount", out)
    rc, out = c.guest("echo x > /mnt/ro/new.txt")
    t.ok(rc != 0 and not os.path.exists(os.path.join(host, "new.txt")),
         "guest write refused", out)
    rc1, out1 = c.guest("mount -o remount,rw /mnt/ro; echo tamper > /mnt/ro/hello.txt;"
                        " echo new > /mnt/ro/new2.txt")
    with open(os.path.join(host, "hello.txt")) as f:
        body = f.read()
    t.ok(body == "hello from the host\n" and
         not os.path.exists(os.path.join(host, "new2.txt")),
         "remount,rw in the guest still cannot change the host", out1)
    # the hub itself, remounted rw by guest root, is read-only on the host
    rc2, out2 = c.guest("mount -o remount,rw /run/hotmount/hub; touch /run/hotmount/hub/x")
    t.ok(not os.path.exists(os.path.join(c.inst, "hub", "x")),
         "the hub's root cannot be written from the guest", out2)
    lst = c.list_json()
    t.ok(len(lst) == 1 and lst[0]["state"] == "mounted" and not lst[0]["writable"],
         "list --json shows it", lst)
    rc, out = hm("status", c.inst)
    t.ok(rc == 0 and "plugged" in out, "status shows the shared device", out)
    rc, out = hm("doctor", c.inst)
    t.ok("shared virtiofs device" in out and "plugged, 1 mounts" in out,
         "doctor knows the shared device", out)
    rc, out = hm("remove", c.inst, "/mnt/ro")
    t.ok(rc == 0, "remove", out)
    left = leftovers(c)
    t.ok("/mnt/ro" not in c.guest_mounts() and not left, "nothing left after remove", left)


def case_writable(c, host):
    t = c.t
    t0 = time.monotonic()
    rc, out = hm("add", c.inst, host, "/mnt/rw", "--writable", *SHARED)
    t.note("shared add (device already there) took %.2f s" % (time.monotonic() - t0))
    t.ok(rc == 0, "add writable shared mount", out)
    rc, out = c.guest("echo from-guest > /mnt/rw/g.txt && sync")
    body = open(os.path.join(host, "g.txt")).read() if rc == 0 else ""
    t.ok(body == "from-guest\n", "guest write visible on the host", out)
    with open(os.path.join(host, "h.txt"), "w") as f:
        f.write("from-host\n")
    rc, out = c.guest("cat /mnt/rw/h.txt")
    t.ok(out.strip() == "from-host", "host write visible in the guest", out)
    rc, out = hm("remove", c.inst, "/mnt/rw")
    left = leftovers(c)
    t.ok(rc == 0 and not left, "remove writable mount, nothing left", out + str(left))


def case_st_dev(c, work):
    t = c.t
    a, b = os.path.join(work, "deva"), os.path.join(work, "devb")
    for d in (a, b):
        os.makedirs(d)
        with open(os.path.join(d, "f"), "w") as f:
            f.write(d)
    r1 = hm("add", c.inst, a, "/mnt/da", *SHARED)
    r2 = hm("add", c.inst, b, "/mnt/db", *SHARED)
    t.ok(r1[0] == 0 and r2[0] == 0, "two shared mounts", r1[1] + r2[1])
    rc, out = c.guest("stat -c %d /mnt/da /mnt/db /mnt/da/f /mnt/db/f")
    devs = out.split()
    t.ok(rc == 0 and len(devs) == 4 and devs[0] != devs[1] and devs[0] == devs[2] and
         devs[1] == devs[3], "each share has its own st_dev", out)
    rc, out = c.guest("cat /mnt/da/f; echo; cat /mnt/db/f")
    t.ok(out.split() == [a, b], "each reads its own file", out)
    for g in ("/mnt/da", "/mnt/db"):
        hm("remove", c.inst, g)
    left = leftovers(c)
    t.ok(not left, "removed, nothing left", left)


def case_odd(c, work):
    t = c.t
    host = os.path.join(work, "o d,d'\"ü")
    os.makedirs(host)
    with open(os.path.join(host, "f.txt"), "w") as f:
        f.write("odd\n")
    rc, out = hm("add", c.inst, host, "/mnt/odd ü,x", *SHARED)
    rc2, out2 = c.guest("cat '/mnt/odd ü,x/f.txt'")
    t.ok(rc == 0 and out2.strip() == "odd",
         "host path with space, comma, quotes, unicode; guest path with space", out + out2)
    rc, out = hm("remove", c.inst, "/mnt/odd ü,x")
    t.ok(rc == 0 and not leftovers(c), "removed, nothing left", out)
    nl = os.path.join(work, "new\nline")
    os.makedirs(nl)
    rc, out = hm("add", c.inst, nl, "/mnt/nl", *SHARED)
    t.ok(rc == 3, "a host path with a newline is refused: exit 3", out)
    for args, needle in (((host, "/proc/x") + SHARED, "/proc"), ((host, "/") + SHARED, "/"),
                         ((host, "/mnt/c", "-o", "device=both"), "device"),
                         ((host, "/mnt/c", "-o", "cache=never") + SHARED, "cache")):
        rc, out = hm("add", c.inst, *args)
        t.ok(rc == 3 and needle in out, "refused: %s" % (args,), out[:300])
    left = leftovers(c)
    t.ok(not left, "bad input left nothing behind", left)


def case_many(c, work, n=256):
    t = c.t
    dirs = []
    for i in range(n):
        d = os.path.join(work, "many%d" % i)
        os.makedirs(d)
        with open(os.path.join(d, "id"), "w") as f:
            f.write("%d\n" % i)
        dirs.append(d)
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as ex:
        res = list(ex.map(lambda i: hm("add", c.inst, dirs[i], "/mnt/many/%d" % i, *SHARED,
                                       timeout=600), range(n)))
    t.note("%d shared adds (16 at a time) took %.1f s" % (n, time.monotonic() - t0))
    t.ok(all(r[0] == 0 for r in res), "%d shared adds" % n, [r[1] for r in res if r[0]][:5])
    rc, out = c.guest("for i in $(seq 0 %d); do cat /mnt/many/$i/id; done" % (n - 1),
                      timeout=300)
    t.ok(out.split() == [str(i) for i in range(n)], "guest reads all %d, each its own file" % n,
         out[-500:])
    rc, out = c.guest("for i in $(seq 0 %d); do stat -c %%d /mnt/many/$i; done | sort -u | wc -l"
                      % (n - 1), timeout=300)
    t.ok(out.strip() == str(n), "%d distinct st_dev" % n, out)
    peri = c.vm.qmp("qom-list", {"path": "/machine/peripheral"})
    devs = [p["name"] for p in peri if p["name"].endswith("-dev")]
    t.ok(devs == ["hm-hub-dev"], "one device for all of them", devs)
    lst = c.list_json()
    t.ok(len(lst) == n and all(m["state"] == "mounted" for m in lst), "list shows %d" % n,
         len(lst))
    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as ex:
        res = list(ex.map(lambda i: hm("remove", c.inst, "/mnt/many/%d" % i, timeout=600),
                          range(n)))
    t.note("%d removes took %.1f s" % (n, time.monotonic() - t0))
    t.ok(all(r[0] == 0 for r in res), "%d removes" % n, [r[1] for r in res if r[0]][:5])
    left = leftovers(c)
    t.ok(not left and not [m for m in c.guest_mounts() if m.startswith("/mnt/many")],
         "nothing left after %d removes" % n, left)


def case_daemon_restart(c, host):
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/persist", "--writable", *SHARED)
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
    rc, out = hm("add", c.inst, host, "/mnt/persist2", *SHARED)
    rc2, out2 = c.guest("cat /mnt/persist2/h.txt")
    t.ok(rc == 0 and out2.strip() == "from-host",
         "restarted daemon finds the hub again and adds to it", out + out2)
    os.unlink(os.path.join(c.inst, "state.json"))
    pid = int(open(os.path.join(c.inst, "hotmountd.pid")).read().strip())
    os.kill(pid, 9)
    time.sleep(0.2)
    d = start_daemon(c.inst)
    lst = sorted(m["mountPoint"] for m in c.list_json())
    t.ok(lst == ["/mnt/persist", "/mnt/persist2"],
         "state.json lost: both rebuilt from the hub markers", lst)
    r1 = hm("remove", c.inst, "/mnt/persist")
    r2 = hm("remove", c.inst, "/mnt/persist2")
    left = leftovers(c)
    t.ok(r1[0] == 0 and r2[0] == 0 and not left, "removed, nothing left", r1[1] + r2[1] +
         str(left))


# Kill points of a shared add (hub.c; the first three only while the hub is
# being plugged, which is why these cases run first) and remove.
ADD_POINTS = ["add:hub-virtiofsd-started", "add:hub-device-added", "add:reserved",
              "add:hub-ready", "add:hub-marked", "add:hub-bound", "add:attached",
              "add:guest-mounted"]
REMOVE_POINTS = ["remove:detaching", "remove:guest-unmounted", "remove:hub-unbound"]


def settled(c, mp):
    """After a restart: whole and listed, or fully gone. (ok, detail)."""
    lst = c.list_json()
    if not lst:
        in_guest = mp in c.guest_mounts()
        left = leftovers(c)
        return not in_guest and not left, "gone; guest has it: %s; leftovers: %s" % (in_guest,
                                                                                     left)
    if len(lst) != 1 or lst[0]["mountPoint"] != mp or lst[0]["state"] != "mounted":
        return False, "registry: %s" % lst
    rc, out = c.guest("cat %s/probe" % mp)
    return out.strip() == "probe", "listed as mounted; guest read: %r" % out


def case_add_kills(c, host):
    t = c.t
    with open(os.path.join(host, "probe"), "w") as f:
        f.write("probe\n")
    for point in ADD_POINTS:
        stop_daemon_wait(c.inst)
        d = start_daemon_fault(c.inst, point)
        rc, out = hm("add", c.inst, host, "/mnt/crash", *SHARED)
        died = wait_daemon_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during a shared add" % point, out + d.stderr)
        d = start_daemon_fault(c.inst)
        ok, detail = settled(c, "/mnt/crash")
        t.ok(d.returncode == 0 and ok, "after restart (%s): whole or gone" % point,
             detail + d.stderr)
        if c.list_json():
            hm("remove", c.inst, "/mnt/crash")
        left = leftovers(c)
        t.ok(not left and "/mnt/crash" not in c.guest_mounts(),
             "clean after %s (remove if it was kept)" % point, left)


def case_remove_kills(c, host):
    t = c.t
    for point in REMOVE_POINTS:
        stop_daemon_wait(c.inst)
        start_daemon_fault(c.inst)
        rc, out = hm("add", c.inst, host, "/mnt/crash", *SHARED)
        if not t.ok(rc == 0, "add before the kill at %s" % point, out):
            continue
        stop_daemon_wait(c.inst)
        start_daemon_fault(c.inst, point)
        rc, out = hm("remove", c.inst, "/mnt/crash")
        died = wait_daemon_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during a shared remove" % point, out)
        d = start_daemon_fault(c.inst)
        lst = c.list_json()
        left = leftovers(c)
        t.ok(d.returncode == 0 and not lst and not left and "/mnt/crash" not in c.guest_mounts(),
             "after restart (%s): the remove was finished, nothing left" % point,
             "registry %s leftovers %s %s" % (lst, left, d.stderr))


def case_api_python(c, host):
    """The HTTP API and the Python binding carry the option; list shows
    virtiofs/shared (via "shared")."""
    t = c.t
    st, body = api(c.inst, "POST", "/v1/mounts",
                   {"hostPath": host, "mountPoint": "/mnt/api", "options": {"device": "shared"}})
    rc, out = c.guest("cat /mnt/api/probe")
    t.ok(st == 201 and body.get("via") == "shared" and out.strip() == "probe",
         "POST /v1/mounts with options.device=shared: mounted, via shared", body)
    rc, out = hm("list", c.inst)
    t.ok("virtiofs/shared" in out, "list shows TYPE virtiofs/shared", out)
    st, body = api(c.inst, "DELETE", "/v1/mounts", {"mountPoint": "/mnt/api"})
    t.ok(st == 200, "DELETE /v1/mounts", body)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "examples", "python"))
    import hotmount
    with hotmount.Client(c.inst, timeout=120) as cl:
        m = cl.add(host, "/mnt/py", options={"device": "shared"})
        rc, out = c.guest("cat /mnt/py/probe")
        t.ok(m.via == "shared" and out.strip() == "probe",
             "Python binding: add with options={'device': 'shared'}", (m.via, out))
        cl.remove("/mnt/py")
    left = leftovers(c)
    t.ok(not left, "API and binding mounts removed, nothing left", left)


def host_dir(c):
    host = os.path.join(c.work, "host")
    os.makedirs(host, exist_ok=True)
    return host


CASES = [
    lambda c: case_add_kills(c, host_dir(c)),
    lambda c: case_remove_kills(c, host_dir(c)),
    lambda c: case_readonly(c, host_dir(c)),
    lambda c: case_api_python(c, host_dir(c)),
    lambda c: case_writable(c, host_dir(c)),
    lambda c: case_st_dev(c, c.work),
    lambda c: case_odd(c, c.work),
    lambda c: case_daemon_restart(c, host_dir(c)),
    lambda c: case_many(c, c.work),
]


if __name__ == "__main__":
    sys.exit(run("hm-e2e-shared-", CASES))
