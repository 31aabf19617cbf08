#!/usr/bin/env python3
"""e2e-crash: hotmountd killed with SIGKILL at every step of add and remove,
virtiofs and 9p, restarted, and checked from inside the guest and from QEMU:
each mount is either whole and listed, or fully gone, with nothing leaked
(9p: no diod, port, chardev, export link, or socket QEMU got by getfd). Also:
a helper (virtiofsd) killed under a live mount shows `broken`; diod killed
while the daemon is down shows `broken` after the restart; a guest unmount
behind our back shows `broken`; a corrupt state file is survived and the
registry rebuilt from what QEMU, the host and the guest hold (virtiofs and
9p). Prints TAP.

The kill points are the library's HOTMOUNT_FAULT hooks (lib/core/private.h).
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hmtest import (hm, needs_root, run, start_daemon_fault, stop_daemon_wait,  # noqa: E402
                    wait_daemon_dead)
# The shared virtiofs device's kill points (8 in an add, 3 in a remove): the
# cases of e2e-shared, run last here because the device they plug stays while
# the VM lives (e2e-shared's leftovers() knows that; the common one does not).
from test_shared import case_add_kills as shared_add_kills  # noqa: E402
from test_shared import case_remove_kills as shared_remove_kills  # noqa: E402

ADD_POINTS = ["add:reserved", "add:virtiofsd-started", "add:chardev-added",
              "add:device-added", "add:attached", "add:guest-mounted"]
REMOVE_POINTS = ["remove:detaching", "remove:guest-unmounted", "remove:device-deleted",
                 "remove:chardev-removed"]
# 9p (lib/drivers/qemu/ninep.c): export link, diod, getfd, chardev, port; the
# generic points of lib/core/instance.c around them.
ADD_POINTS_9P = ["add:reserved", "add:9p-link-created", "add:9p-server-started",
                 "add:9p-fd-passed", "add:9p-chardev-added", "add:9p-device-added",
                 "add:attached", "add:guest-mounted"]
REMOVE_POINTS_9P = ["remove:detaching", "remove:guest-unmounted", "remove:device-deleted",
                    "remove:chardev-removed", "remove:9p-server-stopped"]
# 9p through a reserved slot (lib/drivers/qemu/ninep_slot.c): marker link, the
# fsdev's link pointed at the share, the virtio-9p-pci plugged.
ADD_POINTS_9P_PCI = ["add:reserved", "add:9p-link-created", "add:9p-slot-pointed",
                     "add:9p-device-added", "add:attached", "add:guest-mounted"]
REMOVE_POINTS_9P_PCI = ["remove:detaching", "remove:guest-unmounted", "remove:device-deleted"]
# 9p over serial is refused without root (diod's confinement needs it;
# e2e-9p checks the refusal): its cases skip in the rootless pass
SERIAL_ROOT = "9p/serial: %s (9p over serial needs root; e2e-9p checks its refusal)"
POINTS = {"serial": (ADD_POINTS_9P, REMOVE_POINTS_9P),
          "pci": (ADD_POINTS_9P_PCI, REMOVE_POINTS_9P_PCI)}


def add9p(c, host, mp, via, *extra):
    return hm("add", c.inst, host, mp, "--type", "9p", "-o", "via=" + via, *extra)


def stop_daemon(inst):
    stop_daemon_wait(inst)


def start_daemon(inst, fault=None):
    return start_daemon_fault(inst, fault)


def wait_dead(inst, timeout=10):
    return wait_daemon_dead(inst, timeout)


def qemu_anon_sockets(c):
    """Unix sockets QEMU holds that are bound to no path: socketpair ends (9p's
    getfd'd fd, kept by QEMU's monitor or a chardev) and client connections
    (virtiofs); the listeners' accepted connections show their path."""
    pid = c.vm.proc.pid
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    anon = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            cols = line.split()
            if len(cols) >= 7 and cols[6] in inodes and len(cols) == 7:
                anon += 1
    return anon


