#!/usr/bin/env python3
"""Benchmark: where a hot 9p mount's time goes, piece by piece (issue 4).

A hot 9p mount's bytes go: guest 9p client (trans=fd) -> socketpair -> the
agent's relay -> virtio-serial port -> QEMU's chardev socket -> diod. Each
piece is measured alone, 64 MiB sequential, MiB/s, best of N (HM_BENCH_N,
default 3), under TCG:

  diod    diod on a host socketpair, driven by a minimal 9P2000.L client
          (p9client.py) with one request in flight at msize 65536: the
          server's own ceiling, no guest.
  port    the raw virtio-serial port: guest dd to/from a port whose host end
          is a chardev socket this script reads/writes (no 9p, no relay).
  boot    boot-time virtio-9p-pci at msize 65536 next to 262144: what the
          msize cap (diod's 65536) costs on the reference transport.
  cache   the hot 9p mount with cache=none, loose, fscache and mmap, rounds
          interleaved (HM_BENCH_ROUNDS, default 3), best per mode.
  ro      read-only hot 9p mounts (the default is cache=fscache) next to
          cache=mmap and none: a cold read (guest caches dropped) and a warm
          re-read of a 64 MiB host file, rounds interleaved.
  relay   the hot 9p mount with the relay splicing and copying
          (hotmount-agent --relay-copy or --relay-splice, whichever it has).
  agents  A/B of guest agents (HM_BENCH_AGENTS="label=PATH,..."; the built
          one is "this"): each agent binary, splicing and copying, is put in
          the running guest in turn and measured once per round, rounds
          interleaved (HM_BENCH_ROUNDS, default 3) so the host's load
          drifts over all of them alike; best per variant.

HM_BENCH_PIECES=diod,port,... picks some (default: all). Run on demand:
  meson test -C build --benchmark     or     python3 bench/bench_9p_pieces.py
Environment as for tests/e2e (HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (AGENT, bench_vm, hm, measure_rw, mount_boot_9p, reps,  # noqa: E402
                    restart_agent, timed, timed_cpu)
import p9client  # noqa: E402

MIB = 64
SIZE = MIB << 20
RAW_PORT = "org.hotmount.bench.raw"


def pieces():
    want = os.environ.get("HM_BENCH_PIECES", "diod,port,boot,cache,ro,relay")
    if os.environ.get("HM_BENCH_AGENTS") and "HM_BENCH_PIECES" not in os.environ:
        want += ",agents"
    return [p.strip() for p in want.split(",") if p.strip()]


# --- diod alone -------------------------------------------------------------

def diod_alone(n, msize=65536):
    """diod -r/-w on one end of a socketpair, as hotmountd starts it; the
    client on the other end writes then reads a 64 MiB file."""
    work = tempfile.mkdtemp(prefix="hm-bench-diod-")
    a, b = socket.socketpair()
    p = subprocess.Popen(["diod", "-f", "-n", "-N", "-c", "/dev/null", "-L", "stderr",
                          "-r%d" % b.fileno(), "-w%d" % b.fileno(), "-e", work],
                         pass_fds=[b.fileno()], stderr=subprocess.DEVNULL)
    b.close()
    try:
        c = p9client.Client(a, msize)
        c.attach(1, work)
        chunk = bytes(c.iounit)
        ws, rs = [], []
        for _ in range(n):
            c.walk(1, 2)
            c.lcreate(2, "f")
            t0 = time.monotonic()
            off = 0
            while off < SIZE:
                off += c.write(2, off, chunk[:min(len(chunk), SIZE - off)])
            c.fsync(2)
            ws.append(time.monotonic() - t0)
            c.clunk(2)
            c.walk(1, 3, ["f"])
            c.lopen(3, 0)
            subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
            t0 = time.monotonic()
            off = 0
            while True:
                got = c.read(3, off, c.iounit)
                if got == 0:
                    break
                off += got
            rs.append(time.monotonic() - t0)
            c.clunk(3)
            if off != SIZE:
                raise RuntimeError("read %d bytes back, wrote %d" % (off, SIZE))
        return c.msize, MIB / min(ws), MIB / min(rs)
    finally:
        a.close()
        p.terminate()
        p.wait()
        shutil.rmtree(work, ignore_errors=True)


# --- the raw virtio-serial port ---------------------------------------------------

def raw_port_args(sock):
    return ["-chardev", "socket,id=bench-raw,path=%s,server=on,wait=off" % sock,
            "-device", "virtserialport,bus=hm-serial.0,chardev=bench-raw,name=%s" % RAW_PORT]


def guest_port_dev(vm):
    out = vm.check("for d in /sys/class/virtio-ports/*; do [ \"$(cat $d/name)\" = %s ] && "
                   "echo /dev/${d##*/}; done; true" % RAW_PORT)
    return out.strip()


def virtio_irqs(vm):
    """Interrupts taken so far by the guest's virtio devices, all vCPUs."""
    total = 0
    for line in vm.check("grep virtio /proc/interrupts").splitlines():
        f = line.split()
        for x in f[1:]:
            if not x.isdigit():
                break
            total += int(x)
    return total


