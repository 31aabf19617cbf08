/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The notify op: make the guest kernel report host-side changes to the
 * guest's file watchers. virtiofs, 9p and sshfs never forward host inotify,
 * so for each event the agent touches the path through the guest's own VFS
 * in a way that changes nothing (see docs/agent-protocol.md, "notify"):
 *
 * - create, modify, attrib, rename: utimensat(parent, name, {UTIME_OMIT,
 *   mtime}) with the mtime a forced statx just read from the host. The
 *   kernel reports ATTR_MTIME alone as IN_MODIFY on the file (with its name
 *   to a watcher of the directory); the host sees the same mtime set again,
 *   which its watcher drops as an echo.
 * - delete: the same on the parent directory (its mtime is the host's new
 *   one): a watcher of the directory sees IN_MODIFY on it, a watcher of its
 *   parent an event naming it. No call makes the kernel report IN_DELETE
 *   for a name it never deleted.
 * - read-only mounts: utimensat fails with EROFS before any event; the agent
 *   then opens the file read-only and closes it (IN_OPEN, IN_CLOSE_NOWRITE).
 *
 * Every path is relative to the mount, checked (hm_notify_path_check) and
 * opened with openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV
 * under the mount's root: the host cannot make the agent touch anything
 * outside the mount, and a symlink in the share is touched itself, never
 * followed.
 */
#include "agent.h"
#include "guest/guest_mount.h"
#include "guest/guest_path.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_how(int dirfd, const char *path, int flags, unsigned long long resolve) {
  struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC | O_NOFOLLOW),
                         .resolve = resolve};
  int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
  /* A kernel before 5.6: one component at a time, never following a link
   * (the paths here are relative and hold no ".."). */
  if (fd < 0 && errno == ENOSYS)
    return hm_notify_open_walk(dirfd, path, flags);
  return fd;
}

#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

/*
 * 9p without a cache (cache=mmap or none) makes a new inode at every lookup
 * and forgets a dentry as soon as nobody uses it, so the inode a guest
 * watcher put its watch on is not the one our path walk reaches later: the
 * watcher of a subdirectory would never hear. Holding an O_PATH descriptor
 * of each directory keeps its dentry, so every later lookup, the watcher's
 * and ours, finds the same inode. Pins are taken when a notify mount is
 * prepared (an empty notify request, right after the mount) and for each
 * new directory as it is announced; they are dropped before an unmount
 * (agent_notify_unpin), which they would otherwise make busy.
 */
#define MAX_PINS 65536

struct pinset {
  dev_t dev; /* the mount's */
  int *fds;
  size_t n, cap;
  struct pinset *next;
};
static pthread_mutex_t pin_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pinset *pinsets;
static size_t pins_total;

/* Takes fd (closed when it cannot be kept). pin_lock held. */
static void pin_locked(dev_t dev, int fd) {
  struct pinset *p = pinsets;
  while (p && p->dev != dev)
    p = p->next;
  if (!p && (p = calloc(1, sizeof(*p)))) {
    p->dev = dev;
    p->next = pinsets;
    pinsets = p;
  }
  if (!p || pins_total >= MAX_PINS) {
    close(fd);
    return;
  }
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    int *v = realloc(p->fds, cap * sizeof(*v));
    if (!v) {
      close(fd);
      return;
    }
    p->fds = v;
    p->cap = cap;
  }
  p->fds[p->n++] = fd;
  pins_total++;
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Pins every directory of the 9p mount at tfd (breadth first, at most
 * MAX_PINS in all). */
static void pin_tree(int tfd, dev_t dev) {
  raise_nofile();
  int root = open_how(tfd, ".", O_PATH | O_DIRECTORY, BENEATH);
  if (root < 0)
    return;
  pthread_mutex_lock(&pin_lock);
  size_t first = 0;
  struct pinset *p = pinsets;
  while (p && p->dev != dev)
    p = p->next;
  first = p ? p->n : 0;
  pin_locked(dev, root);
  for (p = pinsets; p && p->dev != dev; p = p->next)
    ;
  for (size_t i = first; p && i < p->n && pins_total < MAX_PINS; i++) {
    int d = open_how(p->fds[i], ".", O_RDONLY | O_DIRECTORY, BENEATH);
    DIR *dp = d < 0 ? NULL : fdopendir(d);
    if (!dp) {
      if (d >= 0)
        close(d);
      continue;
    }
    struct dirent *de;
    while ((de = readdir(dp)) && pins_total < MAX_PINS) {
      if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
        continue;
      int c = open_how(dirfd(dp), de->d_name, O_PATH | O_DIRECTORY, BENEATH);
      if (c >= 0)
        pin_locked(dev, c);
    }
    closedir(dp);
  }
  pthread_mutex_unlock(&pin_lock);
}

void agent_notify_unpin(const char *target) {
  struct stat st;
  if (lstat(target, &st) < 0)
    return;
  pthread_mutex_lock(&pin_lock);
  for (struct pinset **pp = &pinsets; *pp; pp = &(*pp)->next) {
    struct pinset *p = *pp;
    if (p->dev != st.st_dev)
      continue;
    for (size_t i = 0; i < p->n; i++)
      close(p->fds[i]);
    pins_total -= p->n;
    *pp = p->next;
    free(p->fds);
    free(p);
    break;
  }
  pthread_mutex_unlock(&pin_lock);
}

