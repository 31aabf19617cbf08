#!/usr/bin/env python3
"""e2e-sshfs: reverse-sshfs hot-mounts against a real sshd in the guest.

The guest (dropbear, sshfs, FUSE) boots WITHOUT hotmount-agent (kernel word
hm.noagent): this transport needs none. QEMU user networking forwards a
loopback port to the guest's sshd; hotmountd gets it with --ssh-* options.
Everything goes through the `hotmount` CLI; the guest is read through the
test channel. Prints TAP.

Environment as for test_virtiofs.py (HOTMOUNT_BIN, HM_AGENT_BIN,
HM_E2E_IMAGE_DIR, HM_E2E_KEEP).
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hmtest import (hm, ownership_checks, run, skip_reason, ssh_material,  # noqa: E402
                    start_daemon, stop_daemon, write_known_hosts)
from vm import free_tcp_port  # noqa: E402

PORT = free_tcp_port()
T = ["--type", "reverse-sshfs"]


def fingerprint(key_line):
    """SHA256:... of an OpenSSH public key line, as ssh-keygen -l prints it."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def daemon_args(c):
    m = ssh_material(c.images)
    c.ssh = m
    c.known_hosts = write_known_hosts(os.path.join(c.work, "known_hosts"), PORT,
                                      m["host_key_line"])
    c.wrong_known_hosts = write_known_hosts(os.path.join(c.work, "wrong_known_hosts"), PORT,
                                            m["wrong_host_key_line"])
    return ["--ssh-host", "127.0.0.1", "--ssh-port", str(PORT), "--ssh-identity",
            m["client_key"], "--ssh-known-hosts", c.known_hosts]


def restart(c, *args):
    stop_daemon(c.inst)
    d = start_daemon(c.inst, *args)
    return d.returncode, d.stdout + d.stderr


def state_of(c, guest_path):
    for m in c.list_json():
        if m["mountPoint"] == guest_path:
            return m["state"], m.get("reason", "")
    return None, ""


