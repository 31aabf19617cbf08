/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* platform.h on Linux. */
#include "platform.h"

#include <errno.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int hm_wake_open(hm_wake *w) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  *w = (hm_wake){fd, fd};
  return fd < 0 ? -1 : 0;
}

int hm_wake_signal(hm_wake *w) {
  uint64_t one = 1;
  /* EAGAIN only at a counter of 2^64-2: readable anyway. */
  return write(w->wfd, &one, sizeof(one)) < 0 && errno != EAGAIN ? -1 : 0;
}

int hm_wake_drain(hm_wake *w) {
  uint64_t v;
  return read(w->rfd, &v, sizeof(v)) < 0 && errno != EAGAIN ? -1 : 0;
}

void hm_wake_close(hm_wake *w) {
  if (w->rfd >= 0)
    close(w->rfd);
  *w = HM_WAKE_NONE;
}

int hm_plat_socket(int domain, int type) {
  return socket(domain, type | SOCK_CLOEXEC, 0);
}

ssize_t hm_plat_send(int fd, const void *buf, size_t len) {
  return send(fd, buf, len, MSG_NOSIGNAL);
}

int hm_plat_pipe(int p[2]) {
  return pipe2(p, O_CLOEXEC);
}

int hm_plat_peer(int fd, uid_t *uid, pid_t *pid) {
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return -1;
  *uid = cr.uid;
  *pid = cr.pid;
  return 0;
}

int hm_plat_random(void *buf, size_t n) {
  return getrandom(buf, n, GRND_NONBLOCK) == (ssize_t)n ? 0 : -1;
}

int hm_plat_open_nosymlinks(const char *path, int flags) {
#ifdef SYS_openat2
  struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC),
                         .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
  return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
#else
  (void)path, (void)flags;
  errno = ENOSYS; /* kernels before 5.6 say so too */
  return -1;
#endif
}

int hm_plat_dirfd_path(int dirfd, char *buf, size_t size) {
  int n = snprintf(buf, size, "/proc/self/fd/%d", dirfd);
  if (n < 0 || (size_t)n >= size) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return 0;
}
