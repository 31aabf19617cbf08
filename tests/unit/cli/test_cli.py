#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The hotmount CLI as a user runs it: the real binaries, a real hotmountd and
a real QEMU (paused, no guest: -S) as the VM. TAP on stdout.

Usage: test_cli.py HOTMOUNT HOTMOUNTD BASH_COMPLETION
Without qemu-system-x86_64 the QEMU-backed cases are skipped, not passed.
"""
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOTMOUNT, HOTMOUNTD, COMPLETION = sys.argv[1], sys.argv[2], sys.argv[3]
VERBS = ["add", "remove", "list", "status", "doctor", "qemu-args", "accel", "help"]
STATUS_KEYS = ["version", "instance", "backend", "mounts", "mountsBroken", "agent", "diod",
               "sftpServer", "qmp", "slotsTotal", "slotsFree", "memoryShared", "agentChannel",
               "virtiofsd"]

n = 0
failed = 0
home = tempfile.mkdtemp(prefix="hm-cli-")
env = dict(os.environ, HOTMOUNT_HOME=home)
procs = []


def ok(cond, name, diag=""):
    global n, failed
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, name))
    if not cond:
        failed += 1
        for line in str(diag).splitlines()[-30:]:
            print("#   " + line)
    sys.stdout.flush()


def skip(name, why):
    global n
    n += 1
    print("ok %d - %s # SKIP %s" % (n, name, why))


def hm(*args, timeout=60):
    p = subprocess.run([HOTMOUNT, *args], env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def show(r):
    return "exit %d\nstdout: %s\nstderr: %s" % r


def expect(r, code, name, out=(), err=()):
    good = r[0] == code and all(s in r[1] for s in out) and all(s in r[2] for s in err)
    ok(good, name, show(r))


def as_json(r):
    try:
        return json.loads(r[1])
    except ValueError:
        return None


def start_qemu(name, ready):
    d = os.path.join(home, name)
    os.makedirs(d, exist_ok=True)
    if ready:
        r = hm("qemu-args", name, "--memory", "256M", "--slots", "4")
        extra = r[1].split("\n")[:-1]
    else:
        extra = ["-qmp", "unix:%s/qmp.sock,server=on,wait=off" % d]
    p = subprocess.Popen(["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-nodefaults",
                          "-display", "none", "-S", "-m", "256M", *extra],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    procs.append(p)
    # Until QEMU listens: its socket file exists from bind(), before listen()
    # (a connect is refused in between). QMP takes the next client after
    # this one closes.
    for _ in range(200):
        if p.poll() is not None:
            break
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(os.path.join(d, "qmp.sock"))
            break
        except OSError:
            time.sleep(0.05)
    return d


def stop_daemon(d):
    try:
        pid = int(open(os.path.join(d, "hotmountd.pid")).read())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    except (OSError, ValueError):
        pass


def checks(doc):
    return {c["name"]: c for c in doc.get("checks", [])} if doc else {}


def spinner_run(*args):
    """Runs hotmount with stderr on a pseudo-terminal; returns (exit, stderr bytes)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([HOTMOUNT, *args], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        rl, _, _ = select.select([master], [], [], 30)
        if not rl:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=30), out


def complete(*words, path=None):
    """What the bash completion offers for the command line words (last = current)."""
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _hotmount; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    e = dict(env, PATH=path + ":" + env["PATH"]) if path else env
    p = subprocess.run(["bash", "-c", script, "bash", COMPLETION, "hotmount", *words], env=e,
                       capture_output=True, text=True, timeout=30)
    return sorted(x for x in p.stdout.split("\n") if x), p.stderr


