/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reverse-sshfs backend.
 *
 * Per mount: one SSH session to the guest with two exec channels.
 *   data   `sshfs -o passive ... hotmount:/share GUEST_PATH`: sshfs speaks
 *          SFTP on its stdin/stdout, which is this channel; the host end is
 *          pumped to a confined sftp-server (sftp_jail.c) over a socketpair.
 *   beat   a small shell script: checks the guest can mount (sshfs, FUSE,
 *          the mount point), says "ready", waits for the mount to appear,
 *          says "mounted", then runs `cat`: the keepalive echo. libssh has
 *          no keepalive with a reply, and with QEMU user networking a dead
 *          guest link leaves the host's TCP connection (to QEMU's slirp)
 *          open, so only an answer from the guest proves the path is alive.
 *
 * Threads: attach connects and starts the channels on the caller's thread,
 * then hands the session to the mount's pump thread, which alone uses it
 * from then on (libssh sessions are not thread-safe). The pump polls the
 * SSH socket, the sftp-server socket and a stop eventfd; it reads a side
 * only while the other side can take the data (sftp-server's socket buffer,
 * the SSH channel window), so a slow reader slows the writer instead of
 * growing buffers: back-pressure, and no busy loop. It moves data for at
 * most PUMP_ROUNDS rounds between polls, so a stop is seen however fast the
 * guest sends.
 *
 * Unmounting in the guest, and cleaning up after a daemon restart, go over
 * a separate control session (guest_umount).
 */
#include "driver_internal.h"
#include "guest_path.h"
#include "mount_internal.h"
#include "notify/notify.h"
#include "spawn.h"
#include "sshfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MOUNT_TIMEOUT_MS 30000
#define BUF_SIZE (256 * 1024)
#define TAIL_SIZE 1024
/* Rounds of moving data before the pump looks at its stop fd again: a
 * guest that keeps a side readable (a stderr flood) must not keep remove and
 * shutdown waiting. */
#define PUMP_ROUNDS 64
/* libssh grants the guest more window on every read of a channel, whatever
 * it still buffers for that channel. So what the pump does not read piles
 * up in libssh: sipping a stderr flood 512 bytes a round grew it to
 * libssh's 256 MiB buffer limit, then a crash. The pump therefore drains
 * stderr and the beat channel each round (up to DRAIN_READS reads of
 * DRAIN_SIZE, keeping only the tail), and stops reading the data channel
 * at all while more than DATA_BACKLOG of sshfs's requests wait for
 * sftp-server, so no read grants the guest room for more. */
#define DRAIN_SIZE 4096
#define DRAIN_READS 256
#define DATA_BACKLOG (1024 * 1024)

enum { STARTING = 0, MOUNTED = 1, DEAD = -1 };

typedef struct smount {
  struct smount *next;
  char *id;
  char *guest_path;
  pthread_mutex_t lock; /* phase, reason, tail */
  pthread_cond_t cond;
  int phase;
  char *reason;
  char tail[TAIL_SIZE]; /* last guest stderr */
  size_t tail_len;

  ssh_session s; /* owned by the pump thread while it runs */
  ssh_channel data, beat;
  int sock; /* our end of sftp-server's stdin/stdout */
  pid_t sftp_pid;
  int stop_fd, dead_fd;
  pthread_t thread;
  int thread_started;
  long ka_interval, ka_count;
} smount;

typedef struct sshfs_hp {
  hm_ssh_config *cfg;
  char *dir;
  char *jail;
  pthread_mutex_t lock; /* mounts */
  smount *mounts;
  pthread_mutex_t ctl_lock; /* ctl */
  ssh_session ctl;
} sshfs_hp;

/* ---- per-mount state ------------------------------------------------------ */

static void tail_add(smount *m, const char *p, size_t n) {
  pthread_mutex_lock(&m->lock);
  if (n >= TAIL_SIZE - 1) {
    p += n - (TAIL_SIZE - 1);
    n = TAIL_SIZE - 1;
  }
  if (m->tail_len + n > TAIL_SIZE - 1) {
    size_t drop = m->tail_len + n - (TAIL_SIZE - 1);
    memmove(m->tail, m->tail + drop, m->tail_len - drop);
    m->tail_len -= drop;
  }
  memcpy(m->tail + m->tail_len, p, n);
  m->tail_len += n;
  m->tail[m->tail_len] = 0;
  pthread_mutex_unlock(&m->lock);
}

/* The guest's last words, trimmed, for messages. */
static char *tail_text(smount *m) {
  pthread_mutex_lock(&m->lock);
  char *t = strdup(m->tail);
  pthread_mutex_unlock(&m->lock);
  if (!t)
    return NULL;
  size_t n = strlen(t);
  while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
    t[--n] = 0;
  for (char *p = t; *p; p++)
    if (*p == '\n')
      *p = ' ';
  /* The guest wrote it: it reaches logs and terminals escaped. */
  char *q = hm_guest_path_quote(t);
  free(t);
  return q;
}

static void set_phase(smount *m, int phase, const char *reason) {
  pthread_mutex_lock(&m->lock);
  if (m->phase != DEAD) {
    m->phase = phase;
    if (reason) {
      free(m->reason);
      m->reason = strdup(reason);
    }
    pthread_cond_broadcast(&m->cond);
  }
  pthread_mutex_unlock(&m->lock);
  if (phase == DEAD) {
    uint64_t one = 1;
    if (write(m->dead_fd, &one, sizeof(one)) < 0)
      hm_debug("sshfs: dead_fd: %s", strerror(errno));
  }
}

