/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "virtiofsd.h"
#include "spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <linux/mount.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define VFS_FD 3

static int is_exec(const char *p) {
  return access(p, X_OK) == 0;
}

static char *find_in_path(const char *name) {
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/local/bin:/usr/bin:/bin";
  char *dup = strdup(path), *save = NULL;
  for (char *d = dup ? strtok_r(dup, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", d, name) >= 0 && is_exec(p)) {
      free(dup);
      return p;
    }
    free(p);
  }
  free(dup);
  return NULL;
}

/* Runs `path arg` and returns its stdout+stderr (at most 64 KiB). */
static char *capture(const char *path, const char *arg) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return NULL;
  int pidfd;
  pid_t pid = hm_fork_pidfd(&pidfd);
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return NULL;
  }
  if (pid == 0) {
    dup2(p[1], 1);
    dup2(p[1], 2);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0)
      dup2(null, 0);
      /* Nothing of the host program's reaches a program we only ask. */
#ifdef SYS_close_range
    syscall(SYS_close_range, 3U, ~0U, 0);
#endif
    execl(path, path, arg, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap + 1);
  ssize_t n;
  while (buf && len < cap &&
         ((n = read(p[0], buf + len, cap - len)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0)
      len += (size_t)n;
  close(p[0]);
  int st;
  hm_pidfd_wait_exit(pidfd, pid, &st);
  if (pidfd >= 0)
    close(pidfd);
  if (buf)
    buf[len] = '\0';
  return buf;
}

int hm_virtiofsd_detect(hm_virtiofsd_info *out, const char *explicit_path, hm_error **err) {
  memset(out, 0, sizeof(*out));
  const char *env = getenv("HOTMOUNT_VIRTIOFSD");
  char *path = NULL;
  if (explicit_path || (env && *env)) {
    const char *p = explicit_path ? explicit_path : env;
    if (!is_exec(p))
      return HM_ERR(err, HM_E_UNSUPPORTED, "virtiofsd \"%s\" is not an executable", p);
    path = strdup(p);
  } else if (!(path = find_in_path("virtiofsd"))) {
    static const char *const known[] = {"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", NULL};
    for (const char *const *k = known; *k && !path; k++)
      if (is_exec(*k))
        path = strdup(*k);
    if (!path)
      return HM_ERR(err, HM_E_UNSUPPORTED,
                    "virtiofsd not found (looked in PATH, /usr/libexec, /usr/lib/qemu); "
                    "install it (Debian: qemu-system-common; others: the virtiofsd package) "
                    "or set HOTMOUNT_VIRTIOFSD");
  }
  if (!path)
    return HM_ERR_NOMEM(err);
  char *help = capture(path, "--help");
  if (!help) {
    int r = HM_ERR(err, HM_E_HELPER, "cannot run %s --help", path);
    free(path);
    return r;
  }
  out->path = path;
  out->flavor = strstr(help, "--shared-dir") ? HM_VIRTIOFSD_RUST : HM_VIRTIOFSD_C;
  out->has_readonly = out->flavor == HM_VIRTIOFSD_RUST && strstr(help, "--readonly") != NULL;
  free(help);
  hm_debug("virtiofsd: %s (%s%s)", out->path, out->flavor == HM_VIRTIOFSD_RUST ? "rust" : "C",
           out->has_readonly ? ", --readonly" : "");
  return 0;
}

void hm_virtiofsd_info_clear(hm_virtiofsd_info *info) {
  free(info->path);
  memset(info, 0, sizeof(*info));
}

/* fuse_opt splits -o values at commas; a backslash escapes one. */
static char *fuse_escape(const char *s) {
  char *out = malloc(strlen(s) * 2 + 1), *o = out;
  if (!out)
    return NULL;
  for (; *s; s++) {
    if (*s == ',' || *s == '\\')
      *o++ = '\\';
    *o++ = *s;
  }
  *o = '\0';
  return out;
}

int hm_virtiofsd_argv(char ***out, int *out_ro_bind, const hm_virtiofsd_info *info, const char *dir,
                      int readonly, const char *cache, int fd, hm_error **err) {
  hm_strv v = {0};
  int r = hm_strv_push(&v, info->path);
  *out_ro_bind = readonly && !info->has_readonly;
  if (!cache)
    cache = "auto";
  if (info->flavor == HM_VIRTIOFSD_RUST) {
    r = r ?: hm_strv_pushf(&v, "--fd=%d", fd);
    r = r ?: hm_strv_push(&v, "--shared-dir");
    r = r ?: hm_strv_push(&v, dir);
    r = r ?: hm_strv_pushf(&v, "--cache=%s", cache);
    if (readonly && info->has_readonly)
      r = r ?: hm_strv_push(&v, "--readonly");
  } else {
    char *esc = fuse_escape(dir);
    r = r ?: hm_strv_pushf(&v, "--fd=%d", fd);
    r = r ?: hm_strv_push(&v, "-o");
    r = r ?: (esc ? hm_strv_pushf(&v, "source=%s", esc) : HM_E_NOMEM);
    r = r ?: hm_strv_push(&v, "-o");
    r = r ?: hm_strv_pushf(&v, "cache=%s", strcmp(cache, "never") == 0 ? "none" : cache);
    /* No device nodes, no keeping setuid/setgid bits on writes, no file
     * capabilities from the guest (jail.h's filter also refuses setuid
     * modes and device nodes outright). */
    r = r ?: hm_strv_push(&v, "-o");
    r = r ?: hm_strv_push(&v, "modcaps=-mknod:-fsetid:-setfcap");
    free(esc);
  }
  if (r < 0) {
    hm_strv_clear(&v);
    return HM_ERR_NOMEM(err);
  }
  *out = hm_strv_steal(&v);
  return 0;
}

/* virtiofsd sets up its own sandbox (namespaces, pivot_root into the
 * source, its own seccomp list, capabilities): it keeps what that needs
 * (CAP_SYS_ADMIN among them) and gets only the filter on top. */
static const hm_confine virtiofsd_confine = {.filter = 1};

int hm_virtiofsd_start(pid_t *out_pid, const hm_virtiofsd_info *info, const char *dir, int readonly,
                       const char *cache, const char *socket_path, char *const *env,
                       const hm_userns *userns, hm_error **err) {
  char **argv = NULL;
  int ro_bind = 0, lfd = -1, r;
  hm_share share = {.fd = -1};
  /* As root, or without root in a user namespace of our own (userns.h):
   * the directory is opened once here and bound, nosuid and nodev (and
   * read-only when the mount is), at a staging path of virtiofsd's own
   * mount namespace, which is what virtiofsd is told to serve. Without
   * either (a rootless Rust virtiofsd, no subordinate ids) no mount can be
   * made: virtiofsd gets the path and its own --readonly. */
  int root = geteuid() == 0 || userns;
  if (root && (r = hm_share_open(&share, dir, readonly, err)) < 0)
    return r;
  if ((r = hm_virtiofsd_argv(&argv, &ro_bind, info, root ? share.stage : dir, readonly, cache,
                             VFS_FD, err)) < 0)
    goto out;
  if (ro_bind && !root) {
    r = HM_ERR(err, HM_E_UNSUPPORTED,
               "cannot enforce read-only: %s has no --readonly and making a read-only bind "
               "needs root; use a virtiofsd >= 1.13 or --writable",
               info->path);
    goto out;
  }
  /* Bound in a private directory and renamed onto its name: never missing
   * or someone else's between an unlink and a bind (hm_unix_listen). */
  if ((lfd = hm_unix_listen(socket_path, 1, err)) < 0) {
    r = lfd;
    goto out;
  }
  hm_spawn_opts o = {.argv = argv,
                     .extra_env = env,
                     .pass_fd = lfd,
                     .as_fd = VFS_FD,
                     .stdio_fd = -1,
                     .new_session = 1,
                     .share = root ? &share : NULL,
                     .confine = root ? &virtiofsd_confine : NULL,
                     .userns = userns};
  if ((r = hm_spawn(out_pid, &o, err)) < 0)
    unlink(socket_path);
out:
  if (lfd >= 0)
    close(lfd);
  hm_share_close(&share);
  hm_strv_free(argv);
  return r;
}

static int parent_is_virtiofsd(pid_t pid) {
  char p[64], buf[512];
  snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "re");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *rp = strrchr(buf, ')');
  int ppid = 0;
  if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1 || ppid <= 1)
    return 0;
  return hm_virtiofsd_alive(ppid);
}

