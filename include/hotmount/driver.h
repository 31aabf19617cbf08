/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_DRIVER_H
#define HOTMOUNT_DRIVER_H

/*
 * The backend authors' API: the driver-agnostic fs_hotplugger vtable.
 *
 * A backend makes a host directory appear as a device (or a spare device's
 * share) in a running VM and says which tag the guest must mount. It does not
 * mount anything in the guest: the library's instance does that through the
 * guest agent, after attach returns.
 *
 * Two backends ship: QEMU over QMP (hm_qemu_hotplugger_new) and Apple
 * Virtualization.framework (reserved spare virtio-fs devices whose share is
 * swapped at run time: attach picks a free spare and returns its boot-time
 * tag, "hotmount-3"; detach clears the share).
 */

#include <hotmount/common.h>
#include <hotmount/error.h>
#include <hotmount/log.h>
#include <hotmount/mount.h>
#include <hotmount/status.h>

HM_BEGIN_DECLS

#if defined(__GNUC__) || defined(__clang__)
#define HM_FORMAT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HM_FORMAT_PRINTF(a, b)
#endif

/**
 * hm_error_set: the backend's way to fail an op. When err is non-NULL and *err is NULL, stores a
 * new error with code (a negative HM_E_* value) and the printf-formatted message (start it with
 * your backend's name, "mybackend: ..."), class HM_ECLASS_BACKEND (or the class code implies:
 * HM_E_QMP is HM_ECLASS_QMP, ...); an error already in *err is kept. Returns code, so an op can
 * `return hm_error_set(err, HM_E_IO, "mybackend: cannot open %s", path);`. Out of memory leaves a
 * static "out of memory" error. Any thread. Since 0.1.
 */
HM_API int hm_error_set(hm_error **err, int code, const char *fmt, ...) HM_FORMAT_PRINTF(3, 4);

/**
 * hm_error_set_class: hm_error_set with an explicit class (HM_ECLASS_*; out of range: the class
 * code implies) and detail, the peer's own identifier for the condition (copied; NULL for none),
 * which callers read with hm_error_detail. Same return, ownership and thread rules. Since 0.1.
 */
HM_API int hm_error_set_class(hm_error **err, int code, int klass, const char *detail,
                              const char *fmt, ...) HM_FORMAT_PRINTF(5, 6);

/**
 * hm_log: writes one line to the library's log (see hm_set_log_callback in log.h) at level
 * (HM_LOG_*), printf-formatted; dropped when above the callback's max_level or with no callback.
 * Lines are rate-limited per format string (a burst of 20, then 5 a second), so a peer that
 * repeats one failure cannot flood the log; control characters are escaped. Never fails. Any
 * thread, also inside ops. Since 0.1.
 */
HM_API void hm_log(int level, const char *fmt, ...) HM_FORMAT_PRINTF(2, 3);

/**
 * hm_alloc: n zeroed elements of size bytes from the library's allocator, for what a backend
 * hands to the library to free (check's reason, scan's array); NULL when out of memory or when
 * n * size overflows. Free with hm_free. Any thread. Since 0.1.
 */
HM_API void *hm_alloc(size_t n, size_t size);
/**
 * hm_strdup: a copy of s from the library's allocator (free with hm_free), for check's reason;
 * NULL when s is NULL or out of memory. Any thread. Since 0.1.
 */
HM_API char *hm_strdup(const char *s);

/**
 * hm_attachment: the library-owned record of one attach. The backend fills it
 * during attach (the tag the guest mounts, plus private key/value data it needs
 * to detach, persisted in the instance's state file so a restarted daemon can
 * still detach).
 */
typedef struct hm_attachment hm_attachment;

/**
 * hm_attachment_new: a new, empty attachment for mount id (copied). The library makes them for
 * attach; backends make them in scan. *out: free with hm_attachment_free (or hand it over as
 * scan's result). Returns 0, HM_E_INVALID (NULL or empty id) or HM_E_NOMEM. Any thread; an
 * attachment is used by one thread at a time. Since 0.1.
 */
