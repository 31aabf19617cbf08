#!/usr/bin/env python3
"""e2e-bind: `hotmount add --type bind` against boot-time shares, one VM.

The VM gets two boot-time virtio-9p-pci shares (-virtfs): boot9p (writable)
and bootro (readonly=on), mounted in the guest at /mnt/boot and /mnt/bootro
by the test; hotmountd learns them with --boot-share. Checked from inside
the guest (vm.sh) and on the host: read; write when writable (both ways);
read-only refused, and what a guest `mount -o remount,rw` can do (the bind's
read-only flag is the guest's; the share's host side is what holds); a path
in no share refused with a clear error and nothing left; odd names; remove
leaves nothing; list/status know bind; the daemon killed at each bind fault
point and restarted: whole or gone; a restart after the guest dropped the
bind forgets it; the median add latency (CLI call until the guest reads).
Prints TAP.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))
from hmtest import (api, hm, run, start_daemon_fault,  # noqa: E402
                    stop_daemon_wait, wait_daemon_dead)

SHARES = tempfile.mkdtemp(prefix="hm-bind-shares-")
BOOT = os.path.join(SHARES, "boot")      # -> guest /mnt/boot, writable
BOOTRO = os.path.join(SHARES, "bootro")  # -> guest /mnt/bootro, readonly=on

ADD_POINTS = ["add:reserved", "add:attached", "add:guest-mounted"]
REMOVE_POINTS = ["remove:detaching", "remove:guest-unmounted"]


def daemon_args():
    return ["--boot-share", BOOT + "=/mnt/boot", "--boot-share", BOOTRO + "=/mnt/bootro"]


def vm_kwargs(images):
    for d, sub in ((BOOT, "proj"), (BOOTRO, "proj")):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, sub, "probe"), "w") as f:
            f.write("probe\n")
    return {"extra_args": [
        "-virtfs", "local,path=%s,mount_tag=boot9p,security_model=none" % BOOT,
        "-virtfs", "local,path=%s,mount_tag=bootro,security_model=none,readonly=on" % BOOTRO]}


def stop_daemon(inst):
    stop_daemon_wait(inst)


def start_daemon(inst, fault=None):
    return start_daemon_fault(inst, fault, daemon_args())


def wait_dead(inst, timeout=10):
    return wait_daemon_dead(inst, timeout)


def guest_has_dir(c, path):
    rc, _ = c.guest("test -d '%s'" % path)
    return rc == 0


def nothing_left(c, mp):
    """No registry entry, no guest mount, no mount point the agent made, and
    none of the host-side leftovers any other type could leave."""
    left = c.leftovers()
    if mp in c.guest_mounts():
        left.append("guest still has %s mounted" % mp)
    if guest_has_dir(c, mp):
        left.append("guest still has the directory %s" % mp)
    return left


def case_boot_shares(c):
    t = c.t
    rc, out = c.guest("mkdir -p /mnt/boot /mnt/bootro && "
                      "mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 boot9p "
                      "/mnt/boot && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "
                      "bootro /mnt/bootro && cat /mnt/boot/proj/probe /mnt/bootro/proj/probe")
    t.ok(rc == 0 and out.split() == ["probe", "probe"], "guest mounted the boot-time shares", out)


def case_read_only(c):
    t = c.t
    host = os.path.join(BOOT, "proj")
    rc, out = hm("add", c.inst, host, "/mnt/proj", "--type", "bind")
    t.ok(rc == 0, "add --type bind (read-only) of a directory inside a boot-time share", out)
    rc, out = c.guest("cat /mnt/proj/probe")
    t.ok(out.strip() == "probe", "guest reads through the bind", out)
    rc, out = c.guest("grep ' /mnt/proj ' /proc/mounts")
    opts = out.split()[3].split(",") if out.split() else []
    t.ok(rc == 0 and out.split()[2] == "9p" and "ro" in opts and "nosuid" in opts and
         "nodev" in opts, "the guest shows a 9p bind, ro,nosuid,nodev", out)
    with open(os.path.join(host, "later"), "w") as f:
        f.write("later\n")
    rc, out = c.guest("cat /mnt/proj/later")
    t.ok(out.strip() == "later", "host changes show through", out)
    rc, out = c.guest("echo x > /mnt/proj/w 2>&1; echo rc=$?")
    t.ok("rc=0" not in out and "Read-only" in out and
         not os.path.exists(os.path.join(host, "w")), "guest write refused (EROFS)", out)
    # list and status know the type
    lst = c.list_json()
    t.ok(len(lst) == 1 and lst[0]["type"] == "bind" and lst[0]["tag"] == "/mnt/boot/proj" and
         lst[0]["state"] == "mounted" and lst[0]["hostPath"] == host and
         lst[0]["writable"] is False, "list --json shows the bind, its guest source", lst)
    rc, out = hm("list", c.inst)
    t.ok(rc == 0 and "bind" in out and "/mnt/proj" in out, "list shows it", out)
    rc, out = hm("status", c.inst, "--json")
    st = json.loads(out) if rc == 0 else {}
    t.ok(str(st.get("bootShares")) == "2" and "bind" in st.get("backends", "").split(","),
         "status counts the declared boot shares and names the bind backend", out)
    # What a guest root can do: the read-only flag is the bind's own, so a
    # remount makes it writable, and the write reaches the host because the
    # boot-time share is writable. That is the documented limit.
    rc, out = c.guest("mount -o remount,rw,bind /mnt/proj && echo y > /mnt/proj/w && cat "
                      "/mnt/proj/w")
    t.ok(rc == 0 and os.path.exists(os.path.join(host, "w")),
         "guest root can remount a bind of a writable share rw (guest-only flag, documented)",
         out)
    os.unlink(os.path.join(host, "w"))
    os.unlink(os.path.join(host, "later"))
    rc, out = hm("remove", c.inst, "/mnt/proj")
    left = nothing_left(c, "/mnt/proj")
    t.ok(rc == 0 and not left, "remove: nothing left", "%s %s" % (out, left))
    rc, out = c.guest("cat /mnt/boot/proj/probe")
    t.ok(out.strip() == "probe", "the boot-time share itself is untouched", out)


def case_read_only_share(c):
    """A bind of a read-only boot share: remount,rw in the guest does not
    make it writable; the share's host side holds."""
    t = c.t
    host = os.path.join(BOOTRO, "proj")
    rc, out = hm("add", c.inst, host, "/mnt/rop", "--type", "bind")
    t.ok(rc == 0, "add --type bind inside a readonly=on boot share", out)
    rc, out = c.guest("mount -o remount,rw,bind /mnt/rop; echo x > /mnt/rop/w 2>&1; "
                      "cat /mnt/rop/probe")
    t.ok("probe" in out and not os.path.exists(os.path.join(host, "w")),
         "after remount,rw the guest still cannot write it (QEMU's readonly=on holds)", out)
    rc, out = hm("remove", c.inst, "/mnt/rop")
    left = nothing_left(c, "/mnt/rop")
    t.ok(rc == 0 and not left, "remove: nothing left", "%s %s" % (out, left))