static void die(smount *m, const char *fmt, ...) HM_PRINTF(2, 3);
static void die(smount *m, const char *fmt, ...) {
  char *why = NULL, *full = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&why, fmt, ap) < 0)
    why = NULL;
  va_end(ap);
  char *t = tail_text(m);
  if (asprintf(&full, "%s%s%s%s", why ? why : "reverse-sshfs failed", t && *t ? " (guest: " : "",
               t && *t ? t : "", t && *t ? ")" : "") < 0)
    full = NULL;
  set_phase(m, DEAD, full ? full : why);
  free(t);
  free(why);
  free(full);
}

static void smount_free(smount *m) {
  if (!m)
    return;
  free(m->id);
  free(m->guest_path);
  free(m->reason);
  pthread_mutex_destroy(&m->lock);
  pthread_cond_destroy(&m->cond);
  free(m);
}

/* Markers are strings anyone can put in an environment: a process is taken
 * for our sftp-server only when it also runs as our euid (reverse-sshfs
 * needs root, so an impostor would have to be root already). Its exe is not
 * compared: it runs chrooted, where /proc/PID/exe does not name the host's
 * path. */
static int sftp_alive_as(pid_t pid, const char *id) {
  if (!hm_helper_alive(pid, "sftp-server") || !hm_proc_is_ours(pid, NULL))
    return 0;
  char *v = hm_proc_getenv(pid, HM_ENV_MOUNT);
  int ok = v && strcmp(v, id) == 0;
  free(v);
  return ok;
}

/* Tears down everything of m but the record: pump, channels, session,
 * sftp-server. */
static void smount_stop(smount *m) {
  if (m->thread_started) {
    uint64_t one = 1;
    if (write(m->stop_fd, &one, sizeof(one)) < 0)
      hm_debug("sshfs: stop_fd: %s", strerror(errno));
    pthread_join(m->thread, NULL);
    m->thread_started = 0;
  }
  if (m->s)
    ssh_set_blocking(m->s, 1);
  if (m->data) {
    if (m->s && ssh_is_connected(m->s))
      ssh_channel_close(m->data);
    ssh_channel_free(m->data);
    m->data = NULL;
  }
  if (m->beat) {
    if (m->s && ssh_is_connected(m->s))
      ssh_channel_close(m->beat);
    ssh_channel_free(m->beat);
    m->beat = NULL;
  }
  hm_ssh_close(m->s);
  m->s = NULL;
  if (m->sock >= 0)
    close(m->sock); /* sftp-server reads EOF and ends */
  m->sock = -1;
  if (m->sftp_pid > 0) {
    hm_error *e = NULL;
    if (hm_helper_stop(m->sftp_pid, NULL, "sftp-server", 3000, &e) < 0)
      hm_warn("%s", hm_error_message(e));
    hm_error_free(e);
    m->sftp_pid = 0;
  }
  if (m->stop_fd >= 0)
    close(m->stop_fd);
  if (m->dead_fd >= 0)
    close(m->dead_fd);
  m->stop_fd = m->dead_fd = -1;
}

/* ---- the pump ----------------------------------------------------------- */

typedef struct buf {
  char *p;
  size_t off, len;
} buf;