HM_API int hm_attachment_new(hm_attachment **out, const char *id, hm_error **err);
/**
 * hm_attachment_free: frees att; accepts NULL. Backends never free the attachments the library
 * passes them. Not while another thread uses att. Since 0.1.
 */
HM_API void hm_attachment_free(hm_attachment *att);
/**
 * hm_attachment_get_id: the mount's id ("hm-3"), unique within the instance and usable in device
 * ids; borrowed from att. Same thread rule as att. Since 0.1.
 */
HM_API const char *hm_attachment_get_id(const hm_attachment *att);
/**
 * hm_attachment_set_tag: sets the tag the guest must mount (virtiofs tag, or 9p port name);
 * copied. Returns 0, HM_E_INVALID or HM_E_NOMEM. Called by the backend inside attach, on its
 * thread. Since 0.1.
 */
HM_API int hm_attachment_set_tag(hm_attachment *att, const char *tag, hm_error **err);
/**
 * hm_attachment_get_tag: the tag, or NULL before one was set; borrowed from att. Same thread rule
 * as att. Since 0.1.
 */
HM_API const char *hm_attachment_get_tag(const hm_attachment *att);
/**
 * hm_attachment_set_data: backend-private data key = value (both copied; value NULL removes key),
 * persisted in the state file so that detach works after a daemon restart. The library reads only
 * these keys, all documented at the op that sets them: "guestOptions", "guestTransport" and "via"
 * (attach), "hostPath" and "writable" (scan); every other key is the backend's alone. Returns 0,
 * HM_E_INVALID (att or key NULL) or HM_E_NOMEM. The backend's thread inside an op. Since 0.1.
 */
HM_API int hm_attachment_set_data(hm_attachment *att, const char *key, const char *value,
                                  hm_error **err);
/**
 * hm_attachment_get_data: backend-private data for key, or NULL; borrowed from att. Same thread
 * rule as att. Since 0.1.
 */
HM_API const char *hm_attachment_get_data(const hm_attachment *att, const char *key);

/**
 * hm_attachment_set_type: which kind of mount att is (HM_TYPE_*). The library sets it before
 * attach (from the spec) and when it loads its records; a backend sets it on what scan finds, so
 * the library can adopt the mount with the right type. Returns 0 or HM_E_INVALID (NULL att, or
 * not an HM_TYPE_* value). Same thread rule as att. Since 0.1.
 */
HM_API int hm_attachment_set_type(hm_attachment *att, int type, hm_error **err);
/**
 * hm_attachment_get_type: att's HM_TYPE_*, or 0 when unknown (a record of an older version, or a
 * scanned attachment the backend did not type). Same thread rule as att. Since 0.1.
 */
HM_API int hm_attachment_get_type(const hm_attachment *att);
/**
 * hm_attachment_set_retired: for detach only: the backend cannot release the attachment's device
 * now without harm (QEMU: its virtiofsd died, and unplugging would hang the guest), so it stays in
 * the VM until the VM restarts. detach then returns 0 having done nothing; the mount leaves the
 * list and the library keeps a hidden record (the device still takes its slot) until check says
 * HM_CHECK_GONE. reason (copied) is a sentence for the log and the mount's reason. Returns 0,
 * HM_E_INVALID (NULL or empty argument) or HM_E_NOMEM. The thread running detach. Since 0.1.
 */
HM_API int hm_attachment_set_retired(hm_attachment *att, const char *reason, hm_error **err);
/**
 * hm_attachment_get_retired: the reason hm_attachment_set_retired stored, or NULL; borrowed from
 * att. Same thread rule as att. Since 0.1.
 */
HM_API const char *hm_attachment_get_retired(const hm_attachment *att);

/**
 * hm_fs_hotplugger_ops: the vtable. Growable: set struct_size to
 * sizeof(hm_fs_hotplugger_ops) as your headers see it; the library copies
 * min(struct_size, its own size) and treats missing members as NULL, so a
 * backend built against older headers keeps working.
 *
 * Threads: the library calls attach/detach from the thread that runs the
 * instance operation (any thread), never two calls on the same attachment at
 * once, but calls for different attachments may run concurrently: protect
 * shared backend state.
 */
