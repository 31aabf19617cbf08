"""One Debian 12 guest (systemd + udev) for the e2e-distro suite.

    from distrovm import DistroVM, build_distro_image
    build_distro_image(image_dir)                      # cached
    vm = DistroVM(work, image_dir, disk, inst, ssh_port=port)
    vm.start()                                         # boot + test channel
    rc, out = vm.sh("systemctl is-active hotmount-agent")
    vm.reboot()                                        # systemctl reboot, same QEMU
    vm.shutdown()                                      # poweroff, QEMU exits

The guest boots from a virtio disk (a qcow2 overlay over the cached raw
root.img, so every run starts from the pristine image and writes stay in the
run's work dir) with its own kernel and initramfs, and with the arguments of
`hotmount qemu-args INSTANCE` (vm.hotmount_qemu_args). The test channel is
the image's hm-testd.service on ttyS1 (the protocol of tests/e2e/README.md,
client vm.Channel); the tests' own QMP monitor is test-qmp.sock (vm.QMP).
With ssh_port, vm.ssh_net_args adds the user-net NIC forwarding
127.0.0.1:ssh_port to the guest's sshd, and a virtio-rng.

No -no-reboot: `systemctl reboot` in the guest restarts it inside the same
QEMU process. A cold boot is a new QEMU process (shutdown + start).
"""

import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from vm import QMP, Channel, VMError, hotmount_qemu_args, ssh_net_args  # noqa: E402

BUILD = os.path.join(HERE, "build-distro-image.sh")
DISK_ADDR = "0x1c"  # clear of the root ports (0x10-0x17) and vm.py's NIC/RNG
AGENT_PORT = "org.hotmount.agent.0"


def build_distro_image(image_dir):
    subprocess.run([BUILD, image_dir], check=True)
    return image_dir


def pin_image(image_dir):
    """Hard links to this image's root.img, vmlinuz and initrd in
    IMAGE_DIR/pins/PID, used as the image dir of this run: a concurrent run
    that rebuilds the image replaces the files (mv), and an overlay made over
    the old root.img must not boot over the new one. Pins of runs that are
    gone are removed here."""
    pins = os.path.join(image_dir, "pins")
    os.makedirs(pins, exist_ok=True)
    for pid in os.listdir(pins):
        if pid.isdigit() and not os.path.exists("/proc/" + pid):
            shutil.rmtree(os.path.join(pins, pid), ignore_errors=True)
    mine = os.path.join(pins, str(os.getpid()))
    shutil.rmtree(mine, ignore_errors=True)
    os.makedirs(mine)
    for f in ("root.img", "vmlinuz", "initrd"):
        os.link(os.path.join(image_dir, f), os.path.join(mine, f))
    return mine


def unpin_image(pinned):
    shutil.rmtree(pinned, ignore_errors=True)


def make_overlay(image_dir, path):
    """A qcow2 overlay over the image's root.img: the image stays pristine."""
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    os.path.join(image_dir, "root.img"), path], check=True)
    return path


def without_agent_port(args):
    """The `hotmount qemu-args` list less the agent's virtserialport (a VM
    whose guest never sees the port)."""
    out = []
    i = 0
    while i < len(args):
        if (args[i] == "-device" and i + 1 < len(args)
                and args[i + 1].startswith("virtserialport,") and
                ("name=" + AGENT_PORT) in args[i + 1]):
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


