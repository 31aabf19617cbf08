/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A complete backend built outside the libhotmount tree, against the
 * installed headers and `pkg-config hotmount` only. Its "guest" is a
 * directory: attaching SHARE at /mnt/x makes the symbolic link
 * ROOT/mnt/x -> SHARE. Small as it is, it uses what every backend needs
 * from the library's backend API (include/hotmount/driver.h):
 *
 *   - hm_error_set / hm_error_set_class to fail an op, hm_log to log;
 *   - hm_strdup for what the library frees (check's reason);
 *   - a validate op owning its option rules;
 *   - HM_HOTPLUGGER_GUEST_MOUNTS: attach leaves the "guest" mounted and
 *     guest_umount takes it away, so no guest agent is involved;
 *   - check's typed results (HM_CHECK_WHOLE / BROKEN / GONE).
 *
 * It never calls malloc for anything the library frees, so the same
 * backend could be written in another language over the C ABI.
 */
#define _GNU_SOURCE
#include "link_backend.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct link_impl {
  char root[PATH_MAX];
} link_impl;

/* root + guest path (absolute and normalized by the library: no "..").
 * Attachments carry the guest path in their data, as the library keeps
 * it for them across restarts. */
static int link_path(char *out, size_t len, const link_impl *l, const char *guest) {
  return snprintf(out, len, "%s%s", l->root, guest) < (int)len ? 0 : -1;
}

/* mkdir -p of the parents of path, inside root only. */
static int make_parents(const link_impl *l, const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof(buf), "%s", path);
  for (char *p = buf + strlen(l->root) + 1; (p = strchr(p, '/')); p++) {
    *p = '\0';
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  return 0;
}

static const char *errno_name(int e) {
  switch (e) {
  case EEXIST: return "EEXIST";
  case ENOTDIR: return "ENOTDIR";
  case EACCES: return "EACCES";
  case ENOENT: return "ENOENT";
  default: return "EIO";
  }
}

static int link_validate(void *impl, const hm_mount_spec *spec, hm_error **err) {
  (void)impl;
  for (size_t i = 0; i < hm_mount_spec_get_option_count(spec); i++) {
    const char *key = hm_mount_spec_get_option_key(spec, i);
    const char *value = hm_mount_spec_get_option(spec, key);
    if (strcmp(key, "label") != 0)
      return hm_error_set(err, HM_E_INVALID, "link backend: unknown option \"%s\"", key);
    size_t n = strlen(value);
    if (n < 1 || n > 32 || strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789") != n)
      return hm_error_set(err, HM_E_INVALID,
                          "link backend: label \"%s\" must be 1 to 32 lower-case letters or "
                          "digits",
                          value);
  }
  if (hm_mount_spec_get_writable(spec))
    return hm_error_set(err, HM_E_UNSUPPORTED,
                        "link backend: a symbolic link cannot enforce read-only or writable; "
                        "only read-only requests are taken");
  return 0;
}

static int link_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  link_impl *l = impl;
  const char *host = hm_mount_spec_get_host_path(spec);
  const char *guest = hm_mount_spec_get_guest_path(spec);
  char path[PATH_MAX], tag[64];
  if (link_path(path, sizeof(path), l, guest) < 0)
    return hm_error_set(err, HM_E_INVALID, "link backend: %s%s is too long", l->root, guest);
  if (make_parents(l, path) < 0 || symlink(host, path) < 0) {
    int e = errno;
    /* The peer here is the host's file system: class OS, errno as detail. */
    return hm_error_set_class(err, e == EEXIST ? HM_E_EXISTS : HM_E_IO, HM_ECLASS_OS, errno_name(e),
                              "link backend: cannot link %s to %s: %s", path, host, strerror(e));
  }
  snprintf(tag, sizeof(tag), "link:%s", hm_attachment_get_id(att));
  int r = hm_attachment_set_tag(att, tag, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "guestPath", guest, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "hostPath", host, err);
  if (r < 0) {
    unlink(path); /* attach rolls itself back */
    return r;
  }
  hm_log(HM_LOG_INFO, "link backend: %s -> %s", path, host);
  return 0;
}

static int link_guest_umount(void *impl, hm_attachment *att, unsigned flags, hm_error **err) {
  link_impl *l = impl;
  (void)flags;
  const char *guest = hm_attachment_get_data(att, "guestPath");
  char path[PATH_MAX];
  if (!guest)
    return 0; /* cut short before anything was linked */
  if (link_path(path, sizeof(path), l, guest) < 0)
    return hm_error_set(err, HM_E_INVALID, "link backend: %s%s is too long", l->root, guest);
  if (unlink(path) < 0 && errno != ENOENT)
    return hm_error_set_class(err, HM_E_IO, HM_ECLASS_OS, errno_name(errno),
                              "link backend: cannot remove %s: %s", path, strerror(errno));
  return 0;
}

/* Nothing lives on the host side beyond the link, which guest_umount took. */
static int link_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)impl;
  (void)att;
  (void)err;
  return 0;
}

static int link_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  link_impl *l = impl;
  const char *guest = hm_attachment_get_data(att, "guestPath");
  const char *host = hm_attachment_get_data(att, "hostPath");
  char path[PATH_MAX], target[PATH_MAX];
  if (!guest || !host || link_path(path, sizeof(path), l, guest) < 0)
    return hm_error_set(err, HM_E_INVALID, "link backend: %s has no record",
                        hm_attachment_get_id(att));
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) {
    *reason = hm_strdup("its link is gone");
    return *reason ? HM_CHECK_GONE : HM_E_NOMEM;
  }
  target[n] = '\0';
  if (strcmp(target, host) != 0) {
    *reason = hm_strdup("its link points somewhere else now");
    return *reason ? HM_CHECK_BROKEN : HM_E_NOMEM;
  }
  return HM_CHECK_WHOLE;
}

static int link_describe(void *impl, hm_status *st, hm_error **err) {
  link_impl *l = impl;
  return hm_status_set(st, "linkRoot", l->root, err);
}

static void link_destroy(void *impl) {
  free(impl); /* ours: the library never frees impl itself */
}

int link_backend_new(hm_fs_hotplugger **out, const char *root, hm_error **err) {
  static const hm_fs_hotplugger_ops ops = {
      .struct_size = sizeof(hm_fs_hotplugger_ops),
      .name = "link",
      .types = 1u << HM_TYPE_VIRTIOFS,
      .attach = link_attach,
      .detach = link_detach,
      .destroy = link_destroy,
      .describe = link_describe,
      .check = link_check,
      .flags = HM_HOTPLUGGER_GUEST_MOUNTS,
      .guest_umount = link_guest_umount,
      .validate = link_validate,
  };
  link_impl *l = calloc(1, sizeof(*l));
  if (!l)
    return hm_error_set(err, HM_E_NOMEM, "link_backend_new: out of memory");
  if (!root || root[0] != '/' || snprintf(l->root, sizeof(l->root), "%s", root) >= PATH_MAX) {
    free(l);
    return hm_error_set(err, HM_E_INVALID, "link_backend_new: root must be an absolute path");
  }
  /* From here on the hotplugger owns l: ops.destroy frees it, also when
   * hm_fs_hotplugger_new fails. */
  return hm_fs_hotplugger_new(out, &ops, l, err);
}
