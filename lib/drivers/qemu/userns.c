/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Rootless helpers in a user namespace with subordinate ids: see userns.h. */
#include "userns.h"
#include "spawn.h"

#include <hotmount/driver.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/nsfs.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define OVERFLOW_ID 65534u

/* One "KEY:BASE:COUNT" line: 1 when it parses. */
static int parse_line(const char *l, size_t len, char *key, size_t keysz, uint32_t *base,
                      uint32_t *count) {
  const char *c1 = memchr(l, ':', len);
  if (!c1 || c1 == l || (size_t)(c1 - l) >= keysz)
    return 0;
  memcpy(key, l, (size_t)(c1 - l));
  key[c1 - l] = '\0';
  unsigned long long b = 0, n = 0;
  const char *p = c1 + 1, *end = l + len;
  int digits = 0;
  for (; p < end && *p >= '0' && *p <= '9' && b <= UINT32_MAX; p++, digits++)
    b = b * 10 + (unsigned)(*p - '0');
  if (!digits || p >= end || *p != ':' || b > UINT32_MAX)
    return 0;
  digits = 0;
  for (p++; p < end && *p >= '0' && *p <= '9' && n <= UINT32_MAX; p++, digits++)
    n = n * 10 + (unsigned)(*p - '0');
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
    p++;
  if (!digits || p != end || n == 0 || n > UINT32_MAX || b + n - 1 > UINT32_MAX)
    return 0;
  *base = (uint32_t)b;
  *count = (uint32_t)n;
  return 1;
}

int hm_subid_find(const char *text, const char *user, uid_t uid, uint32_t *base, uint32_t *count) {
  char uidstr[16];
  snprintf(uidstr, sizeof(uidstr), "%u", (unsigned)uid);
  for (const char *l = text; l && *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l) : strlen(l);
    char key[256];
    uint32_t b, n;
    if (l[0] != '#' && parse_line(l, len, key, sizeof(key), &b, &n) &&
        ((user && strcmp(key, user) == 0) || strcmp(key, uidstr) == 0)) {
      *base = b;
      *count = n;
      return 1;
    }
    l = nl ? nl + 1 : NULL;
  }
  return 0;
}

int hm_idmap_build(hm_idmap *out, uint32_t host, uint32_t mapped, uint32_t base, uint32_t count,
                   hm_error **err) {
  memset(out, 0, sizeof(*out));
  if (count == 0)
    return HM_ERR(err, HM_E_INVALID, "%s: no subordinate ids", __func__);
  if (mapped > count)
    return HM_ERR(err, HM_E_INVALID,
                  "%s: id %u lies beyond the %u subordinate ids (it must be at most %u)", __func__,
                  mapped, count, count);
  if (mapped > 0)
    out->r[out->n++] = (hm_idrange){0, base, mapped};
  out->r[out->n++] = (hm_idrange){mapped, host, 1};
  if (count > mapped)
    out->r[out->n++] = (hm_idrange){mapped + 1, base + mapped, count - mapped};
  return 0;
}

uint32_t hm_idmap_outer(const hm_idmap *m, uint32_t in) {
  for (int i = 0; i < m->n; i++)
    if (in >= m->r[i].inner && in - m->r[i].inner < m->r[i].count)
      return m->r[i].outer + (in - m->r[i].inner);
  return OVERFLOW_ID;
}

