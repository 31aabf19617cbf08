/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mount, umount and list, done with the system calls themselves. */
#include "agent.h"
#include "guest/guest_mount.h"
#include "guest/guest_path.h"
#include "relay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

/*
 * umount2 in a child process, waited for at most UMOUNT_WAIT_MS. The last
 * unmount of a virtiofs whose host-side virtiofsd died never returns: the
 * kernel waits forever for the dead device to answer FUSE_DESTROY. Doing it
 * in a child keeps the agent answering; once the mount is gone from the mount
 * table the unmount has taken effect and only the kernel's teardown is stuck,
 * in that child. Returns 0, or -1 with errno.
 */
#define UMOUNT_WAIT_MS 3000

static int find_mount(const char *path, char **fstype, char **source);

static int umount_bounded(const char *target, int flags) {
  pid_t pid = fork();
  if (pid < 0)
    return umount2(target, flags);
  if (pid == 0)
    _exit(umount2(target, flags) < 0 ? (errno & 0x7f) : 0);
  int64_t deadline = hm_now_ms() + UMOUNT_WAIT_MS;
  for (;;) {
    int st;
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) {
      int e = WIFEXITED(st) ? WEXITSTATUS(st) : EIO;
      errno = e;
      return e ? -1 : 0;
    }
    if (w < 0 && errno != EINTR)
      return -1;
    if (hm_now_ms() >= deadline) {
      if (find_mount(target, NULL, NULL) == 0) {
        hm_warn("unmount of %s is still finishing in the kernel (a dead file system "
                "server?); it is out of the mount table",
                target);
        return 0;
      }
      errno = ETIMEDOUT;
      return -1;
    }
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* 0: wait for devices on uevents (the default). See --retry-interval. */
int agent_retry_interval_ms;
/* 0: answer mounts as fast as they happen. See --delay-mount (tests only). */
int agent_delay_mount_ms;
/* 1: 9p relays splice from the client to the port (--relay-splice, for
 * comparisons; bench/bench_9p_pieces.py measured it slower, with more guest
 * CPU: splicing from a socket moves no pages). */
int agent_relay_splice;
const char *agent_bind_test_fstype;

/*
 * Directories this agent created for a mount point, so that umount removes
 * those and nothing the guest already had. Kept in memory only: after an agent
 * restart, umount leaves the (empty) directories behind, which is harmless.
 */
struct created {
  char *target; /* resolved mount point */
  hm_strv dirs; /* outermost first */
  struct created *next;
};

static pthread_mutex_t ops_lock = PTHREAD_MUTEX_INITIALIZER;
static struct created *created_list;
static hm_strv busy; /* targets with a request in progress */

/*
 * The relay of each 9p mount this agent made, by resolved mount point. A relay
 * that ended on its own (host side closed) stays listed until the unmount, or
 * until a new mount on the same point, which stop it.
 */
struct relay_entry {
  char *target;
  agent_relay *relay;
  struct relay_entry *next;
};
static struct relay_entry *relays;

static int fail(int *eno, char **msg, int e, const char *fmt, ...) HM_PRINTF(4, 5);
static int fail(int *eno, char **msg, int e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(msg, fmt, ap) < 0)
    *msg = NULL;
  va_end(ap);
  *eno = e;
  return -1;
}

/* Maps a library error to an answer: "op PATH: message". */
static int fail_err(int *eno, char **msg, int e, const char *op, hm_error *err) {
  fail(eno, msg, e, "%s: %s", op, hm_error_message(err));
  hm_error_free(err);
  return -1;
}

static int claim(const char *target) {
  pthread_mutex_lock(&ops_lock);
  for (size_t i = 0; i < busy.n; i++) {
    if (strcmp(busy.v[i], target) == 0) {
      pthread_mutex_unlock(&ops_lock);
      return -EBUSY;
    }
  }
  int r = hm_strv_push(&busy, target) < 0 ? -ENOMEM : 0;
  pthread_mutex_unlock(&ops_lock);
  return r;
}

static void release(const char *target) {
  pthread_mutex_lock(&ops_lock);
  for (size_t i = 0; i < busy.n; i++) {
    if (strcmp(busy.v[i], target) == 0) {
      free(busy.v[i]);
      busy.v[i] = busy.v[--busy.n];
      busy.v[busy.n] = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&ops_lock);
}

static char *read_file(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  size_t cap = 16384, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf)
      break;
    if (len + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      free(buf);
      buf = NULL;
      break;
    }
    if (n == 0) {
      buf[len] = '\0';
      break;
    }
    len += (size_t)n;
  }
  int e = errno;
  close(fd);
  errno = e;
  return buf;
}

/* The topmost mount at path (its fstype and source, malloc'd), 1 if found, 0
 * if none, -1 with errno on failure. */
