/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Rootless helpers: a user namespace with the user's subordinate ids.
 *
 * Without root, the file servers (virtiofsd, sftp-server) run in a user
 * namespace made for them: the child unshares CLONE_NEWUSER and waits; the
 * parent has newuidmap/newgidmap (setuid root, from the uidmap package)
 * write its maps from the ranges /etc/subuid and /etc/subgid grant the
 * user; the child then becomes uid/gid 0 inside, with every capability over
 * its own namespaces, which is what it needs to make its mount namespace,
 * bind the share (read-only when asked) and let virtiofsd set up its
 * sandbox. A single-id map (`unshare -r`) is not enough: virtiofsd changes
 * its groups, which such a namespace forbids.
 *
 * The map, by default (the host user is guest root):
 *   inner 0           -> the host user
 *   inner 1..COUNT    -> SUBBASE..SUBBASE+COUNT-1
 * With map-uid=M (guest uid M is the host user, guest root is not):
 *   inner 0..M-1      -> SUBBASE..SUBBASE+M-1
 *   inner M           -> the host user
 *   inner M+1..COUNT  -> SUBBASE+M..SUBBASE+COUNT-1
 * Inner ids beyond COUNT, and host ids outside the map, are the overflow id
 * (65534) on the other side. gids the same with /etc/subgid.
 */
#ifndef HM_USERNS_H
#define HM_USERNS_H

#include "private.h"

#include <stdint.h>
#include <sys/types.h>

typedef struct hm_idrange {
  uint32_t inner, outer, count;
} hm_idrange;

typedef struct hm_idmap {
  hm_idrange r[3];
  int n;
} hm_idmap;

/*
 * hm_subid_find: the first line of a subid file's text (/etc/subuid format:
 * "KEY:BASE:COUNT", KEY a user name or a decimal uid) whose key is `user`
 * or `uid`: 1 and *base, *count set; 0 when none; lines that do not parse
 * are skipped. user may be NULL.
 */
HM_PRIVATE int hm_subid_find(const char *text, const char *user, uid_t uid, uint32_t *base,
                             uint32_t *count);

/*
 * hm_idmap_build: the map above for host id `host` shown inside as
 * `mapped` (0 by default), over the subordinate range base/count.
 * HM_E_INVALID when mapped > count (it must lie in the inner range the
 * subordinate ids cover) or the range is empty.
 */
HM_PRIVATE int hm_idmap_build(hm_idmap *out, uint32_t host, uint32_t mapped, uint32_t base,
                              uint32_t count, hm_error **err);

/* The outer id of inner id `in`, or 65534 (overflow) when unmapped. */
HM_PRIVATE uint32_t hm_idmap_outer(const hm_idmap *m, uint32_t in);

typedef struct hm_userns {
  hm_idmap uid, gid;
  char user[64];
  char newuidmap[64], newgidmap[64];
} hm_userns;

/*
 * hm_userns_prepare: checks that this user can make such a namespace (user
 * namespaces enabled, newuidmap/newgidmap installed, subordinate ids in
 * /etc/subuid and /etc/subgid) and builds the maps; map_uid/map_gid < 0:
 * the host user is guest root. HM_E_UNSUPPORTED naming the fix otherwise.
 * `what` names the helper for the message.
 */
HM_PRIVATE int hm_userns_prepare(hm_userns *out, const char *what, long map_uid, long map_gid,
                                 hm_error **err);

/*
 * hm_userns_map: in the parent, writes pid's uid and gid maps (pid has
 * unshared its user namespace and waits). 0, or HM_E_HELPER with what
 * newuidmap/newgidmap said.
 */
HM_PRIVATE int hm_userns_map(const hm_userns *u, pid_t pid, hm_error **err);

/* In the child once mapped: gid, groups, uid 0. 0, or -1 with errno. */
HM_PRIVATE int hm_userns_enter_child(void);

/*
 * hm_userns_check: one finding per requirement, for status/doctor: the
 * keys userns, newuidmap, subuid, subgid get "ok" or the problem with its
 * fix (set through set(ud, key, value)). 0 when every one is ok.
 */
HM_PRIVATE int hm_userns_check(void (*set)(void *ud, const char *key, const char *value), void *ud);

/*
 * hm_userns_status: sets "rootless" (true/false) and, without root, the
 * hm_userns_check keys in st. Non-zero when helpers can be confined (root,
 * or a usable user namespace).
 */
HM_PRIVATE int hm_userns_status(hm_status *st);

/*
 * hm_proc_in_our_userns: pid runs in a user namespace (not ours) that we
 * own: a helper started through hm_userns, whose uid seen from here may be
 * a subordinate id.
 */
HM_PRIVATE int hm_proc_in_our_userns(pid_t pid);

/*
 * hm_userns_read_proc: reads /proc/PID/FILE of a helper in a user namespace
 * of ours (hm_proc_in_our_userns) that runs as a subordinate id, whose
 * /proc files belong to that id: a short child joins the namespace (we own
 * it, so it has every capability there) and reads it. 0 and *out (malloc'd,
 * at most 1 MiB, not NUL-terminated; *out_len bytes), or -1.
 */
HM_PRIVATE int hm_userns_read_proc(pid_t pid, const char *file, char **out, size_t *out_len);

#endif
