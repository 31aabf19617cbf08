/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mount, umount and list, done with the system calls themselves. */
#include "agent.h"
#include "guest/guest_mount.h"
#include "guest/guest_path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
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

static int do_mount(const hm_agent_request *req, const char *norm, int *eno, char **msg) {
  hm_error *e = NULL;
  hm_guest_mount_call call;
  int r = hm_guest_mount_build(&call, req->type, req->tag, req->readonly, req->options, &e);
  if (r < 0)
    return fail_err(eno, msg, r == HM_E_UNSUPPORTED ? EOPNOTSUPP : EINVAL, "mount", e);

  char *fstype = NULL, *source = NULL, *resolved = NULL;
  hm_strv made = {0};
  int devfd = -1;
  int fm = find_mount(norm, &fstype, &source);
  if (fm == 1) {
    r = fail(eno, msg, EBUSY, "mount: %s is already a mount point (%s from %s)", norm, fstype,
             source);
    goto out;
  }
  if ((r = mkdir_p(norm, &made, eno, msg)) < 0)
    goto out;
  /* A symlink on the way may lead somewhere the path check would refuse. */
  if (!(resolved = realpath(norm, NULL))) {
    r = fail(eno, msg, errno, "mount: cannot resolve %s: %s", norm, strerror(errno));
    goto out;
  }
  if (strcmp(resolved, norm) != 0) {
    if ((r = hm_guest_path_check(resolved, &e)) < 0) {
      r = fail(eno, msg, EPERM, "mount: %s resolves to %s: %s", norm, resolved,
               hm_error_message(e));
      hm_error_free(e);
      goto out;
    }
    if (find_mount(resolved, NULL, NULL) == 1) {
      r = fail(eno, msg, EBUSY, "mount: %s (%s) is already a mount point", norm, resolved);
      goto out;
    }
  }

  devfd = agent_devwait_open();
  int64_t start = hm_now_ms(), deadline = start + req->timeout_ms;
  int waited = 0;
  for (;;) {
    if (mount(call.source, resolved, call.fstype, call.flags, call.data) == 0)
      break;
    int err = errno;
    if (!tag_missing(err, call.source)) {
      r = fail(eno, msg, err, "mount: mounting virtiofs tag '%s' on %s failed: %s", call.source,
               resolved, strerror(err));
      goto out;
    }
    if (hm_now_ms() >= deadline) {
      r = fail(eno, msg, ETIMEDOUT,
               "mount: virtiofs tag '%s' did not appear within %d ms (last mount error: %s)",
               call.source, req->timeout_ms, strerror(err));
      goto out;
    }
    if (!waited++)
      hm_info("waiting up to %d ms for virtiofs tag '%s'", req->timeout_ms, call.source);
    if (agent_retry_interval_ms > 0) {
      /* The reference design's strategy, kept only to measure against. */
      struct timespec ts = {agent_retry_interval_ms / 1000,
                            (agent_retry_interval_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    } else {
      agent_devwait_wait(devfd, deadline);
    }
  }
  hm_info("mounted virtiofs tag '%s' on %s (%s) after %lld ms", call.source, resolved,
          req->readonly ? "ro" : "rw", (long long)(hm_now_ms() - start));
  record_created(resolved, &made);
  r = 0;
out:
  if (r < 0)
    rmdir_made(&made);
  agent_devwait_close(devfd);
  hm_strv_clear(&made);
  free(fstype);
  free(source);
  free(resolved);
  hm_guest_mount_call_clear(&call);
  return r;
}

int agent_op_mount(const hm_agent_request *req, int *eno, char **msg) {
  if (req->type == HM_TYPE_9P)
    return fail(eno, msg, EOPNOTSUPP,
                "mount: 9p over virtio-serial port '%s' (trans=fd relay) is not supported yet",
                req->port ? req->port : "");
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
  int r = do_mount(req, norm, eno, msg);
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
  if (!hm_guest_fstype_is_ours(fstype)) {
    r = fail(eno, msg, EPERM,
             "umount: refusing to unmount %s: it is a %s mount (from %s), not one hotmount makes",
             norm, fstype, source);
    goto out;
  }
  int flags = UMOUNT_NOFOLLOW | (req->lazy ? MNT_DETACH : 0) | (req->force ? MNT_FORCE : 0);
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

int agent_op_list(hm_agent_mount_info **out, size_t *n, int *eno, char **msg) {
  char *text = read_file("/proc/self/mountinfo");
  if (!text)
    return fail(eno, msg, errno, "list: cannot read /proc/self/mountinfo: %s", strerror(errno));
  hm_error *e = NULL;
  int r = hm_guest_mountinfo_parse(out, n, text, 1, &e);
  free(text);
  if (r < 0)
    return fail_err(eno, msg, r == HM_E_NOMEM ? ENOMEM : EIO, "list", e);
  return 0;
}
