/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_DRIVER_INTERNAL_H
#define HM_DRIVER_INTERNAL_H

#include "private.h"

struct hm_attachment {
  char *id;
  char *tag;
  hm_kv data;
};

HM_PRIVATE int hm_attachment_new(hm_attachment **out, const char *id);
HM_PRIVATE void hm_attachment_free(hm_attachment *att);

HM_PRIVATE int hm_fs_hotplugger_attach(hm_fs_hotplugger *hp, const hm_mount_spec *spec,
                                       hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_detach(hm_fs_hotplugger *hp, hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_free_slots(hm_fs_hotplugger *hp, int type, hm_error **err);
HM_PRIVATE int hm_fs_hotplugger_describe(hm_fs_hotplugger *hp, hm_status *st, hm_error **err);

#endif
