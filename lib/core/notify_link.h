/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* --notify mounts' watchers, owned by their registry entries (notify_link.c). */
#ifndef HM_NOTIFY_LINK_H
#define HM_NOTIFY_LINK_H

#include "state.h"

typedef struct hm_instance hm_instance;
typedef struct hm_notify_link hm_notify_link;

/* Starts or stops e's watcher to match its state (inst->lock held): it runs
 * while e is a mounted --notify mount. Failing to start is logged. */
HM_PRIVATE void hm_inst_notify_sync_locked(hm_instance *inst, hm_entry *e);
/* Stops e's watcher, if any (e is being freed). */
HM_PRIVATE void hm_inst_notify_stop(hm_entry *e);
/* The watcher's health in buf for status; 0 when e has no --notify. */
HM_PRIVATE int hm_inst_notify_describe(const hm_entry *e, char *buf, size_t size);

#endif
