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

HM_API int hm_client_new(hm_client **out, const char *socket_path, hm_error **err);
HM_API void hm_client_free(hm_client *c);
/** Request timeout in ms (default 120000). */
HM_API int hm_client_set_timeout(hm_client *c, int timeout_ms, hm_error **err);
HM_API int hm_client_add(hm_client *c, hm_mount **out, const hm_mount_spec *spec, hm_error **err);
HM_API int hm_client_remove(hm_client *c, const char *guest_path, unsigned flags, hm_error **err);
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
