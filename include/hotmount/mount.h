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
/* A guest bind mount of a directory the guest already has through a boot-time
 * share (virtiofs, 9p, WSL2's drvfs): no host device (hm_bind_hotplugger_new). */
#define HM_TYPE_BIND 4

/**
 * hm_mount_type_name: "virtiofs", "9p", "reverse-sshfs" or "bind" for an HM_TYPE_*; NULL for an
 * unknown type. Static string. Any thread. Since 0.1.
 */
HM_API const char *hm_mount_type_name(int type);

/**
 * hm_mount_type_parse: parses a type name (as above); returns the HM_TYPE_* (positive), or
 * HM_E_INVALID naming the bad value. Any thread. Since 0.1.
 */
HM_API int hm_mount_type_parse(const char *name, hm_error **err);

/* ---------------------------------------------------------------------------
 * hm_mount_spec: what a caller asks for. Opaque; built with setters so FFI
 * users need no struct layout. Not thread-safe: one thread at a time.
 */
typedef struct hm_mount_spec hm_mount_spec;

/**
 * hm_mount_spec_new: a new spec with defaults: type virtiofs, read-only, not persistent, no paths,
 * no options. *out: free with hm_mount_spec_free. Returns 0 or HM_E_NOMEM. Any thread. Since 0.1.
 */
HM_API int hm_mount_spec_new(hm_mount_spec **out, hm_error **err);
/**
 * hm_mount_spec_copy: a deep copy of spec in *out (free with hm_mount_spec_free). Returns 0,
 * HM_E_INVALID or HM_E_NOMEM. Reads spec: not while another thread changes it. Since 0.1.
 */
HM_API int hm_mount_spec_copy(hm_mount_spec **out, const hm_mount_spec *spec, hm_error **err);
/** hm_mount_spec_free: frees spec; accepts NULL. Not while another thread uses spec. Since 0.1. */
HM_API void hm_mount_spec_free(hm_mount_spec *spec);

/**
 * hm_mount_spec_set_host_path: the host directory to share (copied). Checked by
 * hm_mount_spec_validate, not here. Returns 0, HM_E_INVALID (NULL argument) or HM_E_NOMEM. One
 * thread at a time per spec (all setters). Since 0.1.
 */
HM_API int hm_mount_spec_set_host_path(hm_mount_spec *spec, const char *path, hm_error **err);
/**
 * hm_mount_spec_set_guest_path: the absolute mount point in the guest (copied; checked by
 * validation). Returns 0, HM_E_INVALID or HM_E_NOMEM. One thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_guest_path(hm_mount_spec *spec, const char *path, hm_error **err);
/**
 * hm_mount_spec_set_type: one of HM_TYPE_*. Returns 0, or HM_E_INVALID for another value. One
 * thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_type(hm_mount_spec *spec, int type, hm_error **err);
/**
 * hm_mount_spec_set_writable: non-zero lets the guest write (default 0: read-only, enforced on the
 * host; for HM_TYPE_BIND only by the guest mount flag, see docs/security.md). Returns 0 or
 * HM_E_INVALID (spec NULL). One thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_writable(hm_mount_spec *spec, int writable, hm_error **err);
/**
 * hm_mount_spec_set_persist: non-zero: mount it again when the guest reboots (the device stays
 * plugged); otherwise a guest reboot ends the mount and the host side is cleaned up. Default 0.
 * Returns 0 or HM_E_INVALID. One thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_persist(hm_mount_spec *spec, int persist, hm_error **err);
/**
 * hm_mount_spec_set_notify: non-zero: watch the host directory and show its changes (create,
 * modify, attribute changes, deletes as a change of the parent directory) to file watchers in
 * the guest (inotify there), see docs/architecture.md "Change notification". Default 0. Needs
 * Linux inotify on the host and, except for reverse-sshfs, a guest agent with the "notify"
 * capability. Returns 0 or HM_E_INVALID. One thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_notify(hm_mount_spec *spec, int notify, hm_error **err);
/**
 * hm_mount_spec_set_option: transport option key = value (both copied; value NULL removes key),
 * e.g. ("msize", "262144") for 9p. Unknown keys for the spec's type are rejected by validation,
 * not here. Returns 0, HM_E_INVALID or HM_E_NOMEM. One thread at a time per spec. Since 0.1.
 */
