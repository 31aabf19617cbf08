/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host side of the guest agent protocol (docs/agent-protocol.md), over the
 * QEMU chardev unix socket INSTANCE/agent.sock (we are its client).
 *
 * Thread rules: every call may be made from any thread, concurrently with the
 * others; requests are multiplexed by id. A private reader thread (plain
 * pthreads, all signals blocked) matches answers to waiting callers. Only
 * hm_agent_free must not race with other calls on the same handle.
 */
#ifndef HM_CORE_AGENT_CLIENT_H
#define HM_CORE_AGENT_CLIENT_H

#include "core/agent_proto.h"
#include <hotmount/driver.h>

typedef struct hm_agent hm_agent;

/*
 * hm_agent_connect: connects to socket_path and performs the hello
 * handshake, resending hello until one is answered or timeout_ms passes:
 * virtio-serial drops or stalls what the host writes while the guest has
 * not opened its port, which is normal while the guest boots.
 * Errors: HM_E_NOT_READY (cannot connect, or the peer closed),
 * HM_E_TIMEOUT (no answer in time), HM_E_PROTOCOL (protocol major version
 * mismatch or garbage), HM_E_AGENT (the agent refused the hello).
 */
HM_PRIVATE int hm_agent_connect(hm_agent **out, const char *socket_path, int timeout_ms,
                                hm_error **err);

/* Stops the reader thread and closes the connection. Accepts NULL. No other
 * call on a may be in progress or follow. */
HM_PRIVATE void hm_agent_free(hm_agent *a);

/*
 * hm_agent_mount: asks the agent to mount. type: HM_TYPE_VIRTIOFS (tag = the
 * virtiofs tag), HM_TYPE_9P (tag = the virtio-serial port name of its relay) or HM_TYPE_BIND
 * (tag = the guest directory to bind-mount; options ignored; an agent without "mount.bind" is
 * refused with HM_E_AGENT saying to update it). options may be
 * NULL. timeout_ms is how long the agent may wait for the device to appear; the caller waits that
 * long plus a grace for the answer to travel back. Errors: HM_E_AGENT (the agent's message, errno
 * included), HM_E_TIMEOUT (the device did not appear in time, or no answer), HM_E_NOT_READY
 * (connection closed), HM_E_INVALID (bad arguments).
 */
HM_PRIVATE int hm_agent_mount(hm_agent *a, int type, const char *tag, const char *target,
                              int readonly, const char *options, int timeout_ms, hm_error **err);

/*
 * hm_agent_mount_att: hm_agent_mount for what a backend's attach left in att:
 * its tag, data "guestOptions", and data "guestTransport" ("virtio": a 9p tag
 * is a virtio-9p-pci mount_tag, mounted trans=virtio; otherwise a 9p tag is
 * the virtio-serial port of a trans=fd relay).
 */
HM_PRIVATE int hm_agent_mount_att(hm_agent *a, int type, const hm_attachment *att,
                                  const char *target, int readonly, int timeout_ms, hm_error **err);

/* hm_agent_umount: flags: HM_REMOVE_LAZY (MNT_DETACH), HM_REMOVE_FORCE
 * (MNT_FORCE). Errors as for hm_agent_mount. */
HM_PRIVATE int hm_agent_umount(hm_agent *a, const char *target, unsigned flags, int timeout_ms,
                               hm_error **err);

/* hm_agent_notify: shows n (0..HM_NOTIFY_MAX_BATCH) host changes beneath
 * the guest mount point target to the guest's file watchers; n == 0 only
 * prepares the mount (9p: the agent pins its directories, see notify.c). HM_E_UNSUPPORTED
 * when the agent lacks the "notify" capability; errors as for hm_agent_mount. */
HM_PRIVATE int hm_agent_notify(hm_agent *a, const char *target, const hm_notify_event *ev, size_t n,
                               int timeout_ms, hm_error **err);

/* hm_agent_list: the guest's virtiofs, 9p and fuse.sshfs mounts. Free *out
 * with hm_agent_list_free(*out, *n). */
HM_PRIVATE int hm_agent_list(hm_agent *a, hm_agent_mount_info **out, size_t *n, hm_error **err);
HM_PRIVATE void hm_agent_list_free(hm_agent_mount_info *v, size_t n);

/* 1 while the handshake is done and the connection is open, else 0. */
HM_PRIVATE int hm_agent_is_connected(hm_agent *a);
/* The guest's boot id from the last hello or list answer (malloc'd), or NULL
 * when the agent does not send one (before protocol 1.1). */
HM_PRIVATE char *hm_agent_boot_id(hm_agent *a);

/* From the hello answer; owned by a. */
HM_PRIVATE const char *hm_agent_get_version(hm_agent *a);
HM_PRIVATE int hm_agent_has_capability(hm_agent *a, const char *cap);

#endif
