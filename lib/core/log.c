/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"
#include "guest_path.h"

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

/*
 * Rate limit, per call site (the format string's address): a guest that
 * makes one message repeat (bad agent lines, say) must not fill the log or
 * cost us a write per line. Each site gets a token bucket of LOG_BURST
 * messages refilled at LOG_PER_SEC; what it drops is counted and reported in
 * one line once tokens are back. Sites share nothing, so a flood of one kind
 * does not hide the others.
 */
#define LOG_BURST 20
#define LOG_PER_SEC 5
#define LOG_SITES 64

typedef struct log_site {
  const char *fmt;
  int level;
  int64_t last_ms;
  int64_t milli_tokens; /* 1000 per message */
  unsigned long suppressed;
} log_site;

static log_site sites[LOG_SITES];

static void site_refill(log_site *s, int64_t now) {
  s->milli_tokens += (now - s->last_ms) * LOG_PER_SEC;
  if (s->milli_tokens > LOG_BURST * 1000)
    s->milli_tokens = LOG_BURST * 1000;
  s->last_ms = now;
}

/* The bucket of fmt; a new site takes a free slot or the one quiet longest
 * (with nothing left to report). NULL only when every slot owes a report. */
static log_site *site_get(const char *fmt, int64_t now) {
  log_site *victim = NULL;
  for (size_t i = 0; i < LOG_SITES; i++) {
    if (sites[i].fmt == fmt)
      return &sites[i];
    if (!sites[i].suppressed && (!victim || sites[i].last_ms < victim->last_ms))
      victim = &sites[i];
  }
  if (victim)
    *victim = (log_site){fmt, 0, now, LOG_BURST * 1000, 0};
  return victim;
}

/* Guest text reaches messages through %s: a log line is shown on terminals
 * and parsed by line, so control characters, invalid UTF-8 and backslashes
 * become \xNN. Caller holds log_lock. */
static void emit(int level, const char *msg) {
  char *q = hm_guest_path_quote(msg);
  log_fn(level, q ? q : "(log message dropped: out of memory)", log_ud);
  free(q);
}

/* Reports the counts of sites whose tokens are back. Caller holds log_lock. */
static void report_suppressed(int64_t now) {
  for (size_t i = 0; i < LOG_SITES; i++) {
    log_site *s = &sites[i];
    if (!s->suppressed)
      continue;
    site_refill(s, now);
    if (s->milli_tokens < 1000 || s->level > log_max)
      continue;
    char *m = NULL;
    if (asprintf(&m, "%lu more messages like \"%.60s\" suppressed (at most %d a second)",
                 s->suppressed, s->fmt, LOG_PER_SEC) >= 0)
      emit(s->level, m);
    free(m);
    s->suppressed = 0;
    s->milli_tokens -= 1000;
  }
}

void hm_log(int level, const char *fmt, ...) {
  pthread_mutex_lock(&log_lock);
  if (!log_fn || level > log_max) {
    pthread_mutex_unlock(&log_lock);
    return;
  }
  int64_t now = hm_now_ms();
  report_suppressed(now);
  log_site *site = site_get(fmt, now);
  if (site) {
    site_refill(site, now);
    if (site->milli_tokens < 1000) {
      site->suppressed++;
      site->level = level < site->level || !site->level ? level : site->level;
      pthread_mutex_unlock(&log_lock);
      return;
    }
    site->milli_tokens -= 1000;
  }
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  int r = vasprintf(&msg, fmt, ap);
  va_end(ap);
  if (r >= 0)
    emit(level, msg);
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