struct find_ctx {
  void (*fn)(pid_t pid, void *ud);
  void *ud;
};

static void found_one(pid_t pid, void *ud) {
  struct find_ctx *c = ud;
  /* C virtiofsd's sandbox child carries the same environment. */
  if (!parent_is_virtiofsd(pid))
    c->fn(pid, c->ud);
}

void hm_virtiofsd_find(const char *marker, void (*fn)(pid_t pid, void *ud), void *ud) {
  const char *eq = strchr(marker, '=');
  char *name = eq ? strndup(marker, (size_t)(eq - marker)) : NULL;
  struct find_ctx c = {fn, ud};
  if (name)
    hm_proc_each("virtiofsd", name, eq + 1, found_one, &c);
  free(name);
}

int hm_virtiofsd_alive(pid_t pid) {
  return hm_helper_alive(pid, "virtiofsd");
}

/* Children of pid (C virtiofsd forks into its sandbox and the child dies
 * only after the parent, by PR_SET_PDEATHSIG): at most `max`. */
static size_t children_of(pid_t pid, pid_t *out, size_t max) {
  char p[64];
  snprintf(p, sizeof(p), "/proc/%d/task/%d/children", (int)pid, (int)pid);
  FILE *f = fopen(p, "re");
  size_t n = 0;
  int c;
  while (f && n < max && fscanf(f, "%d", &c) == 1)
    out[n++] = (pid_t)c;
  if (f)
    fclose(f);
  return n;
}

