/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Health monitor: one thread per instance that notices, without being asked,
 * when a mount breaks, and marks it `broken` with the reason.
 *
 * - Helper processes: the backend hands out a file descriptor per attachment
 *   (a pidfd of virtiofsd) that becomes readable when it dies: seen at once.
 * - The guest: once a second, when the agent is connected and something is
 *   mounted, the agent's list of mounts is compared with the registry (a
 *   mount that vanished from the guest: unmounted behind our back).
 *
 * Entries that an add or remove of this process is working on (busy) are
 * left alone. The thread never holds the registry lock while it calls the
 * backend or the agent.
 */
#include "driver_internal.h"
#include "instance_internal.h"
#include "mount_internal.h"
#include "platform.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GUEST_CHECK_MS 1000

typedef struct watch {
  char *id;
  int fd;
} watch;

static int watched(const hm_entry *e) {
  return e->state == HM_STATE_MOUNTED && !e->busy && e->att;
}

/* Marks id broken if it is still a mounted, idle entry. */
static void mark_broken(hm_instance *inst, const char *id, const char *reason) {
  pthread_mutex_lock(&inst->lock);
  hm_entry *e = hm_inst_find_id(inst, id);
  if (e && watched(e)) {
    hm_warn("%s at %s is broken: %s", e->id, e->spec->guest_path, reason);
    hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN, reason);
  }
  pthread_mutex_unlock(&inst->lock);
}

/* Brings the watch table in line with the registry. */
static void refresh(hm_instance *inst, watch **w, size_t *nw) {
  /* Drop watches of entries that are no longer watched. */
  pthread_mutex_lock(&inst->lock);
  for (size_t i = 0; i < *nw;) {
    hm_entry *e = hm_inst_find_id(inst, (*w)[i].id);
    if (e && watched(e)) {
      i++;
      continue;
    }
    if ((*w)[i].fd >= 0)
      close((*w)[i].fd);
    free((*w)[i].id);
    (*w)[i] = (*w)[--*nw];
  }
  /* Copies of the attachments that need a watch, to open outside the lock. */
  hm_attachment **todo = NULL;
  hm_fs_hotplugger **todo_hp = NULL;
  size_t ntodo = 0;
  for (size_t i = 0; i < inst->n_entries; i++) {
    hm_entry *e = inst->entries[i];
    int have = 0;
    for (size_t k = 0; k < *nw; k++)
      have |= strcmp((*w)[k].id, e->id) == 0;
    if (have || !watched(e))
      continue;
    hm_attachment **t = realloc(todo, (ntodo + 1) * sizeof(*t));
    if (t)
      todo = t;
    hm_fs_hotplugger **th = t ? realloc(todo_hp, (ntodo + 1) * sizeof(*th)) : NULL;
    if (!th)
      break;
    todo_hp = th;
    todo_hp[ntodo] = hm_inst_backend(inst, e->spec->type);
    if ((todo[ntodo] = hm_attachment_copy(e->att)))
      ntodo++;
  }
  pthread_mutex_unlock(&inst->lock);
  for (size_t i = 0; i < ntodo; i++) {
    watch *nwv = realloc(*w, (*nw + 1) * sizeof(*nwv));
    if (nwv) {
      *w = nwv;
      /* fd -1 (no helper to watch) still records that we looked. */
      (*w)[*nw].fd = hm_fs_hotplugger_watch_fd(todo_hp[i], todo[i]);
      (*w)[*nw].id = strdup(todo[i]->id);
      if ((*w)[*nw].id)
        ++*nw;
      else if ((*w)[*nw].fd >= 0)
        close((*w)[*nw].fd);
    }
    hm_attachment_free(todo[i]);
  }
  free(todo);
  free(todo_hp);
}

/* A watched fd fired: ask the backend what broke, outside the lock. */
static void fired(hm_instance *inst, const char *id) {
  hm_attachment *copy = NULL;
  hm_fs_hotplugger *hp = NULL;
  pthread_mutex_lock(&inst->lock);
  hm_entry *e = hm_inst_find_id(inst, id);
  if (e && watched(e)) {
    copy = hm_attachment_copy(e->att);
    hp = hm_inst_backend(inst, e->spec->type);
  }
  pthread_mutex_unlock(&inst->lock);
  if (!copy)
    return;
  char *reason = NULL;
  int r = hm_fs_hotplugger_check(hp, copy, &reason, NULL, NULL);
  if (r != 1)
    mark_broken(inst, id, reason ? reason : "its helper process exited");
  free(reason);
  hm_attachment_free(copy);
}