def settled(c, host, mp, kind="virtiofs", anon=None):
    """After a restart: whole and listed, or fully gone. Returns (ok, detail).
    anon: QEMU's path-less sockets before the add (9p: none may be left)."""
    lst = c.list_json()
    if not lst:
        in_guest = mp in c.guest_mounts()
        left = c.leftovers()
        if anon is not None and qemu_anon_sockets(c) != anon:
            left.append("QEMU holds %d path-less sockets, %d before the add" %
                        (qemu_anon_sockets(c), anon))
        return (not in_guest and not left and c.pci_devices_behind_ports() == 0,
                "gone; guest has it: %s; leftovers: %s" % (in_guest, left))
    if len(lst) != 1 or lst[0]["mountPoint"] != mp or lst[0]["state"] != "mounted" or \
            lst[0]["type"] != kind:
        return False, "registry: %s" % lst
    rc, out = c.guest("cat %s/probe" % mp)
    return out.strip() == "probe", "listed as mounted; guest read: %r" % out


def case_add_kills(c, host):
    t = c.t
    for point in ADD_POINTS:
        stop_daemon(c.inst)
        d = start_daemon(c.inst, point)
        rc, out = hm("add", c.inst, host, "/mnt/crash")
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during add" % point, out + d.stderr)
        d = start_daemon(c.inst)
        ok, detail = settled(c, host, "/mnt/crash")
        t.ok(d.returncode == 0 and ok, "after restart (%s): whole or gone" % point,
             detail + d.stderr)
        if c.list_json():
            rc, out = hm("remove", c.inst, "/mnt/crash")
        left = c.leftovers()
        t.ok(not left and "/mnt/crash" not in c.guest_mounts(),
             "clean after %s (remove if it was kept)" % point, left)


def case_add_kills_9p(c, host, via="serial"):
    """Every step of a 9p add, then restart: whole and listed, or gone with
    no diod, port, chardev, export link, or fd left in QEMU (pci: no device,
    the fsdev links at their placeholder)."""
    t = c.t
    if via == "serial" and not needs_root(t, SERIAL_ROOT % "add kill points"):
        return
    stop_daemon(c.inst)
    start_daemon(c.inst)
    anon = qemu_anon_sockets(c)
    t0 = time.monotonic()
    for point in POINTS[via][0]:
        stop_daemon(c.inst)
        d = start_daemon(c.inst, point)
        rc, out = add9p(c, host, "/mnt/crash9", via)
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "9p/%s: daemon killed at %s during add" % (via, point),
             out + d.stderr)
        d = start_daemon(c.inst)
        ok, detail = settled(c, host, "/mnt/crash9", "9p", anon)
        lst = c.list_json()
        if lst and lst[0].get("via") != via:
            ok, detail = False, "kept, but via %s: %s" % (lst[0].get("via"), lst)
        t.ok(d.returncode == 0 and ok, "9p/%s: after restart (%s): whole or gone" % (via, point),
             detail + d.stderr)
        if c.list_json():
            rc, out = hm("remove", c.inst, "/mnt/crash9")
        left = c.leftovers()
        if qemu_anon_sockets(c) != anon:
            left.append("QEMU holds %d path-less sockets, %d before" %
                        (qemu_anon_sockets(c), anon))
        t.ok(not left and "/mnt/crash9" not in c.guest_mounts(),
             "9p/%s: clean after %s (remove if it was kept)" % (via, point), left)
    t.note("9p/%s: %d add kill points took %.0f s" %
           (via, len(POINTS[via][0]), time.monotonic() - t0))


def case_remove_kills_9p(c, host, via="serial"):
    t = c.t
    if via == "serial" and not needs_root(t, SERIAL_ROOT % "remove kill points"):
        return
    anon = qemu_anon_sockets(c)
    t0 = time.monotonic()
    for point in POINTS[via][1]:
        stop_daemon(c.inst)
        start_daemon(c.inst)
        rc, out = add9p(c, host, "/mnt/crash9", via)
        if not t.ok(rc == 0, "9p/%s: add before the kill at %s" % (via, point), out):
            continue
        stop_daemon(c.inst)
        start_daemon(c.inst, point)
        rc, out = hm("remove", c.inst, "/mnt/crash9")
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "9p/%s: daemon killed at %s during remove" % (via, point), out)
        d = start_daemon(c.inst)
        lst = c.list_json()
        left = c.leftovers()
        if qemu_anon_sockets(c) != anon:
            left.append("QEMU holds %d path-less sockets, %d before" %
                        (qemu_anon_sockets(c), anon))
        t.ok(d.returncode == 0 and not lst and not left and
             "/mnt/crash9" not in c.guest_mounts(),
             "9p/%s: after restart (%s): the remove was finished, nothing left" % (via, point),
             "registry %s leftovers %s %s" % (lst, left, d.stderr))
    t.note("9p/%s: %d remove kill points took %.0f s" %
           (via, len(POINTS[via][1]), time.monotonic() - t0))


