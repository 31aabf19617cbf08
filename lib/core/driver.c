/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fs_hotplugger wrapper: versioned vtable copy and attachment records. */
#include "driver_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct hm_fs_hotplugger {
  hm_fs_hotplugger_ops ops;
  void *impl;
};

void *hm_alloc(size_t n, size_t size) {
  /* Checked here: a sanitizer's calloc reports an overflow as a bug. */
  if (size && n > SIZE_MAX / size)
    return NULL;
  return calloc(n ? n : 1, size ? size : 1);
}

char *hm_strdup(const char *s) {
  return s ? strdup(s) : NULL;
}

int hm_attachment_new(hm_attachment **out, const char *id, hm_error **err) {
  if (!out || !id || !*id)
    return HM_ERR(err, HM_E_INVALID, "out and id must not be NULL or empty");
  hm_attachment *a = calloc(1, sizeof(*a));
  if (!a || !(a->id = strdup(id))) {
    free(a);
    return HM_ERR_NOMEM(err);
  }
  *out = a;
  return 0;
}

void hm_attachment_free(hm_attachment *att) {
  if (!att)
    return;
  free(att->id);
  free(att->tag);
  free(att->retired);
  hm_kv_clear(&att->data);
  free(att);
}

hm_attachment *hm_attachment_copy(const hm_attachment *a) {
  hm_attachment *c = NULL;
  if (hm_attachment_new(&c, a->id, NULL) < 0)
    return NULL;
  c->type = a->type;
  if ((a->tag && hm_attachment_set_tag(c, a->tag, NULL) < 0) ||
      (a->retired && !(c->retired = strdup(a->retired))) || hm_kv_copy(&c->data, &a->data) < 0) {
    hm_attachment_free(c);
    return NULL;
  }
  return c;
}

const char *hm_attachment_get_id(const hm_attachment *att) {
  return att ? att->id : NULL;
}

int hm_attachment_set_tag(hm_attachment *att, const char *tag, hm_error **err) {
  if (!att || !tag)
    return HM_ERR(err, HM_E_INVALID, "att and tag must not be NULL");
  char *t = strdup(tag);
  if (!t)
    return HM_ERR_NOMEM(err);
  free(att->tag);
  att->tag = t;
  return 0;
}

const char *hm_attachment_get_tag(const hm_attachment *att) {
  return att ? att->tag : NULL;
}

int hm_attachment_set_data(hm_attachment *att, const char *key, const char *value, hm_error **err) {
  if (!att || !key)
    return HM_ERR(err, HM_E_INVALID, "att and key must not be NULL");
  return hm_kv_set(&att->data, key, value) < 0 ? HM_ERR_NOMEM(err) : 0;
}

const char *hm_attachment_get_data(const hm_attachment *att, const char *key) {
  return att && key ? hm_kv_get(&att->data, key) : NULL;
}

int hm_attachment_set_type(hm_attachment *att, int type, hm_error **err) {
  if (!att)
    return HM_ERR(err, HM_E_INVALID, "att is NULL");
  if (!hm_mount_type_name(type))
    return HM_ERRC(err, HM_E_INVALID, HM_ECLASS_INPUT, "%d is not an HM_TYPE_* value", type);
  att->type = type;
  return 0;
}

int hm_attachment_get_type(const hm_attachment *att) {
  return att ? att->type : 0;
}

int hm_attachment_set_retired(hm_attachment *att, const char *reason, hm_error **err) {
  if (!att || !reason || !*reason)
    return HM_ERR(err, HM_E_INVALID, "att and reason must not be NULL or empty");
  char *copy = strdup(reason);
  if (!copy)
    return HM_ERR_NOMEM(err);
  free(att->retired);
  att->retired = copy;
  return 0;
}

const char *hm_attachment_get_retired(const hm_attachment *att) {
  return att ? att->retired : NULL;
}

int hm_fs_hotplugger_new(hm_fs_hotplugger **out, const hm_fs_hotplugger_ops *ops, void *impl,
                         hm_error **err) {
  int r = 0;
  hm_fs_hotplugger *hp = NULL;
  if (!out || !ops) {
    r = HM_ERR(err, HM_E_INVALID, "out and ops must not be NULL");
    goto fail;
  }
  if (ops->struct_size < offsetof(hm_fs_hotplugger_ops, free_slots)) {
    r = HM_ERR(err, HM_E_INVALID, "ops->struct_size %zu is too small", ops->struct_size);
    goto fail;
  }
  if (!ops->attach || !ops->detach || !ops->name) {
    r = HM_ERR(err, HM_E_INVALID, "ops must provide name, attach and detach");
    goto fail;
  }
  if (!(hp = calloc(1, sizeof(*hp)))) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  /* Older backends pass a smaller struct: copy what they know, zero the rest. */
  memcpy(&hp->ops, ops, ops->struct_size < sizeof(hp->ops) ? ops->struct_size : sizeof(hp->ops));
  hp->ops.struct_size = sizeof(hp->ops);
  hp->impl = impl;
  *out = hp;
  return 0;
fail:
  if (ops && ops->struct_size >= offsetof(hm_fs_hotplugger_ops, destroy) + sizeof(ops->destroy) &&
      ops->destroy)
    ops->destroy(impl);
  return r;
}

void hm_fs_hotplugger_free(hm_fs_hotplugger *hp) {
  if (!hp)
    return;
  if (hp->ops.destroy)
    hp->ops.destroy(hp->impl);
  free(hp);
}

