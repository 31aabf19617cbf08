/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The hot-mount engine of one VM: registry + backend + guest agent.
 *
 * Locking: `lock` guards the registry (entries, next_id) and the state file;
 * it is held only for bookkeeping, never while waiting on QEMU or the guest,
 * so list answers while an add waits. An entry in state attaching/detaching is
 * "busy": a second operation on the same mount point is refused at once
 * (HM_E_EXISTS for add, HM_E_BUSY for remove) instead of queueing.
 * `agent_lock` (a rwlock) lets many operations use the agent connection while
 * a reconnect, which replaces it, waits for them.
 */
#include "driver_internal.h"
#include "guest_path.h"
#include "mount_internal.h"
#include "state.h"
#include "status_internal.h"
#include "instance_internal.h"
#include "notify_link.h"

#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void hm_inst_entry_free(hm_entry *e) {
  if (!e)
    return;
  hm_inst_notify_stop(e);
  free(e->id);
  free(e->reason);
  hm_mount_spec_free(e->spec);
  hm_attachment_free(e->att);
  free(e);
}

hm_fs_hotplugger *hm_inst_backend(hm_instance *inst, int type) {
  for (size_t i = 0; i < inst->n_backends; i++)
    if (hm_fs_hotplugger_supports(inst->backends[i], type))
      return inst->backends[i];
  return inst->hp;
}

hm_entry *hm_inst_find_entry(hm_instance *inst, const char *guest_path) {
  for (size_t i = 0; i < inst->n_entries; i++)
    if (!inst->entries[i]->retired && strcmp(inst->entries[i]->spec->guest_path, guest_path) == 0)
      return inst->entries[i];
  return NULL;
}

hm_entry *hm_inst_find_id(hm_instance *inst, const char *id) {
  for (size_t i = 0; i < inst->n_entries; i++)
    if (strcmp(inst->entries[i]->id, id) == 0)
      return inst->entries[i];
  return NULL;
}

/* A hot-mount may not sit inside another, nor contain one: the inner one
 * would be created inside the outer share (on the host!) or hidden by it. */
static hm_entry *find_overlap(hm_instance *inst, const char *p) {
  size_t pl = strlen(p);
  for (size_t i = 0; i < inst->n_entries; i++) {
    if (inst->entries[i]->retired)
      continue;
    const char *q = inst->entries[i]->spec->guest_path;
    size_t ql = strlen(q);
    size_t n = pl < ql ? pl : ql;
    if (strncmp(p, q, n) == 0 && (pl == ql || (pl > ql ? p[ql] : q[pl]) == '/'))
      return inst->entries[i];
  }
  return NULL;
}

/* inner is outer or below it (both absolute and normal). */
static int path_within(const char *inner, const char *outer) {
  size_t n = strlen(outer);
  if (n == 1 && outer[0] == '/')
    return 1;
  return strncmp(inner, outer, n) == 0 && (inner[n] == '\0' || inner[n] == '/');
}

/* A host directory inside another share, either way: the inner share's
 * read-only promise means nothing when the outer one is writable, and a
 * guest that renames inside the outer one moves or replaces the inner
 * one's root under its helper. The very same directory shared again (at
 * another mount point) is allowed: each mount then serves the same tree,
 * with the access each request asked for. */
static hm_entry *find_host_overlap(hm_instance *inst, const char *host) {
  for (size_t i = 0; i < inst->n_entries; i++) {
    const char *q = inst->entries[i]->spec->host_path;
    if (!inst->entries[i]->retired && q && strcmp(q, host) != 0 &&
        (path_within(host, q) || path_within(q, host)))
      return inst->entries[i];
  }
  return NULL;
}

/*
 * Directories no share may contain. The instance directory, read-only or
 * not: it holds the state, the log and the sockets of QEMU and the agent
 * (a writable share would let the guest replace them; a read-only one
 * shows it the log). The home directory of the user the daemon runs as,
 * when writable: a guest that writes ~/.bashrc or ~/.ssh runs code as that
 * user on the host. Compared by resolved path.
 */
