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
#include "guest/guest_path.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif
#ifndef V9FS_MAGIC
#define V9FS_MAGIC 0x01021997
#endif

static int open_how(int dirfd, const char *path, int flags, unsigned long long resolve) {
  struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC | O_NOFOLLOW),
                         .resolve = resolve};
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

int agent_notify_open_target(const char *target, char **msg) {
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
  struct statfs sfs;
  int mountroot = statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
                  (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
                  (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
  int shared = fstatfs(fd, &sfs) == 0 && ((unsigned long)sfs.f_type == FUSE_SUPER_MAGIC ||
                                          (unsigned long)sfs.f_type == V9FS_MAGIC);
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
static int poke(int tfd, const hm_notify_event *ev) {
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
        /* futimens needs an open file, not the O_PATH root (whose opening
         * a watcher would not see, while this one it does: IN_OPEN). */
        struct timespec ts[2] = {
            {.tv_nsec = UTIME_OMIT},
            {.tv_sec = stx.stx_mtime.tv_sec, .tv_nsec = stx.stx_mtime.tv_nsec}};
        int fd = open_how(tfd, ".", O_RDONLY | O_DIRECTORY, BENEATH);
        if (fd < 0 || futimens(fd, ts) < 0)
          r = -errno;
        if (fd >= 0)
          close(fd);
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
  int r = touch_at(dfd, slash ? slash + 1 : path);
  if (dfd != tfd)
    close(dfd);
  free(path);
  return r;
}

int agent_notify_apply(int tfd, const hm_notify_event *ev, size_t n, unsigned *failed) {
  unsigned bad = 0;
  for (size_t i = 0; i < n; i++) {
    int r = poke(tfd, &ev[i]);
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
  int tfd = agent_notify_open_target(req->target, &m);
  if (tfd < 0) {
    *eno = -tfd;
    *msg = m;
    return -1;
  }
  unsigned failed = 0;
  agent_notify_apply(tfd, req->events, req->n_events, &failed);
  close(tfd);
  if (failed)
    hm_debug("notify %s: %u of %zu events could not be shown", req->target, failed, req->n_events);
  return 0;
}