int agent_notify_open_target(const char *target, int *is_9p, char **msg) {
  hm_error *e = NULL;
  char *norm = NULL;
  if (hm_guest_path_normalize(&norm, target, &e) < 0 || hm_guest_path_check(norm, &e) < 0) {
    if (asprintf(msg, "notify: %s", hm_error_message(e)) < 0)
      *msg = NULL;
    hm_error_free(e);
    free(norm);
    return -EINVAL;
  }
  int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  int fd = root < 0 ? -1
                    : open_how(root, norm + 1, O_PATH | O_DIRECTORY,
                               RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
  int err = errno;
  if (root >= 0)
    close(root);
  if (fd < 0) {
    if (asprintf(msg, "notify: cannot open %s: %s", norm, strerror(err)) < 0)
      *msg = NULL;
    free(norm);
    return -err;
  }
  struct statx stx;
  int mountroot = statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
                  (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                  (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
  /* The type from the mount table, not statfs: a 9p server answers statfs
   * with the host file system's magic (QEMU's does). */
  char *fstype = NULL;
  int shared = mountroot && agent_mount_fstype(norm, &fstype) == 1 && fstype &&
               hm_guest_fstype_is_ours(fstype);
  *is_9p = shared && strcmp(fstype, "9p") == 0;
  free(fstype);
  if (!mountroot || !shared) {
    if (asprintf(msg, "notify: %s is not %s", norm,
                 !mountroot ? "a mount point" : "a virtiofs, 9p or sshfs mount") < 0)
      *msg = NULL;
    close(fd);
    free(norm);
    return -EPERM;
  }
  free(norm);
  return fd;
}

/* Sets name's mtime (beneath dfd) to what the host has now. 0, or -errno. */
static int touch_at(int dfd, const char *name) {
  struct statx stx;
  if (statx(dfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_MTIME, &stx) < 0)
    return -errno;
  struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                           {.tv_sec = stx.stx_mtime.tv_sec, .tv_nsec = stx.stx_mtime.tv_nsec}};
  if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) == 0)
    return 0;
  int e = errno;
  if (e != EROFS && e != EPERM && e != EACCES)
    return -e;
  /* Read-only: an open and close is all a watcher can be given. Only
   * directories and regular files: opening a FIFO or device could block or
   * act. */
  if (!S_ISREG(stx.stx_mode) && !S_ISDIR(stx.stx_mode))
    return -e;
  int fd = open_how(dfd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, BENEATH);
  if (fd < 0)
    return -errno;
  close(fd);
  return 0;
}

/* Touches rel (a checked relative path) beneath the mount root tfd; for a
 * delete, its parent directory. */
static int poke(int tfd, const hm_notify_event *ev, dev_t pin_dev) {
  char *path = strdup(ev->path);
  if (!path)
    return -ENOMEM;
  if (ev->kind == HM_NOTIFY_DELETE) {
    char *slash = strrchr(path, '/');
    if (!slash) {
      /* The mount root itself: its own fd, not a path. */
      struct statx stx;
      int r =
          statx(tfd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_MTIME, &stx) < 0 ? -errno : 0;
      if (r == 0) {
        /* The O_PATH root through its /proc link: opening it for futimens
         * would show watchers an IN_OPEN and IN_CLOSE_NOWRITE as well. */
        struct timespec ts[2] = {
            {.tv_nsec = UTIME_OMIT},
            {.tv_sec = stx.stx_mtime.tv_sec, .tv_nsec = stx.stx_mtime.tv_nsec}};
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", tfd);
        if (utimensat(AT_FDCWD, proc, ts, 0) < 0)
          r = -errno;
      }
      free(path);
      return r;
    }
    *slash = '\0';
  }
  char *slash = strrchr(path, '/');
  int dfd = tfd;
  if (slash) {
    *slash = '\0';
    dfd = open_how(tfd, path, O_PATH | O_DIRECTORY, BENEATH);
    if (dfd < 0) {
      int e = errno;
      free(path);
      return -e;
    }
  }
  const char *name = slash ? slash + 1 : path;
  if (pin_dev && (ev->kind == HM_NOTIFY_CREATE || ev->kind == HM_NOTIFY_RENAME)) {
    /* A new directory: pinned before its event reaches any watcher, so a
     * watch put on it from now on lands on the inode we touch. */
    int c = open_how(dfd, name, O_PATH | O_DIRECTORY, BENEATH);
    if (c >= 0) {
      pthread_mutex_lock(&pin_lock);
      pin_locked(pin_dev, c);
      pthread_mutex_unlock(&pin_lock);
    }
  }
  int r = touch_at(dfd, name);
  if (dfd != tfd)
    close(dfd);
  free(path);
  return r;
}

int agent_notify_apply(int tfd, int is_9p, const hm_notify_event *ev, size_t n, unsigned *failed) {
  unsigned bad = 0;
  struct stat st;
  dev_t pin_dev = 0;
  if (is_9p && fstat(tfd, &st) == 0)
    pin_dev = st.st_dev;
  if (n == 0 && pin_dev)
    pin_tree(tfd, pin_dev);
  for (size_t i = 0; i < n; i++) {
    int r = poke(tfd, &ev[i], pin_dev);
    /* Gone again (deleted right after) is normal; anything else is logged. */
    if (r < 0 && r != -ENOENT) {
      bad++;
      hm_debug("notify: %s %s: %s", hm_notify_kind_name(ev[i].kind), ev[i].path, strerror(-r));
    }
  }
  if (failed)
    *failed = bad;
  return 0;
}

int agent_op_notify(const hm_agent_request *req, int *eno, char **msg) {
  char *m = NULL;
  int is_9p = 0;
  int tfd = agent_notify_open_target(req->target, &is_9p, &m);
  if (tfd < 0) {
    *eno = -tfd;
    *msg = m;
    return -1;
  }
  unsigned failed = 0;
  agent_notify_apply(tfd, is_9p, req->events, req->n_events, &failed);
  close(tfd);
  if (failed)
    hm_debug("notify %s: %u of %zu events could not be shown", req->target, failed, req->n_events);
  return 0;
}