def case_writable(c):
    t = c.t
    host = os.path.join(BOOT, "proj", "sub dir, 'q' é")
    os.makedirs(host, exist_ok=True)
    rc, out = hm("add", c.inst, host, "/mnt/rw bind", "--type", "bind", "--writable")
    t.ok(rc == 0, "add --type bind --writable, odd names", out)
    rc, out = c.guest("echo from-guest > '/mnt/rw bind/g' && ls '/mnt/rw bind'")
    ok = rc == 0 and open(os.path.join(host, "g")).read() == "from-guest\n"
    t.ok(ok, "guest writes reach the host", out)
    with open(os.path.join(host, "h"), "w") as f:
        f.write("from-host\n")
    rc, out = c.guest("cat '/mnt/rw bind/h'")
    t.ok(out.strip() == "from-host", "host writes reach the guest", out)
    rc, out = c.guest("grep ' /mnt/rw\\\\040bind ' /proc/mounts")
    t.ok(rc == 0 and "rw," in out and "nosuid" in out, "mounted rw,nosuid", out)
    rc, out = hm("remove", c.inst, "/mnt/rw bind")
    left = nothing_left(c, "/mnt/rw bind")
    t.ok(rc == 0 and not left, "remove: nothing left", "%s %s" % (out, left))
    shutil.rmtree(host)