static void *pump_main(void *arg) {
  smount *m = arg;
  buf to_sock = {malloc(BUF_SIZE), 0, 0}, to_ch = {malloc(BUF_SIZE), 0, 0};
  char line[64];
  size_t line_len = 0;
  int mounted = 0;
  int64_t last_rx = hm_now_ms(), last_probe = last_rx;
  int probes = 0;
  if (!to_sock.p || !to_ch.p) {
    die(m, "out of memory");
    goto out;
  }
  ssh_set_blocking(m->s, 0);
  for (;;) {
    int progress = 1;
    for (int round = 0; progress && round < PUMP_ROUNDS; round++) {
      progress = 0;
      /* guest sshfs -> sftp-server */
      if (!to_sock.len) {
        int n = ssh_channel_read_nonblocking(m->data, to_sock.p, BUF_SIZE, 0);
        if (n == SSH_ERROR) {
          die(m, "SSH connection lost: %s", ssh_get_error(m->s));
          goto out;
        }
        if (n > 0) {
          to_sock.off = 0;
          to_sock.len = (size_t)n;
          last_rx = hm_now_ms();
        }
      }
      if (to_sock.len) {
        ssize_t w = write(m->sock, to_sock.p + to_sock.off, to_sock.len);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          die(m, "sftp-server went away: %s", strerror(errno));
          goto out;
        }
        if (w > 0) {
          to_sock.off += (size_t)w;
          to_sock.len -= (size_t)w;
          progress = 1;
        }
      }
      /* sftp-server -> guest sshfs, as much as the channel window takes */
      if (!to_ch.len) {
        uint32_t win = ssh_channel_window_size(m->data);
        if (win > 0) {
          ssize_t n = read(m->sock, to_ch.p, win < BUF_SIZE ? win : BUF_SIZE);
          if (n == 0) {
            die(m, "sftp-server exited");
            goto out;
          }
          if (n < 0 && errno != EAGAIN && errno != EINTR) {
            die(m, "reading from sftp-server: %s", strerror(errno));
            goto out;
          }
          if (n > 0) {
            to_ch.off = 0;
            to_ch.len = (size_t)n;
          }
        }
      }
      if (to_ch.len) {
        int w = ssh_channel_write(m->data, to_ch.p + to_ch.off, (uint32_t)to_ch.len);
        if (w == SSH_ERROR) {
          die(m, "SSH connection lost: %s", ssh_get_error(m->s));
          goto out;
        }
        if (w > 0) {
          to_ch.off += (size_t)w;
          to_ch.len -= (size_t)w;
          progress = 1;
        }
      }
      /* stderr of both, and the beat channel's answers: drained (see
       * DRAIN_READS), the data channel's only while its backlog is small */
      char tmp[DRAIN_SIZE];
      for (int c = 0; c < 3; c++) {
        ssh_channel ch = c == 0 ? m->data : m->beat;
        if (c == 0 && ssh_channel_poll(m->data, 0) > DATA_BACKLOG)
          continue;
        for (int k = 0; k < DRAIN_READS; k++) {
          int n = ssh_channel_read_nonblocking(ch, tmp, sizeof(tmp), c != 2);
          if (n == SSH_ERROR) {
            die(m, "SSH connection lost: %s", ssh_get_error(m->s));
            goto out;
          }
          if (n <= 0)
            break;
          progress = 1;
          last_rx = hm_now_ms();
          if (c != 2) {
            tail_add(m, tmp, (size_t)n);
            continue;
          }
          probes = 0;
          for (int i = 0; i < n && !mounted; i++) {
            if (tmp[i] != '\n') {
              if (line_len < sizeof(line) - 1)
                line[line_len++] = tmp[i];
              continue;
            }
            line[line_len] = 0;
            line_len = 0;
            if (strcmp(line, "mounted") == 0) {
              mounted = 1;
              set_phase(m, MOUNTED, NULL);
            }
          }
        }
      }
    }
    /* Ends. */
    if (ssh_channel_is_eof(m->data) || ssh_channel_is_closed(m->data)) {
      die(m, "sshfs ended in the guest (unmounted there, or it failed)");
      goto out;
    }
    if (ssh_channel_is_eof(m->beat) || ssh_channel_is_closed(m->beat)) {
      die(m, mounted ? "the keepalive channel ended" : "the mount did not appear in the guest");
      goto out;
    }
    if (!ssh_is_connected(m->s)) {
      die(m, "SSH connection lost: %s", ssh_get_error(m->s));
      goto out;
    }
    /* Keepalive: a probe per interval once mounted; the connection is dead
     * after count intervals in a row with no byte from the guest. */
    int64_t now = hm_now_ms();
    if (mounted && now - last_probe >= m->ka_interval) {
      if (probes >= m->ka_count && now - last_rx >= m->ka_interval * m->ka_count) {
        die(m, "no answer from the guest over SSH for %lld ms (keepalive)",
            (long long)(now - last_rx));
        goto out;
      }
      if (ssh_channel_write(m->beat, "k", 1) == SSH_ERROR) {
        die(m, "SSH connection lost: %s", ssh_get_error(m->s));
        goto out;
      }
      probes++;
      last_probe = now;
    }
    struct pollfd p[3] = {{m->stop_fd, POLLIN, 0}, {ssh_get_fd(m->s), POLLIN, 0}, {m->sock, 0, 0}};
    if (ssh_get_poll_flags(m->s) & SSH_WRITE_PENDING)
      p[1].events |= POLLOUT;
    if (!to_ch.len && ssh_channel_window_size(m->data) > 0)
      p[2].events |= POLLIN;
    if (to_sock.len)
      p[2].events |= POLLOUT;
    int64_t wait = mounted ? m->ka_interval - (now - last_probe) : 200;
    /* Still moving data (the round limit ended it): only look. libssh may
     * hold read data that the socket no longer shows. */
    if (progress)
      wait = 0;
    if (poll(p, 3, wait > 0 ? (int)wait : 0) < 0 && errno != EINTR) {
      die(m, "poll: %s", strerror(errno));
      goto out;
    }
    if (p[0].revents)
      break; /* detach */
    if (p[1].revents & POLLOUT)
      ssh_blocking_flush(m->s, 0);
  }
out:
  free(to_sock.p);
  free(to_ch.p);
  return NULL;
}

/* ---- guest-side scripts --------------------------------------------------- */

/* A shell function for guest scripts: `mnt TYPE` succeeds when /proc/mounts
 * lists a mount at "$p" (of that type, or any with "") — decoding its octal
 * escapes; unlike mountpoint(1), which is not everywhere (busybox lacks it)
 * and cannot stat a dead FUSE mount. */
#define MNT_FN                                                                                     \
  "mnt() { T=$1 awk '{ t = $2; gsub(/\\\\040/, \" \", t); gsub(/\\\\011/, \"\\t\", t);"            \
  " gsub(/\\\\012/, \"\\n\", t); gsub(/\\\\134/, \"\\\\\", t);"                                    \
  " if (t == ENVIRON[\"p\"] && (ENVIRON[\"T\"] == \"\" || $3 == ENVIRON[\"T\"])) f = 1 }"          \
  " END { exit !f }' /proc/mounts; }\n"

/* The beat channel: preflight, "ready", wait for the mount, "mounted", echo. */
static char *beat_script(const char *qpath) {
  char *s = NULL;
  if (asprintf(&s,
               "p=%s; export p\n" MNT_FN "command -v sshfs >/dev/null 2>&1 || "
               "{ echo 'hotmount: sshfs is not installed in the guest' >&2; exit 92; }\n"
               "[ -e /dev/fuse ] || { echo 'hotmount: /dev/fuse is missing in the guest (FUSE "
               "module not loaded?)' >&2; exit 93; }\n"
               "mkdir -p -- \"$p\" || exit 90\n"
               "if mnt ''; then echo \"hotmount: $p is already a mount point in the guest\" >&2; "
               "exit 91; fi\n"
               "echo ready\n"
               "i=0; while ! mnt fuse.sshfs; do i=$((i+1)); [ $i -gt 600 ] && exit 94; "
               "sleep 0.05 2>/dev/null || sleep 1; done\n"
               "echo mounted\n"
               "exec cat\n",
               qpath) < 0)
    return NULL;
  return s;
}

