/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reconciliation: after a restart (or a lost state file) the registry is
 * settled against what QEMU, the host and the guest actually hold.
 *
 *   registry says   | found                          | then
 *   ----------------+--------------------------------+---------------------------
 *   attaching       | whole and mounted in the guest | adopt: mounted
 *   attaching       | anything less                  | roll back, forget
 *   detaching       | anything                       | finish the remove, forget
 *   mounted/broken  | whole and mounted in the guest | mounted
 *   mounted/broken  | backend part missing           | broken, with the reason
 *   mounted/broken  | not mounted in the guest       | broken (remove cleans up);
 *                   |                                | bind: forget (nothing on the host)
 *   (nothing)       | whole, mounted, hostPath known | adopt (state file was lost)
 *   (nothing)       | anything else                  | roll back
 *
 * Rolling back a device the guest may still use needs the guest agent (the
 * guest must unmount first): without it such entries are left broken with a
 * reason saying so, and nothing is pulled from under the guest.
 */
#include "driver_internal.h"
#include "guest_path.h"
#include "instance_internal.h"
#include "notify_link.h"
#include "mount_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct guest_view {
  int known; /* the agent answered */
  hm_agent_mount_info *v;
  size_t n;
} guest_view;

/*
 * The guest's mount list is the guest's word: a target is only compared or
 * adopted in its normal form, and one that is not normal already
 * ("/mnt//x/", "/mnt/./x", a ".." or control characters), or that names a
 * place no hot-mount may be (hm_guest_path_check), is dropped from the view
 * with a warning, as if the guest had not listed it.
 */
static void normalize_view(guest_view *g) {
  for (size_t i = 0; g->known && i < g->n; i++) {
    char *norm = NULL;
    const char *t = g->v[i].target;
    int ok = t && hm_guest_path_normalize(&norm, t, NULL) == 0 && strcmp(norm, t) == 0 &&
             hm_guest_path_check(norm, NULL) == 0;
    if (!ok && g->v[i].source && !strncmp(g->v[i].source, "hm-", 3)) {
      char *q = t ? hm_guest_path_quote(t) : NULL;
      hm_warn("reconcile: the guest lists %s at a target that is not a normal hot-mount path "
              "(%s); ignored",
              g->v[i].source, q ? q : "?");
      free(q);
    }
    /* An empty source matches no tag: the entry is out of the view. */
    if (!ok && g->v[i].source)
      g->v[i].source[0] = '\0';
    free(norm);
  }
}

/* Where the guest has tag mounted, or NULL. */
static const char *guest_target(const guest_view *g, const char *tag) {
  for (size_t i = 0; g->known && tag && i < g->n; i++)
    if (strcmp(g->v[i].source, tag) == 0 &&
        (!strcmp(g->v[i].fstype, "virtiofs") || !strcmp(g->v[i].fstype, "9p")))
      return g->v[i].target;
  return NULL;
}

/* A bind mount has no tag of its own (the guest lists the share's source):
 * it is the share-type mount at its mount point, which only hotmount makes. */
static const char *guest_bind_target(const guest_view *g, const char *guest_path) {
  for (size_t i = 0; g->known && i < g->n; i++)
    if (strcmp(g->v[i].target, guest_path) == 0 && g->v[i].source[0] &&
        strcmp(g->v[i].fstype, "fuse.sshfs") != 0)
      return g->v[i].target;
  return NULL;
}

/* What one backend's scan found: each attachment with the backend that
 * found it, which is the one to check it and roll it back. */
typedef struct scanned {
  hm_attachment *a;
  hm_fs_hotplugger *hp;
} scanned;

static hm_attachment *take_scanned(scanned *scan, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++) {
    if (scan[i].a && strcmp(scan[i].a->id, id) == 0) {
      hm_attachment *a = scan[i].a;
      scan[i].a = NULL;
      return a;
    }
  }
  return NULL;
}

/* Every backend's scan, in one array. A backend that cannot scan adds
 * nothing; one that fails fails the whole reconcile (nothing can be decided
 * without its view). */
