/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 9p hot-mount for the QEMU backend: diod supervision and the QMP plumbing of
 * one virtserialport per mount (see ninep.h).
 *
 * diod runs confined to the share (diod_start): the share is its root, so
 * its one export, and the guest's aname, is "/" (no host path, commas
 * included, ever reaches the guest's mount options).
 *
 * A marker link in the instance directory, INSTANCE/hm-N-9p -> HOST_PATH,
 * is made first by attach and removed last by detach and by every rollback
 * (diod never uses it): while anything of a 9p mount may exist (diod, the
 * fd QEMU got by getfd, chardev, port), its link does, so a restarted daemon
 * knows an entry cut short at any step is 9p, and scan finds what a lost
 * registry forgot.
 */
#include "ninep.h"
#include "spawn.h"
#include "virtiofsd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 10000
#define UNPLUG_TIMEOUT_MS 15000
#define DIOD_STOP_MS 3000
#define DIOD_FD 3
#define DIOD_READY_MS 10000

/* Markers in diod's environment, as for virtiofsd (qemu_driver.c), plus the
 * transport, so that a restarted daemon knows what it found. */
#define ENV_TRANSPORT "HOTMOUNT_TRANSPORT"

/* Per-mount names, all derived from the id. */
typedef struct names {
  char dev[64], chr[64], fd[64], port[96];
  char *link; /* INSTANCE/hm-N-9p */
} names;

static int names_make(names *n, const hm_ninep_host *h, const char *id, hm_error **err) {
  memset(n, 0, sizeof(*n));
  if (strlen(id) > 40)
    return HM_ERR(err, HM_E_INVALID, "mount id \"%s\" is too long", id);
  snprintf(n->dev, sizeof(n->dev), "%s-dev", id);
  snprintf(n->chr, sizeof(n->chr), "%s-chr", id);
  snprintf(n->fd, sizeof(n->fd), "%s-fd", id);
  snprintf(n->port, sizeof(n->port), HM_NINEP_PORT_PREFIX "%s", id);
  if (asprintf(&n->link, "%s/%s-9p", h->dir, id) < 0) {
    n->link = NULL;
    return HM_ERR_NOMEM(err);
  }
  return 0;
}

static void names_clear(names *n) {
  free(n->link);
  n->link = NULL;
}

