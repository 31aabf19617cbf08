#!/usr/bin/env python3
"""e2e-hostile-fs: guest root attacks the host through the filesystems.

One VM. Five hot-mounts: 9p read-only over virtio-serial (/mnt/s, -o
via=serial), 9p writable (/mnt/w: over virtio-serial, what a root QEMU gets
by default), 9p read-only through a reserved slot (/mnt/p: QEMU's own 9p
server), virtiofs writable (/mnt/v) and reverse-sshfs writable (/mnt/h). A secret file lies beside the shares on the
host, never inside one.

1. Through the mounts: device nodes, setuid/setgid bits, symlinks that point
   outside (followed by the guest), `..` from a mount's root.
2. Guest root kills hotmount-agent (and stops the image's runner from
   restarting it), which frees the 9p ports, and speaks raw 9P2000.L on them
   with hm-probe9p (baked into this suite's guest image): an aname of 300
   '/', an aname that climbs out with "../", `..` walks, "../" in one walk
   element, writes on the read-only share, symlinks to outside opened by the
   server, mknod and setuid modes.

Every check reads the host: the secret is random and exists only there, so
its bytes in anything the guest printed mean it crossed; files, modes and
device nodes are looked at on the host's disk. A positive control (the
probe reads a file inside the share) shows the probe works, so a refusal is
not a broken probe.

Environment as for the other product suites, plus HM_PROBE9P_BIN (the
probe) and HM_E2E_IMAGE_DIR (this suite's own image cache).
"""

import glob
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import hmtest  # noqa: E402
import vm as vm_mod  # noqa: E402
from hmtest import AGENT, hm, run, skip_reason, ssh_material, write_known_hosts  # noqa: E402

PROBE = os.environ.get("HM_PROBE9P_BIN", "")
PORT = vm_mod.free_tcp_port()
SECRET = "HM-SECRET-" + secrets.token_hex(12)
GUEST_PROBE = "/usr/bin/hm-probe9p"


def build_image_with_probe(image_dir, agent=None):
    """The guest image with the probe in /usr/bin. The kernel .deb is taken
    from the other suites' image cache when this one has none (70 MB)."""
    os.makedirs(image_dir, exist_ok=True)
    if not glob.glob(os.path.join(image_dir, "linux-image-*.deb")):
        shared = os.environ.get("HM_E2E_SHARED_IMAGE_DIR", "")
        for deb in glob.glob(os.path.join(shared, "linux-image-*.deb")):
            try:
                os.link(deb, os.path.join(image_dir, os.path.basename(deb)))
            except OSError:
                pass
    cmd = [vm_mod.BUILD_IMAGE, image_dir, agent or "", PROBE]
    subprocess.run(cmd, check=True)
    return image_dir


def helpers_of(inst):
    """pids of the helpers hotmount started for inst (by their markers)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
        except OSError:
            continue
        if ("HOTMOUNT_INSTANCE=" + inst).encode() in env:
            found.append(int(pid))
    return found


def backend(c, mount_point):
    for m in json.load(open(os.path.join(c.inst, "state.json")))["mounts"]:
        if m.get("mountPoint") == mount_point or m.get("guestPath") == mount_point:
            return m.get("backend", {})
    return {}


def aname_of(c, mount_point):
    """The aname the guest's 9p mount attaches with (what the host told it)."""
    for opt in backend(c, mount_point).get("guestOptions", "").split(","):
        if opt.startswith("aname="):
            return opt[len("aname="):]
    return None


def probe(c, port, *steps):
    """Runs hm-probe9p on the 9p port named port; returns (parsed, raw): parsed
    is one (op, status, rest) per step line."""
    cmd = " ".join("'%s'" % s.replace("'", "'\\''") for s in steps)
    out = ""
    for _ in range(20):
        rc, out = c.guest("%s /dev/virtio-ports/%s %s" % (GUEST_PROBE, port, cmd), timeout=120)
        if "open io" not in out:
            break
        time.sleep(0.5)  # the killed agent's fd may still be closing
    parsed = []
    for line in out.splitlines():
        w = line.split(" ", 4)
        if len(w) >= 4 and w[0] == "R":
            parsed.append((w[2], w[3], w[4] if len(w) > 4 else ""))
    return parsed, out