static int scan_all(hm_instance *inst, scanned **out, size_t *nout, hm_error **err) {
  scanned *all = NULL;
  size_t n = 0;
  for (size_t b = 0; b < inst->n_backends; b++) {
    hm_fs_hotplugger *hp = inst->backends[b];
    hm_attachment **v = NULL;
    size_t nv = 0;
    int r = hm_fs_hotplugger_scan(hp, &v, &nv, err);
    if (r == HM_E_UNSUPPORTED) {
      hm_error_free(*err);
      *err = NULL;
      continue;
    }
    scanned *grown = r < 0 ? NULL : realloc(all, (n + nv + 1) * sizeof(*all));
    if (grown) {
      all = grown;
      for (size_t i = 0; i < nv; i++)
        all[n++] = (scanned){v[i], hp};
      free(v);
      continue;
    }
    for (size_t i = 0; i < nv; i++)
      hm_attachment_free(v[i]);
    free(v);
    for (size_t i = 0; i < n; i++)
      hm_attachment_free(all[i].a);
    free(all);
    if (r >= 0)
      r = HM_ERR_NOMEM(err);
    return hm_error_prefix(err, r, "hm_instance_reconcile", "cannot ask backend %s what it holds",
                           hm_fs_hotplugger_get_name(hp));
  }
  *out = all;
  *nout = n;
  return 0;
}

/* Guest unmount (when it has it) then backend detach. 0 when all is gone. */
static int roll_back(hm_instance *inst, hm_fs_hotplugger *hp, hm_attachment *att,
                     const char *target, const guest_view *g, char **why) {
  hm_error *err = NULL;
  if (target) {
    int r = hm_inst_agent_acquire(inst, HM_AGENT_CONNECT_TIMEOUT_MS, &err);
    if (r == 0) {
      r = hm_agent_umount(inst->agent, target, HM_REMOVE_LAZY, HM_AGENT_UMOUNT_TIMEOUT_MS, &err);
      hm_inst_agent_release(inst);
    }
    if (r < 0) {
      if (asprintf(why, "guest unmount of %s failed: %s", target, hm_error_message(err)) < 0)
        *why = NULL;
      hm_error_free(err);
      return r;
    }
  } else if (!g->known) {
    char *reason = NULL;
    /* Unknown guest, and a device might be in use there: do not pull it. */
    int whole = hm_fs_hotplugger_check(hp, att, &reason, NULL, NULL);
    free(reason);
    if (whole != 0) {
      *why = strdup("the guest agent is not reachable, so the device cannot be safely "
                    "unplugged yet; remove it when the guest is up");
      return HM_E_NOT_READY;
    }
  }
  int r = hm_fs_hotplugger_detach(hp, att, &err);
  if (r < 0 && asprintf(why, "%s", hm_error_message(err)) < 0)
    *why = NULL;
  hm_error_free(err);
  return r;
}

/*
 * Mounts of a backend that mounts over its own connection (reverse-sshfs):
 * their transport lived in the process that died, so there is nothing to
 * adopt. An interrupted add or remove is finished (guest unmount, detach);
 * a mount the registry says is mounted is re-established in place.
 */
static void settle_own(hm_fs_hotplugger *hp, hm_entry *e, int state, int *drop, int *new_state,
                       char **new_reason, hm_attachment **new_att) {
  hm_error *err = NULL;
  int r;
  if (state == HM_STATE_ATTACHING || state == HM_STATE_DETACHING) {
    r = hm_fs_hotplugger_guest_umount(hp, e->att, HM_REMOVE_LAZY, &err);
    if (r == 0)
      r = hm_fs_hotplugger_detach(hp, e->att, &err);
    if (r == 0) {
      hm_info("reconcile: %s (%s, interrupted) rolled back", e->id,
              state == HM_STATE_ATTACHING ? "add" : "remove");
      *drop = 1;
    } else {
      *new_state = HM_STATE_BROKEN;
      if (asprintf(new_reason, "interrupted %s could not be finished: %s",
                   state == HM_STATE_ATTACHING ? "add" : "remove", hm_error_message(err)) < 0)
        *new_reason = NULL;
    }
  } else if (state == HM_STATE_MOUNTED) {
    hm_attachment *a = hm_attachment_copy(e->att);
    r = a ? hm_fs_hotplugger_reattach(hp, e->spec, a, &err) : HM_ERR_NOMEM(&err);
    if (r == 0) {
      hm_info("reconcile: %s at %s re-established", e->id, e->spec->guest_path);
      *new_att = a;
      a = NULL;
    } else {
      *new_state = HM_STATE_BROKEN;
      if (asprintf(new_reason, "could not be re-established after a restart: %s",
                   hm_error_message(err)) < 0)
        *new_reason = NULL;
    }
    hm_attachment_free(a);
  }
  hm_error_free(err);
}

static unsigned id_number(const char *id) {
  return strncmp(id, "hm-", 3) == 0 ? (unsigned)strtoul(id + 3, NULL, 10) : 0;
}

