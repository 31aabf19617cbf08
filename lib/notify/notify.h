/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host-side change watcher of one --notify mount (see docs/architecture.md,
 * "Change notification"): a recursive inotify watch of the shared directory
 * on its own thread, coalescing events per path, handing batches of
 * {kind, path relative to the share} to a sink that forwards them to the
 * guest. Linux only; elsewhere hm_notify_watcher_start is HM_E_UNSUPPORTED.
 */
#ifndef HM_NOTIFY_NOTIFY_H
#define HM_NOTIFY_NOTIFY_H

#include "core/private.h"

#include <hotmount/driver.h> /* HM_NOTIFY_* */

/* Most events in one batch (one agent request). */
#define HM_NOTIFY_MAX_BATCH 128 /* 128 paths of 4 KiB fit a 1 MiB request line */
/* How long events of one path are gathered before they are sent. */
#define HM_NOTIFY_COALESCE_MS 30

/* "create", ...; NULL when unknown. */
HM_PRIVATE const char *hm_notify_kind_name(int kind);
/* The kind named name, or 0. */
HM_PRIVATE int hm_notify_kind_parse(const char *name);

/*
 * hm_notify_path_check: a path relative to a mount as both sides accept it:
 * not empty, not absolute, valid UTF-8 without control characters, no "."
 * or ".." component, no empty component, each component at most 255 bytes,
 * the whole under 4096. 0, or -EINVAL with a static reason in *why.
 */
HM_PRIVATE int hm_notify_path_check(const char *path, const char **why);

/*
 * hm_notify_open_walk: openat of rel (relative, no ".."; "" or "." is
 * dirfd itself) beneath dirfd one component at a time with O_NOFOLLOW, so
 * no symlink is followed: what openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS
 * does, for kernels without openat2 (before 5.6; ENOSYS) and tools that do
 * not know it (valgrind). -1 with errno.
 */
HM_PRIVATE int hm_notify_open_walk(int dirfd, const char *rel, int flags);

typedef struct hm_notify_event {
  int kind;
  char *path; /* relative to the share's root */
} hm_notify_event;

/* Called on the watcher's thread with a batch; the events are the watcher's
 * (copy what you keep). Must not call back into the watcher. The first call,
 * before the tree is walked, has n == 0: prepare the guest side. */
typedef void (*hm_notify_sink)(void *user, const hm_notify_event *ev, size_t n);

typedef struct hm_notify_watcher hm_notify_watcher;

typedef struct hm_notify_stats {
  unsigned long dirs;        /* directories watched */
  unsigned long unwatched;   /* directories not watched: the watch limit was reached */
  unsigned long max_watches; /* fs.inotify.max_user_watches when that happened, else 0 */
  unsigned long overflows;   /* queue overflows (each followed by a rescan) */
  unsigned long sent;        /* events handed to the sink */
  unsigned long suppressed;  /* events dropped as echoes (no change to mtime, size, inode, mode) */
  int running;               /* the thread runs */
  int origin_filter;         /* guest-made changes are told apart by fanotify (see _start_ex) */
} hm_notify_stats;

/*
 * hm_notify_watcher_start: watches root (an absolute directory) recursively;
 * the walk of the tree runs on the new thread, so this returns at once.
 * sink gets batches until hm_notify_watcher_stop. Directories are opened
 * beneath root without following symlinks, so a symlink in the share cannot
 * make us watch anything outside it.
 */
HM_PRIVATE int hm_notify_watcher_start(hm_notify_watcher **out, const char *root,
                                       hm_notify_sink sink, void *user, hm_error **err);
/*
 * hm_notify_watcher_start_ex: as hm_notify_watcher_start, and changes made
 * by the processes pids[0..n) (the file server of the mount: virtiofsd,
 * diod, sftp-server), or by their children, are the guest's own and are
 * not sent back to it. Needs fanotify with FAN_REPORT_DFID_NAME and
 * CAP_SYS_ADMIN (an unprivileged fanotify listener is not told who made a
 * change); without them only the signature rule applies (see watcher.c),
 * and hm_notify_stats.origin_filter is 0.
 */
HM_PRIVATE int hm_notify_watcher_start_ex(hm_notify_watcher **out, const char *root,
                                          const int *pids, size_t n, hm_notify_sink sink,
                                          void *user, hm_error **err);
/* Stops the thread, closes every descriptor, frees w. Accepts NULL. */
HM_PRIVATE void hm_notify_watcher_stop(hm_notify_watcher *w);
HM_PRIVATE void hm_notify_watcher_stats(hm_notify_watcher *w, hm_notify_stats *out);
/* Waits until the initial walk is done (tests, bench): 0, or -ETIMEDOUT. */
HM_PRIVATE int hm_notify_watcher_wait_ready(hm_notify_watcher *w, int timeout_ms);

#endif
