#!/usr/bin/env python3
"""e2e-ssh-guest: the guest side of the reverse-sshfs transport, by hand.

Boots the guest with a forwarded SSH port (vm.VM(ssh_port=...)) and checks,
with the OpenSSH client and sftp-server of this host and no libhotmount code:
- key login as root works against the image's host key and fails against a
  wrong one, with an unauthorized client key and without a key (the server
  offers no password method);
- reverse sshfs: `sshfs -o passive` run in the guest over ssh, whose stdin and
  stdout are a host sftp-server's; a host file is read and files are written,
  renamed and removed from the guest (host dir and guest mount point with a
  space, a comma, a colon and a quote); `fusermount3 -u` in the guest ends
  sshfs, the ssh session and sftp-server;
- a killed ssh connection: sshfs ends and unmounts (also with a process's
  cwd in the mount), sftp-server ends, sshd still serves;
- sshfs killed with SIGKILL in the guest: ssh and sftp-server end, the guest
  keeps a dead mount (ENOTCONN at once, no hang) until fusermount3 -u;
- sftp-server -R (read-only on the host side) with -o allow_other;
- a second boot with hm.noagent: no hotmount-agent runs, ssh and sshfs work.
What the guest sees is read through the test channel (vm.sh). Prints TAP;
timings as comments.

Environment: HM_E2E_IMAGE_DIR, HM_AGENT_BIN, HOTMOUNT_BIN (see vm.py),
HM_SFTP_SERVER (default /usr/lib/openssh/sftp-server), HM_E2E_KEEP=1.
"""

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hmtest  # noqa: E402
from hmtest import TAP, ssh_argv, ssh_material, write_known_hosts  # noqa: E402
from vm import VM, build_image, free_tcp_port  # noqa: E402

SFTP_SERVER = os.environ.get("HM_SFTP_SERVER", "/usr/lib/openssh/sftp-server")
ODD = "a b,c:d'e"  # a space, a comma, a colon and a quote


