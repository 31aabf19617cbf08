/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 9p through reserved slots: a hot 9p mount at the speed of a boot-time one.
 *
 * QEMU cannot create a 9p fsdev at run time, but a `-fsdev local` given at
 * boot opens its path only when a virtio-9p-pci device using it is realized.
 * `hotmount qemu-args` therefore reserves fsdevs hm-9p-ro-K (readonly=on)
 * and hm-9p-rw-K whose paths are links INSTANCE/9p/ro-K and INSTANCE/9p/rw-K,
 * normally pointing at the empty directory INSTANCE/9p/empty. An attach:
 *
 *   1. picks an fsdev of the right kind no device uses (asked of QEMU: each
 *      virtio-9p-pci's "fsdev" property) and a free root port;
 *   2. opens the share once (O_PATH, no symlink followed at the end) and
 *      checks it is the directory the core recorded (device:inode);
 *   3. makes the marker link INSTANCE/hm-N-9p -> HOST_PATH (as the serial
 *      path does: while anything of the mount may exist, the link does);
 *   4. points the fsdev's link at /proc/OUR_PID/fd/FD, the share we hold:
 *      QEMU's open at realize reaches exactly that directory, whatever
 *      happens to the path meanwhile (a rename or a symlink swap of a parent
 *      cannot retarget it);
 *   5. device_add virtio-9p-pci on the root port, mount_tag hm-N;
 *   6. points the link back at the placeholder (QEMU holds its own open
 *      directory now; the link only matters at realize), closes the share.
 *
 * Detach: (the guest has unmounted) device_del and DEVICE_DELETED, the link
 * swept back to the placeholder if anything left it elsewhere, the marker
 * link removed. Nothing runs on the host for such a mount: QEMU serves it.
 */
#include "mount_internal.h"
#include "ninep.h"
#include "qemu_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the issue asked for and what Linux 6.1's virtio transport takes
 * (it lowers anything above 500 KiB to 512000 and says so in dmesg). */
#define SLOT_MSIZE_DEFAULT 524288

static const char *const kind_name[2] = {"ro", "rw"};

static json_object *path_args(const char *path, const char *property) {
  json_object *a = json_object_new_object();
  json_object_object_add(a, "path", json_object_new_string(path));
  if (property)
    json_object_object_add(a, "property", json_object_new_string(property));
  return a;
}

/* "hm-9p-rw-3" -> 3 with *kind 1; -1 when not one of ours. */
static int fsdev_parse(const char *s, int *kind) {
  size_t pl = strlen(HM_QEMU_9P_FSDEV_PREFIX);
  if (strncmp(s, HM_QEMU_9P_FSDEV_PREFIX, pl) != 0)
    return -1;
  s += pl;
  if (strncmp(s, "ro-", 3) == 0)
    *kind = 0;
  else if (strncmp(s, "rw-", 3) == 0)
    *kind = 1;
  else
    return -1;
  s += 3;
  if (*s < '0' || *s > '9')
    return -1;
  char *end;
  unsigned long k = strtoul(s, &end, 10);
  return *end == '\0' && k < HM_QEMU_9P_MAX_SLOTS ? (int)k : -1;
}

int hm_ninep_slot_info_get(const hm_ninep_host *h, hm_ninep_slot_info *out, hm_error **err) {
  memset(out, 0, sizeof(*out));
  json_object *args = path_args("/objects", NULL), *ret = NULL;
  int r = hm_ninep_exec(h, "qom-list", args, -1, &ret, err);
  json_object_put(args);
  if (r < 0)
    return r;
  int found = hm_qmp_reply_has(ret, "name", HM_QEMU_9P_MARKER);
  json_object_put(ret);
  ret = NULL;
  if (!found)
    return 0;
  args = path_args("/objects/" HM_QEMU_9P_MARKER, "identity");
  r = hm_ninep_exec(h, "qom-get", args, -1, &ret, err);
  json_object_put(args);
  if (r < 0)
    return r;
  unsigned ro = 0, rw = 0;
  char model[32] = "";
  const char *id = json_object_is_type(ret, json_type_string) ? json_object_get_string(ret) : "";
  if (hm_qemu_9p_identity_parse(id, &ro, &rw, model) < 0)
    hm_warn("QOM object %s says \"%.80s\", not ro=N/rw=N/model=M: its 9p slots are not used",
            HM_QEMU_9P_MARKER, id);
  json_object_put(ret);
  out->ro = ro;
  out->rw = rw;
  snprintf(out->model, sizeof(out->model), "%s", model);
  hm_qmp *c;
  if ((r = h->qmp_get(h->ud, &c, err)) < 0)
    return r;
  uid_t uid = 0;
  /* Unknown counts as root: the cautious answer. */
  out->qemu_root = hm_qmp_peer_uid(c, &uid) < 0 || uid == 0;
  h->qmp_put(h->ud);
  return 0;
}

/*
 * Which fsdevs the VM's virtio-9p-pci devices use: used[kind][k]. When dev is
 * given, *has_dev says whether it is one of them and fsdev_out (size n)
 * receives its fsdev.
 */
static int fsdevs_used(const hm_ninep_host *h, unsigned char used[2][HM_QEMU_9P_MAX_SLOTS],
                       const char *dev, int *has_dev, char *fsdev_out, size_t n, hm_error **err) {
  memset(used, 0, 2 * HM_QEMU_9P_MAX_SLOTS);
  if (has_dev)
    *has_dev = 0;
  json_object *args = path_args("/machine/peripheral", NULL), *list = NULL;
  int r = hm_ninep_exec(h, "qom-list", args, -1, &list, err);
  json_object_put(args);
  if (r < 0)
    return r;
  size_t len = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
  for (size_t i = 0; i < len && r == 0; i++) {
    json_object *item = json_object_array_get_idx(list, i), *name, *type, *fs = NULL;
    if (!json_object_object_get_ex(item, "name", &name) ||
        !json_object_object_get_ex(item, "type", &type) ||
        strcmp(json_object_get_string(type), "child<virtio-9p-pci>") != 0)
      continue;
    char path[160];
    snprintf(path, sizeof(path), "/machine/peripheral/%s", json_object_get_string(name));
    args = path_args(path, "fsdev");
    hm_error *e = NULL;
    /* A device that went away between the two calls is simply not there. */
    int g = hm_ninep_exec(h, "qom-get", args, -1, &fs, &e);
    json_object_put(args);
    if (g == HM_E_NOT_READY)
      r = HM_ERR(err, g, "%s", hm_error_message(e));
    hm_error_free(e);
    if (g == 0 && json_object_is_type(fs, json_type_string)) {
      int kind, k = fsdev_parse(json_object_get_string(fs), &kind);
      if (k >= 0)
        used[kind][k] = 1;
      if (dev && strcmp(json_object_get_string(name), dev) == 0) {
        *has_dev = 1;
        if (fsdev_out)
          snprintf(fsdev_out, n, "%s", json_object_get_string(fs));
      }
    } else if (g == 0 && dev && strcmp(json_object_get_string(name), dev) == 0) {
      *has_dev = 1;
    }
    json_object_put(fs);
  }
  json_object_put(list);
  return r;
}

int hm_ninep_slot_free(const hm_ninep_host *h, int writable, hm_error **err) {
  hm_ninep_slot_info info;
  unsigned char used[2][HM_QEMU_9P_MAX_SLOTS];
  int r = hm_ninep_slot_info_get(h, &info, err);
  if (r < 0)
    return r;
  unsigned total = writable ? info.rw : info.ro;
  if (!total)
    return 0;
  if ((r = fsdevs_used(h, used, NULL, NULL, NULL, 0, err)) < 0)
    return r;
  int n = 0;
  pthread_mutex_lock(&h->slots->lock);
  for (unsigned k = 0; k < total; k++)
    n += !used[writable][k] && !h->slots->reserved[writable][k];
  pthread_mutex_unlock(&h->slots->lock);
  return n;
}

int hm_ninep_choose_slot(const hm_ninep_host *h, const hm_mount_spec *spec, const char **why,
                         hm_error **err) {
  const char *via = hm_mount_spec_get_option(spec, "via");
  const char *sec = hm_mount_spec_get_option(spec, "securityModel");
  int writable = hm_mount_spec_get_writable(spec) != 0;
  int force = via && strcmp(via, "pci") == 0;
  *why = NULL;
  if (via && strcmp(via, "serial") == 0) {
    *why = "asked for with via=serial";
    return 0;
  }
  hm_ninep_slot_info info;
  int r = hm_ninep_slot_info_get(h, &info, err);
  if (r < 0)
    return r;
  unsigned total = writable ? info.rw : info.ro;
  if (!total) {
    if (force)
      return HM_ERR(err, HM_E_UNSUPPORTED,
                    "via=pci: the VM was started without reserved %s 9p slots; start it with "
                    "the arguments of `hotmount qemu-args` (--9p-slots N)",
                    writable ? "writable" : "read-only");
    *why = "the VM has no reserved 9p slots of that kind";
    return 0;
  }
  if (sec && strcmp(sec, info.model) != 0) {
    if (force)
      return HM_ERR(err, HM_E_INVALID,
                    "via=pci with securityModel=%s: the VM's reserved 9p slots use %s (set at "
                    "boot by `hotmount qemu-args --9p-security`)",
                    sec, info.model);
    *why = "securityModel differs from the reserved slots' model";
    return 0;
  }
  /* passthrough or none as root: guest root's chmod and mknod reach host
   * inodes as root (setuid-root files, device nodes). diod is confined
   * against that (jail.c); QEMU is not ours to confine. */
  if (writable && info.qemu_root &&
      (strcmp(info.model, "passthrough") == 0 || strcmp(info.model, "none") == 0)) {
    if (!force) {
      *why = "QEMU runs as root and the writable slots use passthrough: guest root could make "
             "setuid-root files and device nodes on the host (force with via=pci)";
      return 0;
    }
    hm_warn("9p via=pci on a writable slot of a QEMU that runs as root (security model %s): "
            "guest root can make setuid-root files and device nodes in %s",
            info.model, hm_mount_spec_get_host_path(spec));
  }
  int free_n = hm_ninep_slot_free(h, writable, err);
  if (free_n < 0)
    return free_n;
  if (!free_n) {
    if (force)
      return HM_ERR(err, HM_E_NO_SLOT, "via=pci: all %u reserved %s 9p slots are in use", total,
                    writable ? "writable" : "read-only");
    *why = "every reserved 9p slot of that kind is in use";
    return 0;
  }
  return 1;
}

/* QEMU's pid, 0 when unknown: QEMU serves a slot's 9p itself, so what it
 * writes in the share the guest wrote (--notify's origin filter, data
 * "qemu_pid"). */
static pid_t qemu_pid(const hm_ninep_host *h) {
  hm_qmp *c;
  pid_t pid = 0;
  if (h->qmp_get(h->ud, &c, NULL) < 0)
    return 0;
  if (hm_qmp_peer_pid(c, &pid) < 0)
    pid = 0;
  h->qmp_put(h->ud);
  return pid;
}

/* Reserves a free fsdev of a kind: its index, or a negative code. */
static int fsdev_reserve(const hm_ninep_host *h, int writable, hm_error **err) {
  hm_ninep_slot_info info;
  unsigned char used[2][HM_QEMU_9P_MAX_SLOTS];
  int r = hm_ninep_slot_info_get(h, &info, err);
  if (r < 0)
    return r;
  unsigned total = writable ? info.rw : info.ro;
  /* The query and the pick under one lock, as for root ports. */
  pthread_mutex_lock(&h->slots->lock);
  r = fsdevs_used(h, used, NULL, NULL, NULL, 0, err);
  int pick = -1;
  for (unsigned k = 0; r == 0 && k < total && pick < 0; k++)
    if (!used[writable][k] && !h->slots->reserved[writable][k])
      pick = (int)k;
  if (pick >= 0)
    h->slots->reserved[writable][pick] = 1;
  pthread_mutex_unlock(&h->slots->lock);
  if (r < 0)
    return r;
  if (pick < 0)
    return HM_ERR(err, HM_E_NO_SLOT, "all %u reserved %s 9p slots are in use", total,
                  writable ? "writable" : "read-only");
  return pick;
}

static void fsdev_release(const hm_ninep_host *h, int writable, int k) {
  pthread_mutex_lock(&h->slots->lock);
  h->slots->reserved[writable][k] = 0;
  pthread_mutex_unlock(&h->slots->lock);
}

/* INSTANCE/9p (0700) with the empty placeholder in it; an fd, or negative. */
static int slot_dir_open(const hm_ninep_host *h, hm_error **err) {
  int inst = hm_open_nofollow(h->dir, O_PATH | O_DIRECTORY);
  if (inst < 0)
    return HM_ERR(err, -errno, "cannot open %s: %s", h->dir, strerror(errno));
  if (mkdirat(inst, HM_QEMU_9P_DIR, 0700) < 0 && errno != EEXIST) {
    int e = errno;
    close(inst);
    return HM_ERR(err, -e, "cannot create %s/" HM_QEMU_9P_DIR ": %s", h->dir, strerror(e));
  }
  int d = openat(inst, HM_QEMU_9P_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int e = errno;
  close(inst);
  if (d < 0)
    return HM_ERR(err, -e, "cannot open %s/" HM_QEMU_9P_DIR ": %s", h->dir, strerror(e));
  struct stat st;
  if (fstat(d, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
    close(d);
    return HM_ERR(err, HM_E_PERM,
                  "%s/" HM_QEMU_9P_DIR " is not a private directory of ours (owner and mode "
                  "0700 expected)",
                  h->dir);
  }
  if (mkdirat(d, "empty", 0500) < 0 && errno != EEXIST) {
    e = errno;
    close(d);
    return HM_ERR(err, -e, "cannot create the 9p placeholder in %s/" HM_QEMU_9P_DIR ": %s", h->dir,
                  strerror(e));
  }
  return d;
}

/* Points link name (in dirfd d) at target, atomically (a new link renamed
 * over the old one). */
static int link_point(int d, const char *name, const char *target, hm_error **err) {
  char tmp[96];
  snprintf(tmp, sizeof(tmp), ".%s.new", name);
  unlinkat(d, tmp, 0);
  if (symlinkat(target, d, tmp) < 0 || renameat(d, tmp, d, name) < 0) {
    int e = errno;
    unlinkat(d, tmp, 0);
    return HM_ERR(err, -e, "cannot point 9p slot link %s at %s: %s", name, target, strerror(e));
  }
  return 0;
}

static int link_is(int d, const char *name, const char *target) {
  char buf[256];
  ssize_t n = readlinkat(d, name, buf, sizeof(buf) - 1);
  if (n < 0)
    return 0;
  buf[n] = '\0';
  return strcmp(buf, target) == 0;
}

void hm_ninep_slot_sweep(const hm_ninep_host *h) {
  hm_ninep_slot_info info;
  unsigned char used[2][HM_QEMU_9P_MAX_SLOTS];
  if (hm_ninep_slot_info_get(h, &info, NULL) < 0 || (!info.ro && !info.rw))
    return;
  int d = slot_dir_open(h, NULL);
  if (d < 0)
    return;
  pthread_mutex_lock(&h->slots->lock);
  if (fsdevs_used(h, used, NULL, NULL, NULL, 0, NULL) == 0) {
    for (int kind = 0; kind < 2; kind++) {
      unsigned total = kind ? info.rw : info.ro;
      for (unsigned k = 0; k < total; k++) {
        char name[32];
        snprintf(name, sizeof(name), "%s-%u", kind_name[kind], k);
        if (used[kind][k] || h->slots->reserved[kind][k] || link_is(d, name, "empty"))
          continue;
        if (link_point(d, name, "empty", NULL) == 0)
          hm_debug("9p slot link %s pointed back at the placeholder", name);
      }
    }
  }
  pthread_mutex_unlock(&h->slots->lock);
  close(d);
}

/* "version=9p2000.L,msize=N,cache=C" for a virtio-9p mount. */
static int slot_guest_options(char **out, const hm_mount_spec *spec, hm_error **err) {
  const char *version = hm_mount_spec_get_option(spec, "version");
  const char *msize = hm_mount_spec_get_option(spec, "msize");
  const char *cache = hm_mount_spec_get_option(spec, "cache");
  unsigned long m = msize ? strtoul(msize, NULL, 10) : SLOT_MSIZE_DEFAULT;
  if (m < 4096)
    return HM_ERR(err, HM_E_INVALID, "msize=%s: 9p needs at least 4096", msize);
  if (!cache)
    cache = hm_mount_spec_get_writable(spec) ? "mmap" : "fscache";
  if (asprintf(out, "version=%s,msize=%lu,cache=%s", version ? version : "9p2000.L", m, cache) <
      0) {
    *out = NULL;
    return HM_ERR_NOMEM(err);
  }
  return 0;
}

int hm_ninep_slot_attach(const hm_ninep_host *h, const hm_mount_spec *spec, hm_attachment *att,
                         hm_error **err) {
  const char *id = hm_attachment_get_id(att);
  const char *host = hm_mount_spec_get_host_path(spec);
  int writable = hm_mount_spec_get_writable(spec) != 0;
  char dev[64], fsdev[64], linkname[32], portname[32], target[64], *marker = NULL, *opts = NULL;
  int k = -1, port = -1, share = -1, d = -1, stage = 0, r;
  if (strlen(id) > 40)
    return HM_ERR(err, HM_E_INVALID, "mount id \"%s\" is too long", id);
  snprintf(dev, sizeof(dev), "%s-dev", id);
  if ((r = slot_guest_options(&opts, spec, err)) < 0)
    return r;
  if (asprintf(&marker, "%s/%s-9p", h->dir, id) < 0) {
    marker = NULL;
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  if ((k = fsdev_reserve(h, writable, err)) < 0) {
    r = k;
    goto out;
  }
  snprintf(fsdev, sizeof(fsdev), HM_QEMU_9P_FSDEV_PREFIX "%s-%d", kind_name[writable], k);
  snprintf(linkname, sizeof(linkname), "%s-%d", kind_name[writable], k);
  if ((port = h->port_reserve(h->ud, err)) < 0) {
    r = port;
    goto out;
  }
  snprintf(portname, sizeof(portname), HM_QEMU_ROOT_PORT_PREFIX "%d", port);

  /* The share, once: what QEMU will open is this very directory. */
  share = hm_open_nofollow(host, O_PATH | O_DIRECTORY);
  struct stat st;
  if (share < 0 || fstat(share, &st) < 0) {
    r = HM_ERR(err, HM_E_INVALID, "host path %s cannot be opened: %s", host, strerror(errno));
    goto out;
  }
  if ((spec->host_dev || spec->host_ino) && ((unsigned long long)st.st_dev != spec->host_dev ||
                                             (unsigned long long)st.st_ino != spec->host_ino)) {
    r = HM_ERR(err, HM_E_INVALID,
               "host path %s is no longer the directory that was checked (it was replaced); "
               "refusing to serve it",
               host);
    goto out;
  }
  if ((d = slot_dir_open(h, err)) < 0) {
    r = d;
    goto out;
  }
  unlink(marker);
  if (symlink(host, marker) < 0) {
    r = HM_ERR(err, -errno, "cannot create %s: %s", marker, strerror(errno));
    goto out;
  }
  stage = 1;
  hm_fault("add:9p-link-created");
  snprintf(target, sizeof(target), "/proc/%d/fd/%d", (int)getpid(), share);
  if ((r = link_point(d, linkname, target, err)) < 0)
    goto fail;
  stage = 2;
  hm_fault("add:9p-slot-pointed");

  json_object *args = json_object_new_object();
  json_object_object_add(args, "driver", json_object_new_string("virtio-9p-pci"));
  json_object_object_add(args, "id", json_object_new_string(dev));
  json_object_object_add(args, "fsdev", json_object_new_string(fsdev));
  json_object_object_add(args, "mount_tag", json_object_new_string(id));
  json_object_object_add(args, "bus", json_object_new_string(portname));
  json_object_object_add(args, "addr", json_object_new_string("0"));
  r = hm_ninep_exec(h, "device_add", args, -1, NULL, err);
  json_object_put(args);
  /* Realized or not, QEMU is done with the path: back to the placeholder. */
  int lr = link_point(d, linkname, "empty", NULL);
  if (r < 0)
    goto fail;
  stage = 3;
  if (lr < 0) {
    r = HM_ERR(err, HM_E_IO, "cannot point 9p slot link %s back at its placeholder", linkname);
    goto fail;
  }
  hm_fault("add:9p-device-added");
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  if ((r = hm_attachment_set_tag(att, id, err)) < 0 ||
      (r = hm_attachment_set_type(att, HM_TYPE_9P, err)) < 0 ||
      (r = hm_attachment_set_data(att, "via", "pci", err)) < 0 ||
      (r = hm_attachment_set_data(att, "guestTransport", "virtio", err)) < 0 ||
      (r = hm_attachment_set_data(att, "device", dev, err)) < 0 ||
      (r = hm_attachment_set_data(att, "fsdev", fsdev, err)) < 0 ||
      (r = hm_attachment_set_data(att, "rootPort", portstr, err)) < 0 ||
      (r = hm_attachment_set_data(att, "guestOptions", opts, err)) < 0)
    goto fail;
  pid_t qpid = qemu_pid(h);
  if (qpid > 0) {
    char qp[24];
    snprintf(qp, sizeof(qp), "%d", (int)qpid);
    if ((r = hm_attachment_set_data(att, "qemu_pid", qp, err)) < 0)
      goto fail;
  }
  hm_debug("%s: 9p %s on %s serving %s", id, fsdev, portname, host);
  r = 0;
  goto out;

fail:
  if (stage >= 3) {
    hm_ninep_unplug(h, dev, NULL);
    h->port_freed(h->ud, port);
  }
  if (stage >= 2)
    link_point(d, linkname, "empty", NULL);
  if (stage >= 1)
    unlink(marker);
out:
  if (port >= 0)
    h->port_release(h->ud, port);
  if (k >= 0)
    fsdev_release(h, writable, k);
  if (share >= 0)
    close(share);
  if (d >= 0)
    close(d);
  free(marker);
  free(opts);
  return r;
}

int hm_ninep_slot_has_device(const hm_ninep_host *h, const char *id, hm_error **err) {
  unsigned char used[2][HM_QEMU_9P_MAX_SLOTS];
  char dev[64];
  int has = 0;
  snprintf(dev, sizeof(dev), "%s-dev", id);
  int r = fsdevs_used(h, used, dev, &has, NULL, 0, err);
  return r < 0 ? r : has;
}

int hm_ninep_slot_writable(const hm_ninep_host *h, const char *id) {
  unsigned char used[2][HM_QEMU_9P_MAX_SLOTS];
  char dev[64], fsdev[64] = "";
  int has = 0, kind = -1;
  snprintf(dev, sizeof(dev), "%s-dev", id);
  if (fsdevs_used(h, used, dev, &has, fsdev, sizeof(fsdev), NULL) < 0 || !has ||
      fsdev_parse(fsdev, &kind) < 0)
    return -1;
  return kind;
}

int hm_ninep_slot_detach(const hm_ninep_host *h, hm_attachment *att, hm_error **err) {
  const char *id = hm_attachment_get_id(att);
  const char *p = hm_attachment_get_data(att, "rootPort");
  char dev[64], marker[4096];
  snprintf(dev, sizeof(dev), "%s-dev", id);
  if (snprintf(marker, sizeof(marker), "%s/%s-9p", h->dir, id) >= (int)sizeof(marker))
    return HM_ERR(err, HM_E_INVALID, "instance directory path too long");
  int port = p ? atoi(p) : -1;
  /* Warm before the unplug too (see qemu_driver.c's SLOT_COOLDOWN_MS). */
  if (port >= 0)
    h->port_freed(h->ud, port);
  int r = hm_ninep_unplug(h, dev, err);
  if (r < 0)
    return r;
  if (port >= 0)
    h->port_freed(h->ud, port);
  hm_fault("remove:device-deleted");
  hm_ninep_slot_sweep(h);
  if (unlink(marker) < 0 && errno != ENOENT)
    return HM_ERR(err, -errno, "cannot remove %s: %s", marker, strerror(errno));
  return 0;
}

int hm_ninep_slot_check(const hm_ninep_host *h, hm_attachment *att, char **reason, hm_error **err) {
  int r = hm_ninep_slot_has_device(h, hm_attachment_get_id(att), err);
  if (r < 0)
    return r;
  if (!r)
    return asprintf(reason, "9p device %s-dev is gone from QEMU", hm_attachment_get_id(att)) < 0
               ? HM_E_NOMEM
               : 0;
  return 1;
}
