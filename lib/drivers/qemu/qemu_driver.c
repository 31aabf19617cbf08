/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU backend: virtiofs shares hot-plugged as vhost-user-fs-pci devices
 * on reserved pcie-root-ports, through QMP; 9p mounts as virtserialports
 * served by diod (ninep.c), which use no root port.
 *
 * Which slots are free is asked of QEMU (query-pci) at each attach rather than
 * remembered, so it stays right across daemon restarts; `reserved` only
 * covers attaches in flight in this process, between the query and the
 * device_add that makes the slot visibly used.
 */
#include "driver_internal.h"
#include "hub.h"
#include "ninep.h"
#include "qemu_internal.h"
#include "qmp.h"
#include "spawn.h"
#include "virtiofsd.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 10000
#define UNPLUG_TIMEOUT_MS 15000
#define VIRTIOFSD_STOP_MS 3000

typedef struct qemu_impl {
  char *dir;
  char *qmp_path;
  char *virtiofsd_path;
  pthread_rwlock_t qmp_lock; /* read: using qmp; write: replacing it */
  pthread_mutex_t slot_lock; /* guards reserved (across a query and the pick) and vfs */
  hm_qmp *qmp;
  hm_virtiofsd_info vfs;
  int vfs_detected;
  unsigned char reserved[HM_QEMU_MAX_SLOTS];
  int64_t freed_at[HM_QEMU_MAX_SLOTS]; /* when this process last emptied the slot */
  hm_ninep_host ninep;                 /* 9p: ninep.c, on this QMP connection */
  hm_ninep_slots ninep_slots;          /* reserved 9p slots in flight */
  hm_hub hub;                          /* the shared virtiofs device (hub.c) */
} qemu_impl;

/*
 * A slot just emptied is not reused at once: under concurrent adds and
 * removes, a guest's late ACPI eject of a slot was seen to take out the next
 * device plugged into it (QEMU 7.2, q35 ACPI hot-plug on root ports; about
 * once in 400 operations). Any other free slot is preferred for this long.
 */
#define SLOT_COOLDOWN_MS 3000

/* Slot bookkeeping from query-pci: exists[i] when hm-rp-i is there, used[i]
 * when a device sits behind it. */
typedef struct slot_map {
  unsigned char exists[HM_QEMU_MAX_SLOTS];
  unsigned char used[HM_QEMU_MAX_SLOTS];
} slot_map;

/*
 * Returns with qmp_lock held for reading and *out connected (reconnecting
 * first when QEMU dropped us), or fails with no lock held. A reconnect, which
 * frees the old client, waits for every reader to be done with it.
 */
static int qmp_get(qemu_impl *q, hm_qmp **out, hm_error **err) {
  pthread_rwlock_rdlock(&q->qmp_lock);
  if (q->qmp && hm_qmp_is_connected(q->qmp)) {
    *out = q->qmp;
    return 0;
  }
  pthread_rwlock_unlock(&q->qmp_lock);
  pthread_rwlock_wrlock(&q->qmp_lock);
  int r = 0;
  if (!q->qmp || !hm_qmp_is_connected(q->qmp)) {
    hm_qmp_free(q->qmp);
    q->qmp = NULL;
    if (hm_qmp_connect(&q->qmp, q->qmp_path, QMP_TIMEOUT_MS, err) < 0)
      r = hm_error_prefix(err, HM_E_NOT_READY, "hm_qemu", "QMP at %s", q->qmp_path);
  }
  pthread_rwlock_unlock(&q->qmp_lock);
  if (r < 0)
    return r;
  pthread_rwlock_rdlock(&q->qmp_lock);
  if (!q->qmp) {
    pthread_rwlock_unlock(&q->qmp_lock);
    return HM_ERR(err, HM_E_NOT_READY, "QMP connection lost");
  }
  *out = q->qmp;
  return 0;
}

static void qmp_put(qemu_impl *q) {
  pthread_rwlock_unlock(&q->qmp_lock);
}

static int ninep_qmp_get(void *ud, hm_qmp **out, hm_error **err) {
  return qmp_get(ud, out, err);
}

static void ninep_qmp_put(void *ud) {
  qmp_put(ud);
}