static int check_host_reserved(hm_instance *inst, const hm_mount_spec *spec, hm_error **err) {
  char *idir = realpath(inst->dir, NULL);
  int r = 0;
  const char *d = idir ? idir : inst->dir;
  if (path_within(d, spec->host_path))
    r = HM_ERR(err, HM_E_INVALID,
               "host path %s contains the instance directory %s (its state, log and the "
               "sockets of QEMU and the agent): share a directory that does not",
               spec->host_path, d);
  free(idir);
  if (r < 0 || !spec->writable)
    return r;
  /* The account's home, and $HOME when it points elsewhere (sudo -E). */
  struct passwd pw, *res = NULL;
  char buf[4096];
  const char *homes[2] = {NULL, getenv("HOME")};
  if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) == 0 && res)
    homes[0] = res->pw_dir;
  for (size_t i = 0; i < 2 && r == 0; i++) {
    char *home = homes[i] && homes[i][0] == '/' ? realpath(homes[i], NULL) : NULL;
    if (home && strcmp(home, "/") != 0 && path_within(home, spec->host_path))
      r = HM_ERR(err, HM_E_INVALID,
                 "host path %s contains the home directory %s of the user hotmount runs as: a "
                 "writable share of it lets the guest run code on the host as that user (via "
                 "its shell start-up files or ~/.ssh); share a subdirectory, or share it "
                 "read-only",
                 spec->host_path, home);
    free(home);
  }
  return r;
}

void hm_inst_drop_entry(hm_instance *inst, hm_entry *e) {
  for (size_t i = 0; i < inst->n_entries; i++) {
    if (inst->entries[i] == e) {
      memmove(&inst->entries[i], &inst->entries[i + 1],
              (inst->n_entries - i - 1) * sizeof(hm_entry *));
      inst->n_entries--;
      hm_inst_notify_stop(e);
      if (!e->retired)
        hm_inst_event_locked(inst, e, e->state, HM_STATE_REMOVED);
      hm_inst_entry_free(e);
      return;
    }
  }
}

/* Called with lock held. A failed save is logged, not fatal: the mount
 * itself is fine, and the next save retries. */
void hm_inst_save_locked(hm_instance *inst) {
  hm_error *err = NULL;
  if (hm_state_save(inst->state_path, inst->next_id, inst->guest_boot_id, inst->entries,
                    inst->n_entries, &err) < 0)
    hm_warn("%s", hm_error_message(err));
  hm_error_free(err);
}

void hm_inst_set_state_locked(hm_instance *inst, hm_entry *e, int state, const char *reason) {
  char *copy = reason ? strdup(reason) : NULL; /* reason may be e->reason */
  int old_state = e->state;
  if (state == HM_STATE_MOUNTED && e->state != HM_STATE_MOUNTED)
    e->mounted_at = hm_now_ms();
  e->state = state;
  free(e->reason);
  e->reason = copy;
  hm_inst_notify_sync_locked(inst, e);
  hm_inst_save_locked(inst);
  hm_inst_event_locked(inst, e, old_state, state);
}

