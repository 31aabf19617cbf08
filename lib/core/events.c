/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Main-loop integration (include/hotmount/loop.h): a queue of registry state
 * changes and async completions, an eventfd that is readable while the queue
 * is not empty, and hm_instance_dispatch that runs the callbacks on the
 * embedder's thread.
 *
 * Locking: the queue has its own mutex (ev->mu). Producers hold inst->lock
 * (state changes, see hm_inst_event_locked) or nothing (workers); the order is
 * always inst->lock then ev->mu, and no user code runs under either. The
 * queue is made on first use, so an instance that never uses this API
 * (hotmountd) queues nothing.
 *
 * Async operations run the synchronous ones, one worker thread per call;
 * finished workers are joined by the next async call, and hm_instance_free
 * waits for and joins all of them before anything they use goes away.
 */
#include "driver_internal.h"
#include "instance_internal.h"
#include "mount_internal.h"
#include "platform.h"
#include "state.h"

#include <hotmount/loop.h>

#include <errno.h>
#include <glib-unix.h>
#include <glib.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ITEM_EVENT, ITEM_OVERFLOW, ITEM_ADD_DONE, ITEM_REMOVE_DONE };

typedef struct item {
  struct item *next;
  int kind;
  hm_mount *m; /* EVENT, ADD_DONE (success) */
  int old_state, new_state;
  unsigned long dropped; /* OVERFLOW */
  int result;            /* *_DONE */
  hm_error *err;         /* *_DONE (failure) */
  char *guest_path;      /* REMOVE_DONE */
  hm_add_done_fn add_done;
  hm_remove_done_fn remove_done;
  void *user_data;
  void (*destroy)(void *);
} item;

typedef struct hm_events hm_events;
typedef struct job job;

struct hm_events {
  pthread_mutex_t mu;
  pthread_cond_t idle; /* inflight dropped to 0 */
  hm_wake wake;        /* readable while head != NULL */
  item *head, *tail;
  size_t n_events; /* EVENT items queued (completions do not count) */
  hm_event_fn fn;
  void *fn_data;
  void (*fn_destroy)(void *);
  unsigned inflight; /* async workers not yet finished */
  job *jobs;         /* started workers, finished or not, to be joined */
  int closing;
  GSource *source;
};

/* ---- queue ---- */

/* ev->mu held. */
static void push_locked(hm_events *ev, item *it) {
  int was_empty = !ev->head;
  it->next = NULL;
  if (ev->tail)
    ev->tail->next = it;
  else
    ev->head = it;
  ev->tail = it;
  if (was_empty) {
    /* Cannot fail short of a counter overflow, which one write per empty
     * queue never reaches. */
    if (hm_wake_signal(&ev->wake) < 0)
      hm_warn("event queue: wake-up write failed: %s", strerror(errno));
  }
}

static void item_free(item *it, int call_destroy) {
  if (call_destroy && it->destroy)
    it->destroy(it->user_data);
  hm_mount_free(it->m);
  hm_error_free(it->err);
  free(it->guest_path);
  free(it);
}

/* Made on first use, under inst->lock so that two threads agree. */
static int events_get(hm_instance *inst, hm_events **out, hm_error **err) {
  pthread_mutex_lock(&inst->lock);
  hm_events *ev = inst->events;
  if (!ev) {
    if (!(ev = calloc(1, sizeof(*ev)))) {
      pthread_mutex_unlock(&inst->lock);
      return HM_ERR_NOMEM(err);
    }
    if (hm_wake_open(&ev->wake) < 0) {
      int e = errno;
      free(ev);
      pthread_mutex_unlock(&inst->lock);
      return HM_ERR(err, e == ENOMEM ? HM_E_NOMEM : HM_E_IO, "cannot make the event fd: %s",
                    strerror(e));
    }
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->idle, NULL);
    inst->events = ev;
  }
  pthread_mutex_unlock(&inst->lock);
  *out = ev;
  return 0;
}

/*
 * Hook: e changed from old_state to new_state (HM_STATE_REMOVED: it is about
 * to leave the registry). Called with inst->lock held, by instance.c's
 * set_state/drop_entry/add, which the monitor and reconcile use too.
 */
