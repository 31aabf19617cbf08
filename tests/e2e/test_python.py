#!/usr/bin/env python3
"""e2e-python: the Python binding (examples/python/hotmount.py) against a
real hotmountd and a real guest.

One VM is booted with `hotmount qemu-args` and hotmountd serves it (hmtest.run);
every add, list, remove and status below goes through the binding only. What
the guest sees is read through the test channel, what QEMU and the host hold
through hmtest's leftovers check. Ends with a leak check: thousands of calls,
the process's RSS and malloc'd bytes before and after, and a control run that
leaks on purpose to show the check can see a leak. Prints TAP.

Environment: HOTMOUNT_LIB (libhotmount.so.0; default: the build tree's, next
to HOTMOUNT_BIN), plus hmtest's HOTMOUNT_BIN, HM_AGENT_BIN, HM_E2E_IMAGE_DIR.
"""

import ctypes
import gc
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))

import hmtest  # noqa: E402
from hmtest import api, run, start_daemon, stop_daemon  # noqa: E402

if not os.environ.get("HOTMOUNT_LIB") and hmtest.HOTMOUNT:
    os.environ["HOTMOUNT_LIB"] = os.path.join(os.path.dirname(os.path.dirname(
        hmtest.HOTMOUNT)), "lib", "libhotmount.so.0")

import hotmount  # noqa: E402

GUEST_RO = "/mnt/py-ro"
GUEST_RW = "/mnt/py-rw"
# How much the process may grow over the measured calls. A leaked list
# (one mount) or status per call is several hundred bytes at least, so the
# leak control below (2000 status objects kept) must exceed it.
LEAK_CALLS = 2000
RSS_BOUND_KB = 512
HEAP_BOUND = 256 * 1024


def host_dir(c, name="host"):
    d = os.path.join(c.work, name)
    os.makedirs(d, exist_ok=True)
    return d


def raises(fn, cls):
    """(exception or None, text for a failure)."""
    try:
        r = fn()
    except cls as e:
        return e, "%s: %s" % (type(e).__name__, e)
    except Exception as e:  # a wrong class is a failure, reported as such
        return None, "%s (code %s): %s" % (type(e).__name__, getattr(e, "code", None), e)
    return None, "no exception; returned %r" % (r,)


def case_library(c):
    t = c.t
    lib = hotmount.load()
    t.ok(lib._name == os.environ["HOTMOUNT_LIB"], "binding loaded $HOTMOUNT_LIB", lib._name)
    v = hotmount.version()
    parts = v.split(".")
    t.ok(len(parts) == 3 and hotmount.version_number() ==
         int(parts[0]) * 10000 + int(parts[1]) * 100 + int(parts[2]),
         "version() %s matches version_number() %d" % (v, hotmount.version_number()))
    # hmtest.run set HOTMOUNT_HOME to the work dir; the instance is work/inst
    t.ok(hotmount.instance_dir("inst") == c.inst and hotmount.instance_dir(c.inst) == c.inst,
         "instance_dir: name under $HOTMOUNT_HOME, path as given",
         "%s %s" % (hotmount.instance_dir("inst"), c.inst))
    e, why = raises(lambda: hotmount.instance_dir("no good"), hotmount.InvalidError)
    t.ok(e is not None and isinstance(e, ValueError) and e.code == -22 and
         "no good" in str(e) and "not valid" in str(e),
         "instance_dir of a bad name: InvalidError naming it", why)
    t.ok(hotmount.strerror(-28) == "no free hot-plug slot", "strerror(HM_E_NO_SLOT)",
         hotmount.strerror(-28))


def case_status(c, cl):
    t = c.t
    cl.connect_agent(timeout=30)
    st = cl.status()
    code, via_http = api(c.inst, "GET", "/v1/status")
    t.ok(code == 200 and st == via_http, "status() equals GET /v1/status",
         "binding %s\nhttp %s %s" % (st, code, via_http))
    t.ok(st.get("version") == hotmount.version() and st.get("instance") == c.inst and
         st.get("backend") == "qemu" and st.get("qmp") == "connected" and
         st.get("agent") == "connected" and st.get("mounts") == 0 and
         st.get("slotsTotal") == 32 and st.get("slotsFree") == 32 and
         st.get("memoryShared") is True and st.get("agentChannel") is True,
         "status(): the daemon's facts, typed (ints, bools)", st)
    raw = cl.status(raw=True)
    t.ok(list(raw) == list(st) and all(isinstance(v, str) for v in raw.values()) and
         raw["slotsTotal"] == "32" and raw["memoryShared"] == "true",
         "status(raw=True): same keys in the same order, strings", raw)
    with hotmount.Client("inst") as by_name:
        st2 = by_name.status()
    t.ok(by_name.closed and st2.get("instance") == c.inst and
         by_name.socket_path == os.path.join(c.inst, "hotmountd.sock"),
         "Client(name) reaches the same daemon; with-block closes it", st2)


