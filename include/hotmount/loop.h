/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_LOOP_H
#define HOTMOUNT_LOOP_H

#include <hotmount/common.h>
#include <hotmount/error.h>
#include <hotmount/instance.h>
#include <hotmount/mount.h>

HM_BEGIN_DECLS

/*
 * Main-loop integration for an hm_instance: state-change events and
 * asynchronous add/remove, delivered on the embedder's own thread.
 *
 * The library's threads (async workers, the health monitor, the QMP reader)
 * never call these callbacks. They queue what happened; the embedder runs the
 * callbacks by calling hm_instance_dispatch from its loop, either
 *
 *  - on any loop: poll hm_instance_get_fd for reading and call
 *    hm_instance_dispatch when it is readable (libnbd / sd-event style), or
 *  - on GLib: hm_instance_attach_gmain(inst, ctx) adds a source on ctx that
 *    does exactly that.
 *
 * The synchronous calls of <hotmount/instance.h> keep working alongside.
 *
 * Thread rules: hm_instance_add_async, hm_instance_remove_async and
 * hm_instance_get_fd may be called from any thread. hm_instance_dispatch,
 * hm_instance_set_event_callback, hm_instance_attach_gmain and
 * hm_instance_detach_gmain belong to one thread at a time, the loop's: do not
 * call them while another thread is inside hm_instance_dispatch (or is
 * running the GMainContext the instance is attached to). Callbacks must not
 * call hm_instance_free on their own instance; anything else (including the
 * synchronous calls, which block the loop) is allowed.
 */

/** In events: the mount left the registry (removed, or an add that failed). */
#define HM_STATE_REMOVED 0

/** Undispatched state-change events kept at most; see hm_event_fn. */
#define HM_EVENT_QUEUE_MAX 1024

/**
 * hm_event_fn: a registry state change. m: a snapshot of the mount as it was
 * when it changed (borrowed: valid during the call; hm_mount_copy to keep
 * it); old_state, new_state: HM_STATE_* (ATTACHING, MOUNTED, DETACHING,
 * BROKEN) or HM_STATE_REMOVED. A new mount arrives as REMOVED -> ATTACHING;
 * a successful add then ATTACHING -> MOUNTED, a failed one ATTACHING ->
 * REMOVED; remove gives MOUNTED -> DETACHING -> REMOVED; the health monitor
 * reports MOUNTED -> BROKEN (a helper died, the guest unmounted it); a mount
 * hm_instance_reconcile adopts without a record arrives as REMOVED ->
 * MOUNTED, and its other verdicts as the state changes they are.
 *
 * Overflow: when more than HM_EVENT_QUEUE_MAX events wait undispatched, newer
 * ones are dropped (and counted in the library's log); in their place comes
 * one call with m NULL and both states HM_STATE_REMOVED, meaning "events were
 * lost here: call hm_instance_list to catch up". Async completions are never
 * dropped.
 *
 * Runs on the thread calling hm_instance_dispatch. Since 0.1.
 */
typedef void (*hm_event_fn)(hm_instance *inst, const hm_mount *m, int old_state, int new_state,
                            void *user_data);

/**
 * hm_instance_set_event_callback: calls fn for every later state change of
 * inst's mounts, through hm_instance_dispatch. Events are queued only while
 * a callback is set; fn NULL stops them and discards undelivered ones.
 * Replaces an earlier callback, whose destroy (if any) is called then;
 * destroy (may be NULL) is called exactly once with user_data: on
 * replacement, on hm_instance_free, or at once when this call fails.
 * Returns 0, or HM_E_INVALID (inst NULL), HM_E_NOMEM, HM_E_IO (no eventfd).
 * Thread: the loop's (see above). Since 0.1.
 */
HM_API int hm_instance_set_event_callback(hm_instance *inst, hm_event_fn fn, void *user_data,
                                          void (*destroy)(void *user_data), hm_error **err);

/**
 * hm_instance_get_fd: a file descriptor (an eventfd, close-on-exec) that is
 * readable while events or async completions wait for hm_instance_dispatch.
 * Owned by inst: do not read, write or close it; poll it. The same fd for the
 * instance's life. Returns the fd, or HM_E_INVALID (inst NULL), HM_E_NOMEM,
 * HM_E_IO (no eventfd could be made). Any thread. Since 0.1.
 */
