/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static hm_log_fn log_fn;
static int log_max = HM_LOG_INFO;
static void *log_ud;
static void (*log_destroy)(void *);

void hm_set_log_callback(hm_log_fn fn, int max_level, void *user_data, void (*destroy)(void *)) {
  pthread_mutex_lock(&log_lock);
  void *old_ud = log_ud;
  void (*old_destroy)(void *) = log_destroy;
  log_fn = fn;
  log_max = max_level;
  log_ud = user_data;
  log_destroy = destroy;
  pthread_mutex_unlock(&log_lock);
  if (old_destroy)
    old_destroy(old_ud);
}

void hm_log(int level, const char *fmt, ...) {
  pthread_mutex_lock(&log_lock);
  if (!log_fn || level > log_max) {
    pthread_mutex_unlock(&log_lock);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  int r = vasprintf(&msg, fmt, ap);
  va_end(ap);
  if (r >= 0)
    log_fn(level, msg, log_ud);
  pthread_mutex_unlock(&log_lock);
  free(msg);
}

int64_t hm_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *hm_version(void) {
  return HM_VERSION_STRING;
}

unsigned hm_version_number(void) {
  return HM_VERSION_MAJOR * 10000u + HM_VERSION_MINOR * 100u + HM_VERSION_PATCH;
}

void hm_fault(const char *point) {
  const char *want = getenv("HOTMOUNT_FAULT");
  if (want && strcmp(want, point) == 0) {
    hm_warn("HOTMOUNT_FAULT: killing myself at %s", point);
    kill(getpid(), SIGKILL);
  }
}
