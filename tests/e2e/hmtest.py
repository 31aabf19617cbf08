"""Shared helpers for the e2e tests that drive the product (hotmount,
hotmountd, hotmount-agent) in one real guest: TAP output, the CLI, the HTTP
API over the daemon's unix socket, the daemon's life cycle, the guest agent's
options, and the leak check used after every remove.

What the guest sees is read through the test channel (vm.sh), never through
our own agent; what QEMU holds is read through the test's own QMP monitor.

Environment: HOTMOUNT_BIN (the CLI; hotmountd is next to it), HM_AGENT_BIN,
HM_E2E_IMAGE_DIR (see vm.py), HM_E2E_KEEP=1 keeps the work dir.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback

HOTMOUNT = os.environ.get("HOTMOUNT_BIN", "")
HOTMOUNTD = os.path.join(os.path.dirname(HOTMOUNT), "hotmountd")
AGENT = os.environ.get("HM_AGENT_BIN", "")
HERE = os.path.dirname(os.path.abspath(__file__))


class TAP:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, desc, diag=None):
        self.n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, desc), flush=True)
        if not cond:
            self.failed += 1
            for line in str(diag or "").splitlines()[-30:]:
                print("#   " + line, flush=True)
        return cond

    def note(self, text):
        print("# " + text, flush=True)

    def done(self):
        print("1..%d" % self.n, flush=True)


def skip_reason():
    """Why this machine cannot run the product tests, or None."""
    if not (HOTMOUNT and os.access(HOTMOUNT, os.X_OK) and os.access(HOTMOUNTD, os.X_OK)):
        return "hotmount/hotmountd not built"
    if not (AGENT and os.access(AGENT, os.X_OK)):
        return "hotmount-agent not built"
    return None


def rootless():
    """True when this test runs as an unprivileged user (tests/rootless.sh):
    QEMU, hotmountd and every file server are then that user's processes,
    and ownership reads the other way (see ownership_expect)."""
    return os.geteuid() != 0


def needs_root(t, what):
    """For a case that only makes sense with root on the host: False (and a
    TAP skip line naming why) when rootless, else True."""
    if not rootless():
        return True
    t.n += 1
    print("ok %d - %s # SKIP needs root on the host" % (t.n, what), flush=True)
    return False


def image_dir():
    return os.environ.get("HM_E2E_IMAGE_DIR") or os.path.join(HERE, "image-cache")


def hm(*args, timeout=120):
    """Runs the CLI; returns (exit code, stdout + stderr)."""
    p = subprocess.run([HOTMOUNT] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api(inst, method, path, body=None, timeout=120):
    """One request to hotmountd's HTTP API on a fresh connection (as curl
    --unix-socket would do); returns (status, parsed JSON body or text)."""
    conn = _UnixHTTPConnection(os.path.join(inst, "hotmountd.sock"), timeout)
    try:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw
    finally:
        conn.close()


def start_daemon(inst, *args):
    """Starts hotmountd for inst (with more options args); it daemonizes, so
    this returns when it is serving (or failed)."""
    return subprocess.run([HOTMOUNTD, inst, "--debug"] + list(args), capture_output=True,
                          text=True, timeout=60)


def stop_daemon(inst):
    pidfile = os.path.join(inst, "hotmountd.pid")
    if os.path.exists(pidfile):
        try:
            os.kill(int(open(pidfile).read().strip()), 15)
        except (ValueError, ProcessLookupError):
            pass


def daemon_pid(inst):
    """hotmountd's pid from its pid file, or None."""
    try:
        return int(open(os.path.join(inst, "hotmountd.pid")).read().strip())
    except (OSError, ValueError):
        return None


def stop_daemon_wait(inst):
    """SIGTERM to hotmountd, then wait (up to 5 s) until it has exited."""
    pid = daemon_pid(inst)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def start_daemon_fault(inst, fault=None, args=()):
    """Starts hotmountd --debug (with args) that dies at the HOTMOUNT_FAULT
    point fault (None: none)."""
    env = dict(os.environ)
    env.pop("HOTMOUNT_FAULT", None)
    if fault:
        env["HOTMOUNT_FAULT"] = fault
    return subprocess.run([HOTMOUNTD, inst, "--debug"] + list(args), capture_output=True,
                          text=True, timeout=120, env=env)


def wait_daemon_dead(inst, timeout=10):
    """hotmountd killed itself at a fault point: True once it is gone."""
    pid = daemon_pid(inst)
    end = time.monotonic() + timeout
    while pid and time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return pid is None