int hm_instance_new(hm_instance **out, const char *dir, hm_fs_hotplugger *hp, hm_error **err) {
  hm_instance *inst = NULL;
  int r;
  if (!out || !dir || !hp) {
    r = HM_ERR(err, HM_E_INVALID, "out, dir and hp must not be NULL");
    goto fail;
  }
  if (!(inst = calloc(1, sizeof(*inst)))) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  inst->hp = hp;
  inst->backends[inst->n_backends++] = hp;
  hp = NULL;
  inst->mount_timeout_ms = 20000;
  inst->next_id = 1;
  inst->wake = HM_WAKE_NONE;
  pthread_mutex_init(&inst->lock, NULL);
  pthread_rwlock_init(&inst->agent_lock, NULL);
  if (!(inst->dir = strdup(dir)) || asprintf(&inst->agent_path, "%s/agent.sock", dir) < 0 ||
      asprintf(&inst->state_path, "%s/state.json", dir) < 0) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  /* state.json and the sockets are only as trustworthy as the directory
   * holding them (hotmountd checks before creating its own files too). A
   * directory that does not exist yet holds nothing to distrust. */
  int dfd = hm_dir_open_private(dir, 0, err);
  if (dfd == HM_E_NOT_FOUND) {
    hm_error_free(err ? *err : NULL);
    if (err)
      *err = NULL;
  } else if (dfd < 0) {
    r = dfd;
    goto fail;
  } else {
    close(dfd);
  }
  r = hm_state_load(inst->state_path, &inst->next_id, &inst->guest_boot_id, &inst->entries,
                    &inst->n_entries, err);
  if (r < 0)
    goto fail;
  /* Entries an earlier process left attaching/detaching stay so: not busy
   * here, so remove finishes them, and hm_instance_reconcile settles them
   * against what QEMU and the guest hold. */
  inst->wake = HM_WAKE_NONE;
  if ((r = hm_inst_monitor_start(inst, err)) < 0)
    goto fail;
  *out = inst;
  return 0;
fail:
  hm_fs_hotplugger_free(hp);
  hm_instance_free(inst);
  return r;
}

void hm_instance_free(hm_instance *inst) {
  if (!inst)
    return;
  hm_inst_events_free(inst); /* waits for async work: before anything goes */
  hm_inst_monitor_stop(inst);
  /* Watchers send through the agent: they stop before it goes. */
  for (size_t i = 0; i < inst->n_entries; i++)
    hm_inst_notify_stop(inst->entries[i]);
  hm_agent_free(inst->agent);
  for (size_t i = 0; i < inst->n_entries; i++)
    hm_inst_entry_free(inst->entries[i]);
  free(inst->entries);
  for (size_t i = 0; i < inst->n_backends; i++)
    hm_fs_hotplugger_free(inst->backends[i]);
  pthread_mutex_destroy(&inst->lock);
  pthread_rwlock_destroy(&inst->agent_lock);
  free(inst->guest_boot_id);
  free(inst->dir);
  free(inst->agent_path);
  free(inst->state_path);
  free(inst);
}

int hm_instance_add_backend(hm_instance *inst, hm_fs_hotplugger *hp, hm_error **err) {
  if (!inst || !hp) {
    hm_fs_hotplugger_free(hp);
    return HM_ERR(err, HM_E_INVALID, "inst and hp must not be NULL");
  }
  if (inst->n_backends == HM_INST_MAX_BACKENDS) {
    hm_fs_hotplugger_free(hp);
    return HM_ERR(err, HM_E_INVALID, "an instance takes at most %d backends", HM_INST_MAX_BACKENDS);
  }
  inst->backends[inst->n_backends++] = hp;
  return 0;
}

int hm_instance_set_mount_timeout(hm_instance *inst, int timeout_ms, hm_error **err) {
  if (!inst || timeout_ms <= 0)
    return HM_ERR(err, HM_E_INVALID, "timeout must be positive");
  inst->mount_timeout_ms = timeout_ms;
  return 0;
}

/* Returns with agent_lock held for reading and a live inst->agent, or fails
 * with no lock held. */
int hm_inst_agent_acquire(hm_instance *inst, int timeout_ms, hm_error **err) {
  pthread_rwlock_rdlock(&inst->agent_lock);
  if (inst->agent && hm_agent_is_connected(inst->agent))
    return 0;
  pthread_rwlock_unlock(&inst->agent_lock);

  pthread_rwlock_wrlock(&inst->agent_lock);
  if (!inst->agent || !hm_agent_is_connected(inst->agent)) {
    hm_agent_free(inst->agent);
    inst->agent = NULL;
    int r = hm_agent_connect(&inst->agent, inst->agent_path, timeout_ms, err);
    if (r < 0) {
      pthread_rwlock_unlock(&inst->agent_lock);
      return hm_error_prefix(err, HM_E_NOT_READY, "hm_instance", "guest agent not reachable");
    }
  }
  pthread_rwlock_unlock(&inst->agent_lock);
  /* Someone may replace it between these two lines; then the call fails
   * with NOT_READY and the caller reports it, which is fine. */
  pthread_rwlock_rdlock(&inst->agent_lock);
  if (!inst->agent) {
    pthread_rwlock_unlock(&inst->agent_lock);
    return HM_ERR(err, HM_E_NOT_READY, "guest agent connection lost");
  }
  return 0;
}