HM_API int hm_mount_spec_set_option(hm_mount_spec *spec, const char *key, const char *value,
                                    hm_error **err);

/**
 * hm_mount_spec_get_host_path: the host path, or NULL if unset; borrowed from spec (valid until it
 * changes or is freed). Not while another thread changes spec. Since 0.1.
 */
HM_API const char *hm_mount_spec_get_host_path(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_guest_path: the guest path, or NULL if unset; borrowed from spec. Not while
 * another thread changes spec. Since 0.1.
 */
HM_API const char *hm_mount_spec_get_guest_path(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_type: the HM_TYPE_* (0 for NULL). Not while another thread changes spec.
 * Since 0.1.
 */
HM_API int hm_mount_spec_get_type(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_writable: 1 when writable, else 0. Not while another thread changes spec.
 * Since 0.1.
 */
HM_API int hm_mount_spec_get_writable(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_persist: 1 when persistent, else 0. Not while another thread changes spec.
 * Since 0.1.
 */
HM_API int hm_mount_spec_get_persist(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_notify: 1 when change notification is asked for, else 0. Not while another
 * thread changes spec. Since 0.1.
 */
HM_API int hm_mount_spec_get_notify(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_option: the value of option key, or NULL; borrowed from spec. Not while
 * another thread changes spec. Since 0.1.
 */
HM_API const char *hm_mount_spec_get_option(const hm_mount_spec *spec, const char *key);
/**
 * hm_mount_spec_get_option_count: how many options spec has (0 for NULL); with
 * hm_mount_spec_get_option_key, how a backend's validate op walks them to refuse the ones it does
 * not know. Not while another thread changes spec. Since 0.1.
 */
HM_API size_t hm_mount_spec_get_option_count(const hm_mount_spec *spec);
/**
 * hm_mount_spec_get_option_key: the key of option i (0 <= i < count), or NULL past the end;
 * borrowed from spec, valid until spec changes. Not while another thread changes spec. Since 0.1.
 */
HM_API const char *hm_mount_spec_get_option_key(const hm_mount_spec *spec, size_t i);

/**
 * hm_mount_spec_validate: checks the spec and normalizes it in place. The host path must exist and
 * be a directory; it is replaced by its canonical path (symlinks resolved). The guest path must be
 * absolute, is normalized (no "//", "." or ".." components; "..": rejected), and must not be a
 * system path ("/", "/proc", "/etc", ...). Paths must be valid UTF-8, contain no control
 * characters, and fit PATH_MAX; so must option values. Which options a type takes is the rule of
 * the backend that attaches it (its validate op), which hm_instance_add applies after this. Returns
 * 0 or HM_E_INVALID with a message naming the problem (HM_E_NOMEM). hm_instance_add validates a
 * copy itself; call this to check input early. One thread at a time per spec. Since 0.1.
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

/**
 * hm_mount_free: frees a snapshot the caller owns (from add, hm_mount_copy, an out parameter);
 * accepts NULL. Never for a mount borrowed from a list or a callback. Any thread, once no other
 * thread reads m. Since 0.1.
 */
HM_API void hm_mount_free(hm_mount *m);
/**
 * hm_mount_copy: a copy of m in *out (free with hm_mount_free), e.g. to keep a mount a callback or
 * list lends. Returns 0, HM_E_INVALID or HM_E_NOMEM. Any thread: snapshots are immutable.
 * Since 0.1.
 */
HM_API int hm_mount_copy(hm_mount **out, const hm_mount *m, hm_error **err);
/**
 * hm_mount_get_id: stable identifier within the instance, e.g. "hm-3"; borrowed from m. All
 * hm_mount_get_* accept only a valid m, return strings borrowed from it (valid until it is freed),
 * and may be called from any thread. Since 0.1.
 */
HM_API const char *hm_mount_get_id(const hm_mount *m);
/** hm_mount_get_host_path: the canonical host directory; borrowed. Any thread. Since 0.1. */
HM_API const char *hm_mount_get_host_path(const hm_mount *m);
/** hm_mount_get_guest_path: the normalized guest mount point; borrowed. Any thread. Since 0.1. */
HM_API const char *hm_mount_get_guest_path(const hm_mount *m);
/** hm_mount_get_type: the HM_TYPE_*. Any thread. Since 0.1. */
HM_API int hm_mount_get_type(const hm_mount *m);
/** hm_mount_get_writable: 1 when the guest may write, else 0. Any thread. Since 0.1. */
HM_API int hm_mount_get_writable(const hm_mount *m);
/**
 * hm_mount_get_persist: 1 when the mount survives guest reboots (see hm_mount_spec_set_persist),
 * else 0. Any thread. Since 0.1.
 */
HM_API int hm_mount_get_persist(const hm_mount *m);
/**
 * hm_mount_get_notify: 1 when host changes are shown to guest file watchers (see
 * hm_mount_spec_set_notify), else 0. Any thread. Since 0.1.
 */
HM_API int hm_mount_get_notify(const hm_mount *m);
/** hm_mount_get_state: one of HM_STATE_* when the snapshot was taken. Any thread. Since 0.1. */
HM_API int hm_mount_get_state(const hm_mount *m);
/**
 * hm_mount_state_name: "attaching", "mounted", "detaching", "broken"; NULL for another value
 * (HM_STATE_REMOVED included). Static string. Any thread. Since 0.1.
 */
HM_API const char *hm_mount_state_name(int state);
/**
 * hm_mount_get_tag: the tag (virtiofs) or port (9p) the guest mounts, or for bind the guest
 * directory (inside a boot-time share) that is bind-mounted; NULL before the backend attached.
 * Borrowed. Any thread. Since 0.1.
 */
HM_API const char *hm_mount_get_tag(const hm_mount *m);
/**
 * hm_mount_get_via: how the backend carries the mount, when it says: for 9p on QEMU "pci" (a
 * reserved 9p slot: a virtio-9p-pci device) or "serial" (a virtio-serial port served by diod);
 * NULL otherwise. Borrowed. Any thread. Since 0.1.
 */
HM_API const char *hm_mount_get_via(const hm_mount *m);
/** hm_mount_get_reason: why the mount is broken, or NULL; borrowed. Any thread. Since 0.1. */
HM_API const char *hm_mount_get_reason(const hm_mount *m);

/** A list of mounts; owns its elements. Since 0.1. */
typedef struct hm_mount_list hm_mount_list;
/**
 * hm_mount_list_count: number of mounts in l (0 for NULL). Any thread: lists are immutable.
 * Since 0.1.
 */
HM_API size_t hm_mount_list_count(const hm_mount_list *l);
/**
 * hm_mount_list_get: element i, borrowed from l (valid until hm_mount_list_free; hm_mount_copy to
 * keep it), or NULL when out of range. Any thread. Since 0.1.
 */
HM_API const hm_mount *hm_mount_list_get(const hm_mount_list *l, size_t i);
/**
 * hm_mount_list_free: frees l and its elements; accepts NULL. Any thread, once no other thread
 * reads l. Since 0.1.
 */
HM_API void hm_mount_list_free(hm_mount_list *l);

/**
 * hm_mount_list_to_json: the HTTP API's JSON array of l ({id, hostPath, mountPoint, type,
 * writable, persist, state, tag, reason} each). *out is malloc'd; free with hm_free (or free() from
 * C). Returns 0, HM_E_INVALID or HM_E_NOMEM. Any thread. Since 0.1.
 */
HM_API int hm_mount_list_to_json(char **out, const hm_mount_list *l, hm_error **err);
/**
 * hm_mount_to_json: the same JSON object for one mount. *out is malloc'd; free with hm_free (or
 * free() from C). Returns 0, HM_E_INVALID or HM_E_NOMEM. Any thread. Since 0.1.
 */
HM_API int hm_mount_to_json(char **out, const hm_mount *m, hm_error **err);

HM_END_DECLS

#endif