def case_readonly(c, cl):
    t = c.t
    host = host_dir(c)
    with open(os.path.join(host, "hello.txt"), "w") as f:
        f.write("hello from python\n")
    t0 = time.monotonic()
    m = cl.add(host, GUEST_RO)
    t.note("add took %.2f s" % (time.monotonic() - t0))
    t.ok(isinstance(m, hotmount.Mount) and m.id.startswith("hm-") and
         m.host_path == os.path.realpath(host) and m.guest_path == GUEST_RO and
         m.type == "virtiofs" and m.writable is False and m.persist is False and
         m.state == "mounted" and m.tag and m.reason is None,
         "add() returns the new mount's snapshot", m)
    rc, out = c.guest("cat %s/hello.txt" % GUEST_RO)
    t.ok(rc == 0 and out.strip() == "hello from python", "guest reads the host file", out)
    rc, out = c.guest("grep ' %s ' /proc/mounts" % GUEST_RO)
    t.ok(rc == 0 and " virtiofs " in out and " ro," in out and m.tag in out,
         "guest has a ro virtiofs mount of the mount's tag", out)
    rc, out = c.guest("echo x > %s/new.txt" % GUEST_RO)
    t.ok(rc != 0 and not os.path.exists(os.path.join(host, "new.txt")),
         "guest write to the read-only mount refused", out)
    lst = cl.list()
    t.ok(lst == [m], "list() shows exactly that mount, same fields", lst)
    code, js = api(c.inst, "GET", "/v1/mounts")
    j = js[0] if code == 200 and isinstance(js, list) and len(js) == 1 else {}
    t.ok(j.get("id") == m.id and j.get("hostPath") == m.host_path and
         j.get("mountPoint") == m.guest_path and j.get("type") == m.type and
         j.get("writable") == m.writable and j.get("persist") == m.persist and
         j.get("state") == m.state and j.get("tag") == m.tag,
         "list() fields agree with GET /v1/mounts", "%s\n%s" % (lst, js))
    e, why = raises(lambda: cl.add(host_dir(c, "other"), GUEST_RO), hotmount.ExistsError)
    t.ok(e is not None and e.code == -17 and e.errno == 17 and
         isinstance(e, FileExistsError) and GUEST_RO in str(e) and
         str(e).startswith("hm_client_add"),
         "same mount point twice: ExistsError naming it", why)
    t.ok(cl.list() == [m], "the refused add changed nothing")


def case_writable(c, cl):
    t = c.t
    host = host_dir(c, "rw")
    m = cl.add(host, GUEST_RW, writable=True, persist=True, options={"cache": "never"})
    t.ok(m.writable is True and m.persist is True and m.state == "mounted" and
         m.guest_path == GUEST_RW, "add(writable=True, persist=True, options=...)", m)
    rc, out = c.guest("echo from-guest > %s/g.txt && sync" % GUEST_RW)
    path = os.path.join(host, "g.txt")
    body = open(path).read() if os.path.exists(path) else None
    t.ok(rc == 0 and body == "from-guest\n", "guest write shows on the host", "%s %r" % (out, body))
    with open(os.path.join(host, "h.txt"), "w") as f:
        f.write("from-host\n")
    rc, out = c.guest("cat %s/h.txt" % GUEST_RW)
    t.ok(rc == 0 and out.strip() == "from-host", "host write shows in the guest", out)
    lst = sorted(cl.list(), key=lambda x: x.guest_path)
    t.ok([(x.guest_path, x.writable, x.persist, x.state) for x in lst] ==
         [(GUEST_RO, False, False, "mounted"), (GUEST_RW, True, True, "mounted")] and
         len({x.id for x in lst}) == 2 and m in lst, "list() shows both, right flags", lst)
    st = cl.status()
    t.ok(st.get("mounts") == 2 and st.get("slotsFree") == 30, "status() counts them", st)