def case_diod_killed_while_down(c, host):
    """diod dies while hotmountd is not running: the restarted daemon lists
    the mount broken with a reason, and remove cleans everything up."""
    t = c.t
    if not needs_root(t, SERIAL_ROOT % "diod killed while the daemon is down"):
        return
    stop_daemon(c.inst)
    start_daemon(c.inst)
    anon = qemu_anon_sockets(c)
    rc, out = add9p(c, host, "/mnt/crash9", "serial")
    t.ok(rc == 0, "9p: add before diod is killed", out)
    stop_daemon(c.inst)
    procs = c.diod_procs()
    for line in procs:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    d = start_daemon(c.inst)
    lst = c.list_json()
    t.ok(len(procs) == 1 and d.returncode == 0 and len(lst) == 1 and
         lst[0]["state"] == "broken" and "diod" in lst[0].get("reason", ""),
         "9p: diod killed while the daemon was down: broken after restart, reason names diod",
         "%s %s %s" % (procs, lst, d.stderr))
    rc, out = hm("remove", c.inst, "/mnt/crash9")
    left = c.leftovers()
    if qemu_anon_sockets(c) != anon:
        left.append("QEMU holds %d path-less sockets, %d before" % (qemu_anon_sockets(c), anon))
    t.ok(rc == 0 and not left and "/mnt/crash9" not in c.guest_mounts(),
         "9p: remove cleans it up (port, chardev, export link, guest mount)", (out, left))


def case_corrupt_state_9p(c, host, via="serial"):
    """A lost state file with a 9p mount: rebuilt from the device in QEMU,
    diod's markers or the marker link, and the guest's list, as a 9p mount
    that still works."""
    t = c.t
    if via == "serial" and not needs_root(t, SERIAL_ROOT % "corrupt state file"):
        return
    stop_daemon(c.inst)
    start_daemon(c.inst)
    rc, out = add9p(c, host, "/mnt/lost9", via, "--writable")
    t.ok(rc == 0, "9p/%s: add before the state file is lost" % via, out)
    stop_daemon(c.inst)
    with open(os.path.join(c.inst, "state.json"), "w") as f:
        f.write("not json")
    d = start_daemon(c.inst)
    lst = c.list_json()
    rc, out = c.guest("echo back > /mnt/lost9/from-guest && cat /mnt/lost9/probe")
    t.ok(d.returncode == 0 and len(lst) == 1 and lst[0]["mountPoint"] == "/mnt/lost9" and
         lst[0]["type"] == "9p" and lst[0]["hostPath"] == host and lst[0]["writable"] and
         lst[0]["state"] == "mounted" and lst[0].get("via") == via and out.strip() == "probe",
         "9p/%s: corrupt state file: the mount is rebuilt as 9p (type, hostPath, writable, via) "
         "and still works" % via, "%s %s %s" % (lst, out, d.stderr))
    for f in os.listdir(c.inst):
        if f.startswith("state.json.corrupt-"):
            os.unlink(os.path.join(c.inst, f))
    rc, out = hm("remove", c.inst, "/mnt/lost9")
    try:
        os.unlink(os.path.join(host, "from-guest"))
    except OSError:
        pass
    left = c.leftovers()
    t.ok(rc == 0 and not left and "/mnt/lost9" not in c.guest_mounts(),
         "9p/%s: remove after the rebuild, nothing left" % via, (out, left))


def case_add_kills_9p_pci(c, host):
    case_add_kills_9p(c, host, "pci")


def case_remove_kills_9p_pci(c, host):
    case_remove_kills_9p(c, host, "pci")


def case_corrupt_state_9p_pci(c, host):
    case_corrupt_state_9p(c, host, "pci")