/* Runs a command, reconnecting QMP first if needed. */
static int qmp_exec(qemu_impl *q, const char *cmd, json_object *args, json_object **ret,
                    hm_error **err) {
  hm_qmp *c;
  int r = qmp_get(q, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_execute(c, cmd, args, -1, ret, QMP_TIMEOUT_MS, err);
  qmp_put(q);
  return r;
}

/* Parses "hm-rp-N" (optionally followed by a '/' and more); -1 otherwise. */
static int port_index(const char *s) {
  size_t plen = strlen(HM_QEMU_ROOT_PORT_PREFIX);
  if (strncmp(s, HM_QEMU_ROOT_PORT_PREFIX, plen) != 0 || s[plen] < '0' || s[plen] > '9')
    return -1;
  char *end;
  unsigned long k = strtoul(s + plen, &end, 10);
  return (*end == '\0' || *end == '/') && k < HM_QEMU_MAX_SLOTS ? (int)k : -1;
}

/*
 * The slot map from QOM: the reserved ports are /machine/peripheral/hm-rp-N,
 * and a device is behind one when its parent_bus is that port's bus. QOM is
 * used rather than query-pci because query-pci cannot see behind a bridge the
 * guest firmware has not numbered yet (a VM still in its BIOS, or paused).
 */
static int query_slots(qemu_impl *q, slot_map *map, hm_error **err) {
  json_object *list = NULL, *args = NULL, *bus = NULL;
  memset(map, 0, sizeof(*map));
  args = json_object_new_object();
  json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
  int r = qmp_exec(q, "qom-list", args, &list, err);
  json_object_put(args);
  if (r < 0)
    return r;
  size_t n = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
  for (size_t i = 0; i < n && r == 0; i++) {
    json_object *item = json_object_array_get_idx(list, i), *name, *type;
    if (!json_object_object_get_ex(item, "name", &name) ||
        !json_object_object_get_ex(item, "type", &type) ||
        strncmp(json_object_get_string(type), "child<", 6) != 0)
      continue;
    const char *id = json_object_get_string(name);
    int k = port_index(id);
    if (k >= 0 && strcmp(json_object_get_string(type), "child<pcie-root-port>") == 0) {
      map->exists[k] = 1;
      continue;
    }
    char *path = NULL;
    if (asprintf(&path, "/machine/peripheral/%s", id) < 0)
      return HM_ERR_NOMEM(err);
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(path));
    json_object_object_add(args, "property", json_object_new_string("parent_bus"));
    free(path);
    hm_error *e = NULL;
    /* A device without a parent bus (or one that just went away) is not in
     * a slot: skip it. */
    if (qmp_exec(q, "qom-get", args, &bus, &e) == 0 && json_object_is_type(bus, json_type_string)) {
      const char *b = json_object_get_string(bus);
      if (strncmp(b, "/machine/peripheral/", 20) == 0 && (k = port_index(b + 20)) >= 0)
        map->used[k] = 1;
    } else if (hm_error_code(e) == HM_E_NOT_READY) {
      r = HM_ERR(err, HM_E_NOT_READY, "%s", hm_error_message(e));
    }
    hm_error_free(e);
    json_object_put(args);
    json_object_put(bus);
    bus = NULL;
  }
  json_object_put(list);
  return r;
}

static int count_free(const slot_map *m, const unsigned char *reserved) {
  int n = 0;
  for (int i = 0; i < HM_QEMU_MAX_SLOTS; i++)
    n += m->exists[i] && !m->used[i] && !reserved[i];
  return n;
}

/*
 * The query and the pick happen under slot_lock, and so does the release of
 * a reservation (which comes after device_add made the slot visibly used):
 * a query can then never be older than a released reservation. Without this,
 * two concurrent adds put two devices on one root port (seen in e2e; the
 * guest only ever sees device 0 behind a PCIe port).
 */
static int reserve_slot(qemu_impl *q, hm_error **err) {
  slot_map map;
  pthread_mutex_lock(&q->slot_lock);
  int r = query_slots(q, &map, err);
  if (r < 0) {
    pthread_mutex_unlock(&q->slot_lock);
    return r;
  }
  int total = 0, pick = -1;
  int64_t now = hm_now_ms();
  for (int i = 0; i < HM_QEMU_MAX_SLOTS; i++) {
    total += map.exists[i];
    if (!map.exists[i] || map.used[i] || q->reserved[i])
      continue;
    int cool = now - q->freed_at[i] >= SLOT_COOLDOWN_MS;
    if (pick < 0 || (cool && now - q->freed_at[pick] < SLOT_COOLDOWN_MS) ||
        (!cool && now - q->freed_at[pick] < SLOT_COOLDOWN_MS && q->freed_at[i] < q->freed_at[pick]))
      pick = i;
    if (cool)
      break; /* the lowest cool slot */
  }
  if (pick >= 0) {
    q->reserved[pick] = 1;
    pthread_mutex_unlock(&q->slot_lock);
    return pick;
  }
  pthread_mutex_unlock(&q->slot_lock);
  if (total == 0)
    return HM_ERR(err, HM_E_NOT_READY,
                  "the VM has no reserved hot-plug root ports (hm-rp-*); start QEMU with the "
                  "arguments of `hotmount qemu-args`");
  return HM_ERR(err, HM_E_NO_SLOT,
                "all %d hot-plug slots are in use; remove a mount or boot with more (--slots)",
                total);
}

static void release_slot(qemu_impl *q, int slot) {
  pthread_mutex_lock(&q->slot_lock);
  q->reserved[slot] = 0;
  pthread_mutex_unlock(&q->slot_lock);
}