static int find_mount(const char *path, char **fstype, char **source) {
  char *text = read_file("/proc/self/mountinfo");
  if (!text)
    return -1;
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  hm_error *e = NULL;
  int r = hm_guest_mountinfo_parse(&v, &n, text, 0, &e);
  free(text);
  if (r < 0) {
    hm_warn("cannot parse /proc/self/mountinfo: %s", hm_error_message(e));
    hm_error_free(e);
    errno = EIO;
    return -1;
  }
  int found = 0;
  /* Later lines are mounted on top of earlier ones. */
  for (size_t i = n; i-- > 0;) {
    if (strcmp(v[i].target, path) == 0) {
      if (fstype)
        *fstype = strdup(v[i].fstype);
      if (source)
        *source = strdup(v[i].source);
      found = 1;
      break;
    }
  }
  hm_agent_mount_info_free(v, n);
  return found;
}

/* mkdir -p, recording what it made in *made (outermost first). */
static int mkdir_p(const char *path, hm_strv *made, int *eno, char **msg) {
  char *p = strdup(path);
  if (!p)
    return fail(eno, msg, ENOMEM, "mount: out of memory");
  int r = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != '\0')
      continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0755) == 0) {
      if (hm_strv_push(made, p) < 0) {
        r = fail(eno, msg, ENOMEM, "mount: out of memory");
        break;
      }
    } else {
      struct stat st;
      int e = errno;
      if (e != EEXIST) {
        r = fail(eno, msg, e, "mount: cannot create directory %s: %s", p, strerror(e));
        break;
      }
      if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
        r = fail(eno, msg, ENOTDIR, "mount: %s exists and is not a directory", p);
        break;
      }
    }
    if (c == '\0')
      break;
    *s = c;
  }
  free(p);
  return r;
}

/* rmdir innermost first; stops at the first that is not empty or busy, since
 * its parents cannot be empty either. */
static void rmdir_made(const hm_strv *made) {
  for (size_t i = made->n; i-- > 0;) {
    if (rmdir(made->v[i]) < 0) {
      hm_debug("leaving %s in place: %s", made->v[i], strerror(errno));
      break;
    }
  }
}

/*
 * Whether a failed mount means "the tag is not there (yet)". On 6.1 an
 * unknown virtiofs tag gives EINVAL ("virtio-fs: tag <x> not found" in dmesg);
 * other kernels give ENOENT; ENODEV means the virtiofs driver is not
 * registered yet (module still loading). Options were allow-listed before, so
 * EINVAL is not expected from them. Kernels with /sys/fs/virtiofs (6.9+) list
 * the tags, which lets us fail fast on EINVAL when the tag is present.
 */
static int tag_known_present(const char *tag) {
  DIR *d = opendir("/sys/fs/virtiofs");
  if (!d)
    return -1;
  int found = 0;
  for (struct dirent *de; !found && (de = readdir(d));) {
    if (de->d_name[0] == '.')
      continue;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "/sys/fs/virtiofs/%s/tag", de->d_name);
    char *t = read_file(path);
    if (t) {
      t[strcspn(t, "\n")] = '\0';
      found = strcmp(t, tag) == 0;
      free(t);
    }
  }
  closedir(d);
  return found;
}

static int tag_missing(int e, const char *tag) {
  if (e == ENOENT || e == ENODEV)
    return 1;
  if (e == EINVAL)
    return tag_known_present(tag) != 1;
  return 0;
}

static void record_created(const char *target, hm_strv *made) {
  if (made->n == 0)
    return;
  struct created *c = calloc(1, sizeof(*c));
  if (!c || !(c->target = strdup(target))) {
    free(c);
    return; /* only costs an empty directory left behind later */
  }
  c->dirs = *made;
  memset(made, 0, sizeof(*made));
  pthread_mutex_lock(&ops_lock);
  c->next = created_list;
  created_list = c;
  pthread_mutex_unlock(&ops_lock);
}

static struct created *take_created(const char *target) {
  pthread_mutex_lock(&ops_lock);
  struct created *c = NULL;
  for (struct created **pp = &created_list; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->target, target) == 0) {
      c = *pp;
      *pp = c->next;
      break;
    }
  }
  pthread_mutex_unlock(&ops_lock);
  return c;
}

static int add_relay(const char *target, agent_relay *relay) {
  struct relay_entry *e = calloc(1, sizeof(*e));
  if (!e || !(e->target = strdup(target))) {
    free(e);
    return -1;
  }
  e->relay = relay;
  pthread_mutex_lock(&ops_lock);
  e->next = relays;
  relays = e;
  pthread_mutex_unlock(&ops_lock);
  return 0;
}

static agent_relay *take_relay(const char *target) {
  agent_relay *r = NULL;
  pthread_mutex_lock(&ops_lock);
  for (struct relay_entry **pp = &relays; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->target, target) == 0) {
      struct relay_entry *e = *pp;
      *pp = e->next;
      r = e->relay;
      free(e->target);
      free(e);
      break;
    }
  }
  pthread_mutex_unlock(&ops_lock);
  return r;
}

