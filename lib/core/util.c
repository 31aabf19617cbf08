/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "platform.h"
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int hm_kv_set(hm_kv *kv, const char *key, const char *value) {
  for (size_t i = 0; i < kv->n; i++) {
    if (strcmp(kv->keys[i], key) != 0)
      continue;
    if (!value) {
      free(kv->keys[i]);
      free(kv->values[i]);
      memmove(&kv->keys[i], &kv->keys[i + 1], (kv->n - i - 1) * sizeof(char *));
      memmove(&kv->values[i], &kv->values[i + 1], (kv->n - i - 1) * sizeof(char *));
      kv->n--;
      return 0;
    }
    char *v = strdup(value);
    if (!v)
      return HM_E_NOMEM;
    free(kv->values[i]);
    kv->values[i] = v;
    return 0;
  }
  if (!value)
    return 0;
  char **k = realloc(kv->keys, (kv->n + 1) * sizeof(char *));
  if (!k)
    return HM_E_NOMEM;
  kv->keys = k;
  char **v = realloc(kv->values, (kv->n + 1) * sizeof(char *));
  if (!v)
    return HM_E_NOMEM;
  kv->values = v;
  char *kd = strdup(key), *vd = strdup(value);
  if (!kd || !vd) {
    free(kd);
    free(vd);
    return HM_E_NOMEM;
  }
  kv->keys[kv->n] = kd;
  kv->values[kv->n] = vd;
  kv->n++;
  return 0;
}

const char *hm_kv_get(const hm_kv *kv, const char *key) {
  for (size_t i = 0; i < kv->n; i++)
    if (strcmp(kv->keys[i], key) == 0)
      return kv->values[i];
  return NULL;
}

int hm_kv_copy(hm_kv *dst, const hm_kv *src) {
  hm_kv tmp = {0};
  for (size_t i = 0; i < src->n; i++) {
    if (hm_kv_set(&tmp, src->keys[i], src->values[i]) < 0) {
      hm_kv_clear(&tmp);
      return HM_E_NOMEM;
    }
  }
  hm_kv_clear(dst);
  *dst = tmp;
  return 0;
}

void hm_kv_clear(hm_kv *kv) {
  for (size_t i = 0; i < kv->n; i++) {
    free(kv->keys[i]);
    free(kv->values[i]);
  }
  free(kv->keys);
  free(kv->values);
  memset(kv, 0, sizeof(*kv));
}

static int strv_take(hm_strv *s, char *str) {
  if (s->n + 2 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    char **v = realloc(s->v, cap * sizeof(char *));
    if (!v) {
      free(str);
      return HM_E_NOMEM;
    }
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = str;
  s->v[s->n] = NULL;
  return 0;
}

int hm_strv_push(hm_strv *s, const char *str) {
  char *d = strdup(str);
  return d ? strv_take(s, d) : HM_E_NOMEM;
}

int hm_strv_pushf(hm_strv *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *d = NULL;
  int r = vasprintf(&d, fmt, ap);
  va_end(ap);
  return r < 0 ? HM_E_NOMEM : strv_take(s, d);
}

char **hm_strv_steal(hm_strv *s) {
  char **v = s->v;
  if (!v)
    v = calloc(1, sizeof(char *));
  memset(s, 0, sizeof(*s));
  return v;
}

void hm_strv_clear(hm_strv *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
  memset(s, 0, sizeof(*s));
}

void hm_strv_free(char **strv) {
  if (!strv)
    return;
  for (char **p = strv; *p; p++)
    free(*p);
  free(strv);
}

static int write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Opens path's directory for an *_at call: *dfd, and *base pointing into
 * path at its last component ("." is the directory of a bare name). */
static int open_parent(const char *path, int *dfd, const char **base, hm_error **err) {
  const char *slash = strrchr(path, '/');
  *base = slash ? slash + 1 : path;
  char *dir =
      slash ? (slash == path ? strdup("/") : strndup(path, (size_t)(slash - path))) : strdup(".");
  if (!dir)
    return HM_ERR_NOMEM(err);
  *dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int r = *dfd < 0 ? HM_ERR(err, -errno, "cannot open %s: %s", dir, strerror(errno)) : 0;
  free(dir);
  return r;
}

int hm_write_file_atomic_at(int dirfd, const char *name, const char *text, hm_error **err) {
  char tmp[320];
  int fd = -1, r = 0;
  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-%d", name, (int)getpid()) >= sizeof(tmp))
    return HM_ERR(err, HM_E_INVALID, "file name %s is too long", name);
  /* O_EXCL|O_NOFOLLOW: whatever sits at the temporary name (a symlink
   * planted there, a file of a crashed writer with our pid) is never
   * written through; a leftover of ours is removed and the create retried
   * once, so a planted symlink is unlinked, not followed. */
  for (int tries = 0; tries < 2 && fd < 0; tries++) {
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST && tries == 0 && unlinkat(dirfd, tmp, 0) == 0)
      continue;
    if (fd < 0)
      return HM_ERR(err, -errno, "cannot create %s: %s", tmp, strerror(errno));
  }
  if ((r = write_all(fd, text, strlen(text))) < 0 || (r = write_all(fd, "\n", 1)) < 0 ||
      (fsync(fd) < 0 && (r = -errno))) {
    r = HM_ERR(err, r, "cannot write %s: %s", tmp, strerror(-r));
    goto fail;
  }
  close(fd);
  fd = -1;
  if (renameat(dirfd, tmp, dirfd, name) < 0) {
    r = HM_ERR(err, -errno, "cannot rename %s: %s", tmp, strerror(errno));
    goto fail;
  }
  /* The rename itself must reach the disk too. */
  fsync(dirfd);
  return 0;
fail:
  if (fd >= 0)
    close(fd);
  unlinkat(dirfd, tmp, 0);
  return r;
}

