/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_ERROR_H
#define HOTMOUNT_ERROR_H

#include <hotmount/common.h>

HM_BEGIN_DECLS

/*
 * Error model. Every fallible call returns int: 0 on success, or a negative
 * code. Where an errno fits, the code is -errno (so strerror(-code) reads
 * well); the library's own conditions use the HM_E_* values below 0 that are
 * outside the errno range. Fallible calls take an optional last argument
 * `hm_error **err`: when non-NULL and the call fails, *err receives a new error
 * object (free it with hm_error_free) whose message starts with the name of the
 * function that failed. There is no thread-local "last error".
 */

/* Codes, as negative numbers. The errno-backed ones are spelt out so the header
 * needs no <errno.h> and FFI users can read them. Values are Linux errnos. */
#define HM_E_INVALID (-22)     /* -EINVAL: bad input (request, path, option) */
#define HM_E_NOMEM (-12)       /* -ENOMEM */
#define HM_E_EXISTS (-17)      /* -EEXIST: mount point already in use */
#define HM_E_NOT_FOUND (-2)    /* -ENOENT: no such mount */
#define HM_E_NO_SLOT (-28)     /* -ENOSPC: no free hot-plug slot */
#define HM_E_NOT_READY (-107)  /* -ENOTCONN: VM, QMP or agent not reachable */
#define HM_E_TIMEOUT (-110)    /* -ETIMEDOUT */
#define HM_E_IO (-5)           /* -EIO */
#define HM_E_PERM (-1)         /* -EPERM: caller not allowed */
#define HM_E_UNSUPPORTED (-95) /* -EOPNOTSUPP: transport/backend cannot do it */
#define HM_E_BUSY (-16)        /* -EBUSY: operation in progress on that mount */
#define HM_E_PROTOCOL (-4001)  /* a peer (QMP, agent, HTTP) sent something malformed */
#define HM_E_QMP (-4002)       /* QEMU answered a command with an error */
#define HM_E_AGENT (-4003)     /* the guest agent reported a failure */
#define HM_E_HELPER (-4004)    /* a helper process (virtiofsd, ...) failed */
#define HM_E_INTERNAL (-4005)  /* a bug; please report */
#define HM_E_AUTH (-4006) /* SSH: the guest's host key is not trusted, or our login was refused */

/*
 * Classes (as libgit2's error class): which layer or peer an error comes from, so that a caller
 * decides by (code, class) and never by reading the message. hm_error_detail adds the peer's own
 * name for the condition where the peer has one (QMP: the error class QEMU sent). Classes are
 * stable numbers; hm_error_class_name gives the lower-case name the HTTP API carries.
 */
#define HM_ECLASS_NONE 0    /* unclassified: the library's own condition */
#define HM_ECLASS_INPUT 1   /* the caller's input: a request, path, option or instance name */
#define HM_ECLASS_OS 2      /* the host: a system call or allocation failed */
#define HM_ECLASS_QMP 3     /* QEMU's monitor; detail: QEMU's class ("DeviceNotFound") */
#define HM_ECLASS_AGENT 4   /* the guest agent or its channel */
#define HM_ECLASS_HELPER 5  /* a helper process (virtiofsd, diod, sftp-server) */
#define HM_ECLASS_SSH 6     /* the SSH link to the guest (reverse-sshfs) */
#define HM_ECLASS_HTTP 7    /* reaching hotmountd over its socket, or its HTTP routing */
#define HM_ECLASS_MOUNT 8   /* the mount registry: no such mount, mount point in use, busy */
#define HM_ECLASS_BACKEND 9 /* a backend's own error (hm_error_set in driver.h) */
#define HM_ECLASS_LAST HM_ECLASS_BACKEND

typedef struct hm_error hm_error;

/**
 * hm_error_code: the error's code, one of the negative HM_E_* values (equal to what the failing
 * call returned); 0 for NULL. err: borrowed. Any thread. Since 0.1.
 */
HM_API int hm_error_code(const hm_error *err);

/**
 * hm_error_class: the error's class, one of HM_ECLASS_*; HM_ECLASS_NONE for NULL or an
 * unclassified error. An error passed up through several layers keeps the class of where it
 * started (a QMP failure reported by hm_instance_add is still HM_ECLASS_QMP), also across the
 * HTTP API (hm_client_*). err: borrowed. Any thread. Since 0.1.
 */
HM_API int hm_error_class(const hm_error *err);

/**
 * hm_error_detail: the peer's own identifier for the condition, when it sent one: for
 * HM_ECLASS_QMP the QMP error class ("DeviceNotFound", "GenericError", ...). NULL when there is
 * none or err is NULL. Owned by err, lives until hm_error_free. Any thread. Since 0.1.
 */
HM_API const char *hm_error_detail(const hm_error *err);

/**
 * hm_error_class_name: the lower-case name of an HM_ECLASS_* value ("qmp", "agent", ...), as the
 * HTTP API's error bodies carry it; "none" for HM_ECLASS_NONE and unknown values. Static string,
 * never NULL. Any thread. Since 0.1.
 */
HM_API const char *hm_error_class_name(int klass);

/**
 * hm_error_message: the error's message, starting with the name of the function that failed
 * ("hm_instance_add: ..."); "" for NULL. The string is owned by err and lives until hm_error_free.
 * Any thread. Since 0.1.
 */
HM_API const char *hm_error_message(const hm_error *err);

/**
 * hm_error_free: frees err (an error a call stored in *err); accepts NULL. Any thread, once per
 * error. Since 0.1.
 */
HM_API void hm_error_free(hm_error *err);

/**
 * hm_strerror: a short static description of a code ("no free hot-plug slot").
 * Never NULL. Any thread. Since 0.1.
 */
HM_API const char *hm_strerror(int code);

/**
 * hm_free: frees a buffer the library returned for the caller to free (the strings of
 * hm_status_to_json, hm_mount_to_json, hm_mount_list_to_json, hm_instance_dir_resolve, ...);
 * accepts NULL. Use it rather than free() from other languages: the free() they can reach need
 * not be the library's allocator. From C, free() is the same. Any thread. Since 0.1.
 */
HM_API void hm_free(void *p);

HM_END_DECLS

#endif