/*
 * Waits until the host side of an open virtio port is connected. A freshly
 * hot-plugged port announces its name and then, in the next control message,
 * that the host side is open; in between it polls POLLHUP. POLLHUP is level-
 * triggered, so the wait uses edge-triggered epoll: it returns when the port's
 * wait queue is woken, which the driver does on the "host open" message.
 * Returns 0, or -1 at the deadline.
 */
static int wait_host_side(int fd, int64_t deadline) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET};
  if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    close(ep);
    ep = -1;
  }
  int r = -1;
  for (;;) {
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
      r = 0;
      break;
    }
    int64_t left = deadline - hm_now_ms();
    if (left <= 0)
      break;
    if (left > 2000)
      left = 2000; /* safety net, as for uevents */
    if (ep >= 0) {
      epoll_wait(ep, &ev, 1, (int)left);
    } else {
      struct timespec ts = {0, 50 * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (ep >= 0)
    close(ep);
  return r;
}

/* A mount(2) that waits for a server that never answers is cut off after
 * this much, even when the request's own deadline is nearer. */
#define P9_MOUNT_MIN_MS 2000

/*
 * The 9p part of a mount: wait for the port, open it, start the relay on a
 * socketpair and mount trans=fd on the other end.
 */
static int mount_9p(const hm_agent_request *req, const hm_guest_mount_call *call,
                    const char *resolved, int64_t start, int *eno, char **msg) {
  const char *port = req->port;
  int64_t deadline = start + req->timeout_ms;
  char dev[PATH_MAX];
  int devfd = agent_devwait_open();
  int waited = 0;
  while (agent_port_find(port, dev, sizeof(dev)) < 0) {
    if (hm_now_ms() >= deadline) {
      agent_devwait_close(devfd);
      return fail(eno, msg, ETIMEDOUT,
                  "mount: virtio-serial port '%s' did not appear within %d ms (9p mount of %s)",
                  port, req->timeout_ms, resolved);
    }
    if (!waited++)
      hm_info("waiting up to %d ms for virtio-serial port '%s'", req->timeout_ms, port);
    agent_devwait_wait(devfd, deadline);
  }
  agent_devwait_close(devfd);
  int pfd = open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (pfd < 0) {
    int e = errno;
    return fail(eno, msg, e, "mount: cannot open %s (virtio-serial port '%s'): %s%s", dev, port,
                strerror(e), e == EBUSY ? " (another process has it open)" : "");
  }
  if (wait_host_side(pfd, deadline) < 0) {
    close(pfd);
    return fail(eno, msg, ETIMEDOUT,
                "mount: the host side of virtio-serial port '%s' did not open within %d ms", port,
                req->timeout_ms);
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    int e = errno;
    close(pfd);
    return fail(eno, msg, e, "mount: socketpair: %s", strerror(e));
  }
  /* Room for a whole message each way: fewer wake-ups per msize transfer. */
  int sb = (int)(call->msize < 131072 ? 262144 : call->msize * 2);
  for (int i = 0; i < 2; i++) {
    setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &sb, sizeof(sb));
    setsockopt(sv[i], SOL_SOCKET, SO_RCVBUFFORCE, &sb, sizeof(sb));
  }
  int64_t mdl = hm_now_ms() + P9_MOUNT_MIN_MS;
  agent_relay_opts o = {.name = port,
                        .buf_size = call->msize,
                        .no_splice = !agent_relay_splice || !agent_port_has_indirect(dev),
                        .deadline = deadline > mdl ? deadline : mdl};
  agent_relay *relay = agent_relay_start(sv[1], pfd, &o); /* owns sv[1] and pfd */
  if (!relay) {
    int e = errno;
    close(sv[0]);
    return fail(eno, msg, e, "mount: cannot start the 9p relay: %s", strerror(e));
  }
  char *data = NULL;
  if (hm_guest_9p_data(&data, call, sv[0]) < 0) {
    close(sv[0]);
    agent_relay_stop(relay);
    return fail(eno, msg, ENOMEM, "mount: out of memory");
  }
  hm_debug("mount(%s, %s, 9p, 0x%lx, %s)", call->source, resolved, call->flags, data);
  int rc = mount(call->source, resolved, call->fstype, call->flags, data);
  int e = errno;
  free(data);
  /* The kernel holds its own reference to A now (or none, on failure). */
  close(sv[0]);
  if (rc < 0) {
    int why = agent_relay_stop(relay);
    if (why == AGENT_RELAY_DEADLINE)
      return fail(eno, msg, ETIMEDOUT,
                  "mount: the 9p server behind port '%s' did not answer within %lld ms (mounting "
                  "%s)",
                  port, (long long)(o.deadline - start), resolved);
    return fail(eno, msg, e, "mount: mounting 9p from virtio-serial port '%s' on %s failed: %s%s",
                port, resolved, strerror(e),
                why == AGENT_RELAY_PORT_CLOSED ? " (the host side of the port closed)" : "");
  }
  agent_relay_disarm(relay);
  if (add_relay(resolved, relay) < 0) {
    /* Without a record there is no way to stop it at unmount; better now. */
    umount2(resolved, MNT_DETACH);
    agent_relay_stop(relay);
    return fail(eno, msg, ENOMEM, "mount: out of memory");
  }
  hm_info("mounted 9p from virtio-serial port '%s' (%s) on %s (%s, %s, relay %s) after %lld ms",
          port, dev, resolved, req->readonly ? "ro" : "rw", call->data,
          agent_relay_uses_splice(relay) ? "splice" : "copy", (long long)(hm_now_ms() - start));
  return 0;
}