/* A small file (a sysctl, /etc/subuid) into buf; -1 with errno. */
static int read_text(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  size_t got = 0;
  ssize_t n;
  while (got + 1 < size &&
         ((n = read(fd, buf + got, size - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0)
      got += (size_t)n;
  close(fd);
  buf[got] = '\0';
  return 0;
}

static const char *find_tool(const char *name, char *out, size_t size) {
  static const char *const dirs[] = {"/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin", NULL};
  for (const char *const *d = dirs; *d; d++) {
    snprintf(out, size, "%s/%s", *d, name);
    if (access(out, X_OK) == 0)
      return out;
  }
  out[0] = '\0';
  return NULL;
}

/* What stops this user from making a user namespace (a sentence naming the
 * fix), or NULL. */
static const char *userns_blocked(void) {
  char v[32];
  if (read_text("/proc/sys/kernel/unprivileged_userns_clone", v, sizeof(v)) == 0 && v[0] == '0')
    return "unprivileged user namespaces are disabled on this host: sysctl "
           "kernel.unprivileged_userns_clone=1";
  if (read_text("/proc/sys/user/max_user_namespaces", v, sizeof(v)) == 0 && v[0] == '0' &&
      (v[1] == '\n' || v[1] == '\0'))
    return "user namespaces are disabled on this host (user.max_user_namespaces=0): sysctl "
           "user.max_user_namespaces=15000";
  if (read_text("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", v, sizeof(v)) == 0 &&
      v[0] == '1')
    return "AppArmor restricts unprivileged user namespaces on this host: sysctl "
           "kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing "
           "userns for the program";
  if (access("/proc/self/ns/user", F_OK) < 0)
    return "this kernel has no user namespaces (CONFIG_USER_NS)";
  return NULL;
}

/* The subordinate range of this user in file (/etc/subuid or /etc/subgid):
 * 0, or HM_E_UNSUPPORTED naming the fix. */
static int subid_lookup(const char *file, const char *user, uid_t uid, uint32_t *base,
                        uint32_t *count, hm_error **err) {
  size_t size = 1 << 20;
  char *text = malloc(size);
  if (!text)
    return HM_ERR_NOMEM(err);
  const char *opt = strstr(file, "gid") ? "--add-subgids" : "--add-subuids";
  const char *kind = strstr(file, "gid") ? "gids" : "uids";
  if (read_text(file, text, size) < 0) {
    int e = errno;
    if (e != ENOENT) {
      free(text);
      return HM_ERR(err, HM_E_UNSUPPORTED, "cannot read %s: %s", file, strerror(e));
    }
    text[0] = '\0';
  }
  int found = hm_subid_find(text, user, uid, base, count);
  /* The fix names a range past every one the file gives out already. */
  unsigned long long next = 100000;
  for (const char *l = text; !found && l && *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l) : strlen(l);
    char key[256];
    uint32_t b, n;
    if (parse_line(l, len, key, sizeof(key), &b, &n) && (unsigned long long)b + n > next)
      next = (unsigned long long)b + n;
    l = nl ? nl + 1 : NULL;
  }
  free(text);
  if (!found)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "no subordinate %s for %s in %s: as root, `usermod %s %llu-%llu %s`", kind, user,
                  file, opt, next, next + 65535, user);
  return 0;
}

int hm_userns_prepare(hm_userns *out, const char *what, long map_uid, long map_gid,
                      hm_error **err) {
  memset(out, 0, sizeof(*out));
  const char *why = userns_blocked();
  if (why)
    return HM_ERR(err, HM_E_UNSUPPORTED, "%s without root runs in a user namespace, but %s", what,
                  why);
  if (!find_tool("newuidmap", out->newuidmap, sizeof(out->newuidmap)) ||
      !find_tool("newgidmap", out->newgidmap, sizeof(out->newgidmap)))
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "%s without root needs newuidmap and newgidmap: install uidmap (Debian, "
                  "Ubuntu: apt install uidmap; Fedora: shadow-utils)",
                  what);
  uid_t uid = geteuid();
  gid_t gid = getegid();
  struct passwd pwb, *pw = NULL;
  char buf[4096];
  if (getpwuid_r(uid, &pwb, buf, sizeof(buf), &pw) == 0 && pw)
    snprintf(out->user, sizeof(out->user), "%s", pw->pw_name);
  else
    snprintf(out->user, sizeof(out->user), "%u", (unsigned)uid);
  uint32_t ub, uc, gb, gc;
  int r = subid_lookup("/etc/subuid", out->user, uid, &ub, &uc, err);
  r = r ?: subid_lookup("/etc/subgid", out->user, uid, &gb, &gc, err);
  if (r < 0)
    return hm_error_prefix(err, r, what, "cannot run without root");
  if ((r = hm_idmap_build(&out->uid, uid, map_uid < 0 ? 0 : (uint32_t)map_uid, ub, uc, err)) < 0 ||
      (r = hm_idmap_build(&out->gid, gid, map_gid < 0 ? 0 : (uint32_t)map_gid, gb, gc, err)) < 0)
    return hm_error_prefix(err, r, what, "cannot map guest ids (map-uid/map-gid)");
  return 0;
}