void hm_inst_event_locked(hm_instance *inst, const hm_entry *e, int old_state, int new_state) {
  hm_events *ev = inst->events;
  if (!ev || old_state == new_state)
    return;
  /* A retired entry (its device could not be unplugged) left the list when
   * its remove ended; later changes to its hidden record are not the
   * embedder's business. */
  if (e->retired) {
    if (old_state != HM_STATE_DETACHING)
      return;
    new_state = HM_STATE_REMOVED;
  }
  pthread_mutex_lock(&ev->mu);
  if (!ev->fn || ev->closing) {
    pthread_mutex_unlock(&ev->mu);
    return;
  }
  item *it = NULL;
  if (ev->n_events < HM_EVENT_QUEUE_MAX && (it = calloc(1, sizeof(*it)))) {
    /* The snapshot shows the mount as it is; a removed one as it was last. */
    int shown = new_state == HM_STATE_REMOVED ? e->state : new_state;
    if (hm_mount_build(&it->m, e->id, e->spec, e->att ? e->att->tag : NULL,
                       e->att ? hm_attachment_get_data(e->att, "via") : NULL, shown,
                       e->reason) == 0) {
      it->kind = ITEM_EVENT;
      it->old_state = old_state;
      it->new_state = new_state;
      ev->n_events++;
      push_locked(ev, it);
      pthread_mutex_unlock(&ev->mu);
      return;
    }
    free(it);
  }
  /* Full (or out of memory): one overflow marker stands for the run of lost
   * events, so the queue stays bounded however long nobody dispatches. */
  if (ev->tail && ev->tail->kind == ITEM_OVERFLOW) {
    ev->tail->dropped++;
  } else if ((it = calloc(1, sizeof(*it)))) {
    it->kind = ITEM_OVERFLOW;
    it->dropped = 1;
    push_locked(ev, it);
  }
  pthread_mutex_unlock(&ev->mu);
}

/* ---- public: events and dispatch ---- */

int hm_instance_set_event_callback(hm_instance *inst, hm_event_fn fn, void *user_data,
                                   void (*destroy)(void *user_data), hm_error **err) {
  hm_events *ev = NULL;
  int r;
  if (!inst)
    r = HM_ERR(err, HM_E_INVALID, "inst is NULL");
  else
    r = events_get(inst, &ev, err);
  if (r < 0) {
    if (destroy)
      destroy(user_data);
    return r;
  }
  pthread_mutex_lock(&ev->mu);
  void (*old_destroy)(void *) = ev->fn_destroy;
  void *old_data = ev->fn_data;
  ev->fn = fn;
  ev->fn_data = user_data;
  ev->fn_destroy = destroy;
  item *dropped = NULL;
  if (!fn) {
    /* Nobody to tell: undelivered events go, completions stay. */
    item **pp = &ev->head, *last = NULL;
    while (*pp) {
      item *it = *pp;
      if (it->kind == ITEM_EVENT || it->kind == ITEM_OVERFLOW) {
        *pp = it->next;
        it->next = dropped;
        dropped = it;
      } else {
        last = it;
        pp = &it->next;
      }
    }
    ev->tail = last;
    ev->n_events = 0;
    if (!ev->head && hm_wake_drain(&ev->wake) < 0)
      hm_warn("event queue: wake-up read failed: %s", strerror(errno));
  }
  pthread_mutex_unlock(&ev->mu);
  while (dropped) {
    item *next = dropped->next;
    item_free(dropped, 0);
    dropped = next;
  }
  if (old_destroy)
    old_destroy(old_data);
  return 0;
}

int hm_instance_get_fd(hm_instance *inst) {
  hm_events *ev = NULL;
  if (!inst)
    return HM_E_INVALID;
  int r = events_get(inst, &ev, NULL);
  return r < 0 ? r : ev->wake.rfd;
}

int hm_instance_dispatch(hm_instance *inst, hm_error **err) {
  if (!inst)
    return HM_ERR(err, HM_E_INVALID, "inst is NULL");
  pthread_mutex_lock(&inst->lock);
  hm_events *ev = inst->events;
  pthread_mutex_unlock(&inst->lock);
  if (!ev)
    return 0;
  /* Take the whole batch: callbacks run with no lock held, and whatever
   * they cause (or other threads add) waits for the next dispatch. */
  pthread_mutex_lock(&ev->mu);
  item *batch = ev->head;
  ev->head = ev->tail = NULL;
  ev->n_events = 0;
  if (hm_wake_drain(&ev->wake) < 0)
    hm_warn("event queue: wake-up read failed: %s", strerror(errno));
  pthread_mutex_unlock(&ev->mu);

  int n = 0;
  while (batch) {
    item *it = batch;
    batch = it->next;
    /* Read per item: a callback may have replaced the callback (and
     * destroyed the old user data) earlier in this batch. */
    pthread_mutex_lock(&ev->mu);
    hm_event_fn fn = ev->fn;
    void *fn_data = ev->fn_data;
    pthread_mutex_unlock(&ev->mu);
    switch (it->kind) {
    case ITEM_EVENT:
      if (fn) {
        fn(inst, it->m, it->old_state, it->new_state, fn_data);
        n++;
      }
      break;
    case ITEM_OVERFLOW:
      hm_warn("event queue full: %lu state-change events were dropped", it->dropped);
      if (fn) {
        fn(inst, NULL, HM_STATE_REMOVED, HM_STATE_REMOVED, fn_data);
        n++;
      }
      break;
    case ITEM_ADD_DONE:
      if (it->add_done) {
        it->add_done(inst, it->result, it->m, it->err, it->user_data);
        n++;
      }
      break;
    case ITEM_REMOVE_DONE:
      if (it->remove_done) {
        it->remove_done(inst, it->result, it->guest_path, it->err, it->user_data);
        n++;
      }
      break;
    }
    item_free(it, 1);
  }
  return n;
}