/* The options sshfs_command turns into sshfs flags, and no others. */
static const char *const on_off[] = {"on", "off", NULL};
static const char *const idmap_values[] = {"none", "user", NULL};
static const hm_option_rule sshfs_rules[] = {
    {HM_TYPE_REVERSE_SSHFS, "cache", on_off, 0, 0},
    {HM_TYPE_REVERSE_SSHFS, "followSymlinks", on_off, 0, 0},
    {HM_TYPE_REVERSE_SSHFS, "idmap", idmap_values, 0, 0},
    {HM_TYPE_REVERSE_SSHFS, "mapUid", NULL, 0, 4294967294UL},
    {HM_TYPE_REVERSE_SSHFS, "mapGid", NULL, 0, 4294967294UL},
};

static int sshfs_validate(void *impl, const hm_mount_spec *spec, hm_error **err) {
  (void)impl;
  return hm_option_rules_check(spec, sshfs_rules, sizeof(sshfs_rules) / sizeof(sshfs_rules[0]),
                               err);
}

static char *sshfs_command(const hm_mount_spec *spec, const char *id, const char *qpath) {
  const char *cache = hm_mount_spec_get_option(spec, "cache");
  const char *follow = hm_mount_spec_get_option(spec, "followSymlinks");
  const char *idmap = hm_mount_spec_get_option(spec, "idmap");
  const char *uid = hm_mount_spec_get_option(spec, "mapUid");
  const char *gid = hm_mount_spec_get_option(spec, "mapGid");
  char *s = NULL;
  /* allow_other: like virtiofs/9p mounts, every guest user may use it;
   * default_permissions: the guest kernel checks modes (sftp-server acts as
   * root on the host). mapUid/mapGid: FUSE's uid=/gid= show every file as
   * that guest user's (whatever the guest writes is the host user's anyway:
   * sftp-server writes as one user). Option values hold no commas: the id
   * is hm-N, mapUid/mapGid are validated numbers. */
  if (asprintf(&s,
               "exec sshfs -o passive,allow_other,default_permissions,fsname=hotmount-%s,"
               "dir_cache=%s%s%s%s%s%s%s%s hotmount:/share %s",
               id, cache && strcmp(cache, "off") == 0 ? "no" : "yes",
               follow && strcmp(follow, "on") == 0 ? ",follow_symlinks" : "",
               idmap && strcmp(idmap, "user") == 0 ? ",idmap=user" : "", uid ? ",uid=" : "",
               uid ? uid : "", gid ? ",gid=" : "", gid ? gid : "",
               hm_mount_spec_get_writable(spec) ? "" : ",ro", qpath) < 0)
    return NULL;
  return s;
}

/* ---- control session -------------------------------------------------- */

/* Runs cmd over the shared control session, (re)connecting when needed. */
static int ctl_run(sshfs_hp *hp, const char *cmd, int *status, char **out, hm_error **err) {
  pthread_mutex_lock(&hp->ctl_lock);
  int r = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (!hp->ctl || !ssh_is_connected(hp->ctl)) {
      hm_ssh_close(hp->ctl);
      hp->ctl = NULL;
      if ((r = hm_ssh_open(&hp->ctl, hp->cfg, err)) < 0)
        break;
    }
    hm_error *e = NULL;
    r = hm_ssh_run(hp->ctl, cmd, 15000, status, out, &e);
    if (r == HM_E_NOT_READY && attempt == 0) {
      /* a stale connection: one fresh try */
      hm_error_free(e);
      hm_ssh_close(hp->ctl);
      hp->ctl = NULL;
      continue;
    }
    if (r < 0) {
      if (err && !*err)
        *err = e;
      else
        hm_error_free(e);
    }
    break;
  }
  pthread_mutex_unlock(&hp->ctl_lock);
  return r;
}

/* Unmount the guest path: fusermount, lazily when busy (or asked to). */
static int guest_unmount(sshfs_hp *hp, const char *id, const char *guest_path, int lazy,
                         hm_error **err) {
  char *q = hm_sh_quote(guest_path), *cmd = NULL, *out = NULL;
  /* Only an sshfs mount at exactly that path (a dead one, ENOTCONN, counts
   * too). Then the sshfs that served it must be gone as well: found by the
   * fsname its options carry (the [,] keeps the pattern from matching the
   * shell's and grep's own command lines); killed after 5 s, or after 1 s
   * when the unmount was lazy (a busy mount: sshfs would serve its last
   * users until they let go, and we are about to close its channel). */
  if (!q || asprintf(&cmd,
                     "p=%s; export p\n" MNT_FN
                     "u() { fusermount3 \"$@\" -- \"$p\" 2>&1 || fusermount \"$@\" \"$p\" 2>&1; }\n"
                     "n=100; if mnt fuse.sshfs; then { %s; } || exit 1; fi\n"
                     "w() { grep -ls 'fsname=hotmount-%s[,]' /proc/[0-9]*/cmdline; }\n"
                     "i=0; while [ -n \"$(w)\" ]; do i=$((i+1)); if [ $i -gt $n ]; then "
                     "for f in $(w); do f=${f%%/cmdline}; kill -9 ${f#/proc/}; done; break; fi; "
                     "sleep 0.05 2>/dev/null || sleep 1; done\n",
                     q, lazy ? "n=20; u -uz" : "u -u || { n=20; u -uz; }", id) < 0) {
    free(q);
    return HM_ERR_NOMEM(err);
  }
  free(q);
  int status = -1;
  int r = ctl_run(hp, cmd, &status, &out, err);
  free(cmd);
  if (r == 0 && status != 0)
    r = HM_ERR(err, HM_E_AGENT, "cannot unmount %s in the guest (status %d): %s", guest_path,
               status, out && *out ? out : "no message");
  free(out);
  return r;
}