def wait_for(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Guest:
    """One booted VM plus what is needed to ssh into it."""

    def __init__(self, t, vm, mat, work):
        self.t, self.vm, self.mat, self.work = t, vm, mat, work
        self.port = vm.ssh_port
        self.kh = write_known_hosts(os.path.join(work, "known_hosts"), self.port,
                                    mat["host_key_line"])

    def ssh(self, cmd, key=None, kh=None, extra=(), timeout=60):
        argv = ssh_argv(self.port, key or self.mat["client_key"], kh or self.kh)
        argv[1:1] = list(extra)
        return subprocess.run(argv + [cmd], capture_output=True, text=True, timeout=timeout)

    def wait_sshd(self, timeout=90):
        """Until a login works (dropbear may still be starting); returns the
        seconds it took, or None."""
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            last = self.ssh("true", extra=["-o", "ConnectTimeout=10"], timeout=30)
            if last.returncode == 0:
                return time.monotonic() - t0
            time.sleep(0.5)
        self.t.note("last ssh attempt: %s" % (last.stderr if last else "none"))
        return None

    def agent_pids(self):
        rc, out = self.vm.sh("pidof hotmount-agent")
        return out.split() if rc == 0 else []

    def guest_mounted(self, mnt):
        # /proc/mounts escapes a space as \040
        esc = mnt.replace("\\", "\\134").replace(" ", "\\040")
        rc, out = self.vm.sh("cat /proc/mounts")
        return any(l.split()[1] == esc for l in out.splitlines() if len(l.split()) > 2)

    def sshfs_pids(self):
        rc, out = self.vm.sh("pidof sshfs")
        return out.split() if rc == 0 else []


class ReverseSshfs:
    """sshfs -o passive in the guest, its stdin/stdout piped over ssh to a host
    sftp-server: the transport the library is to set up with libssh."""

    def __init__(self, g, host_dir, guest_dir, tag, opts="", sftp_args=()):
        self.g = g
        cmd = "mkdir -p %s && exec sshfs -o passive%s %s %s" % (
            shlex.quote(guest_dir), opts and "," + opts, shlex.quote(":" + host_dir),
            shlex.quote(guest_dir))
        self.ssh_err = open(os.path.join(g.work, "ssh-%s.err" % tag), "w+")
        self.sftp_err = open(os.path.join(g.work, "sftp-%s.err" % tag), "w+")
        to_ssh_r, to_ssh_w = os.pipe()    # sftp-server stdout -> ssh stdin
        to_sftp_r, to_sftp_w = os.pipe()  # ssh stdout -> sftp-server stdin
        try:
            self.sftp = subprocess.Popen([SFTP_SERVER, "-e", "-l", "INFO"] + list(sftp_args),
                                         stdin=to_sftp_r,
                                         stdout=to_ssh_w, stderr=self.sftp_err)
            argv = ssh_argv(g.port, g.mat["client_key"], g.kh) + [cmd]
            self.ssh = subprocess.Popen(argv, stdin=to_ssh_r, stdout=to_sftp_w,
                                        stderr=self.ssh_err)
        finally:
            for fd in (to_ssh_r, to_ssh_w, to_sftp_r, to_sftp_w):
                os.close(fd)
        self.t0 = time.monotonic()

    def wait_mounted(self, guest_dir, timeout=60):
        ok = wait_for(lambda: self.g.guest_mounted(guest_dir) or self.ssh.poll() is not None,
                      timeout, 0.2)
        return ok and self.ssh.poll() is None, time.monotonic() - self.t0

    def wait_ended(self, timeout=20):
        try:
            self.ssh.wait(timeout)
            self.sftp.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def logs(self):
        out = []
        for f in (self.ssh_err, self.sftp_err):
            f.seek(0)
            out.append("%s: %s" % (os.path.basename(f.name), f.read()[-2000:]))
        return "\n".join(out)

    def kill(self):
        for p in (self.ssh, self.sftp):
            if p.poll() is None:
                p.kill()
                p.wait()
        self.ssh_err.close()
        self.sftp_err.close()


def logins(g, t):
    """Host key checked strictly; only the authorized key gets in."""
    took = g.wait_sshd()
    t.ok(took is not None, "ssh root@guest with the image key and its host key works")
    if took is None:
        return
    t.note("first login %.1f s after the test channel was ready" % took)
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        r = g.ssh("true")
        times.append(time.monotonic() - t0)
    t.note("ssh true (connect + handshake + auth + exec) median %.2f s, min %.2f, max %.2f"
           % (statistics.median(times), min(times), max(times)))
    r = g.ssh("id -u; echo $HOME")
    t.ok(r.returncode == 0 and r.stdout.split() == ["0", "/root"],
         "logged in as root, home /root", r.stdout + r.stderr)

    wrong = write_known_hosts(os.path.join(g.work, "known_hosts.wrong"), g.port,
                              g.mat["wrong_host_key_line"])
    r = g.ssh("true", kh=wrong, extra=["-o", "LogLevel=INFO"])
    t.ok(r.returncode == 255 and "Host key verification failed" in r.stderr,
         "a known_hosts with the wrong host key: refused", "%d %s" % (r.returncode, r.stderr))

    r = g.ssh("true", key=g.mat["wrong_client_key"], extra=["-o", "LogLevel=INFO"])
    t.ok(r.returncode == 255 and "Permission denied" in r.stderr,
         "an unauthorized client key: refused", "%d %s" % (r.returncode, r.stderr))

    r = g.ssh("true", extra=["-v", "-o", "PubkeyAuthentication=no"])
    methods = [l for l in r.stderr.splitlines() if "Authentications that can continue" in l]
    t.ok(r.returncode == 255 and methods and all("password" not in l and
                                                 "keyboard-interactive" not in l
                                                 for l in methods),
         "no key: refused, the server offers publickey only", "\n".join(methods) or r.stderr)


def sshfs_cycle(g, t, label, odd=True):
    """One reverse-sshfs mount: read, write, rename, remove, unmount, all
    processes end."""
    host_dir = os.path.join(g.work, ("share " + ODD) if odd else "share")
    guest_dir = ("/mnt/x " + ODD) if odd else "/mnt/x"
    os.makedirs(host_dir, exist_ok=True)
    with open(os.path.join(host_dir, "from-host.txt"), "w") as f:
        f.write("host content %s\n" % label)
    rs = ReverseSshfs(g, host_dir, guest_dir, label)
    try:
        up, took = rs.wait_mounted(guest_dir)
        if not t.ok(up, "%s: sshfs -o passive mounted %r in the guest" % (label, guest_dir),
                    rs.logs()):
            return
        t.note("%s: mounted %.2f s after ssh started" % (label, took))
        qd = shlex.quote(guest_dir)
        rc, out = g.vm.sh("cat %s/from-host.txt" % qd)
        t.ok(rc == 0 and out == "host content %s\n" % label,
             "%s: guest reads the host file through sshfs" % label, out)
        rc, out = g.vm.sh("echo 'guest content' > %s/from-guest.txt && sync" % qd)
        path = os.path.join(host_dir, "from-guest.txt")
        t.ok(rc == 0 and os.path.exists(path) and open(path).read() == "guest content\n",
             "%s: a file written in the guest is on the host" % label, out)
        rc, out = g.vm.sh("cd %s && mv from-guest.txt renamed.txt && rm from-host.txt && "
                          "mkdir sub && ls" % qd)
        t.ok(rc == 0 and sorted(os.listdir(host_dir)) == ["renamed.txt", "sub"],
             "%s: rename, unlink, mkdir from the guest reach the host" % label,
             "%s\nhost: %s" % (out, os.listdir(host_dir)))
        t.ok(rs.ssh.poll() is None and len(g.sshfs_pids()) == 1,
             "%s: sshfs stays in the foreground (ssh session open) while mounted" % label)
        t0 = time.monotonic()
        rc, out = g.vm.sh("fusermount3 -u %s" % qd)
        ended = rs.wait_ended()
        t.ok(rc == 0 and ended and rs.ssh.returncode == 0 and rs.sftp.returncode == 0,
             "%s: fusermount3 -u ends sshfs, ssh (status 0) and sftp-server (status 0)" % label,
             "umount %d %s; ssh %s sftp %s\n%s" % (rc, out, rs.ssh.poll(), rs.sftp.poll(),
                                                   rs.logs()))
        t.note("%s: unmount to both host processes gone %.2f s" % (label,
                                                                    time.monotonic() - t0))
        t.ok(not g.guest_mounted(guest_dir) and g.sshfs_pids() == [],
             "%s: nothing left in the guest (no mount, no sshfs)" % label)
    finally:
        rs.kill()


def killed_connection(g, t):
    """The ssh client dies under a live mount, while a guest process has its
    cwd in it: sshfs sees EOF, ends itself (SIGTERM to itself) and libfuse
    unmounts (lazily: the busy mount goes too)."""
    host_dir = os.path.join(g.work, "share-kill")
    guest_dir = "/mnt/kill"
    os.makedirs(host_dir, exist_ok=True)
    open(os.path.join(host_dir, "f"), "w").write("x\n")
    rs = ReverseSshfs(g, host_dir, guest_dir, "kill")
    try:
        up, _ = rs.wait_mounted(guest_dir)
        if not t.ok(up, "kill: mounted", rs.logs()):
            return
        g.vm.check("setsid sh -c 'cd %s && exec sleep 600' </dev/null >/dev/null 2>&1 &"
                   % guest_dir)
        rs.ssh.kill()
        t0 = time.monotonic()
        gone = wait_for(lambda: g.sshfs_pids() == [], 30, 0.3)
        t.ok(gone, "kill: sshfs in the guest ends when the ssh client is killed")
        t.note("kill: sshfs gone %.1f s after the kill" % (time.monotonic() - t0))
        try:
            rs.sftp.wait(20)
        except subprocess.TimeoutExpired:
            pass
        t.ok(rs.sftp.poll() is not None, "kill: sftp-server ends (its pipe closed)")
        t.ok(not g.guest_mounted(guest_dir),
             "kill: sshfs unmounted on its way out, though a process had its cwd in it")
        t0 = time.monotonic()
        rc, out = g.vm.sh("cat %s/f" % guest_dir, timeout=20)
        t.ok(rc != 0 and "No such file" in out and time.monotonic() - t0 < 10,
             "kill: the path answers at once (no hang, the empty mount point)",
             "%d %s (%.1f s)" % (rc, out, time.monotonic() - t0))
        g.vm.sh("pkill -f 'sleep 600'")
        r = g.ssh("true")
        t.ok(r.returncode == 0, "kill: sshd still takes logins", r.stderr)
    finally:
        rs.kill()


def killed_sshfs(g, t):
    """sshfs is SIGKILLed in the guest: the host side ends, the guest keeps a
    dead mount (ENOTCONN at once) until fusermount3 -u."""
    host_dir = os.path.join(g.work, "share-kill9")
    guest_dir = "/mnt/kill9"
    os.makedirs(host_dir, exist_ok=True)
    open(os.path.join(host_dir, "f"), "w").write("x\n")
    rs = ReverseSshfs(g, host_dir, guest_dir, "kill9")
    try:
        up, _ = rs.wait_mounted(guest_dir)
        if not t.ok(up, "kill -9 sshfs: mounted", rs.logs()):
            return
        g.vm.check("kill -9 $(pidof sshfs)")
        t0 = time.monotonic()
        ended = rs.wait_ended(20)
        t.ok(ended and rs.ssh.returncode != 0,
             "kill -9 sshfs: ssh (status %s) and sftp-server end on the host"
             % rs.ssh.returncode, rs.logs())
        t.note("kill -9 sshfs: host side gone %.1f s after the kill" % (time.monotonic() - t0))
        rc, out = g.vm.sh("cat %s/f" % guest_dir, timeout=20)
        t.ok(g.guest_mounted(guest_dir) and rc != 0 and "not connected" in out,
             "kill -9 sshfs: the guest keeps a dead mount that fails with ENOTCONN", out)
        rc, out = g.vm.sh("fusermount3 -u %s" % guest_dir)
        t.ok(rc == 0 and not g.guest_mounted(guest_dir),
             "kill -9 sshfs: fusermount3 -u removes the dead mount", out)
    finally:
        rs.kill()


def readonly_allow_other(g, t):
    """What the transport will want: sftp-server -R refuses every write on the
    host side; allow_other lets other guest users in (a FUSE mount is the
    mounting user's alone by default)."""
    host_dir = os.path.join(g.work, "share-ro")
    os.makedirs(host_dir, exist_ok=True)
    open(os.path.join(host_dir, "f"), "w").write("ro\n")
    rs = ReverseSshfs(g, host_dir, "/mnt/ro", "ro", opts="allow_other", sftp_args=["-R"])
    try:
        up, _ = rs.wait_mounted("/mnt/ro")
        if not t.ok(up, "ro: mounted with allow_other, sftp-server -R", rs.logs()):
            return
        rc, out = g.vm.sh("su -s /bin/sh nobody -c 'cat /mnt/ro/f'")
        t.ok(rc == 0 and out == "ro\n", "ro: another guest user reads (allow_other)", out)
        rc, out = g.vm.sh("echo x > /mnt/ro/new; echo x >> /mnt/ro/f; rm /mnt/ro/f; "
                          "mkdir /mnt/ro/d; true")
        t.ok(out.count("Permission denied") == 4 and os.listdir(host_dir) == ["f"] and
             open(os.path.join(host_dir, "f")).read() == "ro\n",
             "ro: create, append, unlink, mkdir refused by sftp-server -R, host unchanged", out)
        rc, out = g.vm.sh("fusermount3 -u /mnt/ro")
        t.ok(rc == 0 and rs.wait_ended(), "ro: unmounted, host side ended", out)
    finally:
        rs.kill()


def main():
    t = TAP()
    missing = [p for p in (SFTP_SERVER, shutil.which("ssh") or "ssh") if not os.access(p, os.X_OK)]
    images = hmtest.image_dir()
    work = tempfile.mkdtemp(prefix="/tmp/hm-e2e-ssh-")
    t_start = time.monotonic()
    try:
        if not t.ok(not missing, "host has ssh and sftp-server", "missing: %s" % missing):
            raise RuntimeError("missing host tools")
        agent = hmtest.AGENT if hmtest.AGENT and os.path.isfile(hmtest.AGENT) else None
        build_image(images, agent)
        mat = ssh_material(images)

        w1 = os.path.join(work, "vm1")
        with VM(w1, images, ssh_port=free_tcp_port()) as vm:
            t.note("boot %.1f s (with NIC), ssh port %d" % (vm.boot_time, vm.ssh_port))
            g = Guest(t, vm, mat, w1)
            logins(g, t)
            if agent:
                t.ok(wait_for(lambda: g.agent_pids() != [], 15, 0.5),
                     "without hm.noagent the agent runs (control for the hm.noagent boot)")
            sshfs_cycle(g, t, "odd")
            killed_connection(g, t)
            killed_sshfs(g, t)
            readonly_allow_other(g, t)
            sshfs_cycle(g, t, "again", odd=False)
            if t.failed:
                for line in vm.serial_output().splitlines()[-30:]:
                    t.note("  console: " + line)

        w2 = os.path.join(work, "vm2")
        with VM(w2, images, ssh_port=free_tcp_port(), append_extra="hm.noagent") as vm:
            t.note("boot %.1f s (hm.noagent)" % vm.boot_time)
            g = Guest(t, vm, mat, w2)
            rc, out = vm.sh("cat /proc/cmdline")
            t.ok("hm.noagent" in out.split(), "hm.noagent is on the kernel command line", out)
            took = g.wait_sshd()
            t.ok(took is not None, "hm.noagent: ssh works")
            # the agent would have started long before sshd answered
            t.ok(g.agent_pids() == [] and "not starting hotmount-agent" in vm.serial_output(),
                 "hm.noagent: no hotmount-agent runs", g.agent_pids())
            if took is not None:
                sshfs_cycle(g, t, "noagent", odd=False)
    except Exception:
        t.ok(False, "e2e harness", traceback.format_exc())
    finally:
        if t.failed or os.environ.get("HM_E2E_KEEP"):
            t.note("kept " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    t.note("whole test %.0f s" % (time.monotonic() - t_start))
    t.done()
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
