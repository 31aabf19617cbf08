/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bind backend. Attach plugs nothing: it finds the boot-time share that
 * holds the mount's host path and hands the guest agent, as the tag, the
 * directory that path is in the guest (the share's guest directory plus the
 * host path's tail). Detach has nothing to undo. The table of shares is fixed
 * at creation, so no lock is needed.
 */
#include "driver_internal.h"
#include "guest_path.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct bind_share {
  char *host;  /* canonical */
  char *guest; /* normal, absolute */
} bind_share;

typedef struct bind_impl {
  size_t n;
  bind_share *shares;
} bind_impl;

static void bind_destroy(void *impl) {
  bind_impl *b = impl;
  if (!b)
    return;
  for (size_t i = 0; i < b->n; i++) {
    free(b->shares[i].host);
    free(b->shares[i].guest);
  }
  free(b->shares);
  free(b);
}

/* inner is outer or below it (both canonical). */
static int path_within(const char *inner, const char *outer) {
  size_t n = strlen(outer);
  if (n == 1)
    return 1;
  return strncmp(inner, outer, n) == 0 && (inner[n] == '\0' || inner[n] == '/');
}

static int bind_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  bind_impl *b = impl;
  const char *host = hm_mount_spec_get_host_path(spec);
  const bind_share *best = NULL;
  for (size_t i = 0; host && i < b->n; i++)
    if (path_within(host, b->shares[i].host) &&
        (!best || strlen(b->shares[i].host) > strlen(best->host)))
      best = &b->shares[i];
  if (!best) {
    if (!b->n)
      return hm_err_set(err, HM_E_INVALID, "hm_bind_attach",
                        "host path %s is not inside a boot-time share of this VM: none is "
                        "declared (hotmountd --boot-share HOSTDIR=GUESTDIR); a bind mount "
                        "can only show what the guest already has, use --type virtiofs or 9p "
                        "to share a new directory",
                        host ? host : "(none)");
    char list[1024] = "";
    for (size_t i = 0; i < b->n; i++) {
      size_t l = strlen(list);
      if (l + 8 >= sizeof(list))
        break;
      snprintf(list + l, sizeof(list) - l, "%s%s (guest %s)", i ? ", " : "", b->shares[i].host,
               b->shares[i].guest);
    }
    return hm_err_set(err, HM_E_INVALID, "hm_bind_attach",
                      "host path %s is not inside a boot-time share of this VM (shares: %s); "
                      "a bind mount can only show what the guest already has, use --type "
                      "virtiofs or 9p to share a new directory",
                      host, list);
  }
  const char *tail = host + (strcmp(best->host, "/") == 0 ? 0 : strlen(best->host));
  char *src = NULL, *norm = NULL;
  if (asprintf(&src, "%s%s", best->guest, tail) < 0)
    return hm_err_set(err, HM_E_NOMEM, "hm_bind_attach", "out of memory");
  int r = hm_guest_path_normalize(&norm, src, err);
  free(src);
  if (r < 0)
    return hm_error_prefix(err, r, "hm_bind_attach", "the guest directory for %s", host);
  r = hm_attachment_set_tag(att, norm, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "share", best->host, err);
  free(norm);
  return r;
}

static int bind_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)impl, (void)att, (void)err;
  return 0; /* the guest unmount was all there was */
}

/* Nothing on the host can break: the guest side is watched by the library. */
static int bind_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  (void)impl, (void)att, (void)reason, (void)err;
  return 1;
}

static int bind_describe(void *impl, hm_status *st, hm_error **err) {
  bind_impl *b = impl;
  char n[32];
  snprintf(n, sizeof(n), "%zu", b->n);
  int r = hm_status_set(st, "bootShares", n, err);
  for (size_t i = 0; r == 0 && i < b->n; i++) {
    char key[48];
    snprintf(key, sizeof(key), "bootShare.%zu", i);
    char *v = NULL;
    if (asprintf(&v, "%s=%s", b->shares[i].host, b->shares[i].guest) < 0)
      return hm_err_set(err, HM_E_NOMEM, "hm_bind_describe", "out of memory");
    r = hm_status_set(st, key, v, err);
    free(v);
  }
  return r;
}

int hm_bind_hotplugger_new(hm_fs_hotplugger **out, const char *const *host_dirs,
                           const char *const *guest_dirs, size_t n, hm_error **err) {
  static const char *func = "hm_bind_hotplugger_new";
  if (!out || (n && (!host_dirs || !guest_dirs)))
    return hm_err_set(err, HM_E_INVALID, func, "out and the share arrays must not be NULL");
  *out = NULL;
  bind_impl *b = calloc(1, sizeof(*b));
  if (!b || (n && !(b->shares = calloc(n, sizeof(*b->shares))))) {
    bind_destroy(b);
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  }
  int r = 0;
  for (size_t i = 0; i < n && r == 0; i++) {
    const char *h = host_dirs[i], *g = guest_dirs[i];
    struct stat st;
    if (!h || !g)
      r = hm_err_set(err, HM_E_INVALID, func,
                     "share %zu: a host and a guest directory are "
                     "needed",
                     i);
    else if (h[0] != '/')
      r = hm_err_set(err, HM_E_INVALID, func, "share host directory %s is not absolute", h);
    else if (!(b->shares[i].host = realpath(h, NULL)) || stat(b->shares[i].host, &st) < 0)
      r = hm_err_set(err, HM_E_INVALID, func, "share host directory %s: %s", h, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
      r = hm_err_set(err, HM_E_INVALID, func, "share host directory %s is not a directory", h);
    else if ((r = hm_guest_path_normalize(&b->shares[i].guest, g, err)) < 0)
      r = hm_error_prefix(err, r, func, "share guest directory");
    else if (strcmp(b->shares[i].guest, g) != 0)
      r = hm_err_set(err, HM_E_INVALID, func,
                     "share guest directory %s is not in normal form (say %s)", g,
                     b->shares[i].guest);
    b->n = i + 1;
  }
  if (r < 0) {
    bind_destroy(b);
    return r;
  }
  static const hm_fs_hotplugger_ops ops = {
      .struct_size = sizeof(hm_fs_hotplugger_ops),
      .name = "bind",
      .types = 1u << HM_TYPE_BIND,
      .attach = bind_attach,
      .detach = bind_detach,
      .destroy = bind_destroy,
      .describe = bind_describe,
      .check = bind_check,
  };
  return hm_fs_hotplugger_new(out, &ops, b, err);
}