/* ---- async add/remove ---- */

struct job {
  hm_instance *inst;
  hm_events *ev;
  item *it;            /* the completion, filled in and queued when done */
  hm_mount_spec *spec; /* add */
  unsigned flags;      /* remove */
  pthread_t thread;
  int finished; /* ev->mu */
  job *next;    /* ev->jobs */
};

/* ev->mu held: unlinks the finished jobs (all of them: every one, which the
 * caller knows have finished) for reap() to join outside the lock. */
static job *take_jobs_locked(hm_events *ev, int all) {
  job *done = NULL;
  for (job **pp = &ev->jobs; *pp;) {
    job *j = *pp;
    if (all || j->finished) {
      *pp = j->next;
      j->next = done;
      done = j;
    } else {
      pp = &j->next;
    }
  }
  return done;
}

static void reap(job *list) {
  while (list) {
    job *next = list->next;
    pthread_join(list->thread, NULL);
    free(list);
    list = next;
  }
}

static void *job_main(void *arg) {
  job *j = arg;
  item *it = j->it;
  if (it->kind == ITEM_ADD_DONE) {
    it->result = hm_instance_add(j->inst, &it->m, j->spec, &it->err);
    hm_mount_spec_free(j->spec);
  } else {
    it->result = hm_instance_remove(j->inst, it->guest_path, j->flags, &it->err);
  }
  if (it->result < 0 && !it->err)
    hm_err_set(&it->err, it->result,
               it->kind == ITEM_ADD_DONE ? "hm_instance_add_async" : "hm_instance_remove_async",
               "%s", hm_strerror(it->result));
  j->spec = NULL;
  hm_events *ev = j->ev;
  pthread_mutex_lock(&ev->mu);
  push_locked(ev, it);
  j->finished = 1;
  if (--ev->inflight == 0)
    pthread_cond_broadcast(&ev->idle);
  pthread_mutex_unlock(&ev->mu);
  return NULL;
}

static int start_job(hm_instance *inst, job *j, const char *func, hm_error **err) {
  hm_events *ev = NULL;
  int r = events_get(inst, &ev, err);
  if (r < 0)
    return r;
  j->inst = inst;
  j->ev = ev;
  pthread_mutex_lock(&ev->mu);
  if (ev->closing) {
    pthread_mutex_unlock(&ev->mu);
    return hm_err_set(err, HM_E_BUSY, func, "the instance is being freed");
  }
  ev->inflight++;
  pthread_mutex_unlock(&ev->mu);

  /* Workers must not take signals meant for the host program. */
  pthread_t t;
  int e = hm_thread_create(&t, job_main, j);
  pthread_mutex_lock(&ev->mu);
  if (e == 0) {
    j->thread = t;
    j->next = ev->jobs;
    ev->jobs = j;
  } else if (--ev->inflight == 0) {
    pthread_cond_broadcast(&ev->idle);
  }
  job *done = take_jobs_locked(ev, 0);
  pthread_mutex_unlock(&ev->mu);
  reap(done);
  if (e != 0) {
    return hm_err_set(err, e == EAGAIN ? HM_E_IO : HM_E_INTERNAL, func,
                      "cannot start a worker thread: %s", strerror(e));
  }
  return 0;
}

int hm_instance_add_async(hm_instance *inst, const hm_mount_spec *spec, hm_add_done_fn done,
                          void *user_data, void (*destroy)(void *user_data), hm_error **err) {
  job *j = NULL;
  item *it = NULL;
  int r;
  if (!inst || !spec) {
    r = HM_ERR(err, HM_E_INVALID, "inst and spec must not be NULL");
    goto fail;
  }
  if (!(j = calloc(1, sizeof(*j))) || !(it = calloc(1, sizeof(*it)))) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  if ((r = hm_mount_spec_copy(&j->spec, spec, err)) < 0)
    goto fail;
  it->kind = ITEM_ADD_DONE;
  it->add_done = done;
  it->user_data = user_data;
  it->destroy = destroy;
  j->it = it;
  if ((r = start_job(inst, j, __func__, err)) < 0)
    goto fail;
  return 0;
fail:
  if (j)
    hm_mount_spec_free(j->spec);
  free(j);
  free(it);
  if (destroy)
    destroy(user_data);
  return r;
}

