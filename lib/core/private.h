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
 * hm_err_set: when err is non-NULL, stores a new error "func: message" in
 * *err (replacing nothing: *err must be NULL). Returns code, so callers write
 * `return HM_ERR(err, HM_E_INVALID, "bad %s", x);`.
 */
HM_PRIVATE int hm_err_set(hm_error **err, int code, const char *func, const char *fmt, ...)
    HM_PRINTF(4, 5);
/* Prefixes an existing error's message with "func: context: " and gives it
 * code (or makes a new error from the context). Returns code. */
HM_PRIVATE int hm_error_prefix(hm_error **err, int code, const char *func, const char *fmt, ...)
    HM_PRINTF(4, 5);
/* Same with a class (HM_ECLASS_*) and the peer's detail (copied; may be NULL). */
HM_PRIVATE int hm_err_setc(hm_error **err, int code, int klass, const char *detail,
                           const char *func, const char *fmt, ...) HM_PRINTF(6, 7);
/* The HM_ECLASS_* named name (hm_error_class_name's inverse); HM_ECLASS_NONE when unknown. */
HM_PRIVATE int hm_error_class_parse(const char *name);
#define HM_ERR(err, code, ...) hm_err_set((err), (code), __func__, __VA_ARGS__)
/* Inside the library the public hm_error_set (driver.h, for backends) takes
 * a literal format only: an old-style call hm_error_set(err, code, func,
 * "...") would otherwise compile and use func as the format. */
#define hm_error_set(err, code, fmt, ...) hm_error_set((err), (code), "" fmt, ##__VA_ARGS__)
#define HM_ERRC(err, code, klass, ...)                                                             \
  hm_err_setc((err), (code), (klass), NULL, __func__, __VA_ARGS__)
#define HM_ERR_NOMEM(err) hm_err_set((err), HM_E_NOMEM, __func__, "out of memory")

/* hm_log itself is public (driver.h), for backends. */
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
 * same directory, fsync, rename, fsync of the directory); mode 0600. The
 * temporary file is created O_EXCL|O_NOFOLLOW: nothing planted at its name
 * is ever written through. _at: name inside the held directory dirfd. */
HM_PRIVATE int hm_write_file_atomic(const char *path, const char *text, hm_error **err);
HM_PRIVATE int hm_write_file_atomic_at(int dirfd, const char *name, const char *text,
                                       hm_error **err);

/*
 * Instance directories (and any directory whose files we trust): owned by
 * our euid, writable by nobody else. hm_dir_check_private checks an open
 * one (HM_E_PERM with the problem and the fix). hm_dir_open_private creates
 * path 0700 when create is set and missing, opens it without following a
 * symlink and checks it; returns the fd (O_CLOEXEC) or a negative code.
 */
HM_PRIVATE int hm_dir_check_private(int dirfd, const char *path, hm_error **err);
HM_PRIVATE int hm_dir_open_private(const char *path, int create, hm_error **err);

/*
 * hm_unix_listen_at: a listening unix socket at name inside dirfd, without
 * the unlink/bind race: bound at a fresh name in a private 0700
 * subdirectory, then renamed onto name (which replaces whatever was there
 * in one step). The socket file is 0600 before it gets its name. Returns
 * the listening fd (O_CLOEXEC). hm_unix_listen: the same for a path.
 */
HM_PRIVATE int hm_unix_listen_at(int dirfd, const char *name, int backlog, hm_error **err);
HM_PRIVATE int hm_unix_listen(const char *path, int backlog, hm_error **err);

/*
 * Before trusting a unix socket we connect to (QMP, the agent channel):
 * hm_unix_path_check lstat()s path: a socket (not a symlink), owned by our
 * euid or root, not connectable by group or others (0 when missing: connect
 * reports that). hm_unix_peer_check: the connected fd's peer (SO_PEERCRED)
 * runs as our euid or root; `what` names it in the error. Both HM_E_PERM
 * when not.
 */
HM_PRIVATE int hm_unix_path_check(const char *path, hm_error **err);
HM_PRIVATE int hm_unix_peer_check(int fd, const char *what, hm_error **err);

/*
 * hm_open_nofollow: open(2) of an absolute path in which no component may
 * be a symlink (openat2 RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, or a
 * component-wise O_NOFOLLOW walk on older kernels); ELOOP when one is.
 * For paths resolved once (realpath) and trusted only while unchanged.
 */
HM_PRIVATE int hm_open_nofollow(const char *path, int flags);
/* The component-wise walk alone (what hm_open_nofollow falls back to). */
HM_PRIVATE int hm_open_nofollow_walk(const char *path, int flags);

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