/* ---- --notify ------------------------------------------------------------- */

/*
 * The guest side of a --notify batch, as a shell script for the control
 * session (there is no agent): t MTIME PATH sets PATH's mtime (relative to
 * the mount, already checked by the library: no "..", not absolute) to
 * MTIME, the host's, with touch -m -h: the guest kernel reports IN_MODIFY to
 * its watchers (see docs/architecture.md, "Change notification"). It never
 * walks through a symlink of the share (a guest user could point one
 * anywhere), and on a read-only mount, where touch fails, it opens a regular
 * file for reading instead (IN_OPEN, IN_CLOSE_NOWRITE). SFTP sets whole
 * seconds; the watcher takes the dropped nanoseconds for the echo they are.
 */
#define NOTIFY_FN                                                                                  \
  "t() { m=$1; shift; n=$#; while [ $n -gt 0 ]; do r=$1; shift; n=$((n-1)); d=.; ok=1;"            \
  " while :; do case $r in */*) d=$d/${r%%%%/*}; r=${r#*/};"                                       \
  " { [ -d \"$d\" ] && [ ! -L \"$d\" ]; } || { ok=; break; };; *) break;; esac; done;"             \
  " [ -n \"$ok\" ] && set -- \"$@\" \"$d/$r\"; done; [ $# -gt 0 ] || return 0;"                    \
  " touch -c -m -h -d \"@$m\" -- \"$@\" 2>/dev/null ||"                                            \
  " for f in \"$@\"; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && : < \"$f\"; done 2>/dev/null; true; "  \
  "}\n"

/* The mtime (whole seconds) of rel beneath the directory rootfd, without
 * following any symlink; -1 when it cannot be read (gone again). */
