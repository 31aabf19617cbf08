/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <linux/mount.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int hm_ro_remount(const char *dir) {
#ifdef SYS_mount_setattr
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
  return (int)syscall(SYS_mount_setattr, AT_FDCWD, dir, AT_RECURSIVE, &attr, sizeof(attr));
#else
  (void)dir;
  errno = ENOSYS;
  return -1;
#endif
}

/* In the child: every descriptor from 3 up but keep is closed at exec (the
 * exec-status pipe must live until then). */
static void cloexec_from3(int keep) {
#ifdef SYS_close_range
  int ok = keep <= 3 || syscall(SYS_close_range, 3U, (unsigned)keep - 1, CLOSE_RANGE_CLOEXEC) == 0;
  unsigned lo = keep >= 3 ? (unsigned)keep + 1 : 3U;
  if (ok && syscall(SYS_close_range, lo, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
    return;
#endif
  /* Kernels before 5.11: one by one. */
  struct rlimit rl;
  int max = 1048576;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max)
    max = (int)rl.rlim_cur;
  for (int fd = 3; fd < max; fd++)
    if (fd != keep)
      fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* argv0 as given when it has a '/', else the first executable of that name
 * in PATH (malloc'd), or NULL with errno. */
static char *resolve(const char *argv0) {
  if (strchr(argv0, '/'))
    return strdup(argv0);
  const char *path = getenv("PATH");
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin";
  for (const char *d = path; *d;) {
    size_t n = strcspn(d, ":");
    char *p = NULL;
    /* An empty entry is the current directory, as execvp has it. */
    if (asprintf(&p, "%.*s/%s", n ? (int)n : 1, n ? d : ".", argv0) < 0)
      return NULL;
    if (access(p, X_OK) == 0)
      return p;
    free(p);
    d += n + (d[n] == ':');
  }
  errno = ENOENT;
  return NULL;
}

int hm_spawn(pid_t *out_pid, const hm_spawn_opts *o, hm_error **err) {
  char **argv = o->argv;
  int pass_fd = o->pass_fd, as_fd = o->as_fd, stdio_fd = o->stdio_fd;
  int out_fd = o->stdout_fd, err_fd = o->stderr_fd;
  if ((o->share || o->confine) && geteuid() != 0 && !o->userns)
    return HM_ERR(err, HM_E_UNSUPPORTED, "%s: confining %s needs root or a user namespace",
                  __func__, argv[0]);
  /* Everything the child needs is made before fork: from there on it may
   * only make system calls. */
  char *prog = resolve(argv[0]);
  if (!prog) {
    int e = errno;
    return e == ENOMEM ? HM_ERR_NOMEM(err)
                       : HM_ERR(err, HM_E_HELPER, "cannot run %s: %s", argv[0], strerror(e));
  }
  hm_strv envp = {0};
  extern char **environ;
  for (char **e = environ; e && *e; e++)
    if (hm_strv_push(&envp, *e) < 0)
      goto nomem;
  for (char *const *e = o->extra_env; e && *e; e++)
    if (hm_strv_push(&envp, *e) < 0)
      goto nomem;
  /* A close-on-exec pipe tells when the child has exec'ed (EOF) or failed to
   * (an errno), so a missing binary is an error here, not a dead helper
   * found later. */
  int ep[2];
  if (pipe2(ep, O_CLOEXEC) < 0) {
    int e = errno;
    hm_strv_clear(&envp);
    free(prog);
    return HM_ERR(err, -e, "pipe: %s", strerror(e));
  }
  /* With a user namespace: the child says it has unshared (up), the parent
   * answers once the maps are written (down; EOF: give up). */
  int up[2] = {-1, -1}, down[2] = {-1, -1};
  if (o->userns && (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0)) {
    int e = errno;
    for (int i = 0; i < 2; i++)
      if (up[i] >= 0)
        close(up[i]);
    close(ep[0]);
    close(ep[1]);
    hm_strv_clear(&envp);
    free(prog);
    return HM_ERR(err, -e, "pipe: %s", strerror(e));
  }
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  /* The child starts with every signal blocked and resets the handlers it
   * inherited before unblocking: a SIGTERM from a quick rollback must not run
   * the host program's handler in the not-yet-exec'ed child (Check's, for
   * one, signals the whole process group). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  pid_t pid = hm_fork_pidfd(&pidfd);
  if (pid == 0) {
    for (int sig = 1; sig < NSIG; sig++)
      signal(sig, SIG_DFL);
    if (o->new_session)
      setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int e[2] = {1, 0}; /* {1: confining, 2: exec, 3: user namespace; errno} */
    if (o->userns) {
      char c = 'u';
      close(up[0]);
      close(down[1]);
      e[0] = 3;
      if (unshare(CLONE_NEWUSER) < 0)
        goto child_fail;
      if (write(up[1], &c, 1) != 1)
        _exit(125);
      close(up[1]);
      if (read(down[0], &c, 1) != 1)
        _exit(125); /* the parent could not map us */
      close(down[0]);
      if (hm_userns_enter_child() < 0)
        goto child_fail;
      e[0] = 1;
    }
    if ((o->share && hm_share_bind_child(o->share) < 0) ||
        (o->setup && o->setup(o->setup_arg) != 0))
      goto child_fail;
    if (stdio_fd >= 0) {
      if (dup2(stdio_fd, 0) < 0 || dup2(stdio_fd, 1) < 0)
        _exit(124);
      fcntl(0, F_SETFD, 0);
      fcntl(1, F_SETFD, 0);
      if (devnull >= 0 && err_fd <= 0)
        dup2(devnull, 2);
    } else if (devnull >= 0) {
      dup2(devnull, 0);
    }
    if ((out_fd > 0 && dup2(out_fd, 1) < 0) || (err_fd > 0 && dup2(err_fd, 2) < 0))
      _exit(124);
    if (pass_fd >= 0) {
      if (dup2(pass_fd, as_fd) < 0)
        _exit(123);
      /* dup2 onto itself keeps CLOEXEC set; clear it either way. */
      fcntl(as_fd, F_SETFD, 0);
    }
    cloexec_from3(pass_fd >= 0 ? as_fd : -1);
    if (o->confine && hm_confine_child(o->confine) < 0)
      goto child_fail;
    execve(prog, argv, envp.v);
    e[0] = 2;
  child_fail:
    e[1] = errno ? errno : EPERM;
    if (write(ep[1], e, sizeof(e)) < 0)
      _exit(126);
    _exit(127);
  }
  int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (devnull >= 0)
    close(devnull);
  close(ep[1]);
  hm_strv_clear(&envp);
  if (o->userns) {
    close(up[1]);
    close(down[0]);
  }
  if (pid < 0) {
    close(ep[0]);
    if (o->userns) {
      close(up[0]);
      close(down[1]);
    }
    free(prog);
    return HM_ERR(err, -fork_errno, "fork: %s", strerror(fork_errno));
  }
  hm_error *map_err = NULL;
  if (o->userns) {
    char c;
    ssize_t got;
    while ((got = read(up[0], &c, 1)) < 0 && errno == EINTR)
      ;
    close(up[0]);
    /* EOF: the child failed before (its errno comes on ep). */
    if (got == 1 && hm_userns_map(o->userns, pid, &map_err) == 0)
      while (write(down[1], "g", 1) < 0 && errno == EINTR)
        ;
    close(down[1]);
  }
  int e[2] = {0, 0};
  ssize_t n;
  while ((n = read(ep[0], e, sizeof(e))) < 0 && errno == EINTR)
    ;
  close(ep[0]);
  if (map_err || n == (ssize_t)sizeof(e)) {
    /* It has exited or is about to: reap exactly it (its pidfd), blocking
     * only until it has. */
    int st;
    hm_pidfd_wait_exit(pidfd, pid, &st);
    if (pidfd >= 0)
      close(pidfd);
    static const char *const what[] = {"run", "confine", "run", "enter a user namespace for"};
    int r;
    if (map_err) {
      r = hm_error_code(map_err);
      if (err)
        *err = map_err;
      else
        hm_error_free(map_err);
    } else {
      r = HM_ERR(err, HM_E_HELPER, "cannot %s %s: %s", what[e[0] >= 1 && e[0] <= 3 ? e[0] : 0],
                 prog, strerror(e[1]));
    }
    free(prog);
    return r;
  }
  free(prog);
  if (hm_child_add(pid, pidfd) < 0) {
    /* Not supervised means not started: a helper we could not stop later
     * must not run. */
    if (pidfd >= 0) {
      int st;
      hm_pidfd_signal(pidfd, SIGKILL);
      hm_pidfd_wait(pidfd, 2000);
      hm_pidfd_reap(pidfd, pid, &st);
      close(pidfd);
    } else {
      int st;
      kill(pid, SIGKILL);
      hm_pidfd_wait_exit(-1, pid, &st);
    }
    return HM_ERR_NOMEM(err);
  }
  *out_pid = pid;
  return 0;
nomem:
  hm_strv_clear(&envp);
  free(prog);
  return HM_ERR_NOMEM(err);
}

char *hm_proc_getenv(pid_t pid, const char *name) {
  char p[64];
  snprintf(p, sizeof(p), "/proc/%d/environ", (int)pid);
  size_t len = 0;
  char *env = NULL;
  FILE *f = fopen(p, "re");
  if (f) {
    size_t cap = 0;
    for (;;) {
      if (len == cap) {
        char *n = cap < (1u << 20) ? realloc(env, cap = cap ? cap * 2 : 4096) : NULL;
        if (!n)
          break;
        env = n;
      }
      size_t got = fread(env + len, 1, cap - len, f);
      if (!got)
        break;
      len += got;
    }
    fclose(f);
  } else if (errno == EACCES && hm_proc_in_our_userns(pid)) {
    /* A helper of ours that runs as a subordinate id (mapUid): its /proc
     * files belong to that id; read from inside its user namespace. */
    if (hm_userns_read_proc(pid, "environ", &env, &len) < 0)
      return NULL;
  }
  if (!env)
    return NULL;
  size_t nlen = strlen(name);
  char *found = NULL;
  for (size_t i = 0; i < len && !found;) {
    const char *e = env + i;
    size_t n = strnlen(e, len - i);
    if (n > nlen && strncmp(e, name, nlen) == 0 && e[nlen] == '=')
      found = strndup(e + nlen + 1, n - nlen - 1);
    i += n + 1;
  }
  free(env);
  return found;
}

/* SIGTERM, then SIGKILL: 0 once stopped(ud, ms) says it is gone, -1 if
 * it outlived SIGKILL too. */
static int term_then_kill(int (*sig)(void *ud, int s), int (*stopped)(void *ud, int ms), void *ud,
                          int timeout_ms) {
  sig(ud, SIGTERM);
  if (stopped(ud, timeout_ms))
    return 0;
  sig(ud, SIGKILL);
  return stopped(ud, 2000) ? 0 : -1;
}

static int child_sig(void *ud, int s) {
  return hm_child_signal(*(pid_t *)ud, s);
}
static int child_stopped(void *ud, int ms) {
  return hm_child_exited(*(pid_t *)ud, ms, NULL);
}
static int pidfd_sig(void *ud, int s) {
  return hm_pidfd_signal(*(int *)ud, s);
}
static int pidfd_stopped(void *ud, int ms) {
  return hm_pidfd_wait(*(int *)ud, ms);
}

/* No pidfds (a kernel before 5.3): pid, checked by alive before each
 * signal. */
struct legacy {
  pid_t pid;
  int (*alive)(pid_t pid);
};
static int legacy_sig(void *ud, int s) {
  struct legacy *l = ud;
  return l->alive(l->pid) ? kill(l->pid, s) : 0;
}
static int legacy_stopped(void *ud, int ms) {
  struct legacy *l = ud;
  int64_t deadline = hm_now_ms() + ms;
  while (l->alive(l->pid)) {
    if (hm_now_ms() >= deadline)
      return 0;
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
  }
  return 1;
}

int hm_helper_stop(pid_t pid, int (*alive)(pid_t pid), const char *name, int timeout_ms,
                   hm_error **err) {
  if (pid <= 1)
    return 0;
  int r;
  if (hm_child_is_ours(pid)) {
    /* Ours to kill even before it has exec'ed, and ours to reap. */
    r = hm_child_exited(pid, 0, NULL) ? 0
                                      : term_then_kill(child_sig, child_stopped, &pid, timeout_ms);
  } else {
    /* Known only from the state file: the pidfd is taken before the check,
     * so what is signalled is the process the check saw, never a recycled
     * pid. Not our child: not ours to reap. */
    if (!alive)
      return 0;
    int fd = hm_pidfd_open(pid);
    if (fd < 0 && errno == ESRCH)
      return 0;
    if (!alive(pid)) {
      if (fd >= 0)
        close(fd);
      return 0;
    }
    if (fd >= 0) {
      r = term_then_kill(pidfd_sig, pidfd_stopped, &fd, timeout_ms);
      close(fd);
    } else {
      struct legacy l = {pid, alive};
      r = term_then_kill(legacy_sig, legacy_stopped, &l, timeout_ms);
    }
  }
  return r < 0 ? HM_ERR(err, HM_E_HELPER, "%s %d did not exit after SIGKILL", name, (int)pid) : 0;
}

int hm_proc_is_ours(pid_t pid, const char *exe) {
  char p[64], line[256];
  snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
  FILE *f = fopen(p, "re");
  if (!f)
    return 0;
  unsigned ruid = 0, euid = 0;
  int have = 0;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "Uid: %u %u", &ruid, &euid) == 2) {
      have = 1;
      break;
    }
  fclose(f);
  /* A helper in a user namespace we made (userns.h) may run as one of our
   * subordinate ids (mapUid): ours too. */
  if (!have || ((ruid != geteuid() || euid != geteuid()) && !hm_proc_in_our_userns(pid)))
    return 0;
  if (!exe)
    return 1;
  char want[PATH_MAX], got[PATH_MAX + 16];
  if (!realpath(exe, want))
    return 0;
  snprintf(p, sizeof(p), "/proc/%d/exe", (int)pid);
  ssize_t n = readlink(p, got, sizeof(got) - 1);
  if (n < 0)
    return 0;
  got[n] = '\0';
  /* A helper started before its package was upgraded runs a deleted file. */
  static const char deleted[] = " (deleted)";
  size_t wl = strlen(want);
  return strcmp(got, want) == 0 || ((size_t)n == wl + sizeof(deleted) - 1 &&
                                    strncmp(got, want, wl) == 0 && !strcmp(got + wl, deleted));
}