def case_refused(c):
    t = c.t
    elsewhere = os.path.join(c.work, "elsewhere")
    os.makedirs(elsewhere, exist_ok=True)
    rc, out = hm("add", c.inst, elsewhere, "/mnt/nope", "--type", "bind")
    t.ok(rc != 0 and "is not inside a boot-time share of this VM" in out and elsewhere in out
         and "/mnt/boot" in out, "a path in no boot share: refused, naming it and the shares",
         out)
    left = nothing_left(c, "/mnt/nope")
    t.ok(not left, "nothing left after the refusal", left)
    # A host symlink inside the share that leads out of it is resolved on
    # the host first: refused the same way.
    link = os.path.join(BOOT, "out")
    if not os.path.islink(link):
        os.symlink(elsewhere, link)
    rc, out = hm("add", c.inst, link, "/mnt/nope", "--type", "bind")
    t.ok(rc != 0 and "is not inside a boot-time share" in out,
         "a symlink in the share leading out of it: refused", out)
    os.unlink(link)
    # bind takes no options
    rc, out = hm("add", c.inst, os.path.join(BOOT, "proj"), "/mnt/nope", "--type", "bind",
                 "-o", "cache=none")
    t.ok(rc != 0 and "unknown option" in out and "bind" in out, "options refused", out)
    # A share the guest has not mounted: the agent refuses (not a share).
    sub = os.path.join(BOOT, "proj")
    c.guest("umount /mnt/boot")
    rc, out = hm("add", c.inst, sub, "/mnt/nope", "--type", "bind")
    t.ok(rc != 0 and ("no such directory" in out or "not inside a share" in out),
         "boot share not mounted in the guest: refused by the agent", out)
    t.ok(not nothing_left(c, "/mnt/nope"), "nothing left", nothing_left(c, "/mnt/nope"))
    c.guest("mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 boot9p /mnt/boot")


def case_api_and_python(c):
    """The HTTP API and the Python binding carry the type."""
    t = c.t
    host = os.path.join(BOOT, "proj")
    st, body = api(c.inst, "POST", "/v1/mounts",
                   {"hostPath": host, "mountPoint": "/mnt/api", "type": "bind"})
    t.ok(st == 201 and body.get("type") == "bind" and body.get("tag") == "/mnt/boot/proj",
         "POST /v1/mounts type bind: 201", body)
    rc, out = c.guest("cat /mnt/api/probe")
    t.ok(out.strip() == "probe", "guest reads the API's bind", out)
    elsewhere = os.path.join(c.work, "elsewhere")
    os.makedirs(elsewhere, exist_ok=True)
    st, body = api(c.inst, "POST", "/v1/mounts",
                   {"hostPath": elsewhere, "mountPoint": "/mnt/api2", "type": "bind"})
    t.ok(st == 400 and "not inside a boot-time share" in str(body),
         "POST outside every share: 400 naming the problem", body)
    st, body = api(c.inst, "DELETE", "/v1/mounts", {"mountPoint": "/mnt/api"})
    t.ok(st == 200 and not nothing_left(c, "/mnt/api"), "DELETE: nothing left", body)
    if not os.environ.get("HOTMOUNT_LIB"):
        t.note("HOTMOUNT_LIB not set: Python binding part skipped")
        return
    import hotmount
    with hotmount.Client(socket=os.path.join(c.inst, "hotmountd.sock")) as cl:
        m = cl.add(host, "/mnt/py", type="bind", writable=True)
        t.ok(m.type == "bind" and m.tag == "/mnt/boot/proj" and m.writable,
             "Python: add(type='bind') returns the mount", m)
        rc, out = c.guest("cat /mnt/py/probe")
        t.ok(out.strip() == "probe", "guest reads the Python binding's bind", out)
        try:
            cl.add(elsewhere, "/mnt/py2", type="bind")
            t.ok(False, "Python: outside every share refused")
        except hotmount.InvalidError as e:
            t.ok("not inside a boot-time share" in str(e), "Python: InvalidError naming it", e)
        cl.remove("/mnt/py")
    t.ok(not nothing_left(c, "/mnt/py"), "Python: removed, nothing left",
         nothing_left(c, "/mnt/py"))


