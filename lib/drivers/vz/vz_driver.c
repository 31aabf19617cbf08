/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VZ backend: mounts mapped onto spare virtio-fs devices reserved when
 * the VM was configured ("hotmount-0".."hotmount-<N-1>"), whose shares the
 * Objective-C shim swaps on the VM's queue.
 *
 * Unlike QEMU there is nothing to ask about which spares are taken: a
 * VZVirtualMachine lives and dies with the process that owns it, and so does
 * this hotplugger's slot table (seeded from the VM's shares at creation).
 * A slot is `busy` while its share is being changed, outside the lock, so a
 * slow queue never stalls other attaches or free_slots.
 */
#include "driver_internal.h"
#include "vz_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_FREE, SLOT_BUSY, SLOT_USED };

typedef struct vz_impl {
  const hm_vz_shim_ops *ops;
  void *shim;
  unsigned spares;
  pthread_mutex_t lock; /* guards slot[] */
  unsigned char slot[HM_VZ_MAX_SPARES];
} vz_impl;

/* The shim's failure as an hm_error "func: context: shim message"; code is
 * the shim's when it gave one, else HM_E_HELPER. */
static int shim_error(hm_error **err, int code, char *msg, const char *func, const char *ctx) {
  if (code >= 0 || code == HM_E_INTERNAL)
    code = HM_E_HELPER;
  hm_err_set(err, code, func, "%s: %s", ctx, msg ? msg : "Virtualization.framework failed");
  free(msg);
  return code;
}

static int check_spares(unsigned spares, hm_error **err, const char *func) {
  if (spares < 1 || spares > HM_VZ_MAX_SPARES)
    return hm_err_set(err, HM_E_INVALID, func, "spares must be 1..%d, not %u", HM_VZ_MAX_SPARES,
                      spares);
  return 0;
}

int hm_vz_config_reserve_with_shim(const hm_vz_shim_ops *ops, void *vz_configuration,
                                   unsigned spares, hm_error **err) {
  if (!ops || !ops->reserve || !vz_configuration)
    return hm_err_set(err, HM_E_INVALID, "hm_vz_config_reserve",
                      "the configuration must not be NULL");
  int r = check_spares(spares, err, "hm_vz_config_reserve");
  if (r < 0)
    return r;
  char *msg = NULL;
  if ((r = ops->reserve(vz_configuration, spares, &msg)) < 0)
    return shim_error(err, r, msg, "hm_vz_config_reserve", "reserving spare devices");
  free(msg);
  return 0;
}

/* The slot an attachment holds: data "slot", else its tag; -1 if neither is
 * one of ours. */
static int attachment_slot(const vz_impl *v, const hm_attachment *att) {
  const char *s = hm_attachment_get_data(att, "slot");
  const char *tag = hm_attachment_get_tag(att);
  size_t plen = strlen(HM_VZ_TAG_PREFIX);
  if (!s && tag && strncmp(tag, HM_VZ_TAG_PREFIX, plen) == 0)
    s = tag + plen;
  if (!s || *s < '0' || *s > '9')
    return -1;
  char *end;
  errno = 0;
  unsigned long k = strtoul(s, &end, 10);
  return *end == '\0' && errno == 0 && k < v->spares ? (int)k : -1;
}