typedef struct hm_fs_hotplugger_ops {
  size_t struct_size;
  /** Short backend name, "qemu", "vz". Static string. */
  const char *name;
  /** Bitmask of (1u << HM_TYPE_*) this backend attaches. */
  unsigned types;
  /**
   * attach: make spec's host directory available to the guest; set the tag on
   * att (virtiofs: the tag; 9p: the virtio-serial port name the guest agent
   * opens, or the 9p tag). Data keys the library reads: "guestOptions", when
   * set, is passed to the guest mount (9p: "version=9p2000.L,msize=...,
   * cache=..."); "guestTransport" "virtio" makes the guest mount a 9p tag
   * with trans=virtio instead of opening a port; "via", when set, is shown
   * with the mount as how the backend carries it ("pci", "serial"). spec is validated and
   * normalized. On failure the backend must have undone all it did (rollback is the backend's job
   * inside attach) and return a negative code with *err set.
   */
  int (*attach)(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err);
  /**
   * detach: undo a successful attach, after the guest has unmounted. Must be
   * idempotent: called again (e.g. after a daemon restart) it succeeds when
   * there is nothing left to undo.
   */
  int (*detach)(void *impl, hm_attachment *att, hm_error **err);
  /** Optional: free slots for type, or a negative code. */
  int (*free_slots)(void *impl, int type, hm_error **err);
  /** Optional: called once when the hotplugger is freed. */
  void (*destroy)(void *impl);
  /**
   * Optional (since 0.1): adds the backend's facts to a status snapshot with
   * hm_status_set ("qmp", "slotsTotal", readiness checks, ...). Must not wait
   * on the guest.
   */
  int (*describe)(void *impl, hm_status *st, hm_error **err);
  /**
   * Optional (since 0.1): is the attachment whole (every device, helper and
   * connection it needs still there)? HM_CHECK_WHOLE; HM_CHECK_BROKEN or
   * HM_CHECK_GONE with *reason set to a sentence allocated with hm_strdup or
   * hm_alloc (the library frees it with hm_free); negative: could not tell,
   * *err set. Must not wait on the guest.
   */
  int (*check)(void *impl, hm_attachment *att, char **reason, hm_error **err);
  /**
   * Optional (since 0.1): a file descriptor that becomes readable when the
   * attachment breaks (e.g. a pidfd of its helper process), or -1. The
   * library polls it and closes it.
   */
  int (*watch_fd)(void *impl, hm_attachment *att);
  /**
   * Optional (since 0.1): every attachment this instance's backend finds in
   * the VM and on the host, with as much data as it can recover (for
   * reconciliation after a crash or a lost state file). *out is an array of
   * n attachments allocated with hm_alloc; the library takes the array and
   * the attachments. Data keys "hostPath" and "writable" ("0"/"1"), and the
   * type (hm_attachment_set_type), let the library adopt a mount it has no
   * record of.
   */
  int (*scan)(void *impl, hm_attachment ***out, size_t *n, hm_error **err);
  /** Optional (since 0.1): HM_HOTPLUGGER_* flags. */
  unsigned flags;
  /**
   * Optional (since 0.1), for HM_HOTPLUGGER_GUEST_MOUNTS backends: unmount
   * the attachment in the guest (flags: HM_REMOVE_LAZY from instance.h).
   * Called before detach; succeeding when nothing is mounted there.
   */
  int (*guest_umount)(void *impl, hm_attachment *att, unsigned flags, hm_error **err);
  /**
   * Optional (since 0.1): bring a broken attachment back in place (same
   * tag), e.g. after its connection came back. The library calls it for
   * broken --persist mounts (retrying every few seconds) and, after a daemon
   * restart, for mounts whose transport lived in the dead process. Like
   * attach, it undoes its own partial work on failure.
   */
  int (*reattach)(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err);
  /**
   * Optional (since 0.1): the backend's rules for spec before anything is
   * reserved: which options (hm_mount_spec_get_option_count/_key/_option)
   * and values its transport of spec's type takes, and anything else it
   * cannot do. spec has passed hm_mount_spec_validate (paths normalized,
   * option values are text). 0, or HM_E_INVALID (HM_E_UNSUPPORTED) with
   * *err naming the option. Without this op the library refuses every
   * option, so that none is silently ignored. Any thread, concurrently.
   */
  int (*validate)(void *impl, const hm_mount_spec *spec, hm_error **err);
  /**
   * Optional (since 0.1), for HM_HOTPLUGGER_GUEST_MOUNTS backends (which have
   * no guest agent): show n host changes of a --notify mount to the guest's
   * file watchers. kinds[i] is an HM_NOTIFY_* value, paths[i] a path
   * relative to the mount (checked by the library: no "..", not absolute,
   * no control characters). Called on the mount's watcher thread, one call
   * at a time per attachment; it may block for a few seconds at most.
   * Without it, --notify mounts of this backend get their events through the
   * guest agent.
   */
  int (*guest_notify)(void *impl, hm_attachment *att, const int *kinds, const char *const *paths,
                      size_t n, hm_error **err);
} hm_fs_hotplugger_ops;

