/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The shared virtiofs device: see hub.h. */
#include "hub.h"
#include "jail.h"
#include "mount_internal.h"
#include "qemu_internal.h"
#include "spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HUB_VFS_FD 3
#define HUB_STOP_MS 3000
#define HUB_UNPLUG_MS 15000

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOUNT_ATTR_NOSUID
#define MOUNT_ATTR_NOSUID 0x00000002
#endif
#ifndef MOUNT_ATTR_NODEV
#define MOUNT_ATTR_NODEV 0x00000004
#endif

int hm_hub_is(const hm_attachment *att) {
  return att && hm_attachment_get_data(att, "hubEntry") != NULL;
}

int hm_hub_wanted(const hm_mount_spec *spec) {
  const char *d = hm_mount_spec_get_option(spec, "device");
  return hm_mount_spec_get_type(spec) == HM_TYPE_VIRTIOFS && d && strcmp(d, "shared") == 0;
}

/* "hm-12" (digits only after "hm-"), the only names an entry may have. */
static int entry_name_ok(const char *s) {
  if (strncmp(s, "hm-", 3) != 0 || !s[3] || strlen(s) > 24)
    return 0;
  for (const char *p = s + 3; *p; p++)
    if (*p < '0' || *p > '9')
      return 0;
  return 1;
}

/* INSTANCE/hub, made 0700 when missing, and checked: a directory (not a
 * link) owned by us that nobody else may enter. An O_PATH fd, or <0. */