/*
 * After a guest reboot every mount of the old boot is gone from the guest,
 * while the devices are still plugged in QEMU (and seen again by the new
 * boot). Persistent mounts are mounted again; the others end here: their
 * host side is detached (safe now: the new boot has no requests in flight).
 */
static void after_reboot(hm_instance *inst, const hm_agent_mount_info *v, size_t nv) {
  char **ids = NULL;
  size_t n = 0;
  pthread_mutex_lock(&inst->lock);
  for (size_t i = 0; i < inst->n_entries; i++) {
    hm_entry *e = inst->entries[i];
    if (e->busy || e->retired || !e->att ||
        (e->state != HM_STATE_MOUNTED && e->state != HM_STATE_BROKEN) ||
        hm_fs_hotplugger_guest_mounts(hm_inst_backend(inst, e->spec->type)))
      continue; /* (a backend mounting over its own connection sees the reboot itself) */
    /* Already mounted in the new boot (added after it started): fine. */
    int fresh = 0;
    for (size_t k = 0; k < nv && !fresh; k++)
      fresh = strcmp(v[k].target, e->spec->guest_path) == 0;
    if (fresh)
      continue;
    char **grown = realloc(ids, (n + 1) * sizeof(*grown));
    if (!grown || !(grown[n] = strdup(e->id))) {
      ids = grown ? grown : ids;
      break;
    }
    ids = grown;
    n++;
    e->busy = 1;
  }
  pthread_mutex_unlock(&inst->lock);
  for (size_t k = 0; k < n; k++) {
    pthread_mutex_lock(&inst->lock);
    hm_entry *e = hm_inst_find_id(inst, ids[k]);
    hm_attachment *copy = e ? hm_attachment_copy(e->att) : NULL;
    int persist = e && e->spec->persist;
    char *target = e ? strdup(e->spec->guest_path) : NULL;
    int type = e ? e->spec->type : 0, ro = e ? !e->spec->writable : 1;
    pthread_mutex_unlock(&inst->lock);
    hm_error *err = NULL;
    int r = copy && target ? 0 : HM_E_NOMEM;
    if (r == 0 && persist) {
      r = hm_inst_agent_acquire(inst, HM_AGENT_CONNECT_TIMEOUT_MS, &err);
      if (r == 0) {
        r = hm_agent_mount_att(inst->agent, type, copy, target, ro, inst->mount_timeout_ms, &err);
        hm_inst_agent_release(inst);
      }
    } else if (r == 0) {
      r = hm_fs_hotplugger_detach(hm_inst_backend(inst, type), copy, &err);
    }
    pthread_mutex_lock(&inst->lock);
    e = hm_inst_find_id(inst, ids[k]);
    if (e) {
      e->busy = 0;
      if (r == 0 && persist) {
        hm_info("guest rebooted: %s mounted again at %s", e->id, e->spec->guest_path);
        hm_inst_set_state_locked(inst, e, HM_STATE_MOUNTED, NULL);
      } else if (r == 0) {
        hm_info("guest rebooted: %s at %s ended, host side cleaned up", e->id, e->spec->guest_path);
        hm_inst_drop_entry(inst, e);
        hm_inst_save_locked(inst);
      } else {
        char *why = NULL;
        if (asprintf(&why, "after a guest reboot: %s", hm_error_message(err)) < 0)
          why = NULL;
        hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN, why ? why : "after a guest reboot");
        free(why);
      }
    }
    pthread_mutex_unlock(&inst->lock);
    hm_error_free(err);
    hm_attachment_free(copy);
    free(target);
    free(ids[k]);
  }
  free(ids);
}

/* Guest side: a new boot, or mounts the registry has that the guest no
 * longer shows. */