try:
    # --- bash completion --------------------------------------------------------
    os.makedirs(os.path.join(home, "vm-one"))
    os.makedirs(os.path.join(home, "vm-two"))
    got, err = complete("")
    ok(got == sorted(VERBS + ["--help", "--version"]), "completion: the verbs", (got, err))
    got, err = complete("remove", "vm-")
    ok(got == ["vm-one", "vm-two"], "completion: instance names from $HOTMOUNT_HOME", (got, err))
    got, err = complete("add", "vm-one", "/tmp", "/mnt/x", "--type", "")
    ok(got == ["9p", "bind", "reverse-sshfs", "virtiofs"], "completion: --type values", (got, err))
    got, err = complete("doctor", "--")
    ok(got == ["--help", "--json"], "completion: doctor's options", (got, err))
    shim = os.path.join(home, "shim")
    os.makedirs(shim)
    with open(os.path.join(shim, "hotmount"), "w") as f:
        f.write('#!/bin/sh\n[ "$1 $2 $3" = "list vm-one --json" ] || exit 6\n'
                'echo \'[{"id":"hm-1","mountPoint":"/mnt/src","state":"mounted"},'
                '{"id":"hm-2","mountPoint":"/mnt/other dir","state":"broken"}]\'\n')
    os.chmod(os.path.join(shim, "hotmount"), 0o755)
    got, err = complete("remove", "vm-one", "/mnt/", path=shim)
    ok(got == ["/mnt/other dir", "/mnt/src"], "completion: remove offers the listed mount points",
       (got, err))
    got, err = complete("remove", "vm-two", "/mnt/", path=shim)
    ok(got == [], "completion: nothing when the daemon does not answer", (got, err))

    # --- no VM, no daemon needed --------------------------------------------
    for verb in VERBS:
        r = hm(verb, "--help")
        expect(r, 0, "%s --help exits 0 with its usage" % verb, out=["Usage: hotmount " + verb])
        r = hm("help", verb)
        expect(r, 0, "help %s exits 0 with its usage" % verb, out=["Usage: hotmount " + verb])
    expect(hm("--help"), 0, "--help lists every verb", out=VERBS)
    expect(hm(), 2, "no command is a usage error (2)")
    expect(hm("frobnicate"), 2, "an unknown command is a usage error (2)")
    expect(hm("help", "frobnicate"), 2, "help for an unknown command is a usage error (2)")
    expect(hm("add", "vm", "/tmp"), 2, "add with too few arguments: usage error (2)",
           err=["Usage: hotmount add"])
    expect(hm("status"), 2, "status without INSTANCE: usage error (2)")
    expect(hm("doctor", "a", "b"), 2, "doctor with two instances: usage error (2)")
    expect(hm("list", "vm", "--frob"), 2, "an unknown option: usage error (2)")
    expect(hm("list", "bad name!"), 2, "an invalid instance name: usage error (2)")
    expect(hm("add", "vm", "/tmp", "/mnt/x", "-o", "novalue"), 2,
           "add -o without KEY=VALUE: usage error (2)")
    expect(hm("add", "vm", "/tmp", "/mnt/x", "--type", "nfs"), 3,
           "add --type nfs: refused as invalid (3)", err=["nfs"])

    expect(hm("list", "nodaemon"), 6, "list with no daemon: not ready (6), names the command",
           err=["hotmountd is not running", "hotmountd nodaemon"])
    expect(hm("remove", "nodaemon", "/mnt/x"), 6, "remove with no daemon: 6")
    r = hm("status", "nodaemon", "--json")
    doc = as_json(r)
    ok(r[0] == 6 and doc and doc.get("daemon") == "not running" and "error" in doc,
       "status --json with no daemon: 6 and {daemon: not running, error}", show(r))
    expect(hm("status", "nodaemon"), 6, "status with no daemon: 6 with the hotmountd command",
           err=["hotmountd nodaemon"])
    r = hm("doctor", "nodaemon")
    expect(r, 9, "doctor with neither daemon nor QEMU: the QMP check fails (9) with its fix",
           out=["FAIL", "QMP socket", "-mon chardev=hm-qmp,mode=control"])

    if not shutil.which("qemu-system-x86_64"):
        for name in ["doctor on a VM without readiness args", "doctor on a ready VM",
                     "status and doctor through the daemon", "exit codes through the daemon",
                     "progress line on a terminal"]:
            skip(name, "qemu-system-x86_64 not installed")
        raise SystemExit

    # --- a VM started with only a QMP socket ---------------------------------
    start_qemu("bare", ready=False)
    r = hm("doctor", "bare")
    expect(r, 9, "doctor on a bare VM: exit 9, says the daemon is not running and what to add",
           out=["hotmountd is not running", "memory-backend-memfd,id=hm-mem,size=256M,share=on",
                "-machine memory-backend=hm-mem", "-device pcie-root-port,id=hm-rp-0",
                "virtio-serial-pci", "name=org.hotmount.agent.0", "restart"])
    r = hm("doctor", "bare", "--json")
    doc, c = as_json(r), checks(as_json(r))
    ok(r[0] == 9 and doc and doc["ready"] is False and doc["source"] == "qmp",
       "doctor --json on a bare VM: valid JSON, ready false, source qmp", show(r))
    ok(c.get("qmp", {}).get("status") == "ok" and
       all(c.get(k, {}).get("status") == "fail" for k in ["memory", "slots", "agent-channel"]),
       "doctor --json: qmp ok; memory, slots and agent channel fail", show(r))
    ok(any("share=on" in f for f in c.get("memory", {}).get("fix", [])) and
       any("pcie-root-port" in f for f in c.get("slots", {}).get("fix", [])),
       "doctor --json: the fixes carry the QEMU arguments", show(r))
    ok(doc and doc["facts"].get("memoryShared") is False and
       doc["facts"].get("memoryBackend") == "/objects/pc.ram",
       "doctor --json facts: the machine's RAM backend and that it is not shared", show(r))

    # --- a VM started with `hotmount qemu-args` ------------------------------
    d = start_qemu("ready", ready=True)
    r = hm("doctor", "ready", "--json")
    doc, c = as_json(r), checks(as_json(r))
    ok(doc and doc["source"] == "qmp" and
       all(c.get(k, {}).get("status") == "ok"
           for k in ["qmp", "machine", "memory", "slots", "agent-channel"]),
       "doctor on a ready VM without daemon: QEMU checks pass", show(r))
    ok(c.get("agent", {}).get("status") == "fail" and r[0] == 9 and
       any("hotmount-agent" in f for f in c["agent"]["fix"]),
       "doctor: no guest agent (paused VM) fails with how to start it", show(r))
    ok(doc and doc["facts"].get("slotsTotal") == 4 and doc["facts"].get("memorySize") == 268435456,
       "doctor facts: 4 slots, 256 MiB", show(r))

    for bad in ("nodelim", "=/mnt/x", "/srv/x=relative"):
        p = subprocess.run([HOTMOUNTD, "ready", "--boot-share", bad], env=env,
                           capture_output=True, text=True, timeout=60)
        ok(p.returncode == 2 and "--boot-share takes HOSTDIR=GUESTDIR" in p.stderr and
           bad in p.stderr, "hotmountd --boot-share %s: usage error naming it" % bad, p.stderr)
    p = subprocess.run([HOTMOUNTD, "ready", "--boot-share", "/nonexistent-hm=/mnt/x"], env=env,
                       capture_output=True, text=True, timeout=60)
    ok(p.returncode != 0 and "/nonexistent-hm" in p.stdout + p.stderr,
       "hotmountd --boot-share of a missing directory fails naming it", p.stdout + p.stderr)
    p = subprocess.run([HOTMOUNTD, "ready"], env=env, capture_output=True, text=True, timeout=60)
    ok(p.returncode == 0, "hotmountd starts on the ready VM", p.stderr)
    r = hm("status", "ready")
    expect(r, 0, "status (human): daemon running, slots, transports",
           out=["running", "4 free of 4", "transports on this host", "virtiofs", "9p",
                "reverse-sshfs", "no boot-time share declared"])
    r = hm("status", "ready", "--json")
    doc = as_json(r)
    missing = [k for k in STATUS_KEYS if not doc or k not in doc]
    ok(r[0] == 0 and doc and doc["daemon"] == "running" and not missing,
       "status --json: valid JSON with the documented keys (missing: %s)" % missing, show(r))
    ok(doc and doc.get("slotsTotal") == 4 and doc.get("slotsFree") == 4 and
       doc.get("qmp") == "connected" and doc.get("instance") == d,
       "status --json: values typed (numbers) and right", show(r))
    r = hm("doctor", "ready", "--json")
    doc, c = as_json(r), checks(as_json(r))
    ok(doc and doc["source"] == "daemon" and doc["daemon"] == "running" and
       c.get("slots", {}).get("status") == "ok" and c.get("memory", {}).get("status") == "ok",
       "doctor with the daemon running asks the daemon, not QMP", show(r))
    ok(r[0] == 9 and c.get("agent", {}).get("status") == "fail",
       "doctor through the daemon: the agent check fails (no guest)", show(r))
    ok(c.get("bind", {}).get("status") == "skip" and
       "--boot-share" in c.get("bind", {}).get("detail", ""),
       "doctor: bind skipped, saying how to declare a boot-time share", show(r))
    expect(hm("doctor", "ready"), 9, "doctor (human) through the daemon says so",
           out=["hotmountd is running", "guest agent"])

    share = os.path.join(home, "share")
    os.makedirs(share)
    expect(hm("remove", "ready", "/mnt/nothing"), 4, "remove of an unknown mount: 4",
           err=["hotmount list ready"])
    expect(hm("add", "ready", os.path.join(home, "nonexistent"), "/mnt/x"), 3,
           "add of a missing host directory: 3", err=["does not exist"])
    expect(hm("add", "ready", share, "relative/path"), 3, "add of a relative guest path: 3")
    expect(hm("add", "ready", share, "/proc"), 3, "add onto a system path: 3")
    r = hm("add", "ready", share, "/mnt/x")
    ok(r[0] == 6 and "\r" not in r[2] and "\u280b" not in r[2],
       "add with no guest agent: 6, and no progress line when stderr is not a tty", show(r))
    r = hm("list", "ready", "--json")
    ok(r[0] == 0 and as_json(r) == [], "the failed add left nothing in the registry", show(r))

    code, err = spinner_run("add", "ready", share, "/mnt/x")
    text = err.decode("utf-8", "replace")
    ok(code == 6 and "mounting %s at /mnt/x" % share in text and "\r\x1b[K" in text,
       "on a terminal: a progress line while add waits, erased after", repr(text[-400:]))

    stop_daemon(d)
    expect(hm("status", "ready"), 6, "status after the daemon stopped: 6")
finally:
    for p in procs:
        p.kill()
        p.wait()
    for name in ["ready", "bare"]:
        stop_daemon(os.path.join(home, name))
    shutil.rmtree(home, ignore_errors=True)
    print("1..%d" % n)
    sys.exit(1 if failed else 0)