/* Gone, or a zombie nobody has reaped yet (which holds nothing). */
static int dead(pid_t pid) {
  char p[64], buf[256];
  snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "re");
  if (!f)
    return 1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *rp = strrchr(buf, ')');
  return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* The parent of pid, or -1. */
static pid_t ppid_of(pid_t pid) {
  char p[64], buf[512];
  snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "re");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *rp = strrchr(buf, ')');
  int ppid = -1;
  if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1)
    return -1;
  return (pid_t)ppid;
}

/* virtiofsd's sandbox children, each pinned by a pidfd (fd -1: none, on
 * kernels without pidfds, then known by pid only). */
typedef struct kid {
  pid_t pid;
  int fd;
} kid;

static int kid_dead(const kid *k) {
  return k->fd >= 0 ? hm_pidfd_wait(k->fd, 0) : dead(k->pid);
}

static int wait_dead(const kid *kids, size_t n, int64_t deadline) {
  for (;;) {
    size_t alive = 0;
    for (size_t i = 0; i < n; i++)
      alive += !kid_dead(&kids[i]);
    if (!alive)
      return 0;
    if (hm_now_ms() >= deadline)
      return -1;
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
  }
}

int hm_virtiofsd_stop(pid_t pid, int timeout_ms, hm_error **err) {
  if (pid <= 1)
    return 0;
  pid_t pids[16];
  kid kids[16];
  size_t n = children_of(pid, pids, 16), nkids = 0;
  /* Pinned while still pid's children (checked after the pidfd is taken):
   * the SIGKILL below reaches them, never a pid recycled once they died. */
  for (size_t i = 0; i < n; i++) {
    int fd = hm_pidfd_open(pids[i]);
    if (fd >= 0 && ppid_of(pids[i]) != pid) {
      close(fd);
      continue;
    }
    if (fd < 0 && errno == ESRCH)
      continue;
    kids[nkids++] = (kid){pids[i], fd};
  }
  int r = hm_helper_stop(pid, hm_virtiofsd_alive, "virtiofsd", timeout_ms, err);
  if (r == 0 && nkids && wait_dead(kids, nkids, hm_now_ms() + timeout_ms) < 0) {
    for (size_t i = 0; i < nkids; i++)
      if (kids[i].fd >= 0)
        hm_pidfd_signal(kids[i].fd, SIGKILL);
      else
        kill(kids[i].pid, SIGKILL);
    if (wait_dead(kids, nkids, hm_now_ms() + 2000) < 0)
      r = HM_ERR(err, HM_E_HELPER, "virtiofsd %d left a process behind", (int)pid);
  }
  for (size_t i = 0; i < nkids; i++)
    if (kids[i].fd >= 0)
      close(kids[i].fd);
  return r;
}