static void check_guest(hm_instance *inst) {
  pthread_mutex_lock(&inst->lock);
  int any = 0;
  for (size_t i = 0; i < inst->n_entries; i++)
    any |= !inst->entries[i]->busy && !inst->entries[i]->retired && inst->entries[i]->att &&
           !hm_fs_hotplugger_guest_mounts(hm_inst_backend(inst, inst->entries[i]->spec->type));
  pthread_mutex_unlock(&inst->lock);
  if (!any || pthread_rwlock_tryrdlock(&inst->agent_lock) != 0)
    return;
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  /* The list is a snapshot: a mount that became mounted after it was asked
   * for is not in it, and must not be judged by it. */
  int64_t asked = hm_now_ms();
  int ok = inst->agent && hm_agent_is_connected(inst->agent) &&
           hm_agent_list(inst->agent, &v, &n, NULL) == 0;
  char *boot = ok ? hm_agent_boot_id(inst->agent) : NULL;
  pthread_rwlock_unlock(&inst->agent_lock);
  if (!ok)
    return;
  pthread_mutex_lock(&inst->lock);
  int rebooted = boot && inst->guest_boot_id && strcmp(boot, inst->guest_boot_id) != 0;
  if (boot && (rebooted || !inst->guest_boot_id)) {
    free(inst->guest_boot_id);
    inst->guest_boot_id = boot;
    boot = NULL;
    hm_inst_save_locked(inst);
  }
  if (rebooted) {
    pthread_mutex_unlock(&inst->lock);
    hm_info("the guest rebooted (new boot id %s)", inst->guest_boot_id);
    after_reboot(inst, v, n);
    hm_agent_list_free(v, n);
    free(boot);
    return;
  }
  for (size_t i = 0; i < inst->n_entries; i++) {
    hm_entry *e = inst->entries[i];
    if (!watched(e) || e->mounted_at >= asked ||
        hm_fs_hotplugger_guest_mounts(hm_inst_backend(inst, e->spec->type)))
      continue;
    int found = 0;
    for (size_t k = 0; k < n && !found; k++)
      found = strcmp(v[k].target, e->spec->guest_path) == 0;
    if (!found) {
      hm_warn("%s at %s is broken: no longer mounted in the guest", e->id, e->spec->guest_path);
      hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN,
                               "no longer mounted in the guest (unmounted there behind "
                               "hotmount's back); remove it to clean up");
    }
  }
  pthread_mutex_unlock(&inst->lock);
  hm_agent_list_free(v, n);
  free(boot);
}

/*
 * Broken --persist mounts of a backend that can re-attach in place
 * (reverse-sshfs: the SSH connection came back) are brought back, one try
 * per entry per round, outside the lock.
 */
static void reattach_persistent(hm_instance *inst) {
  for (;;) {
    pthread_mutex_lock(&inst->lock);
    hm_entry *e = NULL;
    int64_t now = hm_now_ms();
    for (size_t i = 0; i < inst->n_entries && !e; i++) {
      hm_entry *c = inst->entries[i];
      if (c->state == HM_STATE_BROKEN && c->spec->persist && !c->busy && !c->retired && c->att &&
          c->retry_at <= now && hm_fs_hotplugger_can_reattach(hm_inst_backend(inst, c->spec->type)))
        e = c;
    }
    if (!e) {
      pthread_mutex_unlock(&inst->lock);
      return;
    }
    e->busy = 1;
    e->retry_at = now + HM_REATTACH_INTERVAL_MS;
    hm_fs_hotplugger *hp = hm_inst_backend(inst, e->spec->type);
    hm_attachment *copy = hm_attachment_copy(e->att);
    hm_mount_spec *spec = NULL;
    hm_mount_spec_copy(&spec, e->spec, NULL);
    char *id = strdup(e->id);
    pthread_mutex_unlock(&inst->lock);
    hm_error *err = NULL;
    /* The helpers open the host path again: it must still be the
     * directory that was validated (not swapped for a symlink meanwhile). */
    int r = !copy || !spec || !id ? HM_E_NOMEM : hm_host_path_verify(spec, &err);
    if (r == 0)
      r = hm_fs_hotplugger_reattach(hp, spec, copy, &err);
    pthread_mutex_lock(&inst->lock);
    e = id ? hm_inst_find_id(inst, id) : NULL;
    if (e) {
      e->busy = 0;
      if (r == 0) {
        hm_attachment_free(e->att);
        e->att = copy;
        copy = NULL;
        hm_info("%s at %s is back (re-attached)", e->id, e->spec->guest_path);
        hm_inst_set_state_locked(inst, e, HM_STATE_MOUNTED, NULL);
      } else {
        hm_debug("re-attach of %s failed: %s", e->id, hm_error_message(err));
      }
    }
    pthread_mutex_unlock(&inst->lock);
    hm_error_free(err);
    hm_attachment_free(copy);
    hm_mount_spec_free(spec);
    free(id);
  }
}