int hm_ninep_exec(const hm_ninep_host *h, const char *cmd, json_object *args, int fd,
                  json_object **ret, hm_error **err) {
  hm_qmp *c;
  int r = h->qmp_get(h->ud, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_execute(c, cmd, args, fd, ret, QMP_TIMEOUT_MS, err);
  h->qmp_put(h->ud);
  return r;
}

/* cmd {key: value}; QMP's DeviceNotFound counts as done when gone_ok. */
static int exec_id(const hm_ninep_host *h, const char *cmd, const char *key, const char *value,
                   int gone_ok, hm_error **err) {
  json_object *args = json_object_new_object();
  json_object_object_add(args, key, json_object_new_string(value));
  hm_error *e = NULL;
  int r = hm_ninep_exec(h, cmd, args, -1, NULL, &e);
  json_object_put(args);
  if (r == HM_E_QMP && gone_ok && hm_qmp_error_is(e, "DeviceNotFound"))
    r = 0;
  if (r < 0 && err && !*err)
    *err = e;
  else
    hm_error_free(e);
  return r;
}

static int chardev_remove(const hm_ninep_host *h, const char *id, hm_error **err) {
  hm_qmp *c;
  int r = h->qmp_get(h->ud, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_chardev_remove(c, id, err);
  h->qmp_put(h->ud);
  return r;
}

static int is_exec(const char *p) {
  return access(p, X_OK) == 0;
}

int hm_ninep_diod_path(char **out, hm_error **err) {
  const char *env = getenv("HOTMOUNT_DIOD");
  if (env && *env) {
    if (!is_exec(env))
      return HM_ERR(err, HM_E_UNSUPPORTED, "diod \"%s\" (HOTMOUNT_DIOD) is not an executable", env);
    return (*out = strdup(env)) ? 0 : HM_ERR_NOMEM(err);
  }
  const char *path = getenv("PATH");
  char *dup = strdup(path ? path : ""), *save = NULL;
  if (!dup)
    return HM_ERR_NOMEM(err);
  for (char *d = strtok_r(dup, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char *p = NULL;
    if (asprintf(&p, "%s/diod", d) >= 0 && is_exec(p)) {
      free(dup);
      *out = p;
      return 0;
    }
    free(p);
  }
  free(dup);
  static const char *const known[] = {"/usr/sbin/diod", "/usr/local/sbin/diod", NULL};
  for (const char *const *k = known; *k; k++)
    if (is_exec(*k))
      return (*out = strdup(*k)) ? 0 : HM_ERR_NOMEM(err);
  return HM_ERR(err, HM_E_UNSUPPORTED,
                "diod (the 9P server 9p mounts need) not found in PATH or /usr/sbin; install it "
                "(Debian: diod) or set HOTMOUNT_DIOD");
}

int hm_ninep_guest_options(char **out, const hm_mount_spec *spec, const char *aname,
                           hm_error **err) {
  const char *version = hm_mount_spec_get_option(spec, "version");
  const char *msize = hm_mount_spec_get_option(spec, "msize");
  const char *cache = hm_mount_spec_get_option(spec, "cache");
  const char *sec = hm_mount_spec_get_option(spec, "securityModel");
  if (version && strcmp(version, "9p2000.L") != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "version=%s: the host's 9P server (diod) speaks 9p2000.L only", version);
  if (sec && strcmp(sec, "passthrough") != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "securityModel=%s: the host's 9P server (diod) has no such mode; it acts as "
                  "the guest's user on the host (passthrough)",
                  sec);
  unsigned long m = msize ? strtoul(msize, NULL, 10) : HM_NINEP_MAX_MSIZE;
  if (m < 4096)
    return HM_ERR(err, HM_E_INVALID, "msize=%s: 9p needs at least 4096", msize);
  /* diod answers with at most 65536 and the kernel would take that anyway:
   * say what the mount will really use. */
  if (m > HM_NINEP_MAX_MSIZE) {
    hm_debug("9p msize %lu lowered to %d, the most diod negotiates", m, HM_NINEP_MAX_MSIZE);
    m = HM_NINEP_MAX_MSIZE;
  }
  if (!cache)
    cache = hm_mount_spec_get_writable(spec) ? "mmap" : "fscache";
  if (strchr(aname, ','))
    return HM_ERR(err, HM_E_INVALID, "9p export path \"%s\" contains a comma", aname);
  /* uname=root: the kernel's first attach names a user by name only (no
   * uid), and diod -N knows no name but root; every later attach names the
   * guest user's uid (see hm_ninep_diod_argv). */
  if (asprintf(out, "version=9p2000.L,msize=%lu,cache=%s,aname=%s,uname=root", m, cache, aname) <
      0) {
    *out = NULL;
    return HM_ERR_NOMEM(err);
  }
  return 0;
}

int hm_ninep_diod_argv(char ***out, const char *diod, const char *export, int readonly, int fd,
                       hm_error **err) {
  hm_strv v = {0};
  /* -f: stay in the foreground (we supervise it); -n: no munge
   * authentication (the port is the guest's alone); -N: guest uids pass
   * through as they are, like virtiofs: the guest kernel (access=client, its
   * 9p2000.L default) attaches once per guest user naming its uid, and diod
   * acts as that uid (setfsuid; gid = uid and no supplementary groups, as
   * -N has no group database; creates carry the caller's gid). Without
   * auth no attach is trusted to skip the host's permission checks, so a
   * guest user can do on the share what the same uid can do on the host,
   * and guest root what root can. -N knows users by uid only, and by name
   * only "root": the guest's mount-time attach names uname=root
   * (hm_ninep_guest_options). -c /dev/null: the host's diod.conf must not
   * change what is exported. */
  int r = hm_strv_push(&v, diod);
  r = r ?: hm_strv_push(&v, "-f");
  r = r ?: hm_strv_push(&v, "-n");
  r = r ?: hm_strv_push(&v, "-N");
  r = r ?: hm_strv_push(&v, "-c");
  r = r ?: hm_strv_push(&v, "/dev/null");
  r = r ?: hm_strv_push(&v, "-L");
  r = r ?: hm_strv_push(&v, "stderr");
  r = r ?: hm_strv_pushf(&v, "-r%d", fd);
  r = r ?: hm_strv_pushf(&v, "-w%d", fd);
  r = r ?: hm_strv_push(&v, "-e");
  r = r ?: hm_strv_push(&v, export);
  if (readonly) {
    r = r ?: hm_strv_push(&v, "-o");
    r = r ?: hm_strv_push(&v, "ro");
  }
  if (r < 0) {
    hm_strv_clear(&v);
    return HM_ERR_NOMEM(err);
  }
  *out = hm_strv_steal(&v);
  return 0;
}

/* What diod keeps of root: acting as each guest user (setfsuid/setfsgid,
 * setgroups) and as guest root on the share (chown, permission overrides).
 * Not CAP_MKNOD, CAP_FSETID, CAP_SETFCAP (file capabilities), CAP_SYS_ADMIN
 * (mounts: no way back out of the jail), CAP_LINUX_IMMUTABLE, or anything
 * else. */
static const hm_confine diod_confine = {
    .drop_caps = 1,
    .keep_caps = HM_CAP(CAP_CHOWN) | HM_CAP(CAP_DAC_OVERRIDE) | HM_CAP(CAP_DAC_READ_SEARCH) |
                 HM_CAP(CAP_FOWNER) | HM_CAP(CAP_SETUID) | HM_CAP(CAP_SETGID),
    .filter = 1,
};

/* Tversion on our end of diod's socket: its answer says diod has loaded its
 * libraries and reads the socket (the guest's own Tversion later starts
 * the session afresh). */
static int diod_ready(int fd, hm_error **err) {
  unsigned char m[21] = {21, 0, 0, 0, 100, 0xff, 0xff, 0, 0, 1, 0, 8, 0};
  memcpy(m + 13, "9P2000.L", 8);
  if (write(fd, m, sizeof(m)) != (ssize_t)sizeof(m))
    return HM_ERR(err, HM_E_HELPER, "diod_ready: cannot write to diod: %s", strerror(errno));
  unsigned char r[64];
  size_t got = 0, want = 7;
  int64_t deadline = hm_now_ms() + DIOD_READY_MS;
  while (got < want) {
    int64_t left = deadline - hm_now_ms();
    struct pollfd pfd = {fd, POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
      return HM_ERR(err, HM_E_HELPER, "diod_ready: diod did not answer Tversion");
    ssize_t n = read(fd, r + got, want - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return HM_ERR(err, HM_E_HELPER, "diod_ready: diod closed its socket (see the daemon log)");
    got += (size_t)n;
    if (got == 7) {
      want = r[0] | r[1] << 8 | (size_t)r[2] << 16 | (size_t)r[3] << 24;
      if (r[4] != 101 || want < 7 || want > sizeof(r))
        return HM_ERR(err, HM_E_HELPER, "diod_ready: unexpected answer to Tversion (type %d)",
                      r[4]);
    }
  }
  return 0;
}

/*
 * Starts diod on fd (its end of the socketpair; ours is `mine`) confined to
 * the share: diod has no way to confine itself, and it serves any path an
 * aname names (1.0.24 accepts an aname whose character at the export's
 * length is '/', whatever comes before it). So it starts in its own mount
 * namespace with the share bound (nosuid, nodev, read-only when the mount
 * is: diod's own -o ro does not apply to -e exports) and a reduced root
 * (diod_confine); once it has answered a Tversion (its libraries loaded),
 * that namespace is pivoted into the share, which becomes its `/`, the one
 * export, with nothing else of the host left to name.
 */
static int diod_start(pid_t *out, char **argv, int fd, int mine, const char *host, int writable,
                      char *const *env, hm_error **err) {
  if (geteuid() != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "9p needs root on the host: diod is confined to the shared directory in a "
                  "mount namespace of its own, which only root can make");
  hm_share share;
  int r = hm_share_open(&share, host, !writable, err);
  if (r < 0)
    return r;
  hm_spawn_opts o = {.argv = argv,
                     .extra_env = env,
                     .pass_fd = fd,
                     .as_fd = DIOD_FD,
                     .stdio_fd = -1,
                     .new_session = 1,
                     .share = &share,
                     .confine = &diod_confine};
  pid_t pid = -1;
  if ((r = hm_spawn(&pid, &o, err)) < 0)
    goto out;
  if ((r = diod_ready(mine, err)) < 0 || (r = hm_jail_pivot(pid, &share, err)) < 0) {
    hm_helper_stop(pid, hm_ninep_diod_alive, "diod", DIOD_STOP_MS, NULL);
    goto out;
  }
  *out = pid;
out:
  hm_share_close(&share);
  return r < 0 ? hm_error_prefix(err, r, "hm_qemu", "cannot start diod for %s", host) : 0;
}

int hm_ninep_diod_alive(pid_t pid) {
  return hm_helper_alive(pid, "diod");
}

static int diod_stop(pid_t pid, hm_error **err) {
  return hm_helper_stop(pid, hm_ninep_diod_alive, "diod", DIOD_STOP_MS, err);
}

/* Is pid a diod of this instance (and of mount id, when id is not NULL)? */
/*
 * Markers are environment strings any local user can give any process. A
 * diod is taken for ours only when it also runs as our euid, runs the diod
 * we would start, and is confined (its root is not ours: an unconfined
 * diod, say one a daemon before the confinement started, serves the whole
 * host to whoever holds its port).
 */
static int diod_trusted(pid_t pid) {
  char *diod = NULL;
  int ok = hm_ninep_diod_path(&diod, NULL) == 0 ? hm_proc_is_ours(pid, diod)
                                                : hm_proc_is_ours(pid, NULL);
  free(diod);
  char p[64];
  struct stat root, st;
  snprintf(p, sizeof(p), "/proc/%d/root", (int)pid);
  return ok && stat("/", &root) == 0 && stat(p, &st) == 0 &&
         !(st.st_dev == root.st_dev && st.st_ino == root.st_ino);
}

static int diod_ours(const hm_ninep_host *h, pid_t pid, const char *id) {
  if (!hm_ninep_diod_alive(pid) || !diod_trusted(pid))
    return 0;
  char *inst = hm_proc_getenv(pid, HM_ENV_INSTANCE),
       *m = id ? hm_proc_getenv(pid, HM_ENV_MOUNT) : NULL;
  int ok = inst && strcmp(inst, h->dir) == 0 && (!id || (m && strcmp(m, id) == 0));
  free(inst);
  free(m);
  return ok;
}

struct each_ctx {
  void (*fn)(pid_t pid, void *ud);
  void *ud;
};

static void each_trusted(pid_t pid, void *ud) {
  struct each_ctx *c = ud;
  if (diod_trusted(pid))
    c->fn(pid, c->ud);
  else
    hm_warn("diod %d carries this instance's markers but is not ours (another user or program, "
            "or not confined to its share): left alone",
            (int)pid);
}

/* Calls fn for each diod of this instance (diod_trusted). */
static void diod_each(const hm_ninep_host *h, void (*fn)(pid_t pid, void *ud), void *ud) {
  struct each_ctx c = {fn, ud};
  hm_proc_each("diod", HM_ENV_INSTANCE, h->dir, each_trusted, &c);
}

struct find_ctx {
  const char *id;
  pid_t pid;
};

static void find_one(pid_t pid, void *ud) {
  struct find_ctx *c = ud;
  char *m = hm_proc_getenv(pid, HM_ENV_MOUNT);
  if (m && strcmp(m, c->id) == 0)
    c->pid = pid;
  free(m);
}

/* The diod of att: the recorded pid if it still is ours, else by markers. */
static pid_t attachment_pid(const hm_ninep_host *h, hm_attachment *att) {
  const char *id = hm_attachment_get_id(att);
  const char *p = hm_attachment_get_data(att, "diod_pid");
  pid_t pid = p ? (pid_t)atoi(p) : -1;
  if (pid > 1 && diod_ours(h, pid, id))
    return pid;
  struct find_ctx c = {id, -1};
  diod_each(h, find_one, &c);
  return c.pid;
}

/* device_del and wait for DEVICE_DELETED. A virtserialport leaves at once
 * (no guest cooperation: the guest sees the port go, its relay gets EOF); a
 * slot's virtio-9p-pci when the guest ejects it (ACPI, about 0.1 s). */
int hm_ninep_unplug(const hm_ninep_host *h, const char *dev, hm_error **err) {
  hm_qmp *c;
  int r = h->qmp_get(h->ud, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_device_del(c, dev, UNPLUG_TIMEOUT_MS, err);
  h->qmp_put(h->ud);
  if (r == HM_E_TIMEOUT)
    return hm_error_prefix(err, r, "hm_qemu", "9p device %s was not released", dev);
  return r;
}

/* Everything of mount id, in removal order; each step tolerates "gone". */
static int teardown(const hm_ninep_host *h, const names *n, pid_t pid, hm_error **err) {
  int r = hm_ninep_unplug(h, n->dev, err);
  if (r < 0)
    return r;
  hm_fault("remove:device-deleted");
  if ((r = chardev_remove(h, n->chr, err)) < 0)
    return r;
  hm_fault("remove:chardev-removed");
  /* Left when the daemon died between getfd and chardev-add. QEMU keeps
   * getfd's fds per monitor, not per connection: they outlive our QMP
   * connection (QEMU 7.2; e2e-crash's add:9p-fd-passed sees the socket stay
   * in QEMU without this), so a restarted daemon closes it by name. */
  exec_id(h, "closefd", "fdname", n->fd, 1, NULL);
  if (pid > 0 && (r = diod_stop(pid, err)) < 0)
    return r;
  hm_fault("remove:9p-server-stopped");
  if (unlink(n->link) < 0 && errno != ENOENT)
    return HM_ERR(err, -errno, "cannot remove %s: %s", n->link, strerror(errno));
  return 0;
}

static int count_children(json_object *list) {
  int n = 0;
  size_t len = json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
  for (size_t i = 0; i < len; i++) {
    json_object *name;
    if (json_object_object_get_ex(json_object_array_get_idx(list, i), "name", &name) &&
        strncmp(json_object_get_string(name), "child[", 6) == 0)
      n++;
  }
  return n;
}

int hm_ninep_free_ports(const hm_ninep_host *h, hm_error **err) {
  static const char *const ctl = "/machine/peripheral/hm-serial/virtio-backend";
  json_object *args = json_object_new_object(), *ret = NULL;
  json_object_object_add(args, "path", json_object_new_string(ctl));
  json_object_object_add(args, "property", json_object_new_string("max_ports"));
  hm_error *e = NULL;
  int r = hm_ninep_exec(h, "qom-get", args, -1, &ret, &e);
  json_object_put(args);
  if (r == HM_E_QMP) {
    hm_error_free(e);
    return HM_ERR(err, HM_E_NOT_READY,
                  "the VM has no hm-serial controller for 9p ports; start QEMU with the "
                  "arguments of `hotmount qemu-args`");
  }
  if (r < 0) {
    if (err && !*err)
      *err = e;
    else
      hm_error_free(e);
    return r;
  }
  int max = json_object_get_int(ret);
  json_object_put(ret);
  ret = NULL;
  args = json_object_new_object();
  json_object_object_add(args, "path",
                         json_object_new_string("/machine/peripheral/hm-serial/"
                                                "virtio-backend/hm-serial.0"));
  r = hm_ninep_exec(h, "qom-list", args, -1, &ret, err);
  json_object_put(args);
  if (r < 0)
    return r;
  /* Port number 0 is reserved for a console. */
  int free_ports = max - 1 - count_children(ret);
  json_object_put(ret);
  return free_ports > 0 ? free_ports : 0;
}

int hm_ninep_attach(const hm_ninep_host *h, const hm_mount_spec *spec, hm_attachment *att,
                    hm_error **err) {
  const char *id = hm_attachment_get_id(att);
  const char *host = hm_mount_spec_get_host_path(spec);
  int writable = hm_mount_spec_get_writable(spec);
  names n;
  char *diod = NULL, *opts = NULL, **argv = NULL;
  int sv[2] = {-1, -1}, r, stage = 0;
  pid_t pid = -1;
  hm_strv env = {0};
  /* The reserved-slot path when the VM has one for this mount (ninep_slot.c);
   * this virtio-serial one otherwise. */
  const char *why = NULL;
  int slot = hm_ninep_choose_slot(h, spec, &why, err);
  if (slot < 0)
    return slot;
  if (slot) {
    r = hm_ninep_slot_attach(h, spec, att, err);
    const char *via = hm_mount_spec_get_option(spec, "via");
    if (r != HM_E_NO_SLOT || (via && strcmp(via, "pci") == 0))
      return r;
    /* Taken meanwhile (a root port or the last fsdev): the serial path. */
    why = err && *err ? hm_error_message(*err) : "no free slot";
    hm_info("%s: 9p over virtio-serial: %s", id, why);
    if (err) {
      hm_error_free(*err);
      *err = NULL;
    }
  } else {
    hm_info("%s: 9p over virtio-serial: %s", id, why);
  }
  if (geteuid() != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "9p over virtio-serial needs root on the host: its server, diod, is confined to "
                  "the share in a mount namespace only root can make, and no reserved 9p slot "
                  "is free; for 9p without root start the VM with reserved 9p slots (the "
                  "arguments of `hotmount qemu-args NAME --9p-slots N`), or use virtiofs");
  if ((r = names_make(&n, h, id, err)) < 0)
    return r;
  /* diod's root is the share (diod_start): the export is "/". */
  if ((r = hm_ninep_guest_options(&opts, spec, "/", err)) < 0)
    goto out;
  if ((r = hm_ninep_diod_path(&diod, err)) < 0)
    goto out;
  if ((r = hm_ninep_free_ports(h, err)) <= 0) {
    if (r == 0)
      r = HM_ERR(err, HM_E_NO_SLOT,
                 "every port of the VM's virtio-serial controller is in use; remove a 9p mount");
    goto out;
  }
  if ((r = hm_ninep_diod_argv(&argv, diod, "/", !writable, DIOD_FD, err)) < 0)
    goto out;
  r = hm_helper_markers(&env, h->dir, id, host, writable);
  r = r ?: hm_strv_push(&env, ENV_TRANSPORT "=9p");
  if (r < 0) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  /* The export: a link with a name we chose (see the top of this file). */
  unlink(n.link);
  if (symlink(host, n.link) < 0) {
    r = HM_ERR(err, -errno, "cannot create %s: %s", n.link, strerror(errno));
    goto out;
  }
  stage = 1;
  hm_fault("add:9p-link-created");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    r = HM_ERR(err, -errno, "socketpair: %s", strerror(errno));
    goto fail;
  }
  if ((r = diod_start(&pid, argv, sv[1], sv[0], host, writable, env.v, err)) < 0)
    goto fail;
  close(sv[1]);
  sv[1] = -1;
  hm_fault("add:9p-server-started");

  /* getfd and chardev-add on one connection: QMP keeps getfd's fds per
   * monitor. chardev-add takes the fd over; on failure it stays, so it is
   * closed by name. */
  hm_qmp *c;
  if ((r = h->qmp_get(h->ud, &c, err)) < 0)
    goto fail;
  json_object *args = json_object_new_object();
  json_object_object_add(args, "fdname", json_object_new_string(n.fd));
  r = hm_qmp_execute(c, "getfd", args, sv[0], NULL, QMP_TIMEOUT_MS, err);
  json_object_put(args);
  if (r == 0)
    hm_fault("add:9p-fd-passed");
  if (r == 0) {
    json_object *str = json_object_new_object(), *addr = json_object_new_object(),
                *data = json_object_new_object(), *backend = json_object_new_object();
    args = json_object_new_object();
    json_object_object_add(str, "str", json_object_new_string(n.fd));
    json_object_object_add(addr, "type", json_object_new_string("fd"));
    json_object_object_add(addr, "data", str);
    json_object_object_add(data, "addr", addr);
    json_object_object_add(data, "server", json_object_new_boolean(0));
    json_object_object_add(backend, "type", json_object_new_string("socket"));
    json_object_object_add(backend, "data", data);
    json_object_object_add(args, "id", json_object_new_string(n.chr));
    json_object_object_add(args, "backend", backend);
    r = hm_qmp_execute(c, "chardev-add", args, -1, NULL, QMP_TIMEOUT_MS, err);
    json_object_put(args);
    if (r < 0) {
      args = json_object_new_object();
      json_object_object_add(args, "fdname", json_object_new_string(n.fd));
      hm_qmp_execute(c, "closefd", args, -1, NULL, QMP_TIMEOUT_MS, NULL);
      json_object_put(args);
    }
  }
  h->qmp_put(h->ud);
  /* QEMU has its own copy now (or none): ours goes either way. */
  close(sv[0]);
  sv[0] = -1;
  if (r < 0)
    goto fail;
  stage = 2;
  hm_fault("add:9p-chardev-added");

  args = json_object_new_object();
  json_object_object_add(args, "driver", json_object_new_string("virtserialport"));
  json_object_object_add(args, "bus", json_object_new_string("hm-serial.0"));
  json_object_object_add(args, "chardev", json_object_new_string(n.chr));
  json_object_object_add(args, "name", json_object_new_string(n.port));
  json_object_object_add(args, "id", json_object_new_string(n.dev));
  r = hm_ninep_exec(h, "device_add", args, -1, NULL, err);
  json_object_put(args);
  if (r < 0)
    goto fail;
  stage = 3;
  hm_fault("add:9p-device-added");
  if (!hm_ninep_diod_alive(pid)) {
    r = HM_ERR(err, HM_E_HELPER, "diod exited early (see the daemon log)");
    goto fail;
  }
  char pidstr[24];
  snprintf(pidstr, sizeof(pidstr), "%d", (int)pid);
  if ((r = hm_attachment_set_tag(att, n.port, err)) < 0 ||
      (r = hm_attachment_set_type(att, HM_TYPE_9P, err)) < 0 ||
      (r = hm_attachment_set_data(att, "via", "serial", err)) < 0 ||
      (r = hm_attachment_set_data(att, "device", n.dev, err)) < 0 ||
      (r = hm_attachment_set_data(att, "chardev", n.chr, err)) < 0 ||
      (r = hm_attachment_set_data(att, "serialPort", n.port, err)) < 0 ||
      (r = hm_attachment_set_data(att, "diod_pid", pidstr, err)) < 0 ||
      (r = hm_attachment_set_data(att, "guestOptions", opts, err)) < 0)
    goto fail;
  hm_debug("%s: diod %d serving %s, port %s", id, (int)pid, host, n.port);
  r = 0;
  goto out;

fail:
  /* Reverse order; each step is skipped when it never happened. */
  if (stage >= 3)
    hm_ninep_unplug(h, n.dev, NULL);
  if (stage >= 2)
    chardev_remove(h, n.chr, NULL);
  if (pid > 0)
    diod_stop(pid, NULL);
  if (stage >= 1)
    unlink(n.link);
out:
  if (sv[0] >= 0)
    close(sv[0]);
  if (sv[1] >= 0)
    close(sv[1]);
  hm_strv_clear(&env);
  hm_strv_free(argv);
  free(diod);
  free(opts);
  names_clear(&n);
  return r;
}

/* 1 when att is a reserved-slot mount: by its data, or (an attach cut short,
 * a lost record) by a virtio-9p-pci device of its id in QEMU. */
static int is_slot(const hm_ninep_host *h, hm_attachment *att, hm_error **err) {
  const char *via = hm_attachment_get_data(att, "via");
  if (via)
    return strcmp(via, "pci") == 0;
  return hm_ninep_slot_has_device(h, hm_attachment_get_id(att), err);
}

int hm_ninep_detach(const hm_ninep_host *h, hm_attachment *att, hm_error **err) {
  names n;
  int r = is_slot(h, att, err);
  if (r < 0)
    return r;
  if (r)
    return hm_ninep_slot_detach(h, att, err);
  /* A slot attach cut short before its device_add may have left its link. */
  hm_ninep_slot_sweep(h);
  if ((r = names_make(&n, h, hm_attachment_get_id(att), err)) < 0)
    return r;
  /* Unlike virtiofs, a port whose server died is unplugged as usual: the
   * guest's relay reads EOF, its 9p mount fails with EIO, nothing waits. */
  r = teardown(h, &n, attachment_pid(h, att), err);
  names_clear(&n);
  return r;
}

static int qemu_has(const hm_ninep_host *h, const char *cmd, const char *key, const char *name,
                    hm_error **err) {
  hm_qmp *c;
  int r = h->qmp_get(h->ud, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_has(c, cmd, key, name, err);
  h->qmp_put(h->ud);
  return r;
}

int hm_ninep_check(const hm_ninep_host *h, hm_attachment *att, char **reason, hm_error **err) {
  const char *id = hm_attachment_get_id(att);
  names n;
  int r = is_slot(h, att, err);
  if (r < 0)
    return r;
  if (r)
    return hm_ninep_slot_check(h, att, reason, err);
  if ((r = names_make(&n, h, id, err)) < 0)
    return r;
  if ((r = qemu_has(h, "qom-list", "name", n.dev, err)) < 0)
    goto out;
  if (!r) {
    r = asprintf(reason, "port %s is gone from QEMU", n.dev) < 0 ? HM_E_NOMEM : HM_CHECK_GONE;
    goto out;
  }
  if ((r = qemu_has(h, "query-chardev", "label", n.chr, err)) < 0)
    goto out;
  if (!r) {
    r = asprintf(reason, "chardev %s is gone from QEMU", n.chr) < 0 ? HM_E_NOMEM : 0;
    goto out;
  }
  if (attachment_pid(h, att) <= 0) {
    r = asprintf(reason, "diod (the 9P server) for %s is not running", id) < 0 ? HM_E_NOMEM : 0;
    goto out;
  }
  r = 1;
out:
  names_clear(&n);
  return r;
}

int hm_ninep_watch_fd(const hm_ninep_host *h, hm_attachment *att) {
  /* A slot mount has no helper process: QEMU serves it. */
  if (is_slot(h, att, NULL) != 0)
    return -1;
  pid_t pid = attachment_pid(h, att);
  return pid > 0 ? hm_pidfd_open(pid) : -1;
}

int hm_ninep_mark_slot(hm_attachment *att, hm_error **err) {
  int r = hm_attachment_set_tag(att, hm_attachment_get_id(att), err);
  r = r ?: hm_attachment_set_type(att, HM_TYPE_9P, err);
  r = r ?: hm_attachment_set_data(att, "via", "pci", err);
  return r ?: hm_attachment_set_data(att, "guestTransport", "virtio", err);
}

int hm_ninep_mark(hm_attachment *att, hm_error **err) {
  /* A slot mount found by its device keeps what scan learnt there. */
  const char *via = hm_attachment_get_data(att, "via");
  if (via && strcmp(via, "pci") == 0)
    return 0;
  char port[96];
  snprintf(port, sizeof(port), HM_NINEP_PORT_PREFIX "%s", hm_attachment_get_id(att));
  int r = hm_attachment_set_tag(att, port, err);
  r = r ?: hm_attachment_set_data(att, "via", "serial", err);
  return r ?: hm_attachment_set_type(att, HM_TYPE_9P, err);
}

/* Does INSTANCE/ID-9p exist (see the top of this file)? */
static int link_exists(const hm_ninep_host *h, const char *id) {
  char p[4096];
  struct stat st;
  if (snprintf(p, sizeof(p), "%s/%s-9p", h->dir, id) >= (int)sizeof(p))
    return 0;
  return lstat(p, &st) == 0 && S_ISLNK(st.st_mode);
}

int hm_ninep_is(const hm_ninep_host *h, hm_attachment *att) {
  if (hm_attachment_get_type(att))
    return hm_attachment_get_type(att) == HM_TYPE_9P;
  /* Records of versions that kept the type in a data key. */
  const char *t = hm_attachment_get_data(att, "transport");
  if (t)
    return strcmp(t, "9p") == 0;
  const char *tag = hm_attachment_get_tag(att);
  if (tag && strncmp(tag, HM_NINEP_PORT_PREFIX, strlen(HM_NINEP_PORT_PREFIX)) == 0)
    return 1;
  if (link_exists(h, hm_attachment_get_id(att)))
    return 1;
  /* What a virtiofs attach records. */
  if (hm_attachment_get_data(att, "virtiofsd_pid") || hm_attachment_get_data(att, "slot"))
    return 0;
  if (attachment_pid(h, att) > 0)
    return 1;
  /* An attach cut short: what QEMU has under that name says. */
  json_object *args = json_object_new_object(), *ret = NULL;
  json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
  int r = hm_ninep_exec(h, "qom-list", args, -1, &ret, NULL);
  json_object_put(args);
  if (r < 0)
    return 0;
  char dev[64];
  snprintf(dev, sizeof(dev), "%s-dev", hm_attachment_get_id(att));
  int is = 0;
  size_t len = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;
  for (size_t i = 0; i < len; i++) {
    json_object *item = json_object_array_get_idx(ret, i), *name, *type;
    if (json_object_object_get_ex(item, "name", &name) &&
        json_object_object_get_ex(item, "type", &type) &&
        strcmp(json_object_get_string(name), dev) == 0)
      is = strcmp(json_object_get_string(type), "child<virtserialport>") == 0 ||
           strcmp(json_object_get_string(type), "child<virtio-9p-pci>") == 0;
  }
  json_object_put(ret);
  return is;
}

struct scan_ctx {
  hm_attachment *(*get)(void *ud, const char *id);
  void *ud;
};

static void scan_one(pid_t pid, void *ud) {
  struct scan_ctx *c = ud;
  hm_attachment *a = hm_helper_adopt(pid, "diod_pid", c->get, c->ud);
  if (a)
    hm_ninep_mark(a, NULL);
}

void hm_ninep_scan(const hm_ninep_host *h, hm_attachment *(*get)(void *ud, const char *id),
                   void *ud) {
  struct scan_ctx c = {get, ud};
  diod_each(h, scan_one, &c);
  /* Export links: an attach cut short before diod ran, or a remove after
   * diod stopped, leaves nothing else. */
  DIR *d = opendir(h->dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (len <= 6 || strncmp(de->d_name, "hm-", 3) != 0 || strcmp(de->d_name + len - 3, "-9p") != 0)
      continue;
    int digits = 1;
    for (size_t i = 3; i < len - 3; i++)
      digits = digits && de->d_name[i] >= '0' && de->d_name[i] <= '9';
    char id[64];
    if (!digits || len - 3 >= sizeof(id))
      continue;
    memcpy(id, de->d_name, len - 3);
    id[len - 3] = '\0';
    if (!link_exists(h, id))
      continue;
    hm_attachment *a = get(ud, id);
    if (!a)
      continue;
    hm_ninep_mark(a, NULL);
    /* A slot mount has no diod to tell: the link names the share, the
     * fsdev's kind says whether it is writable. */
    char target[4096];
    ssize_t tn = readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1);
    if (tn > 0 && !hm_attachment_get_data(a, "hostPath")) {
      target[tn] = '\0';
      hm_attachment_set_data(a, "hostPath", target, NULL);
    }
    const char *via = hm_attachment_get_data(a, "via");
    int w = via && strcmp(via, "pci") == 0 ? hm_ninep_slot_writable(h, id) : -1;
    if (w >= 0 && !hm_attachment_get_data(a, "writable"))
      hm_attachment_set_data(a, "writable", w ? "1" : "0", NULL);
  }
  if (d)
    closedir(d);
}