class DistroVM:
    def __init__(self, workdir, image_dir, disk, instance_dir, ssh_port=None,
                 agent_port=True, memory="1G", smp=2, boot_timeout=600):
        self.workdir = os.path.abspath(workdir)
        self.image_dir = os.path.abspath(image_dir)
        self.disk = disk
        self.instance_dir = os.path.abspath(instance_dir)
        self.ssh_port = ssh_port
        self.agent_port = agent_port
        self.memory = memory
        self.smp = smp
        self.boot_timeout = boot_timeout
        self.qemu = os.environ.get("HM_QEMU", "qemu-system-x86_64")
        self.proc = self.chan = self.qmp_conn = None
        self.serial_log = os.path.join(self.workdir, "qemu.log")
        self.boot_time = None
        self.args_source = None

    def command_line(self):
        hm_args, self.args_source = hotmount_qemu_args(self.instance_dir, self.memory)
        if not self.agent_port:
            hm_args = without_agent_port(hm_args)
        append = "root=/dev/vda rw console=ttyS0 loglevel=4 panic=-1"
        return [
            self.qemu, "-M", "q35", "-accel", "tcg", "-m", self.memory,
            "-smp", str(self.smp), "-nographic", "-nodefaults",
            "-kernel", os.path.join(self.image_dir, "vmlinuz"),
            "-initrd", os.path.join(self.image_dir, "initrd"),
            "-append", append,
            "-drive", "file=%s,format=qcow2,if=none,id=test-disk0,cache=unsafe" % self.disk,
            "-device", "virtio-blk-pci,drive=test-disk0,id=test-disk0-dev,bus=pcie.0,addr=%s"
            % DISK_ADDR,
        ] + hm_args + [
            "-chardev", "file,id=hm-test-con,path=%s,append=on" % self.serial_log,
            "-serial", "chardev:hm-test-con",
            "-chardev", "socket,id=hm-test-sh,path=%s,server=on,wait=off"
            % os.path.join(self.workdir, "test.sock"),
            "-serial", "chardev:hm-test-sh",
            "-chardev", "socket,id=hm-test-qmp,path=%s,server=on,wait=off"
            % os.path.join(self.workdir, "test-qmp.sock"),
            "-mon", "chardev=hm-test-qmp,mode=control",
        ] + (ssh_net_args(self.ssh_port) if self.ssh_port else [])

    def _alive(self):
        if self.proc and self.proc.poll() is not None:
            raise VMError("QEMU exited with %s; see %s" % (self.proc.returncode, self.serial_log))

    def start(self, number=1):
        """Starts QEMU; number only labels the boot in the console log."""
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.instance_dir, exist_ok=True)
        for d, f in ((self.workdir, "test.sock"), (self.workdir, "test-qmp.sock"),
                     (self.instance_dir, "qmp.sock"), (self.instance_dir, "agent.sock")):
            try:
                os.unlink(os.path.join(d, f))
            except FileNotFoundError:
                pass
        cmd = self.command_line()
        with open(os.path.join(self.workdir, "qemu.cmdline"), "a") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        with open(self.serial_log, "a") as f:
            f.write("\n===== e2e-distro: cold boot %d =====\n" % number)
        self.stderr = open(os.path.join(self.workdir, "qemu.stderr"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, start_new_session=True)
        sock = os.path.join(self.workdir, "test.sock")
        while not os.path.exists(sock) or not os.path.exists(
                os.path.join(self.workdir, "test-qmp.sock")):
            self._alive()
            if time.monotonic() - t0 > 30:
                raise VMError("QEMU made no test socket")
            time.sleep(0.05)
        self.qmp_conn = QMP(os.path.join(self.workdir, "test-qmp.sock"))
        self.chan = Channel(sock)
        self.chan.wait_ready(self.boot_timeout, alive=self._alive)
        self.boot_time = time.monotonic() - t0
        return self

    def sh(self, cmd, timeout=60):
        return self.chan.sh(cmd, timeout, alive=self._alive)

    def check(self, cmd, timeout=60):
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise VMError("guest command failed (%d): %s\n%s" % (rc, cmd, out))
        return out

    def qmp(self, cmd, args=None, timeout=30):
        return self.qmp_conn.execute(cmd, args, timeout)

    def wait_event(self, name, pred=None, timeout=30):
        return self.qmp_conn.wait_event(name, pred, timeout)

    def serial_output(self):
        try:
            with open(self.serial_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def boot_id(self):
        return self.check("cat /proc/sys/kernel/random/boot_id").strip()

    def wait_booted(self, timeout=300):
        """Waits until systemd has finished starting up; returns
        (state, seconds) with state "running" or "degraded"."""
        t0 = time.monotonic()
        rc, out = self.sh("timeout %d systemctl is-system-running --wait" % timeout,
                          timeout=timeout + 10)
        return out.strip().splitlines()[-1] if out.strip() else "", time.monotonic() - t0

    def reboot(self, timeout=300):
        """`systemctl reboot` in the guest; returns when the channel answers
        from the new boot (a new boot id: the old loop may answer probes until
        systemd stops it)."""
        old = self.boot_id()
        t0 = time.monotonic()
        self.chan.send("systemctl reboot", 30)
        while True:
            self._alive()
            if time.monotonic() - t0 > timeout:
                raise VMError("guest did not come back from systemctl reboot")
            try:
                self.chan.wait_ready(min(60, timeout), alive=self._alive)
                rc, out = self.sh("cat /proc/sys/kernel/random/boot_id", timeout=20)
                if rc == 0 and out.strip() and out.strip() != old:
                    return time.monotonic() - t0
            except VMError:
                if self.proc.poll() is not None:
                    raise
            time.sleep(1)

    def shutdown(self, timeout=120):
        """systemctl poweroff (a clean cold stop), then QMP quit, then
        SIGKILL of QEMU's process group."""
        if self.proc and self.proc.poll() is None:
            try:
                self.chan.send("systemctl poweroff", 30)
                self.proc.wait(timeout)
            except (VMError, OSError, subprocess.TimeoutExpired):
                pass
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit")
                self.proc.wait(10)
            except (VMError, OSError, subprocess.TimeoutExpired):
                pass
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for c in (self.chan, self.qmp_conn):
            if c:
                c.close()
        self.chan = self.qmp_conn = None
        if getattr(self, "stderr", None):
            self.stderr.close()