def case_remove_kills(c, host):
    t = c.t
    for point in REMOVE_POINTS:
        stop_daemon(c.inst)
        start_daemon(c.inst)
        rc, out = hm("add", c.inst, host, "/mnt/crash")
        if not t.ok(rc == 0, "add before the kill at %s" % point, out):
            continue
        stop_daemon(c.inst)
        start_daemon(c.inst, point)
        rc, out = hm("remove", c.inst, "/mnt/crash")
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during remove" % point, out)
        d = start_daemon(c.inst)
        lst = c.list_json()
        left = c.leftovers()
        t.ok(d.returncode == 0 and not lst and not left and
             "/mnt/crash" not in c.guest_mounts() and c.pci_devices_behind_ports() == 0,
             "after restart (%s): the remove was finished, nothing left" % point,
             "registry %s leftovers %s %s" % (lst, left, d.stderr))


def wait_state(c, mp, state, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for m in c.list_json():
            if m["mountPoint"] == mp and m["state"] == state:
                return time.monotonic() - t0, m
        time.sleep(0.02)
    return None, None


def case_helper_killed(c, host):
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/health")
    t.ok(rc == 0, "add for the health check", out)
    st = json.load(open(os.path.join(c.inst, "state.json")))
    pid = int([m for m in st["mounts"] if m["mountPoint"] == "/mnt/health"][0]
              ["backend"]["virtiofsd_pid"])
    os.kill(pid, signal.SIGKILL)
    took, m = wait_state(c, "/mnt/health", "broken", 10)
    t.note("virtiofsd killed -> broken in list after %s s" %
           ("%.3f" % took if took is not None else "never"))
    t.ok(took is not None and "virtiofsd" in (m or {}).get("reason", ""),
         "virtiofsd killed: broken, with the reason (within 1 s: %s)" %
         ("yes" if took is not None and took <= 1 else "no"), m)
    # virtiofs has no way back from a dead virtiofsd (QEMU cannot reconnect
    # vhost-user-fs; the guest waits forever on requests in flight), so
    # remove takes the mount out of the guest and the registry, stops
    # nothing it cannot, and retires the device instead of unplugging it
    # (unplugging would wedge every later virtiofs mount in the guest).
    mid = [m for m in c.list_json() if m["mountPoint"] == "/mnt/health"][0]["id"]
    rc, out = hm("remove", c.inst, "/mnt/health")
    c.retired.add(mid)
    rc2, st = hm("status", c.inst, "--json")
    retired = json.loads(st).get("devicesRetired") if rc2 == 0 else None
    left = c.leftovers()
    t.ok(rc == 0 and not left and "/mnt/health" not in c.guest_mounts() and retired == 1,
         "remove of a mount whose virtiofsd died: gone from guest and registry, device "
         "retired", "%s %s status=%s" % (out, left, st))
    rc, out = hm("add", c.inst, host, "/mnt/after")
    rc2, out2 = c.guest("cat /mnt/after/probe")
    t.ok(rc == 0 and out2.strip() == "probe",
         "the guest still takes new virtiofs mounts afterwards", out + out2)
    hm("remove", c.inst, "/mnt/after")


def case_guest_unmount(c, host):
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/gone")
    t.ok(rc == 0, "add for the guest-unmount check", out)
    c.guest("umount /mnt/gone")
    took, m = wait_state(c, "/mnt/gone", "broken", 10)
    t.note("guest umount -> broken in list after %s s" %
           ("%.3f" % took if took is not None else "never"))
    t.ok(took is not None and "guest" in (m or {}).get("reason", ""),
         "unmounted in the guest behind our back: broken, with the reason", m)
    rc, out = hm("remove", c.inst, "/mnt/gone")
    left = c.leftovers()
    t.ok(rc == 0 and not left, "remove cleans it up", out + str(left))


def case_corrupt_state(c, host):
    t = c.t
    rc, out = hm("add", c.inst, host, "/mnt/lost", "--writable")
    t.ok(rc == 0, "add before the state file is lost", out)
    stop_daemon(c.inst)
    path = os.path.join(c.inst, "state.json")
    for i, junk in enumerate(['{"version":1,"nextId":', "not json", '{"version":1,"x":[]}']):
        with open(path, "w") as f:
            f.write(junk)
        d = start_daemon(c.inst)
        lst = c.list_json()
        t.ok(d.returncode == 0 and len(lst) == 1 and lst[0]["mountPoint"] == "/mnt/lost" and
             lst[0]["hostPath"] == host and lst[0]["writable"] and lst[0]["state"] == "mounted",
             "corrupt state file #%d: daemon starts, the mount is rebuilt from QEMU, host and "
             "guest" % (i + 1), "%s %s" % (lst, d.stderr))
        kept = [f for f in os.listdir(c.inst) if f.startswith("state.json.corrupt-")]
        t.ok(kept, "the corrupt file is kept aside", os.listdir(c.inst))
        for f in kept:
            os.unlink(os.path.join(c.inst, f))
        stop_daemon(c.inst)
    start_daemon(c.inst)
    rc, out = hm("add", c.inst, host, "/mnt/lost2")
    t.ok(rc == 0, "a new add after the rebuild gets a fresh id (no clash with the adopted one)",
         out)
    for mp in ("/mnt/lost", "/mnt/lost2"):
        hm("remove", c.inst, mp)
    t.ok(not c.leftovers(), "nothing left", c.leftovers())


def case_guest_reboot(c, host):
    """A guest reboot ends every mount in the guest: --persist ones are
    mounted again, the others have their host side cleaned up."""
    t = c.t
    rc1, out1 = hm("add", c.inst, host, "/mnt/keep", "--persist")
    rc2, out2 = hm("add", c.inst, host, "/mnt/drop")
    t.ok(rc1 == 0 and rc2 == 0, "add a persistent and a plain mount", out1 + out2)
    # -no-reboot would turn the reset into a shutdown: ask for a real reset.
    c.vm.qmp("set-action", {"reboot": "reset"})
    c.vm.qmp("system_reset")
    c.vm.chan.wait_ready(180)
    t0 = time.monotonic()
    keep = drop = None
    while time.monotonic() - t0 < 60:
        lst = {m["mountPoint"]: m for m in c.list_json()}
        keep, drop = lst.get("/mnt/keep"), lst.get("/mnt/drop")
        if keep and keep["state"] == "mounted" and "/mnt/keep" in c.guest_mounts() and not drop:
            break
        time.sleep(0.5)
    t.note("after the reboot, settled in %.1f s" % (time.monotonic() - t0))
    rc, out = c.guest("cat /mnt/keep/probe")
    t.ok(keep and keep["state"] == "mounted" and out.strip() == "probe",
         "the --persist mount is mounted again after the guest reboot", "%s %s" % (keep, out))
    t.ok(drop is None, "the plain mount is gone after the reboot", drop)
    hm("remove", c.inst, "/mnt/keep")
    left = c.leftovers()
    t.ok(not left and c.pci_devices_behind_ports() == 0, "nothing left", left)


SHARED_ROOT = ("shared device: %s (-o device=shared needs hotmountd as root for now: "
               "the hub's bind is made with open_tree/move_mount)")


def case_shared_add_kills(c, host):
    if needs_root(c.t, SHARED_ROOT % "add kill points"):
        shared_add_kills(c, host)


def case_shared_remove_kills(c, host):
    if needs_root(c.t, SHARED_ROOT % "remove kill points"):
        shared_remove_kills(c, host)


def probe_host(c):
    """The host directory every case shares, with a file to read."""
    host = os.path.join(c.work, "host")
    if not os.path.isdir(host):
        os.makedirs(host)
        with open(os.path.join(host, "probe"), "w") as f:
            f.write("probe\n")
    return host


CASES = [lambda c, f=f: f(c, probe_host(c)) for f in (
    case_add_kills, case_remove_kills, case_add_kills_9p, case_remove_kills_9p,
    case_add_kills_9p_pci, case_remove_kills_9p_pci, case_corrupt_state_9p_pci,
    case_diod_killed_while_down, case_corrupt_state_9p, case_guest_unmount, case_corrupt_state,
    case_guest_reboot, case_helper_killed, case_shared_add_kills, case_shared_remove_kills)]


if __name__ == "__main__":
    sys.exit(run("hm-crash-", CASES, daemon=False))
