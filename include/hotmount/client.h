/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_CLIENT_H
#define HOTMOUNT_CLIENT_H

#include <hotmount/common.h>
#include <hotmount/error.h>
#include <hotmount/mount.h>
#include <hotmount/status.h>

HM_BEGIN_DECLS

/*
 * hm_client: the HTTP API's client side, over hotmountd's unix socket. Errors
 * the daemon reports come back with the same code and message. One thread at
 * a time per client.
 */
typedef struct hm_client hm_client;

/**
 * hm_client_new: a client of the daemon listening on socket_path (copied; usually
 * INSTANCE/hotmountd.sock). Does not connect: requests do (and keep the connection for the next
 * one), so a daemon that is not running shows up as HM_E_NOT_READY on the first request. *out:
 * free with hm_client_free. Returns 0, HM_E_INVALID (NULL or empty argument, path too long),
 * HM_E_NOMEM or HM_E_INTERNAL (libcurl failed to initialize). Any thread. Since 0.1.
 */
HM_API int hm_client_new(hm_client **out, const char *socket_path, hm_error **err);
/** hm_client_free: frees c; accepts NULL. Not while another thread uses c. Since 0.1. */
HM_API void hm_client_free(hm_client *c);
/**
 * hm_client_set_timeout: how long each request may take, in ms, 1 or more (default 120000: an add
 * waits on the guest). Returns 0 or HM_E_INVALID. One thread at a time per client. Since 0.1.
 */
HM_API int hm_client_set_timeout(hm_client *c, int timeout_ms, hm_error **err);
/**
 * hm_client_add: POST /v1/mounts: asks the daemon to hot-mount spec (read, not kept). *out (may be
 * NULL) receives a snapshot of the new mount; free with hm_mount_free. Returns 0, or the daemon's
 * error (the codes of hm_instance_add, with its message), HM_E_NOT_READY (no daemon),
 * HM_E_TIMEOUT, HM_E_PROTOCOL (a malformed answer). One thread at a time per client. Since 0.1.
 */
HM_API int hm_client_add(hm_client *c, hm_mount **out, const hm_mount_spec *spec, hm_error **err);
/**
 * hm_client_remove: DELETE /v1/mounts: asks the daemon to remove the mount at guest_path; flags:
 * HM_REMOVE_LAZY, HM_REMOVE_FORCE. Returns 0, or the daemon's error (the codes of
 * hm_instance_remove), HM_E_INVALID (unknown flags), HM_E_NOT_READY, HM_E_TIMEOUT, HM_E_PROTOCOL.
 * One thread at a time per client. Since 0.1.
 */
HM_API int hm_client_remove(hm_client *c, const char *guest_path, unsigned flags, hm_error **err);
/**
 * hm_client_list: GET /v1/mounts: the daemon's registry. *out: free with hm_mount_list_free.
 * Returns 0, HM_E_NOT_READY, HM_E_TIMEOUT or HM_E_PROTOCOL. One thread at a time per client.
 * Since 0.1.
 */
HM_API int hm_client_list(hm_client *c, hm_mount_list **out, hm_error **err);

/**
 * hm_client_status: the daemon's GET /v1/status, the facts hm_instance_status
 * gathers (keys listed in docs/api.md). c: the client; *out: a new status,
 * free it with hm_status_free. Returns 0, or HM_E_NOT_READY when no daemon
 * answers on the socket (the message names the hotmountd command to start
 * it), HM_E_TIMEOUT, HM_E_PROTOCOL for an answer that is not a JSON object,
 * or the daemon's own error. Same thread rules as the other calls: one
 * thread at a time per client. Since 0.1.
 */
HM_API int hm_client_status(hm_client *c, hm_status **out, hm_error **err);

/**
 * hm_client_connect_agent: asks the daemon to reach the guest agent now
 * (POST /v1/agent/connect; hm_instance_connect_agent on the daemon side),
 * waiting up to timeout_ms (1..60000) for the guest to answer. Useful to
 * wait for a booting guest, or to check that the agent runs. Returns 0 when
 * the agent answered the handshake; HM_E_NOT_READY (no daemon, or the agent
 * port is not connected), HM_E_TIMEOUT (the guest did not answer in time),
 * HM_E_INVALID (timeout out of range). One thread at a time per client.
 * Since 0.1.
 */
HM_API int hm_client_connect_agent(hm_client *c, int timeout_ms, hm_error **err);

HM_END_DECLS

#endif
