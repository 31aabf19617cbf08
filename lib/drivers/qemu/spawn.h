/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Starting the host-side file servers (virtiofsd, diod, sftp-server): one way for all. */
#ifndef HM_SPAWN_H
#define HM_SPAWN_H

#include "jail.h"
#include "private.h"
#include "userns.h"
#include <sys/types.h>

/*
 * hm_ro_remount: makes the mount at dir and every mount below it read-only,
 * or fails (no weaker fallback: a top-only remount would leave submounts
 * writable). Async-signal-safe (for children between fork and exec). 0, or
 * -1 with errno.
 */
HM_PRIVATE int hm_ro_remount(const char *dir);

/*
 * hm_spawn: starts argv[0] with argv, the caller's environment plus
 * extra_env (NULL-terminated "NAME=value" list, may be NULL), in its own
 * session when new_session (it outlives us on purpose: mounts survive a
 * daemon restart). Signals are reset in the child before they are
 * unblocked, so the host program's handlers never run there. In the child,
 * in this order:
 *   userns   when set (userns.h): unshare a user namespace, wait for the
 *            parent to write its maps (newuidmap/newgidmap), become uid 0
 *            inside; share and confine then work without root
 *   share    when set, bound in a private mount namespace (jail.h:
 *            hm_share_bind_child: nosuid, nodev, read-only when asked)
 *   setup    when set: only async-signal-safe calls there; a non-zero
 *            return makes the child fail ("setup failed" with the errno the
 *            hook left)
 *   fds      pass_fd becomes as_fd; stdio_fd, when >= 0, stdin and stdout
 *            (else stdin is /dev/null); stdout_fd and stderr_fd, when > 0
 *            (0, a zeroed field, means unset), stdout and stderr (stderr is
 *            /dev/null when stdio_fd is set and stderr_fd is not); every
 *            other descriptor from 3 up is closed at exec (close_range), so
 *            the helper inherits nothing of the host program's
 *   confine  when set, last (jail.h: hm_confine_child)
 * argv[0] without a '/' is looked up in PATH (before the fork). Returns
 * once the exec succeeded; an exec or setup failure is HM_E_HELPER naming
 * the program and errno. The child is then in the table of our children
 * (hm_child_*) with its pidfd: stop it with hm_helper_stop or reap it with
 * hm_child_exited, never with waitpid.
 */
typedef struct hm_spawn_opts {
  char **argv;
  char *const *extra_env;
  int pass_fd, as_fd; /* pass_fd becomes as_fd; -1: none */
  int stdio_fd;       /* becomes stdin and stdout when >= 0 (else stdin is /dev/null) */
  int stdout_fd;      /* becomes stdout when > 0 */
  int stderr_fd;      /* becomes stderr when > 0 */
  int new_session;    /* setsid(): outlives the caller's process group */
  hm_share *share;
  int (*setup)(void *arg);
  void *setup_arg;
  const hm_confine *confine;
  const hm_userns *userns;
} hm_spawn_opts;
HM_PRIVATE int hm_spawn(pid_t *out_pid, const hm_spawn_opts *o, hm_error **err);

/*
 * hm_helper_stop: SIGTERM, then SIGKILL after timeout_ms. Our own child
 * (hm_spawn) is signalled and reaped through its pidfd. A pid that is not
 * our child (a restarted daemon's helper) is pinned by a pidfd first and
 * signalled only while alive(pid) says it still is that helper (so a
 * recycled pid is left alone; alive NULL: never signalled); it is not ours
 * to reap. `name` is for the error. 0 when it is gone.
 */
HM_PRIVATE int hm_helper_stop(pid_t pid, int (*alive)(pid_t pid), const char *name, int timeout_ms,
                              hm_error **err);

/*
 * Child processes (child.c). The library never waits for any pid but its
 * own children's, and only through their pidfds: an embedder may ignore
 * SIGCHLD (the kernel reaps, waits answer ECHILD: "exited, status
 * unknown") or wait for its own children (a GLib child watch).
 */
/* A pidfd for pid (close-on-exec, readable once it has exited), or -1 with
 * errno (ESRCH: no such process; ENOSYS: a kernel before 5.3). */
HM_PRIVATE int hm_pidfd_open(pid_t pid);
/* pidfd_send_signal: 0, or -1 with errno. */
HM_PRIVATE int hm_pidfd_signal(int pidfd, int sig);
/* Waits up to timeout_ms (0: a look; < 0: no limit) for pidfd to become readable. 1: the
 * process has exited; 0: not yet. */
