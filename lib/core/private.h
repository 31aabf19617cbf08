/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Library-internal helpers shared by every module. Not installed. */
#ifndef HM_CORE_PRIVATE_H
#define HM_CORE_PRIVATE_H

#include <hotmount/hotmount.h>
#include <stdarg.h>
#include <stdbool.h>

#define HM_PRIVATE __attribute__((visibility("hidden")))
#define HM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/*
 * hm_error_set: when err is non-NULL, stores a new error "func: message" in
 * *err (replacing nothing: *err must be NULL). Returns code, so callers write
 * `return HM_ERR(err, HM_E_INVALID, "bad %s", x);`.
 */
HM_PRIVATE int hm_error_set(hm_error **err, int code, const char *func, const char *fmt, ...)
    HM_PRINTF(4, 5);
/* Prefixes an existing error's message with "func: context: " and gives it
 * code (or makes a new error from the context). Returns code. */
HM_PRIVATE int hm_error_prefix(hm_error **err, int code, const char *func, const char *fmt, ...)
    HM_PRINTF(4, 5);
#define HM_ERR(err, code, ...) hm_error_set((err), (code), __func__, __VA_ARGS__)
#define HM_ERR_NOMEM(err) hm_error_set((err), HM_E_NOMEM, __func__, "out of memory")

HM_PRIVATE void hm_log(int level, const char *fmt, ...) HM_PRINTF(2, 3);
#define hm_debug(...) hm_log(HM_LOG_DEBUG, __VA_ARGS__)
#define hm_info(...) hm_log(HM_LOG_INFO, __VA_ARGS__)
#define hm_warn(...) hm_log(HM_LOG_WARNING, __VA_ARGS__)

/*
 * Crash-test hook: when the environment variable HOTMOUNT_FAULT equals
 * `point`, the process kills itself with SIGKILL right there. The e2e suite
 * uses it to prove that a daemon killed at any step of add or remove leaks
 * nothing after a restart. Costs one getenv when unset.
 */
HM_PRIVATE void hm_fault(const char *point);

/* pthread_create for the library's own threads: they start with every
 * signal blocked, so signals meant for the host program never land on
 * them. Returns pthread_create's result. */
#include <pthread.h>
HM_PRIVATE int hm_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Writes text plus a newline to path atomically (temporary file in the
 * same directory, fsync, rename, fsync of the directory); mode 0600. */
HM_PRIVATE int hm_write_file_atomic(const char *path, const char *text, hm_error **err);

/* Monotonic clock in milliseconds. */
HM_PRIVATE int64_t hm_now_ms(void);

/* A growable array of string pairs (key, value), used for options and
 * backend data. */
typedef struct hm_kv {
  char **keys;
  char **values;
  size_t n;
} hm_kv;
HM_PRIVATE int hm_kv_set(hm_kv *kv, const char *key, const char *value); /* value NULL: remove */
HM_PRIVATE const char *hm_kv_get(const hm_kv *kv, const char *key);
HM_PRIVATE int hm_kv_copy(hm_kv *dst, const hm_kv *src);
HM_PRIVATE void hm_kv_clear(hm_kv *kv);

/* A growable NULL-terminated string vector. */
typedef struct hm_strv {
  char **v;
  size_t n, cap;
} hm_strv;
HM_PRIVATE int hm_strv_push(hm_strv *s, const char *str);
HM_PRIVATE int hm_strv_pushf(hm_strv *s, const char *fmt, ...) HM_PRINTF(2, 3);
HM_PRIVATE char **hm_strv_steal(hm_strv *s); /* NULL-terminated; s is reset */
HM_PRIVATE void hm_strv_clear(hm_strv *s);

#endif
