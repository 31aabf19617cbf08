/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Our own children, by pidfd. The library runs inside someone else's
 * process: SIGCHLD may be ignored there (the kernel then reaps every child
 * itself, and waitpid answers ECHILD), or a GLib child watch or a SIGCHLD
 * handler may wait for the embedder's own children. So a child is never
 * waited for by anything but its pidfd (waitid P_PIDFD: exactly that
 * process, never a recycled pid, never the embedder's), and ECHILD means
 * "exited, status unknown", not an error.
 *
 * Helpers are started here (hm_spawn) and stopped or checked much later, by
 * pid (the pid is what the state file keeps). The pidfd of each helper is
 * kept in a process-wide table until it is reaped, so hm_child_* can tell
 * our own child from a pid known only from the state file.
 */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int hm_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, 0);
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

int hm_pidfd_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
  (void)pidfd, (void)sig;
  errno = ENOSYS;
  return -1;
#endif
}

int hm_pidfd_wait(int pidfd, int timeout_ms) {
  struct pollfd p = {.fd = pidfd, .events = POLLIN};
  int64_t deadline = hm_now_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline - hm_now_ms();
    int n = poll(&p, 1, timeout_ms < 0 ? -1 : left > 0 ? (int)left : 0);
    if (n > 0)
      return 1;
    if (n == 0 || errno != EINTR)
      return 0;
  }
}

pid_t hm_fork_pidfd(int *out_pidfd) {
  /* The child waits for one byte before it runs: until the parent holds its
   * pidfd it cannot exit, so with SIGCHLD ignored it cannot be reaped and
   * its pid handed to another process before pidfd_open. */
  int go[2];
  *out_pidfd = -1;
  if (pipe2(go, O_CLOEXEC) < 0)
    return -1;
  pid_t pid = fork();
  if (pid == 0) {
    char c;
    close(go[1]);
    while (read(go[0], &c, 1) < 0 && errno == EINTR)
      ;
    close(go[0]);
    return 0;
  }
  int e = errno;
  close(go[0]);
  if (pid > 0) {
    *out_pidfd = hm_pidfd_open(pid);
    while (write(go[1], "g", 1) < 0 && errno == EINTR)
      ;
  }
  close(go[1]);
  errno = e;
  return pid;
}

int hm_pidfd_reap(int pidfd, pid_t pid, int *status) {
  siginfo_t si = {0};
  *status = -1;
  int r = -1;
  if (pidfd >= 0) {
    while ((r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG)) < 0 &&
           errno == EINTR)
      ;
  }
  /* Without a pidfd, or before Linux 5.4 (pidfd_open but no P_PIDFD:
   * EINVAL): our own pid, which the caller has not reaped, never -1. */
  if (pidfd < 0 || (r < 0 && errno == EINVAL)) {
    while ((r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG)) < 0 && errno == EINTR)
      ;
  }
  if (r < 0)
    /* ECHILD: SIGCHLD is ignored in this process (the kernel reaped it) or
     * the embedder reaped it; either way it is gone. */
    return errno == ECHILD ? 1 : -1;
  if (si.si_pid == 0)
    return 0; /* still running */
  /* The wait status waitpid would have given. */
  if (si.si_code == CLD_EXITED)
    *status = (si.si_status & 0xff) << 8;
  else
    *status = (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
  return 1;
}

int hm_pidfd_wait_exit(int pidfd, pid_t pid, int *status) {
  if (pidfd >= 0)
    hm_pidfd_wait(pidfd, -1);
  int r;
  /* Without a pidfd: poll our own pid (a blocking wait on it could, with
   * SIGCHLD ignored, sleep until some other child of ours exits). */
  while ((r = hm_pidfd_reap(pidfd, pid, status)) == 0) {
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
  }
  return r;
}

/* --- the table of helpers we started ------------------------------------ */

typedef struct kid {
  pid_t pid;
  int pidfd;
} kid;

static pthread_mutex_t kids_lock = PTHREAD_MUTEX_INITIALIZER;
static kid *kids;
static size_t nkids, capkids;

int hm_child_add(pid_t pid, int pidfd) {
  pthread_mutex_lock(&kids_lock);
  if (nkids == capkids) {
    size_t cap = capkids ? capkids * 2 : 8;
    kid *k = realloc(kids, cap * sizeof(*k));
    if (!k) {
      pthread_mutex_unlock(&kids_lock);
      return HM_E_NOMEM;
    }
    kids = k, capkids = cap;
  }
  kids[nkids++] = (kid){pid, pidfd};
  pthread_mutex_unlock(&kids_lock);
  return 0;
}

/* Index of pid in the table, or -1. Under kids_lock. */
static ssize_t kid_find(pid_t pid) {
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].pid == pid)
      return (ssize_t)i;
  return -1;
}

/* A duplicate of pid's pidfd (so the table may drop it meanwhile) in *out:
 * 1 when pid is ours (*out may be -1 on kernels without pidfds), 0 when not. */
static int kid_pidfd(pid_t pid, int *out) {
  pthread_mutex_lock(&kids_lock);
  ssize_t i = kid_find(pid);
  *out = i >= 0 && kids[i].pidfd >= 0 ? fcntl(kids[i].pidfd, F_DUPFD_CLOEXEC, 3) : -1;
  pthread_mutex_unlock(&kids_lock);
  return i >= 0;
}

static void kid_drop(pid_t pid) {
  pthread_mutex_lock(&kids_lock);
  ssize_t i = kid_find(pid);
  if (i >= 0) {
    if (kids[i].pidfd >= 0)
      close(kids[i].pidfd);
    kids[i] = kids[--nkids];
  }
  if (!nkids) {
    free(kids);
    kids = NULL;
    capkids = 0;
  }
  pthread_mutex_unlock(&kids_lock);
}

int hm_child_exited(pid_t pid, int timeout_ms, int *status) {
  int st, fd;
  if (!status)
    status = &st;
  *status = -1;
  if (pid <= 0 || !kid_pidfd(pid, &fd))
    return 0;
  int r;
  if (fd >= 0) {
    hm_pidfd_wait(fd, timeout_ms);
    r = hm_pidfd_reap(fd, pid, status);
  } else {
    int64_t deadline = hm_now_ms() + timeout_ms;
    while ((r = hm_pidfd_reap(-1, pid, status)) == 0 &&
           (timeout_ms < 0 || hm_now_ms() < deadline)) {
      struct timespec ts = {0, 10 * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  if (fd >= 0)
    close(fd);
  if (r == 1)
    kid_drop(pid);
  return r == 1;
}

int hm_child_signal(pid_t pid, int sig) {
  int fd;
  if (pid <= 0 || !kid_pidfd(pid, &fd))
    return -1;
  /* Not yet reaped (the table still holds it), so pid is still this child
   * even without a pidfd. */
  int r = fd >= 0 ? hm_pidfd_signal(fd, sig) : kill(pid, sig);
  if (fd >= 0)
    close(fd);
  return r;
}

int hm_child_is_ours(pid_t pid) {
  pthread_mutex_lock(&kids_lock);
  int r = pid > 0 && kid_find(pid) >= 0;
  pthread_mutex_unlock(&kids_lock);
  return r;
}
