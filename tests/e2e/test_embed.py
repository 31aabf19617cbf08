#!/usr/bin/env python3
"""e2e-embed: examples/embed-qemu, a VM manager embedding libhotmount with no
daemon, boots the e2e guest and hot-mounts a host directory into it.

The example starts QEMU itself; the test adds, after `--`, its own console
(ttyS0), test channel (ttyS1, see vm.py) and QMP monitor, and reads what the
guest sees through the channel, never through the library. It checks: a host
file is readable at the mount point in the guest; the example's events came
in order; no hotmountd ran; "remove" takes the mount out of the guest's
/proc/mounts and leaves no virtiofsd, device or socket; "quit" stops QEMU.
Prints TAP.

Usage: test_embed.py [EMBED_QEMU_BINARY]  (default: $EMBED_QEMU_BIN, else
build/examples/embed-qemu). Environment: HM_AGENT_BIN, HM_E2E_IMAGE_DIR (see
vm.py), HM_E2E_KEEP=1 keeps the work dir.
"""

import os
import re
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hmtest import AGENT, TAP, image_dir  # noqa: E402
from vm import QMP, Channel, VMError, build_image  # noqa: E402

EMBED = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("EMBED_QEMU_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "examples", "embed-qemu")
GUEST = "/mnt/embed"


def procs_with(word, comm=None):
    """(pid, command line) of live processes whose command line contains word
    (and whose name is comm, when given)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode(
                errors="replace")
            name = open("/proc/%s/comm" % pid).read().strip()
            state = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or (comm and name != comm):
            continue
        if word in cmd:
            found.append((int(pid), cmd.strip()))
    return found


def alive(pid):
    """Whether pid is a live (not zombie) process."""
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(root):
    """{pid: name} of every live descendant of process root."""
    parent, name = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open("/proc/%s/stat" % pid).read()
        except OSError:
            continue
        head, rest = stat.rsplit(")", 1)
        fields = rest.split()
        if fields[0] == "Z":
            continue
        parent[int(pid)] = int(fields[1])
        name[int(pid)] = head.split("(", 1)[1]
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in found:
                found[c] = name[c]
                todo.append(c)
    return found


class Example:
    """embed-qemu as a child: stdout lines arrive in a queue."""

    def __init__(self, argv, stderr_path):
        self.err = open(stderr_path, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, bufsize=1)
        self.lines = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_line(self, prefix, timeout):
        """The first new line starting with prefix, or None (timeout/exit)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.q.get(timeout=min(left, 1))
            except queue.Empty:
                continue
            if line is None:
                return None
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def send(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.err.close()


def main():
    t = TAP()
    if not os.access(EMBED, os.X_OK):
        print("1..0 # SKIP %s not built" % EMBED)
        return 0
    if not (AGENT and os.access(AGENT, os.X_OK)):
        print("1..0 # SKIP hotmount-agent not built")
        return 0
    images = build_image(image_dir(), AGENT)
    work = tempfile.mkdtemp(prefix="hm-e2e-embed-")
    inst = os.path.join(work, "inst")
    share = os.path.join(work, "share")
    os.makedirs(share)
    body = "hello from the host, pid %d\n" % os.getpid()
    with open(os.path.join(share, "hello.txt"), "w") as f:
        f.write(body)
    test_sock = os.path.join(work, "test.sock")
    test_qmp = os.path.join(work, "test-qmp.sock")
    argv = [
        EMBED, "--append", "console=ttyS0 panic=-1 loglevel=4",
        inst, os.path.join(images, "vmlinuz"), os.path.join(images, "initramfs.cpio.gz"),
        "%s:%s" % (share, GUEST),
        "--", "-smp", "2", "-no-reboot",
        "-chardev", "file,id=hm-test-con,path=%s" % os.path.join(work, "console.log"),
        "-serial", "chardev:hm-test-con",
        "-chardev", "socket,id=hm-test-sh,path=%s,server=on,wait=off" % test_sock,
        "-serial", "chardev:hm-test-sh",
        "-chardev", "socket,id=hm-test-qmp,path=%s,server=on,wait=off" % test_qmp,
        "-mon", "chardev=hm-test-qmp,mode=control",
    ]
    ex = Example(argv, os.path.join(work, "embed-qemu.stderr"))
    chan = qmp = None
    try:
        t0 = time.monotonic()
        mounted = ex.wait_line("mounted: ", 420)
        t.note("boot + agent + add took %.1f s" % (time.monotonic() - t0))
        if not t.ok(mounted is not None and ("at %s " % GUEST) in mounted,
                    "embed-qemu hot-mounted %s" % GUEST,
                    "\n".join(ex.lines) + "\n" + open(ex.err.name, errors="replace").read()):
            raise VMError("no mount")
        err_text = open(ex.err.name, errors="replace").read()
        acc = [l for l in err_text.splitlines() if l.startswith("embed-qemu: accelerator ")]
        t.note(acc[0] if acc else "no accelerator line")
        want = os.environ.get("HOTMOUNT_ACCEL") not in (None, "", "auto")
        t.ok(len(acc) == 1 and re.match(r"embed-qemu: accelerator (kvm|tcg) \((%s): " %
                                        ("HOTMOUNT_ACCEL" if want else "probe"), acc[0]),
             "the example chose its accelerator with hm_qemu_accel_choose and said which",
             err_text[-2000:])
        events = [l for l in ex.lines if l.startswith("event: ")]
        t.ok(events == ["event: hm-1 %s: (none) -> attaching" % GUEST,
                        "event: hm-1 %s: attaching -> mounted" % GUEST],
             "events through the GLib loop, in order, before the add's completion", ex.lines)
        t.ok(any(l == "agent: connected" for l in ex.lines), "agent reached without a daemon",
             ex.lines)

        # Other tests on this host may run hotmountd for their own VMs: ours
        # would name our instance, or be the example's child.
        kids = descendants(ex.p.pid)
        daemons = procs_with(inst, "hotmountd")
        t.ok(not daemons and not os.path.exists(os.path.join(inst, "hotmountd.sock")) and
             sorted(set(kids.values())) == ["qemu-system-x86", "virtiofsd"],
             "no hotmountd: the example's only children are QEMU and virtiofsd",
             "hotmountd %s, children %s" % (daemons, kids))
        # virtiofsd gets its socket as an fd: known by being the example's.
        vfsd = [p for p, n in kids.items() if n == "virtiofsd"]
        t.ok(vfsd, "virtiofsd serves the mount, started by the example", kids)

        chan = Channel(test_sock)
        chan.wait_ready(120)
        rc, out = chan.sh("cat %s/hello.txt" % GUEST, 30)
        t.ok(rc == 0 and out == body, "the guest reads the host file at %s" % GUEST, out)
        rc, out = chan.sh("grep ' %s ' /proc/mounts" % GUEST, 30)
        t.ok(rc == 0 and " virtiofs ro," in out, "the guest has a read-only virtiofs there", out)
        rc, out = chan.sh("echo x > %s/new.txt" % GUEST, 30)
        t.ok(rc != 0 and not os.path.exists(os.path.join(share, "new.txt")),
             "guest write refused (read-only)", out)

        qmp = QMP(test_qmp)
        ex.send("remove")
        removed = ex.wait_line("removed: ", 120)
        t.ok(removed == "removed: %s" % GUEST, "remove through the async API", ex.lines)
        events = [l for l in ex.lines if l.startswith("event: ")][2:]
        t.ok(events == ["event: hm-1 %s: mounted -> detaching" % GUEST,
                        "event: hm-1 %s: detaching -> (none)" % GUEST],
             "remove events in order", ex.lines)
        rc, out = chan.sh("cat /proc/mounts", 30)
        t.ok(rc == 0 and (" %s " % GUEST) not in out and "virtiofs" not in out,
             "%s is gone from the guest's /proc/mounts" % GUEST, out)
        rc, out = chan.sh("cat %s/hello.txt" % GUEST, 30)
        t.ok(rc != 0, "the host file is no longer visible in the guest", out)
        left = [p for p in vfsd if alive(p)] + [
            p for p, n in descendants(ex.p.pid).items() if n == "virtiofsd"]
        devs = [p["name"] for p in qmp.execute("qom-list", {"path": "/machine/peripheral"})
                if p["name"].startswith("hm-") and not p["name"].startswith("hm-rp-")
                and p["name"] != "hm-serial"]
        socks = [f for f in os.listdir(inst) if f.endswith(".sock")
                 and f not in ("qmp.sock", "agent.sock")]
        t.ok(not left and not devs and not socks, "no virtiofsd, device or socket left",
             "virtiofsd %s, devices %s, sockets %s" % (left, devs, socks))
        t.ok(ex.p.poll() is None, "QEMU and embed-qemu keep running after remove")

        chan.close()
        chan = None
        qmp.close()
        qmp = None
        ex.send("quit")
        try:
            rc = ex.p.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        ex.wait_line("qemu: exited", 5)
        t.ok(rc == 0 and any(l.startswith("qemu: exited") for l in ex.lines),
             "quit stops QEMU and exits 0", "rc %s\n%s" % (rc, "\n".join(ex.lines)))
        time.sleep(0.5)
        t.ok(not procs_with(inst) and not procs_with(share) and not any(map(alive, vfsd)),
             "no process of this instance is left", procs_with(inst) + procs_with(share))
        daemons = procs_with(inst, "hotmountd")
        t.ok(not daemons, "no hotmountd for this instance", daemons)
    except Exception as e:  # a case that raises is a failure, with its reason
        t.ok(False, "test ran to the end", repr(e))
    finally:
        for c in (chan, qmp):
            if c is not None:
                c.close()
        ex.stop()
        # QEMU and virtiofsd, should the example have left them
        for pid, _ in procs_with(inst) + procs_with(share):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    if t.failed:
        t.note("embed-qemu output:")
        for line in ex.lines:
            t.note("  " + line)
        t.note("embed-qemu stderr tail:")
        for line in open(ex.err.name, errors="replace").read().splitlines()[-20:]:
            t.note("  " + line)
        t.note("guest console tail:")
        try:
            for line in open(os.path.join(work, "console.log"),
                             errors="replace").read().splitlines()[-20:]:
                t.note("  " + line)
        except OSError:
            pass
    t.done()
    if os.environ.get("HM_E2E_KEEP") or t.failed:
        t.note("work dir kept: %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
