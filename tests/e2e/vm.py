"""One QEMU guest for the e2e tests (Python 3 stdlib only).

    from vm import VM
    with VM(workdir, image_dir) as vm:      # boots, waits for the test channel
        rc, out = vm.sh("cat /proc/mounts", timeout=10)
        vm.qmp("query-pci")
        vm.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "vfs0")

    port = free_tcp_port()
    with VM(workdir, image_dir, ssh_port=port, append_extra="hm.noagent") as vm:
        ...                                 # guest sshd on 127.0.0.1:port

The guest image comes from tests/e2e/guest/build-image.sh. Commands reach the
guest through a test channel of its own (a busybox shell loop on ttyS1, a
second ISA UART on a unix-socket chardev), so tests check from inside the guest
without going through libhotmount's agent. Tests get a QMP monitor of their
own too (test-qmp.sock); qmp.sock stays free for hotmountd.

Environment:
  HOTMOUNT_BIN  path of the `hotmount` CLI; if it runs, `hotmount qemu-args DIR`
                gives the hot-mount readiness args, else a built-in equivalent
  HM_QEMU       QEMU binary (default qemu-system-x86_64)

With ssh_port, the guest gets a virtio-net NIC on QEMU's user network
(restrict=on: the guest reaches nothing outside) with one forward,
127.0.0.1:ssh_port on the host -> the guest's sshd on port 22, plus a
virtio-rng (see ssh_net_args). They sit at pcie.0 slots 0x1e (NIC_ADDR) and
0x1d (RNG_ADDR), clear of the root ports libhotmount puts at 0x10-0x17 and
of the devices QEMU places itself from slot 1 up; their ids do not start
with "hm-" so the tests' leftover checks and the library's reconcile do not
take them for theirs.
"""

import base64
import itertools
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_IMAGE = os.path.join(HERE, "guest", "build-image.sh")


NIC_ADDR = "0x1e"
RNG_ADDR = "0x1d"


class VMError(Exception):
    pass


def free_tcp_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel
    picks it; another process could still take it before QEMU binds it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ssh_net_args(port):
    """QEMU args for a NIC whose guest port 22 is 127.0.0.1:port on the host,
    and a virtio-rng fed from the host's /dev/urandom: without it the guest's
    CRNG took ~30 s of TCG boot to initialise and dropbear waits for it before
    it takes connections."""
    return [
        "-netdev", "user,id=test-net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % int(port),
        "-device", "virtio-net-pci,netdev=test-net0,id=test-nic0,bus=pcie.0,addr=%s,romfile="
        % NIC_ADDR,
        "-object", "rng-random,id=test-rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=test-rng0,id=test-rng0-dev,bus=pcie.0,addr=%s" % RNG_ADDR,
    ]


def build_image(image_dir, agent=None):
    """Build (or reuse from cache) the guest image in image_dir."""
    cmd = [BUILD_IMAGE, image_dir]
    if agent and os.path.isfile(agent):
        cmd.append(agent)
    subprocess.run(cmd, check=True)
    return image_dir


def fallback_qemu_args(instance_dir, slots=32, memory="1G"):
    """The readiness args `hotmount qemu-args` is specified to print."""
    a = [
        "-object", "memory-backend-memfd,id=hm-mem,size=%s,share=on" % memory,
        "-machine", "memory-backend=hm-mem",
    ]
    for i in range(slots):
        slot, fn = 0x10 + i // 8, i % 8
        dev = ("pcie-root-port,id=hm-rp-%d,bus=pcie.0,chassis=1,slot=%d,addr=0x%x.%d"
               % (i, i, slot, fn))
        if fn == 0:
            dev += ",multifunction=on"
        a += ["-device", dev]
    a += [
        "-device", "virtio-serial-pci,id=hm-serial,max_ports=64",
        "-chardev", "socket,id=hm-agent,path=%s/agent.sock,server=on,wait=off" % instance_dir,
        "-device", "virtserialport,bus=hm-serial.0,chardev=hm-agent,name=org.hotmount.agent.0,nr=1",
        "-chardev", "socket,id=hm-qmp,path=%s/qmp.sock,server=on,wait=off" % instance_dir,
        "-mon", "chardev=hm-qmp,mode=control",
    ]
    return a


