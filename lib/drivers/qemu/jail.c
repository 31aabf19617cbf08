/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Confinement for the host-side file servers: see jail.h. */
#include "jail.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_NOSUID
#define MOUNT_ATTR_NOSUID 0x00000002
#endif
#ifndef MOUNT_ATTR_NODEV
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

int hm_share_open(hm_share *out, const char *host_path, int readonly, hm_error **err) {
  memset(out, 0, sizeof(*out));
  out->fd = -1;
  /* The staging path repeats it below the staging tmpfs: no "." or ".."
   * component may take that anywhere else. */
  size_t len = strlen(host_path);
  if (host_path[0] != '/' || strstr(host_path, "/./") || strstr(host_path, "/../") ||
      (len >= 2 && strcmp(host_path + len - 2, "/.") == 0) ||
      (len >= 3 && strcmp(host_path + len - 3, "/..") == 0))
    return HM_ERR(err, HM_E_INVALID, "%s: %s is not a normalized absolute path", __func__,
                  host_path);
  /* The path was resolved once by validation (realpath): no component of
   * it may be a symbolic link now, or a parent was swapped since. */
  int fd = hm_open_nofollow(host_path, O_PATH | O_DIRECTORY);
  if (fd < 0) {
    int e = errno;
    if (e == ENOTDIR || e == ELOOP)
      return HM_ERR(err, HM_E_INVALID,
                    "%s: %s is not a directory, or a component of it is a symbolic link", __func__,
                    host_path);
    return HM_ERR(err, -e, "%s: cannot open %s: %s", __func__, host_path, strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return HM_ERR(err, -e, "%s: cannot stat %s: %s", __func__, host_path, strerror(e));
  }
  /* The staging path repeats the host path: a reader of the helper's
   * command line (or /proc/PID/mountinfo) sees what it serves. */
  struct stat bst;
  const char *base = HM_JAIL_STAGE_BASE;
  if (lstat(base, &bst) < 0 || !S_ISDIR(bst.st_mode))
    base = "/tmp";
  snprintf(out->base, sizeof(out->base), "%s", base);
  if ((size_t)snprintf(out->stage, sizeof(out->stage), "%s/hotmount%s", base, host_path) >=
      sizeof(out->stage)) {
    close(fd);
    return HM_ERR(err, HM_E_INVALID, "%s: %s is too long", __func__, host_path);
  }
  size_t n = strlen(out->stage);
  while (n > 1 && out->stage[n - 1] == '/')
    out->stage[--n] = '\0';
  out->fd = fd;
  out->readonly = readonly;
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  return 0;
}

void hm_share_close(hm_share *s) {
  if (s && s->fd >= 0)
    close(s->fd);
  if (s)
    s->fd = -1;
}

int hm_mount_lock(const char *path, int readonly) {
#ifdef SYS_mount_setattr
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                        (readonly ? MOUNT_ATTR_RDONLY : 0)};
  return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof(attr));
#else
  (void)path;
  (void)readonly;
  errno = ENOSYS;
  return -1;
#endif
}

/* mkdir -p of s->stage below s->base, on the child's own copy. */
static int mkdir_stage(hm_share *s) {
  memcpy(s->scratch, s->stage, sizeof(s->scratch));
  size_t blen = strlen(s->base);
  for (char *p = s->scratch + blen + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(s->scratch, 0700) < 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  return mkdir(s->scratch, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

int hm_share_bind_child(hm_share *s) {
  /* The cwd is carried into the new namespace (as the copy of its mount):
   * so the bind below starts from the directory opened in the parent, not
   * from a path that could be re-resolved elsewhere. */
  if (fchdir(s->fd) < 0 || unshare(CLONE_NEWNS) < 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
      mount("hotmount-stage", s->base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0700,size=64k") < 0 ||
      mkdir_stage(s) < 0 || mount(".", s->stage, NULL, MS_BIND | MS_REC, NULL) < 0 ||
      hm_mount_lock(s->stage, s->readonly) < 0)
    return -1;
  /* The staging tmpfs itself: nothing to write there for anyone. */
  if (mount(NULL, s->base, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) <
      0)
    return -1;
  return chdir("/");
}

/* --- capabilities, no_new_privs, seccomp --------------------------------- */

#if defined(__x86_64__)
#define HM_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define HM_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* Linux 6.6, the same number on every architecture */
#endif

/* The low 32 bits of syscall argument k. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ARG_LO(k) (offsetof(struct seccomp_data, args) + 8 * (k) + 4)
#else
#define ARG_LO(k) (offsetof(struct seccomp_data, args) + 8 * (k))
#endif

#define RET_ERRNO(e) (SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

enum { H_ENOSYS, H_MODE1, H_MODE2, H_MODE3, H_NOD1, H_NOD2, H_COUNT };

struct rule {
  long nr;
  int handler;
};

/* What a guest could use to plant a setuid/setgid file or a device node:
 * mode arguments with S_ISUID|S_ISGID, mknod of a character or block
 * device. openat2 (its mode sits in a struct the filter cannot read) and
 * io_uring (whose operations no filter sees) answer ENOSYS, which the
 * helpers treat as "not here" and fall back from. */
static const struct rule rules[] = {
#ifdef SYS_chmod
    {SYS_chmod, H_MODE1},
#endif
    {SYS_fchmod, H_MODE1},
    {SYS_fchmodat, H_MODE2},
    {SYS_fchmodat2, H_MODE2},
#ifdef SYS_open
    {SYS_open, H_MODE2},
#endif
    {SYS_openat, H_MODE3},
#ifdef SYS_creat
    {SYS_creat, H_MODE1},
#endif
#ifdef SYS_mknod
    {SYS_mknod, H_NOD1},
#endif
    {SYS_mknodat, H_NOD2},
#ifdef SYS_openat2
    {SYS_openat2, H_ENOSYS},
#endif
#ifdef SYS_io_uring_setup
    {SYS_io_uring_setup, H_ENOSYS},
#endif
};

#define NRULES (sizeof(rules) / sizeof(rules[0]))
#define PROG_MAX (8 + 2 * NRULES + 32)

#define STMT(c, k) ((struct sock_filter)BPF_STMT((c), (k)))
#define JUMP(c, k, t, f) ((struct sock_filter)BPF_JUMP((c), (k), (t), (f)))

static int install_filter(void) {
#ifndef HM_AUDIT_ARCH
  errno = ENOSYS; /* no filter for this architecture: do not start unconfined */
  return -1;
#else
  struct sock_filter p[PROG_MAX];
  unsigned n = 0, ja[NRULES], at[H_COUNT];
  p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, HM_AUDIT_ARCH, 1, 0);
  p[n++] = STMT(BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
  p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
  /* x32 numbers would reach the same calls under other numbers. */
  p[n++] = JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1);
  p[n++] = STMT(BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
#endif
  for (unsigned i = 0; i < NRULES; i++) {
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)rules[i].nr, 0, 1);
    ja[i] = n;
    p[n++] = STMT(BPF_JMP | BPF_JA, 0);
  }
  p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  at[H_ENOSYS] = n;
  p[n++] = STMT(BPF_RET | BPF_K, RET_ERRNO(ENOSYS));
  for (unsigned k = 1; k <= 3; k++) {
    at[H_MODE1 + k - 1] = n;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(k));
    p[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 1, 0);
    p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    p[n++] = STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
  }
  for (unsigned k = 1; k <= 2; k++) {
    at[H_NOD1 + k - 1] = n;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(k));
    p[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 4, 0);
    p[n++] = STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT);
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 2, 0);
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 1, 0);
    p[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    p[n++] = STMT(BPF_RET | BPF_K, RET_ERRNO(EPERM));
  }
  for (unsigned i = 0; i < NRULES; i++)
    p[ja[i]].k = at[rules[i].handler] - (ja[i] + 1);
  struct sock_fprog prog = {.len = (unsigned short)n, .filter = p};
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#endif
}