static long long host_mtime(int rootfd, const char *rel) {
  struct open_how how = {.flags = O_PATH | O_CLOEXEC | O_NOFOLLOW,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
  int fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
  if (fd < 0 && errno == ENOSYS)
    fd = hm_notify_open_walk(rootfd, rel, O_PATH);
  if (fd < 0)
    return -1;
  struct stat st;
  int r = fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  close(fd);
  return r < 0 ? -1 : (long long)st.st_mtim.tv_sec;
}

static int sshfs_guest_notify(void *impl, hm_attachment *att, const int *kinds,
                              const char *const *paths, size_t n, hm_error **err) {
  sshfs_hp *hp = impl;
  const char *host = hm_attachment_get_data(att, "hostPath");
  const char *guest = hm_attachment_get_data(att, "guestPath");
  if (!host || !guest)
    return HM_ERR(err, HM_E_INVALID, "the attachment has no hostPath or guestPath");
  int rootfd = hm_open_nofollow(host, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0)
    return HM_ERR(err, HM_E_IO, "cannot open %s: %s", host, strerror(errno));
  char *qg = hm_sh_quote(guest);
  hm_strv lines = {0};
  long long *mtimes = calloc(n ? n : 1, sizeof(*mtimes));
  char **quoted = calloc(n ? n : 1, sizeof(*quoted));
  int r = !qg || !mtimes || !quoted ||
          hm_strv_pushf(&lines, "cd -P -- %s || exit 1\n" NOTIFY_FN, qg) < 0;
  free(qg);
  for (size_t i = 0; !r && i < n; i++) {
    char *rel = strdup(paths[i]);
    if (!rel) {
      r = 1;
      break;
    }
    if (kinds[i] == HM_NOTIFY_DELETE) {
      /* Gone: its directory changed, which the guest can be shown. */
      char *slash = strrchr(rel, '/');
      if (slash)
        *slash = '\0';
      else
        strcpy(rel, ".");
    }
    mtimes[i] = host_mtime(rootfd, rel);
    quoted[i] = mtimes[i] < 0 ? NULL : hm_sh_quote(rel);
    free(rel);
  }
  close(rootfd);
  /* One touch per distinct mtime (a burst shares a few): under TCG each
   * process the guest starts costs about 0.1 s. */
  for (size_t i = 0; !r && i < n; i++) {
    if (!quoted[i])
      continue;
    r = hm_strv_pushf(&lines, "t %lld", mtimes[i]) < 0;
    for (size_t k = i; !r && k < n; k++) {
      if (quoted[k] && mtimes[k] == mtimes[i]) {
        r = hm_strv_pushf(&lines, " %s", quoted[k]) < 0;
        if (k != i) {
          free(quoted[k]);
          quoted[k] = NULL;
        }
      }
    }
    r = r || hm_strv_push(&lines, "\n") < 0;
  }
  for (size_t i = 0; quoted && i < n; i++)
    free(quoted[i]);
  free(quoted);
  free(mtimes);
  if (r) {
    hm_strv_clear(&lines);
    return HM_ERR_NOMEM(err);
  }
  size_t len = 0;
  for (size_t i = 0; i < lines.n; i++)
    len += strlen(lines.v[i]);
  char *script = malloc(len + 1);
  if (!script) {
    hm_strv_clear(&lines);
    return HM_ERR_NOMEM(err);
  }
  script[0] = '\0';
  for (size_t i = 0, o = 0; i < lines.n; i++) {
    size_t l = strlen(lines.v[i]);
    memcpy(script + o, lines.v[i], l + 1);
    o += l;
  }
  hm_strv_clear(&lines);
  int status = -1;
  char *out = NULL;
  r = ctl_run(hp, script, &status, &out, err);
  free(script);
  if (r == 0 && status != 0)
    r = HM_ERR(err, HM_E_AGENT, "notify in %s failed in the guest (status %d): %s", guest, status,
               out && *out ? out : "no message");
  free(out);
  return r;
}

/* ---- the vtable ----------------------------------------------------------- */

/* The link that points at mount id (or at the list's end); hp->lock held. */
static smount **lookup_locked(sshfs_hp *hp, const char *id) {
  smount **pp = &hp->mounts;
  while (*pp && strcmp((*pp)->id, id) != 0)
    pp = &(*pp)->next;
  return pp;
}

static smount *find_mount(sshfs_hp *hp, const char *id, int unlink) {
  pthread_mutex_lock(&hp->lock);
  smount **pp = lookup_locked(hp, id);
  smount *m = *pp;
  if (m && unlink)
    *pp = m->next;
  pthread_mutex_unlock(&hp->lock);
  return m;
}

static int start_mount(sshfs_hp *hp, const hm_mount_spec *spec, hm_attachment *att, smount **out,
                       hm_error **err) {
  const char *id = hm_attachment_get_id(att);
  const char *sftp = hm_sftp_server_find(hp->cfg);
  if (!sftp)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "no sftp-server on the host (install openssh-sftp-server, or set sftpServer)");
  smount *m = calloc(1, sizeof(*m));
  char *qpath = NULL, *beat = NULL, *cmd = NULL;
  int sv[2] = {-1, -1}, r;
  if (!m)
    return HM_ERR_NOMEM(err);
  pthread_mutex_init(&m->lock, NULL);
  pthread_cond_init(&m->cond, NULL);
  m->sock = -1;
  m->ka_interval = hm_ssh_config_num(hp->cfg, "keepaliveInterval", 1000);
  m->ka_count = hm_ssh_config_num(hp->cfg, "keepaliveCount", 3);
  m->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  m->dead_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!(m->id = strdup(id)) || !(m->guest_path = strdup(hm_mount_spec_get_guest_path(spec))) ||
      !(qpath = hm_sh_quote(m->guest_path)) || !(beat = beat_script(qpath)) ||
      !(cmd = sshfs_command(spec, id, qpath)) || m->stop_fd < 0 || m->dead_fd < 0) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  /* 1. SSH, and the guest's go-ahead. */
  if ((r = hm_ssh_open(&m->s, hp->cfg, err)) < 0)
    goto fail;
  if (!(m->beat = hm_ssh_exec(m->s, beat, err))) {
    r = HM_E_NOT_READY;
    goto fail;
  }
  char got[16] = "";
  size_t gl = 0;
  int64_t deadline = hm_now_ms() + 15000;
  while (gl < 6 && hm_now_ms() < deadline) {
    int n = ssh_channel_read_timeout(m->beat, got + gl, (uint32_t)(6 - gl), 0, 200);
    if (n == SSH_ERROR)
      break;
    if (n > 0)
      gl += (size_t)n;
    else if (ssh_channel_is_eof(m->beat))
      break;
  }
  if (gl < 6 || strncmp(got, "ready\n", 6) != 0) {
    char msg[512] = "";
    int n;
    while ((n = ssh_channel_read_timeout(m->beat, msg, sizeof(msg) - 1, 1, 500)) > 0) {
      msg[n] = 0;
      tail_add(m, msg, (size_t)n);
    }
    int status = ssh_channel_get_exit_status(m->beat);
    char *t = tail_text(m);
    const char *gp = m->guest_path;
    switch (status) {
    case 91: r = HM_ERR(err, HM_E_EXISTS, "%s is already a mount point in the guest", gp); break;
    case 92:
    case 93:
      r = HM_ERR(err, HM_E_UNSUPPORTED, "the guest cannot mount sshfs: %s", t ? t : "");
      break;
    case 90:
      r = HM_ERR(err, HM_E_INVALID, "cannot create %s in the guest: %s", gp, t ? t : "");
      break;
    default:
      r = HM_ERR(err, HM_E_NOT_READY, "the guest did not answer the mount check (status %d): %s",
                 status, t && *t ? t : "no message");
    }
    free(t);
    goto fail;
  }
  /* 2. The host side: a confined sftp-server on a socketpair. */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    r = HM_ERR(err, -errno, "socketpair: %s", strerror(errno));
    goto fail;
  }
  hm_strv env = {0};
  if (hm_helper_markers(&env, hp->dir, id, hm_mount_spec_get_host_path(spec),
                        hm_mount_spec_get_writable(spec)) < 0) {
    hm_strv_clear(&env);
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  r = hm_sftp_spawn(&m->sftp_pid, sftp, hm_mount_spec_get_host_path(spec),
                    hm_mount_spec_get_writable(spec), sv[1], hp->jail, env.v, err);
  hm_strv_clear(&env);
  if (r < 0)
    goto fail;
  close(sv[1]);
  sv[1] = -1;
  m->sock = sv[0];
  sv[0] = -1;
  fcntl(m->sock, F_SETFL, fcntl(m->sock, F_GETFL) | O_NONBLOCK);
  hm_fault("add:sftp-server-started");
  /* 3. sshfs in the guest, on the data channel. */
  if (!(m->data = hm_ssh_exec(m->s, cmd, err))) {
    r = HM_E_NOT_READY;
    goto fail;
  }
  /* 4. The pump; wait for the guest to show the mount. */
  int pr = hm_thread_create(&m->thread, pump_main, m);
  if (pr != 0) {
    r = HM_ERR(err, -pr, "cannot start the pump thread: %s", strerror(pr));
    goto fail;
  }
  m->thread_started = 1;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += MOUNT_TIMEOUT_MS / 1000;
  pthread_mutex_lock(&m->lock);
  while (m->phase == STARTING)
    if (pthread_cond_timedwait(&m->cond, &m->lock, &until) == ETIMEDOUT)
      break;
  int phase = m->phase;
  char *why = m->reason ? strdup(m->reason) : NULL;
  pthread_mutex_unlock(&m->lock);
  if (phase != MOUNTED) {
    r = phase == DEAD ? HM_ERR(err, HM_E_HELPER, "sshfs mount of %s failed: %s", m->guest_path,
                               why ? why : "unknown reason")
                      : HM_ERR(err, HM_E_TIMEOUT, "%s did not appear in the guest within %d s",
                               m->guest_path, MOUNT_TIMEOUT_MS / 1000);
    free(why);
    goto fail;
  }
  free(why);
  free(qpath);
  free(beat);
  free(cmd);
  *out = m;
  return 0;
fail:
  if (sv[0] >= 0)
    close(sv[0]);
  if (sv[1] >= 0)
    close(sv[1]);
  int had_data = m->data != NULL;
  smount_stop(m);
  if (had_data) {
    /* sshfs may have mounted just as we gave up. */
    hm_error *e = NULL;
    if (guest_unmount(hp, m->id, m->guest_path, 1, &e) < 0)
      hm_warn("rollback of %s: %s", id, hm_error_message(e));
    hm_error_free(e);
  }
  free(qpath);
  free(beat);
  free(cmd);
  smount_free(m);
  return r;
}