HM_API int hm_instance_get_fd(hm_instance *inst);

/**
 * hm_instance_dispatch: runs, on the calling thread and in the order they
 * happened, the event and completion callbacks that were pending when it was
 * called; never waits. Afterwards the fd is not readable unless something new
 * arrived meanwhile. Returns the number of callbacks run (0 if none), or
 * HM_E_INVALID (inst NULL). Thread: the loop's. Since 0.1.
 */
HM_API int hm_instance_dispatch(hm_instance *inst, hm_error **err);

/**
 * hm_add_done_fn: an async add finished. result: 0 or the code
 * hm_instance_add returned; m: snapshot of the new mount on success, NULL on
 * failure; err: the error on failure, NULL on success. m and err are
 * borrowed for the call. Runs on the thread calling hm_instance_dispatch.
 * Since 0.1.
 */
typedef void (*hm_add_done_fn)(hm_instance *inst, int result, const hm_mount *m,
                               const hm_error *err, void *user_data);

/**
 * hm_remove_done_fn: an async remove finished. result: 0 or the code
 * hm_instance_remove returned; guest_path: the path asked for (borrowed);
 * err: the error on failure (borrowed), NULL on success. Runs on the thread
 * calling hm_instance_dispatch. Since 0.1.
 */
typedef void (*hm_remove_done_fn)(hm_instance *inst, int result, const char *guest_path,
                                  const hm_error *err, void *user_data);

/**
 * hm_instance_add_async: hm_instance_add on a library worker thread. spec is
 * copied (the caller keeps it). When this returns 0, done (may be NULL) is
 * called once, from hm_instance_dispatch, after the add's own events; then
 * destroy (may be NULL) with user_data. If the instance is freed first, done
 * is not called but destroy still is. When this fails, neither done is called
 * and destroy is called before it returns. Returns 0, or HM_E_INVALID (inst or
 * spec NULL), HM_E_NOMEM, HM_E_BUSY (the instance is being freed), HM_E_IO (no
 * worker thread); errors of the add itself arrive in done. Any thread.
 * Since 0.1.
 */
HM_API int hm_instance_add_async(hm_instance *inst, const hm_mount_spec *spec, hm_add_done_fn done,
                                 void *user_data, void (*destroy)(void *user_data), hm_error **err);

/**
 * hm_instance_remove_async: hm_instance_remove(inst, guest_path, flags) on a
 * library worker thread; guest_path is copied. done, user_data and destroy
 * as for hm_instance_add_async. Returns 0, or HM_E_INVALID (inst or
 * guest_path NULL, unknown flags), HM_E_NOMEM, HM_E_BUSY, HM_E_IO. Any
 * thread. Since 0.1.
 */
HM_API int hm_instance_remove_async(hm_instance *inst, const char *guest_path, unsigned flags,
                                    hm_remove_done_fn done, void *user_data,
                                    void (*destroy)(void *user_data), hm_error **err);

/* GLib's GMainContext, declared here so that this header needs no glib.h. */
struct _GMainContext;

/**
 * hm_instance_attach_gmain: adds a source to ctx (NULL: the global default
 * context) that calls hm_instance_dispatch whenever the fd is readable, so
 * callbacks run on the thread iterating ctx. One context at a time:
 * HM_E_EXISTS if already attached. Returns 0, or HM_E_INVALID, HM_E_NOMEM,
 * HM_E_IO. Thread: the loop's; call it before iterating ctx elsewhere.
 * Since 0.1.
 */
HM_API int hm_instance_attach_gmain(hm_instance *inst, struct _GMainContext *ctx, hm_error **err);

/**
 * hm_instance_detach_gmain: removes the source hm_instance_attach_gmain
 * added; pending callbacks stay queued for a later dispatch. Accepts an
 * instance that is not attached (and NULL). hm_instance_free does it too.
 * Thread: the one iterating the context, or any while nothing iterates it.
 * Since 0.1.
 */
HM_API void hm_instance_detach_gmain(hm_instance *inst);

HM_END_DECLS

#endif