def settled(c, mp):
    lst = c.list_json()
    if not lst:
        left = nothing_left(c, mp)
        return not left, "gone; leftovers %s" % left
    if len(lst) != 1 or lst[0]["mountPoint"] != mp or lst[0]["state"] != "mounted":
        return False, "registry: %s" % lst
    rc, out = c.guest("cat %s/probe" % mp)
    return out.strip() == "probe", "listed as mounted; guest read %r" % out


def case_crash(c):
    t = c.t
    host = os.path.join(BOOT, "proj")
    for point in ADD_POINTS:
        stop_daemon(c.inst)
        d = start_daemon(c.inst, point)
        rc, out = hm("add", c.inst, host, "/mnt/crash", "--type", "bind")
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during a bind add" % point, out + d.stderr)
        d = start_daemon(c.inst)
        ok, detail = settled(c, "/mnt/crash")
        t.ok(d.returncode == 0 and ok, "after restart (%s): whole or gone" % point,
             detail + d.stderr)
        if c.list_json():
            hm("remove", c.inst, "/mnt/crash")
        left = nothing_left(c, "/mnt/crash")
        t.ok(not left, "clean after %s" % point, left)
    for point in REMOVE_POINTS:
        stop_daemon(c.inst)
        start_daemon(c.inst)
        rc, out = hm("add", c.inst, host, "/mnt/crash", "--type", "bind")
        if not t.ok(rc == 0, "add before the kill at %s" % point, out):
            continue
        stop_daemon(c.inst)
        start_daemon(c.inst, point)
        rc, out = hm("remove", c.inst, "/mnt/crash")
        died = wait_dead(c.inst)
        t.ok(rc != 0 and died, "daemon killed at %s during a bind remove" % point, out)
        d = start_daemon(c.inst)
        left = nothing_left(c, "/mnt/crash")
        t.ok(d.returncode == 0 and not left,
             "after restart (%s): the remove was finished, nothing left" % point,
             "%s %s" % (left, d.stderr))
    # The guest dropped the bind while the daemon was down: forgotten.
    rc, out = hm("add", c.inst, host, "/mnt/crash", "--type", "bind")
    stop_daemon(c.inst)
    c.guest("umount /mnt/crash")
    d = start_daemon(c.inst)
    lst = c.list_json()
    t.ok(rc == 0 and d.returncode == 0 and not lst,
         "restart after the guest unmounted the bind: the entry is dropped", "%s %s" % (out, lst))
    c.guest("rmdir /mnt/crash")
    stop_daemon(c.inst)
    start_daemon(c.inst)


def case_latency(c):
    """CLI call until the guest reads, and remove, median of 7 (TCG)."""
    t = c.t
    host = os.path.join(BOOT, "proj")
    adds, clis, removes = [], [], []
    for i in range(7):
        mp = "/mnt/lat%d" % i
        t0 = time.monotonic()
        rc, out = hm("add", c.inst, host, mp, "--type", "bind")
        clis.append(time.monotonic() - t0)
        rc2, out2 = c.guest("cat %s/probe" % mp)
        adds.append(time.monotonic() - t0)
        if rc != 0 or out2.strip() != "probe":
            t.ok(False, "latency add %d" % i, out + out2)
            return
        t0 = time.monotonic()
        rc, out = hm("remove", c.inst, mp)
        removes.append(time.monotonic() - t0)
    # The guest read goes through the test channel (a serial console under
    # TCG), which dominates; the CLI call alone is the part we own.
    t.note("bind add: CLI call median %.3f s, CLI + guest read over the test channel %.3f s; "
           "remove median %.3f s" % (statistics.median(clis), statistics.median(adds),
                                     statistics.median(removes)))
    t.ok(not nothing_left(c, "/mnt/lat0"), "latency rounds left nothing")


CASES = [case_boot_shares, case_read_only, case_read_only_share, case_writable, case_refused,
         case_api_and_python, case_crash, case_latency]

if __name__ == "__main__":
    try:
        rc = run("hm-bind-", CASES, vm_kwargs=vm_kwargs, daemon_args=lambda c: daemon_args())
    finally:
        shutil.rmtree(SHARES, ignore_errors=True)
    sys.exit(rc)
