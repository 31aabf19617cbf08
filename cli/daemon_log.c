/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "daemon_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static char *log_path, *old_path; /* hotmountd.log, hotmountd.log.1 */
static long log_max = DAEMON_LOG_MAX;

/* Copies the first size bytes of the log to a new old_path. The log is
 * read through a second open of its path (ours is write-only), checked to
 * be the same file; the new file is made O_EXCL|O_NOFOLLOW after removing
 * the previous one, so nothing planted at either name is used. */
static int copy_old(const struct stat *st, off_t size) {
  int in = open(log_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat ist;
  if (in < 0)
    return -1;
  if (fstat(in, &ist) < 0 || ist.st_dev != st->st_dev || ist.st_ino != st->st_ino) {
    close(in);
    errno = ESTALE;
    return -1;
  }
  if (unlink(old_path) < 0 && errno != ENOENT) {
    close(in);
    return -1;
  }
  int out = open(old_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0) {
    close(in);
    return -1;
  }
  char buf[65536];
  off_t off = 0;
  while (off < size) {
    size_t want = size - off < (off_t)sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
    ssize_t n = pread(in, buf, want, off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (ssize_t w = 0; w < n;) {
      ssize_t k = write(out, buf + w, (size_t)(n - w));
      if (k < 0 && errno == EINTR)
        continue;
      if (k <= 0) {
        close(in);
        close(out);
        return -1;
      }
      w += k;
    }
    off += n;
  }
  close(in);
  close(out);
  return 0;
}

void daemon_log_check(void) {
  pthread_mutex_lock(&lock);
  struct stat st;
  if (log_fd < 0 || fstat(log_fd, &st) < 0 || st.st_size <= log_max) {
    pthread_mutex_unlock(&lock);
    return;
  }
  /* Lines written between the copy and the truncation are lost: the price
   * of keeping one file that every writer shares. */
  int saved = copy_old(&st, st.st_size) == 0;
  int e = errno;
  if (ftruncate(log_fd, 0) == 0) {
    char line[512];
    int n = snprintf(line, sizeof(line), "hotmountd: log reached %ld bytes; %s%s\n", log_max,
                     saved ? "the earlier lines are in hotmountd.log.1"
                           : "the earlier lines were dropped, hotmountd.log.1: ",
                     saved ? "" : strerror(e));
    if (n > 0 && n < (int)sizeof(line) && write(log_fd, line, (size_t)n) < 0) {
      /* nowhere left to say it */
    }
  }
  pthread_mutex_unlock(&lock);
}

static void *watch_main(void *arg) {
  (void)arg;
  struct timespec ts = {0, DAEMON_LOG_CHECK_MS * 1000000L};
  for (;;) {
    nanosleep(&ts, NULL);
    daemon_log_check();
  }
  return NULL;
}

void daemon_log_watch(int fd, const char *path) {
  pthread_mutex_lock(&lock);
  if (log_fd >= 0) {
    pthread_mutex_unlock(&lock);
    return;
  }
  const char *env = getenv("HOTMOUNTD_LOG_MAX");
  if (env && atol(env) >= 4096)
    log_max = atol(env);
  if (!(log_path = strdup(path)) || asprintf(&old_path, "%s.1", path) < 0) {
    free(log_path);
    log_path = old_path = NULL;
    pthread_mutex_unlock(&lock);
    return;
  }
  log_fd = fd;
  pthread_mutex_unlock(&lock);
  /* The watcher takes none of the daemon's signals (GLib waits for them). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int r = pthread_create(&t, NULL, watch_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0)
    dprintf(fd, "hotmountd: cannot watch the log size: %s\n", strerror(r));
  else
    pthread_detach(t);
}