/* Runs tool PID inner outer count... and waits: 0, or -1 with its output. */
static int run_map(const char *tool, pid_t pid, const hm_idmap *m, char *msg, size_t size) {
  char nums[10][16];
  char *argv[12];
  int a = 0;
  argv[a++] = (char *)tool;
  snprintf(nums[0], sizeof(nums[0]), "%d", (int)pid);
  argv[a++] = nums[0];
  for (int i = 0; i < m->n; i++) {
    uint32_t v[3] = {m->r[i].inner, m->r[i].outer, m->r[i].count};
    for (int k = 0; k < 3; k++) {
      snprintf(nums[1 + i * 3 + k], sizeof(nums[0]), "%u", v[k]);
      argv[a++] = nums[1 + i * 3 + k];
    }
  }
  argv[a] = NULL;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    snprintf(msg, size, "pipe: %s", strerror(errno));
    return -1;
  }
  int pidfd;
  pid_t c = hm_fork_pidfd(&pidfd);
  if (c == 0) {
    dup2(p[1], 1);
    dup2(p[1], 2);
#ifdef SYS_close_range
    syscall(SYS_close_range, 3U, ~0U, 0);
#endif
    char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    execve(tool, argv, envp);
    _exit(127);
  }
  close(p[1]);
  if (c < 0) {
    close(p[0]);
    snprintf(msg, size, "fork: %s", strerror(errno));
    return -1;
  }
  size_t got = 0;
  ssize_t n;
  while (got + 1 < size &&
         ((n = read(p[0], msg + got, size - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0)
      got += (size_t)n;
  msg[got] = '\0';
  while (got && (msg[got - 1] == '\n' || msg[got - 1] == ' '))
    msg[--got] = '\0';
  close(p[0]);
  int st = -1;
  hm_pidfd_wait_exit(pidfd, c, &st);
  if (pidfd >= 0)
    close(pidfd);
  /* st -1: reaped by someone else (SIGCHLD ignored); the map decides. */
  if (st == -1) {
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid,
             strstr(tool, "gid") ? "gid_map" : "uid_map");
    return read_text(path, line, sizeof(line)) == 0 && line[0] ? 0 : -1;
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    if (!got)
      snprintf(msg, size, "exit status %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return -1;
  }
  return 0;
}

int hm_userns_map(const hm_userns *u, pid_t pid, hm_error **err) {
  char msg[512];
  if (run_map(u->newuidmap, pid, &u->uid, msg, sizeof(msg)) < 0)
    return HM_ERR(err, HM_E_HELPER, "%s failed for %s's subordinate uids: %s", u->newuidmap,
                  u->user, msg);
  if (run_map(u->newgidmap, pid, &u->gid, msg, sizeof(msg)) < 0)
    return HM_ERR(err, HM_E_HELPER, "%s failed for %s's subordinate gids: %s", u->newgidmap,
                  u->user, msg);
  return 0;
}

int hm_userns_enter_child(void) {
  if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0)
    return -1;
  return 0;
}

/* Whether this process may make a user namespace at all (a container's
 * seccomp profile, an LSM may forbid it where no sysctl says so): NULL, or
 * why not. */
static const char *userns_try(void) {
  int pidfd;
  pid_t c = hm_fork_pidfd(&pidfd);
  if (c == 0)
    _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno == EPERM ? 1 : 2);
  if (c < 0)
    return NULL; /* cannot tell */
  int st = -1;
  hm_pidfd_wait_exit(pidfd, c, &st);
  if (pidfd >= 0)
    close(pidfd);
  if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 0))
    return NULL;
  return "unshare(CLONE_NEWUSER) is refused to this user here (a container's seccomp profile or "
         "an LSM policy): allow user namespaces for it";
}

