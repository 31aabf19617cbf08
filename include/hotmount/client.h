/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_CLIENT_H
#define HOTMOUNT_CLIENT_H

#include <hotmount/common.h>
#include <hotmount/error.h>
#include <hotmount/mount.h>

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

HM_END_DECLS

#endif
