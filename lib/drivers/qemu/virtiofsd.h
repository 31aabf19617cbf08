/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * virtiofsd supervision. Two implementations are in the field: the Rust one
 * (--shared-dir, --readonly since 1.13) on current distributions, and QEMU's
 * C one (-o source=, no read-only option, needs root) in Debian 12. Both take
 * a listening vhost-user socket as --fd, which we create, so the socket is
 * ready before the process is and no start-up polling is needed.
 */
#ifndef HM_VIRTIOFSD_H
#define HM_VIRTIOFSD_H

#include "private.h"
#include "spawn.h"
#include <sys/types.h>

#define HM_VIRTIOFSD_C 1
#define HM_VIRTIOFSD_RUST 2

typedef struct hm_virtiofsd_info {
  char *path;
  int flavor;       /* HM_VIRTIOFSD_* */
  int has_readonly; /* supports --readonly */
} hm_virtiofsd_info;

/* Finds virtiofsd (explicit path, else $HOTMOUNT_VIRTIOFSD, PATH,
 * /usr/libexec, /usr/lib/qemu) and asks it what it supports. */
HM_PRIVATE int hm_virtiofsd_detect(hm_virtiofsd_info *out, const char *explicit_path,
                                   hm_error **err);
HM_PRIVATE void hm_virtiofsd_info_clear(hm_virtiofsd_info *info);

/* The argv for one share (listen fd number given). When read-only cannot be
 * asked of virtiofsd itself, *out_ro_bind is set: the caller must make the
 * directory read-only in the child's own mount namespace before exec. */
HM_PRIVATE int hm_virtiofsd_argv(char ***out, int *out_ro_bind, const hm_virtiofsd_info *info,
                                 const char *dir, int readonly, const char *cache, int fd,
                                 hm_error **err);

/*
 * Starts virtiofsd sharing dir, listening on socket_path (created here, mode
 * 0600). The process outlives us on purpose (a daemon restart must not take
 * mounts down); it is in its own session. *out_pid is its pid. `env` (may be
 * NULL) is a NULL-terminated list of "NAME=value" added to its environment:
 * the markers by which a restarted daemon finds it again (hm_virtiofsd_find).
 * userns (may be NULL; userns.h) runs it without root in a user namespace
 * with the user's subordinate ids, confined as root's is.
 */
HM_PRIVATE int hm_virtiofsd_start(pid_t *out_pid, const hm_virtiofsd_info *info, const char *dir,
                                  int readonly, const char *cache, const char *socket_path,
                                  char *const *env, const hm_userns *userns, hm_error **err);

/*
 * Calls fn for every running virtiofsd whose environment has `marker`
 * ("NAME=value", matched exactly) and that is not a child of another
 * virtiofsd (the C one forks its sandbox).
 */
HM_PRIVATE void hm_virtiofsd_find(const char *marker, void (*fn)(pid_t pid, void *ud), void *ud);

/* Stops pid if it is still a virtiofsd: SIGTERM, then SIGKILL after
 * timeout_ms; reaps it when it is our child. 0 when gone. */
HM_PRIVATE int hm_virtiofsd_stop(pid_t pid, int timeout_ms, hm_error **err);

/* Non-zero when pid is alive and is a virtiofsd. */
HM_PRIVATE int hm_virtiofsd_alive(pid_t pid);

#endif
