#!/usr/bin/env python3
"""e2e-hostile-agent: guest root takes the agent channel and attacks the host.

One VM. Guest root stops hotmount-agent (a script that only sleeps is bound
over the binary, so the image's respawn loop starts that instead) and opens
the agent port /dev/virtio-ports/org.hotmount.agent.0 itself:

1. Lies, answered like an agent would: a hello whose name and version hold
   terminal escape sequences, a mount it claims to have done, list answers
   naming host paths and odd targets with a new boot id each time (escape
   sequences and 100 KB), mount errors holding escape sequences, and a
   100 KB error text. `hotmount add` and `status` must print no escape
   character, and no more than a few KiB of the guest's text;
   state.json must not take in the 100 KB boot id, and hotmountd.log no
   escape character (the health monitor logs a new boot id).
2. A flood: garbage lines, 1 MiB lines and deeply nested JSON, written
   without ever reading what the host sends (a stalled reader). Meanwhile
   `hotmount list` must answer in under 100 ms (median of 12 samples,
   each the best of 3 runs; none over 500 ms), hotmountd's resident memory must grow by less than 20 MiB, and hotmountd.log must
   stay under its cap (16 KiB for this test, HOTMOUNTD_LOG_MAX), the
   earlier lines moved to hotmountd.log.1.
3. The real agent comes back: the daemon serves an add and a remove again.

Every check reads the host (the CLI's bytes, /proc of hotmountd, the log
file), not the daemon's word. Prints TAP. Environment: see ../hmtest.py.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hmtest import HOTMOUNT, api, hm, run, start_daemon, stop_daemon  # noqa: E402

# Small, so that the cap acts within the test (the daemon and virtiofsd
# write more than this); the default is 4 MiB.
LOG_MAX = 16 * 1024
FLOOD_S = 40
LIST_ROUNDS = 12
RSS_LIMIT_KIB = 20 * 1024
PORT = "/dev/virtio-ports/org.hotmount.agent.0"

# Answers like an agent, each one a lie or an attack on the terminal. The
# guest has only busybox: this is ash.
EVIL_SH = r"""
P=%(port)s
if [ ! -e $P ]; then
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat $d/name 2>/dev/null)" = "${P##*/}" ] && P=/dev/${d##*/}
  done
fi
echo $$ > /tmp/evil.pid
BIG=$(head -c 100000 /dev/zero | tr '\0' f)
BIGERR=$(head -c 100000 /dev/zero | tr '\0' E)
E='\u001b' B='\u0007' C='\u009b'
n=0
exec 3<>$P
while :; do
  if ! read -r line <&3; then sleep 0.2; continue; fi
  id=$(echo "$line" | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
  [ -n "$id" ] || continue
  case "$line" in
  *'"op":"hello"'*)
    printf '{"id":%%s,"ok":true,"boot_id":"0f6c1e2a-0000-4000-8000-000000000001","major":1,"minor":1,"agent":"evil%%s[31m","agent_version":"6.6%%s]0;pwned%%s%%s[2J","capabilities":["mount.virtiofs","mount.9p","mount.9p.uname","umount","umount.lazy","umount.force","list"]}\n' "$id" "$E" "$E" "$B" "$E" >&3 ;;
  *'"op":"list"'*)
    # A new boot id each time: escape sequences and 100 KB.
    n=$((n + 1))
    b="$E]0;pwned$B$E[2J$n$BIG"
    printf '{"id":%%s,"ok":true,"boot_id":"%%s","mounts":[{"target":"/etc%%s[2J","fstype":"virtiofs","source":"/root/.ssh","options":"rw"},{"target":"/mnt/../../etc","fstype":"9p","source":"/","options":"%%s]0;x%%s"}]}\n' "$id" "$b" "$E" "$E" "$B" >&3 ;;
  *'"target":"/mnt/evil-ok"'*)
    printf '{"id":%%s,"ok":true}\n' "$id" >&3 ;;
  *'"target":"/mnt/evil-big"'*)
    printf '{"id":%%s,"ok":false,"errno":5,"error":"%%s"}\n' "$id" "$BIGERR" >&3 ;;
  *)
    printf '{"id":%%s,"ok":false,"errno":5,"error":"mount: %%s]0;pwned%%s%%s[2J%%s[31mfailed%%s31m"}\n' "$id" "$E" "$B" "$E" "$E" "$C" >&3 ;;
  esac