static int set_att(sshfs_hp *hp, const hm_mount_spec *spec, hm_attachment *att, smount *m,
                   hm_error **err) {
  char tag[512], pid[32];
  snprintf(tag, sizeof(tag), "ssh://%s@%s:%s", hm_ssh_config_get(hp->cfg, "user") ?: "root",
           hm_ssh_config_get(hp->cfg, "host"), hm_ssh_config_get(hp->cfg, "port") ?: "22");
  snprintf(pid, sizeof(pid), "%d", (int)m->sftp_pid);
  int r = 0;
  r = r ?: hm_attachment_set_tag(att, tag, err);
  r = r ?: hm_attachment_set_type(att, HM_TYPE_REVERSE_SSHFS, err);
  r = r ?: hm_attachment_set_data(att, "sftpPid", pid, err);
  r = r ?: hm_attachment_set_data(att, "hostPath", hm_mount_spec_get_host_path(spec), err);
  r = r ?: hm_attachment_set_data(att, "guestPath", m->guest_path, err);
  r = r
          ?: hm_attachment_set_data(att, "writable", hm_mount_spec_get_writable(spec) ? "1" : "0",
                                    err);
  return r;
}

static int sshfs_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  sshfs_hp *hp = impl;
  smount *m = NULL;
  int r = start_mount(hp, spec, att, &m, err);
  if (r < 0)
    return r;
  if ((r = set_att(hp, spec, att, m, err)) < 0) {
    smount_stop(m);
    guest_unmount(hp, m->id, m->guest_path, 1, NULL);
    smount_free(m);
    return r;
  }
  pthread_mutex_lock(&hp->lock);
  m->next = hp->mounts;
  hp->mounts = m;
  pthread_mutex_unlock(&hp->lock);
  return 0;
}

/* An sftp-server a dead daemon left (ours by its markers). */
static void stop_orphan(sshfs_hp *hp, hm_attachment *att) {
  const char *p = hm_attachment_get_data(att, "sftpPid");
  pid_t pid = p ? (pid_t)atoi(p) : 0;
  if (pid <= 1 || !sftp_alive_as(pid, att->id))
    return;
  /* Pinned before the checks: what is signalled is the process they saw,
   * never a pid recycled in between. */
  int pfd = hm_pidfd_open(pid);
  char *inst = hm_proc_getenv(pid, HM_ENV_INSTANCE);
  if (inst && strcmp(inst, hp->dir) == 0 && sftp_alive_as(pid, att->id)) {
    if (pfd >= 0) {
      hm_pidfd_signal(pfd, SIGTERM);
      if (!hm_pidfd_wait(pfd, 2000))
        hm_pidfd_signal(pfd, SIGKILL);
    } else {
      kill(pid, SIGTERM);
      for (int i = 0; i < 200 && sftp_alive_as(pid, att->id); i++)
        usleep(10000);
      if (sftp_alive_as(pid, att->id))
        kill(pid, SIGKILL);
    }
  }
  if (pfd >= 0)
    close(pfd);
  free(inst);
}

static int sshfs_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)err;
  sshfs_hp *hp = impl;
  smount *m = find_mount(hp, att->id, 1);
  if (m) {
    smount_stop(m);
    smount_free(m);
  } else {
    stop_orphan(hp, att);
  }
  hm_fault("remove:sftp-server-stopped");
  return 0;
}