static void mark_port_freed(qemu_impl *q, int slot) {
  if (slot >= 0 && slot < HM_QEMU_MAX_SLOTS) {
    pthread_mutex_lock(&q->slot_lock);
    q->freed_at[slot] = hm_now_ms();
    pthread_mutex_unlock(&q->slot_lock);
  }
}

static int ninep_port_reserve(void *ud, hm_error **err) {
  return reserve_slot(ud, err);
}

static void ninep_port_release(void *ud, int port) {
  release_slot(ud, port);
}

static void ninep_port_freed(void *ud, int port) {
  mark_port_freed(ud, port);
}

static int get_vfs(qemu_impl *q, hm_virtiofsd_info *out, hm_error **err) {
  pthread_mutex_lock(&q->slot_lock);
  int r = 0;
  if (!q->vfs_detected) {
    r = hm_virtiofsd_detect(&q->vfs, q->virtiofsd_path, err);
    q->vfs_detected = r == 0;
  }
  if (r == 0) {
    *out = q->vfs;
    out->path = strdup(q->vfs.path);
    if (!out->path)
      r = HM_ERR_NOMEM(err);
  }
  pthread_mutex_unlock(&q->slot_lock);
  return r;
}

json_object *hm_qemu_vfs_device_args(const char *dev, const char *chr, const char *tag,
                                     const char *port) {
  json_object *args = json_object_new_object();
  json_object_object_add(args, "driver", json_object_new_string("vhost-user-fs-pci"));
  json_object_object_add(args, "id", json_object_new_string(dev));
  json_object_object_add(args, "chardev", json_object_new_string(chr));
  json_object_object_add(args, "tag", json_object_new_string(tag));
  json_object_object_add(args, "bus", json_object_new_string(port));
  /* A PCIe port has one device, at 0: say so, and QEMU refuses a second. */
  json_object_object_add(args, "addr", json_object_new_string("0"));
  return args;
}

json_object *hm_qemu_socket_chardev_args(const char *id, const char *path) {
  json_object *unix_data = json_object_new_object(), *addr = json_object_new_object(),
              *data = json_object_new_object(), *backend = json_object_new_object(),
              *args = json_object_new_object();
  json_object_object_add(unix_data, "path", json_object_new_string(path));
  json_object_object_add(addr, "type", json_object_new_string("unix"));
  json_object_object_add(addr, "data", unix_data);
  json_object_object_add(data, "addr", addr);
  json_object_object_add(data, "server", json_object_new_boolean(0));
  json_object_object_add(backend, "type", json_object_new_string("socket"));
  json_object_object_add(backend, "data", data);
  json_object_object_add(args, "id", json_object_new_string(id));
  json_object_object_add(args, "backend", backend);
  return args;
}

