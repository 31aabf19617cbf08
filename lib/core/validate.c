/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Request validation: every bad input is refused here, before anything is
 * reserved, attached or started, so a refusal leaves nothing behind. */
#include "mount_internal.h"
#include "platform.h"
#include "guest_path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Host paths cross JSON, QEMU option strings and logs: they must be UTF-8 with
 * no control characters (a newline would split a log line or a QEMU option). */
static int check_text(const char *what, const char *p, hm_error **err) {
  size_t len = strlen(p);
  if (len == 0)
    return HM_ERR(err, HM_E_INVALID, "%s is empty", what);
  if (len >= PATH_MAX)
    return HM_ERR(err, HM_E_INVALID, "%s is too long (%zu bytes, limit %d)", what, len,
                  PATH_MAX - 1);
  size_t at;
  unsigned cp;
  switch (hm_text_scan(p, len, &at, &cp)) {
  case HM_TEXT_CONTROL:
    return HM_ERR(err, HM_E_INVALID, "%s contains a control character (byte %zu)", what, at);
  case HM_TEXT_BAD_UTF8:
    return HM_ERR(err, HM_E_INVALID, "%s is not valid UTF-8 (byte %zu)", what, at);
  default: break;
  }
  return 0;
}

static int check_host_path(hm_mount_spec *spec, hm_error **err) {
  const char *p = spec->host_path;
  if (!p)
    return HM_ERR(err, HM_E_INVALID, "host path is missing");
  int r = check_text("host path", p, err);
  if (r < 0)
    return r;
  char *real = realpath(p, NULL);
  if (!real) {
    int e = errno;
    if (e == ENOENT)
      return HM_ERR(err, HM_E_INVALID, "host path \"%s\" does not exist", p);
    if (e == ENOTDIR)
      return HM_ERR(err, HM_E_INVALID, "host path \"%s\" is not a directory", p);
    if (e == ENAMETOOLONG)
      return HM_ERR(err, HM_E_INVALID, "host path \"%s\" has a name that is too long", p);
    return HM_ERR(err, HM_E_INVALID, "host path \"%s\": %s", p, strerror(e));
  }
  /*
   * Resolved once: the user's own symlinks in the path they gave are
   * followed here, by realpath, and never again. The result is opened with
   * no symlink allowed in any component, so a component swapped for a
   * symlink since is caught, and the directory's identity (device, inode)
   * is what later opens of this path must find again
   * (hm_host_path_verify: attach, reconcile, re-attach).
   */
  struct stat st;
  int fd = hm_open_nofollow(real, HM_O_PATH | O_DIRECTORY);
  if (fd < 0 && errno == ENOTDIR) {
    r = HM_ERR(err, HM_E_INVALID, "host path \"%s\" is not a directory", p);
    goto out;
  }
  if (fd < 0) {
    int e = errno;
    r = HM_ERR(err, HM_E_INVALID,
               e == ELOOP ? "host path \"%s\" changed while it was checked (a component of %s "
                            "became a symbolic link)"
                          : "host path \"%s\" (%s) cannot be opened: %s",
               p, real, strerror(e));
    goto out;
  }
  int sr = fstat(fd, &st);
  close(fd);
  if (sr < 0 || !S_ISDIR(st.st_mode)) {
    r = HM_ERR(err, HM_E_INVALID, "host path \"%s\" is not a directory", p);
    goto out;
  }
  /* A symlink may lead to a name the checks above never saw. */
  if ((r = check_text("resolved host path", real, err)) < 0)
    goto out;
  static const char *const refused[] = {"/", "/proc", "/sys", "/dev", NULL};
  for (const char *const *f = refused; *f; f++) {
    size_t n = strlen(*f);
    if (strcmp(real, *f) == 0 || (n > 1 && strncmp(real, *f, n) == 0 && real[n] == '/')) {
      r = HM_ERR(err, HM_E_INVALID,
                 "host path \"%s\" resolves to \"%s\", which is not shareable (%s)", p, real,
                 n == 1 ? "the host's root" : "a kernel pseudo file system");
      goto out;
    }
  }
  free(spec->host_path);
  spec->host_path = real;
  spec->host_dev = (unsigned long long)st.st_dev;
  spec->host_ino = (unsigned long long)st.st_ino;
  return 0;
out:
  free(real);
  return r;
}

