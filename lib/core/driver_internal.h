/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_DRIVER_INTERNAL_H
#define HM_DRIVER_INTERNAL_H

#include "private.h"

struct hm_attachment {
  char *id;
  char *tag;
  hm_kv data;
  int type;      /* HM_TYPE_*, 0 unknown */
  char *retired; /* hm_attachment_set_retired's reason */
};

/* A deep copy (id, tag, data), or NULL when out of memory. */
HM_PRIVATE hm_attachment *hm_attachment_copy(const hm_attachment *a);

HM_PRIVATE int hm_fs_hotplugger_attach(hm_fs_hotplugger *hp, const hm_mount_spec *spec,
                                       hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_detach(hm_fs_hotplugger *hp, hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_free_slots(hm_fs_hotplugger *hp, int type, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_describe(hm_fs_hotplugger *hp, hm_status *st, hm_error **err);
/* 1 whole, 0 broken (*reason malloc'd; *gone, when gone is non-NULL, set
 * for the backend's HM_CHECK_GONE), <0 unknown; 1 when the backend has no
 * check. */
HM_PRIVATE int hm_fs_hotplugger_check(hm_fs_hotplugger *hp, hm_attachment *att, char **reason,
                                      int *gone, hm_error **err);
/* The backend's validate op; without one, any option is refused. */
HM_PRIVATE int hm_fs_hotplugger_validate(hm_fs_hotplugger *hp, const hm_mount_spec *spec,
                                         hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_watch_fd(hm_fs_hotplugger *hp, hm_attachment *att);
/* HM_E_UNSUPPORTED when the backend cannot scan. */
HM_PRIVATE int hm_fs_hotplugger_scan(hm_fs_hotplugger *hp, hm_attachment ***out, size_t *n,
                                     hm_error **err);
/* Backends that mount in the guest themselves (HM_HOTPLUGGER_GUEST_MOUNTS). */
HM_PRIVATE int hm_fs_hotplugger_guest_mounts(const hm_fs_hotplugger *hp);
HM_PRIVATE int hm_fs_hotplugger_guest_umount(hm_fs_hotplugger *hp, hm_attachment *att,
                                             unsigned flags, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_can_guest_notify(const hm_fs_hotplugger *hp);
HM_PRIVATE int hm_fs_hotplugger_guest_notify(hm_fs_hotplugger *hp, hm_attachment *att,
                                             const int *kinds, const char *const *paths, size_t n,
                                             hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_can_reattach(const hm_fs_hotplugger *hp);
HM_PRIVATE int hm_fs_hotplugger_reattach(hm_fs_hotplugger *hp, const hm_mount_spec *spec,
                                         hm_attachment *att, hm_error **err);

#endif
