/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hm_instance's insides, shared by instance.c (add/remove/list), reconcile.c
 * (after a restart) and monitor.c (health). */
#ifndef HM_INSTANCE_INTERNAL_H
#define HM_INSTANCE_INTERNAL_H

#include "agent_client.h"
#include "platform.h"
#include "state.h"

#include <pthread.h>

#define HM_AGENT_CONNECT_TIMEOUT_MS 5000
#define HM_AGENT_UMOUNT_TIMEOUT_MS 15000
#define HM_INST_MAX_BACKENDS 4
/* How often broken --persist mounts of a re-attaching backend are retried. */
#define HM_REATTACH_INTERVAL_MS 2000

struct hm_instance {
  char *dir;
  char *agent_path;
  char *state_path;
  hm_fs_hotplugger *hp; /* the main backend (QEMU, VZ): backends[0] */
  /* Every backend; a mount's type picks the first that supports it. Set up
   * before the instance serves requests, then read-only. */
  hm_fs_hotplugger *backends[HM_INST_MAX_BACKENDS];
  size_t n_backends;
  int mount_timeout_ms;

  pthread_rwlock_t agent_lock;
  hm_agent *agent;

  pthread_mutex_t lock; /* the registry: entries, next_id, state file */
  hm_entry **entries;
  size_t n_entries;
  unsigned next_id;
  char *guest_boot_id; /* the guest boot our mounts belong to; NULL: unknown */

  /* Health monitor (monitor.c). */
  pthread_t monitor;
  int monitor_running;
  pthread_t reattacher; /* broken --persist mounts of re-attaching backends */
  int reattacher_running;
  pthread_cond_t reattach_cond; /* signalled to stop it */
  hm_wake wake;                 /* registry changed, or stop */
  int stopping;

  struct hm_events *events; /* main-loop integration (events.c); NULL until used */
};

/* events.c: state-change hook (inst->lock held; HM_STATE_REMOVED = 0: leaves
 * the registry), and teardown, first thing in hm_instance_free. */
HM_PRIVATE void hm_inst_event_locked(hm_instance *inst, const hm_entry *e, int old_state,
                                     int new_state);
HM_PRIVATE void hm_inst_events_free(hm_instance *inst);

HM_PRIVATE void hm_inst_entry_free(hm_entry *e);
/* The backend that serves mounts of type (the main one when none does). */
HM_PRIVATE hm_fs_hotplugger *hm_inst_backend(hm_instance *inst, int type);
HM_PRIVATE hm_entry *hm_inst_find_entry(hm_instance *inst, const char *guest_path);
HM_PRIVATE hm_entry *hm_inst_find_id(hm_instance *inst, const char *id);
/* The following need inst->lock. */
HM_PRIVATE void hm_inst_drop_entry(hm_instance *inst, hm_entry *e);
HM_PRIVATE void hm_inst_save_locked(hm_instance *inst);
HM_PRIVATE void hm_inst_set_state_locked(hm_instance *inst, hm_entry *e, int state,
                                         const char *reason);
/* Agent connection: acquire returns with agent_lock read-held and a live
 * inst->agent, or fails with nothing held. */
HM_PRIVATE int hm_inst_agent_acquire(hm_instance *inst, int timeout_ms, hm_error **err);
HM_PRIVATE void hm_inst_agent_release(hm_instance *inst);
/* True when the guest lists a mount at target, or when it cannot tell. */
HM_PRIVATE int hm_inst_guest_has_mount(hm_agent *agent, const char *target);

/* Wakes the monitor: the registry changed. */
HM_PRIVATE void hm_inst_monitor_wake(hm_instance *inst);
HM_PRIVATE int hm_inst_monitor_start(hm_instance *inst, hm_error **err);
HM_PRIVATE void hm_inst_monitor_stop(hm_instance *inst);

#endif