int hm_instance_remove_async(hm_instance *inst, const char *guest_path, unsigned flags,
                             hm_remove_done_fn done, void *user_data,
                             void (*destroy)(void *user_data), hm_error **err) {
  job *j = NULL;
  item *it = NULL;
  int r;
  if (!inst || !guest_path) {
    r = HM_ERR(err, HM_E_INVALID, "inst and guest_path must not be NULL");
    goto fail;
  }
  if (flags & ~(HM_REMOVE_LAZY | HM_REMOVE_FORCE)) {
    r = HM_ERR(err, HM_E_INVALID, "unknown flags 0x%x",
               flags & ~(HM_REMOVE_LAZY | HM_REMOVE_FORCE));
    goto fail;
  }
  if (!(j = calloc(1, sizeof(*j))) || !(it = calloc(1, sizeof(*it))) ||
      !(it->guest_path = strdup(guest_path))) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  it->kind = ITEM_REMOVE_DONE;
  it->remove_done = done;
  it->user_data = user_data;
  it->destroy = destroy;
  j->flags = flags;
  j->it = it;
  if ((r = start_job(inst, j, __func__, err)) < 0)
    goto fail;
  return 0;
fail:
  if (it)
    free(it->guest_path);
  free(j);
  free(it);
  if (destroy)
    destroy(user_data);
  return r;
}

/* ---- GLib ---- */

static gboolean on_fd(gint fd, GIOCondition cond, gpointer data) {
  hm_instance_dispatch(data, NULL);
  return G_SOURCE_CONTINUE;
}

int hm_instance_attach_gmain(hm_instance *inst, struct _GMainContext *ctx, hm_error **err) {
  hm_events *ev = NULL;
  if (!inst)
    return HM_ERR(err, HM_E_INVALID, "inst is NULL");
  int r = events_get(inst, &ev, err);
  if (r < 0)
    return r;
  if (ev->source)
    return HM_ERR(err, HM_E_EXISTS, "the instance is already attached to a GMainContext");
  GSource *s = g_unix_fd_source_new(ev->wake.rfd, G_IO_IN);
  g_source_set_callback(s, (GSourceFunc)(void (*)(void))on_fd, inst, NULL);
  g_source_set_name(s, "hotmount instance");
  g_source_attach(s, ctx);
  ev->source = s;
  return 0;
}

void hm_instance_detach_gmain(hm_instance *inst) {
  if (!inst)
    return;
  pthread_mutex_lock(&inst->lock);
  hm_events *ev = inst->events;
  pthread_mutex_unlock(&inst->lock);
  if (!ev || !ev->source)
    return;
  g_source_destroy(ev->source);
  g_source_unref(ev->source);
  ev->source = NULL;
}

/* ---- teardown ---- */

/* Hook for hm_instance_free, before anything else goes: waits for async
 * workers, detaches from GLib, then drops what was never dispatched. */
void hm_inst_events_free(hm_instance *inst) {
  hm_events *ev = inst->events;
  if (!ev)
    return;
  pthread_mutex_lock(&ev->mu);
  ev->closing = 1;
  while (ev->inflight)
    pthread_cond_wait(&ev->idle, &ev->mu);
  job *jobs = take_jobs_locked(ev, 1);
  pthread_mutex_unlock(&ev->mu);
  reap(jobs);
  hm_instance_detach_gmain(inst);
  /* The monitor may still be raising events; after this it sees none. */
  pthread_mutex_lock(&inst->lock);
  inst->events = NULL;
  pthread_mutex_unlock(&inst->lock);
  pthread_mutex_lock(&ev->mu); /* the last producer's items, seen through the queue's lock */
  item *left = ev->head;
  ev->head = ev->tail = NULL;
  pthread_mutex_unlock(&ev->mu);
  for (item *it = left, *next; it; it = next) {
    next = it->next;
    item_free(it, 1);
  }
  if (ev->fn_destroy)
    ev->fn_destroy(ev->fn_data);
  hm_wake_close(&ev->wake);
  pthread_cond_destroy(&ev->idle);
  pthread_mutex_destroy(&ev->mu);
  free(ev);
}