/* Kinds of host change for guest_notify. */
#define HM_NOTIFY_CREATE 1
#define HM_NOTIFY_MODIFY 2
#define HM_NOTIFY_ATTRIB 3
#define HM_NOTIFY_DELETE 4
#define HM_NOTIFY_RENAME 5 /* paths[i] is the new name; the old one came as a DELETE */

/*
 * Results of the check op. GONE is BROKEN in the strongest form: nothing of the attachment is
 * left in the VM (its device or port is no longer there, e.g. after the VM restarted), so a
 * record kept only for that device can be dropped. Backends that cannot tell return BROKEN.
 */
#define HM_CHECK_BROKEN 0
#define HM_CHECK_WHOLE 1
#define HM_CHECK_GONE 2

/**
 * HM_HOTPLUGGER_GUEST_MOUNTS: the backend itself mounts in the guest (attach
 * returns with the guest mounted) and unmounts there (guest_umount), so the
 * library does not need the guest agent for its mounts (reverse-sshfs: the
 * mount is made over SSH).
 */
#define HM_HOTPLUGGER_GUEST_MOUNTS 1u

/**
 * hm_status_set: sets key to value (both copied; an existing key is replaced) in a status being
 * built, from a backend's describe op. Returns 0, HM_E_INVALID (NULL or empty argument) or
 * HM_E_NOMEM. The thread running describe. Since 0.1.
 */
HM_API int hm_status_set(hm_status *st, const char *key, const char *value, hm_error **err);

typedef struct hm_fs_hotplugger hm_fs_hotplugger;

/**
 * hm_fs_hotplugger_new: wraps a backend. ops is copied (see struct_size; it must reach at least
 * free_slots, and name, attach and detach are required); impl is passed to every op and handed to
 * ops->destroy when the hotplugger is freed, also when this call fails. *out: hand it to
 * hm_instance_new or hm_instance_add_backend (which take it over), or free it with
 * hm_fs_hotplugger_free. Returns 0, HM_E_INVALID or HM_E_NOMEM. Any thread. Since 0.1.
 */
HM_API int hm_fs_hotplugger_new(hm_fs_hotplugger **out, const hm_fs_hotplugger_ops *ops, void *impl,
                                hm_error **err);
/**
 * hm_fs_hotplugger_free: calls ops->destroy(impl) and frees hp; accepts NULL. Only for a
 * hotplugger no instance took over. Not while another thread uses hp. Since 0.1.
 */
HM_API void hm_fs_hotplugger_free(hm_fs_hotplugger *hp);
/** hm_fs_hotplugger_get_name: the backend's name (ops->name, borrowed). Any thread. Since 0.1. */
HM_API const char *hm_fs_hotplugger_get_name(const hm_fs_hotplugger *hp);
/**
 * hm_fs_hotplugger_supports: non-zero when the backend attaches mounts of type (an HM_TYPE_*). Any
 * thread. Since 0.1.
 */
HM_API int hm_fs_hotplugger_supports(const hm_fs_hotplugger *hp, int type);

HM_END_DECLS

#endif