int hm_host_path_verify(const hm_mount_spec *spec, hm_error **err) {
  if (!spec || !spec->host_path)
    return HM_ERR(err, HM_E_INVALID, "no host path");
  if (!spec->host_dev && !spec->host_ino)
    return 0;
  int fd = hm_open_nofollow(spec->host_path, HM_O_PATH | O_DIRECTORY);
  struct stat st;
  if (fd < 0) {
    int e = errno;
    return HM_ERR(err, HM_E_INVALID,
                  e == ELOOP ? "host path %s now has a symbolic link in it: the shared directory "
                               "was swapped; refusing to serve what it points to"
                             : "host path %s cannot be opened any more: %s",
                  spec->host_path, strerror(e));
  }
  int sr = fstat(fd, &st);
  close(fd);
  if (sr < 0)
    return HM_ERR(err, HM_E_INVALID, "host path %s: %s", spec->host_path, strerror(errno));
  if ((unsigned long long)st.st_dev != spec->host_dev ||
      (unsigned long long)st.st_ino != spec->host_ino)
    return HM_ERR(err, HM_E_INVALID,
                  "host path %s is now another directory (device %llu inode %llu, shared was "
                  "device %llu inode %llu): it was swapped; refusing to serve it",
                  spec->host_path, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                  spec->host_dev, spec->host_ino);
  return 0;
}

static int check_guest_path(hm_mount_spec *spec, hm_error **err) {
  if (!spec->guest_path)
    return HM_ERR(err, HM_E_INVALID, "guest path is missing");
  char *norm = NULL;
  int r = hm_guest_path_normalize(&norm, spec->guest_path, err);
  if (r < 0)
    return r;
  if ((r = hm_guest_path_check(norm, err)) < 0) {
    free(norm);
    return r;
  }
  free(spec->guest_path);
  spec->guest_path = norm;
  return 0;
}

int hm_option_rules_check(const hm_mount_spec *spec, const hm_option_rule *rules, size_t n,
                          hm_error **err) {
  const char *tname = hm_mount_type_name(spec->type);
  for (size_t k = 0; k < spec->options.n; k++) {
    const char *key = spec->options.keys[k], *value = spec->options.values[k];
    const hm_option_rule *rule = NULL;
    for (size_t i = 0; i < n && !rule; i++)
      if (rules[i].type == spec->type && strcmp(rules[i].key, key) == 0)
        rule = &rules[i];
    if (!rule)
      return HM_ERR(err, HM_E_INVALID, "unknown option \"%s\" for %s mounts", key, tname);
    if (!rule->values) {
      char *end;
      errno = 0;
      unsigned long v = strtoul(value, &end, 10);
      if (!*value || *end || errno || v < rule->min || v > rule->max)
        return HM_ERR(err, HM_E_INVALID, "option %s=\"%s\" for %s must be a number from %lu to %lu",
                      key, value, tname, rule->min, rule->max);
      continue;
    }
    const char *const *v = rule->values;
    while (*v && strcmp(*v, value) != 0)
      v++;
    if (!*v)
      return HM_ERR(err, HM_E_INVALID, "option %s=\"%s\" is not valid for %s", key, value, tname);
  }
  return 0;
}

int hm_mount_spec_validate(hm_mount_spec *spec, hm_error **err) {
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  if (!hm_mount_type_name(spec->type))
    return HM_ERR(err, HM_E_INVALID, "unknown mount type %d", spec->type);
  int r;
  if ((r = check_guest_path(spec, err)) < 0 || (r = check_host_path(spec, err)) < 0)
    return r;
  /* Which options a type takes is the backend's rule (its validate op,
   * called by hm_instance_add); here only that they are text. */
  for (size_t i = 0; i < spec->options.n; i++)
    if ((r = check_text("option", spec->options.values[i], err)) < 0)
      return r;
  return 0;
}