int hm_write_file_atomic(const char *path, const char *text, hm_error **err) {
  const char *base;
  int dfd, r = open_parent(path, &dfd, &base, err);
  if (r < 0)
    return r;
  r = hm_write_file_atomic_at(dfd, base, text, err);
  close(dfd);
  return r;
}

int hm_dir_check_private(int dirfd, const char *path, hm_error **err) {
  struct stat st;
  if (fstat(dirfd, &st) < 0)
    return HM_ERR(err, -errno, "cannot stat %s: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return HM_ERR(err, HM_E_INVALID, "%s is not a directory", path);
  /* Whoever owns it, or may write to it, can swap our sockets, plant
   * symlinks where we write the pid file, the log and the state, and read
   * what QMP and the agent say. */
  if (st.st_uid != geteuid())
    return HM_ERR(err, HM_E_PERM,
                  "instance directory %s is owned by uid %u, not by this process (uid %u): "
                  "another user could replace its sockets and files; remove it (or "
                  "chown %u %s) and try again",
                  path, (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid(), path);
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return HM_ERR(err, HM_E_PERM,
                  "instance directory %s is writable by %s (mode %04o): other users could "
                  "replace its sockets and files; run chmod 0700 %s and try again",
                  path, st.st_mode & S_IWOTH ? "others" : "its group",
                  (unsigned)(st.st_mode & 07777), path);
  return 0;
}

int hm_dir_open_private(const char *path, int create, hm_error **err) {
  /* mkdir's mode is what a new directory gets before anyone can see it;
   * an existing one is only trusted after the checks below. */
  if (create && mkdir(path, 0700) < 0 && errno != EEXIST)
    return HM_ERR(err, -errno, "cannot create %s: %s", path, strerror(errno));
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ELOOP || e == ENOTDIR) {
      struct stat st;
      if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        return HM_ERR(err, HM_E_PERM,
                      "instance directory %s is a symbolic link; give the real directory "
                      "instead",
                      path);
    }
    return HM_ERR(err, e == ENOENT ? HM_E_NOT_FOUND : -e, "cannot open %s: %s", path, strerror(e));
  }
  int r = hm_dir_check_private(fd, path, err);
  if (r < 0) {
    close(fd);
    return r;
  }
  return fd;
}

int hm_unix_listen_at(int dirfd, const char *name, int backlog, hm_error **err) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  char sub[64];
  int fd = hm_plat_socket(AF_UNIX, SOCK_STREAM);
  if (fd < 0)
    return HM_ERR(err, -errno, "socket: %s", strerror(errno));
  /* A fresh 0700 directory nobody else can enter: the socket is bound there
   * (a name nobody can have taken), then renamed onto `name` in one step, so
   * there is never a moment where `name` is missing or someone else's. */
  int made = 0;
  for (int i = 0; i < 16 && !made; i++) {
    unsigned rnd = 0;
    if (hm_plat_random(&rnd, sizeof(rnd)) < 0)
      rnd = (unsigned)hm_now_ms() + (unsigned)i;
    snprintf(sub, sizeof(sub), ".hm-bind-%d-%08x", (int)getpid(), rnd);
    if (mkdirat(dirfd, sub, 0700) == 0)
      made = 1;
    else if (errno != EEXIST)
      break;
  }
  if (!made) {
    int e = errno;
    close(fd);
    return HM_ERR(err, -e, "cannot make a private directory for %s: %s", name, strerror(e));
  }
  /* Through the held directory fd: the socket lands in this directory even
   * if its path was renamed meanwhile, and the name stays short. */
  char dpath[sizeof(sa.sun_path)];
  if (hm_plat_dirfd_path(dirfd, dpath, sizeof(dpath)) < 0 ||
      snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s/s", dpath, sub) >=
          (int)sizeof(sa.sun_path)) {
    int e = errno == ENOSYS ? ENOSYS : ENAMETOOLONG;
    unlinkat(dirfd, sub, AT_REMOVEDIR);
    close(fd);
    return HM_ERR(err, -e, "cannot name the directory of %s for bind: %s", name, strerror(e));
  }
  char rel[96];
  snprintf(rel, sizeof(rel), "%s/s", sub);
  int r = 0;
  /* 0600 before it gets its public name (no umask games: other threads). */
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || fchmodat(dirfd, rel, 0600, 0) < 0 ||
      listen(fd, backlog) < 0) {
    r = HM_ERR(err, -errno, "cannot listen for %s: %s", name, strerror(errno));
  } else if (renameat(dirfd, rel, dirfd, name) < 0) {
    r = HM_ERR(err, -errno, "cannot rename the socket onto %s: %s", name, strerror(errno));
  }
  unlinkat(dirfd, rel, 0);
  unlinkat(dirfd, sub, AT_REMOVEDIR);
  if (r < 0) {
    close(fd);
    return r;
  }
  return fd;
}

