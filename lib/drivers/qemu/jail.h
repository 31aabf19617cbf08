/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Confinement for the host-side file servers (virtiofsd, diod, sftp-server),
 * which run as root and serve whatever a possibly hostile guest asks.
 *
 * - hm_share: the shared directory opened once (O_PATH, last component not
 *   followed) and bound, in the helper's own mount namespace, at a private
 *   staging path on a tmpfs only that namespace has; the bind is nosuid,
 *   nodev, and recursively read-only when asked, or the helper does not
 *   start (no fallback). A parent directory swapped for a symlink after the
 *   open cannot retarget the mount: the bind starts from the fd, not a path.
 * - hm_confine: what is left of root when the helper execs: a bounding set
 *   of only the capabilities it needs, no new privileges, and a seccomp
 *   filter refusing setuid/setgid modes and device nodes (a file's owner may
 *   set its setuid bit without any capability, so capabilities alone cannot
 *   keep a guest from planting a setuid-root file on the host).
 * - hm_jail_pivot: for helpers that cannot confine themselves (diod): once
 *   the helper has loaded its libraries, its mount namespace is pivoted into
 *   the share, so the share is its `/` and nothing else of the host exists
 *   for it.
 *
 * The *_child functions run in a forked child before exec: async-signal-safe
 * calls only, everything prepared in the parent.
 */
#ifndef HM_JAIL_H
#define HM_JAIL_H

#include "private.h"

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

/* Where the staging tmpfs goes in the helper's namespace (hidden there). */
#define HM_JAIL_STAGE_BASE "/run"
#define HM_JAIL_STAGE_DIR HM_JAIL_STAGE_BASE "/hotmount"

typedef struct hm_share {
  int fd;       /* O_PATH|O_DIRECTORY of the shared directory */
  int readonly; /* the bind is made read-only (recursively) */
  dev_t dev;    /* what fd is, to check the jail against */
  ino_t ino;
  char base[64];          /* the tmpfs mount point (an existing directory) */
  char stage[PATH_MAX];   /* base/hotmount/HOST_PATH: where the share is bound */
  char scratch[PATH_MAX]; /* the child's copy for mkdir -p */
} hm_share;

/*
 * hm_share_open: opens host_path once (a directory; its last component must
 * not be a symbolic link) for a helper's bind. HM_E_INVALID when it is not
 * a directory or is a link. Free with hm_share_close.
 */
HM_PRIVATE int hm_share_open(hm_share *out, const char *host_path, int readonly, hm_error **err);
HM_PRIVATE void hm_share_close(hm_share *s);

/*
 * In the child: a private mount namespace with the share bound at
 * s->stage (nosuid, nodev, read-only when asked, all recursively), on a
 * read-only tmpfs over s->base; cwd is "/" after. 0, or -1 with errno.
 */
HM_PRIVATE int hm_share_bind_child(hm_share *s);

/*
 * hm_mount_lock: sets nosuid, nodev (and read-only when readonly) on the
 * mount at path and every mount below it, or fails: there is no weaker
 * fallback. Async-signal-safe. 0, or -1 with errno.
 */
HM_PRIVATE int hm_mount_lock(const char *path, int readonly);

/* Capability bits for hm_confine.keep_caps. */
#define HM_CAP(n) (UINT64_C(1) << (n))

typedef struct hm_confine {
  int drop_caps;      /* reduce the bounding set to keep_caps */
  uint64_t keep_caps; /* HM_CAP(CAP_...) bits */
  int filter;         /* install the seccomp filter (see the top) */
} hm_confine;

/*
 * In the child, last before exec: the bounding set (with inheritable and
 * ambient cleared), no_new_privs, the filter. 0, or -1 with errno.
 */
HM_PRIVATE int hm_confine_child(const hm_confine *c);

/*
 * hm_jail_pivot: makes the share the root of helper pid's mount namespace
 * (made by hm_share_bind_child): a short child joins that namespace,
 * pivot_root()s into s->stage and detaches the old root, which moves the
 * helper's root and cwd with it. Then checks that the helper's root is the
 * share (device and inode), else the caller must stop the helper.
 */
HM_PRIVATE int hm_jail_pivot(pid_t pid, const hm_share *s, hm_error **err);

/* 1 when pid's root directory is the share s (device and inode). */
HM_PRIVATE int hm_jail_root_is(pid_t pid, const hm_share *s);

#endif
