/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_INSTANCE_H
#define HOTMOUNT_INSTANCE_H

#include <hotmount/common.h>
#include <hotmount/driver.h>
#include <hotmount/error.h>
#include <hotmount/mount.h>
#include <hotmount/status.h>

HM_BEGIN_DECLS

/*
 * hm_instance: one VM's hot-mount engine: the backend (hm_fs_hotplugger), the
 * guest agent connection, and the mount registry (persisted in
 * INSTANCE_DIR/state.json). add/remove/list are synchronous and thread-safe:
 * call them from any thread, concurrently. An add never holds a lock that list
 * needs while it waits on the guest.
 */
typedef struct hm_instance hm_instance;

/**
 * hm_instance_dir_resolve: the instance directory for name_or_path: a value containing '/' is a
 * path (used as given); otherwise $HOTMOUNT_HOME/NAME, with HOTMOUNT_HOME defaulting to
 * ~/.hotmount. Names are [A-Za-z0-9._-]{1,64}, not "." or "..". *out is malloc'd: free with
 * hm_free (or free() from C). Does not create anything. Returns 0, HM_E_INVALID (a bad name, no
 * home directory) or HM_E_NOMEM. Any thread (reads the environment). Since 0.1.
 */
HM_API int hm_instance_dir_resolve(char **out, const char *name_or_path, hm_error **err);

/**
 * hm_instance_new: an engine for the instance directory dir (copied). Takes ownership of hp, the
 * main backend (freed with the instance, also on failure). Loads dir/state.json (a corrupt one is
 * set aside, see hotmountd(8)); the agent is reached at dir/agent.sock, on demand. Starts the
 * instance's health-monitor thread. *out: free with hm_instance_free. Returns 0, HM_E_INVALID
 * (NULL argument), HM_E_NOMEM, or an error reading the state file. Any thread. Since 0.1.
 */
HM_API int hm_instance_new(hm_instance **out, const char *dir, hm_fs_hotplugger *hp,
                           hm_error **err);
/**
 * hm_instance_free: frees the instance and its backends. Does not remove mounts (they outlive the
 * process; a new instance on dir finds them). Waits for hm_instance_add_async/remove_async calls
 * in flight (an add can take up to the mount timeout), drops their undelivered completions
 * (calling only their destroy) and detaches from a GMainContext (<hotmount/loop.h>). Accepts NULL.
 * Call it once no other thread uses inst, not from one of its callbacks, and after any hm_server
 * serving it is freed. Since 0.1.
 */
HM_API void hm_instance_free(hm_instance *inst);

/**
 * hm_instance_reconcile: settles the registry against what the backend (QEMU, helper processes)
 * and the guest actually hold: adopts what is whole, rolls back what an interrupted add or remove
 * left half done, cleans up leftovers the registry does not know, and marks the rest broken with
 * the reason. Call it once after hm_instance_new, before serving requests (hotmountd does).
 * Returns 0, or the backend's error when it cannot be asked (HM_E_NOT_READY, HM_E_QMP). Blocks
 * (asks QEMU and, if reachable, the guest); any thread, before others use inst. Since 0.1.
 */
HM_API int hm_instance_reconcile(hm_instance *inst, hm_error **err);

/**
 * hm_instance_add_backend: one more backend for the instance, for the mount types the main backend
 * (given to hm_instance_new) does not serve; a mount's type picks the first backend that supports
 * it. Takes ownership of hp (freed with the instance, also on failure). Call it right after
 * hm_instance_new, before hm_instance_reconcile and before any other thread uses the instance.
 * hotmountd adds the reverse-sshfs and bind backends this way. Returns 0, or HM_E_INVALID (NULL
 * argument, too many backends). Since 0.1.
 */
HM_API int hm_instance_add_backend(hm_instance *inst, hm_fs_hotplugger *hp, hm_error **err);

/**
 * hm_instance_set_mount_timeout: how long an add waits for the guest to see the device and mount
 * it, in ms (default 20000). Returns 0, or HM_E_INVALID unless positive. Any thread; applies to
 * adds that start afterwards. Since 0.1.
 */
HM_API int hm_instance_set_mount_timeout(hm_instance *inst, int timeout_ms, hm_error **err);

/**
 * hm_instance_connect_agent: connects to the guest agent and does the protocol handshake, waiting
 * up to timeout_ms for the guest to answer. add/remove connect on demand; this is for callers that
 * want to wait for a booting guest. Returns 0, HM_E_INVALID, HM_E_NOT_READY (no agent within
 * timeout_ms, with the reason). Blocks; any thread. Since 0.1.
 */
HM_API int hm_instance_connect_agent(hm_instance *inst, int timeout_ms, hm_error **err);

/**
 * hm_instance_add: validates a copy of spec (see hm_mount_spec_validate; spec is not changed or
 * kept), reserves the mount point, attaches through the backend, has the agent mount it, and
 * records it. Any failure rolls back every earlier step. *out (may be NULL to not receive it) is a
 * snapshot of the new mount: free with hm_mount_free. Returns 0, or HM_E_INVALID, HM_E_UNSUPPORTED
 * (no backend for the type), HM_E_EXISTS (mount point in use or overlapping one), HM_E_NO_SLOT,
 * HM_E_NOT_READY, HM_E_TIMEOUT, HM_E_AGENT, HM_E_QMP, HM_E_HELPER, HM_E_NOMEM. Blocks up to the
 * mount timeout; any thread, concurrently (see hm_instance_add_async for a loop). Since 0.1.
 */
HM_API int hm_instance_add(hm_instance *inst, hm_mount **out, const hm_mount_spec *spec,
                           hm_error **err);

#define HM_REMOVE_LAZY 1u  /* umount2(MNT_DETACH) in the guest */
#define HM_REMOVE_FORCE 2u /* go on with the host side even if the guest unmount fails */

/**
 * hm_instance_remove: unmounts guest_path in the guest, then detaches the device and stops
 * helpers, in that order. flags: HM_REMOVE_LAZY, HM_REMOVE_FORCE (a broken mount is always removed
 * lazily). Returns 0, or HM_E_INVALID, HM_E_NOT_FOUND (nothing is mounted there), HM_E_BUSY (an
 * add or remove of it is under way), the guest unmount's error (the mount stays; retry with
 * HM_REMOVE_FORCE), or the backend's (the mount is then broken). Blocks; any thread, concurrently.
 * Since 0.1.
 */
HM_API int hm_instance_remove(hm_instance *inst, const char *guest_path, unsigned flags,
                              hm_error **err);

/**
 * hm_instance_status: version, backend, mount counts, agent connection, free slots and the
 * backend's own facts (see docs/api.md, GET /v1/status). *out: free with hm_status_free. Returns
 * 0, HM_E_INVALID or HM_E_NOMEM. Never waits on the guest; any thread. Since 0.1.
 */
HM_API int hm_instance_status(hm_instance *inst, hm_status **out, hm_error **err);

/**
 * hm_instance_list: a snapshot of the registry (mounts being added or removed included, with their
 * state). *out: free with hm_mount_list_free. Returns 0, HM_E_INVALID or HM_E_NOMEM. Never waits
 * on the guest or QEMU; any thread. Since 0.1.
 */
HM_API int hm_instance_list(hm_instance *inst, hm_mount_list **out, hm_error **err);

HM_END_DECLS

#endif