HM_PRIVATE int hm_pidfd_wait(int pidfd, int timeout_ms);
/* Reaps our child (pidfd, or pid when pidfd is -1) if it has exited,
 * without blocking. 1: exited, *status the wait status or -1 when unknown
 * (ECHILD: the kernel or someone else reaped it); 0: running; -1: error. */
HM_PRIVATE int hm_pidfd_reap(int pidfd, pid_t pid, int *status);
/* As hm_pidfd_reap, but blocks until the child has exited: 1, or -1. */
HM_PRIVATE int hm_pidfd_wait_exit(int pidfd, pid_t pid, int *status);
/* fork(), plus the child's pidfd in *out_pidfd (-1 when the kernel has
 * none), taken before the child can run (so before it can exit and be
 * reaped). In the child as fork(). */
HM_PRIVATE pid_t hm_fork_pidfd(int *out_pidfd);
/* Records pid (with its pidfd, which the table then owns) as a child of
 * ours. 0 or HM_E_NOMEM. */
HM_PRIVATE int hm_child_add(pid_t pid, int pidfd);
/* Waits up to timeout_ms (< 0: no limit) for our child pid to exit. 1: it has, and is
 * reaped and forgotten (*status as hm_pidfd_reap, status may be NULL); 0:
 * still running, or pid is not a child in the table. Thread-safe. */
HM_PRIVATE int hm_child_exited(pid_t pid, int timeout_ms, int *status);
/* Non-zero when pid is a child of ours not yet reaped. */
HM_PRIVATE int hm_child_is_ours(pid_t pid);
/* Signals our child pid through its pidfd. 0, or -1 (not ours, or errno). */
HM_PRIVATE int hm_child_signal(pid_t pid, int sig);

/*
 * Markers: every helper a backend starts (virtiofsd, diod, sftp-server)
 * carries these in its environment, so a restarted daemon finds it in /proc
 * and knows what it serves.
 */
#define HM_ENV_INSTANCE "HOTMOUNT_INSTANCE" /* the instance directory */
#define HM_ENV_MOUNT "HOTMOUNT_MOUNT"       /* the mount id, hm-N */
#define HM_ENV_HOST "HOTMOUNT_HOST"         /* the host path */
#define HM_ENV_WRITABLE "HOTMOUNT_WRITABLE" /* 0 or 1 */
/* Appends the four markers to env. HM_E_NOMEM on failure. */
HM_PRIVATE int hm_helper_markers(hm_strv *env, const char *instance, const char *id,
                                 const char *host, int writable);
/*
 * hm_helper_adopt: the attachment helper pid serves, found by its mount
 * marker through get(ud, id), with pid_key=pid and the hostPath/writable
 * markers set on it (reconciliation's scan); NULL when get has none.
 */
HM_PRIVATE hm_attachment *hm_helper_adopt(pid_t pid, const char *pid_key,
                                          hm_attachment *(*get)(void *ud, const char *id),
                                          void *ud);

/*
 * hm_proc_is_ours: pid runs as our euid (real and effective) and, when exe
 * is set, its /proc/PID/exe is that program (after realpath; a deleted
 * binary of that name counts, for helpers started before an upgrade).
 * Environment markers say what a helper serves, this says it is ours.
 */
HM_PRIVATE int hm_proc_is_ours(pid_t pid, const char *exe);

/* The environment variable `name` of process pid (malloc'd), or NULL. */
HM_PRIVATE char *hm_proc_getenv(pid_t pid, const char *name);

/*
 * hm_helper_alive: pid runs a program named comm (its /proc comm) and has
 * not exited. Our own child (hm_spawn) that has exited is reaped on the
 * way through its pidfd; a zombie that is not ours counts as gone (and is
 * left to its parent).
 */
HM_PRIVATE int hm_helper_alive(pid_t pid, const char *comm);

/*
 * hm_proc_each: calls fn for every live process named comm whose
 * environment holds name=value (the markers the backends give their
 * helpers: HOTMOUNT_INSTANCE, HOTMOUNT_MOUNT), or, with name NULL, every
 * live process named comm.
 */
HM_PRIVATE void hm_proc_each(const char *comm, const char *name, const char *value,
                             void (*fn)(pid_t pid, void *ud), void *ud);

#endif