static int vz_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  vz_impl *v = impl;
  int type = hm_mount_spec_get_type(spec);
  if (type != HM_TYPE_VIRTIOFS)
    return hm_err_set(err, HM_E_UNSUPPORTED, "hm_vz_attach",
                      "the VZ backend mounts only virtiofs, not %s", hm_mount_type_name(type));
  const char *host = hm_mount_spec_get_host_path(spec);
  if (!host || !*host)
    return hm_err_set(err, HM_E_INVALID, "hm_vz_attach", "the mount has no host path");

  int pick = -1;
  pthread_mutex_lock(&v->lock);
  for (unsigned i = 0; i < v->spares && pick < 0; i++)
    if (v->slot[i] == SLOT_FREE)
      pick = (int)i;
  if (pick >= 0)
    v->slot[pick] = SLOT_BUSY;
  pthread_mutex_unlock(&v->lock);
  if (pick < 0)
    return hm_err_set(err, HM_E_NO_SLOT, "hm_vz_attach",
                      "all %u spare virtio-fs devices are in use (the number is fixed when "
                      "the VM is configured: hm_vz_config_reserve)",
                      v->spares);

  char tag[32], slot[16];
  snprintf(tag, sizeof(tag), HM_VZ_TAG_PREFIX "%d", pick);
  snprintf(slot, sizeof(slot), "%d", pick);
  int r = hm_attachment_set_tag(att, tag, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "slot", slot, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "hostPath", host, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "writable", hm_mount_spec_get_writable(spec) ? "1" : "0", err);
  if (r == 0) {
    char *msg = NULL;
    int sr =
        v->ops->set_share(v->shim, (unsigned)pick, host, !hm_mount_spec_get_writable(spec), &msg);
    if (sr < 0) {
      char ctx[64];
      snprintf(ctx, sizeof(ctx), "sharing %s on %s", host, tag);
      r = shim_error(err, sr, msg, "hm_vz_attach", ctx);
    } else {
      free(msg);
    }
  }
  pthread_mutex_lock(&v->lock);
  v->slot[pick] = r == 0 ? SLOT_USED : SLOT_FREE;
  pthread_mutex_unlock(&v->lock);
  if (r < 0) {
    /* Leave no trace of the slot in the record either. */
    hm_attachment_set_data(att, "slot", NULL, NULL);
  }
  return r;
}

static int vz_detach(void *impl, hm_attachment *att, hm_error **err) {
  vz_impl *v = impl;
  int k = attachment_slot(v, att);
  if (k < 0)
    return 0; /* never attached by this backend: nothing to undo */
  pthread_mutex_lock(&v->lock);
  int used = v->slot[k] == SLOT_USED;
  if (used)
    v->slot[k] = SLOT_BUSY;
  pthread_mutex_unlock(&v->lock);
  if (!used)
    return 0; /* already cleared (or being changed by its own operation) */
  char *msg = NULL;
  int r = v->ops->clear_share(v->shim, (unsigned)k, &msg);
  if (r < 0) {
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "clearing " HM_VZ_TAG_PREFIX "%d", k);
    r = shim_error(err, r, msg, "hm_vz_detach", ctx);
  } else {
    free(msg);
  }
  pthread_mutex_lock(&v->lock);
  v->slot[k] = r == 0 ? SLOT_FREE : SLOT_USED; /* a failed clear still shares: keep it */
  pthread_mutex_unlock(&v->lock);
  return r;
}

static int count_free(vz_impl *v) {
  int n = 0;
  pthread_mutex_lock(&v->lock);
  for (unsigned i = 0; i < v->spares; i++)
    n += v->slot[i] == SLOT_FREE;
  pthread_mutex_unlock(&v->lock);
  return n;
}

static int vz_free_slots(void *impl, int type, hm_error **err) {
  if (type != HM_TYPE_VIRTIOFS)
    return hm_err_set(err, HM_E_UNSUPPORTED, "hm_vz_free_slots", "no slots for %s",
                      hm_mount_type_name(type));
  return count_free(impl);
}

static int vz_describe(void *impl, hm_status *st, hm_error **err) {
  vz_impl *v = impl;
  char buf[48];
  snprintf(buf, sizeof(buf), HM_VZ_TAG_PREFIX "0.." HM_VZ_TAG_PREFIX "%u", v->spares - 1);
  int r = hm_status_set(st, "vzTags", buf, err);
  snprintf(buf, sizeof(buf), "%u", v->spares);
  r = r ?: hm_status_set(st, "slotsTotal", buf, err);
  snprintf(buf, sizeof(buf), "%d", count_free(v));
  r = r ?: hm_status_set(st, "slotsFree", buf, err);
  return r;
}

