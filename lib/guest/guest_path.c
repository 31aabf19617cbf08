/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "guest/guest_path.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid:
 * overlong forms, surrogates and code points above U+10FFFF are refused, since
 * each is a way to smuggle a different byte string past a comparison.
 */
static size_t utf8_seq(const unsigned char *s, unsigned *cp) {
  unsigned c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len;
  unsigned min;
  if ((c & 0xe0) == 0xc0) {
    len = 2, min = 0x80, c &= 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, min = 0x800, c &= 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, min = 0x10000, c &= 0x07;
  } else {
    return 0;
  }
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    c = (c << 6) | (s[i] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  *cp = c;
  return len;
}

static int is_control(unsigned cp) {
  return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

int hm_text_scan(const char *s, size_t len, size_t *at, unsigned *cp) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq(u + i, cp);
    if (n == 0 || i + n > len) {
      *at = i;
      return HM_TEXT_BAD_UTF8;
    }
    if (is_control(*cp)) {
      *at = i;
      return HM_TEXT_CONTROL;
    }
    i += n;
  }
  return 0;
}

char *hm_guest_path_quote(const char *s) {
  size_t n = strlen(s);
  /* Worst case: every byte becomes \xNN. */
  char *q = malloc(n * 4 + 1);
  if (!q)
    return NULL;
  char *p = q;
  const unsigned char *u = (const unsigned char *)s;
  while (*u) {
    unsigned cp;
    size_t len = utf8_seq(u, &cp);
    if (len == 0 || is_control(cp) || *u == '\\') {
      size_t k = len ? len : 1;
      for (size_t i = 0; i < k; i++)
        p += sprintf(p, "\\x%02x", u[i]);
      u += k;
    } else {
      memcpy(p, u, len);
      p += len;
      u += len;
    }
  }
  *p = '\0';
  return q;
}

/* Error with the offending path quoted; quoting can only fail on OOM. */
#define PATH_ERR(err, path, fmt, ...)                                                              \
  do {                                                                                             \
    char *q_ = hm_guest_path_quote(path);                                                          \
    int r_ = q_ ? hm_err_set((err), HM_E_INVALID, func, "guest path '%s' " fmt, q_, ##__VA_ARGS__) \
                : hm_err_set((err), HM_E_NOMEM, func, "out of memory");                            \
    free(q_);                                                                                      \
    return r_;                                                                                     \
  } while (0)

int hm_guest_path_normalize(char **out, const char *path, hm_error **err) {
  static const char func[] = "hm_guest_path_normalize";
  *out = NULL;
  if (!path || !*path)
    return hm_err_set(err, HM_E_INVALID, func, "guest path is empty");
  size_t n = strlen(path);
  if (n >= PATH_MAX)
    return hm_err_set(err, HM_E_INVALID, func,
                      "guest path is too long (%zu bytes, the limit is %d)", n, PATH_MAX - 1);
  if (path[0] != '/')
    PATH_ERR(err, path, "is not absolute");
  size_t at;
  unsigned cp;
  switch (hm_text_scan(path, n, &at, &cp)) {
  case HM_TEXT_BAD_UTF8: PATH_ERR(err, path, "is not valid UTF-8 (at byte %zu)", at);
  case HM_TEXT_CONTROL:
    PATH_ERR(err, path, "contains a control character (U+%04X at byte %zu)", cp, at);
  default: break;
  }

  char *res = malloc(n + 2);
  if (!res)
    return HM_ERR_NOMEM(err);
  size_t o = 0;
  const char *p = path;
  while (*p) {
    while (*p == '/')
      p++;
    const char *e = strchrnul(p, '/');
    size_t clen = (size_t)(e - p);
    if (clen == 0 || (clen == 1 && p[0] == '.')) {
      p = e;
      continue;
    }
    if (clen == 2 && p[0] == '.' && p[1] == '.') {
      free(res);
      PATH_ERR(err, path, "contains a '..' component");
    }
    if (clen > NAME_MAX) {
      free(res);
      PATH_ERR(err, path, "has a component of %zu bytes (the limit is %d)", clen, NAME_MAX);
    }
    res[o++] = '/';
    memcpy(res + o, p, clen);
    o += clen;
    p = e;
  }
  if (o == 0)
    res[o++] = '/';
  res[o] = '\0';
  *out = res;
  return 0;
}

/* Their whole subtree belongs to the OS: mounting anywhere in it is refused. */
static const char *const system_trees[] = {
    "/proc", "/sys", "/dev",   "/etc",   "/usr",    "/boot", "/bin",
    "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/run",
};

/* Shadowing these hides the guest's data; their subdirectories are the normal
 * place for user mounts (/mnt/x, /home/u/src), so only the exact path is refused. */
static const char *const system_dirs[] = {
    "/var", "/tmp", "/home", "/root", "/opt", "/srv", "/mnt", "/media",
};

int hm_guest_path_check(const char *normalized, hm_error **err) {
  static const char func[] = "hm_guest_path_check";
  if (!normalized || normalized[0] != '/')
    return hm_err_set(err, HM_E_INVALID, func, "guest path is not absolute");
  if (strcmp(normalized, "/") == 0)
    PATH_ERR(err, normalized, "is the root directory; refusing to mount over it");
  for (size_t i = 0; i < sizeof(system_trees) / sizeof(system_trees[0]); i++) {
    size_t l = strlen(system_trees[i]);
    if (strncmp(normalized, system_trees[i], l) == 0 &&
        (normalized[l] == '\0' || normalized[l] == '/'))
      PATH_ERR(err, normalized, "is a system path (at or below %s); refusing to mount there",
               system_trees[i]);
  }
  for (size_t i = 0; i < sizeof(system_dirs) / sizeof(system_dirs[0]); i++)
    if (strcmp(normalized, system_dirs[i]) == 0)
      PATH_ERR(err, normalized,
               "is a system directory; refusing to mount over it (a subdirectory is fine)");
  return 0;
}