done
"""

# Never reads; writes garbage, 1 MiB lines and deep JSON for FLOOD_S.
FLOOD_SH = r"""
P=%(port)s
if [ ! -e $P ]; then
  for d in /sys/class/virtio-ports/*; do
    [ "$(cat $d/name 2>/dev/null)" = "${P##*/}" ] && P=/dev/${d##*/}
  done
fi
echo $$ > /tmp/flood.pid
DEEP=$(head -c 20000 /dev/zero | tr '\0' '[')
MIB=$(head -c 1048576 /dev/zero | tr '\0' a)
exec 3>$P
end=$(( $(date +%%s) + %(secs)d ))
while [ $(date +%%s) -lt $end ]; do
  yes 'garbage {"id": 1, ' | head -n 20000 >&3
  printf '{"id":1,"ok":true,"x":%%s\n' "$DEEP" >&3
  printf '%%s\n' "$MIB" >&3
  printf '\033]0;pwned\007\033[2J raw escape line\n' >&3
done
echo done > /tmp/flood.done
"""


def daemon_pid(c):
    with open(os.path.join(c.inst, "hotmountd.pid")) as f:
        return int(f.read().strip())


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def log_sizes(c):
    sizes = {}
    for name in ("hotmountd.log", "hotmountd.log.1"):
        p = os.path.join(c.inst, name)
        sizes[name] = os.path.getsize(p) if os.path.exists(p) else 0
    return sizes


def hm_bytes(*args, timeout=120):
    """The CLI's stdout+stderr as bytes (escape characters must not be lost
    in decoding)."""
    import subprocess
    p = subprocess.run([HOTMOUNT] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def guest_script(c, name, text):
    c.vm.check("cat > /tmp/%s <<'HMEOF'\n%s\nHMEOF" % (name, text))


def take_port(c):
    """Stops the real agent for good and starts the evil one on its port."""
    t = c.t
    c.vm.check("printf '#!/bin/sh\\nexec sleep 2147483647\\n' > /tmp/noagent && "
               "chmod 755 /tmp/noagent && mount --bind /tmp/noagent /usr/sbin/hotmount-agent && "
               "(killall hotmount-agent; true)")
    gone = False
    for _ in range(50):
        rc, out = c.guest("pidof hotmount-agent")
        if rc != 0:
            gone = True
            break
        time.sleep(0.2)
    t.ok(gone, "guest root stopped hotmount-agent (respawn starts a sleeper)", out)
    guest_script(c, "evil.sh", EVIL_SH % {"port": PORT})
    c.vm.check("setsid sh /tmp/evil.sh </dev/null >/dev/console 2>&1 &")
    time.sleep(1)
    rc, out = c.guest("kill -0 $(cat /tmp/evil.pid) && ls -l %s" % PORT)
    t.ok(rc == 0, "the guest's own program holds the agent port", out)
    # The daemon's connection (to QEMU's socket) outlives the agent: a new
    # daemon connects and says hello to the evil one.
    pid = daemon_pid(c)
    stop_daemon(c.inst)
    for _ in range(100):
        if not os.path.exists("/proc/%d" % pid):
            break
        time.sleep(0.1)
    d = start_daemon(c.inst)
    t.ok(d.returncode == 0, "hotmountd restarted against the evil agent", d.stdout + d.stderr)


def case_lies(c):
    t = c.t
    take_port(c)
    host = os.path.join(c.work, "share")
    os.makedirs(host, exist_ok=True)
    # A mount the evil agent claims to have done: the health monitor then
    # lists the guest every second and sees its boot ids.
    rc, out = hm_bytes("add", c.inst, host, "/mnt/evil-ok")
    t.ok(rc == 0, "add: the evil agent says it mounted", out[:2000])
    # An agent error with escape sequences (C0 ESC/BEL and the C1 CSI).
    rc, out = hm_bytes("add", c.inst, host, "/mnt/evil")
    t.ok(rc != 0 and b"failed" in out, "add against the evil agent fails with its message",
         out[:2000])
    t.ok(b"\x1b" not in out and b"\x07" not in out and b"\xc2\x9b" not in out,
         "add: no escape character reaches the terminal (the agent's error is escaped)",
         repr(out[:2000]))
    # A 100 KB error text.
    rc, out = hm_bytes("add", c.inst, host, "/mnt/evil-big")
    t.ok(rc != 0 and len(out) < 16384,
         "add: a 100 KB agent error does not reach the terminal whole (%d bytes printed)"
         % len(out), out[:600])
    # The version the evil hello claimed, shown by status.
    rc, out = hm_bytes("status", c.inst)
    t.note("status agent line: %r" % [l for l in out.splitlines() if l.startswith(b"agent ")])
    t.ok(rc == 0 and b"6.6" in out and b"\x1b" not in out and b"\x07" not in out,
         "status shows the agent's version, with no escape character", repr(out[:2000]))
    time.sleep(5)  # the monitor lists the guest every second
    text = b""
    for name in ("hotmountd.log", "hotmountd.log.1"):
        p = os.path.join(c.inst, name)
        if os.path.exists(p):
            with open(p, "rb") as f:
                text += f.read()
    t.ok(b"\x1b" not in text and b"\x07" not in text,
         "hotmountd.log holds no escape character from the guest's answers",
         repr([l for l in text.splitlines() if b"\x1b" in l][:3]))
    size = os.path.getsize(os.path.join(c.inst, "state.json"))
    t.ok(size < 16384, "state.json did not take in a 100 KB boot id (%d bytes)" % size)


def case_flood(c):
    t = c.t
    pid = daemon_pid(c)
    rss0 = rss_kib(pid)
    # The evil responder gives the port to the flooder, which never reads.
    c.vm.check("kill $(cat /tmp/evil.pid); sleep 0.5")
    guest_script(c, "flood.sh", FLOOD_SH % {"port": PORT, "secs": FLOOD_S})
    c.vm.check("rm -f /tmp/flood.done; setsid sh /tmp/flood.sh </dev/null >/dev/console 2>&1 &")
    # The daemon reads the port only while connected: a status or add makes
    # it (re)connect; the add waits on an agent that never answers.
    import subprocess
    add = subprocess.Popen([HOTMOUNT, "add", c.inst, os.path.join(c.work, "share"),
                            "/mnt/during-flood"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    lat, fails, rss_max, log_max = [], [], rss0, 0
    t0 = time.monotonic()
    api_lat = []
    for i in range(LIST_ROUNDS):
        time.sleep(max(0.0, (i + 1) * (FLOOD_S - 5) / LIST_ROUNDS - (time.monotonic() - t0)))
        # Each sample is the best of 3 back-to-back runs: a scheduling
        # hiccup of this shared 2-core machine (the guest floods with both
        # vCPUs) is not the daemon's; a daemon that stalls shows in all 3.
        best = None
        for _ in range(3):
            s = time.monotonic()
            rc, out = hm("list", c.inst, "--json", timeout=60)
            took = time.monotonic() - s
            best = took if best is None else min(best, took)
            if rc != 0:
                fails.append(out[:300])
        lat.append(best)
        s = time.monotonic()
        st, _ = api(c.inst, "GET", "/v1/mounts", timeout=60)
        api_lat.append(time.monotonic() - s)
        if st != 200:
            fails.append("GET /v1/mounts: %s" % st)
        rss_max = max(rss_max, rss_kib(pid))
        log_max = max(log_max, *log_sizes(c).values())
    rc, out = c.guest("cat /tmp/flood.done 2>/dev/null; cat /proc/$(cat /tmp/flood.pid)/io "
                      "2>/dev/null | grep wchar")
    t.note("flood: %s" % out.strip().replace("\n", ", "))
    t.note("hotmount list during the flood: max %.0f ms, median %.0f ms (n=%d, best of 3)"
           % (1000 * max(lat), 1000 * sorted(lat)[len(lat) // 2], len(lat)))
    t.note("GET /v1/mounts during the flood: max %.0f ms, median %.0f ms (n=%d)"
           % (1000 * max(api_lat), 1000 * sorted(api_lat)[len(api_lat) // 2], len(api_lat)))
    t.ok(not fails, "hotmount list answered during the flood", "\n".join(fails))
    # The median carries the 100 ms goal; one sample of twelve may lose the
    # shared 2-core machine to the guest's two flooding vCPUs (141 ms seen
    # once at load 10), but none may wait on the agent: an add that waits on
    # it runs meanwhile, and a list queued behind it would take seconds.
    med = sorted(lat)[len(lat) // 2]
    t.ok(med < 0.1 and max(lat) < 0.5,
         "hotmount list during the flood: median %.0f ms < 100, max %.0f ms < 500"
         % (1000 * med, 1000 * max(lat)), ["%.0f" % (1000 * x) for x in lat])
    t.note("hotmountd RSS %d KiB before, at most %d KiB during the flood" % (rss0, rss_max))
    t.ok(rss_max - rss0 < RSS_LIMIT_KIB, "hotmountd memory grew by %d KiB (< %d KiB)"
         % (rss_max - rss0, RSS_LIMIT_KIB))
    sizes = log_sizes(c)
    log_max = max(log_max, *sizes.values())
    t.note("hotmountd.log %d bytes, .1 %d bytes, largest seen %d" %
           (sizes["hotmountd.log"], sizes["hotmountd.log.1"], log_max))
    # The watcher looks every 250 ms: allow what the daemon writes meanwhile.
    t.ok(log_max <= LOG_MAX + 16384, "hotmountd.log stays under its cap of %d bytes "
         "(largest seen %d)" % (LOG_MAX, log_max))
    t.ok(sizes["hotmountd.log.1"] > 0, "the cap acted: earlier lines are in hotmountd.log.1")
    try:
        out, _ = add.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        add.kill()
        out, _ = add.communicate()
        out = b"(still running after 180 s) " + (out or b"")
    t.ok(add.returncode not in (None, 0), "an add during the flood fails instead of hanging",
         (out or b"")[:600])


def case_recovers(c):
    t = c.t
    c.vm.check("kill $(cat /tmp/flood.pid) 2>/dev/null; umount /usr/sbin/hotmount-agent; "
               "killall sleep 2>/dev/null; true")
    back = False
    for _ in range(60):
        rc, out = c.guest("pidof hotmount-agent")
        if rc == 0:
            back = True
            break
        time.sleep(0.5)
    t.ok(back, "the real agent runs again")
    time.sleep(1)
    host = os.path.join(c.work, "share")
    with open(os.path.join(host, "f.txt"), "w") as f:
        f.write("after the attack\n")
    rc, out = hm("add", c.inst, host, "/mnt/after", timeout=180)
    t.ok(rc == 0, "the daemon mounts again once the real agent is back", out)
    if rc == 0:
        rc2, got = c.guest("cat /mnt/after/f.txt")
        t.ok(got.strip() == "after the attack", "the guest reads the share", got)
        rc, out = hm("remove", c.inst, "/mnt/after", timeout=180)
        t.ok(rc == 0, "remove", out)


if __name__ == "__main__":
    os.environ["HOTMOUNTD_LOG_MAX"] = str(LOG_MAX)
    sys.exit(run("hm-e2e-hostile-agent-", [case_lies, case_flood, case_recovers]))
