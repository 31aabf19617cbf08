/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * platform.h on POSIX systems other than Linux: macOS first (the VZ
 * backend), and anything with the same calls. Where a system has no way to
 * do something safely, the call fails (ENOSYS) and the caller refuses,
 * rather than doing it unsafely.
 */
#include "platform.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#ifdef __APPLE__
#include <sys/param.h>
#include <sys/random.h>
#include <sys/ucred.h>
#endif

static int set_cloexec_nonblock(int fd, int nonblock) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
    return -1;
  if (nonblock && ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
    return -1;
  return 0;
}

/* A close-on-exec pipe, both ends non-blocking when asked. */
static int pipe_flags(int p[2], int nonblock) {
  if (pipe(p) < 0)
    return -1;
  if (set_cloexec_nonblock(p[0], nonblock) < 0 || set_cloexec_nonblock(p[1], nonblock) < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    errno = e;
    return -1;
  }
  return 0;
}

int hm_plat_pipe(int p[2]) {
  return pipe_flags(p, 0);
}

int hm_wake_open(hm_wake *w) {
  int p[2];
  *w = HM_WAKE_NONE;
  if (pipe_flags(p, 1) < 0)
    return -1;
  *w = (hm_wake){p[0], p[1]};
  return 0;
}

int hm_wake_signal(hm_wake *w) {
  /* A full pipe (EAGAIN) is readable already. */
  return write(w->wfd, "w", 1) < 0 && errno != EAGAIN ? -1 : 0;
}

int hm_wake_drain(hm_wake *w) {
  char buf[256];
  ssize_t n;
  while ((n = read(w->rfd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
    ;
  return n < 0 && errno != EAGAIN ? -1 : 0;
}

void hm_wake_close(hm_wake *w) {
  if (w->rfd >= 0)
    close(w->rfd);
  if (w->wfd >= 0 && w->wfd != w->rfd)
    close(w->wfd);
  *w = HM_WAKE_NONE;
}

int hm_plat_socket(int domain, int type) {
  int fd = socket(domain, type, 0);
  if (fd < 0)
    return -1;
  if (set_cloexec_nonblock(fd, 0) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
#ifdef SO_NOSIGPIPE
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
#endif
  return fd;
}

ssize_t hm_plat_send(int fd, const void *buf, size_t len) {
  /* SIGPIPE is off on the socket itself (SO_NOSIGPIPE, hm_plat_socket). */
  return send(fd, buf, len, 0);
}

int hm_plat_peer(int fd, uid_t *uid, pid_t *pid) {
  *pid = -1;
#if defined(__APPLE__) || defined(HM_HAVE_GETPEEREID)
  gid_t gid;
  if (getpeereid(fd, uid, &gid) < 0)
    return -1;
#if defined(LOCAL_PEERPID) && defined(SOL_LOCAL)
  pid_t p;
  socklen_t len = sizeof(p);
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &p, &len) == 0)
    *pid = p;
#endif
  return 0;
#else
  (void)fd, (void)uid;
  errno = ENOSYS;
  return -1;
#endif
}

int hm_plat_random(void *buf, size_t n) {
  /* getentropy: at most 256 bytes a call (POSIX.1-2024, macOS 10.12). */
  for (size_t off = 0; off < n;) {
    size_t k = n - off < 256 ? n - off : 256;
    if (getentropy((char *)buf + off, k) < 0)
      return -1;
    off += k;
  }
  return 0;
}

int hm_plat_open_nosymlinks(const char *path, int flags) {
#ifdef O_NOFOLLOW_ANY
  return open(path, flags | O_NOFOLLOW_ANY | O_CLOEXEC);
#else
  (void)path, (void)flags;
  errno = ENOSYS;
  return -1;
#endif
}

int hm_plat_dirfd_path(int dirfd, char *buf, size_t size) {
#ifdef F_GETPATH
  char p[MAXPATHLEN];
  if (fcntl(dirfd, F_GETPATH, p) < 0)
    return -1;
  if (strlen(p) >= size) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(buf, p);
  return 0;
#else
  (void)dirfd, (void)buf, (void)size;
  errno = ENOSYS;
  return -1;
#endif
}