static int read_small(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "re");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, size - 1, f);
  fclose(f);
  buf[n] = 0;
  return 0;
}

int hm_helper_alive(pid_t pid, const char *comm) {
  if (pid <= 1 || hm_child_exited(pid, 0, NULL))
    return 0;
  char p[64], name[64], stat[256];
  snprintf(p, sizeof(p), "/proc/%d/comm", (int)pid);
  if (read_small(p, name, sizeof(name)) < 0)
    return 0;
  name[strcspn(name, "\n")] = 0;
  if (strcmp(name, comm) != 0)
    return 0;
  snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
  if (read_small(p, stat, sizeof(stat)) == 0) {
    char *rp = strrchr(stat, ')');
    if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
      return 0;
  }
  return 1;
}

void hm_proc_each(const char *comm, const char *name, const char *value,
                  void (*fn)(pid_t pid, void *ud), void *ud) {
  DIR *d = opendir("/proc");
  struct dirent *de;
  while (d && (de = readdir(d))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end || pid <= 1 || !hm_helper_alive((pid_t)pid, comm))
      continue;
    char *v = name ? hm_proc_getenv((pid_t)pid, name) : NULL;
    if (!name || (v && strcmp(v, value) == 0))
      fn((pid_t)pid, ud);
    free(v);
  }
  if (d)
    closedir(d);
}