def leaked(out):
    """Did the secret (its bytes, or hex as the probe prints data) come back?"""
    return SECRET in out or SECRET.encode().hex() in out


def is_device(path):
    try:
        m = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(m) or stat.S_ISBLK(m)


def special_bits(path):
    """The setuid/setgid bits of path on the host, or None if it is not there."""
    try:
        return os.lstat(path).st_mode & 0o6000
    except FileNotFoundError:
        return None


def setup(c):
    t = c.t
    c.outside = os.path.join(c.work, "outside")
    os.makedirs(c.outside)
    c.secret_path = os.path.join(c.outside, "secret.txt")
    with open(c.secret_path, "w") as f:
        f.write(SECRET + "\n")
    c.elems = [e for e in c.secret_path.split("/") if e]
    c.host = {}
    for name in ("s", "w", "v", "h", "p"):
        d = os.path.join(c.work, "share-" + name)
        os.makedirs(d)
        os.chmod(d, 0o777)
        with open(os.path.join(d, "keep.txt"), "w") as f:
            f.write("inside the share\n")
        with open(os.path.join(d, "plain"), "w") as f:
            f.write("plain\n")
        c.host[name] = d
    # s: the raw-9P probe's port (serial path); p: a reserved 9p slot
    # (QEMU's own 9p server, read-only fsdev)
    adds = [("s", "/mnt/s", ["--type", "9p", "-o", "via=serial"]),
            ("w", "/mnt/w", ["--type", "9p", "--writable"]),
            ("p", "/mnt/p", ["--type", "9p", "-o", "via=pci"]),
            ("v", "/mnt/v", ["--type", "virtiofs", "--writable"]),
            ("h", "/mnt/h", ["--type", "reverse-sshfs", "--writable"])]
    c.mounted = set()
    for name, mp, opts in adds:
        rc, out = hm("add", c.inst, c.host[name], mp, *opts)
        rc2, out2 = c.guest("cat %s/keep.txt" % mp)
        ok = rc == 0 and out2.strip() == "inside the share"
        t.ok(ok, "add %s %s and the guest reads it" % (mp, " ".join(opts)), (out, out2))
        if ok:
            c.mounted.add(name)


MOUNTS = [("w", "/mnt/w", "9p"), ("v", "/mnt/v", "virtiofs"), ("h", "/mnt/h", "reverse-sshfs"),
          ("p", "/mnt/p", "9p/pci read-only")]


def case_mount_attacks(c):
    """Guest root through its own mounts; the host's disk says what happened."""
    t = c.t
    for name, mp, kind in MOUNTS:
        if name not in c.mounted:
            t.ok(False, "%s: not mounted, attacks not run" % kind)
            continue
        host = c.host[name]
        rc, out = c.guest("mknod %s/cdev c 1 1; mknod %s/bdev b 7 0; mknod %s/pipe p; ls -l %s"
                          % (mp, mp, mp, mp))
        t.ok(not is_device(os.path.join(host, "cdev")) and
             not is_device(os.path.join(host, "bdev")),
             "%s: guest mknod makes no device node on the host" % kind, out)
        rc, out = c.guest("cd %s && echo x > su && chmod 4755 su; echo y > sg && chmod 2755 sg;"
                          " echo z > both; chmod 6777 both; ls -l su sg both" % mp)
        bits = [special_bits(os.path.join(host, f)) for f in ("su", "sg", "both")]
        if "read-only" in kind:
            t.ok(bits == [None, None, None],
                 "%s: guest creates and chmods nothing on the host" % kind, (bits, out))
        else:
            t.ok(bits == [0, 0, 0],
                 "%s: guest chmod 4755/2755/6777: the host files exist with no setuid/setgid "
                 "bit" % kind, (bits, out))
        # symlinks to the secret's host path, absolute and climbing; the guest
        # resolves them in its own tree
        up = "../" * 12
        rc, out = c.guest("cd %s && ln -s %s esc-abs && ln -s %s%s esc-rel; cat esc-abs esc-rel;"
                          " cat %s/%s%s" % (mp, c.secret_path, up, c.secret_path.lstrip("/"),
                                            mp, up, c.secret_path.lstrip("/")))
        t.ok(not leaked(out), "%s: symlinks to outside and `..` from the root: no secret" % kind,
             out)