static void vz_destroy(void *impl) {
  vz_impl *v = impl;
  if (!v)
    return;
  if (v->ops && v->ops->close)
    v->ops->close(v->shim);
  pthread_mutex_destroy(&v->lock);
  free(v);
}

int hm_vz_hotplugger_new_with_shim(hm_fs_hotplugger **out, const hm_vz_shim_ops *ops,
                                   void *vz_virtual_machine, void *dispatch_queue, unsigned spares,
                                   hm_error **err) {
  if (!out || !vz_virtual_machine || !dispatch_queue)
    return hm_err_set(err, HM_E_INVALID, "hm_vz_hotplugger_new",
                      "out, the virtual machine and its queue must not be NULL");
  if (!ops || !ops->open || !ops->set_share || !ops->clear_share)
    return hm_err_set(err, HM_E_INVALID, "hm_vz_hotplugger_new", "incomplete shim");
  int r = check_spares(spares, err, "hm_vz_hotplugger_new");
  if (r < 0)
    return r;
  vz_impl *v = calloc(1, sizeof(*v));
  if (!v)
    return hm_err_set(err, HM_E_NOMEM, "hm_vz_hotplugger_new", "out of memory");
  v->ops = ops;
  v->spares = spares;
  pthread_mutex_init(&v->lock, NULL);
  uint64_t in_use = 0;
  char *msg = NULL;
  if ((r = ops->open(&v->shim, &in_use, vz_virtual_machine, dispatch_queue, spares, &msg)) < 0) {
    v->ops = NULL; /* nothing opened to close */
    vz_destroy(v);
    return shim_error(err, r, msg, "hm_vz_hotplugger_new", "opening the VM's spare devices");
  }
  free(msg);
  for (unsigned i = 0; i < spares; i++)
    v->slot[i] = (in_use >> i) & 1 ? SLOT_USED : SLOT_FREE;
  static const hm_fs_hotplugger_ops vz_ops = {
      .struct_size = sizeof(hm_fs_hotplugger_ops),
      .name = "vz",
      .types = 1u << HM_TYPE_VIRTIOFS,
      .attach = vz_attach,
      .detach = vz_detach,
      .free_slots = vz_free_slots,
      .destroy = vz_destroy,
      .describe = vz_describe,
  };
  return hm_fs_hotplugger_new(out, &vz_ops, v, err);
}

#ifdef HM_HAVE_VZ_SHIM
int hm_vz_config_reserve(void *vz_configuration, unsigned spares, hm_error **err) {
  return hm_vz_config_reserve_with_shim(&hm_vz_shim_real_ops, vz_configuration, spares, err);
}

int hm_vz_hotplugger_new(hm_fs_hotplugger **out, void *vz_virtual_machine, void *dispatch_queue,
                         unsigned spares, hm_error **err) {
  return hm_vz_hotplugger_new_with_shim(out, &hm_vz_shim_real_ops, vz_virtual_machine,
                                        dispatch_queue, spares, err);
}
#else
int hm_vz_config_reserve(void *vz_configuration, unsigned spares, hm_error **err) {
  (void)vz_configuration;
  (void)spares;
  return HM_ERR(err, HM_E_UNSUPPORTED,
                "the VZ backend needs macOS 13+ (this build has no "
                "Virtualization.framework shim)");
}

int hm_vz_hotplugger_new(hm_fs_hotplugger **out, void *vz_virtual_machine, void *dispatch_queue,
                         unsigned spares, hm_error **err) {
  (void)vz_virtual_machine;
  (void)dispatch_queue;
  (void)spares;
  if (out)
    *out = NULL;
  return HM_ERR(err, HM_E_UNSUPPORTED,
                "the VZ backend needs macOS 13+ (this build has no "
                "Virtualization.framework shim)");
}
#endif
