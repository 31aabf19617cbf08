/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_SERVER_H
#define HOTMOUNT_SERVER_H

#include <hotmount/common.h>
#include <hotmount/error.h>
#include <hotmount/instance.h>

HM_BEGIN_DECLS

/*
 * hm_server: the HTTP API (docs/api.md) on a unix socket, served from the
 * library's own threads. GET/POST/DELETE /v1/mounts, GET /v1/status,
 * POST /v1/agent/connect.
 */
typedef struct hm_server hm_server;

/**
 * hm_server_new: creates socket_path (mode 0600; an existing stale socket is replaced, a live one,
 * or a path that is not a socket, is HM_E_EXISTS), accepts connections only from the process's own
 * uid (SO_PEERCRED), and serves inst from the library's own threads; inst is borrowed and must
 * outlive the server. *out: free with hm_server_free. Returns 0, HM_E_INVALID, HM_E_EXISTS,
 * HM_E_NOMEM, or -errno when the socket cannot be made. Any thread. Since 0.1.
 */
HM_API int hm_server_new(hm_server **out, hm_instance *inst, const char *socket_path,
                         hm_error **err);
/**
 * hm_server_free: stops serving, waits for requests in flight, removes the socket file. Accepts
 * NULL. Call it before freeing the instance it serves; any thread except the server's own (not
 * from a callback the server runs). Since 0.1.
 */
HM_API void hm_server_free(hm_server *srv);

HM_END_DECLS

#endif