def raw_port(vm, sock_path, n):
    """Guest -> host: guest dd (32 KiB writes, the port's per-write cap) to
    the port, timed on the host from the first to the last byte. Host ->
    guest: the host writes 64 MiB and closes; guest dd reads to end of file,
    timed by the guest."""
    dev = guest_port_dev(vm)
    if not dev:
        raise RuntimeError("the guest has no port %s" % RAW_PORT)
    ups, downs, info = [], [], []
    for i in range(n + 1):  # the first read counts records and interrupts
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        got = [0, None, None]

        def reader():
            buf = bytearray(1 << 20)
            while got[0] < SIZE:
                k = s.recv_into(buf)
                if k == 0:
                    break
                if got[1] is None:
                    got[1] = time.monotonic()
                got[0] += k
            got[2] = time.monotonic()

        th = threading.Thread(target=reader)
        th.start()
        vm.check("dd if=/dev/zero of=%s bs=32k count=%d 2>/dev/null" % (dev, SIZE // 32768),
                 timeout=600)
        th.join(600)
        s.close()
        if got[0] != SIZE:
            raise RuntimeError("host got %d of %d bytes from the port" % (got[0], SIZE))
        ups.append(got[2] - got[1])
        time.sleep(0.5)  # let QEMU see the close before the next connect
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)

        def writer():
            block = bytes(1 << 20)
            for _ in range(MIB):
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)

        th = threading.Thread(target=writer)
        th.start()
        if i == 0:
            irq0 = virtio_irqs(vm)
            rc, rec = vm.sh("dd if=%s of=/dev/null bs=1M 2>&1 | grep 'records in'" % dev,
                            timeout=600)
            info.append("host->guest: guest dd bs=1M: %s; %d virtio interrupts"
                        % (rec.strip(), virtio_irqs(vm) - irq0))
        else:
            downs.append(timed(vm, "dd if=%s of=/dev/null bs=1M" % dev))
        th.join(600)
        s.close()
        time.sleep(0.5)
    return MIB / min(ups), MIB / min(downs), info


def hot_9p(b, share, mnt, n, *opts):
    args = []
    for o in opts:
        args += ["-o", o]
    hm("add", b.inst, share, mnt, "--type", "9p", "--writable", *args)
    try:
        line = b.vm.check("grep ' %s ' /proc/mounts" % mnt).split()
        return measure_rw(b.vm, mnt, MIB, n) + (line[3],)
    finally:
        hm("remove", b.inst, mnt)


def hot_9p_cpu(b, share, mnt, *opts):
    """Write then read (caches dropped) of the hot 9p mount: (write MiB/s,
    read MiB/s, guest CPU s for the write, for the read)."""
    args = []
    for o in opts:
        args += ["-o", o]
    hm("add", b.inst, share, mnt, "--type", "9p", "--writable", *args)
    try:
        tw, cw = timed_cpu(b.vm, "dd if=/dev/zero of=%s/f bs=1M count=%d conv=fsync"
                           % (mnt, MIB))
        b.vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
        tr, cr = timed_cpu(b.vm, "dd if=%s/f of=/dev/null bs=1M" % mnt)
        b.vm.sh("rm -f %s/f" % mnt)
        return MIB / tw, MIB / tr, cw, cr
    finally:
        hm("remove", b.inst, mnt)