def kill_agent(c):
    """Guest root stops hotmount-agent for good: the image's runner restarts
    it a second after it exits, so the binary goes first, then the runner
    (init respawns the runner, which finds no agent and sleeps), then the
    agent. Returns True once no agent runs."""
    c.vm.sh("mv /usr/sbin/hotmount-agent /usr/sbin/hotmount-agent.off;"
            " for d in /proc/[0-9]*; do grep -q hm-agent-run $d/cmdline 2>/dev/null &&"
            " kill ${d#/proc/}; done;"
            " killall hotmount-agent; true")
    for _ in range(30):
        rc, out = c.vm.sh("pidof hotmount-agent")
        if rc != 0:
            return True
        time.sleep(0.5)
    return False


def case_raw_9p(c):
    t = c.t
    if not {"s", "w"} <= c.mounted:
        t.ok(False, "9p mounts missing: raw attacks not run")
        return
    port_s = backend(c, "/mnt/s").get("serialPort")
    port_w = backend(c, "/mnt/w").get("serialPort")
    aname_s, aname_w = aname_of(c, "/mnt/s"), aname_of(c, "/mnt/w")
    t.ok(kill_agent(c), "guest root killed hotmount-agent (no respawn)")
    walk_secret = "|".join(c.elems)
    walk_outside = "|".join(c.elems[:-1])

    # positive control: the probe speaks 9P on the freed port
    r, out = probe(c, port_s, "version", "attach:0:" + aname_s, "walk:0:1:keep.txt", "open:1:0",
                   "read:1")
    t.ok(len(r) == 5 and r[4][1] == "ok" and "inside the share\n".encode().hex() in r[4][2],
         "control: the probe reads a file inside the read-only share on the raw port", out)

    # the reproduction of issue 17: aname of 300 '/', then walk to the secret
    r, out = probe(c, port_s, "version", "attach:0:slashes:300", "walk:0:1:" + walk_secret,
                   "open:1:0", "read:1")
    t.ok(not leaked(out), "ro port: aname of 300 '/' does not reach the secret", out)
    r, out = probe(c, port_s, "version", "attach:0:slashes:300", "walk:0:2:" + walk_outside,
                   "create:2:pwned-slashes:644", "write:2:owned")
    t.ok(not os.path.exists(os.path.join(c.outside, "pwned-slashes")),
         "ro port: aname of 300 '/' creates no file beside the secret", out)

    # an aname that starts like the export and climbs out
    climb = (aname_s.rstrip("/") + "/" + "../" * 16 + c.secret_path.lstrip("/"))
    r, out = probe(c, port_s, "version", "attach:0:" + climb, "open:0:0", "read:0")
    t.ok(not leaked(out), "ro port: aname EXPORT/../../..SECRET does not reach the secret", out)

    # `..` walks and "../" inside one element, from the real export (a Twalk
    # takes at most 16 names: more is a protocol error that ends diod)
    r, out = probe(c, port_s, "version", "attach:0:" + aname_s,
                   "walk:0:1:" + "|".join([".."] * 16), "walk:1:2:" + "|".join(c.elems),
                   "open:2:0", "read:2")
    t.ok(not leaked(out), "ro port: `..` walks do not reach the secret", out)
    r, out = probe(c, port_s, "version", "attach:0:" + aname_s,
                   "walk:0:1:" + "../" * 16 + c.secret_path.lstrip("/"), "open:1:0", "read:1")
    t.ok(not leaked(out), "ro port: one walk element \"../../..SECRET\" does not reach it", out)

    # read-only holds on the raw port
    r, out = probe(c, port_s, "version", "attach:0:" + aname_s, "walk:0:1:keep.txt", "open:1:2",
                   "write:1:TAMPERED", "walk:0:2:", "create:2:new.txt:644")
    body = open(os.path.join(c.host["s"], "keep.txt")).read()
    t.ok(body == "inside the share\n" and
         not os.path.exists(os.path.join(c.host["s"], "new.txt")),
         "ro port: raw writes and creates leave the read-only share unchanged", out)
    control(c, port_s, aname_s, "keep.txt", "inside the share\n", "ro port")

    # writable port: a symlink to outside, opened by the server
    hw = c.host["w"]
    r, out = probe(c, port_w, "version", "attach:0:" + aname_w, "walk:0:1:",
                   "symlink:1:raw-esc-abs:" + c.secret_path,
                   "symlink:1:raw-esc-rel:" + "../" * 16 + c.secret_path.lstrip("/"),
                   "walk:0:2:raw-esc-abs", "open:2:0", "read:2",
                   "walk:0:3:raw-esc-rel", "open:3:0", "read:3")
    made = os.path.islink(os.path.join(hw, "raw-esc-abs"))
    t.ok(not leaked(out), "rw port: symlinks to outside (made: %s) opened by the server: no "
         "secret" % made, out)

    # device nodes and setuid modes straight in 9P
    r, out = probe(c, port_w, "version", "attach:0:" + aname_w, "walk:0:1:",
                   "mknod:1:raw-cdev:20666:1:1", "mknod:1:raw-bdev:60666:7:0",
                   "walk:0:2:", "create:2:raw-su:4755", "walk:0:3:", "create:3:raw-sg:2755",
                   "walk:0:4:plain", "chmod:4:6755")
    t.ok(not is_device(os.path.join(hw, "raw-cdev")) and
         not is_device(os.path.join(hw, "raw-bdev")),
         "rw port: Tmknod makes no device node on the host", out)
    bits = [special_bits(os.path.join(hw, f)) for f in ("raw-su", "raw-sg", "plain")]
    t.ok(all(b in (0, None) for b in bits) and bits[2] == 0,
         "rw port: Tlcreate 4755/2755 and Tsetattr 6755 leave no setuid/setgid bit", (bits, out))
    # the writable port still works for what a share is for
    r, out = probe(c, port_w, "version", "attach:0:" + aname_w, "walk:0:1:",
                   "create:1:raw-ok:644", "write:1:fine")
    t.ok(open(os.path.join(hw, "raw-ok")).read() == "fine" if os.path.exists(
        os.path.join(hw, "raw-ok")) else False,
        "control: a plain create and write on the writable port reach the host", out)
    control(c, port_w, aname_w, "keep.txt", "inside the share\n", "rw port")