def case_remove(c, cl):
    t = c.t
    cl.remove(GUEST_RO)
    t.ok(GUEST_RO not in c.guest_mounts() and [x.guest_path for x in cl.list()] == [GUEST_RW],
         "remove(): gone from the guest and from list()")
    cl.remove(GUEST_RW, lazy=True)
    left = c.leftovers()
    t.ok(GUEST_RW not in c.guest_mounts() and cl.list() == [] and not left and
         c.pci_devices_behind_ports() == 0,
         "remove(lazy=True): gone; nothing left on host, QEMU or registry", left)
    e, why = raises(lambda: cl.remove(GUEST_RO), hotmount.NotFoundError)
    t.ok(e is not None and e.code == -2 and isinstance(e, FileNotFoundError) and
         "nothing is hot-mounted at %s" % GUEST_RO in str(e),
         "remove of an unknown path: NotFoundError naming it", why)
    e, why = raises(lambda: cl.remove(GUEST_RO, force=True), hotmount.NotFoundError)
    t.ok(e is not None, "remove(force=True) of an unknown path: NotFoundError too", why)


def case_bad_input(c, cl):
    t = c.t
    host = host_dir(c)
    afile = os.path.join(c.work, "a-file")
    open(afile, "w").close()
    bad = [
        ((os.path.join(c.work, "missing"), "/mnt/x"), {}, "does not exist"),
        ((afile, "/mnt/x"), {}, "not a directory"),
        ((host, "/proc"), {}, "system path"),
        ((host, "relative/x"), {}, "absolute"),
        ((host, "/mnt/../etc"), {}, ".."),
        ((host, "/mnt/x"), {"options": {"cache": "sometimes"}}, "cache"),
        ((host, "/mnt/x"), {"options": {"msize": "1"}}, "msize"),
        ((host, "/mnt/x"), {"type": "nfs"}, "nfs"),
        ((host + "\0x", "/mnt/x"), {}, "NUL"),
    ]
    for args, kw, needle in bad:
        e, why = raises(lambda: cl.add(*args, **kw), hotmount.InvalidError)
        t.ok(e is not None and e.code == -22 and isinstance(e, ValueError) and needle in str(e),
             "bad input refused with InvalidError naming %r" % needle, why)
    left = c.leftovers()
    t.ok(not left and cl.list() == [], "bad input left nothing behind", left)


def case_awkward_path(c, cl):
    t = c.t
    host = os.path.join(c.work, "py dir, with 'quote' ✓")
    os.makedirs(host)
    with open(os.path.join(host, "f.txt"), "w") as f:
        f.write("awkward\n")
    guest = "/mnt/py ✓ space"
    m = cl.add(host, guest)
    rc, out = c.guest("cat '%s/f.txt'" % guest)
    t.ok(m.host_path == os.path.realpath(host) and m.guest_path == guest and rc == 0 and out.strip() == "awkward",
         "unicode, space, comma, quote round-trip through the binding", "%s %s" % (m, out))
    cl.remove(guest)
    t.ok(not c.leftovers() and guest not in c.guest_mounts(), "removed, nothing left")