def caches_ab(b, rounds):
    """Best write and read of the hot 9p mount per cache mode, rounds
    interleaved."""
    share = tempfile.mkdtemp(prefix="hm-bench-cache-", dir=b.work)
    modes = ("none", "loose", "fscache", "mmap")
    best, opts = {}, {}
    for _ in range(rounds):
        for cache in modes:
            w, r, opts[cache] = hot_9p(b, share, "/mnt/hot", 1, "cache=" + cache)
            bw, br = best.get(cache, (0, 0))
            best[cache] = (max(bw, w), max(br, r))
    return [(c,) + best[c] + (opts[c],) for c in modes]


def readonly_ab(b, rounds):
    """Best cold and warm read of a read-only hot 9p mount per cache mode
    (default = what hotmount picks), rounds interleaved."""
    share = tempfile.mkdtemp(prefix="hm-bench-ro-", dir=b.work)
    with open(os.path.join(share, "f"), "wb") as f:
        f.write(os.urandom(SIZE))
    modes = ("default", "fscache", "mmap", "none")
    best, opts = {}, {}
    for _ in range(rounds):
        for cache in modes:
            args = [] if cache == "default" else ["-o", "cache=" + cache]
            hm("add", b.inst, share, "/mnt/ro", "--type", "9p", *args)
            try:
                opts[cache] = b.vm.check("grep ' /mnt/ro ' /proc/mounts").split()[3]
                b.vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
                cold = timed(b.vm, "dd if=/mnt/ro/f of=/dev/null bs=1M")
                warm = timed(b.vm, "dd if=/mnt/ro/f of=/dev/null bs=1M")
            finally:
                hm("remove", b.inst, "/mnt/ro")
            c, w = best.get(cache, (0, 0))
            best[cache] = (max(c, MIB / cold), max(w, MIB / warm))
    return [(c,) + best[c] + (opts[c],) for c in modes]


def relay_mode_args(path):
    """{"splice": args, "copy": args} for the agent binary at path: older
    agents splice by default and copy with --relay-copy, newer ones the other
    way round (--relay-splice); its --help says which."""
    h = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
    if "--relay-splice" in h:
        return {"splice": "--relay-splice", "copy": ""}
    return {"splice": "", "copy": "--relay-copy"}


def use_agent(vm, share, path, args):
    """Puts the agent binary path in the guest (through the boot-time 9p
    share) and restarts the agent with args."""
    shutil.copy(path, os.path.join(share, "agent.bin"))
    vm.check("cp /mnt/agents/agent.bin /usr/sbin/hotmount-agent.new && "
             "mv /usr/sbin/hotmount-agent.new /usr/sbin/hotmount-agent")
    restart_agent(vm, args)


def agents_ab(b, share, rounds):
    """Best write and read per (agent, relay mode), rounds interleaved."""
    agents = [("this", AGENT)]
    for item in os.environ.get("HM_BENCH_AGENTS", "").split(","):
        if "=" in item:
            label, path = item.split("=", 1)
            agents.append((label, os.path.abspath(path)))
    bins = tempfile.mkdtemp(prefix="hm-bench-agents-", dir=b.work)
    mount_boot_9p(b.vm, tag="boot9p", mnt="/mnt/agents")
    variants = [(label, path, mode) for label, path in agents for mode in ("splice", "copy")]
    best = {}
    for _ in range(rounds):
        for label, path, mode in variants:
            use_agent(b.vm, share, path, relay_mode_args(path)[mode])
            w, r, cw, cr = hot_9p_cpu(b, bins, "/mnt/hot")
            old = best.get((label, mode), (0, 0, 1e9, 1e9))
            best[(label, mode)] = (max(old[0], w), max(old[1], r), min(old[2], cw),
                                   min(old[3], cr))
    use_agent(b.vm, share, AGENT, "")
    b.vm.check("umount /mnt/agents")
    return [(label, mode) + best[(label, mode)] for label, _p, mode in variants]