def kill_virtiofsd(work):
    """Only the helpers serving directories of this test's work dir: other
    tests may be running their own on this host. (diod, 9p's server, too, by
    its instance marker.)"""
    subprocess.run(["pkill", "-f", "virtiofsd.*" + work], capture_output=True)
    # a confined diod's command line names no host path (it exports "/"):
    # its instance marker does
    for pid in _marked("diod", work):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _marked(comm, prefix):
    """pids of live processes named comm whose HOTMOUNT_INSTANCE marker
    starts with prefix."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if open("/proc/%s/comm" % pid).read().strip() != comm:
                continue
            if open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
        except (OSError, IndexError):
            continue
        if any(e.startswith(b"HOTMOUNT_INSTANCE=" + prefix.encode()) for e in env):
            found.append(int(pid))
    return found


class Ctx:
    def __init__(self, t, vm, inst, work):
        self.t, self.vm, self.inst, self.work = t, vm, inst, work
        # Mount ids whose device was retired (its virtiofsd died, so it stays
        # plugged by design): not counted as leftovers.
        self.retired = set()

    def guest(self, cmd, timeout=60):
        return self.vm.sh(cmd, timeout=timeout)

    def guest_mounts(self):
        rc, out = self.guest("cat /proc/mounts")
        return [l.split()[1] for l in out.splitlines() if len(l.split()) > 2]

    def list_json(self):
        rc, out = hm("list", self.inst, "--json")
        if rc != 0:
            raise RuntimeError("hotmount list failed: " + out)
        return json.loads(out)

    def virtiofsd_procs(self):
        """virtiofsd processes serving a directory of this test's work dir
        (the shared directory is on their command line)."""
        pg = subprocess.run(["pgrep", "-a", "virtiofsd"], capture_output=True, text=True)
        # zombies hold nothing; this machine's pid 1 reaps orphans lazily
        return [l for l in pg.stdout.splitlines()
                if "--help" not in l and "<defunct>" not in l and self.work in l]

    def diod_procs(self):
        """diod processes (9p) of this test's instance, "PID COMMAND LINE" as
        pgrep -a prints them, found by their marker (a confined diod exports
        "/": its command line names no host path)."""
        found = []
        for pid in _marked("diod", self.inst):
            try:
                cmd = open("/proc/%d/cmdline" % pid, "rb").read().replace(b"\0", b" ")
            except OSError:
                continue
            found.append("%d %s" % (pid, cmd.decode(errors="replace").strip()))
        return found

    def sftp_procs(self):
        """sftp-server processes (reverse-sshfs) of this test's instance, found
        by the markers hotmount puts in their environment."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open("/proc/%s/environ" % pid, "rb").read().split(b"\0")
                comm = open("/proc/%s/comm" % pid).read().strip()
            except OSError:
                continue
            if comm == "sftp-server" and ("HOTMOUNT_INSTANCE=" + self.inst).encode() in env:
                found.append(int(pid))
        return found

    def leftovers(self):
        """Everything an add could leave behind, read from the host and QEMU
        (virtiofs and 9p: the hm-N-dev devices cover 9p's virtserialports)."""
        left = []
        procs = self.virtiofsd_procs()
        if procs:
            left.append("virtiofsd: %s" % procs)
        procs = self.diod_procs()
        if procs:
            left.append("diod: %s" % procs)
        procs = self.sftp_procs()
        if procs:
            left.append("sftp-server: %s" % procs)
        peri = self.vm.qmp("qom-list", {"path": "/machine/peripheral"})
        devs = [p["name"] for p in peri if p["name"].startswith("hm-")
                and not p["name"].startswith("hm-rp-") and p["name"] != "hm-serial"
                and p["name"][:-len("-dev")] not in self.retired]
        if devs:
            left.append("devices: %s" % devs)
        chr_ = [c["label"] for c in self.vm.qmp("query-chardev")
                if c["label"].startswith("hm-") and c["label"] not in
                ("hm-agent", "hm-qmp") and not c["label"].startswith("hm-test-")
                and c["label"][:-len("-chr")] not in self.retired]
        if chr_:
            left.append("chardevs: %s" % chr_)
        socks = [f for f in os.listdir(self.inst) if f.endswith("-vfs.sock")]
        if socks:
            left.append("sockets: %s" % socks)
        links = [f for f in os.listdir(self.inst) if f.endswith("-9p")]
        if links:
            left.append("9p export links: %s" % links)
        # reserved 9p slots: every fsdev link back at the empty placeholder
        d9 = os.path.join(self.inst, "9p")
        if os.path.isdir(d9):
            astray = ["%s -> %s" % (f, os.readlink(os.path.join(d9, f)))
                      for f in sorted(os.listdir(d9)) if os.path.islink(os.path.join(d9, f))
                      and os.readlink(os.path.join(d9, f)) != "empty"]
            if astray:
                left.append("9p slot links not at the placeholder: %s" % astray)
        reg = self.list_json()
        if reg:
            left.append("registry: %s" % reg)
        return left

    def pci_devices_behind_ports(self):
        """Devices the guest's PCI tree shows behind our root ports, less the
        retired ones."""
        return self._pci_behind() - len(self.retired)

    def _pci_behind(self):
        """Devices the guest's PCI tree shows behind our root ports."""
        n = 0
        for bus in self.vm.qmp("query-pci"):
            for d in bus["devices"]:
                if d.get("qdev_id", "").startswith("hm-rp-"):
                    n += len(d.get("pci_bridge", {}).get("devices", []))
        return n

    def agent(self):
        """(pid, arguments after argv[0]) of the running guest agent, or None."""
        rc, out = self.guest("p=$(pidof hotmount-agent) && echo $p && "
                             "tr '\\0' ' ' < /proc/$p/cmdline")
        lines = out.splitlines()
        if rc != 0 or len(lines) < 2 or not lines[0].strip().isdigit():
            return None
        return int(lines[0]), lines[1].split()[1:]

    def restart_agent(self, args="", timeout=15):
        """Restarts the guest agent with extra options (the image's runner reads
        /etc/hm-agent-args at each start) and waits until a new one runs; the
        daemon reconnects on its next request. Returns True when it runs with
        exactly those options."""
        old = self.agent()
        if args:
            self.vm.check("echo '%s' > /etc/hm-agent-args" % args)
        else:
            self.vm.check("rm -f /etc/hm-agent-args")
        self.vm.check("killall hotmount-agent; true")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)  # the guest's respawn loop waits 1 s
            now = self.agent()
            if now and (not old or now[0] != old[0]) and now[1] == args.split():
                time.sleep(0.3)  # let it open its port before the first request
                return True
        return False

    def dump_logs(self):
        """Tails of the daemon log and the guest console, for a failed run."""
        log = os.path.join(self.inst, "hotmountd.log")
        if os.path.exists(log):
            self.t.note("hotmountd.log tail:")
            for line in open(log, errors="replace").read().splitlines()[-40:]:
                self.t.note("  " + line)
        self.t.note("guest console tail:")
        for line in self.vm.serial_output().splitlines()[-30:]:
            self.t.note("  " + line)