int hm_instance_reconcile(hm_instance *inst, hm_error **err) {
  if (!inst)
    return HM_ERR(err, HM_E_INVALID, "inst is NULL");
  scanned *scan = NULL;
  size_t nscan = 0;
  guest_view g = {0};
  hm_error *e2 = NULL;
  int r = scan_all(inst, &scan, &nscan, &e2);
  if (r < 0) {
    if (err && !*err)
      *err = e2;
    else
      hm_error_free(e2);
    return r;
  }
  if (hm_inst_agent_acquire(inst, HM_AGENT_CONNECT_TIMEOUT_MS, &e2) == 0) {
    g.known = hm_agent_list(inst->agent, &g.v, &g.n, NULL) == 0;
    hm_inst_agent_release(inst);
    normalize_view(&g);
  } else {
    hm_info("reconcile: guest agent not reachable (%s); deciding from the host side only",
            hm_error_message(e2));
  }
  hm_error_free(e2);

  /* Entries are handled one by one; the lock is dropped around backend and
   * agent calls, with the entry marked busy so no request touches it. */
  pthread_mutex_lock(&inst->lock);
  for (size_t i = 0; i < inst->n_entries; i++) {
    hm_entry *e = inst->entries[i];
    if (e->busy)
      continue;
    unsigned num = id_number(e->id);
    if (num >= inst->next_id)
      inst->next_id = num + 1;
    hm_attachment *found = take_scanned(scan, nscan, e->id);
    if (!e->att && found) {
      e->att = found;
      found = NULL;
    } else if (e->att && found) {
      /* Fresh facts (a pid found by its markers) win over the record. */
      for (size_t k = 0; k < found->data.n; k++)
        hm_kv_set(&e->att->data, found->data.keys[k], found->data.values[k]);
    }
    hm_attachment_free(found);
    if (!e->att && hm_attachment_new(&e->att, e->id, NULL) < 0)
      continue;
    e->att->type = e->spec->type;
    /* Every entry is checked, rolled back and settled by its own backend. */
    hm_fs_hotplugger *own = hm_inst_backend(inst, e->spec->type);
    if (!e->att->tag)
      hm_attachment_set_tag(e->att, e->id, NULL);
    if (e->retired) {
      /* Only its device is left; once QEMU no longer has it (VM restarted),
       * the record can go. */
      hm_attachment *a = e->att;
      pthread_mutex_unlock(&inst->lock);
      char *reason = NULL;
      int gone = 0;
      hm_fs_hotplugger_check(own, a, &reason, &gone, NULL);
      free(reason);
      pthread_mutex_lock(&inst->lock);
      if (gone) {
        hm_info("reconcile: retired %s is gone from the VM; record dropped", e->id);
        hm_inst_drop_entry(inst, e);
        i--;
      }
      continue;
    }
    e->busy = 1;
    int state = e->state;
    pthread_mutex_unlock(&inst->lock);

    int drop = 0, new_state = state;
    char *new_reason = NULL;
    hm_attachment *new_att = NULL;
    /* The shared directory must still be the one validated: a path whose
     * parent was swapped for a symlink would have a re-attach serve
     * something else. The mount is not adopted or re-established then. */
    hm_error *verr = NULL;
    if (state != HM_STATE_DETACHING && hm_host_path_verify(e->spec, &verr) < 0) {
      new_state = HM_STATE_BROKEN;
      if (asprintf(&new_reason, "%s; remove it and add it again", hm_error_message(verr)) < 0)
        new_reason = NULL;
      hm_warn("reconcile: %s: %s", e->id, hm_error_message(verr));
      hm_error_free(verr);
      goto settled;
    }
    if (hm_fs_hotplugger_guest_mounts(own)) {
      settle_own(own, e, state, &drop, &new_state, &new_reason, &new_att);
      goto settled;
    }
    char *reason = NULL, *why = NULL;
    int whole = hm_fs_hotplugger_check(own, e->att, &reason, NULL, NULL);
    const char *target = e->spec->type == HM_TYPE_BIND ? guest_bind_target(&g, e->spec->guest_path)
                                                       : guest_target(&g, e->att->tag);
    int in_guest = target && strcmp(target, e->spec->guest_path) == 0;
    if ((state == HM_STATE_ATTACHING || state == HM_STATE_MOUNTED || state == HM_STATE_BROKEN) &&
        whole == 1 && in_guest) {
      new_state = HM_STATE_MOUNTED;
      if (state != HM_STATE_MOUNTED)
        hm_info("reconcile: %s at %s is whole: adopted", e->id, e->spec->guest_path);
    } else if (state == HM_STATE_ATTACHING || state == HM_STATE_DETACHING) {
      if (roll_back(inst, own, e->att, target, &g, &why) == 0) {
        hm_info("reconcile: %s (%s, interrupted) rolled back", e->id,
                state == HM_STATE_ATTACHING ? "add" : "remove");
        drop = 1;
      } else {
        new_state = HM_STATE_BROKEN;
        if (asprintf(&new_reason, "interrupted %s could not be finished: %s",
                     state == HM_STATE_ATTACHING ? "add" : "remove",
                     why ? why : "unknown error") < 0)
          new_reason = NULL;
      }
    } else if (whole == 0) {
      new_state = HM_STATE_BROKEN;
      new_reason = reason;
      reason = NULL;
    } else if (g.known && !in_guest && e->spec->type == HM_TYPE_BIND) {
      /* A bind has nothing on the host: gone from the guest, it is gone. */
      hm_info("reconcile: bind mount %s at %s is gone from the guest: dropped", e->id,
              e->spec->guest_path);
      drop = 1;
    } else if (g.known && !in_guest) {
      new_state = HM_STATE_BROKEN;
      new_reason = strdup("not mounted in the guest (the guest rebooted, or it was unmounted "
                          "there); remove it to clean up");
    }
    free(reason);
    free(why);

  settled:
    pthread_mutex_lock(&inst->lock);
    e->busy = 0;
    if (new_att) {
      hm_attachment_free(e->att);
      e->att = new_att;
    }
    if (drop) {
      hm_inst_drop_entry(inst, e);
      i--;
    } else if (new_state != state || new_reason) {
      hm_inst_set_state_locked(inst, e, new_state, new_reason);
    } else {
      hm_inst_notify_sync_locked(inst, e); /* still mounted: its watcher starts again */
    }
    free(new_reason);
  }
  hm_inst_save_locked(inst);
  pthread_mutex_unlock(&inst->lock);

  /* What the backend holds that the registry does not know. */
  for (size_t i = 0; i < nscan; i++) {
    hm_attachment *a = scan[i].a;
    hm_fs_hotplugger *hp = scan[i].hp;
    if (!a)
      continue;
    const char *host = hm_attachment_get_data(a, "hostPath");
    const char *w = hm_attachment_get_data(a, "writable");
    const char *target = guest_target(&g, a->tag);
    char *reason = NULL, *why = NULL;
    int whole = hm_fs_hotplugger_check(hp, a, &reason, NULL, NULL);
    free(reason);
    pthread_mutex_lock(&inst->lock);
    unsigned num = id_number(a->id);
    if (num >= inst->next_id)
      inst->next_id = num + 1;
    int known = hm_inst_find_id(inst, a->id) != NULL;
    int taken = target && hm_inst_find_entry(inst, target) != NULL;
    pthread_mutex_unlock(&inst->lock);
    if (known) {
      hm_attachment_free(a);
      continue;
    }
    hm_entry *e = NULL;
    if (whole == 1 && target && host && !taken && (e = calloc(1, sizeof(*e))) &&
        hm_mount_spec_new(&e->spec, NULL) == 0 && (e->id = strdup(a->id)) &&
        hm_mount_spec_set_host_path(e->spec, host, NULL) == 0 &&
        hm_mount_spec_set_guest_path(e->spec, target, NULL) == 0) {
      e->spec->writable = w && strcmp(w, "1") == 0;
      if (a->type)
        e->spec->type = a->type;
      e->att = a;
      e->state = HM_STATE_MOUNTED;
      pthread_mutex_lock(&inst->lock);
      hm_entry **v = realloc(inst->entries, (inst->n_entries + 1) * sizeof(*v));
      if (v) {
        inst->entries = v;
        inst->entries[inst->n_entries++] = e;
        hm_inst_event_locked(inst, e, HM_STATE_REMOVED, HM_STATE_MOUNTED);
        hm_inst_save_locked(inst);
        e = NULL;
        hm_info("reconcile: adopted %s (%s at %s), which the registry had lost", a->id, host,
                target);
      }
      pthread_mutex_unlock(&inst->lock);
      if (e) {
        e->att = NULL;
        hm_inst_entry_free(e);
        hm_attachment_free(a);
      }
      continue;
    }
    if (e)
      hm_inst_entry_free(e);
    if (roll_back(inst, hp, a, target, &g, &why) == 0)
      hm_info("reconcile: removed leftover %s", a->id);
    else
      hm_warn("reconcile: leftover %s could not be removed: %s", a->id, why ? why : "?");
    free(why);
    hm_attachment_free(a);
  }
  free(scan);
  hm_agent_list_free(g.v, g.n);
  pthread_mutex_lock(&inst->lock);
  hm_inst_save_locked(inst);
  pthread_mutex_unlock(&inst->lock);
  hm_inst_monitor_wake(inst);
  return 0;
}