def main():
    if os.geteuid() != 0:
        print("bench_9p_pieces: run as root (diod, QEMU's -virtfs)")
        return 77
    n = reps(3)
    want = pieces()
    print("9p pieces under TCG, %d MiB sequential, best of %d:" % (MIB, n), flush=True)

    class Out:
        def append(self, line):
            print("  " + line, flush=True)

    out = Out()
    if "diod" in want and not shutil.which("diod"):
        out.append("diod alone: skipped, no diod in PATH")
    elif "diod" in want:
        m, w, r = diod_alone(n)
        out.append("diod alone (host socketpair, 9P2000.L client, 1 request in flight, msize %d):"
                   "\n    write %7.1f MiB/s  read %7.1f MiB/s" % (m, w, r))
    vm_pieces = [p for p in want if p != "diod"]
    if vm_pieces:
        share = tempfile.mkdtemp(prefix="hm-bench-share-")
        work_sock = tempfile.mkdtemp(prefix="hm-bench-raw-")
        sock = os.path.join(work_sock, "raw.sock")
        try:
            with bench_vm("hm-bench9pp-", virtfs_share=share,
                          extra_args=raw_port_args(sock)) as b:
                if "port" in want:
                    up, down, info = raw_port(b.vm, sock, n)
                    out.append("raw virtio-serial port (guest dd <-> host chardev socket, no 9p):"
                               "\n    guest->host %7.1f MiB/s  host->guest %7.1f MiB/s"
                               % (up, down))
                    for line in info:
                        out.append("    " + line)
                if "boot" in want:
                    for ms in (65536, 262144):
                        mount_boot_9p(b.vm, msize=ms)
                        w, r = measure_rw(b.vm, "/mnt/boot", MIB, n)
                        b.vm.check("umount /mnt/boot")
                        out.append("boot-time virtio-9p-pci, msize %6d, cache=mmap:"
                                   "\n    write %7.1f MiB/s  read %7.1f MiB/s" % (ms, w, r))
                if "cache" in want:
                    rounds = int(os.environ.get("HM_BENCH_ROUNDS", "3"))
                    for cache, w, r, o in caches_ab(b, rounds):
                        out.append("hot 9p cache=%-7s (best of %d interleaved rounds):  write "
                                   "%7.1f MiB/s  read %7.1f MiB/s\n      %s"
                                   % (cache, rounds, w, r, o))
                if "ro" in want:
                    rounds = int(os.environ.get("HM_BENCH_ROUNDS", "3"))
                    for cache, cold, warm, o in readonly_ab(b, rounds):
                        out.append("read-only hot 9p, cache %-7s (best of %d interleaved rounds):"
                                   "  cold read %7.1f MiB/s  warm re-read %7.1f MiB/s\n      %s"
                                   % (cache, rounds, cold, warm, o))
                if "relay" in want:
                    modes = relay_mode_args(AGENT)
                    for label, args in (("splice", modes["splice"]), ("copy", modes["copy"])):
                        restart_agent(b.vm, args)
                        w, r, o = hot_9p(b, share, "/mnt/hot", n)
                        out.append("hot 9p, relay %s (agent '%s'), %s:\n    write %7.1f MiB/s  "
                                   "read %7.1f MiB/s" % (label, args, o, w, r))
                    restart_agent(b.vm, "")
                if "agents" in want:
                    rounds = int(os.environ.get("HM_BENCH_ROUNDS", "3"))
                    for label, mode, w, r, cw, cr in agents_ab(b, share, rounds):
                        out.append("agent %-8s relay %-6s (best of %d interleaved rounds):  "
                                   "write %6.1f MiB/s (guest CPU %5.2f s)  read %6.1f MiB/s "
                                   "(guest CPU %5.2f s)" % (label, mode, rounds, w, cw, r, cr))
        finally:
            shutil.rmtree(share, ignore_errors=True)
            shutil.rmtree(work_sock, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
