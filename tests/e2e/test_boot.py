#!/usr/bin/env python3
"""e2e-boot: prove the platform by hand, without libhotmount's code paths.

Boots the guest with the hot-mount readiness args, checks from inside the guest
(test channel) that the modules and the agent port are there, then hot-plugs
virtiofs by hand through QMP on the first and the last reserved root port:
virtiofsd -> chardev-add -> device_add vhost-user-fs-pci -> mount in the guest
-> read a host file -> umount -> device_del -> DEVICE_DELETED -> chardev-remove
-> virtiofsd exits. Prints TAP; timings as comments.

Environment: HM_E2E_IMAGE_DIR (image cache; default build dir next to this
file), HM_AGENT_BIN (agent to put in the image, if the file exists),
HOTMOUNT_BIN (see vm.py), HM_E2E_KEEP=1 keeps the work dir.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vm import VM, VMError, build_image  # noqa: E402

VIRTIOFSD = os.environ.get("HM_VIRTIOFSD", "/usr/lib/qemu/virtiofsd")
MODULES = ["virtio_pci", "virtio", "virtio_ring", "virtio_pci_modern_dev",
           "virtio_pci_legacy_dev", "fuse", "virtiofs", "netfs", "fscache", "9pnet",
           "9pnet_fd", "9p", "virtio_console", "virtio_net", "net_failover", "failover"]
PLUG_PORTS = 2          # first and last reserved root port
STEPS_PER_PLUG = 7
ALL_PORTS_STEPS = 3
N_TESTS = 7 + PLUG_PORTS * STEPS_PER_PLUG + ALL_PORTS_STEPS + 1 + 2


class TAP:
    def __init__(self, plan):
        self.n = 0
        self.failed = 0
        self.plan = plan
        print("1..%d" % plan, flush=True)

    def ok(self, cond, desc, diag=None):
        self.n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, desc), flush=True)
        if not cond:
            self.failed += 1
            if diag:
                self.diag(diag)
        return cond

    def skip(self, desc, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, desc, why), flush=True)

    def diag(self, text):
        for line in str(text).rstrip().splitlines():
            print("# " + line, flush=True)

    def bail_rest(self, why):
        while self.n < self.plan:
            self.n += 1
            self.failed += 1
            print("not ok %d - not run: %s" % (self.n, why), flush=True)


def wait_for(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def root_ports(vm):
    """qdev ids of the reserved hot-plug root ports, from QMP query-pci
    (ours are named hm-rp-N; any named root port if none is)."""
    bridges = [d["qdev_id"] for bus in vm.qmp("query-pci") for d in bus["devices"]
               if d.get("class_info", {}).get("class") == 0x0604 and d.get("qdev_id")]
    ours = [b for b in bridges if re.match(r"hm-rp-\d+$", b)]
    if ours:
        return sorted(ours, key=lambda s: int(s.rsplit("-", 1)[1]))
    return bridges


def plug_cycle(t, vm, work, idx, port):
    """One manual virtiofs hot-plug/unplug on `port`; STEPS_PER_PLUG results."""
    dev, chardev, tag = "vfs%d" % idx, "vfs%d-chr" % idx, "t%d" % idx
    share = os.path.join(work, "share%d" % idx)
    os.makedirs(share, exist_ok=True)
    payload = "hello from the host %d via %s\n" % (os.getpid(), port)
    with open(os.path.join(share, "hello.txt"), "w") as f:
        f.write(payload)
    sock = os.path.join(work, "%s.sock" % dev)
    log = open(os.path.join(work, "%s.virtiofsd.log" % dev), "wb")
    vfsd = subprocess.Popen([VIRTIOFSD, "--socket-path=" + sock, "-o", "source=" + share,
                             "-o", "cache=auto"], stdout=log, stderr=subprocess.STDOUT)
    timings = {}
    try:
        if not wait_for(lambda: os.path.exists(sock), 10):
            raise VMError("virtiofsd did not create %s" % sock)
        t0 = time.monotonic()
        vm.qmp("chardev-add", {"id": chardev, "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": sock}}, "server": False}}})
        vm.qmp("device_add", {"driver": "vhost-user-fs-pci", "chardev": chardev,
                              "tag": tag, "bus": port, "id": dev})
        t1 = time.monotonic()
        timings["chardev-add+device_add"] = t1 - t0
        t.ok(True, "%s: chardev-add + device_add vhost-user-fs-pci on %s" % (dev, port))

        # the guest polls for the tag itself: retry mount until the device is probed
        mnt = "/mnt/" + tag
        rc, out = vm.sh("mkdir -p %s; i=0; until mount -t virtiofs %s %s 2>/tmp/merr; do "
                        "i=$((i+1)); [ $i -ge 1000 ] && { cat /tmp/merr; exit 1; }; usleep 10000; done; "
                        "echo tries=$i" % (mnt, tag, mnt), timeout=60)
        timings["device_add->mounted"] = time.monotonic() - t1
        t.ok(rc == 0 and vm.sh("grep -q ' %s virtiofs ' /proc/mounts" % mnt)[0] == 0,
             "%s: guest mounts tag %s (%s)" % (dev, tag, out.strip()), out)

        rc, out = vm.sh("cat %s/hello.txt" % mnt)
        t.ok(rc == 0 and out == payload, "%s: guest reads the host file" % dev,
             "rc=%d got %r want %r" % (rc, out, payload))

        rc, out = vm.sh("umount %s && ! grep -q ' %s ' /proc/mounts" % (mnt, mnt))
        t.ok(rc == 0, "%s: guest unmounts" % dev, out)

        t2 = time.monotonic()
        vm.qmp("device_del", {"id": dev})
        vm.wait_event("DEVICE_DELETED", lambda d: d.get("device") == dev, timeout=30)
        timings["device_del->DEVICE_DELETED"] = time.monotonic() - t2
        rc, out = vm.sh("grep -l '^0x001a$' /sys/bus/virtio/devices/*/device 2>/dev/null | wc -l")
        t.ok(out.strip() == "0", "%s: device_del -> DEVICE_DELETED; gone from the guest" % dev,
             "virtio-fs devices still in guest: %s" % out)

        vm.qmp("chardev-remove", {"id": chardev})
        t.ok(all(c["label"] != chardev for c in vm.qmp("query-chardev")),
             "%s: chardev-remove" % dev)

        t3 = time.monotonic()
        exited = wait_for(lambda: vfsd.poll() is not None, 15)
        timings["chardev-remove->virtiofsd exit"] = time.monotonic() - t3
        t.ok(exited, "%s: virtiofsd exits by itself (status %s)" % (dev, vfsd.returncode))
    finally:
        if vfsd.poll() is None:
            vfsd.kill()
            vfsd.wait()
        log.close()
    for k, v in timings.items():
        t.diag("timing %s %s: %.3f s" % (dev, k, v))


def serial_port_cycle(t, vm, work):
    """Hot-plug a virtserialport (the 9p transport's carrier) and check the
    guest's /dev/virtio-ports/NAME link comes and goes (mdev in the image)."""
    path = os.path.join(work, "port9p.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        vm.qmp("chardev-add", {"id": "p9-chr", "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": path}}, "server": False}}})
        t0 = time.monotonic()
        vm.qmp("device_add", {"driver": "virtserialport", "bus": "hm-serial.0",
                              "chardev": "p9-chr", "name": "org.hotmount.test.9p", "id": "p9"})
        link = "/dev/virtio-ports/org.hotmount.test.9p"
        rc, out = vm.sh("for i in $(seq 500); do [ -c %s ] && break; usleep 10000; done; "
                        "cat /sys/class/virtio-ports/$(basename $(readlink %s))/name" % (link, link))
        t.ok(rc == 0 and out.strip() == "org.hotmount.test.9p",
             "hot-plugged virtserialport appears as %s" % link, out)
        t.diag("timing virtserialport device_add -> guest link: %.3f s" % (time.monotonic() - t0))
        vm.qmp("device_del", {"id": "p9"})
        vm.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "p9", timeout=30)
        vm.qmp("chardev-remove", {"id": "p9-chr"})
        rc, out = vm.sh("for i in $(seq 500); do [ -e %s ] || exit 0; usleep 10000; done; "
                        "ls -l /dev/virtio-ports; exit 1" % link)
        t.ok(rc == 0, "device_del of the port removes %s" % link, out)
    finally:
        srv.close()


def all_ports_at_once(t, vm, work, ports):
    """Every reserved port busy at the same time (the reference design stops
    at 8): plug them all, mount and read each in the guest, unplug them all."""
    n = len(ports)
    procs = []
    try:
        for i in range(n):
            d = os.path.join(work, "all%d" % i)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "n"), "w") as f:
                f.write("%d\n" % i)
            procs.append(subprocess.Popen(
                [VIRTIOFSD, "--socket-path=%s/all%d.sock" % (work, i), "-o", "source=" + d,
                 "-o", "cache=auto"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not wait_for(lambda: all(os.path.exists("%s/all%d.sock" % (work, i))
                                    for i in range(n)), 20):
            raise VMError("virtiofsd sockets did not appear")
        t0 = time.monotonic()
        for i, port in enumerate(ports):
            vm.qmp("chardev-add", {"id": "all%d-chr" % i, "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": "%s/all%d.sock" % (work, i)}},
                "server": False}}})
            vm.qmp("device_add", {"driver": "vhost-user-fs-pci", "chardev": "all%d-chr" % i,
                                  "tag": "all%d" % i, "bus": port, "id": "all%d" % i})
        t.ok(True, "device_add on all %d reserved ports" % n)
        t.diag("timing all %d: chardev-add+device_add: %.3f s" % (n, time.monotonic() - t0))

        rc, out = vm.sh(
            "for i in $(seq 0 %d); do mkdir -p /mnt/all$i; k=0; "
            "until mount -t virtiofs all$i /mnt/all$i 2>/dev/null; do k=$((k+1)); "
            "[ $k -gt 1000 ] && { echo no mount all$i; exit 1; }; usleep 10000; done; done; "
            "cat /mnt/all*/n | sort -n | tr '\\n' ' '" % (n - 1), timeout=120)
        want = " ".join(str(i) for i in range(n)) + " "
        t.ok(rc == 0 and out == want, "guest mounts and reads all %d at once" % n,
             "rc=%d out=%r" % (rc, out))
        t.diag("timing all %d: first device_add -> all mounted + read: %.3f s"
               % (n, time.monotonic() - t0))
        vm.sh("umount /mnt/all*", timeout=60)

        t1 = time.monotonic()
        for i in range(n):
            vm.qmp("device_del", {"id": "all%d" % i})
        for i in range(n):
            vm.wait_event("DEVICE_DELETED", lambda d, i=i: d.get("device") == "all%d" % i, 60)
        t.diag("timing all %d: device_del -> every DEVICE_DELETED: %.3f s"
               % (n, time.monotonic() - t1))
        for i in range(n):
            vm.qmp("chardev-remove", {"id": "all%d-chr" % i})
        exited = wait_for(lambda: all(p.poll() is not None for p in procs), 20)
        rc, out = vm.sh("grep -l '^0x001a$' /sys/bus/virtio/devices/*/device 2>/dev/null | wc -l")
        t.ok(exited and out.strip() == "0",
             "all %d unplugged: gone from the guest, every virtiofsd exited" % n,
             "virtiofsd left: %d, guest virtio-fs devices: %s"
             % (sum(p.poll() is None for p in procs), out.strip()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def kvm_opens():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def accel_checks(t, vm, work, kernel):
    """The accelerator came from the probe, and the probe's "booted" verdict
    holds with a real QEMU and the real guest kernel: a stand-in QEMU that
    swaps the probe's accel=kvm for TCG (the only accelerator this machine
    kind can run) must be judged to boot it."""
    hm = os.environ.get("HOTMOUNT_BIN")
    forced = os.environ.get("HOTMOUNT_ACCEL", "") in ("kvm", "tcg")
    t.ok(vm.accel in ("kvm", "tcg") and
         (forced or not hm or vm.accel_why.startswith("probe: ")),
         "accelerator %s chosen by hm_qemu_accel_choose (%s)" % (vm.accel, vm.accel_why))
    if forced or not (hm and os.access(hm, os.X_OK)) or not kvm_opens():
        t.skip("the probe says kvm for a QEMU that boots the kernel",
               "HOTMOUNT_ACCEL set, no CLI built or no usable /dev/kvm")
        return
    wrap = os.path.join(work, "qemu-tcg-instead")
    with open(wrap, "w") as f:
        f.write('#!/bin/sh\nfor a in "$@"; do shift; [ "$a" = q35,accel=kvm ] && '
                'a=q35,accel=tcg; set -- "$@" "$a"; done\nexec %s "$@"\n' % vm.qemu)
    os.chmod(wrap, 0o755)
    env = dict(os.environ)
    env.pop("HOTMOUNT_ACCEL", None)
    t0 = time.monotonic()
    p = subprocess.run([hm, "accel", "--kernel", kernel, "--qemu", wrap, "--timeout", "150",
                        "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, env=env, timeout=200)
    t.ok(p.returncode == 0 and '"accel":"kvm"' in p.stdout.replace(" ", "") and
         "booted" in p.stdout,
         "the probe says kvm for a QEMU that boots the kernel to its banner (%.1f s under TCG)"
         % (time.monotonic() - t0), p.stdout + p.stderr)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    image_dir = os.environ.get("HM_E2E_IMAGE_DIR") or os.path.join(here, ".image-cache")
    agent = os.environ.get("HM_AGENT_BIN")
    if agent and not os.path.isfile(agent):
        agent = None

    t = TAP(N_TESTS)
    # unix socket paths must stay short: work in /tmp, not in the build dir
    work = tempfile.mkdtemp(prefix="hm-e2e-boot-")
    t.diag("work dir %s" % work)
    vm = None
    try:
        tb = time.monotonic()
        build_image(image_dir, agent)
        t.diag("image %s (agent: %s) ready in %.1f s" % (image_dir, agent or "none",
                                                        time.monotonic() - tb))
        vm = VM(work, image_dir)
        vm.start()
        t.diag("qemu-args from: %s" % vm.args_source)
        t.ok(True, "guest boots; test channel ready in %.1f s" % vm.boot_time)
        accel_checks(t, vm, work, os.path.join(image_dir, "vmlinuz"))

        rc, out = vm.sh("cut -d' ' -f1 /proc/modules")
        missing = sorted(set(MODULES) - set(out.split()))
        t.ok(rc == 0 and not missing, "guest has the modules loaded",
             "missing: %s" % missing)

        rc, out = vm.sh("cat /sys/class/virtio-ports/*/name; ls /dev/virtio-ports")
        t.ok("org.hotmount.agent.0" in out.split(),
             "guest sees virtio port org.hotmount.agent.0", out)

        if agent:
            ok = wait_for(lambda: vm.sh("pidof hotmount-agent")[0] == 0, 10, step=0.5)
            t.ok(ok, "hotmount-agent runs in the guest", vm.sh("ps")[1])
        else:
            t.skip("hotmount-agent runs in the guest", "no agent binary built")

        serial_port_cycle(t, vm, work)

        ports = root_ports(vm)
        t.ok(len(ports) >= 8, "QMP query-pci lists %d reserved root ports" % len(ports), ports)

        if os.geteuid() != 0 or not os.access(VIRTIOFSD, os.X_OK):
            for i in range(PLUG_PORTS * STEPS_PER_PLUG + ALL_PORTS_STEPS):
                t.skip("virtiofs hot-plug step %d" % (i + 1),
                       "needs root and %s" % VIRTIOFSD)
        else:
            for idx, port in enumerate([ports[0], ports[-1]]):
                plug_cycle(t, vm, work, idx, port)
            all_ports_at_once(t, vm, work, ports)

        rc, out = vm.sh("dmesg | grep -E 'BUG:|WARNING:|Oops|Call Trace|blocked for more than' || true")
        t.ok(out.strip() == "", "no kernel warnings in the guest", out)
    except Exception as e:  # report, then fail the rest of the plan
        t.diag(traceback.format_exc())
        t.bail_rest("%s" % e)
    finally:
        if vm is not None:
            ts = time.monotonic()
            vm.shutdown()
            t.diag("shutdown %.1f s" % (time.monotonic() - ts))
            if t.failed:
                t.diag("--- serial log tail (%s) ---" % vm.serial_log)
                t.diag("\n".join(vm.serial_output().splitlines()[-40:]))
    if t.failed or os.environ.get("HM_E2E_KEEP"):
        t.diag("kept %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