void hm_inst_agent_release(hm_instance *inst) {
  pthread_rwlock_unlock(&inst->agent_lock);
}

int hm_instance_connect_agent(hm_instance *inst, int timeout_ms, hm_error **err) {
  if (!inst)
    return HM_ERR(err, HM_E_INVALID, "inst is NULL");
  int r = hm_inst_agent_acquire(inst, timeout_ms, err);
  if (r == 0)
    hm_inst_agent_release(inst);
  return r;
}

static int snapshot(hm_mount **out, const hm_entry *e) {
  return hm_mount_build(out, e->id, e->spec, e->att ? e->att->tag : NULL,
                        e->att ? hm_attachment_get_data(e->att, "via") : NULL, e->state, e->reason);
}

int hm_instance_add(hm_instance *inst, hm_mount **out, const hm_mount_spec *request,
                    hm_error **err) {
  hm_mount_spec *spec = NULL;
  hm_attachment *att = NULL;
  hm_entry *e = NULL;
  int r;
  if (!inst || !request)
    return HM_ERR(err, HM_E_INVALID, "inst and spec must not be NULL");
  if ((r = hm_mount_spec_copy(&spec, request, err)) < 0)
    return r;
  if ((r = hm_mount_spec_validate(spec, err)) < 0)
    goto fail_spec;
  hm_fs_hotplugger *hp = hm_inst_backend(inst, spec->type);
  if (!hm_fs_hotplugger_supports(hp, spec->type)) {
    r = HM_ERR(err, HM_E_UNSUPPORTED, "the %s backend cannot hot-mount %s%s",
               hm_fs_hotplugger_get_name(hp), hm_mount_type_name(spec->type),
               spec->type == HM_TYPE_REVERSE_SSHFS
                   ? " (reverse-sshfs needs the instance's SSH settings: hotmountd --ssh-host ...)"
                   : "");
    goto fail_spec;
  }
  if ((r = hm_fs_hotplugger_validate(hp, spec, err)) < 0)
    goto fail_spec;
  /* Backends that mount in the guest themselves need no agent. */
  int own_mount = hm_fs_hotplugger_guest_mounts(hp);

  if ((r = check_host_reserved(inst, spec, err)) < 0)
    goto fail_spec;

  /* 1. Reserve the mount point. */
  pthread_mutex_lock(&inst->lock);
  hm_entry *other = find_overlap(inst, spec->guest_path);
  if (other) {
    r = strcmp(other->spec->guest_path, spec->guest_path) == 0
            ? HM_ERRC(err, HM_E_EXISTS, HM_ECLASS_MOUNT, "%s is already %s (%s)", spec->guest_path,
                      other->state == HM_STATE_ATTACHING ? "being mounted" : "a hot-mount",
                      other->id)
            : HM_ERRC(err, HM_E_EXISTS, HM_ECLASS_MOUNT, "%s overlaps the hot-mount at %s (%s)",
                      spec->guest_path, other->spec->guest_path, other->id);
    pthread_mutex_unlock(&inst->lock);
    goto fail_spec;
  }
  hm_entry *host_other = find_host_overlap(inst, spec->host_path);
  if (host_other) {
    r = HM_ERRC(err, HM_E_EXISTS, HM_ECLASS_MOUNT,
                "host path %s overlaps %s, already shared at %s (%s): a share may not lie "
                "inside another one, nor contain one",
                spec->host_path, host_other->spec->host_path, host_other->spec->guest_path,
                host_other->id);
    pthread_mutex_unlock(&inst->lock);
    goto fail_spec;
  }
  hm_entry **entries = realloc(inst->entries, (inst->n_entries + 1) * sizeof(*entries));
  e = calloc(1, sizeof(*e));
  if (entries)
    inst->entries = entries;
  if (!entries || !e || asprintf(&e->id, "hm-%u", inst->next_id) < 0) {
    free(e);
    pthread_mutex_unlock(&inst->lock);
    r = HM_ERR_NOMEM(err);
    goto fail_spec;
  }
  inst->next_id++;
  e->spec = spec;
  spec = NULL;
  e->state = HM_STATE_ATTACHING;
  e->busy = 1;
  inst->entries[inst->n_entries++] = e;
  hm_inst_save_locked(inst);
  hm_inst_event_locked(inst, e, HM_STATE_REMOVED, HM_STATE_ATTACHING);
  pthread_mutex_unlock(&inst->lock);
  hm_fault("add:reserved");

  /* 2. The guest must be able to answer before we plug anything in. */
  if (!own_mount && (r = hm_inst_agent_acquire(inst, HM_AGENT_CONNECT_TIMEOUT_MS, err)) < 0)
    goto fail_entry;

  /* 3. Backend attach (rolls itself back on failure). The directory is
   * checked again right before a helper opens it by path: it must be the
   * one validated, not something swapped in meanwhile. */
  if ((r = hm_attachment_new(&att, e->id, NULL)) < 0) {
    r = HM_ERR_NOMEM(err);
    goto fail_agent;
  }
  att->type = e->spec->type;
  if ((r = hm_host_path_verify(e->spec, err)) < 0)
    goto fail_agent;
  if ((r = hm_fs_hotplugger_attach(hp, e->spec, att, err)) < 0)
    goto fail_agent;
  pthread_mutex_lock(&inst->lock);
  e->att = att;
  hm_inst_save_locked(inst);
  pthread_mutex_unlock(&inst->lock);
  hm_fault("add:attached");

  /* 4. Guest mount (already made by a backend that mounts itself). */
  if (own_mount)
    goto mounted;
  /* The backend knows the transport's guest-side options (9p: version,
   * msize, cache); virtiofs needs none. */
  r = hm_agent_mount_att(inst->agent, e->spec->type, att, e->spec->guest_path, !e->spec->writable,
                         inst->mount_timeout_ms, err);
  char *boot = r == 0 ? hm_agent_boot_id(inst->agent) : NULL;
  hm_inst_agent_release(inst);
  if (boot) {
    /* The boot this mount belongs to: a later change means a reboot. */
    pthread_mutex_lock(&inst->lock);
    if (!inst->guest_boot_id) {
      inst->guest_boot_id = boot;
      boot = NULL;
    }
    pthread_mutex_unlock(&inst->lock);
    free(boot);
  }
  if (r < 0)
    goto fail_attached;

mounted:
  hm_fault("add:guest-mounted");

  /* 5. Done. */
  pthread_mutex_lock(&inst->lock);
  /* Said while e is still ours: once busy is 0 a concurrent remove may
   * free it. */
  hm_info("mounted %s at %s (%s, %s)", e->spec->host_path, e->spec->guest_path, e->id,
          e->spec->writable ? "rw" : "ro");
  e->busy = 0;
  hm_inst_set_state_locked(inst, e, HM_STATE_MOUNTED, NULL);
  r = out ? snapshot(out, e) : 0;
  pthread_mutex_unlock(&inst->lock);
  hm_inst_monitor_wake(inst);
  if (r < 0)
    return HM_ERR_NOMEM(err);
  return 0;

fail_attached : {
  hm_error *derr = NULL;
  if (hm_fs_hotplugger_detach(hp, att, &derr) < 0) {
    /* Keep the entry so that remove can retry the cleanup later. */
    hm_warn("rollback of %s failed: %s", e->id, hm_error_message(derr));
    pthread_mutex_lock(&inst->lock);
    e->busy = 0;
    hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN, hm_error_message(derr));
    pthread_mutex_unlock(&inst->lock);
    hm_error_free(derr);
    return r;
  }
  goto fail_entry;
}
fail_agent:
  if (!own_mount)
    hm_inst_agent_release(inst);