static void *monitor_main(void *arg) {
  hm_instance *inst = arg;
  watch *w = NULL;
  size_t nw = 0;
  int64_t next_guest = hm_now_ms() + GUEST_CHECK_MS;
  for (;;) {
    pthread_mutex_lock(&inst->lock);
    int stop = inst->stopping;
    pthread_mutex_unlock(&inst->lock);
    if (stop)
      break;
    refresh(inst, &w, &nw);
    struct pollfd *pfd = calloc(nw + 1, sizeof(*pfd));
    if (!pfd)
      break;
    pfd[0].fd = inst->wake.rfd;
    pfd[0].events = POLLIN;
    for (size_t i = 0; i < nw; i++) {
      pfd[i + 1].fd = w[i].fd; /* -1 is ignored by poll */
      pfd[i + 1].events = POLLIN;
    }
    int64_t left = next_guest - hm_now_ms();
    int n = poll(pfd, nw + 1, left > 0 ? (int)left : 0);
    if (n > 0 && (pfd[0].revents & POLLIN) && hm_wake_drain(&inst->wake) < 0)
      hm_debug("monitor: wake read: %s", strerror(errno));
    for (size_t i = 0; n > 0 && i < nw; i++) {
      if (!pfd[i + 1].revents)
        continue;
      fired(inst, w[i].id);
      /* Fired once is enough: stop watching until the entry is re-armed. */
      close(w[i].fd);
      w[i].fd = -1;
    }
    free(pfd);
    if (hm_now_ms() >= next_guest) {
      check_guest(inst);
      next_guest = hm_now_ms() + GUEST_CHECK_MS;
    }
  }
  for (size_t i = 0; i < nw; i++) {
    if (w[i].fd >= 0)
      close(w[i].fd);
    free(w[i].id);
  }
  free(w);
  return NULL;
}

/* Re-attaching waits on the network (an SSH connect to a guest whose link
 * is down takes its whole timeout), so it runs on a thread of its own: the
 * monitor's verdicts on other mounts never wait behind it. It looks once a
 * second; stopping waits for at most the attempt in flight. */
static void *reattach_main(void *arg) {
  hm_instance *inst = arg;
  pthread_mutex_lock(&inst->lock);
  while (!inst->stopping) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    pthread_cond_timedwait(&inst->reattach_cond, &inst->lock, &until);
    if (inst->stopping)
      break;
    pthread_mutex_unlock(&inst->lock);
    reattach_persistent(inst);
    pthread_mutex_lock(&inst->lock);
  }
  pthread_mutex_unlock(&inst->lock);
  return NULL;
}

void hm_inst_monitor_wake(hm_instance *inst) {
  if (inst->wake.wfd >= 0 && hm_wake_signal(&inst->wake) < 0)
    hm_debug("monitor: wake: %s", strerror(errno));
}

int hm_inst_monitor_start(hm_instance *inst, hm_error **err) {
  if (hm_wake_open(&inst->wake) < 0)
    return HM_ERR(err, -errno, "cannot make the monitor's wake-up fd: %s", strerror(errno));
  /* The monitor must not take signals meant for the host program. */
  pthread_cond_init(&inst->reattach_cond, NULL);
  int r = hm_thread_create(&inst->monitor, monitor_main, inst);
  int r2 = r == 0 ? hm_thread_create(&inst->reattacher, reattach_main, inst) : r;
  if (r == 0)
    inst->monitor_running = 1;
  if (r2 == 0)
    inst->reattacher_running = 1;
  if (r != 0 || r2 != 0) {
    hm_inst_monitor_stop(inst);
    return HM_ERR(err, -(r ? r : r2), "cannot start the monitor threads: %s", strerror(r ? r : r2));
  }
  return 0;
}

void hm_inst_monitor_stop(hm_instance *inst) {
  pthread_mutex_lock(&inst->lock);
  inst->stopping = 1;
  pthread_cond_broadcast(&inst->reattach_cond);
  pthread_mutex_unlock(&inst->lock);
  if (inst->monitor_running) {
    hm_inst_monitor_wake(inst);
    pthread_join(inst->monitor, NULL);
    inst->monitor_running = 0;
  }
  if (inst->reattacher_running) {
    pthread_join(inst->reattacher, NULL);
    inst->reattacher_running = 0;
  }
  pthread_cond_destroy(&inst->reattach_cond);
  hm_wake_close(&inst->wake);
}