GUEST_USER = "hmuser"


def guest_user(c):
    """A non-root guest user, uid/gid 1000 (busybox chpst needs names)."""
    c.vm.check("grep -q '^%s:' /etc/passwd || echo '%s:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd;"
               " grep -q '^%s:' /etc/group || echo '%s:x:1000:' >> /etc/group"
               % ((GUEST_USER,) * 4))


def as_user(cmd):
    """cmd as the guest user; its output starts with the uid it ran as, so a
    check cannot pass because the command never ran as that user."""
    return "su -s /bin/sh -c 'id -u; id -g; %s' %s" % (cmd, GUEST_USER)


def ran_as_user(out):
    return out.split()[:2] == ["1000", "1000"]


def subid_base(path):
    """The first subordinate id /etc/subuid or /etc/subgid grants this user
    (by name or uid), or None."""
    import pwd
    me = os.geteuid()
    keys = {str(me)}
    try:
        keys.add(pwd.getpwuid(me).pw_name)
    except KeyError:
        pass
    try:
        for line in open(path):
            f = line.strip().split(":")
            if len(f) == 3 and f[0] in keys and f[1].isdigit():
                return int(f[1])
    except OSError:
        pass
    return None


def _host_owner(path):
    try:
        st = os.lstat(path)
        return st.st_uid, st.st_gid
    except OSError:
        return None


def _guest_owners(c, paths):
    """[(uid, gid)] the guest's stat shows for each path (None if it fails)."""
    rc, out = c.guest(" ".join("stat -c '%%u %%g' '%s' || echo x;" % p for p in paths))
    res = []
    for line in out.splitlines():
        w = line.split()
        res.append((int(w[0]), int(w[1])) if len(w) == 2 and all(x.isdigit() for x in w)
                   else None)
    return res