fail_entry:
  pthread_mutex_lock(&inst->lock);
  if (e->att != att)
    hm_attachment_free(att);
  hm_inst_drop_entry(inst, e);
  hm_inst_save_locked(inst);
  pthread_mutex_unlock(&inst->lock);
  return r;
fail_spec:
  hm_mount_spec_free(spec);
  return r;
}

/* True when the guest lists a mount at target, or when it cannot tell. */
int hm_inst_guest_has_mount(hm_agent *agent, const char *target) {
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  if (hm_agent_list(agent, &v, &n, NULL) < 0)
    return 1;
  int found = 0;
  for (size_t i = 0; i < n; i++)
    found |= strcmp(v[i].target, target) == 0;
  hm_agent_list_free(v, n);
  return found;
}

int hm_instance_remove(hm_instance *inst, const char *guest_path, unsigned flags, hm_error **err) {
  char *norm = NULL;
  int r;
  if (!inst || !guest_path)
    return HM_ERR(err, HM_E_INVALID, "inst and guest_path must not be NULL");
  if ((r = hm_guest_path_normalize(&norm, guest_path, err)) < 0)
    return r;

  pthread_mutex_lock(&inst->lock);
  hm_entry *e = hm_inst_find_entry(inst, norm);
  if (!e) {
    pthread_mutex_unlock(&inst->lock);
    r = HM_ERRC(err, HM_E_NOT_FOUND, HM_ECLASS_MOUNT, "nothing is hot-mounted at %s", norm);
    free(norm);
    return r;
  }
  free(norm);
  if (e->busy) {
    /* Said under the lock: e belongs to the add or remove under way, which
     * may free it once we let go. */
    r = HM_ERRC(err, HM_E_BUSY, HM_ECLASS_MOUNT, "%s is being %s", e->spec->guest_path,
                e->state == HM_STATE_ATTACHING ? "mounted" : "removed");
    pthread_mutex_unlock(&inst->lock);
    return r;
  }
  int prev_state = e->state;
  /* A broken mount's backend may be dead: a plain unmount would wait on it
   * forever, a lazy one lets go at once. */
  if (prev_state == HM_STATE_BROKEN)
    flags |= HM_REMOVE_LAZY;
  e->busy = 1;
  hm_inst_set_state_locked(inst, e, HM_STATE_DETACHING, NULL);
  pthread_mutex_unlock(&inst->lock);
  hm_fault("remove:detaching");

  /* 1. The guest lets go first: pulling the device from under a mounted
   * file system hangs guest processes. */
  hm_fs_hotplugger *hp = hm_inst_backend(inst, e->spec->type);
  hm_error *uerr = NULL;
  if (hm_fs_hotplugger_guest_mounts(hp)) {
    /* The backend mounted it, the backend unmounts it (no agent needed). */
    r = e->att ? hm_fs_hotplugger_guest_umount(hp, e->att, flags, &uerr) : 0;
  } else if ((r = hm_inst_agent_acquire(inst, HM_AGENT_CONNECT_TIMEOUT_MS, &uerr)) == 0) {
    r = hm_agent_umount(inst->agent, e->spec->guest_path, flags, HM_AGENT_UMOUNT_TIMEOUT_MS, &uerr);
    /* Not mounted in the guest (an add cut short, a guest that unmounted it
     * itself, a rebooted guest) is what we want: go on with the host side. */
    if (r == HM_E_AGENT && !hm_inst_guest_has_mount(inst->agent, e->spec->guest_path)) {
      hm_info("%s was not mounted in the guest; cleaning up the host side", e->id);
      hm_error_free(uerr);
      uerr = NULL;
      r = 0;
    }
    hm_inst_agent_release(inst);
  }
  if (r < 0 && !(flags & HM_REMOVE_FORCE)) {
    if (err && !*err)
      *err = uerr;
    else
      hm_error_free(uerr);
    /* The message reads e while it is still ours (busy): after that a
     * concurrent remove may free it. */
    r = hm_error_prefix(err, r, __func__, "guest unmount of %s failed (retry with force)",
                        e->spec->guest_path);
    pthread_mutex_lock(&inst->lock);
    e->busy = 0;
    hm_inst_set_state_locked(inst, e, prev_state, e->reason);
    pthread_mutex_unlock(&inst->lock);
    return r;
  }
  if (r < 0)
    hm_warn("forced remove of %s: guest unmount failed: %s", e->id, hm_error_message(uerr));
  hm_error_free(uerr);
  hm_fault("remove:guest-unmounted");

  /* 2. Backend detach. Without a record (an add cut short before the
   * backend reported back) the backend still knows what to look for by id. */
  hm_attachment *tmp = NULL;
  hm_attachment *att = e->att;
  if (!att && (r = hm_attachment_new(&tmp, e->id, err)) < 0)
    goto broken;
  if (tmp)
    tmp->type = e->spec->type;
  r = hm_fs_hotplugger_detach(hp, att ? att : tmp, err);
  const char *retired = hm_attachment_get_retired(att ? att : tmp);
  if (r == 0 && retired && att) {
    /* The backend could not unplug it without hanging the guest: the mount
     * is gone from the guest and from list, the record stays (hidden) so the
     * device is not reused or pulled later by a reconcile. */
    pthread_mutex_lock(&inst->lock);
    hm_warn("removed %s from %s, but its device stays plugged: %s", e->id, e->spec->guest_path,
            retired);
    e->busy = 0;
    e->retired = 1;
    hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN, retired);
    pthread_mutex_unlock(&inst->lock);
    hm_attachment_free(tmp);
    hm_inst_monitor_wake(inst);
    return 0;
  }
  hm_attachment_free(tmp);
  if (r < 0)
    goto broken;

  /* 3. Forget it. */
  pthread_mutex_lock(&inst->lock);
  hm_info("removed %s from %s", e->id, e->spec->guest_path);
  hm_inst_drop_entry(inst, e);
  hm_inst_save_locked(inst);
  pthread_mutex_unlock(&inst->lock);
  hm_inst_monitor_wake(inst);
  return 0;

