/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotmount-agent internals. The agent is a static binary made of these files,
 * lib/guest and the plain-C parts of lib/core; it never runs a shell.
 */
#ifndef HM_AGENT_AGENT_H
#define HM_AGENT_AGENT_H

#include "core/agent_proto.h"
#include "core/private.h"

#include <pthread.h>

/* ---- serve.c: one peer connection (a virtio port, or a test socket) ---- */

extern int agent_retry_interval_ms;
extern int agent_delay_mount_ms;
/* 1: the 9p relay splices from the client to the port (--relay-splice);
 * by default it copies with read/write. */
extern int agent_relay_splice;
/* A file system type taken as a share for bind mounts besides virtiofs, 9p
 * and drvfs (--bind-test-fstype; tests only), or NULL. */
extern const char *agent_bind_test_fstype;

typedef struct agent_conn agent_conn;

/* A connection writing to fd; closes fd on the last unref when owns_fd. */
agent_conn *agent_conn_new(int fd, int owns_fd);
void agent_conn_ref(agent_conn *c);
void agent_conn_unref(agent_conn *c);
/* The peer went away: answers still being computed are dropped, not sent to
 * whoever connects next. */
void agent_conn_set_dead(agent_conn *c);

/* Splits a byte stream into request lines and dispatches them. */
typedef struct agent_reader {
  char *buf;
  size_t len, cap;
  int discarding; /* inside an over-long line */
} agent_reader;
void agent_reader_feed(agent_reader *r, agent_conn *c, const char *data, size_t n);
void agent_reader_reset(agent_reader *r);

/* ---- ops.c: the operations (called on request threads) ---- */

/* Each returns 0, or -1 with *eno (an errno) and *msg (malloc'd) set. */
int agent_op_mount(const hm_agent_request *req, int *eno, char **msg);
int agent_op_umount(const hm_agent_request *req, int *eno, char **msg);
int agent_op_list(hm_agent_mount_info **out, size_t *n, int *eno, char **msg);
/* The type of the topmost mount at path (resolved), malloc'd in *fstype: 1;
 * 0 when nothing is mounted there; -1 with errno. */
int agent_mount_fstype(const char *path, char **fstype);

/* ---- hub.c: the shared virtiofs device's guest side ---- */

/* Where the hub tag is mounted (root-only), and the tag. */
#define AGENT_HUB_DIR "/run/hotmount/hub"
#define AGENT_HUB_TAG "hm-hub"
/* name is an entry of the hub: "hm-" and digits, at most 24 bytes. */
int agent_hub_entry_ok(const char *name);
/* In a parsed mount list (text: the mountinfo it came from): binds of hub
 * entries get source "hm-hub/hm-N"; the hub and its submounts are dropped. */
void agent_hub_fix_list(hm_agent_mount_info *v, size_t *n, const char *text);
/* Unmounts (detached) the hub submounts whose major:minor is dev. */
void agent_hub_release(const char *text, const char *dev);

/* ---- notify.c: host changes shown to guest watchers ---- */

/* The mount root at target (a virtiofs, 9p or FUSE mount point), opened
 * O_PATH|O_DIRECTORY without following symlinks: an fd, or -errno with
 * *msg (malloc'd) set. */
int agent_notify_open_target(const char *target, int *is_9p, char **msg);
/* Makes the guest kernel report each event (see notify.c); *failed: how
 * many could not be shown (ENOENT, gone again, is not counted). */
int agent_notify_apply(int tfd, int is_9p, const hm_notify_event *ev, size_t n, unsigned *failed);
int agent_op_notify(const hm_agent_request *req, int *eno, char **msg);
/* Lets go of the directories notify holds open in the mount at target (a
 * resolved path); before unmounting it. */
void agent_notify_unpin(const char *target);

/* ---- devwait.c: waiting for devices without a sleep loop ---- */

/* A NETLINK_KOBJECT_UEVENT socket, or -1 (then waits fall back to a bounded
 * timeout; logged once). Open it BEFORE checking for the device, so an event
 * between the check and the wait is not lost. */
int agent_devwait_open(void);
/* Waits until a uevent arrives or deadline (hm_now_ms() scale; -1: none)
 * passes. Returns 1 when something happened that is worth re-checking for, 0
 * at the deadline. */
int agent_devwait_wait(int fd, int64_t deadline);
void agent_devwait_close(int fd);

/* ---- port.c: the transports ---- */

int agent_run_port(const char *name);
/* The device node of the virtio-serial port called name (/dev/vportNpM, made
 * from sysfs if missing) in dev; -1 if there is no such port (yet). */
int agent_port_find(const char *name, char *dev, size_t size);
/* 1 if the port's virtio device uses indirect descriptors, which the 9p
 * relay needs to splice into it safely (see relay.c). */
int agent_port_has_indirect(const char *dev);
int agent_run_socket(const char *path);

#endif
