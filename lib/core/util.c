/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <libgen.h>
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

int hm_write_file_atomic(const char *path, const char *text, hm_error **err) {
  char *tmp = NULL;
  int fd = -1, r = 0;
  if (asprintf(&tmp, "%s.tmp-%d", path, (int)getpid()) < 0) {
    tmp = NULL;
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    r = HM_ERR(err, -errno, "cannot write %s: %s", tmp, strerror(errno));
    goto out;
  }
  if ((r = write_all(fd, text, strlen(text))) < 0 || (r = write_all(fd, "\n", 1)) < 0 ||
      (fsync(fd) < 0 && (r = -errno))) {
    r = HM_ERR(err, r, "cannot write %s: %s", tmp, strerror(-r));
    goto out;
  }
  close(fd);
  fd = -1;
  if (rename(tmp, path) < 0) {
    r = HM_ERR(err, -errno, "cannot rename %s: %s", tmp, strerror(errno));
    goto out;
  }
  free(tmp);
  tmp = NULL;
  /* The rename itself must reach the disk too. */
  char *dup = strdup(path);
  if (dup) {
    int dfd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(dup);
  }
out:
  if (fd >= 0)
    close(fd);
  if (tmp) {
    unlink(tmp);
    free(tmp);
  }
  return r;
}

int hm_thread_create(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = pthread_create(t, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}