broken:
  pthread_mutex_lock(&inst->lock);
  e->busy = 0;
  hm_inst_set_state_locked(inst, e, HM_STATE_BROKEN,
                           err && *err ? hm_error_message(*err) : "detach failed");
  pthread_mutex_unlock(&inst->lock);
  return r;
}

int hm_instance_list(hm_instance *inst, hm_mount_list **out, hm_error **err) {
  hm_mount_list *l = NULL;
  if (!inst || !out)
    return HM_ERR(err, HM_E_INVALID, "inst and out must not be NULL");
  if (hm_mount_list_new(&l) < 0)
    return HM_ERR_NOMEM(err);
  pthread_mutex_lock(&inst->lock);
  for (size_t i = 0; i < inst->n_entries; i++) {
    hm_mount *m = NULL;
    if (inst->entries[i]->retired)
      continue;
    if (snapshot(&m, inst->entries[i]) < 0 || hm_mount_list_take(l, m) < 0) {
      pthread_mutex_unlock(&inst->lock);
      hm_mount_list_free(l);
      return HM_ERR_NOMEM(err);
    }
  }
  pthread_mutex_unlock(&inst->lock);
  *out = l;
  return 0;
}

/* Where a helper program is, or "" (for status: which transports this host
 * can serve). */
static const char *find_program(const char *const *candidates, char *buf, size_t len) {
  for (const char *const *c = candidates; *c; c++) {
    if (strchr(*c, '/')) {
      if (access(*c, X_OK) == 0)
        return *c;
      continue;
    }
    const char *path = getenv("PATH");
    if (!path)
      path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
      const char *colon = strchr(p, ':');
      size_t n = colon ? (size_t)(colon - p) : strlen(p);
      if ((size_t)snprintf(buf, len, "%.*s/%s", (int)n, p, *c) < len && access(buf, X_OK) == 0)
        return buf;
      p += n + (colon != NULL);
    }
  }
  return "";
}