static int sshfs_guest_umount(void *impl, hm_attachment *att, unsigned flags, hm_error **err) {
  sshfs_hp *hp = impl;
  smount *m = find_mount(hp, att->id, 0);
  const char *gp = m ? m->guest_path : hm_attachment_get_data(att, "guestPath");
  if (!gp)
    return 0;
  /* The guest script also waits until the sshfs serving it has ended. */
  return guest_unmount(hp, att->id, gp, (flags & 1u) != 0, err);
}

static int sshfs_reattach(void *impl, const hm_mount_spec *spec, hm_attachment *att,
                          hm_error **err) {
  sshfs_hp *hp = impl;
  smount *old = find_mount(hp, att->id, 1);
  if (old) {
    smount_stop(old);
    smount_free(old);
  } else {
    stop_orphan(hp, att);
  }
  /* The guest may still hold the dead mount (ENOTCONN): let it go first. */
  int r = guest_unmount(hp, att->id, hm_mount_spec_get_guest_path(spec), 1, err);
  if (r < 0)
    return r;
  return sshfs_attach(impl, spec, att, err);
}

static int sshfs_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  (void)err;
  sshfs_hp *hp = impl;
  pthread_mutex_lock(&hp->lock);
  smount *m = *lookup_locked(hp, att->id);
  int whole = 0;
  if (!m) {
    *reason = strdup("its SSH connection belonged to an earlier hotmountd process");
  } else {
    pthread_mutex_lock(&m->lock);
    whole = m->phase == MOUNTED;
    if (!whole)
      *reason = strdup(m->reason ? m->reason : "the SSH connection is not up");
    pthread_mutex_unlock(&m->lock);
  }
  pthread_mutex_unlock(&hp->lock);
  return whole;
}

static int sshfs_watch_fd(void *impl, hm_attachment *att) {
  sshfs_hp *hp = impl;
  pthread_mutex_lock(&hp->lock);
  smount *m = *lookup_locked(hp, att->id);
  int fd = m && m->dead_fd >= 0 ? fcntl(m->dead_fd, F_DUPFD_CLOEXEC, 3) : -1;
  pthread_mutex_unlock(&hp->lock);
  return fd;
}

static int sshfs_describe(void *impl, hm_status *st, hm_error **err) {
  sshfs_hp *hp = impl;
  char where[512];
  snprintf(where, sizeof(where), "%s@%s:%s", hm_ssh_config_get(hp->cfg, "user") ?: "root",
           hm_ssh_config_get(hp->cfg, "host"), hm_ssh_config_get(hp->cfg, "port") ?: "22");
  int r = hm_status_set(st, "ssh", where, err);
  const char *sftp = hm_sftp_server_find(hp->cfg);
  return r ?: hm_status_set(st, "sftpServer", sftp ? sftp : "", err);
}

static void sshfs_destroy(void *impl) {
  sshfs_hp *hp = impl;
  if (!hp)
    return;
  /* Mounts outlive a hotplugger only as registry records: their pumps stop
   * here (the guest's sshfs sees EOF and ends), and reconcile brings them
   * back in the next process. */
  smount *m = hp->mounts;
  while (m) {
    smount *next = m->next;
    smount_stop(m);
    smount_free(m);
    m = next;
  }
  hm_ssh_close(hp->ctl);
  hm_ssh_config_free(hp->cfg);
  pthread_mutex_destroy(&hp->lock);
  pthread_mutex_destroy(&hp->ctl_lock);
  free(hp->dir);
  free(hp->jail);
  free(hp);
}

int hm_sshfs_hotplugger_new(hm_fs_hotplugger **out, const hm_ssh_config *cfg,
                            const char *instance_dir, hm_error **err) {
  if (!out || !cfg || !instance_dir)
    return HM_ERR(err, HM_E_INVALID, "out, cfg and instance_dir must not be NULL");
  int r = hm_ssh_config_validate(cfg, err);
  if (r < 0)
    return r;
  sshfs_hp *hp = calloc(1, sizeof(*hp));
  if (!hp)
    return HM_ERR_NOMEM(err);
  pthread_mutex_init(&hp->lock, NULL);
  pthread_mutex_init(&hp->ctl_lock, NULL);
  if (hm_ssh_config_copy(&hp->cfg, cfg) < 0 || !(hp->dir = strdup(instance_dir)) ||
      asprintf(&hp->jail, "%s/sftp-root", instance_dir) < 0) {
    hp->jail = NULL;
    sshfs_destroy(hp);
    return HM_ERR_NOMEM(err);
  }
  if (mkdir(hp->jail, 0700) < 0 && errno != EEXIST) {
    r = HM_ERR(err, -errno, "cannot create %s: %s", hp->jail, strerror(errno));
    sshfs_destroy(hp);
    return r;
  }
  static const hm_fs_hotplugger_ops ops = {
      .struct_size = sizeof(hm_fs_hotplugger_ops),
      .name = "reverse-sshfs",
      .types = 1u << HM_TYPE_REVERSE_SSHFS,
      .attach = sshfs_attach,
      .detach = sshfs_detach,
      .destroy = sshfs_destroy,
      .describe = sshfs_describe,
      .check = sshfs_check,
      .watch_fd = sshfs_watch_fd,
      .flags = HM_HOTPLUGGER_GUEST_MOUNTS,
      .guest_umount = sshfs_guest_umount,
      .reattach = sshfs_reattach,
      .validate = sshfs_validate,
      .guest_notify = sshfs_guest_notify,
  };
  return hm_fs_hotplugger_new(out, &ops, hp, err);
}