def wait_state(c, guest_path, want, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st, why = state_of(c, guest_path)
        if st == want:
            return time.monotonic() - t0, why
        time.sleep(0.1)
    return None, state_of(c, guest_path)


def guest_sshfs(c, settle=3.0):
    """sshfs processes in the guest (pid, state, command line), zombies
    (exited, waiting for init to reap them) left out; one that is still
    exiting gets up to `settle` seconds."""
    end = time.monotonic() + settle
    while True:
        rc, out = c.guest("for p in $(pidof sshfs); do s=$(sed -n 's/^State:\\s*//p' "
                          "/proc/$p/status 2>/dev/null); case $s in Z*|'') ;; *) echo \"$p $s "
                          "$(tr '\\0' ' ' < /proc/$p/cmdline)\";; esac; done")
        procs = [l for l in out.splitlines() if l.strip()]
        if not procs or time.monotonic() >= end:
            return procs
        time.sleep(0.2)


def nothing_left(c, what):
    left = c.leftovers()
    procs = guest_sshfs(c)
    mounts = [l for l in c.guest("cat /proc/mounts")[1].splitlines() if "fuse.sshfs" in l]
    c.t.ok(not left and not procs and not mounts, "nothing left after %s (host: no sftp-server,"
           " registry empty; guest: no sshfs, no mount)" % what, (left, procs, mounts))


def doctor_sshfs(c):
    """The reverse-sshfs check of `hotmount doctor --json` (status, detail, fix)."""
    rc, out = hm("doctor", c.inst, "--json")
    try:
        for ch in json.loads(out)["checks"]:
            if ch["name"] == "sshfs":
                return ch["status"], ch["detail"], ch["fix"]
    except (ValueError, KeyError):
        pass
    return None, out, []


def case_agentless(c):
    rc, out = c.guest("pidof hotmount-agent; echo rc=$?")
    c.t.ok("rc=1" in out, "the guest runs no hotmount-agent (hm.noagent)", out)
    st = json.loads(hm("status", c.inst, "--json")[1])
    c.t.ok("reverse-sshfs" in st.get("backends", "") and st.get("ssh", "").endswith(
        ":%d" % PORT), "status lists the reverse-sshfs backend and its SSH target", st)
    with open(os.path.join(c.inst, "ssh.json")) as f:
        cfg = json.load(f)
    mode = os.stat(os.path.join(c.inst, "ssh.json")).st_mode & 0o777
    c.t.ok(cfg.get("port") == str(PORT) and mode == 0o600,
           "SSH settings stored in INSTANCE/ssh.json (0600)", (cfg, oct(mode)))
    st, detail, fix = doctor_sshfs(c)
    c.t.ok(st == "ok" and "host key trusted" in detail,
           "doctor: reverse-sshfs ok (host key, login, sshfs and FUSE in the guest)", detail)


def case_readonly(c):
    t = c.t
    host = os.path.join(c.work, "ro")
    os.makedirs(host)
    with open(os.path.join(host, "hello.txt"), "w") as f:
        f.write("hello over sshfs\n")
    t0 = time.monotonic()
    rc, out = hm("add", c.inst, host, "/mnt/ro", *T)
    t.note("reverse-sshfs add took %.2f s" % (time.monotonic() - t0))
    t.ok(rc == 0, "add read-only reverse-sshfs mount (agent-less)", out)
    rc, out = c.guest("cat /mnt/ro/hello.txt")
    t.ok(rc == 0 and out.strip() == "hello over sshfs", "guest reads the host file", out)
    rc, out = c.guest("grep ' /mnt/ro ' /proc/mounts")
    t.ok(rc == 0 and "fuse.sshfs" in out and " ro," in out, "guest sees a ro fuse.sshfs mount",
         out)
    rc, out = c.guest("echo x > /mnt/ro/new.txt")
    t.ok(rc != 0 and not os.path.exists(os.path.join(host, "new.txt")), "guest write refused",
         out)
    # Guest root lifts its own flag: the host's sftp-server (-R, read-only
    # bind) must still refuse.
    rc, out = c.guest("mount -o remount,rw /mnt/ro; echo tamper > /mnt/ro/hello.txt; echo rc=$?")
    with open(os.path.join(host, "hello.txt")) as f:
        t.ok(f.read() == "hello over sshfs\n", "write refused by the host even after guest "
             "remount,rw", out)
    procs = c.sftp_procs()
    t.ok(len(procs) == 1, "one sftp-server serves it", procs)
    if procs:
        root = os.readlink("/proc/%d/root" % procs[0])
        rc, out = c.guest("ls /mnt/ro/../ /mnt/ro/etc 2>&1; cat /mnt/ro/../../etc/shadow 2>&1")
        t.ok(root != "/" and "root:" not in out,
             "sftp-server is confined (chroot %s), the guest cannot reach host files" % root,
             out)
    rc, out = hm("remove", c.inst, "/mnt/ro")
    t.ok(rc == 0, "remove", out)
    nothing_left(c, "remove")


def case_writable(c):
    t = c.t
    host = os.path.join(c.work, "rw")
    os.makedirs(host)
    rc, out = hm("add", c.inst, host, "/mnt/rw", "--writable", *T)
    t.ok(rc == 0, "add writable reverse-sshfs mount", out)
    rc, out = c.guest("echo from-guest > /mnt/rw/g.txt && sync")
    p = os.path.join(host, "g.txt")
    t.ok(rc == 0 and os.path.exists(p) and open(p).read() == "from-guest\n",
         "guest write lands on the host", out)
    with open(os.path.join(host, "h.txt"), "w") as f:
        f.write("from-host\n")
    rc, out = c.guest("cat /mnt/rw/h.txt")
    t.ok(out.strip() == "from-host", "host write visible in the guest", out)
    rc, out = c.guest("dd if=/dev/urandom of=/mnt/rw/big bs=64k count=64 2>&1 && "
                      "md5sum /mnt/rw/big")
    want = hashlib.md5(open(os.path.join(host, "big"), "rb").read()).hexdigest() \
        if os.path.exists(os.path.join(host, "big")) else None
    t.ok(rc == 0 and want and want in out, "4 MiB written by the guest arrives intact", out)
    rc, out = hm("remove", c.inst, "/mnt/rw")
    t.ok(rc == 0, "remove writable", out)
    nothing_left(c, "remove")


def case_odd_path(c):
    t = c.t
    host = os.path.join(c.work, "with space, comma 'q' \u00e9")
    os.makedirs(host)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("odd\n")
    rc, out = hm("add", c.inst, host, "/mnt/odd dir", *T)
    rc2, out2 = c.guest("cat '/mnt/odd dir/f'")
    t.ok(rc == 0 and out2.strip() == "odd", "host path with space, comma, quote, unicode and a "
         "guest path with a space", (out, out2))
    rc, out = hm("remove", c.inst, "/mnt/odd dir")
    t.ok(rc == 0, "remove it", out)
    rc, out = hm("add", c.inst, host, "/mnt/x", *T, "-o", "idmap=bogus")
    t.ok(rc == 3 and "idmap" in out, "a bad option is refused, naming it (exit 3)", out)
    nothing_left(c, "bad input")


def case_options(c):
    t = c.t
    host = os.path.join(c.work, "opts")
    os.makedirs(host)
    os.symlink("/etc/hostname", os.path.join(host, "abs-link"))
    rc, out = hm("add", c.inst, host, "/mnt/opts", *T, "-o", "cache=off", "-o",
                 "followSymlinks=on", "-o", "idmap=user")
    rc2, out2 = c.guest("grep ' /mnt/opts ' /proc/mounts; cat /mnt/opts/abs-link 2>&1; "
                        "for p in $(pidof sshfs); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done")
    t.ok(rc == 0 and "dir_cache=no" in out2 and "follow_symlinks" in out2 and
         "idmap=user" in out2, "sshfs options reach sshfs (cache=off -> dir_cache=no, "
         "follow_symlinks, idmap=user)", (out, out2))
    t.ok(open("/etc/hostname").read().strip() not in out2.split("\n")[1:2],
         "an absolute symlink does not reach the host's /etc (confinement)", out2)
    rc, out = hm("remove", c.inst, "/mnt/opts")
    t.ok(rc == 0, "remove", out)


def case_ownership(c):
    """Ownership both ways (hmtest.ownership_checks). sftp-server writes as
    the host user (root in the root pass; rootless it is uid 0 of its user
    namespace, the host user outside): whatever guest user writes through
    sshfs, the host user owns it, and the host user's files show as guest
    root's. With mapUid/mapGid=1000, sshfs's uid=/gid= show every file as
    guest 1000's; writes are still the host user's, guest root's too."""
    me = (os.geteuid(), os.getegid())
    ownership_checks(c, "reverse-sshfs", T, {
        "host_in_guest": (0, 0), "user_to_host": me, "map": {"other": me}})


def case_busy(c):
    """A guest process keeps the mount busy: remove falls back to a lazy
    unmount and still leaves nothing."""
    t = c.t
    host = os.path.join(c.work, "busy")
    os.makedirs(host)
    rc, out = hm("add", c.inst, host, "/mnt/busy", *T)
    t.ok(rc == 0, "add", out)
    c.guest("(cd /mnt/busy && exec sleep 60) >/dev/null 2>&1 &")
    rc, out = c.guest("umount /mnt/busy 2>&1; echo rc=$?")
    t.ok("rc=0" not in out, "the mount is busy (a plain guest umount fails)", out)
    t0 = time.monotonic()
    rc, out = hm("remove", c.inst, "/mnt/busy")
    t.ok(rc == 0, "remove of a busy mount succeeds (lazy) in %.1f s" % (time.monotonic() - t0),
         out)
    nothing_left(c, "removing a busy mount")
    c.guest("killall sleep; true")


def case_no_ssh_settings(c):
    """Without SSH settings the daemon has no reverse-sshfs backend: a clear
    refusal, nothing left."""
    t = c.t
    os.rename(os.path.join(c.inst, "ssh.json"), os.path.join(c.work, "ssh.json.saved"))
    rc0, out0 = restart(c)
    rc, out = hm("add", c.inst, c.work, "/mnt/nossh", *T)
    t.ok(rc0 == 0 and rc == 3 and "--ssh-host" in out,
         "reverse-sshfs without SSH settings is refused, saying what to give (exit 3)", out)
    st, detail, fix = doctor_sshfs(c)
    t.ok(st == "skip" and "--ssh-host" in detail, "doctor skips reverse-sshfs, saying how to "
         "enable it", detail)
    nothing_left(c, "a refused reverse-sshfs add")
    os.rename(os.path.join(c.work, "ssh.json.saved"), os.path.join(c.inst, "ssh.json"))
    rc, out = restart(c)
    t.ok(rc == 0, "the daemon takes the stored settings again", out)


def case_bad_host_key(c):
    t = c.t
    host = os.path.join(c.work, "hk")
    os.makedirs(host, exist_ok=True)
    rc, out = restart(c, "--ssh-known-hosts", c.wrong_known_hosts)
    t.ok(rc == 0, "daemon restarted with a known_hosts holding another key", out)
    rc, out = hm("add", c.inst, host, "/mnt/hk", *T)
    t.ok(rc == 6 and "host key" in out and "refusing" in out,
         "add refused: the guest's key does not match (exit 6, says so)", out)
    st, detail, fix = doctor_sshfs(c)
    t.ok(st == "fail" and "CHANGED" in detail and any("--ssh-known-hosts" in f for f in fix),
         "doctor: reverse-sshfs fails naming the changed key, and says what to give", (detail,
                                                                                      fix))
    nothing_left(c, "a refused host key")
    wrong_fp = fingerprint(c.ssh["wrong_host_key_line"])
    rc, out = restart(c, "--ssh-fingerprint", wrong_fp)
    rc, out = hm("add", c.inst, host, "/mnt/hk", *T)
    t.ok(rc == 6 and wrong_fp in out and "mismatch" in out,
         "add refused: pinned fingerprint differs (the message names both)", out)
    right_fp = fingerprint(c.ssh["host_key_line"])
    rc, out = restart(c, "--ssh-fingerprint", right_fp)
    rc2, out2 = hm("add", c.inst, host, "/mnt/hk", *T)
    rc3, out3 = hm("remove", c.inst, "/mnt/hk")
    t.ok(rc == 0 and rc2 == 0 and rc3 == 0, "the right pinned fingerprint works", (out, out2,
                                                                                  out3))
    rc, out = restart(c, "--ssh-known-hosts", c.known_hosts)
    t.ok(rc == 0, "back to the known_hosts file", out)
    nothing_left(c, "host key cases")


def kill_guest_sessions(c):
    """Kills the guest's dropbear processes serving connections: the children
    of the listening dropbear (which stays)."""
    return c.guest("for p in $(pidof dropbear); do pp=$(awk '{print $4}' /proc/$p/stat); "
                   "[ \"$(cat /proc/$pp/comm)\" = dropbear ] && kill -9 $p; done; true")


def case_connection_killed(c):
    t = c.t
    host = os.path.join(c.work, "kill")
    os.makedirs(host)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("alive\n")
    rc, out = hm("add", c.inst, host, "/mnt/kill", *T)
    t.ok(rc == 0, "add", out)
    t0 = time.monotonic()
    kill_guest_sessions(c)
    took, why = wait_state(c, "/mnt/kill", "broken", 10)
    t.ok(took is not None and took < 5, "SSH connection killed -> broken in %s s" %
         ("%.2f" % took if took is not None else "more than 10"), why)
    t.note("reason: %s" % (why,))
    rc, out = hm("remove", c.inst, "/mnt/kill")
    t.ok(rc == 0, "remove of the broken mount", out)
    nothing_left(c, "remove of a broken mount")
    del t0


def case_link_down(c):
    t = c.t
    host = os.path.join(c.work, "link")
    os.makedirs(host)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("link\n")
    rc, out = hm("add", c.inst, host, "/mnt/link", *T, "--persist")
    t.ok(rc == 0, "add --persist", out)
    c.vm.qmp("set_link", {"name": "test-nic0", "up": False})
    took, why = wait_state(c, "/mnt/link", "broken", 15)
    t.ok(took is not None and took < 5,
         "guest link down (no TCP reset: QEMU's slirp keeps the host side open) -> broken by "
         "keepalive in %s s" % ("%.2f" % took if took is not None else "more than 15"), why)
    c.vm.qmp("set_link", {"name": "test-nic0", "up": True})
    took, why = wait_state(c, "/mnt/link", "mounted", 60)
    t.ok(took is not None, "link up again -> the --persist mount is re-established in %s s" %
         ("%.1f" % took if took is not None else "more than 60"), why)
    rc, out = c.guest("cat /mnt/link/f")
    t.ok(out.strip() == "link", "guest reads through the new connection", out)
    rc, out = hm("remove", c.inst, "/mnt/link")
    t.ok(rc == 0, "remove", out)
    nothing_left(c, "remove after a re-established connection")


def case_daemon_restart(c):
    t = c.t
    host = os.path.join(c.work, "restart")
    os.makedirs(host)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("survives\n")
    rc, out = hm("add", c.inst, host, "/mnt/restart", *T, "--writable")
    t.ok(rc == 0, "add", out)
    pid = int(open(os.path.join(c.inst, "hotmountd.pid")).read())
    os.kill(pid, 9)
    time.sleep(0.5)
    d = start_daemon(c.inst)
    st, why = state_of(c, "/mnt/restart")
    rc, out = c.guest("cat /mnt/restart/f && echo w > /mnt/restart/w")
    t.ok(d.returncode == 0 and st == "mounted" and out.strip() == "survives" and
         os.path.exists(os.path.join(host, "w")),
         "hotmountd killed -9 and restarted: the mount is re-established and works", (st, why,
                                                                                     out))
    t.ok(len(c.sftp_procs()) == 1, "exactly one sftp-server after the restart", c.sftp_procs())
    rc, out = hm("remove", c.inst, "/mnt/restart")
    t.ok(rc == 0, "remove", out)
    nothing_left(c, "remove after a daemon restart")


ADD_POINTS = ["add:reserved", "add:sftp-server-started", "add:attached", "add:guest-mounted"]
REMOVE_POINTS = ["remove:detaching", "remove:guest-unmounted", "remove:sftp-server-stopped"]


def daemon_with_fault(c, fault):
    """Restarts hotmountd with HOTMOUNT_FAULT=fault (it kills itself there)."""
    stop_daemon(c.inst)
    env = dict(os.environ, HOTMOUNT_FAULT=fault)
    return subprocess.run([os.path.join(os.path.dirname(os.environ.get("HOTMOUNT_BIN", "")),
                                        "hotmountd"), c.inst, "--debug"],
                          capture_output=True, text=True, timeout=60, env=env)


def wait_gone(pidfile, timeout=10):
    try:
        pid = int(open(pidfile).read())
    except (OSError, ValueError):
        return
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def case_crash_points(c):
    """hotmountd killed at each step of an add and a remove: after a restart
    the mount is either whole (listed mounted, readable in the guest) or
    fully gone; nothing leaks."""
    t = c.t
    host = os.path.join(c.work, "crash")
    os.makedirs(host)
    with open(os.path.join(host, "f"), "w") as f:
        f.write("crash\n")
    pidfile = os.path.join(c.inst, "hotmountd.pid")
    for point in ADD_POINTS + REMOVE_POINTS:
        if point.startswith("remove:"):
            d = start_daemon(c.inst)
            rc, out = hm("add", c.inst, host, "/mnt/crash", *T)
            if rc != 0:
                t.ok(False, "%s: setup add" % point, out)
                continue
        d = daemon_with_fault(c, point)
        if point.startswith("add:"):
            rc, out = hm("add", c.inst, host, "/mnt/crash", *T)
        else:
            rc, out = hm("remove", c.inst, "/mnt/crash")
        wait_gone(pidfile)
        died = rc != 0
        d = start_daemon(c.inst)
        st, why = state_of(c, "/mnt/crash")
        grc, gout = c.guest("cat /mnt/crash/f 2>&1")
        whole = st == "mounted" and gout.strip() == "crash" and len(c.sftp_procs()) == 1
        gone = st is None and not c.leftovers() and not guest_sshfs(c) and \
            "fuse.sshfs" not in c.guest("cat /proc/mounts")[1]
        t.ok(died and d.returncode == 0 and (whole or gone),
             "killed at %s, restarted: %s" % (point, "whole" if whole else "gone" if gone else
                                              "NEITHER (state %s: %s)" % (st, why)),
             (out, gout, c.leftovers()))
        if st is not None:
            rc, out = hm("remove", c.inst, "/mnt/crash")
            if rc != 0:
                t.ok(False, "%s: cleanup remove" % point, out)
    nothing_left(c, "the crash points")


def vm_kwargs(images):
    return {"ssh_port": PORT, "append_extra": "hm.noagent"}


if __name__ == "__main__":
    why = skip_reason()
    if not why and not os.path.exists("/usr/lib/openssh/sftp-server"):
        why = "no /usr/lib/openssh/sftp-server (openssh-sftp-server)"
    if why:
        print("1..0 # SKIP " + why)
        sys.exit(0)
    sys.exit(run("hm-e2e-sshfs-", [case_agentless, case_readonly, case_writable, case_odd_path,
                                   case_options, case_ownership, case_busy,
                                   case_no_ssh_settings,
                                   case_bad_host_key, case_connection_killed,
                                   case_link_down, case_daemon_restart, case_crash_points],
                 vm_kwargs=vm_kwargs, daemon_args=daemon_args))