int hm_instance_status(hm_instance *inst, hm_status **out, hm_error **err) {
  hm_status *st = NULL;
  if (!inst || !out)
    return HM_ERR(err, HM_E_INVALID, "inst and out must not be NULL");
  if (hm_status_new(&st) < 0)
    return HM_ERR_NOMEM(err);
  size_t broken = 0, retired = 0, n = 0;
  pthread_mutex_lock(&inst->lock);
  for (size_t i = 0; i < inst->n_entries; i++) {
    retired += inst->entries[i]->retired;
    n += !inst->entries[i]->retired;
    broken += !inst->entries[i]->retired && inst->entries[i]->state == HM_STATE_BROKEN;
    char key[128], health[512];
    if (!inst->entries[i]->retired &&
        hm_inst_notify_describe(inst->entries[i], health, sizeof(health))) {
      snprintf(key, sizeof(key), "notify.%s", inst->entries[i]->id);
      hm_status_setf(st, key, "%s", health);
    }
  }
  pthread_mutex_unlock(&inst->lock);
  int agent_up = 0;
  char agent_version[128] = "";
  if (pthread_rwlock_tryrdlock(&inst->agent_lock) == 0) {
    agent_up = inst->agent && hm_agent_is_connected(inst->agent);
    if (agent_up && hm_agent_get_version(inst->agent))
      snprintf(agent_version, sizeof(agent_version), "%s", hm_agent_get_version(inst->agent));
    pthread_rwlock_unlock(&inst->agent_lock);
  }
  static const char *const diod[] = {"diod", "/usr/sbin/diod", NULL};
  static const char *const sftp[] = {"/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                                     "/usr/lib/ssh/sftp-server", "sftp-server", NULL};
  char b1[4096], b2[4096];
  int r = 0;
  r = r ?: hm_status_setf(st, "version", "%s", hm_version());
  r = r ?: hm_status_setf(st, "instance", "%s", inst->dir);
  r = r ?: hm_status_setf(st, "backend", "%s", hm_fs_hotplugger_get_name(inst->hp));
  r = r ?: hm_status_setf(st, "mounts", "%zu", n);
  r = r ?: hm_status_setf(st, "mountsBroken", "%zu", broken);
  r = r ?: hm_status_setf(st, "devicesRetired", "%zu", retired);
  /* A never-connected agent is "unknown", not "disconnected": connections
   * are made on demand. */
  r = r
          ?: hm_status_setf(st, "agent", "%s",
                            agent_up      ? "connected"
                            : inst->agent ? "disconnected"
                                          : "unknown");
  if (agent_version[0])
    r = r ?: hm_status_setf(st, "agentVersion", "%s", agent_version);
  r = r ?: hm_status_setf(st, "diod", "%s", find_program(diod, b1, sizeof(b1)));
  r = r ?: hm_status_setf(st, "sftpServer", "%s", find_program(sftp, b2, sizeof(b2)));
  if (r < 0) {
    hm_status_free(st);
    return HM_ERR_NOMEM(err);
  }
  char names[256] = "";
  for (size_t i = 0; i < inst->n_backends; i++) {
    size_t l = strlen(names);
    snprintf(names + l, sizeof(names) - l, "%s%s", i ? "," : "",
             hm_fs_hotplugger_get_name(inst->backends[i]));
    hm_error *derr = NULL;
    if (hm_fs_hotplugger_describe(inst->backends[i], st, &derr) < 0) {
      char key[96] = "backendError";
      if (i)
        snprintf(key, sizeof(key), "backendError.%s", hm_fs_hotplugger_get_name(inst->backends[i]));
      hm_status_setf(st, key, "%s", hm_error_message(derr));
    }
    hm_error_free(derr);
  }
  hm_status_setf(st, "backends", "%s", names);
  *out = st;
  return 0;
}