def ownership_checks(c, name, add_args, expect):
    """File ownership both ways on one transport, read on both sides (the
    host's lstat, the guest's stat through the test channel). add_args: what
    follows `hotmount add INST HOST MP` for this transport (type, options).
    expect, a dict:
      host_in_guest  (uid, gid) the guest shows for a file the host user
                     (this process) makes; without a map
      user_to_host   (uid, gid) on the host of a file guest uid 1000 makes
                     without a map, or None to leave that out
      map            None: the transport takes no map option here; then
                     map_refused is a word its refusal must name. Else
                     {"other": (uid, gid)}: with -o mapUid=1000 -o
                     mapGid=1000 guest uid 1000 is the host user both ways,
                     and a file guest root makes belongs to "other" on the
                     host.
    Always: a file and a directory guest root makes belong to the host user
    (this process's euid/egid: root in the root pass). Every mount is
    removed with nothing left."""
    t = c.t
    me = (os.geteuid(), os.getegid())
    guest_user(c)
    for mapped in (False, True):
        tag = "%s%s" % (name, " mapUid=1000" if mapped else "")
        host = os.path.join(c.work, "own-%s%s" % (name.replace("/", "-"), "-map" if mapped else ""))
        os.makedirs(host)
        # unmapped: guest uid 1000 must be able to create files whoever it is
        # on the host; mapped: it is the owner, 0755 is enough
        os.chmod(host, 0o755 if mapped else 0o777)
        with open(os.path.join(host, "from-host"), "w") as f:
            f.write("host\n")
        mp = "/mnt/own-%d" % (2 if mapped else 1)
        extra = ["-o", "mapUid=1000", "-o", "mapGid=1000"] if mapped else []
        rc, out = hm("add", c.inst, host, mp, "--writable", *(list(add_args) + extra))
        if mapped and expect.get("map") is None:
            left = c.leftovers()
            t.ok(rc != 0 and expect["map_refused"] in out and not left,
                 "%s: the map option is refused, naming why (%s), nothing left"
                 % (tag, expect["map_refused"]), (out, left))
            break
        if not t.ok(rc == 0, "%s: add a writable mount for the ownership checks" % tag, out):
            continue
        rc, out = c.guest("echo r > %s/by-root && mkdir %s/dir-by-root" % (mp, mp))
        root_file = _host_owner(os.path.join(host, "by-root"))
        root_dir = _host_owner(os.path.join(host, "dir-by-root"))
        want_root = expect["map"]["other"] if mapped else me
        t.ok(rc == 0 and root_file == want_root and root_dir == want_root,
             "%s: a file and a directory guest root makes belong to %s on the host%s"
             % (tag, "%d:%d" % want_root, "" if mapped else " (the host user)"),
             (out, root_file, root_dir))
        seen = _guest_owners(c, ["%s/from-host" % mp])
        want_seen = (1000, 1000) if mapped else expect["host_in_guest"]
        t.ok(seen == [want_seen], "%s: the guest sees the host user's file as %d:%d"
             % ((tag,) + want_seen), seen)
        want_user = me if mapped else expect.get("user_to_host")
        if want_user is not None:
            rc, out = c.guest(as_user("echo u > %s/by-1000 && mkdir %s/dir-by-1000" % (mp, mp)))
            uf = _host_owner(os.path.join(host, "by-1000"))
            ud = _host_owner(os.path.join(host, "dir-by-1000"))
            t.ok(rc == 0 and ran_as_user(out) and uf == want_user and ud == want_user,
                 "%s: a file and a directory guest uid 1000 makes belong to %d:%d on the host%s"
                 % ((tag,) + want_user + (" (the host user)" if want_user == me else "",)),
                 (out, uf, ud))
        rc, out = hm("remove", c.inst, mp)
        left = c.leftovers()
        t.ok(rc == 0 and not left, "%s: remove, nothing left" % tag, (out, left))


def sanitizer_logs_begin(prefix):
    """With HM_SANITIZER_LOG_DIR set (the sanitizer pass of tests/run.sh),
    every ASan/LSan/UBSan report of the host programs this run starts
    (hotmount, hotmountd, anything linking libhotmount) goes to a file there
    instead of a stderr nobody reads (hotmountd's is /dev/null once it has
    daemonized). Returns the file prefix, or None."""
    d = os.environ.get("HM_SANITIZER_LOG_DIR")
    if not d:
        return None
    os.makedirs(d, exist_ok=True)
    base = os.path.join(os.path.abspath(d), "%s%d" % (prefix, os.getpid()))
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        opts = [o for o in os.environ.get(var, "").split(":") if o and
                not o.startswith("log_path=")]
        os.environ[var] = ":".join(opts + ["log_path=" + base])
    return base


def daemon_pid(inst):
    try:
        return int(open(os.path.join(inst, "hotmountd.pid")).read().strip())
    except (OSError, ValueError):
        return None