def hotmount_qemu_args(instance_dir, memory="1G", extra=None):
    """Args from `$HOTMOUNT_BIN qemu-args DIR [EXTRA...]`, or the fallback.
    Returns (args, source)."""
    hm = os.environ.get("HOTMOUNT_BIN")
    why = "HOTMOUNT_BIN not set" if not hm else "%s not built" % hm
    if hm and os.path.isfile(hm) and os.access(hm, os.X_OK):
        cmd = [hm, "qemu-args", instance_dir]
        if memory != "1G":
            cmd += ["--memory", memory]
        cmd += list(extra or [])
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=30, universal_newlines=True)
            if p.returncode == 0 and p.stdout.strip():
                # one argument per line; keep lines as they are (no shell split)
                return [l for l in p.stdout.splitlines() if l.strip()], hm
            why = "%s qemu-args failed (status %d): %s" % (hm, p.returncode, p.stderr.strip())
        except (OSError, subprocess.TimeoutExpired) as e:
            why = "%s qemu-args failed: %s" % (hm, e)
        # a built CLI that cannot print its args is a bug worth seeing
        sys.stderr.write("vm.py: %s; using the built-in equivalent args\n" % why)
    return fallback_qemu_args(instance_dir, memory=memory), "fallback (%s)" % why


_ACCEL_SAID = set()


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def choose_accel(kernel, qemu=None):
    """(accel, why): the accelerator for QEMU here, from `$HOTMOUNT_BIN accel
    --kernel KERNEL` (hm_qemu_accel_choose: KVM only when it booted that
    kernel to its banner, else TCG; HOTMOUNT_ACCEL=kvm|tcg overrides). A
    probe that fails costs its whole deadline and a run boots many VMs, so
    the verdict is kept beside the kernel (accel.json) for this host's boot
    id, kernel and QEMU. Without a built CLI: TCG (KVM not proven)."""
    qemu = qemu or os.environ.get("HM_QEMU", "qemu-system-x86_64")
    forced = os.environ.get("HOTMOUNT_ACCEL", "")
    if forced in ("kvm", "tcg"):
        accel, why = forced, "HOTMOUNT_ACCEL: set by HOTMOUNT_ACCEL"
    else:
        cache = os.path.join(os.path.dirname(os.path.abspath(kernel)), "accel.json")
        st = os.stat(kernel)
        key = {"boot_id": _boot_id(), "kernel": os.path.abspath(kernel),
               "kernel_mtime": st.st_mtime_ns, "qemu": qemu}
        accel = why = None
        try:
            with open(cache) as f:
                c = json.load(f)
            if c.get("key") == key and c.get("accel") in ("kvm", "tcg"):
                accel, why = c["accel"], c.get("why", "") + " (cached in %s)" % cache
        except (OSError, ValueError):
            pass
        hm = os.environ.get("HOTMOUNT_BIN")
        if accel is None and hm and os.access(hm, os.X_OK):
            p = subprocess.run([hm, "accel", "--kernel", kernel, "--qemu", qemu, "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=120)
            if p.returncode != 0:
                raise VMError("%s accel failed: %s" % (hm, p.stderr.strip()))
            facts = json.loads(p.stdout)
            accel = facts["accel"]
            why = "%s: %s" % (facts.get("source"), facts.get("reason"))
            tmp = cache + ".tmp-%d" % os.getpid()
            try:
                with open(tmp, "w") as f:
                    json.dump({"key": key, "accel": accel, "why": why}, f)
                os.replace(tmp, cache)
            except OSError as e:
                # an image dir this user cannot write (another user's cache):
                # probe again next time rather than fail the boot
                sys.stderr.write("vm.py: cannot cache the accelerator in %s: %s\n"
                                 % (cache, e.strerror))
                _unlink(tmp)
        elif accel is None:
            accel, why = "tcg", "HOTMOUNT_BIN not built: KVM not proven"
    if (accel, why) not in _ACCEL_SAID:
        _ACCEL_SAID.add((accel, why))
        sys.stderr.write("vm.py: accelerator %s (%s)\n" % (accel, why))
    return accel, why


class QMP:
    """A small blocking QMP client that queues events."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.lock = threading.Lock()
        greeting = self._read_msg(timeout)
        if "QMP" not in greeting:
            raise VMError("bad QMP greeting: %r" % greeting)
        self.execute("qmp_capabilities")

    def _read_msg(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError("QMP timeout")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise VMError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.decode())

    def execute(self, cmd, args=None, timeout=30):
        with self.lock:
            msg = {"execute": cmd}
            if args:
                msg["arguments"] = args
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while True:
                m = self._read_msg(max(0.01, deadline - time.monotonic()))
                if "event" in m:
                    self.events.append(m)
                    continue
                if "error" in m:
                    raise VMError("QMP %s: %s: %s" % (cmd, m["error"].get("class"),
                                                      m["error"].get("desc")))
                return m.get("return")

    def wait_event(self, name, pred=None, timeout=30):
        """Return the first queued/arriving event NAME whose data satisfies
        pred; earlier events of other kinds stay queued."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for i, ev in enumerate(self.events):
                    if ev["event"] == name and (pred is None or pred(ev.get("data", {}))):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMError("timeout waiting for QMP event %s" % name)
                try:
                    m = self._read_msg(left)
                except VMError:
                    if time.monotonic() >= deadline:
                        raise VMError("timeout waiting for QMP event %s" % name)
                    raise
                if "event" in m:
                    self.events.append(m)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Channel:
    """Client of the guest's test channel (/bin/hm-testd on ttyS1).

    host -> guest: "\nHMX <id> <timeout_s> <base64 of a sh script>\n"
    guest -> host: "\nHMB <id>\n" + stdout/stderr + "\nHME <id> <status>\n"
    The guest prints "HMREADY" when the loop starts. Ids are unique per
    client, so answers to stale probes are skipped."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def send(self, cmd, timeout):
        cid = "c%d_%d" % (next(self.ids), os.getpid())
        b64 = base64.b64encode(cmd.encode()).decode()
        self.sock.sendall(("\nHMX %s %d %s\n" % (cid, int(timeout), b64)).encode())
        return cid

    def fill(self, wait):
        r, _, _ = select.select([self.sock], [], [], max(0, wait))
        if r:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise VMError("test channel closed")
            self.buf += chunk

    def parse(self, cid):
        m = re.search(rb"HMB " + cid.encode() + rb"\n(.*?)\nHME " + cid.encode()
                      + rb" (\d+)\n", self.buf, re.S)
        if not m:
            return None
        self.buf = self.buf[m.end():]
        return int(m.group(2)), m.group(1).decode(errors="replace")

    def wait_ready(self, timeout, alive=None):
        """Ready = a probe came back. A probe goes out when the guest says
        HMREADY, and every 5 s in case that line was missed."""
        deadline = time.monotonic() + timeout
        probe_sent = False
        next_probe = time.monotonic() + 5
        while True:
            if alive:
                alive()
            now = time.monotonic()
            if now > deadline:
                raise VMError("guest test channel not ready after %ds" % timeout)
            if now >= next_probe:
                self.send("true", 30)
                probe_sent = True
                next_probe = now + 5
            self.fill(min(0.5, deadline - now))
            if b"HMREADY" in self.buf:
                self.buf = self.buf.split(b"HMREADY", 1)[1]
                self.send("true", 30)
                probe_sent = True
                next_probe = time.monotonic() + 5
            if probe_sent and re.search(rb"\nHME c\d+_%d \d+\n" % os.getpid(), self.buf):
                self.buf = b""
                return

    def sh(self, cmd, timeout=60, alive=None):
        with self.lock:
            cid = self.send(cmd, timeout)
            deadline = time.monotonic() + timeout + 15
            while True:
                res = self.parse(cid)
                if res is not None:
                    return res
                if alive:
                    alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMError("no answer from guest for %r" % cmd)
                self.fill(min(left, 1.0))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class VM:
    """One guest. Files in workdir: qemu.log (serial console), qemu.stderr,
    test.sock, test-qmp.sock, plus the instance files (qmp.sock, agent.sock)
    in instance_dir (default: workdir).

    ssh_port: forward 127.0.0.1:ssh_port to the guest's sshd (see above).
    append_extra: more words for the kernel command line (e.g. "hm.noagent":
    the guest does not start hotmount-agent)."""

    def __init__(self, workdir, image_dir, instance_dir=None, memory="1G", smp=2,
                 append="", extra_args=None, boot_timeout=180, qemu=None,
                 ssh_port=None, append_extra="", qemu_args_extra=None):
        self.workdir = os.path.abspath(workdir)
        self.image_dir = os.path.abspath(image_dir)
        self.instance_dir = os.path.abspath(instance_dir or workdir)
        self.memory = memory
        self.smp = smp
        self.append = (append + " " + append_extra).strip()
        self.ssh_port = ssh_port
        self.qemu_args_extra = list(qemu_args_extra or [])
        self.extra_args = list(extra_args or [])
        self.boot_timeout = boot_timeout
        self.qemu = qemu or os.environ.get("HM_QEMU", "qemu-system-x86_64")
        self.proc = None
        self.chan = None
        self.qmp_conn = None
        self.serial_log = os.path.join(self.workdir, "qemu.log")
        self.boot_time = None
        self.accel = self.accel_why = None
        self.args_source = None

    # -- command line -----------------------------------------------------------
    def command_line(self):
        hm_args, self.args_source = hotmount_qemu_args(self.instance_dir, self.memory,
                                                       self.qemu_args_extra)
        test_sock = os.path.join(self.workdir, "test.sock")
        test_qmp = os.path.join(self.workdir, "test-qmp.sock")
        append = "console=ttyS0 panic=-1 loglevel=4 " + self.append
        kernel = os.path.join(self.image_dir, "vmlinuz")
        self.accel, self.accel_why = choose_accel(kernel, self.qemu)
        return [
            self.qemu, "-M", "q35", "-accel", self.accel, "-m", self.memory,
            "-smp", str(self.smp), "-nographic", "-nodefaults", "-no-reboot",
            "-kernel", kernel,
            "-initrd", os.path.join(self.image_dir, "initramfs.cpio.gz"),
            "-append", append.strip(),
        ] + hm_args + [
            # ttyS0: kernel console + init messages, to a file
            "-chardev", "file,id=hm-test-con,path=%s" % self.serial_log,
            "-serial", "chardev:hm-test-con",
            # ttyS1: the test command channel (busybox loop /bin/hm-testd)
            "-chardev", "socket,id=hm-test-sh,path=%s,server=on,wait=off" % test_sock,
            "-serial", "chardev:hm-test-sh",
            # a QMP monitor for the tests alone
            "-chardev", "socket,id=hm-test-qmp,path=%s,server=on,wait=off" % test_qmp,
            "-mon", "chardev=hm-test-qmp,mode=control",
        ] + (ssh_net_args(self.ssh_port) if self.ssh_port else []) + self.extra_args

    # -- lifecycle ------------------------------------------------------------------
    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.instance_dir, exist_ok=True)
        for f in ("test.sock", "test-qmp.sock"):
            _unlink(os.path.join(self.workdir, f))
        for f in ("qmp.sock", "agent.sock"):
            _unlink(os.path.join(self.instance_dir, f))
        cmd = self.command_line()
        with open(os.path.join(self.workdir, "qemu.cmdline"), "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        self.stderr = open(os.path.join(self.workdir, "qemu.stderr"), "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._connect_sockets(t0)
            self._wait_ready(t0)
        except BaseException:
            self.kill()
            raise
        self.boot_time = time.monotonic() - t0
        return self

    def _connect_sockets(self, t0):
        test_sock = os.path.join(self.workdir, "test.sock")
        test_qmp = os.path.join(self.workdir, "test-qmp.sock")
        while True:
            self._check_alive()
            if os.path.exists(test_sock) and os.path.exists(test_qmp):
                try:
                    self.chan = Channel(test_sock)
                    self.qmp_conn = QMP(test_qmp)
                    return
                except OSError:
                    if self.chan is not None:
                        self.chan.close()
                        self.chan = None
            if time.monotonic() - t0 > 30:
                raise VMError("QEMU did not create its sockets; see %s" % self.stderr.name)
            time.sleep(0.05)

    def _wait_ready(self, t0):
        left = self.boot_timeout - (time.monotonic() - t0)
        try:
            self.chan.wait_ready(left, alive=self._check_alive)
        except VMError as e:
            raise VMError("%s; see %s" % (e, self.serial_log))

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise VMError("QEMU exited with status %s; see %s and %s"
                          % (self.proc.returncode, self.stderr.name, self.serial_log))

    # -- test channel -----------------------------------------------------------------
    def sh(self, cmd, timeout=60):
        """Run cmd with /bin/sh in the guest (as root, cwd /, stdin /dev/null).
        Returns (status, stdout+stderr). The guest kills it after timeout s
        (status 137); VMError if no answer arrives."""
        return self.chan.sh(cmd, timeout, alive=self._check_alive)

    def check(self, cmd, timeout=60):
        """sh() that raises unless the status is 0; returns stdout."""
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise VMError("guest command %r failed with %d: %s" % (cmd, rc, out))
        return out

    # -- QMP ------------------------------------------------------------------------------
    def qmp(self, cmd, args=None, timeout=30):
        return self.qmp_conn.execute(cmd, args, timeout)

    def wait_event(self, name, pred=None, timeout=30):
        return self.qmp_conn.wait_event(name, pred, timeout)

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self, timeout=30):
        """Power off from inside the guest; QMP quit, then SIGKILL, if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.chan is not None:
            try:
                self.chan.send("sync; poweroff -f", 10)
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None and self.qmp_conn is not None:
            try:
                self.qmp_conn.execute("quit", timeout=5)
            except (VMError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        for c in (self.chan, self.qmp_conn):
            if c is not None:
                c.close()
        self.chan = self.qmp_conn = None
        if getattr(self, "stderr", None):
            self.stderr.close()

    def serial_output(self):
        try:
            with open(self.serial_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()
        return False


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _main(argv):
    """Small CLI for scripts (examples/demo.sh):
      vm.py qemu-args DIR               the fallback readiness args, one a line
      vm.py wait-ready TEST_SOCK [SECS] wait until the guest's channel answers
      vm.py guest-sh TEST_SOCK CMD [SECS]  run CMD in the guest; exit with its status
      vm.py poweroff TEST_SOCK          power the guest off (does not wait)
      vm.py accel KERNEL                the accelerator to use (see choose_accel)
    """
    if len(argv) >= 2 and argv[0] == "accel":
        print(choose_accel(argv[1])[0])
        return 0
    if len(argv) >= 2 and argv[0] == "qemu-args":
        print("\n".join(fallback_qemu_args(os.path.abspath(argv[1]))))
        return 0
    if len(argv) >= 2 and argv[0] == "wait-ready":
        deadline = time.monotonic() + (float(argv[2]) if len(argv) > 2 else 180)
        while not os.path.exists(argv[1]):
            if time.monotonic() > deadline:
                sys.stderr.write("vm.py: %s does not exist\n" % argv[1])
                return 1
            time.sleep(0.1)
        Channel(argv[1]).wait_ready(max(1, deadline - time.monotonic()))
        return 0
    if len(argv) >= 3 and argv[0] == "guest-sh":
        rc, out = Channel(argv[1]).sh(argv[2], float(argv[3]) if len(argv) > 3 else 60)
        sys.stdout.write(out)
        return rc
    if len(argv) >= 2 and argv[0] == "poweroff":
        c = Channel(argv[1])
        c.send("sync; poweroff -f", 10)
        time.sleep(0.2)
        c.close()
        return 0
    sys.stderr.write(_main.__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