static int chardev_remove(qemu_impl *q, const char *id, hm_error **err) {
  hm_qmp *c;
  int r = qmp_get(q, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_chardev_remove(c, id, err);
  qmp_put(q);
  return r;
}

/* device_del and wait for the guest to let go (ACPI hot-unplug). */
static int device_unplug(qemu_impl *q, const char *dev, hm_error **err) {
  hm_qmp *c;
  int r = qmp_get(q, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_device_del(c, dev, UNPLUG_TIMEOUT_MS, err);
  qmp_put(q);
  if (r == HM_E_TIMEOUT)
    return hm_error_prefix(err, r, "hm_qemu", "the guest did not release device %s", dev);
  return r;
}

static void cleanup_parts(qemu_impl *q, const char *dev, const char *chr, pid_t pid,
                          const char *sock) {
  if (dev)
    device_unplug(q, dev, NULL);
  if (chr)
    chardev_remove(q, chr, NULL);
  if (pid > 0)
    hm_virtiofsd_stop(pid, VIRTIOFSD_STOP_MS, NULL);
  if (sock)
    unlink(sock);
}

/* Markers in virtiofsd's environment: how a restarted daemon (whose child it
 * no longer is) finds it, and what it needs to adopt it. */

static int start_virtiofsd(qemu_impl *q, pid_t *pid, const hm_virtiofsd_info *vfs,
                           const hm_mount_spec *spec, const char *id, const char *sock,
                           hm_error **err) {
  hm_strv env = {0};
  int r = hm_helper_markers(&env, q->dir, id, hm_mount_spec_get_host_path(spec),
                            hm_mount_spec_get_writable(spec));
  if (r < 0) {
    hm_strv_clear(&env);
    return HM_ERR_NOMEM(err);
  }
  /* Without root: in a user namespace with our subordinate ids (userns.h),
   * where guest root is us, or the guest ids mapUid/mapGid name are. */
  hm_userns userns;
  if (geteuid() != 0 && (r = hm_userns_prepare(&userns, "virtiofsd", hm_qemu_map_id(spec, "mapUid"),
                                               hm_qemu_map_id(spec, "mapGid"), err)) < 0) {
    hm_strv_clear(&env);
    return r;
  }
  r = hm_virtiofsd_start(pid, vfs, hm_mount_spec_get_host_path(spec),
                         !hm_mount_spec_get_writable(spec), hm_mount_spec_get_option(spec, "cache"),
                         sock, env.v, geteuid() != 0 ? &userns : NULL, err);
  hm_strv_clear(&env);
  return r;
}

/*
 * A virtiofsd found by its markers is only taken for ours when it also runs
 * as our user and runs the virtiofsd we would start: markers are just
 * environment strings, which any local user can give any process (and we
 * signal, and trust the host path of, what we adopt). When virtiofsd cannot
 * be found any more, the owner check alone applies.
 */
static int vfs_ours(qemu_impl *q, pid_t pid) {
  /* The helper we started leads its own session (hm_spawn_helper); a
   * process in its session that does not is its sandbox child, which
   * outlives a killed parent for a moment (it dies by PDEATHSIG) and must
   * not be taken for a live virtiofsd then. */
  if (getsid(pid) != pid)
    return 0;
  hm_virtiofsd_info vfs = {0};
  int ok =
      get_vfs(q, &vfs, NULL) == 0 ? hm_proc_is_ours(pid, vfs.path) : hm_proc_is_ours(pid, NULL);
  hm_virtiofsd_info_clear(&vfs);
  if (!ok)
    hm_warn("virtiofsd %d carries this instance's markers but is not ours (another user, or "
            "another program): not adopted",
            (int)pid);
  return ok;
}

struct find_ctx {
  qemu_impl *q;
  const char *id;
  pid_t pid;
};

static void found_pid(pid_t pid, void *ud) {
  struct find_ctx *c = ud;
  if (vfs_ours(c->q, pid))
    c->pid = pid;
}

/* The virtiofsd serving mount id of this instance, by its markers; -1. */
static pid_t find_virtiofsd(qemu_impl *q, const char *id) {
  char *marker = NULL;
  struct find_ctx ctx = {q, id, -1};
  if (asprintf(&marker, HM_ENV_MOUNT "=%s", id) < 0)
    return -1;
  hm_virtiofsd_find(marker, found_pid, &ctx);
  free(marker);
  if (ctx.pid > 0) {
    char *inst = hm_proc_getenv(ctx.pid, HM_ENV_INSTANCE);
    int same = inst && strcmp(inst, q->dir) == 0;
    free(inst);
    if (!same)
      ctx.pid = -1;
  }
  return ctx.pid;
}

/* The pid recorded for att, or else the one found by its markers. */
static pid_t attachment_pid(qemu_impl *q, hm_attachment *att) {
  const char *p = hm_attachment_get_data(att, "virtiofsd_pid");
  pid_t pid = p ? (pid_t)atoi(p) : -1;
  if (pid > 1 && hm_virtiofsd_alive(pid)) {
    char *m = hm_proc_getenv(pid, HM_ENV_MOUNT);
    int ours = m && strcmp(m, hm_attachment_get_id(att)) == 0 && vfs_ours(q, pid);
    free(m);
    if (ours)
      return pid;
  }
  return find_virtiofsd(q, hm_attachment_get_id(att));
}

static int hub_vfs_get(void *ud, hm_virtiofsd_info *out, hm_error **err) {
  return get_vfs(ud, out, err);
}

static pid_t hub_vfs_find(void *ud, const char *id) {
  return find_virtiofsd(ud, id);
}

static int qemu_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  qemu_impl *q = impl;
  const char *id = hm_attachment_get_id(att);
  char *dev = NULL, *chr = NULL, *sock = NULL, *port = NULL;
  hm_virtiofsd_info vfs = {0};
  pid_t pid = -1;
  int slot = -1, r;
  if (hm_mount_spec_get_type(spec) == HM_TYPE_9P)
    return hm_ninep_attach(&q->ninep, spec, att, err);
  if (hm_hub_wanted(spec))
    return hm_hub_attach(&q->hub, spec, att, err);
  if (hm_mount_spec_get_type(spec) != HM_TYPE_VIRTIOFS)
    return HM_ERR(err, HM_E_UNSUPPORTED, "the QEMU backend hot-plugs virtiofs and 9p only");
  if (asprintf(&dev, "%s-dev", id) < 0 || asprintf(&chr, "%s-chr", id) < 0 ||
      asprintf(&sock, "%s/%s-vfs.sock", q->dir, id) < 0) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  if ((r = get_vfs(q, &vfs, err)) < 0)
    goto fail;
  if ((slot = reserve_slot(q, err)) < 0) {
    r = slot;
    goto fail;
  }
  if ((r = start_virtiofsd(q, &pid, &vfs, spec, id, sock, err)) < 0)
    goto fail;
  hm_fault("add:virtiofsd-started");

  json_object *args = hm_qemu_socket_chardev_args(chr, sock);
  r = qmp_exec(q, "chardev-add", args, NULL, err);
  json_object_put(args);
  if (r < 0)
    goto fail_vfs;
  hm_fault("add:chardev-added");

  if (asprintf(&port, HM_QEMU_ROOT_PORT_PREFIX "%d", slot) < 0) {
    r = HM_ERR_NOMEM(err);
    goto fail_chr;
  }
  args = hm_qemu_vfs_device_args(dev, chr, id, port);
  r = qmp_exec(q, "device_add", args, NULL, err);
  json_object_put(args);
  if (r < 0) {
    if (!hm_virtiofsd_alive(pid))
      hm_error_prefix(err, r, "hm_qemu", "virtiofsd exited early (see the daemon log)");
    goto fail_chr;
  }
  hm_fault("add:device-added");
  /* QEMU holds the connection now; the name is no longer needed. */
  unlink(sock);

  char pidstr[24], slotstr[16];
  snprintf(pidstr, sizeof(pidstr), "%d", (int)pid);
  snprintf(slotstr, sizeof(slotstr), "%d", slot);
  if ((r = hm_attachment_set_tag(att, id, err)) < 0 ||
      (r = hm_attachment_set_data(att, "device", dev, err)) < 0 ||
      (r = hm_attachment_set_data(att, "chardev", chr, err)) < 0 ||
      (r = hm_attachment_set_data(att, "port", port, err)) < 0 ||
      (r = hm_attachment_set_data(att, "slot", slotstr, err)) < 0 ||
      (r = hm_attachment_set_data(att, "virtiofsd_pid", pidstr, err)) < 0)
    goto fail_dev;
  release_slot(q, slot);
  hm_debug("%s: virtiofsd %d, %s on %s", id, (int)pid, dev, port);
  free(dev);
  free(chr);
  free(sock);
  free(port);
  hm_virtiofsd_info_clear(&vfs);
  return 0;

fail_dev:
  cleanup_parts(q, dev, chr, pid, sock);
  goto fail_slot;
fail_chr:
  cleanup_parts(q, NULL, chr, pid, sock);
  goto fail_slot;
fail_vfs:
  cleanup_parts(q, NULL, NULL, pid, sock);
fail_slot:
  release_slot(q, slot);
fail:
  free(dev);
  free(chr);
  free(sock);
  free(port);
  hm_virtiofsd_info_clear(&vfs);
  return r;
}

static int qemu_has(qemu_impl *q, const char *cmd, const char *key, const char *name,
                    hm_error **err) {
  hm_qmp *c;
  int r = qmp_get(q, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_has(c, cmd, key, name, err);
  qmp_put(q);
  return r;
}

static void mark_freed(qemu_impl *q, hm_attachment *att) {
  const char *slot = hm_attachment_get_data(att, "slot");
  mark_port_freed(q, slot ? atoi(slot) : -1);
}

static int qemu_detach(void *impl, hm_attachment *att, hm_error **err) {
  qemu_impl *q = impl;
  const char *id = hm_attachment_get_id(att);
  char *dev = NULL, *chr = NULL, *sock = NULL;
  int r = 0;
  if (hm_ninep_is(&q->ninep, att))
    return hm_ninep_detach(&q->ninep, att, err);
  if (hm_hub_is(att))
    return hm_hub_detach(&q->hub, att, err);
  /* Names follow from the id, so an attach cut short before it recorded
   * anything can still be undone. */
  if (asprintf(&dev, "%s-dev", id) < 0 || asprintf(&chr, "%s-chr", id) < 0 ||
      asprintf(&sock, "%s/%s-vfs.sock", q->dir, id) < 0) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  pid_t pid = attachment_pid(q, att);
  /* With its virtiofsd dead, the guest can never let go of the device: its
   * driver waits forever for requests in flight, holding a lock every later
   * virtiofs mount needs. So a device whose backend died is not unplugged
   * (QEMU has no way to reconnect vhost-user-fs); it is retired, and stays
   * until the VM restarts. */
  if (pid <= 0) {
    int present = qemu_has(q, "qom-list", "name", dev, err);
    if (present < 0) {
      r = present;
      goto out;
    }
    if (present) {
      char msg[256];
      snprintf(msg, sizeof(msg),
               "its virtiofsd died, so the guest cannot release %s; it stays plugged (using "
               "one slot) until the VM restarts",
               dev);
      r = hm_attachment_set_retired(att, msg, err);
      goto out;
    }
  }
  /* Strict order: the device leaves the guest before its backend goes, or
   * the guest hangs on a dead vhost-user peer. */
  /* Warm before the unplug too: an add may see the slot free in QEMU before
   * this thread is back from waiting for DEVICE_DELETED. */
  mark_freed(q, att);
  if ((r = device_unplug(q, dev, err)) < 0)
    goto out;
  mark_freed(q, att);
  hm_fault("remove:device-deleted");
  if ((r = chardev_remove(q, chr, err)) < 0)
    goto out;
  hm_fault("remove:chardev-removed");
  if (pid > 0 && (r = hm_virtiofsd_stop(pid, VIRTIOFSD_STOP_MS, err)) < 0)
    goto out;
  unlink(sock);
out:
  free(dev);
  free(chr);
  free(sock);
  return r;
}

static int qemu_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  qemu_impl *q = impl;
  if (hm_ninep_is(&q->ninep, att))
    return hm_ninep_check(&q->ninep, att, reason, err);
  if (hm_hub_is(att))
    return hm_hub_check(&q->hub, att, reason, err);
  const char *id = hm_attachment_get_id(att);
  char dev[64], chr[64];
  snprintf(dev, sizeof(dev), "%s-dev", id);
  snprintf(chr, sizeof(chr), "%s-chr", id);
  int r;
  if ((r = qemu_has(q, "qom-list", "name", dev, err)) < 0)
    return r;
  if (!r)
    return asprintf(reason, "device %s is gone from QEMU", dev) < 0 ? HM_E_NOMEM : HM_CHECK_GONE;
  if ((r = qemu_has(q, "query-chardev", "label", chr, err)) < 0)
    return r;
  if (!r)
    return asprintf(reason, "chardev %s is gone from QEMU", chr) < 0 ? HM_E_NOMEM : 0;
  if (attachment_pid(q, att) <= 0)
    return asprintf(reason, "virtiofsd for %s is not running", id) < 0 ? HM_E_NOMEM : 0;
  return 1;
}

static int qemu_watch_fd(void *impl, hm_attachment *att) {
  qemu_impl *q = impl;
  if (hm_ninep_is(&q->ninep, att))
    return hm_ninep_watch_fd(&q->ninep, att);
  if (hm_hub_is(att))
    return hm_hub_watch_fd(&q->hub, att);
  pid_t pid = attachment_pid(impl, att);
  return pid > 0 ? hm_pidfd_open(pid) : -1;
}

/* "hm-12-dev" -> "hm-12"; NULL when name is not one of ours. */
static char *id_from(const char *name, const char *suffix) {
  size_t n = strlen(name), sl = strlen(suffix);
  if (n <= 3 + sl || strncmp(name, "hm-", 3) != 0 || strcmp(name + n - sl, suffix) != 0)
    return NULL;
  for (size_t i = 3; i < n - sl; i++)
    if (name[i] < '0' || name[i] > '9')
      return NULL;
  return strndup(name, n - sl);
}

typedef struct scan_acc {
  hm_attachment **v;
  size_t n;
  int oom;
  qemu_impl *q;
} scan_acc;

static hm_attachment *scan_get(scan_acc *acc, const char *id) {
  for (size_t i = 0; i < acc->n; i++)
    if (strcmp(hm_attachment_get_id(acc->v[i]), id) == 0)
      return acc->v[i];
  hm_attachment *a = NULL;
  hm_attachment **v = realloc(acc->v, (acc->n + 1) * sizeof(*v));
  if (!v || hm_attachment_new(&a, id, NULL) < 0 || hm_attachment_set_tag(a, id, NULL) < 0) {
    hm_attachment_free(a);
    if (v)
      acc->v = v;
    acc->oom = 1;
    return NULL;
  }
  acc->v = v;
  acc->v[acc->n++] = a;
  return a;
}

static void scan_names(scan_acc *acc, json_object *ret, const char *key, const char *suffix,
                       const char *data_key) {
  size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;
  for (size_t i = 0; i < n; i++) {
    json_object *v;
    if (!json_object_object_get_ex(json_object_array_get_idx(ret, i), key, &v))
      continue;
    char *id = id_from(json_object_get_string(v), suffix);
    hm_attachment *a = id ? scan_get(acc, id) : NULL;
    if (a)
      hm_attachment_set_data(a, data_key, json_object_get_string(v), NULL);
    free(id);
  }
}

static hm_attachment *scan_get_cb(void *ud, const char *id) {
  /* The hub's virtiofsd serves no one mount: hub.c scans its entries. */
  if (strcmp(id, HM_HUB_ID) == 0)
    return NULL;
  return scan_get(ud, id);
}

static void scan_pid(pid_t pid, void *ud) {
  if (vfs_ours(((scan_acc *)ud)->q, pid))
    hm_helper_adopt(pid, "virtiofsd_pid", scan_get_cb, ud);
}

/* 9p devices ("hm-N-dev" virtserialports, or virtio-9p-pci devices of
 * reserved slots) get the 9p transport and tag. */
static void scan_9p_ports(scan_acc *acc, json_object *ret) {
  size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;
  for (size_t i = 0; i < n; i++) {
    json_object *item = json_object_array_get_idx(ret, i), *name, *type;
    if (!json_object_object_get_ex(item, "name", &name) ||
        !json_object_object_get_ex(item, "type", &type))
      continue;
    int serial = strcmp(json_object_get_string(type), "child<virtserialport>") == 0;
    int pci = strcmp(json_object_get_string(type), "child<virtio-9p-pci>") == 0;
    if (!serial && !pci)
      continue;
    char *id = id_from(json_object_get_string(name), "-dev");
    hm_attachment *a = id ? scan_get(acc, id) : NULL;
    if (a && (pci ? hm_ninep_mark_slot(a, NULL) : hm_ninep_mark(a, NULL)) < 0)
      acc->oom = 1;
    free(id);
  }
}

/* Everything of this instance's making that QEMU and the host hold: devices
 * "hm-N-dev", chardevs "hm-N-chr", virtiofsd processes with our markers. */
static int qemu_scan(void *impl, hm_attachment ***out, size_t *n, hm_error **err) {
  qemu_impl *q = impl;
  scan_acc acc = {.q = q};
  json_object *args = json_object_new_object(), *ret = NULL;
  json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
  int r = qmp_exec(q, "qom-list", args, &ret, err);
  json_object_put(args);
  if (r < 0)
    return r;
  scan_names(&acc, ret, "name", "-dev", "device");
  scan_9p_ports(&acc, ret);
  json_object_put(ret);
  ret = NULL;
  if ((r = qmp_exec(q, "query-chardev", NULL, &ret, err)) < 0)
    goto fail;
  scan_names(&acc, ret, "label", "-chr", "chardev");
  json_object_put(ret);
  char *marker = NULL;
  if (asprintf(&marker, HM_ENV_INSTANCE "=%s", q->dir) < 0) {
    acc.oom = 1;
  } else {
    hm_virtiofsd_find(marker, scan_pid, &acc);
    free(marker);
    hm_ninep_scan(&q->ninep, scan_get_cb, &acc);
    hm_hub_scan(&q->hub, q->dir, scan_get_cb, &acc);
    /* A slot attach cut short may have left its link pointed at a share. */
    hm_ninep_slot_sweep(&q->ninep);
  }
  if (acc.oom) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  *out = acc.v;
  *n = acc.n;
  return 0;
fail:
  for (size_t i = 0; i < acc.n; i++)
    hm_attachment_free(acc.v[i]);
  free(acc.v);
  return r;
}

static int qemu_free_slots(void *impl, int type, hm_error **err) {
  qemu_impl *q = impl;
  slot_map map;
  if (type == HM_TYPE_9P)
    return hm_ninep_free_ports(&q->ninep, err);
  if (type != HM_TYPE_VIRTIOFS)
    return HM_ERR(err, HM_E_UNSUPPORTED, "no slots for %s", hm_mount_type_name(type));
  int r = query_slots(q, &map, err);
  if (r < 0)
    return r;
  pthread_mutex_lock(&q->slot_lock);
  r = count_free(&map, q->reserved);
  pthread_mutex_unlock(&q->slot_lock);
  return r;
}

/* Facts for `hotmount status` and readiness checks for `hotmount doctor`:
 * each is what `hotmount qemu-args` would have set up. */
static int qemu_describe(void *impl, hm_status *st, hm_error **err) {
  qemu_impl *q = impl;
  slot_map map;
  json_object *ret = NULL;
  char buf[32];
  int total = 0, used = 0;
  /* Without root: what a user namespace for virtiofsd and sftp-server needs
   * (doctor's userns, newuidmap, subuid, subgid checks). */
  int confinable = hm_userns_status(st);
  if (query_slots(q, &map, NULL) < 0) {
    hm_status_set(st, "qmp", "disconnected", NULL);
    return 0;
  }
  hm_status_set(st, "qmp", "connected", NULL);
  for (int i = 0; i < HM_QEMU_MAX_SLOTS; i++) {
    total += map.exists[i];
    used += map.exists[i] && map.used[i];
  }
  snprintf(buf, sizeof(buf), "%d", total);
  hm_status_set(st, "slotsTotal", buf, NULL);
  pthread_mutex_lock(&q->slot_lock);
  snprintf(buf, sizeof(buf), "%d", count_free(&map, q->reserved));
  pthread_mutex_unlock(&q->slot_lock);
  hm_status_set(st, "slotsFree", buf, NULL);
  /* The machine's RAM must be the shared backend, not just any shared one. */
  json_object *args = json_object_new_object();
  json_object_object_add(args, "path", json_object_new_string("/machine"));
  json_object_object_add(args, "property", json_object_new_string("memory-backend"));
  if (qmp_exec(q, "qom-get", args, &ret, NULL) == 0 && json_object_is_type(ret, json_type_string)) {
    char path[256];
    const char *mb = json_object_get_string(ret);
    snprintf(path, sizeof(path), "%s%s", mb[0] == '/' ? "" : "/objects/", mb);
    json_object_put(ret);
    ret = NULL;
    json_object_put(args);
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(path));
    json_object_object_add(args, "property", json_object_new_string("share"));
    int shared = qmp_exec(q, "qom-get", args, &ret, NULL) == 0 && json_object_get_boolean(ret);
    hm_status_set(st, "memoryShared", shared ? "true" : "false", NULL);
  } else {
    hm_status_set(st, "memoryShared", "false", NULL);
  }
  json_object_put(args);
  json_object_put(ret);
  ret = NULL;
  if (qmp_exec(q, "query-chardev", NULL, &ret, NULL) == 0) {
    hm_status_set(st, "agentChannel", hm_qmp_reply_has(ret, "label", "hm-agent") ? "true" : "false",
                  NULL);
    json_object_put(ret);
  }
  hm_ninep_slot_info info;
  if (hm_ninep_slot_info_get(&q->ninep, &info, NULL) == 0) {
    snprintf(buf, sizeof(buf), "%u", info.ro);
    hm_status_set(st, "ninepSlotsReadOnly", buf, NULL);
    snprintf(buf, sizeof(buf), "%u", info.rw);
    hm_status_set(st, "ninepSlotsWritable", buf, NULL);
    int f = info.ro ? hm_ninep_slot_free(&q->ninep, 0, NULL) : 0;
    snprintf(buf, sizeof(buf), "%d", f > 0 ? f : 0);
    hm_status_set(st, "ninepSlotsReadOnlyFree", buf, NULL);
    f = info.rw ? hm_ninep_slot_free(&q->ninep, 1, NULL) : 0;
    snprintf(buf, sizeof(buf), "%d", f > 0 ? f : 0);
    hm_status_set(st, "ninepSlotsWritableFree", buf, NULL);
    if (info.ro || info.rw)
      hm_status_set(st, "ninepSlotsModel", info.model, NULL);
  }
  hm_hub_describe(&q->hub, q->dir, st);
  hm_virtiofsd_info vfs = {0};
  if (get_vfs(q, &vfs, NULL) == 0) {
    hm_status_set(st, "virtiofsd", vfs.path, NULL);
    hm_status_set(st, "virtiofsdFlavor", vfs.flavor == HM_VIRTIOFSD_RUST ? "rust" : "c", NULL);
    hm_status_set(st, "virtiofsdReadonly",
                  vfs.has_readonly ? "option"
                  : geteuid() == 0 ? "bind"
                  : confinable     ? "userns"
                                   : "unavailable",
                  NULL);
    hm_virtiofsd_info_clear(&vfs);
  } else {
    hm_status_set(st, "virtiofsd", "", NULL);
  }
  (void)err;
  return 0;
}