def sanitizer_logs_check(t, base, pid):
    """One more check when sanitizer_logs_begin was on: no report at all,
    once the stopped daemon (pid, read before stopping it: it removes its
    pid file) is gone, since LeakSanitizer reports at exit."""
    if not base:
        return
    import glob
    deadline = time.monotonic() + 60
    while pid and os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    files = sorted(glob.glob(base + ".*"))
    # t.ok shows the last 30 lines: the head of the first report (its kind
    # and the top frames)
    text = ""
    if files:
        text = "%s:\n%s" % (files[0], "\n".join(
            open(files[0], errors="replace").read().splitlines()[:28]))
    t.ok(not files, "no sanitizer report from the host programs (%d report files)" % len(files),
         text)


def run(prefix, cases, daemon=True, vm_kwargs=None, daemon_args=None):
    """The body of every product e2e test: skip when this machine cannot run
    it, build the guest image (cached), boot one VM with `hotmount
    qemu-args`, start hotmountd (unless daemon=False), run each case(c) with
    a Ctx, report a raising case as a failure, dump logs when anything
    failed, clean up. Returns the exit status."""
    from vm import VM, build_image  # here: hmtest stays importable without a VM
    t = TAP()
    why = skip_reason()
    if why:
        print("1..0 # SKIP " + why)
        return 0
    images = image_dir()
    build_image(images, AGENT)
    san_logs = sanitizer_logs_begin(prefix)
    work = tempfile.mkdtemp(prefix=prefix)
    inst = os.path.join(work, "inst")
    os.environ["HOTMOUNT_HOME"] = work
    t_start = time.monotonic()
    try:
        kw = vm_kwargs(images) if callable(vm_kwargs) else dict(vm_kwargs or {})
        with VM(work, images, instance_dir=inst, **kw) as vm:
            t.note("boot %.1f s, args from %s" % (vm.boot_time, vm.args_source))
            c = Ctx(t, vm, inst, work)
            c.images = images
            if daemon:
                extra = daemon_args(c) if callable(daemon_args) else list(daemon_args or [])
                d = start_daemon(inst, *extra)
                t.ok(d.returncode == 0 and
                     oct(os.stat(os.path.join(inst, "hotmountd.sock")).st_mode & 0o777) ==
                     "0o600", "hotmountd started, socket 0600", d.stdout + d.stderr)
            for case in cases:
                try:
                    case(c)
                except Exception:
                    t.ok(False, "%s raised" % getattr(case, "__name__", "case"),
                         traceback.format_exc())
            if t.failed:
                c.dump_logs()
    except Exception:
        t.ok(False, "e2e harness", traceback.format_exc())
    finally:
        last_pid = daemon_pid(inst)
        stop_daemon(inst)
        kill_virtiofsd(work)
        sanitizer_logs_check(t, san_logs, last_pid)
        if t.failed or os.environ.get("HM_E2E_KEEP"):
            t.note("kept " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    t.note("whole test %.0f s" % (time.monotonic() - t_start))
    t.done()
    return 1 if t.failed else 0


# --- SSH into the guest (reverse-sshfs) ------------------------------------------
# build-image.sh makes these once per image dir and bakes the host key and the
# authorized client key into the image; vm.VM(..., ssh_port=P) forwards
# 127.0.0.1:P to the guest's dropbear.

def ssh_material(image_dir):
    """The image's SSH test material: client_key (path of the OpenSSH private
    key root may log in with), host_key_line ("ssh-ed25519 AAAA..." of the
    guest's host key), wrong_host_key_line (another key's line, for bad host
    key tests), wrong_client_key (path of a key the guest does not accept)."""
    d = os.path.join(image_dir, "ssh")

    def line(name):
        with open(os.path.join(d, name)) as f:
            return " ".join(f.read().split()[:2])

    return {
        "client_key": os.path.join(d, "id_ed25519"),
        "host_key_line": line("host_ed25519.pub"),
        "wrong_host_key_line": line("wrong_host_ed25519.pub"),
        "wrong_client_key": os.path.join(d, "wrong_id_ed25519"),
    }


def write_known_hosts(path, port, key_line):
    """An OpenSSH known_hosts file naming key_line for 127.0.0.1:port."""
    with open(path, "w") as f:
        f.write("[127.0.0.1]:%d %s\n" % (port, key_line))
    return path


def ssh_argv(port, key, known_hosts, timeout=30):
    """OpenSSH client argv (command to be appended) for root@127.0.0.1:port,
    key only, strict host key checking against known_hosts, no prompts."""
    return ["ssh", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "UserKnownHostsFile=" + known_hosts, "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=%d" % timeout,
            "-o", "LogLevel=ERROR", "-p", str(port), "root@127.0.0.1"]