def control(c, port, aname, name, body, what):
    """After a series of attacks: the server still answers, so the refusals
    before were its answers and not a dead port's silence."""
    r, out = probe(c, port, "version", "attach:0:" + aname, "walk:0:1:" + name, "open:1:0",
                   "read:1")
    c.t.ok(len(r) == 5 and r[4][1] == "ok" and body.encode().hex() in r[4][2],
           "control: %s still serves the share after the attacks" % what, out)


def case_cleanup(c):
    """The agent is dead: the daemon cannot remove the 9p mounts the usual way.
    Stop the daemon, then this instance's helpers (by their markers)."""
    hmtest.stop_daemon(c.inst)
    time.sleep(1)
    for pid in helpers_of(c.inst):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def vm_kwargs(images):
    return {"ssh_port": PORT}


def daemon_args(c):
    m = ssh_material(c.images)
    c.known_hosts = write_known_hosts(os.path.join(c.work, "known_hosts"), PORT,
                                      m["host_key_line"])
    return ["--ssh-host", "127.0.0.1", "--ssh-port", str(PORT), "--ssh-identity",
            m["client_key"], "--ssh-known-hosts", c.known_hosts]


if __name__ == "__main__":
    why = skip_reason()
    if not why and not (PROBE and os.access(PROBE, os.X_OK)):
        why = "hm-probe9p not built"
    if not why and not os.path.exists("/usr/lib/openssh/sftp-server"):
        why = "no /usr/lib/openssh/sftp-server (openssh-sftp-server)"
    if why:
        print("1..0 # SKIP " + why)
        sys.exit(0)
    # hmtest.run builds the image without extras: this suite's has the probe.
    vm_mod.build_image = build_image_with_probe
    sys.exit(run("hm-e2e-hostile-", [setup, case_mount_attacks, case_raw_9p, case_cleanup],
                 vm_kwargs=vm_kwargs, daemon_args=daemon_args))