int hm_userns_check(void (*set)(void *ud, const char *key, const char *value), void *ud) {
  int bad = 0;
  const char *why = userns_blocked();
  if (!why)
    why = userns_try();
  set(ud, "userns", why ? why : "ok");
  bad |= why != NULL;
  char tool[64];
  int have =
      find_tool("newuidmap", tool, sizeof(tool)) && find_tool("newgidmap", tool, sizeof(tool));
  set(ud, "newuidmap",
      have ? "ok"
           : "newuidmap/newgidmap not found: install uidmap (Debian, Ubuntu: apt install uidmap; "
             "Fedora: shadow-utils)");
  bad |= !have;
  char name[64];
  struct passwd pwb, *pw = NULL;
  char buf[4096];
  if (getpwuid_r(geteuid(), &pwb, buf, sizeof(buf), &pw) == 0 && pw)
    snprintf(name, sizeof(name), "%s", pw->pw_name);
  else
    snprintf(name, sizeof(name), "%u", (unsigned)geteuid());
  static const char *const files[][2] = {{"subuid", "/etc/subuid"}, {"subgid", "/etc/subgid"}};
  for (int i = 0; i < 2; i++) {
    uint32_t b, c;
    hm_error *e = NULL;
    if (subid_lookup(files[i][1], name, geteuid(), &b, &c, &e) == 0) {
      char v[96];
      snprintf(v, sizeof(v), "ok %u-%u", b, b + c - 1);
      set(ud, files[i][0], v);
    } else {
      set(ud, files[i][0], hm_error_message(e));
      bad = 1;
    }
    hm_error_free(e);
  }
  return bad ? -1 : 0;
}

int hm_proc_in_our_userns(pid_t pid) {
  char p[64];
  snprintf(p, sizeof(p), "/proc/%d/ns/user", (int)pid);
  struct stat them, us;
  if (stat(p, &them) < 0 || stat("/proc/self/ns/user", &us) < 0)
    return 0;
  if (them.st_ino == us.st_ino && them.st_dev == us.st_dev)
    return 0;
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  uid_t owner = (uid_t)-1;
  int r = ioctl(fd, NS_GET_OWNER_UID, &owner);
  /* Its parent namespace must be ours: a namespace we made, not one made
   * inside another. */
  int parent = ioctl(fd, NS_GET_PARENT);
  close(fd);
  if (r < 0 || owner != geteuid() || parent < 0) {
    if (parent >= 0)
      close(parent);
    return 0;
  }
  struct stat ps;
  int ok = fstat(parent, &ps) == 0 && ps.st_ino == us.st_ino && ps.st_dev == us.st_dev;
  close(parent);
  return ok;
}

static void status_set(void *ud, const char *key, const char *value) {
  hm_status_set(ud, key, value, NULL);
}

int hm_userns_status(hm_status *st) {
  hm_status_set(st, "rootless", geteuid() != 0 ? "true" : "false", NULL);
  return geteuid() == 0 || hm_userns_check(status_set, st) == 0;
}

int hm_userns_read_proc(pid_t pid, const char *file, char **out, size_t *out_len) {
  char nsp[64], path[96];
  *out = NULL;
  *out_len = 0;
  snprintf(nsp, sizeof(nsp), "/proc/%d/ns/user", (int)pid);
  snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
  int ns = open(nsp, O_RDONLY | O_CLOEXEC);
  if (ns < 0)
    return -1;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    close(ns);
    return -1;
  }
  size_t cap = 1u << 20;
  char *buf = malloc(cap);
  int pidfd = -1;
  pid_t c = buf ? hm_fork_pidfd(&pidfd) : -1;
  if (c == 0) {
    /* Owner of that namespace: every capability in it once joined (a
     * forked child is single-threaded, as setns wants). */
    char b[4096];
    ssize_t n;
    int fd = setns(ns, CLONE_NEWUSER) == 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
      _exit(1);
    while ((n = read(fd, b, sizeof(b))) > 0)
      if (write(p[1], b, (size_t)n) != n)
        _exit(1);
    _exit(n < 0);
  }
  close(ns);
  close(p[1]);
  size_t len = 0;
  ssize_t n;
  while (c > 0 && len < cap &&
         ((n = read(p[0], buf + len, cap - len)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0)
      len += (size_t)n;
  close(p[0]);
  int st = -1;
  if (c > 0)
    hm_pidfd_wait_exit(pidfd, c, &st);
  if (pidfd >= 0)
    close(pidfd);
  /* st -1: reaped elsewhere (SIGCHLD ignored); what came is what there is. */
  if (c <= 0 || (st != -1 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))) {
    free(buf);
    return -1;
  }
  *out = buf;
  *out_len = len;
  return 0;
}