/*
 * The mount point: not a mount point already, created (what was made goes to
 * *made, for rollback), and resolved (*resolved, malloc'd): a symlink on the
 * way may lead somewhere the path check would refuse.
 */
static int prepare_target(const char *norm, hm_strv *made, char **resolved, int *eno, char **msg) {
  char *fstype = NULL, *source = NULL;
  hm_error *e = NULL;
  int r = 0;
  *resolved = NULL;
  if (find_mount(norm, &fstype, &source) == 1) {
    r = fail(eno, msg, EBUSY, "mount: %s is already a mount point (%s from %s)", norm, fstype,
             source);
    goto out;
  }
  if ((r = mkdir_p(norm, made, eno, msg)) < 0)
    goto out;
  if (!(*resolved = realpath(norm, NULL))) {
    r = fail(eno, msg, errno, "mount: cannot resolve %s: %s", norm, strerror(errno));
    goto out;
  }
  if (strcmp(*resolved, norm) != 0) {
    if ((r = hm_guest_path_check(*resolved, &e)) < 0) {
      r = fail(eno, msg, EPERM, "mount: %s resolves to %s: %s", norm, *resolved,
               hm_error_message(e));
      hm_error_free(e);
      goto out;
    }
    if (find_mount(*resolved, NULL, NULL) == 1) {
      r = fail(eno, msg, EBUSY, "mount: %s (%s) is already a mount point", norm, *resolved);
      goto out;
    }
  }
out:
  if (r < 0) {
    free(*resolved);
    *resolved = NULL;
  }
  free(fstype);
  free(source);
  return r;
}

/* inner is outer or below it (both normal). */
static int path_within(const char *inner, const char *outer) {
  size_t n = strlen(outer);
  if (n == 1)
    return 1;
  return strncmp(inner, outer, n) == 0 && (inner[n] == '\0' || inner[n] == '/');
}

/*
 * Opens the directory at the normal path src with O_PATH, one component at a
 * time and refusing symbolic links anywhere: a link inside a share could lead
 * out of it (to the guest's /etc, or another share), and the path the host
 * computed has none (it is the canonical host path's tail).
 */
static int open_no_links(const char *src, int *eno, char **msg) {
  int dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return fail(eno, msg, errno, "bind: cannot open /: %s", strerror(errno));
  char *copy = strdup(src), *save = NULL;
  if (!copy) {
    close(dfd);
    return fail(eno, msg, ENOMEM, "bind: out of memory");
  }
  for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
    struct stat st;
    int fd = -1;
    if (fstatat(dfd, c, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      errno = ELOOP;
    } else {
      fd = openat(dfd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      int e = errno;
      /* Name the component: the part of src up to it. */
      size_t upto = (size_t)(c - copy) + strlen(c);
      fail(eno, msg, e == ELOOP ? EPERM : e, "bind: source %.*s: %s", (int)upto, src,
           e == ELOOP     ? "is a symbolic link; give the path without links (a link could "
                            "lead out of the share)"
           : e == ENOENT  ? "no such directory"
           : e == ENOTDIR ? "not a directory"
                          : strerror(e));
      close(dfd);
      free(copy);
      return -1;
    }
    close(dfd);
    dfd = fd;
  }
  free(copy);
  return dfd;
}

/* The share src lies on: the innermost mount whose target contains it (and
 * holds the same file system as fd), its fstype and source. 0, or -1 with
 * the answer set. */
static int share_of(const char *src, int fd, char **fstype, char **source, char **at, int *eno,
                    char **msg) {
  char *text = read_file("/proc/self/mountinfo");
  if (!text)
    return fail(eno, msg, errno, "bind: cannot read /proc/self/mountinfo: %s", strerror(errno));
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  hm_error *e = NULL;
  int r = hm_guest_mountinfo_parse(&v, &n, text, 0, &e);
  free(text);
  if (r < 0)
    return fail_err(eno, msg, EIO, "bind: /proc/self/mountinfo", e);
  size_t best = n, best_len = 0;
  /* Later lines are mounted on top of earlier ones: >= keeps the last. */
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(v[i].target);
    if (path_within(src, v[i].target) && (best == n || l >= best_len)) {
      best = i;
      best_len = l;
    }
  }
  struct stat a, b;
  r = 0;
  if (best == n)
    r = fail(eno, msg, EINVAL, "bind: no mount holds %s", src);
  else if (fstat(fd, &a) < 0 || stat(v[best].target, &b) < 0 || a.st_dev != b.st_dev)
    r = fail(eno, msg, EAGAIN, "bind: the mounts around %s changed while it was checked; retry",
             src);
  else if (!(*fstype = strdup(v[best].fstype)) || !(*source = strdup(v[best].source)) ||
           !(*at = strdup(v[best].target)))
    r = fail(eno, msg, ENOMEM, "bind: out of memory");
  hm_agent_mount_info_free(v, n);
  return r;
}

