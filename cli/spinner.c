/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The progress line shown while add/remove wait on the guest. */
#include "cli.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Fast answers should not flash a line that is gone before it can be read. */
#define FIRST_DRAW_MS 150
#define FRAME_MS 100

struct cli_spinner {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;
  char *message;
};

static void deadline_after(struct timespec *ts, long ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void *spin(void *arg) {
  static const char *const frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
  cli_spinner *s = arg;
  struct timespec start, next;
  clock_gettime(CLOCK_MONOTONIC, &start);
  deadline_after(&next, FIRST_DRAW_MS);
  int drawn = 0;
  pthread_mutex_lock(&s->lock);
  for (unsigned i = 0; !s->stop; i++) {
    /* A timed wait, not a sleep, so stop never waits for a frame to end. */
    if (pthread_cond_timedwait(&s->cond, &s->lock, &next) == 0 || s->stop)
      continue;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long secs = (long)(now.tv_sec - start.tv_sec);
    fprintf(stderr, "\r\033[K%s %s…", frames[i % 10], s->message);
    if (secs >= 1)
      fprintf(stderr, " %lds", secs);
    fflush(stderr);
    drawn = 1;
    deadline_after(&next, FRAME_MS);
  }
  pthread_mutex_unlock(&s->lock);
  if (drawn) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
  }
  return NULL;
}

cli_spinner *cli_spinner_start(const char *fmt, ...) {
  if (!isatty(STDERR_FILENO))
    return NULL;
  cli_spinner *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  va_list ap;
  va_start(ap, fmt);
  int r = vasprintf(&s->message, fmt, ap);
  va_end(ap);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&s->lock, NULL);
  if (r < 0 || pthread_create(&s->thread, NULL, spin, s) != 0) {
    /* No progress line is no reason to fail the command. */
    if (r >= 0)
      free(s->message);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
  }
  return s;
}

void cli_spinner_stop(cli_spinner *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->lock);
  s->stop = 1;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  pthread_cond_destroy(&s->cond);
  pthread_mutex_destroy(&s->lock);
  free(s->message);
  free(s);
}
