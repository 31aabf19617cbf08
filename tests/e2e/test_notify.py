#!/usr/bin/env python3
"""e2e-notify: `hotmount add --notify`, checked by a file watcher inside a real
guest (inotifywait from inotify-tools; busybox-static has no inotifyd), one VM
for every case.

For each transport (virtiofs; 9p over a virtio-serial port and through a
reserved slot, served by QEMU itself; reverse-sshfs,
whose events go over its SSH session, not the agent) a --notify mount
is watched in the guest by `inotifywait -m` writing to a log in the guest's
/tmp; the host then creates, modifies, nests and deletes files, writes a
burst of 1,000 files, and the guest writes a file of its own (which must
not come back as an event). What the guest's watcher printed is read through
the test channel (a shell on ttyS1), never through our agent. remove must
leave no inotify descriptor in hotmountd; a kill -9 of the daemon must not
end the notifications (the new daemon starts the watcher again).

Environment: as test_virtiofs.py.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hmtest import (daemon_pid, hm, run, ssh_material, start_daemon,  # noqa: E402
                    write_known_hosts)
from vm import free_tcp_port  # noqa: E402

PORT = free_tcp_port()

WAIT = 2.0  # the bound: host change -> guest watcher


def inotify_fds(pid):
    """How many inotify instances process pid holds (its fd links)."""
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:inotify":
                    n += 1
            except OSError:
                pass
    except OSError:
        return -1
    return n


class Watch:
    """inotifywait -m in the guest on some directories, logging
    "EVENTS<tab>DIR/<tab>NAME" lines to a file."""

    def __init__(self, c, name, dirs):
        self.c, self.log = c, "/tmp/ev-%s.log" % name
        args = " ".join("'%s'" % d for d in dirs)
        rc, out = c.guest(": > %s; (inotifywait -m -q --format '%%e	%%w	%%f' %s >> %s 2>&1 &);"
                          " sleep 0.5; echo started" % (self.log, args, self.log))
        self.ok = rc == 0 and "started" in out

    def lines(self):
        rc, out = self.c.guest("cat %s" % self.log)
        return [l for l in out.splitlines() if l.count("\t") == 2] if rc == 0 else []

    def wait_for(self, pred, timeout=WAIT):
        """(seconds until pred(lines) held, lines) or (None, lines)."""
        t0 = time.monotonic()
        while True:
            ls = self.lines()
            if pred(ls):
                return time.monotonic() - t0, ls
            if time.monotonic() - t0 > timeout:
                return None, ls
            time.sleep(0.1)

    def stop(self):
        self.c.guest("killall inotifywait 2>/dev/null; true")


def named(name, where=None):
    """Lines naming name as the changed entry (in directory where, "/mnt/x/")."""
    return lambda ls: [l for l in ls if l.split("\t")[2] == name and
                       (where is None or l.split("\t")[1] == where)]


def has(name, n=1):
    return lambda ls: len(named(name)(ls)) >= n


def host_write(path, text):
    with open(path, "w") as f:
        f.write(text)


def transport_cases(c, kind, extra):
    t = c.t
    host = os.path.join(c.work, "n-" + kind)
    os.makedirs(os.path.join(host, "sub"))
    os.makedirs(os.path.join(host, "burst"))
    host_write(os.path.join(host, "old.txt"), "old\n")
    mp = "/mnt/n-" + kind
    rc, out = hm("add", c.inst, host, mp, "--writable", "--notify", *extra)
    t.ok(rc == 0 and "notify" in out, "%s: add --notify" % kind, out)
    if rc != 0:
        return
    rc, out = hm("list", c.inst)
    t.ok("notify:" in out, "%s: list shows notify" % kind, out)
    rc, st = hm("status", c.inst)
    t.ok("watching" in st and "directories watched" in st, "%s: status shows the watcher" % kind,
         st)
    w = Watch(c, kind, [mp, mp + "/sub", mp + "/burst"])
    t.ok(w.ok, "%s: inotifywait runs in the guest" % kind)

    # create
    host_write(os.path.join(host, "new.txt"), "hello\n")
    took, ls = w.wait_for(has("new.txt"))
    t.ok(took is not None, "%s: host create seen by the guest watcher (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[-5:])
    # modify an existing file: one more event for it
    before = len(named("old.txt")(w.lines()))
    with open(os.path.join(host, "old.txt"), "a") as f:
        f.write("more\n")
    took, ls = w.wait_for(has("old.txt", before + 1))
    t.ok(took is not None, "%s: host modify seen (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[-5:])
    rc, out = c.guest("cat %s/old.txt" % mp)
    t.ok(out.split() == ["old", "more"], "%s: the guest reads the new content" % kind, out)
    # nested: a new directory (seen in its parent), a file in it (seen by a
    # watcher added once the directory exists), and a file in an existing
    # subdirectory
    os.makedirs(os.path.join(host, "newdir"))
    took, ls = w.wait_for(has("newdir"))
    t.ok(took is not None, "%s: new host directory seen (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[-5:])
    w2 = Watch(c, kind + "-newdir", [mp + "/newdir"])
    host_write(os.path.join(host, "newdir", "inner.txt"), "x\n")
    took, ls = w2.wait_for(has("inner.txt"))
    t.ok(took is not None, "%s: file in the new directory seen (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[-5:])
    host_write(os.path.join(host, "sub", "nested.txt"), "x\n")
    took, ls = w.wait_for(named("nested.txt", mp + "/sub/"))
    t.ok(took is not None, "%s: nested create in sub/ seen (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[-5:])
    # a tree made at once (mkdir -p, then a file): the host walks the new
    # directories as it watches them, so a later change deep in it is seen
    os.makedirs(os.path.join(host, "fast", "deeper"))
    host_write(os.path.join(host, "fast", "deeper", "early.txt"), "x\n")
    w3 = Watch(c, kind + "-fast", [mp + "/fast/deeper"])
    os.utime(os.path.join(host, "fast", "deeper", "early.txt"))
    took, ls = w3.wait_for(has("early.txt"))
    t.ok(took is not None, "%s: a change in a nested directory made at once is seen" % kind,
         ls[-5:])
    # delete: shown as a change of the parent directory
    n0 = len(w.lines())
    os.unlink(os.path.join(host, "new.txt"))
    took, ls = w.wait_for(lambda ls: [l for l in ls[n0:] if l.split("\t")[1] == mp + "/" and
                                      l.split("\t")[2] == "" and "MODIFY" in l])
    t.ok(took is not None, "%s: host delete shows as a change of the directory (%s s)" %
         (kind, "%.2f" % took if took is not None else "never"), ls[n0:][-5:])

    # burst of 1000 host writes: every file seen at least once
    t0 = time.monotonic()
    for i in range(1000):
        host_write(os.path.join(host, "burst", "b%04d" % i), "%d\n" % i)
    want = {"b%04d" % i for i in range(1000)}

    def all_seen(ls):
        return want <= {l.split("\t")[2] for l in ls if l.split("\t")[1] == mp + "/burst/"}
    # no time bound is asked for here; over serial 9p under TCG it took ~60 s
    took, ls = w.wait_for(all_seen, timeout=180)
    seen = want & {l.split("\t")[2] for l in ls if l.split("\t")[1] == mp + "/burst/"}
    t.ok(took is not None, "%s: burst of 1000 host writes, all seen (%d/1000, %.1f s after the "
         "first write)" % (kind, len(seen), time.monotonic() - t0))

    # no echo: a guest write gives the guest's own events and nothing more.
    # The baseline is the same write into a guest tmpfs directory.
    wb = Watch(c, kind + "-base", ["/tmp/base-" + kind]) if c.guest(
        "mkdir -p /tmp/base-%s" % kind)[0] == 0 else None
    c.guest("echo g > /tmp/base-%s/g.txt" % kind)
    c.guest("echo g > %s/g.txt" % mp)
    time.sleep(WAIT + 1)
    base = len(named("g.txt")(wb.lines())) if wb else -1
    got = len(named("g.txt")(w.lines()))
    t.ok(base > 0 and got == base, "%s: no echo of a guest write (%d events, %d on tmpfs)" %
         (kind, got, base), [l for l in w.lines() if "g.txt" in l])
    rc, st = hm("status", c.inst)
    t.ok(re.search(r"watching: .* [1-9][0-9]* echoes dropped", st) is not None,
         "%s: status counts the dropped echoes" % kind, st)
    with open(os.path.join(host, "g.txt")) as f:
        t.ok(f.read() == "g\n", "%s: the guest's write reached the host" % kind)

    # remove: the watcher goes, events stop
    pid = daemon_pid(c.inst)
    before = inotify_fds(pid)
    rc, out = hm("remove", c.inst, mp)
    after = inotify_fds(pid)
    t.ok(rc == 0 and before >= 1 and after == before - 1,
         "%s: remove stops the watcher (daemon inotify fds %d -> %d)" % (kind, before, after),
         out)
    w.stop()
    for x in (w2, w3, wb):
        if x:
            x.stop()


def case_readonly(c):
    """What a read-only --notify mount gets: the agent cannot set a time on a
    read-only mount, so it opens and closes the file (IN_OPEN, IN_CLOSE_NOWRITE)."""
    t = c.t
    host = os.path.join(c.work, "n-ro")
    os.makedirs(host)
    rc, out = hm("add", c.inst, host, "/mnt/n-ro", "--notify")
    t.ok(rc == 0, "read-only: add --notify", out)
    w = Watch(c, "ro", ["/mnt/n-ro"])
    host_write(os.path.join(host, "r.txt"), "x\n")
    took, ls = w.wait_for(has("r.txt"))
    t.ok(took is not None and all(l.split("\t")[0] in ("OPEN", "CLOSE_NOWRITE,CLOSE")
                                  for l in named("r.txt")(ls)),
         "read-only: host create seen as open/close-nowrite events", ls[-5:])
    rc, out = hm("remove", c.inst, "/mnt/n-ro")
    t.ok(rc == 0, "read-only: remove", out)
    w.stop()


def case_restart(c):
    """kill -9 of hotmountd: the new daemon starts the watcher again."""
    t = c.t
    host = os.path.join(c.work, "n-restart")
    os.makedirs(host)
    rc, out = hm("add", c.inst, host, "/mnt/n-restart", "--writable", "--notify")
    t.ok(rc == 0, "restart: add --notify", out)
    os.kill(daemon_pid(c.inst), 9)
    time.sleep(0.3)
    d = start_daemon(c.inst)
    t.ok(d.returncode == 0, "restart: daemon restarted after kill -9", d.stdout + d.stderr)
    lst = c.list_json()
    t.ok(len(lst) == 1 and lst[0].get("notify") is True, "restart: list keeps notify", lst)
    pid = daemon_pid(c.inst)
    t.ok(inotify_fds(pid) == 1, "restart: the new daemon watches again (1 inotify fd)")
    w = Watch(c, "restart", ["/mnt/n-restart"])
    host_write(os.path.join(host, "after.txt"), "x\n")
    took, ls = w.wait_for(has("after.txt"))
    t.ok(took is not None, "restart: host create seen after the restart", ls[-5:])
    rc, out = hm("remove", c.inst, "/mnt/n-restart")
    t.ok(rc == 0 and inotify_fds(pid) == 0 and not c.leftovers(),
         "restart: remove, no watcher and nothing left", out)
    w.stop()


def daemon_args(c):
    """reverse-sshfs settings, as e2e-sshfs gives them (the guest runs the
    agent as well: one daemon serves all three transports)."""
    m = ssh_material(c.images)
    kh = write_known_hosts(os.path.join(c.work, "known_hosts"), PORT, m["host_key_line"])
    return ["--ssh-host", "127.0.0.1", "--ssh-port", str(PORT), "--ssh-identity",
            m["client_key"], "--ssh-known-hosts", kh]


CASES = [
    lambda c: transport_cases(c, "virtiofs", []),
    lambda c: transport_cases(c, "9p", ["--type", "9p"]),
    lambda c: transport_cases(c, "9p-pci", ["--type", "9p", "-o", "via=pci"]),
    lambda c: transport_cases(c, "sshfs", ["--type", "reverse-sshfs"]),
    case_readonly,
    case_restart,
]

if __name__ == "__main__":
    sys.exit(run("hm-e2e-notify-", CASES, vm_kwargs={"ssh_port": PORT},
                 daemon_args=daemon_args))