static void qemu_destroy(void *impl) {
  qemu_impl *q = impl;
  if (!q)
    return;
  hm_qmp_free(q->qmp);
  hm_virtiofsd_info_clear(&q->vfs);
  pthread_rwlock_destroy(&q->qmp_lock);
  pthread_mutex_destroy(&q->slot_lock);
  pthread_mutex_destroy(&q->ninep_slots.lock);
  pthread_mutex_destroy(&q->hub.lock);
  free(q->dir);
  free(q->qmp_path);
  free(q->virtiofsd_path);
  free(q);
}

int hm_qemu_hotplugger_new(hm_fs_hotplugger **out, const hm_qemu_config *cfg, hm_error **err) {
  if (!out || !cfg)
    return HM_ERR(err, HM_E_INVALID, "out and cfg must not be NULL");
  qemu_impl *q = calloc(1, sizeof(*q));
  if (!q)
    return HM_ERR_NOMEM(err);
  pthread_rwlock_init(&q->qmp_lock, NULL);
  pthread_mutex_init(&q->slot_lock, NULL);
  pthread_mutex_init(&q->ninep_slots.lock, NULL);
  pthread_mutex_init(&q->hub.lock, NULL);
  if (!(q->dir = strdup(cfg->dir)) || asprintf(&q->qmp_path, "%s/qmp.sock", cfg->dir) < 0 ||
      (cfg->virtiofsd && !(q->virtiofsd_path = strdup(cfg->virtiofsd)))) {
    qemu_destroy(q);
    return HM_ERR_NOMEM(err);
  }
  q->ninep.ud = q;
  q->ninep.dir = q->dir;
  q->ninep.qmp_get = ninep_qmp_get;
  q->ninep.qmp_put = ninep_qmp_put;
  q->ninep.port_reserve = ninep_port_reserve;
  q->ninep.port_release = ninep_port_release;
  q->ninep.port_freed = ninep_port_freed;
  q->ninep.slots = &q->ninep_slots;
  q->hub.h = &q->ninep;
  q->hub.ud = q;
  q->hub.vfs_get = hub_vfs_get;
  q->hub.vfs_find = hub_vfs_find;
  q->hub.pid = -1;
  hm_qmp *c;
  int r = qmp_get(q, &c, err);
  if (r < 0) {
    qemu_destroy(q);
    return r;
  }
  qmp_put(q);
  static const hm_fs_hotplugger_ops ops = {
      .struct_size = sizeof(hm_fs_hotplugger_ops),
      .name = "qemu",
      .types = 1u << HM_TYPE_VIRTIOFS | 1u << HM_TYPE_9P,
      .attach = qemu_attach,
      .detach = qemu_detach,
      .free_slots = qemu_free_slots,
      .destroy = qemu_destroy,
      .describe = qemu_describe,
      .check = qemu_check,
      .watch_fd = qemu_watch_fd,
      .scan = qemu_scan,
      .validate = hm_qemu_validate,
  };
  return hm_fs_hotplugger_new(out, &ops, q, err);
}