const char *hm_fs_hotplugger_get_name(const hm_fs_hotplugger *hp) {
  return hp ? hp->ops.name : NULL;
}

int hm_fs_hotplugger_supports(const hm_fs_hotplugger *hp, int type) {
  return hp && type > 0 && type < 32 && (hp->ops.types & (1u << type));
}

int hm_fs_hotplugger_attach(hm_fs_hotplugger *hp, const hm_mount_spec *spec, hm_attachment *att,
                            hm_error **err) {
  int r = hp->ops.attach(hp->impl, spec, att, err);
  if (r < 0)
    return r;
  if (!att->tag) {
    hp->ops.detach(hp->impl, att, NULL);
    return HM_ERR(err, HM_E_INTERNAL, "backend %s attached without setting a tag", hp->ops.name);
  }
  return 0;
}

int hm_fs_hotplugger_detach(hm_fs_hotplugger *hp, hm_attachment *att, hm_error **err) {
  return hp->ops.detach(hp->impl, att, err);
}

int hm_fs_hotplugger_free_slots(hm_fs_hotplugger *hp, int type, hm_error **err) {
  if (!hp->ops.free_slots)
    return HM_ERR(err, HM_E_UNSUPPORTED, "backend %s does not report free slots", hp->ops.name);
  return hp->ops.free_slots(hp->impl, type, err);
}

int hm_fs_hotplugger_describe(hm_fs_hotplugger *hp, hm_status *st, hm_error **err) {
  return hp->ops.describe ? hp->ops.describe(hp->impl, st, err) : 0;
}

int hm_fs_hotplugger_check(hm_fs_hotplugger *hp, hm_attachment *att, char **reason, int *gone,
                           hm_error **err) {
  *reason = NULL;
  if (gone)
    *gone = 0;
  int r = hp->ops.check ? hp->ops.check(hp->impl, att, reason, err) : HM_CHECK_WHOLE;
  if (r == HM_CHECK_GONE) {
    if (gone)
      *gone = 1;
    r = HM_CHECK_BROKEN;
  } else if (r > HM_CHECK_WHOLE) {
    /* Not a result the vtable defines: could not tell. */
    free(*reason);
    *reason = NULL;
    r = HM_ERR(err, HM_E_INTERNAL, "backend %s: check returned %d", hp->ops.name, r);
  }
  return r;
}

int hm_fs_hotplugger_validate(hm_fs_hotplugger *hp, const hm_mount_spec *spec, hm_error **err) {
  if (!hp->ops.validate) {
    const char *key = hm_mount_spec_get_option_key(spec, 0);
    return key ? HM_ERRC(err, HM_E_INVALID, HM_ECLASS_INPUT,
                         "unknown option \"%s\" for %s mounts (backend %s takes no options)", key,
                         hm_mount_type_name(hm_mount_spec_get_type(spec)), hp->ops.name)
               : 0;
  }
  int r = hp->ops.validate(hp->impl, spec, err);
  if (r > 0)
    r = 0;
  if (r < 0 && err && !*err)
    HM_ERR(err, r, "backend %s refused the mount without saying why", hp->ops.name);
  return r;
}

int hm_fs_hotplugger_watch_fd(hm_fs_hotplugger *hp, hm_attachment *att) {
  return hp->ops.watch_fd ? hp->ops.watch_fd(hp->impl, att) : -1;
}

int hm_fs_hotplugger_scan(hm_fs_hotplugger *hp, hm_attachment ***out, size_t *n, hm_error **err) {
  *out = NULL;
  *n = 0;
  if (!hp->ops.scan)
    return HM_ERR(err, HM_E_UNSUPPORTED, "backend %s cannot scan", hp->ops.name);
  return hp->ops.scan(hp->impl, out, n, err);
}

int hm_fs_hotplugger_guest_mounts(const hm_fs_hotplugger *hp) {
  return hp && (hp->ops.flags & HM_HOTPLUGGER_GUEST_MOUNTS);
}

int hm_fs_hotplugger_guest_umount(hm_fs_hotplugger *hp, hm_attachment *att, unsigned flags,
                                  hm_error **err) {
  if (!hp->ops.guest_umount)
    return HM_ERR(err, HM_E_UNSUPPORTED, "backend %s does not unmount in the guest", hp->ops.name);
  return hp->ops.guest_umount(hp->impl, att, flags, err);
}

int hm_fs_hotplugger_can_guest_notify(const hm_fs_hotplugger *hp) {
  return hp && hp->ops.guest_notify != NULL;
}

int hm_fs_hotplugger_guest_notify(hm_fs_hotplugger *hp, hm_attachment *att, const int *kinds,
                                  const char *const *paths, size_t n, hm_error **err) {
  if (!hp->ops.guest_notify)
    return HM_ERR(err, HM_E_UNSUPPORTED, "backend %s cannot notify the guest", hp->ops.name);
  return hp->ops.guest_notify(hp->impl, att, kinds, paths, n, err);
}

int hm_fs_hotplugger_can_reattach(const hm_fs_hotplugger *hp) {
  return hp && hp->ops.reattach != NULL;
}

int hm_fs_hotplugger_reattach(hm_fs_hotplugger *hp, const hm_mount_spec *spec, hm_attachment *att,
                              hm_error **err) {
  if (!hp->ops.reattach)
    return HM_ERR(err, HM_E_UNSUPPORTED, "backend %s cannot re-attach", hp->ops.name);
  return hp->ops.reattach(hp->impl, spec, att, err);
}
