/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_MOUNT_H
#define HOTMOUNT_MOUNT_H

#include <hotmount/common.h>
#include <hotmount/error.h>

HM_BEGIN_DECLS

/* Transports. Plain ints, not an enum, so their size is fixed across compilers
 * and FFI bindings. */
#define HM_TYPE_VIRTIOFS 1
#define HM_TYPE_9P 2
#define HM_TYPE_REVERSE_SSHFS 3

/** "virtiofs", "9p", "reverse-sshfs"; NULL for an unknown type. Since 0.1. */
HM_API const char *hm_mount_type_name(int type);

/** Parses a type name (as above); returns the HM_TYPE_* or HM_E_INVALID. Since 0.1. */
HM_API int hm_mount_type_parse(const char *name, hm_error **err);

/* ---------------------------------------------------------------------------
 * hm_mount_spec: what a caller asks for. Opaque; built with setters so FFI
 * users need no struct layout. Not thread-safe: one thread at a time.
 */
typedef struct hm_mount_spec hm_mount_spec;

/** New spec with defaults: type virtiofs, read-only. Since 0.1. */
HM_API int hm_mount_spec_new(hm_mount_spec **out, hm_error **err);
/** Deep copy. Since 0.1. */
HM_API int hm_mount_spec_copy(hm_mount_spec **out, const hm_mount_spec *spec, hm_error **err);
/** Frees spec; accepts NULL. Since 0.1. */
HM_API void hm_mount_spec_free(hm_mount_spec *spec);

/** Host directory to share (copied). Validated by hm_mount_spec_validate. Since 0.1. */
HM_API int hm_mount_spec_set_host_path(hm_mount_spec *spec, const char *path, hm_error **err);
/** Absolute guest mount point (copied). Since 0.1. */
HM_API int hm_mount_spec_set_guest_path(hm_mount_spec *spec, const char *path, hm_error **err);
/** One of HM_TYPE_*. Since 0.1. */
HM_API int hm_mount_spec_set_type(hm_mount_spec *spec, int type, hm_error **err);
/** Non-zero: guest may write (enforced on the host). Default 0. Since 0.1. */
HM_API int hm_mount_spec_set_writable(hm_mount_spec *spec, int writable, hm_error **err);
/**
 * Non-zero: mount it again when the guest reboots (the device stays plugged);
 * otherwise a guest reboot ends the mount and the host side is cleaned up.
 * Default 0. Since 0.1.
 */
HM_API int hm_mount_spec_set_persist(hm_mount_spec *spec, int persist, hm_error **err);
/**
 * Transport option "key" = "value" (copied), e.g. ("msize", "262144") for 9p.
 * Unknown keys for the spec's type are rejected by validation, not here.
 * Since 0.1.
 */
HM_API int hm_mount_spec_set_option(hm_mount_spec *spec, const char *key, const char *value,
                                    hm_error **err);

HM_API const char *hm_mount_spec_get_host_path(const hm_mount_spec *spec);
HM_API const char *hm_mount_spec_get_guest_path(const hm_mount_spec *spec);
HM_API int hm_mount_spec_get_type(const hm_mount_spec *spec);
HM_API int hm_mount_spec_get_writable(const hm_mount_spec *spec);
HM_API int hm_mount_spec_get_persist(const hm_mount_spec *spec);
/** Value of option key, or NULL. Since 0.1. */
HM_API const char *hm_mount_spec_get_option(const hm_mount_spec *spec, const char *key);

/**
 * hm_mount_spec_validate: checks the spec and normalizes it in place. The host
 * path must exist and be a directory; it is replaced by its canonical path
 * (symlinks resolved). The guest path must be absolute, is normalized (no
 * "//", "." or ".." components; "..": rejected), and must not be a system
 * path ("/", "/proc", "/etc", ...). Paths must be valid UTF-8, contain no
 * control characters, and fit PATH_MAX. Options must be known for the type.
 * Returns 0 or HM_E_INVALID with a message naming the problem. Since 0.1.
 */
HM_API int hm_mount_spec_validate(hm_mount_spec *spec, hm_error **err);

/* ---------------------------------------------------------------------------
 * hm_mount: a snapshot of one registered mount (returned by list/add). Opaque,
 * immutable, owned by the caller (free with hm_mount_free).
 */
typedef struct hm_mount hm_mount;

#define HM_STATE_ATTACHING 1
#define HM_STATE_MOUNTED 2
#define HM_STATE_DETACHING 3
#define HM_STATE_BROKEN 4

HM_API void hm_mount_free(hm_mount *m);
HM_API int hm_mount_copy(hm_mount **out, const hm_mount *m, hm_error **err);
/** Stable identifier, e.g. "hm-3". Since 0.1. */
HM_API const char *hm_mount_get_id(const hm_mount *m);
HM_API const char *hm_mount_get_host_path(const hm_mount *m);
HM_API const char *hm_mount_get_guest_path(const hm_mount *m);
HM_API int hm_mount_get_type(const hm_mount *m);
HM_API int hm_mount_get_writable(const hm_mount *m);
/** Non-zero when the mount survives guest reboots (see hm_mount_spec_set_persist). Since 0.1. */
HM_API int hm_mount_get_persist(const hm_mount *m);
/** One of HM_STATE_*. Since 0.1. */
HM_API int hm_mount_get_state(const hm_mount *m);
/** "attaching", "mounted", "detaching", "broken"; NULL if unknown. Since 0.1. */
HM_API const char *hm_mount_state_name(int state);
/** The tag (virtiofs) or port (9p) the guest uses; may be NULL. Since 0.1. */
HM_API const char *hm_mount_get_tag(const hm_mount *m);
/** Why the mount is broken, or NULL. Since 0.1. */
HM_API const char *hm_mount_get_reason(const hm_mount *m);

/** A list of mounts; owns its elements. Since 0.1. */
typedef struct hm_mount_list hm_mount_list;
HM_API size_t hm_mount_list_count(const hm_mount_list *l);
/** Element i (borrowed from l), or NULL when out of range. Since 0.1. */
HM_API const hm_mount *hm_mount_list_get(const hm_mount_list *l, size_t i);
HM_API void hm_mount_list_free(hm_mount_list *l);

/**
 * hm_mount_list_to_json / hm_mount_to_json: the HTTP API's JSON form
 * ({id, hostPath, mountPoint, type, writable, persist, state, tag, reason}). *out is
 * malloc'd; free with free(). Since 0.1.
 */
HM_API int hm_mount_list_to_json(char **out, const hm_mount_list *l, hm_error **err);
HM_API int hm_mount_to_json(char **out, const hm_mount *m, hm_error **err);

HM_END_DECLS

#endif