int hm_unix_listen(const char *path, int backlog, hm_error **err) {
  const char *base;
  int dfd, r = open_parent(path, &dfd, &base, err);
  if (r < 0)
    return r;
  r = hm_unix_listen_at(dfd, base, backlog, err);
  close(dfd);
  return r;
}

int hm_unix_path_check(const char *path, hm_error **err) {
  struct stat st;
  /* Missing: connect will say so (and the peer check still runs after). */
  if (lstat(path, &st) < 0)
    return errno == ENOENT ? 0 : HM_ERR(err, HM_E_NOT_READY, "%s: %s", path, strerror(errno));
  if (S_ISLNK(st.st_mode))
    return HM_ERR(err, HM_E_PERM, "%s is a symbolic link, not a socket: refusing to follow it",
                  path);
  if (!S_ISSOCK(st.st_mode))
    return HM_ERR(err, HM_E_PERM, "%s is not a socket", path);
  if (st.st_uid != geteuid() && st.st_uid != 0)
    return HM_ERR(err, HM_E_PERM,
                  "%s belongs to uid %u, not to us (uid %u) or root: refusing to talk to "
                  "another user's socket",
                  path, (unsigned)st.st_uid, (unsigned)geteuid());
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return HM_ERR(err, HM_E_PERM,
                  "%s can be connected to by %s (mode %04o): start QEMU with umask 077 so that "
                  "only its owner can drive it",
                  path, st.st_mode & S_IWOTH ? "any user" : "its group",
                  (unsigned)(st.st_mode & 07777));
  return 0;
}

int hm_unix_peer_check(int fd, const char *what, hm_error **err) {
  uid_t uid;
  pid_t pid;
  if (hm_plat_peer(fd, &uid, &pid) < 0)
    return HM_ERR(err, HM_E_PERM, "cannot learn who serves %s: %s", what, strerror(errno));
  /* The uid the listener had when it called listen(): a socket another
   * user slipped in is theirs even if the file's owner looks right. */
  if (uid != geteuid() && uid != 0)
    return HM_ERR(err, HM_E_PERM,
                  "%s is served by uid %u (pid %d), not by us (uid %u) or root: refusing it", what,
                  (unsigned)uid, (int)pid, (unsigned)geteuid());
  return 0;
}

int hm_open_nofollow_walk(const char *path, int flags) {
  if (path[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  int cur = open("/", HM_O_PATH | O_DIRECTORY | O_CLOEXEC);
  const char *p = path;
  while (cur >= 0) {
    while (*p == '/')
      p++;
    const char *end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    char name[NAME_MAX + 1];
    if (n > NAME_MAX) {
      close(cur);
      errno = ENAMETOOLONG;
      return -1;
    }
    memcpy(name, p, n);
    name[n] = '\0';
    while (end && *end == '/')
      end++;
    int last = !end || !*end;
    /* "/" itself: the directory we hold. */
    const char *what = n ? name : ".";
    int next = openat(cur, what,
                      last ? flags | O_NOFOLLOW | O_CLOEXEC
                           : HM_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    /* O_NOFOLLOW with O_DIRECTORY (or O_PATH) says ENOTDIR, or even opens
     * the link itself: a symlink is ELOOP here, as openat2 says. */
    struct stat st;
    if ((next < 0 && e == ENOTDIR) || (next >= 0 && !last)) {
      if (fstatat(cur, what, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        if (next >= 0)
          close(next);
        next = -1;
        e = ELOOP;
      }
    }
    close(cur);
    if (next < 0 || last) {
      errno = e;
      return next;
    }
    cur = next;
    p = end;
  }
  return -1;
}

int hm_open_nofollow(const char *path, int flags) {
  if (path[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  int fd = hm_plat_open_nosymlinks(path, flags);
  if (fd >= 0 || errno != ENOSYS)
    return fd;
  /* Linux before 5.6, systems with no such open. */
  return hm_open_nofollow_walk(path, flags);
}

int hm_thread_create(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = pthread_create(t, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}