int hm_helper_markers(hm_strv *env, const char *instance, const char *id, const char *host,
                      int writable) {
  int r = hm_strv_pushf(env, HM_ENV_INSTANCE "=%s", instance);
  r = r ?: hm_strv_pushf(env, HM_ENV_MOUNT "=%s", id);
  r = r ?: hm_strv_pushf(env, HM_ENV_HOST "=%s", host);
  r = r ?: hm_strv_pushf(env, HM_ENV_WRITABLE "=%d", writable != 0);
  return r < 0 ? HM_E_NOMEM : 0;
}

hm_attachment *hm_helper_adopt(pid_t pid, const char *pid_key,
                               hm_attachment *(*get)(void *ud, const char *id), void *ud) {
  char *id = hm_proc_getenv(pid, HM_ENV_MOUNT), *host = hm_proc_getenv(pid, HM_ENV_HOST),
       *w = hm_proc_getenv(pid, HM_ENV_WRITABLE);
  hm_attachment *a = id ? get(ud, id) : NULL;
  if (a) {
    char buf[24];
    snprintf(buf, sizeof(buf), "%d", (int)pid);
    hm_attachment_set_data(a, pid_key, buf, NULL);
    if (host)
      hm_attachment_set_data(a, "hostPath", host, NULL);
    if (w)
      hm_attachment_set_data(a, "writable", w, NULL);
  }
  free(id);
  free(host);
  free(w);
  return a;
}