struct cap_header {
  uint32_t version;
  int pid;
};
struct cap_data {
  uint32_t effective, permitted, inheritable;
};

int hm_confine_child(const hm_confine *c) {
  if (c->drop_caps) {
    for (int cap = 0; cap < 64; cap++)
      if (!(c->keep_caps & HM_CAP(cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
          errno != EINVAL)
        return -1;
    /* After exec, root's permitted set is the bounding set plus the
     * inheritable one: clear that, and the ambient set. */
    struct cap_header h = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    struct cap_data d[2];
    if (syscall(SYS_capget, &h, d) < 0)
      return -1;
    d[0].inheritable = d[1].inheritable = 0;
    if (syscall(SYS_capset, &h, d) < 0)
      return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
      return -1;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return -1;
  if (c->filter && install_filter() < 0)
    return -1;
  return 0;
}

/* --- pivot a running helper into its share ----------------------------- */

int hm_jail_root_is(pid_t pid, const hm_share *s) {
  char p[64];
  struct stat st;
  static const char *const what[] = {"root", "cwd"};
  for (int i = 0; i < 2; i++) {
    snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, what[i]);
    if (stat(p, &st) < 0 || st.st_dev != s->dev || st.st_ino != s->ino)
      return 0;
  }
  return 1;
}

struct pivot_ctx {
  int ns;
  const hm_share *s;
};

/* setns moves this process's root and cwd to the namespace's root;
 * pivot_root then moves every process whose root or cwd is the old root
 * (the helper, all its threads) into the share. */
static int pivot_child(void *arg) {
  struct pivot_ctx *p = arg;
  if (setns(p->ns, CLONE_NEWNS) < 0)
    return 1;
  if (chdir(p->s->stage) < 0)
    return 2;
  if (syscall(SYS_pivot_root, ".", ".") < 0)
    return 3;
  if (umount2(".", MNT_DETACH) < 0)
    return 4;
  return 0;
}

int hm_jail_pivot(pid_t pid, const hm_share *s, hm_error **err) {
  char nsp[64];
  snprintf(nsp, sizeof(nsp), "/proc/%d/ns/mnt", (int)pid);
  int ns = open(nsp, O_RDONLY | O_CLOEXEC);
  if (ns < 0)
    return HM_ERR(err, HM_E_HELPER, "%s: cannot open %s: %s", __func__, nsp, strerror(errno));
  struct pivot_ctx ctx = {ns, s};
  int eno, r = hm_child_run(pivot_child, &ctx, &eno);
  int e = errno;
  close(ns);
  if (r < 0 && e == ECHILD)
    return HM_ERR(err, HM_E_HELPER, "%s: helper %d: the pivot did not finish", __func__, (int)pid);
  if (r < 0)
    return HM_ERR(err, -e, "%s: fork: %s", __func__, strerror(e));
  static const char *const step[] = {"", "setns", "chdir to the share", "pivot_root",
                                     "detach the old root"};
  if (r >= 1 && r <= 4)
    return HM_ERR(err, HM_E_HELPER, "%s: helper %d: %s failed: %s", __func__, (int)pid, step[r],
                  strerror(eno));
  if (!hm_jail_root_is(pid, s))
    return HM_ERR(err, HM_E_HELPER,
                  "%s: helper %d: its root or cwd is not the share after the pivot", __func__,
                  (int)pid);
  return 0;
}