static int hub_dir_open(const char *dir, char **path, hm_error **err) {
  if (asprintf(path, "%s/" HM_HUB_DIR, dir) < 0) {
    *path = NULL;
    return HM_ERR_NOMEM(err);
  }
  if (mkdir(*path, 0700) < 0 && errno != EEXIST)
    return HM_ERR(err, -errno, "hm_hub: cannot make %s: %s", *path, strerror(errno));
  int fd = hm_open_nofollow(*path, O_PATH | O_DIRECTORY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    return HM_ERR(err, HM_E_INVALID, "hm_hub: cannot open %s: %s", *path, strerror(e));
  }
  if (st.st_uid != geteuid() || (st.st_mode & 077)) {
    close(fd);
    return HM_ERR(err, HM_E_INVALID,
                  "hm_hub: %s is not a private directory of ours (owner %u, mode %o); remove it",
                  *path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
  }
  return fd;
}

/* The marker link of an entry: INSTANCE/hm-N-hub-ro or -rw. */
static void marker_path(char *buf, size_t n, const char *dir, const char *id, int writable) {
  snprintf(buf, n, "%s/%s-hub-%s", dir, id, writable ? "rw" : "ro");
}

/* The virtiofsd serving the hub, alive and ours, or -1 (then cached). */
static pid_t hub_pid_locked(hm_hub *hub) {
  /* The cached pid still names our hub virtiofsd (not a recycled pid):
   * alive, a virtiofsd, ours, with this instance's hub markers. */
  if (hub->pid > 1 && hm_virtiofsd_alive(hub->pid) && hm_proc_is_ours(hub->pid, NULL)) {
    char *m = hm_proc_getenv(hub->pid, HM_ENV_MOUNT),
         *i = hm_proc_getenv(hub->pid, HM_ENV_INSTANCE);
    int same = m && i && strcmp(m, HM_HUB_ID) == 0 && strcmp(i, hub->h->dir) == 0;
    free(m);
    free(i);
    if (same)
      return hub->pid;
  }
  hub->pid = hub->vfs_find(hub->ud, HM_HUB_ID);
  return hub->pid;
}

static pid_t hub_pid(hm_hub *hub) {
  pthread_mutex_lock(&hub->lock);
  pid_t p = hub_pid_locked(hub);
  pthread_mutex_unlock(&hub->lock);
  return p;
}

/* The first child of pid (C virtiofsd's sandbox process, in namespace B). */
static pid_t child_of(pid_t pid) {
  char p[64];
  int c = -1;
  snprintf(p, sizeof(p), "/proc/%d/task/%d/children", (int)pid, (int)pid);
  FILE *f = fopen(p, "re");
  if (f) {
    if (fscanf(f, "%d", &c) != 1)
      c = -1;
    fclose(f);
  }
  return (pid_t)c;
}

static int device_present(hm_hub *hub, hm_error **err) {
  hm_qmp *c;
  int r = hub->h->qmp_get(hub->h->ud, &c, err);
  if (r < 0)
    return r;
  r = hm_qmp_has(c, "qom-list", "name", HM_HUB_DEV, err);
  hub->h->qmp_put(hub->h->ud);
  return r;
}

static const hm_confine hub_confine = {.filter = 1};

static int start_hub_vfsd(hm_hub *hub, const char *dir, const char *hubpath, const char *sock,
                          pid_t *pid, hm_error **err) {
  hm_virtiofsd_info vfs = {0};
  hm_share share = {.fd = -1};
  hm_strv env = {0}, argv = {0};
  char **base = NULL;
  int ro_bind = 0, lfd = -1, r;
  if ((r = hub->vfs_get(hub->ud, &vfs, err)) < 0)
    return r;
  /* The hub itself is read-only (nothing of the guest's lands in it); each
   * entry bound under it carries its own read-only flag. */
  if ((r = hm_share_open(&share, hubpath, 1, err)) < 0)
    goto out;
  if ((r = hm_virtiofsd_argv(&base, &ro_bind, &vfs, share.stage, 0, NULL, HUB_VFS_FD, err)) < 0)
    goto out;
  for (char **a = base; a && *a && r == 0; a++)
    r = hm_strv_push(&argv, *a);
  if (vfs.flavor == HM_VIRTIOFSD_RUST)
    r = r ?: hm_strv_push(&argv, "--announce-submounts");
  else
    r = (r ?: hm_strv_push(&argv, "-o")) ?: hm_strv_push(&argv, "announce_submounts");
  r = r ?: hm_helper_markers(&env, dir, HM_HUB_ID, hubpath, 0);
  if (r < 0) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  if ((lfd = hm_unix_listen(sock, 1, err)) < 0) {
    r = lfd;
    goto out;
  }
  hm_spawn_opts o = {.argv = argv.v,
                     .extra_env = env.v,
                     .pass_fd = lfd,
                     .as_fd = HUB_VFS_FD,
                     .stdio_fd = -1,
                     .new_session = 1,
                     .share = &share,
                     .confine = &hub_confine};
  if ((r = hm_spawn(pid, &o, err)) < 0)
    unlink(sock);
out:
  if (lfd >= 0)
    close(lfd);
  hm_share_close(&share);
  hm_strv_free(base);
  hm_strv_clear(&argv);
  hm_strv_clear(&env);
  hm_virtiofsd_info_clear(&vfs);
  return r;
}

static int chardev_remove(hm_hub *hub) {
  json_object *a = json_object_new_object();
  json_object_object_add(a, "id", json_object_new_string(HM_HUB_CHR));
  int r = hm_ninep_exec(hub->h, "chardev-remove", a, -1, NULL, NULL);
  json_object_put(a);
  return r;
}

/*
 * The hub device and its virtiofsd, started and plugged when missing. Held
 * under hub->lock: two first adds plug one device.
 */
static int hub_ensure_locked(hm_hub *hub, const char *dir, hm_error **err) {
  if (geteuid() != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "hm_hub: -o device=shared needs hotmountd to run as root for now (the bind "
                  "into virtiofsd's namespace is made with open_tree/move_mount); use "
                  "-o device=dedicated");
  pid_t pid = hub_pid_locked(hub);
  int present = device_present(hub, err);
  if (present < 0)
    return present;
  if (present && pid > 0) {
    char sock[PATH_MAX];
    /* Left by a daemon killed between the plug and the unlink. */
    snprintf(sock, sizeof(sock), "%s/" HM_HUB_ID "-vfs.sock", dir);
    unlink(sock);
    return 0;
  }
  if (present)
    return HM_ERR(err, HM_E_HELPER,
                  "hm_hub: the shared device's virtiofsd died, so the guest cannot use or release "
                  "%s until the VM restarts; use -o device=dedicated meanwhile",
                  HM_HUB_DEV);
  if (pid > 0) {
    /* A hub virtiofsd without its device (a start cut short): not used. */
    hm_virtiofsd_stop(pid, HUB_STOP_MS, NULL);
    hub->pid = -1;
  }
  char *hubpath = NULL, *sock = NULL, port[32];
  int hfd = hub_dir_open(dir, &hubpath, err), r = hfd, slot = -1;
  if (hfd < 0)
    goto out;
  close(hfd);
  if (asprintf(&sock, "%s/" HM_HUB_ID "-vfs.sock", dir) < 0) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  if ((slot = hub->h->port_reserve(hub->h->ud, err)) < 0) {
    r = slot;
    goto out;
  }
  if ((r = start_hub_vfsd(hub, dir, hubpath, sock, &pid, err)) < 0)
    goto out_slot;
  hm_fault("add:hub-virtiofsd-started");
  json_object *args = hm_qemu_socket_chardev_args(HM_HUB_CHR, sock);
  r = hm_ninep_exec(hub->h, "chardev-add", args, -1, NULL, err);
  json_object_put(args);
  if (r < 0)
    goto out_vfs;
  snprintf(port, sizeof(port), HM_QEMU_ROOT_PORT_PREFIX "%d", slot);
  args = hm_qemu_vfs_device_args(HM_HUB_DEV, HM_HUB_CHR, HM_HUB_TAG, port);
  r = hm_ninep_exec(hub->h, "device_add", args, -1, NULL, err);
  json_object_put(args);
  if (r < 0) {
    chardev_remove(hub);
    goto out_vfs;
  }
  hm_fault("add:hub-device-added");
  unlink(sock);
  hub->pid = pid;
  hm_info("shared virtiofs device %s plugged on %s (virtiofsd %d serving %s)", HM_HUB_DEV, port,
          (int)pid, hubpath);
  r = 0;
  goto out_slot;
out_vfs:
  hm_virtiofsd_stop(pid, HUB_STOP_MS, NULL);
  unlink(sock);
out_slot:
  hub->h->port_release(hub->h->ud, slot);
out:
  free(hubpath);
  free(sock);
  return r;
}

/* --- one entry: a bind in virtiofsd's parent namespace ------------------ */

enum { OP_BIND = 1, OP_UNBIND = 2 };

/*
 * Runs one mount operation in a forked child (single-threaded, so it may
 * setns) inside the mount namespace of pid. OP_BIND: an open_tree clone of
 * share->fd (recursive; nosuid, nodev and read-only when asked, set on the
 * detached tree before anyone can see it) moved onto target. OP_UNBIND:
 * target detached (absent or not a mount point is success).
 */
static int ns_op(pid_t pid, int op, const hm_share *share, const char *target, hm_error **err) {
  char nsp[64];
  snprintf(nsp, sizeof(nsp), "/proc/%d/ns/mnt", (int)pid);
  int ns = open(nsp, O_RDONLY | O_CLOEXEC);
  if (ns < 0)
    return HM_ERR(err, HM_E_HELPER, "hm_hub: cannot open %s: %s", nsp, strerror(errno));
  int ep[2];
  if (pipe2(ep, O_CLOEXEC) < 0) {
    int e = errno;
    close(ns);
    return HM_ERR(err, -e, "hm_hub: pipe: %s", strerror(e));
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int cfd;
  pid_t c = hm_fork_pidfd(&cfd);
  if (c == 0) {
    for (int sig = 1; sig < NSIG; sig++)
      signal(sig, SIG_DFL);
    int r[2] = {0, 0}, tfd = -1;
    if (op == OP_BIND) {
      struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                            (share->readonly ? MOUNT_ATTR_RDONLY : 0),
                                .propagation = MS_PRIVATE};
      tfd = (int)syscall(SYS_open_tree, share->fd, "",
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
      if (tfd < 0)
        r[0] = 1;
      else if (syscall(SYS_mount_setattr, tfd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                       sizeof(attr)) < 0)
        r[0] = 2;
    }
    if (!r[0] && setns(ns, CLONE_NEWNS) < 0)
      r[0] = 3;
    if (!r[0] && op == OP_BIND &&
        syscall(SYS_move_mount, tfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
      r[0] = 4;
    if (!r[0] && op == OP_UNBIND && umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 &&
        errno != EINVAL && errno != ENOENT)
      r[0] = 5;
    if (r[0]) {
      r[1] = errno;
      if (write(ep[1], r, sizeof(r)) < 0)
        _exit(2);
      _exit(1);
    }
    _exit(0);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(ep[1]);
  close(ns);
  if (c < 0) {
    int e = errno;
    close(ep[0]);
    return HM_ERR(err, -e, "hm_hub: fork: %s", strerror(e));
  }
  int r[2] = {0, 0}, st = -1;
  ssize_t got;
  while ((got = read(ep[0], r, sizeof(r))) < 0 && errno == EINTR)
    ;
  close(ep[0]);
  hm_pidfd_wait_exit(cfd, c, &st);
  if (cfd >= 0)
    close(cfd);
  static const char *const step[] = {"",      "open_tree (clone)",       "mount_setattr",
                                     "setns", "move_mount onto the hub", "umount"};
  if (got == (ssize_t)sizeof(r) && r[0] >= 1 && r[0] <= 5)
    return HM_ERR(err, HM_E_HELPER, "hm_hub: %s %s in virtiofsd %d's namespace: %s failed: %s",
                  op == OP_BIND ? "binding" : "unbinding", target, (int)pid, step[r[0]],
                  strerror(r[1]));
  if (st != -1 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
    return HM_ERR(err, HM_E_HELPER, "hm_hub: the %s helper did not finish",
                  op == OP_BIND ? "bind" : "unbind");
  return 0;
}

/* Where entry id sits in virtiofsd's namespace: it is pivoted into the
 * hub, so at /hm-N. */
static void entry_target(char *buf, size_t n, const char *id) {
  snprintf(buf, n, "/%s", id);
}

/* 1 when `path` (as process pid sees it, through /proc/PID/root) is the
 * directory dev/ino; 0 when not, or it cannot be seen. */
static int seen_as(pid_t pid, const char *path, dev_t dev, ino_t ino) {
  char *p = NULL;
  struct stat st;
  if (pid <= 1 || asprintf(&p, "/proc/%d/root%s", (int)pid, path) < 0)
    return 0;
  int ok = stat(p, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
  free(p);
  return ok;
}

static int set_data(hm_attachment *att, const char *id, const char *host, int writable,
                    hm_error **err) {
  char tag[64];
  snprintf(tag, sizeof(tag), HM_HUB_TAG "/%s", id);
  int r;
  if ((r = hm_attachment_set_tag(att, tag, err)) < 0 ||
      (r = hm_attachment_set_type(att, HM_TYPE_VIRTIOFS, err)) < 0 ||
      (r = hm_attachment_set_data(att, "hubEntry", id, err)) < 0 ||
      (r = hm_attachment_set_data(att, "device", HM_HUB_DEV, err)) < 0 ||
      (r = hm_attachment_set_data(att, "via", "shared", err)) < 0 ||
      (host && (r = hm_attachment_set_data(att, "hostPath", host, err)) < 0) ||
      (r = hm_attachment_set_data(att, "writable", writable ? "1" : "0", err)) < 0)
    return r;
  return 0;
}

int hm_hub_attach(hm_hub *hub, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  const char *id = hm_attachment_get_id(att), *dir = hub->h->dir;
  const char *host = hm_mount_spec_get_host_path(spec);
  int writable = hm_mount_spec_get_writable(spec);
  char marker[PATH_MAX], target[64];
  char *hubpath = NULL;
  hm_share share = {.fd = -1};
  int hfd = -1, r, made = 0, linked = 0;
  if (!entry_name_ok(id))
    return HM_ERR(err, HM_E_INTERNAL, "hm_hub: mount id %s is not hm-N", id);
  /* The host directory is opened (no component a link) before anything is
   * made: what was validated is what gets bound. */
  if ((r = hm_share_open(&share, host, !writable, err)) < 0)
    return r;
  pthread_mutex_lock(&hub->lock);
  r = hub_ensure_locked(hub, dir, err);
  pid_t pid = hub->pid;
  pthread_mutex_unlock(&hub->lock);
  if (r < 0)
    goto out;
  hm_fault("add:hub-ready");
  if ((hfd = hub_dir_open(dir, &hubpath, err)) < 0) {
    r = hfd;
    goto out;
  }
  entry_target(target, sizeof(target), id);
  marker_path(marker, sizeof(marker), dir, id, writable);
  unlink(marker);
  if (symlink(host, marker) < 0) {
    r = HM_ERR(err, -errno, "hm_hub: cannot make the marker %s: %s", marker, strerror(errno));
    goto out;
  }
  linked = 1;
  hm_fault("add:hub-marked");
  if (mkdirat(hfd, id, 0700) < 0 && errno != EEXIST) {
    r = HM_ERR(err, -errno, "hm_hub: cannot make %s/%s: %s", hubpath, id, strerror(errno));
    goto out;
  }
  made = 1;
  if ((r = ns_op(pid, OP_BIND, &share, target, err)) < 0)
    goto out;
  hm_fault("add:hub-bound");
  /* What virtiofsd's sandbox process (the one serving) sees at the entry
   * must be the directory itself. */
  pid_t sandbox = child_of(pid);
  if (!seen_as(sandbox > 0 ? sandbox : pid, target, share.dev, share.ino)) {
    r = HM_ERR(err, HM_E_HELPER, "hm_hub: virtiofsd %d does not see %s at %s after the bind",
               (int)(sandbox > 0 ? sandbox : pid), host, target);
    ns_op(pid, OP_UNBIND, NULL, target, NULL);
    goto out;
  }
  if ((r = set_data(att, id, host, writable, err)) < 0) {
    ns_op(pid, OP_UNBIND, NULL, target, NULL);
    goto out;
  }
  hm_debug("%s: %s bound at %s (%s) for %s", id, host, target, writable ? "rw" : "ro", HM_HUB_DEV);
out:
  if (r < 0) {
    if (made)
      unlinkat(hfd, id, AT_REMOVEDIR);
    if (linked)
      unlink(marker);
  }
  if (hfd >= 0)
    close(hfd);
  free(hubpath);
  hm_share_close(&share);
  return r;
}

int hm_hub_detach(hm_hub *hub, hm_attachment *att, hm_error **err) {
  const char *id = hm_attachment_get_id(att), *dir = hub->h->dir;
  char target[64], marker[PATH_MAX];
  char *hubpath = NULL;
  if (!entry_name_ok(id))
    return HM_ERR(err, HM_E_INTERNAL, "hm_hub: mount id %s is not hm-N", id);
  int hfd = hub_dir_open(dir, &hubpath, err), r = 0;
  if (hfd < 0) {
    free(hubpath);
    return hfd;
  }
  entry_target(target, sizeof(target), id);
  /* With the hub's virtiofsd gone, its namespace (and the bind) went too. */
  pid_t pid = hub_pid(hub);
  if (pid > 0 && (r = ns_op(pid, OP_UNBIND, NULL, target, err)) < 0)
    goto out;
  hm_fault("remove:hub-unbound");
  if (unlinkat(hfd, id, AT_REMOVEDIR) < 0 && errno != ENOENT) {
    r = HM_ERR(err, -errno, "hm_hub: cannot remove %s/%s: %s", hubpath, id, strerror(errno));
    goto out;
  }
  for (int w = 0; w < 2; w++) {
    marker_path(marker, sizeof(marker), dir, id, w);
    unlink(marker);
  }
out:
  close(hfd);
  free(hubpath);
  return r;
}

int hm_hub_check(hm_hub *hub, hm_attachment *att, char **reason, hm_error **err) {
  const char *id = hm_attachment_get_id(att), *host = hm_attachment_get_data(att, "hostPath");
  int r = device_present(hub, err);
  if (r < 0)
    return r;
  if (!r)
    return asprintf(reason, "the shared device %s is gone from QEMU", HM_HUB_DEV) < 0
               ? HM_E_NOMEM
               : HM_CHECK_GONE;
  pid_t pid = hub_pid(hub);
  if (pid <= 0)
    return asprintf(reason, "the shared device's virtiofsd is not running") < 0 ? HM_E_NOMEM : 0;
  char target[64];
  struct stat st;
  int ok = 0;
  entry_target(target, sizeof(target), id);
  if (host && stat(host, &st) == 0)
    ok = seen_as(pid, target, st.st_dev, st.st_ino);
  if (!ok)
    return asprintf(reason, "%s is not bound in the shared device's hub", id) < 0 ? HM_E_NOMEM : 0;
  return 1;
}

int hm_hub_watch_fd(hm_hub *hub, hm_attachment *att) {
  (void)att;
  pid_t pid = hub_pid(hub);
  return pid > 0 ? hm_pidfd_open(pid) : -1;
}

static void scan_one(const char *dir, const char *id, const char *host, int writable,
                     hm_attachment *(*get)(void *ud, const char *id), void *ud) {
  hm_attachment *a = get(ud, id);
  /* An entry seen by its marker first keeps what the marker says. */
  if (a && !(host == NULL && hm_hub_is(a)))
    set_data(a, id, host, writable, NULL);
  (void)dir;
}

/*
 * A hub start cut short (virtiofsd started, device not plugged): virtiofsd
 * stopped, its socket removed. With the device there, QEMU holds the
 * connection and the socket's name is not needed.
 */
static void hub_settle(hm_hub *hub, const char *dir) {
  char *sock = NULL;
  if (asprintf(&sock, "%s/" HM_HUB_ID "-vfs.sock", dir) < 0)
    return;
  pthread_mutex_lock(&hub->lock);
  pid_t pid = hub_pid_locked(hub);
  int present = device_present(hub, NULL);
  if (present == 0 && pid > 0) {
    hm_info("reconcile: the shared device's virtiofsd %d has no device (a start cut short): "
            "stopped",
            (int)pid);
    hm_virtiofsd_stop(pid, HUB_STOP_MS, NULL);
    hub->pid = -1;
  }
  if (present >= 0)
    unlink(sock);
  pthread_mutex_unlock(&hub->lock);
  free(sock);
}

void hm_hub_scan(hm_hub *hub, const char *dir, hm_attachment *(*get)(void *ud, const char *id),
                 void *ud) {
  hub_settle(hub, dir);
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    size_t n = strlen(de->d_name);
    if (n < 10 || strncmp(de->d_name, "hm-", 3) != 0)
      continue;
    const char *sfx = de->d_name + n - 7;
    int rw = strcmp(sfx, "-hub-rw") == 0;
    if (!rw && strcmp(sfx, "-hub-ro") != 0)
      continue;
    char id[32], link[PATH_MAX];
    snprintf(id, sizeof(id), "%.*s", (int)(n - 7), de->d_name);
    if (!entry_name_ok(id))
      continue;
    ssize_t l = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
    if (l <= 0 || link[0] != '/')
      continue;
    link[l] = '\0';
    scan_one(dir, id, link, rw, get, ud);
  }
  if (d)
    closedir(d);
  /* Entries without a marker: rolled back (nothing says what they serve). */
  char *hubpath = NULL;
  if (asprintf(&hubpath, "%s/" HM_HUB_DIR, dir) < 0)
    return;
  d = opendir(hubpath);
  while (d && (de = readdir(d)))
    if (entry_name_ok(de->d_name))
      scan_one(dir, de->d_name, NULL, 0, get, ud);
  if (d)
    closedir(d);
  free(hubpath);
}

void hm_hub_describe(hm_hub *hub, const char *dir, hm_status *st) {
  hm_error *e = NULL;
  int present = device_present(hub, &e);
  hm_error_free(e);
  pid_t pid = hub_pid(hub);
  hm_status_set(st, "sharedDevice",
                present <= 0 ? "absent"
                : pid > 0    ? "plugged"
                             : "orphaned",
                NULL);
  char *hubpath = NULL, buf[16];
  int n = 0;
  if (asprintf(&hubpath, "%s/" HM_HUB_DIR, dir) >= 0) {
    DIR *d = opendir(hubpath);
    struct dirent *de;
    while (d && (de = readdir(d)))
      n += entry_name_ok(de->d_name);
    if (d)
      closedir(d);
    free(hubpath);
  }
  snprintf(buf, sizeof(buf), "%d", n);
  hm_status_set(st, "sharedEntries", buf, NULL);
}
