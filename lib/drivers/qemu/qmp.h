/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP client (internal). One connection to QEMU's QMP unix socket.
 *
 * Thread model: a private reader thread owns the socket's read side; it
 * parses the stream, wakes the caller waiting for a reply (matched by "id"),
 * and records events in a bounded history (last 256) with a sequence number,
 * then calls the event callback (on the reader thread). hm_qmp_execute and
 * hm_qmp_wait_event may be called from any threads concurrently.
 */
#ifndef HM_QMP_H
#define HM_QMP_H

#include "private.h"
#include <json-c/json.h>
#include <sys/types.h>

typedef struct hm_qmp hm_qmp;

/* Called on the reader thread for each event; data may be NULL. Must not call
 * hm_qmp_execute (it would deadlock nothing, but would block the reader).
 * data is borrowed for the call: json-c reference counts are not atomic, so
 * keep a json_object_deep_copy, not a json_object_get, to use it elsewhere. */
typedef void (*hm_qmp_event_fn)(const char *event, json_object *data, void *user_data);

/* Connects, reads the greeting, sends qmp_capabilities. */
HM_PRIVATE int hm_qmp_connect(hm_qmp **out, const char *socket_path, int timeout_ms,
                              hm_error **err);
/* Same over an already connected stream socket fd (taken over; closed on failure). */
HM_PRIVATE int hm_qmp_connect_fd(hm_qmp **out, int fd, int timeout_ms, hm_error **err);
/* Closes the connection; wakes any waiters with HM_E_NOT_READY; joins the reader. */
HM_PRIVATE void hm_qmp_free(hm_qmp *q);

/*
 * Runs `command` with `args` (borrowed; may be NULL). When fd >= 0 it is sent
 * with the command as SCM_RIGHTS ancillary data (for getfd/add-fd); the fd
 * stays owned by the caller. On success, *out_return (if non-NULL) gets a new
 * reference to the "return" member. An {"error": {class, desc}} reply gives
 * HM_E_QMP, class HM_ECLASS_QMP, detail CLASS (hm_qmp_error_is), and
 * "COMMAND: CLASS: DESC" in the message; a closed connection
 * HM_E_NOT_READY; no reply within timeout_ms HM_E_TIMEOUT (the late reply
 * is then dropped when it arrives).
 */
HM_PRIVATE int hm_qmp_execute(hm_qmp *q, const char *command, json_object *args, int fd,
                              json_object **out_return, int timeout_ms, hm_error **err);

/* The sequence number the next event will get. Take it before issuing the
 * command whose event you wait for, so an event arriving before the reply is
 * not missed. */
HM_PRIVATE uint64_t hm_qmp_event_seq(hm_qmp *q);

/*
 * Waits for an event named `event` with sequence >= since whose data
 * satisfies match (NULL: any). *out_data (if non-NULL) gets a new reference to
 * the event's "data" (or NULL). HM_E_TIMEOUT after timeout_ms; HM_E_NOT_READY
 * when the connection closes first.
 */
HM_PRIVATE int hm_qmp_wait_event(hm_qmp *q, const char *event, uint64_t since,
                                 int (*match)(json_object *data, void *ud), void *ud,
                                 json_object **out_data, int timeout_ms, hm_error **err);

/* Sets the event callback (replacing and destroying the previous one). */
HM_PRIVATE void hm_qmp_set_event_callback(hm_qmp *q, hm_qmp_event_fn fn, void *ud,
                                          void (*destroy)(void *));

/* Non-zero while the connection is up. */
HM_PRIVATE int hm_qmp_is_connected(hm_qmp *q);

/* The uid QEMU runs as (SO_PEERCRED of the QMP socket): 0, or -1. */
HM_PRIVATE int hm_qmp_peer_uid(hm_qmp *q, uid_t *uid);
/* The pid of QEMU (the QMP socket's peer), as SO_PEERCRED says; -1 if unknown. */
HM_PRIVATE int hm_qmp_peer_pid(hm_qmp *q, pid_t *pid);

/* qmp_util.c: idioms on a connected client. */
/* 1 when an object of the reply array has member key == value, else 0. */
HM_PRIVATE int hm_qmp_reply_has(json_object *arr, const char *key, const char *value);
/* Does QEMU list name under key in cmd's reply ("qom-list" of
 * /machine/peripheral by "name", "query-chardev" by "label")? 1/0, or <0. */
HM_PRIVATE int hm_qmp_has(hm_qmp *c, const char *cmd, const char *key, const char *name,
                          hm_error **err);
/* device_del dev and wait for its DEVICE_DELETED; 0 when it was not there.
 * HM_E_TIMEOUT when the guest (or QEMU) did not let go in timeout_ms. */
HM_PRIVATE int hm_qmp_device_del(hm_qmp *c, const char *dev, int timeout_ms, hm_error **err);
/* QEMU answered with an error of QMP class qmp_class ("DeviceNotFound"). */
HM_PRIVATE int hm_qmp_error_is(const hm_error *e, const char *qmp_class);
/*
 * chardev-remove of id; 0 also when QEMU has no such chardev. QEMU 7.2
 * answers a missing id with GenericError (unlike device_del's
 * DeviceNotFound), so "gone" is decided by query-chardev, not by the text.
 */
HM_PRIVATE int hm_qmp_chardev_remove(hm_qmp *c, const char *id, hm_error **err);

#endif