def case_threads(c, cl):
    """The C client takes one thread at a time; the binding serializes."""
    t = c.t
    errors, counts = [], []

    def worker():
        try:
            for _ in range(50):
                counts.append(len(cl.list()) + len(cl.status()))
        except Exception as e:  # reported below
            errors.append(repr(e))

    th = [threading.Thread(target=worker) for _ in range(4)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    t.ok(not errors and len(counts) == 200, "one Client shared by 4 threads: 400 calls", errors)


def case_no_daemon(c, cl):
    t = c.t
    with hotmount.Client(os.path.join(c.work, "nodaemon")) as nd:
        e, why = raises(nd.list, hotmount.NotReadyError)
    t.ok(e is not None and e.code == -107 and isinstance(e, ConnectionError) and
         "hotmountd is not running" in str(e) and
         "start it with: hotmountd %s" % os.path.join(c.work, "nodaemon") in str(e),
         "no daemon: NotReadyError saying how to start it", why)
    # the real daemon stopped under a live client, then started again
    pid = int(open(os.path.join(c.inst, "hotmountd.pid")).read().strip())
    stop_daemon(c.inst)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
        time.sleep(0.1)
    e, why = raises(cl.status, hotmount.NotReadyError)
    t.ok(e is not None and "hotmountd is not running" in str(e),
         "daemon stopped: the open client's status() raises NotReadyError", why)
    d = start_daemon(c.inst)
    st = cl.status() if d.returncode == 0 else {}
    t.ok(st.get("instance") == c.inst, "daemon started again: the same client works",
         d.stdout + d.stderr + str(st))


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2
_libc.mallinfo2.argtypes = []
_libc.malloc_trim.restype = ctypes.c_int
_libc.malloc_trim.argtypes = [ctypes.c_size_t]


def heap_bytes():
    """Bytes malloc has handed out and not had back (glibc mallinfo2)."""
    gc.collect()
    m = _libc.mallinfo2()
    return m.uordblks + m.hblkhd


def measure(fn, n):
    fn(n // 10)  # warm up: libcurl's connection, Python's caches
    gc.collect()
    _libc.malloc_trim(0)
    r0, h0 = rss_kb(), heap_bytes()
    t0 = time.monotonic()
    fn(n)
    dt = time.monotonic() - t0
    gc.collect()
    _libc.malloc_trim(0)
    return rss_kb() - r0, heap_bytes() - h0, dt


def case_leaks(c, cl):
    t = c.t
    m = cl.add(host_dir(c), GUEST_RO)  # a list with an element to free

    spent = {"list": 0.0, "status": 0.0}

    def calls(n):
        for _ in range(n):
            t0 = time.monotonic()
            if len(cl.list()) != 1:
                raise RuntimeError("list() lost the mount")
            t1 = time.monotonic()
            cl.status()
            spent["list"] += t1 - t0
            spent["status"] += time.monotonic() - t1

    def failing(n):
        for _ in range(n):
            try:
                cl.remove("/mnt/never-there")
            except hotmount.NotFoundError:
                pass
            try:
                cl.add(c.work + "/missing", "/mnt/x")
            except hotmount.InvalidError:
                pass

    lib = hotmount.load()

    def leaky(n):
        # the control: what a binding that forgot hm_status_free would do
        for _ in range(n):
            st = ctypes.POINTER(hotmount._Status)()
            if lib.hm_client_status(cl._handle(), ctypes.byref(st), None) < 0:
                raise RuntimeError("hm_client_status failed")

    drss, dheap, dt = measure(calls, LEAK_CALLS)
    n_all = LEAK_CALLS + LEAK_CALLS // 10  # with the warm-up
    t.note("%d list() + %d status(): RSS %+d kB, heap %+d B, %.1f s (list %.2f ms, status "
           "%.2f ms per call)" % (LEAK_CALLS, LEAK_CALLS, drss, dheap, dt,
                                  spent["list"] * 1000 / n_all, spent["status"] * 1000 / n_all))
    t.ok(drss <= RSS_BOUND_KB and dheap <= HEAP_BOUND,
         "no growth over %d list()/status() calls (RSS %+d kB <= %d, heap %+d B <= %d)"
         % (2 * LEAK_CALLS, drss, RSS_BOUND_KB, dheap, HEAP_BOUND))
    drss2, dheap2, dt2 = measure(failing, LEAK_CALLS)
    t.note("%d failing remove() + %d failing add(): RSS %+d kB, heap %+d B, %.1f s"
           % (LEAK_CALLS, LEAK_CALLS, drss2, dheap2, dt2))
    t.ok(drss2 <= RSS_BOUND_KB and dheap2 <= HEAP_BOUND,
         "no growth over %d failing calls (errors freed): RSS %+d kB, heap %+d B"
         % (2 * LEAK_CALLS, drss2, dheap2))
    drss3, dheap3, dt3 = measure(leaky, LEAK_CALLS)
    t.note("control, %d hm_client_status() never freed: RSS %+d kB, heap %+d B"
           % (LEAK_CALLS, drss3, dheap3))
    t.ok(drss3 > RSS_BOUND_KB and dheap3 > HEAP_BOUND,
         "the check sees a deliberate leak of %d status objects (RSS %+d kB, heap %+d B)"
         % (LEAK_CALLS, drss3, dheap3))
    cl.remove(m.guest_path)
    t.ok(not c.leftovers(), "removed, nothing left")


def case_close(c, cl):
    t = c.t
    cl.close()
    cl.close()
    e, why = raises(cl.list, ValueError)
    t.ok(cl.closed and e is not None and "closed" in str(e), "closed client: ValueError", why)


def main():
    cl = []

    def client(c):
        cl.append(hotmount.Client(c.inst, timeout=120))
        c.t.ok(cl[0].socket_path == os.path.join(c.inst, "hotmountd.sock"),
               "Client(instance dir) uses INSTANCE/hotmountd.sock", cl[0])

    def with_client(f):
        def case(c):
            f(c, cl[0])
        case.__name__ = f.__name__
        return case

    cases = [case_library, client] + [with_client(f) for f in (
        case_status, case_readonly, case_writable, case_remove, case_bad_input,
        case_awkward_path, case_threads, case_no_daemon, case_leaks, case_close)]
    return run("hm-e2e-py-", cases)


if __name__ == "__main__":
    sys.exit(main())
