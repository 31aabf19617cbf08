/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The instance's side of --notify: a mount entry has a watcher exactly while
 * it is mounted. hm_inst_notify_sync_locked is called wherever an entry's
 * state is set (add, remove, reconcile after a restart, the health
 * monitor), so the watcher follows the registry and survives a daemon
 * restart through state.json's "notify". Batches go to the guest agent, or
 * to the backend's guest_notify op for backends without an agent
 * (reverse-sshfs). The watcher thread never takes inst->lock: stopping it
 * under that lock (which joins it) cannot deadlock.
 */
#include "instance_internal.h"
#include "notify/notify.h"
#include "notify_link.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* How long a batch of n may take in the guest: each event is a round trip
 * to the file server there (under TCG, 9p over virtio-serial, about 20 ms).
 * A stalled guest holds the watcher, and a remove, which joins it, this long. */
#define NOTIFY_SEND_TIMEOUT_MS(n) (2000 + 100 * (int)(n))

struct hm_notify_link {
  hm_instance *inst;
  char *id, *target;
  hm_fs_hotplugger *hp; /* set: the backend's guest_notify; NULL: the agent */
  hm_attachment *att;   /* a copy, for guest_notify */
  hm_notify_watcher *w;
  unsigned long failures; /* batches that could not be delivered (watcher thread only) */
};

static void sink(void *user, const hm_notify_event *ev, size_t n) {
  hm_notify_link *l = user;
  hm_error *err = NULL;
  int r;
  if (l->hp && n == 0) {
    return; /* nothing to prepare without an agent */
  } else if (l->hp) {
    int kinds[HM_NOTIFY_MAX_BATCH];
    const char *paths[HM_NOTIFY_MAX_BATCH];
    for (size_t i = 0; i < n; i++)
      kinds[i] = ev[i].kind, paths[i] = ev[i].path;
    r = hm_fs_hotplugger_guest_notify(l->hp, l->att, kinds, paths, n, &err);
  } else {
    /* Never connects: a notify must not wait for an agent coming up (the
     * health monitor and the next add do that). */
    pthread_rwlock_rdlock(&l->inst->agent_lock);
    if (l->inst->agent && hm_agent_is_connected(l->inst->agent))
      r = hm_agent_notify(l->inst->agent, l->target, ev, n, NOTIFY_SEND_TIMEOUT_MS(n), &err);
    else
      r = HM_ERR(&err, HM_E_NOT_READY, "the guest agent is not connected");
    pthread_rwlock_unlock(&l->inst->agent_lock);
  }
  if (r < 0) {
    /* The first failure and then every 100th: a stalled guest must not
     * fill the log. */
    if (l->failures++ % 100 == 0)
      hm_warn("notify %s (%s): %zu change(s) not shown in the guest: %s", l->id, l->target, n,
              hm_error_message(err));
  }
  hm_error_free(err);
}

static void link_free(hm_notify_link *l) {
  if (!l)
    return;
  hm_notify_watcher_stop(l->w);
  hm_attachment_free(l->att);
  free(l->id);
  free(l->target);
  free(l);
}

static int link_start(hm_instance *inst, hm_entry *e, hm_notify_link **out, hm_error **err) {
  hm_notify_link *l = calloc(1, sizeof(*l));
  if (!l || !(l->id = strdup(e->id)) || !(l->target = strdup(e->spec->guest_path))) {
    link_free(l);
    return HM_ERR_NOMEM(err);
  }
  l->inst = inst;
  hm_fs_hotplugger *hp = hm_inst_backend(inst, e->spec->type);
  if (hm_fs_hotplugger_can_guest_notify(hp)) {
    l->hp = hp;
    if (e->att && !(l->att = hm_attachment_copy(e->att))) {
      link_free(l);
      return HM_ERR_NOMEM(err);
    }
  }
  /* The mount's file server: what it changes, the guest changed (and its
   * watchers saw), so the watcher does not send it back. */
  static const char *const pid_keys[] = {"virtiofsd_pid", "diod_pid", "sftpPid", "qemu_pid"};
  int pids[4];
  size_t np = 0;
  for (size_t i = 0; e->att && i < sizeof(pid_keys) / sizeof(pid_keys[0]); i++) {
    const char *v = hm_attachment_get_data(e->att, pid_keys[i]);
    char *end = NULL;
    long p = v ? strtol(v, &end, 10) : 0;
    if (v && *end == '\0' && p > 1 && p < INT32_MAX)
      pids[np++] = (int)p;
  }
  int r = hm_notify_watcher_start_ex(&l->w, e->spec->host_path, pids, np, sink, l, err);
  if (r < 0) {
    link_free(l);
    return r;
  }
  *out = l;
  return 0;
}

void hm_inst_notify_sync_locked(hm_instance *inst, hm_entry *e) {
  int want = e->spec->notify && e->state == HM_STATE_MOUNTED && !e->retired;
  if (!want && e->notify) {
    link_free(e->notify);
    e->notify = NULL;
    hm_info("notify %s: watcher stopped", e->id);
  } else if (want && !e->notify) {
    hm_error *err = NULL;
    if (link_start(inst, e, &e->notify, &err) < 0)
      hm_warn("notify %s: cannot watch %s: %s", e->id, e->spec->host_path, hm_error_message(err));
    else
      hm_info("notify %s: watching %s for %s", e->id, e->spec->host_path, e->spec->guest_path);
    hm_error_free(err);
  }
}

void hm_inst_notify_stop(hm_entry *e) {
  link_free(e->notify);
  e->notify = NULL;
}

int hm_inst_notify_describe(const hm_entry *e, char *buf, size_t size) {
  if (!e->spec->notify)
    return 0;
  if (!e->notify) {
    snprintf(buf, size, "%s", e->state == HM_STATE_MOUNTED ? "not running (see the log)" : "off");
    return 1;
  }
  hm_notify_stats st;
  hm_notify_watcher_stats(e->notify->w, &st);
  if (st.unwatched)
    snprintf(buf, size,
             "notify degraded: %lu directories not watched (fs.inotify.max_user_watches=%lu); "
             "%lu watched, %lu events sent, %lu echoes dropped, %lu overflows",
             st.unwatched, st.max_watches, st.dirs, st.sent, st.suppressed, st.overflows);
  else
    snprintf(buf, size,
             "%s: %lu directories watched, %lu events sent, %lu echoes dropped, %lu overflows%s",
             st.running ? "watching" : "stopped", st.dirs, st.sent, st.suppressed, st.overflows,
             st.origin_filter ? "" : " (no fanotify: guest-made changes may echo)");
  return 1;
}