static int is_share_fstype(const char *fstype) {
  return hm_guest_fstype_is_share(fstype) ||
         (agent_bind_test_fstype && strcmp(fstype, agent_bind_test_fstype) == 0);
}

/*
 * fd (an O_PATH directory, checked by the caller) bound onto norm (made
 * when missing), then the bind's own flags: nosuid, nodev, read-only when
 * asked, and `extra` (flags of the source mount to keep). On failure nothing
 * is left: the bind detached, the directories made removed. op prefixes the
 * messages, what names the source in them.
 */
static int bind_fd_onto(int fd, const char *norm, int readonly, unsigned long extra, const char *op,
                        const char *what, int64_t start, int *eno, char **msg) {
  char *resolved = NULL;
  hm_strv made = {0};
  int r, mounted = 0;
  if ((r = prepare_target(norm, &made, &resolved, eno, msg)) < 0)
    goto out;
  char fdpath[64];
  snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
  if (mount(fdpath, resolved, NULL, MS_BIND, NULL) < 0) {
    r = fail(eno, msg, errno, "%s: bind-mounting %s on %s failed: %s", op, what, resolved,
             strerror(errno));
    goto out;
  }
  mounted = 1;
  /* A bind takes the flags only on a remount of itself. */
  if (mount(NULL, resolved, NULL,
            MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (readonly ? MS_RDONLY : 0) | extra,
            NULL) < 0) {
    r = fail(eno, msg, errno, "%s: setting %s on the bind mount %s failed: %s", op,
             readonly ? "ro,nosuid,nodev" : "nosuid,nodev", resolved, strerror(errno));
    goto out;
  }
  hm_info("bound %s on %s (%s) after %lld ms", what, resolved, readonly ? "ro" : "rw",
          (long long)(hm_now_ms() - start));
  record_created(resolved, &made);
  r = 0;
out:
  if (r < 0 && mounted && umount2(resolved, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
    hm_warn("rollback: unmounting %s failed: %s", resolved, strerror(errno));
  if (r < 0)
    rmdir_made(&made);
  hm_strv_clear(&made);
  free(resolved);
  return r;
}

/*
 * bind: source (a directory inside a boot-time share) onto norm, then the
 * per-mount flags: nosuid, nodev, read-only when asked, and the share's
 * noexec/atime flags kept. The source is bound through an O_PATH descriptor,
 * so what was checked is what gets mounted.
 */
static int do_bind(const hm_agent_request *req, const char *norm, int *eno, char **msg) {
  hm_error *e = NULL;
  char *src = NULL, *fstype = NULL, *from = NULL, *at = NULL;
  int fd = -1, r;
  int64_t start = hm_now_ms();
  if (hm_guest_path_normalize(&src, req->source, &e) < 0)
    return fail_err(eno, msg, EINVAL, "bind: source", e);
  /* The mount point would be made inside the share, on the host's disk. */
  if (path_within(norm, src)) {
    r = fail(eno, msg, EINVAL, "bind: the mount point %s lies inside the source %s", norm, src);
    goto out;
  }
  if ((fd = open_no_links(src, eno, msg)) < 0) {
    r = -1;
    goto out;
  }
  if ((r = share_of(src, fd, &fstype, &from, &at, eno, msg)) < 0)
    goto out;
  if (!is_share_fstype(fstype)) {
    r = fail(eno, msg, EPERM,
             "bind: source %s is not inside a share the host gave the guest: it is on a %s "
             "mount (%s at %s), and only virtiofs, 9p and drvfs shares can be bound",
             src, fstype, from, at);
    goto out;
  }
  struct statvfs sv;
  if (fstatvfs(fd, &sv) < 0) {
    r = fail(eno, msg, errno, "bind: statvfs %s: %s", src, strerror(errno));
    goto out;
  }
  /* The bind's flags are its own: a remount without MS_RDONLY would make a
   * read-only mounted share writable through it. */
  if (!req->readonly && (sv.f_flag & ST_RDONLY)) {
    r = fail(eno, msg, EROFS,
             "bind: source %s is on a read-only mount (%s %s at %s); add it read-only", src, fstype,
             from, at);
    goto out;
  }
  char *what = NULL;
  if (asprintf(&what, "%s (%s %s at %s)", src, fstype, from, at) < 0) {
    r = fail(eno, msg, ENOMEM, "bind: out of memory");
    goto out;
  }
  r = bind_fd_onto(fd, norm, req->readonly,
                   (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0) |
                       (sv.f_flag & ST_NOATIME ? MS_NOATIME : 0) |
                       (sv.f_flag & ST_NODIRATIME ? MS_NODIRATIME : 0) |
                       (sv.f_flag & ST_RELATIME ? MS_RELATIME : 0),
                   "bind", what, start, eno, msg);
  free(what);
out:
  if (fd >= 0)
    close(fd);
  free(src);
  free(fstype);
  free(from);
  free(at);
  return r;
}

/*
 * mount(2) of a tag, waiting (event-driven, up to timeout_ms) while the tag
 * is not there yet: a device just plugged is still being enumerated.
 */
static int mount_waiting(const hm_guest_mount_call *call, const char *resolved, int virtio9p,
                         int timeout_ms, int *eno, char **msg) {
  const char *what = virtio9p ? "9p" : "virtiofs";
  int64_t deadline = hm_now_ms() + timeout_ms;
  int devfd = agent_devwait_open(), waited = 0, r = 0;
  for (;;) {
    if (mount(call->source, resolved, call->fstype, call->flags, call->data) == 0)
      break;
    int err = errno;
    /* 9p over virtio: an unknown tag is ENOENT ("no channels available"). */
    if (virtio9p ? err != ENOENT && err != ENODEV : !tag_missing(err, call->source)) {
      r = fail(eno, msg, err, "mount: mounting %s tag '%s' on %s failed: %s", what, call->source,
               resolved, strerror(err));
      break;
    }
    if (hm_now_ms() >= deadline) {
      r = fail(eno, msg, ETIMEDOUT,
               "mount: %s tag '%s' did not appear within %d ms (last mount error: %s)", what,
               call->source, timeout_ms, strerror(err));
      break;
    }
    if (!waited++)
      hm_info("waiting up to %d ms for %s tag '%s'", timeout_ms, what, call->source);
    if (agent_retry_interval_ms > 0) {
      /* The reference design's strategy, kept only to measure against. */
      struct timespec ts = {agent_retry_interval_ms / 1000,
                            (agent_retry_interval_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    } else {
      agent_devwait_wait(devfd, deadline);
    }
  }
  agent_devwait_close(devfd);
  return r;
}

static int do_mount(const hm_agent_request *req, const char *norm, int *eno, char **msg) {
  hm_error *e = NULL;
  hm_guest_mount_call call;
  int is9p = req->type == HM_TYPE_9P;
  /* 9p without a port: a virtio-9p-pci device, mounted by its tag like
   * virtiofs (no relay). */
  int virtio9p = is9p && !req->port;
  if (is9p && !virtio9p && hm_guest_port_validate(req->port, &e) < 0)
    return fail_err(eno, msg, EINVAL, "mount", e);
  /* 9p: the mount's source is the tag when given (the host sends the port
   * name), else the port name. */
  int r = hm_guest_mount_build(&call, req->type, is9p && !req->tag ? req->port : req->tag,
                               req->readonly, req->options, &e);
  if (r < 0)
    return fail_err(eno, msg, r == HM_E_UNSUPPORTED ? EOPNOTSUPP : EINVAL, "mount", e);
  if (virtio9p) {
    char *data = NULL;
    if (hm_guest_9p_data(&data, &call, -1) < 0) {
      hm_guest_mount_call_clear(&call);
      return fail(eno, msg, ENOMEM, "mount: out of memory");
    }
    free(call.data);
    call.data = data;
  }
  const char *what = virtio9p ? "9p" : "virtiofs";

  char *resolved = NULL;
  hm_strv made = {0};
  if ((r = prepare_target(norm, &made, &resolved, eno, msg)) < 0)
    goto out;

  int64_t start = hm_now_ms();
  if (is9p && !virtio9p) {
    /* A relay left from a mount there that went away without us. */
    agent_relay_stop(take_relay(resolved));
    if ((r = mount_9p(req, &call, resolved, start, eno, msg)) == 0)
      record_created(resolved, &made);
    goto out;
  }
  if ((r = mount_waiting(&call, resolved, virtio9p, req->timeout_ms, eno, msg)) < 0)
    goto out;
  hm_info("mounted %s tag '%s' on %s (%s) after %lld ms", what, call.source, resolved,
          req->readonly ? "ro" : "rw", (long long)(hm_now_ms() - start));
  record_created(resolved, &made);
  r = 0;
out:
  if (r < 0)
    rmdir_made(&made);
  hm_strv_clear(&made);
  free(resolved);
  hm_guest_mount_call_clear(&call);
  return r;
}

static pthread_mutex_t hub_lock = PTHREAD_MUTEX_INITIALIZER;

/* The hub tag mounted at AGENT_HUB_DIR (root-only, nosuid, nodev), once:
 * later calls find it there. Under hub_lock (256 first adds at once mount
 * it once). */
static int hub_ensure(const hm_agent_request *req, int *eno, char **msg) {
  char *fstype = NULL, *source = NULL;
  int fm = find_mount(AGENT_HUB_DIR, &fstype, &source);
  int have = fm == 1 && strcmp(fstype, "virtiofs") == 0 && strcmp(source, req->tag) == 0;
  int other = fm == 1 && !have;
  free(fstype);
  free(source);
  if (have)
    return 0;
  if (other)
    return fail(eno, msg, EBUSY, "mount: something else is mounted at %s", AGENT_HUB_DIR);
  if ((mkdir("/run", 0755) < 0 && errno != EEXIST) ||
      (mkdir("/run/hotmount", 0700) < 0 && errno != EEXIST) ||
      (mkdir(AGENT_HUB_DIR, 0700) < 0 && errno != EEXIST))
    return fail(eno, msg, errno, "mount: cannot make %s: %s", AGENT_HUB_DIR, strerror(errno));
  hm_guest_mount_call call;
  hm_error *e = NULL;
  if (hm_guest_mount_build(&call, HM_TYPE_VIRTIOFS, req->tag, 0, NULL, &e) < 0)
    return fail_err(eno, msg, EINVAL, "mount", e);
  call.flags |= MS_NOSUID | MS_NODEV;
  int64_t start = hm_now_ms();
  int r = mount_waiting(&call, AGENT_HUB_DIR, 0, req->timeout_ms, eno, msg);
  if (r == 0)
    hm_info("mounted the shared device (tag '%s') on %s after %lld ms", req->tag, AGENT_HUB_DIR,
            (long long)(hm_now_ms() - start));
  hm_guest_mount_call_clear(&call);
  return r;
}

/*
 * mount.virtiofs.hub: entry req->source of the shared device, a submount
 * of the hub (its own file system: virtiofsd announces it), bound onto
 * norm, then nosuid, nodev and read-only when asked on the bind itself.
 */
static int do_hub(const hm_agent_request *req, const char *norm, int *eno, char **msg) {
  if (!agent_hub_entry_ok(req->source))
    return fail(eno, msg, EINVAL, "mount: hub entry '%.40s' is not hm-N", req->source);
  if (strcmp(req->tag, AGENT_HUB_TAG) != 0)
    return fail(eno, msg, EINVAL, "mount: the shared device's tag is %s, not '%.40s'",
                AGENT_HUB_TAG, req->tag);
  if (req->options)
    return fail(eno, msg, EINVAL, "mount: a hub entry takes no options");
  int64_t start = hm_now_ms();
  pthread_mutex_lock(&hub_lock);
  int r = hub_ensure(req, eno, msg);
  pthread_mutex_unlock(&hub_lock);
  if (r < 0)
    return r;
  int fd = -1, hfd = open(AGENT_HUB_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat hst, est;
  /* O_DIRECTORY makes the lookup cross into the entry's automounted
   * submount. */
  if (hfd < 0 || fstat(hfd, &hst) < 0 ||
      (fd = openat(hfd, req->source, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
      fstat(fd, &est) < 0) {
    r = fail(eno, msg, errno, "mount: hub entry %s: %s", req->source, strerror(errno));
    goto out;
  }
  if (est.st_dev == hst.st_dev) {
    r = fail(eno, msg, EXDEV,
             "mount: hub entry %s is not a file system of its own (the host's virtiofsd does not "
             "announce submounts)",
             req->source);
    goto out;
  }
  char what[64];
  snprintf(what, sizeof(what), "hub entry %s", req->source);
  r = bind_fd_onto(fd, norm, req->readonly, 0, "mount", what, start, eno, msg);
out:
  if (fd >= 0)
    close(fd);
  if (hfd >= 0)
    close(hfd);
  return r;
}

int agent_op_mount(const hm_agent_request *req, int *eno, char **msg) {
  hm_error *e = NULL;
  char *norm = NULL;
  if (hm_guest_path_normalize(&norm, req->target, &e) < 0)
    return fail_err(eno, msg, EINVAL, "mount", e);
  if (hm_guest_path_check(norm, &e) < 0) {
    free(norm);
    return fail_err(eno, msg, EPERM, "mount", e);
  }
  int c = claim(norm);
  if (c < 0) {
    fail(eno, msg, -c, "mount: %s",
         c == -EBUSY ? "another request is working on this target" : "out of memory");
    free(norm);
    return -1;
  }
  if (agent_delay_mount_ms > 0) {
    /* Plays a slow guest so tests can see what the host does meanwhile; after
     * validation and the claim, so bad requests still fail at once and a
     * second request on this target is refused as busy, as in real life. */
    hm_info("delaying mount of %s by %d ms (--delay-mount)", norm, agent_delay_mount_ms);
    struct timespec ts = {agent_delay_mount_ms / 1000, (agent_delay_mount_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
      ;
  }
  int r = req->type == HM_TYPE_BIND                      ? do_bind(req, norm, eno, msg)
          : req->type == HM_TYPE_VIRTIOFS && req->source ? do_hub(req, norm, eno, msg)
                                                         : do_mount(req, norm, eno, msg);
  release(norm);
  free(norm);
  return r;
}

static int do_umount(const hm_agent_request *req, const char *norm, int *eno, char **msg) {
  char *resolved = realpath(norm, NULL), *fstype = NULL, *source = NULL;
  int r;
  if (!resolved)
    return fail(eno, msg, errno, "umount: %s: %s", norm,
                errno == ENOENT ? "no such directory, so nothing is mounted there"
                                : strerror(errno));
  int fm = find_mount(resolved, &fstype, &source);
  if (fm < 0) {
    r = fail(eno, msg, errno, "umount: cannot read the mount table: %s", strerror(errno));
    goto out;
  }
  if (fm == 0) {
    r = fail(eno, msg, EINVAL, "umount: %s is not mounted", norm);
    goto out;
  }
  if (!hm_guest_fstype_is_ours(fstype) && !is_share_fstype(fstype)) {
    r = fail(eno, msg, EPERM,
             "umount: refusing to unmount %s: it is a %s mount (from %s), not one hotmount makes",
             norm, fstype, source);
    goto out;
  }
  /* A bind of a hub entry: its submount under the hub goes with it. */
  struct stat tst;
  char dev[32] = "";
  if (strcmp(fstype, "virtiofs") == 0 && stat(resolved, &tst) == 0)
    snprintf(dev, sizeof(dev), "%u:%u", major(tst.st_dev), minor(tst.st_dev));
  int flags = UMOUNT_NOFOLLOW | (req->lazy ? MNT_DETACH : 0) | (req->force ? MNT_FORCE : 0);
  agent_notify_unpin(resolved); /* its pins would make it busy */
  /* Only a lazy unmount (what remove asks for a broken mount) can meet a
   * dead server; plain ones stay in this thread. */
  if ((req->lazy ? umount_bounded(resolved, flags) : umount2(resolved, flags)) < 0) {
    int e = errno;
    r = fail(eno, msg, e, "umount: %s: %s%s", norm, strerror(e),
             e == EBUSY && !req->lazy ? " (in use in the guest; a lazy unmount detaches it)" : "");
    goto out;
  }
  hm_info("unmounted %s (%s from %s)%s%s", resolved, fstype, source, req->lazy ? " lazily" : "",
          req->force ? " forced" : "");
  if (dev[0]) {
    char *text = read_file("/proc/self/mountinfo");
    if (text)
      agent_hub_release(text, dev);
    free(text);
  }
  if (strcmp(fstype, "9p") == 0) {
    /* After a plain unmount the kernel has already let go of its end and the
     * relay is finishing; after a lazy one, whoever still uses the file
     * system gets I/O errors from here on. */
    agent_relay_stop(take_relay(resolved));
  }
  /* Something may still be mounted below ours; then the directory stays. */
  if (find_mount(resolved, NULL, NULL) == 0) {
    struct created *c = take_created(resolved);
    if (c) {
      rmdir_made(&c->dirs);
      hm_strv_clear(&c->dirs);
      free(c->target);
      free(c);
    }
  }
  r = 0;
out:
  free(resolved);
  free(fstype);
  free(source);
  return r;
}

int agent_op_umount(const hm_agent_request *req, int *eno, char **msg) {
  hm_error *e = NULL;
  char *norm = NULL;
  if (hm_guest_path_normalize(&norm, req->target, &e) < 0)
    return fail_err(eno, msg, EINVAL, "umount", e);
  if (hm_guest_path_check(norm, &e) < 0) {
    free(norm);
    return fail_err(eno, msg, EPERM, "umount", e);
  }
  int c = claim(norm);
  if (c < 0) {
    fail(eno, msg, -c, "umount: %s",
         c == -EBUSY ? "another request is working on this target" : "out of memory");
    free(norm);
    return -1;
  }
  int r = do_umount(req, norm, eno, msg);
  release(norm);
  free(norm);
  return r;
}

int agent_mount_fstype(const char *path, char **fstype) {
  return find_mount(path, fstype, NULL);
}

int agent_op_list(hm_agent_mount_info **out, size_t *n, int *eno, char **msg) {
  char *text = read_file("/proc/self/mountinfo");
  if (!text)
    return fail(eno, msg, errno, "list: cannot read /proc/self/mountinfo: %s", strerror(errno));
  hm_error *e = NULL;
  int r = hm_guest_mountinfo_parse(out, n, text, 1, &e);
  if (r == 0)
    agent_hub_fix_list(*out, n, text);
  free(text);
  if (r < 0)
    return fail_err(eno, msg, r == HM_E_NOMEM ? ENOMEM : EIO, "list", e);
  return 0;
}
