/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Main-loop integration (include/hotmount/loop.h) on a real hm_instance.
 *
 * The instance's backend is written here, through the public vtable, as a
 * backend that mounts in the "guest" itself (HM_HOTPLUGGER_GUEST_MOUNTS):
 * the guest is this host, and attach bind-mounts the host directory on the
 * guest path, so a finished add is checked by reading a file through the
 * mount point and a remove by /proc/self/mountinfo. Its watch_fd is an
 * eventfd the test fires to play a dying helper, which the library's health
 * monitor must notice. Where the add goes through the guest agent, the real
 * static agent runs in --socket mode (as in the agent and http suites).
 * Runs as root (mount(2)).
 */
#include <hotmount/hotmount.h>

#include "instance_internal.h" /* the overflow test drives the state-change hook */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the backend: bind mounts on this host ---- */

typedef struct bind_backend {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int attach_calls, detach_calls, umount_calls, destroy_calls;
  int hold, held;   /* attach waits while hold is set; held: one is waiting */
  int helper_fd;    /* eventfd: "the helper died" once readable */
  int helper_dead;  /* check() answers "not whole" when set */
  int mounts;       /* attach bind-mounts (a GUEST_MOUNTS backend); else only tags */
  int fail_umounts; /* guest_umount fails with EBUSY this many more times */
} bind_backend;

static int bb_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  bind_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  b->attach_calls++;
  if (b->hold) {
    b->held++;
    pthread_cond_broadcast(&b->cv);
    while (b->hold)
      pthread_cond_wait(&b->cv, &b->mu);
    b->held--;
  }
  pthread_mutex_unlock(&b->mu);
  const char *guest = hm_mount_spec_get_guest_path(spec);
  char tag[64];
  snprintf(tag, sizeof(tag), "bind-%s", hm_attachment_get_id(att));
  if (!b->mounts)
    return hm_attachment_set_tag(att, tag, err);
  mkdir(guest, 0755);
  if (mount(hm_mount_spec_get_host_path(spec), guest, "none", MS_BIND, NULL) < 0) {
    int e = errno;
    (void)err;
    return -e;
  }
  int r = hm_attachment_set_tag(att, tag, err);
  if (r == 0)
    r = hm_attachment_set_data(att, "guestPath", guest, err);
  if (r < 0)
    umount2(guest, MNT_DETACH);
  return r;
}

static int bb_guest_umount(void *impl, hm_attachment *att, unsigned flags, hm_error **err) {
  bind_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  b->umount_calls++;
  int fail = b->fail_umounts > 0;
  if (fail)
    b->fail_umounts--;
  pthread_mutex_unlock(&b->mu);
  if (fail)
    return -EBUSY;
  const char *guest = hm_attachment_get_data(att, "guestPath");
  if (guest && umount2(guest, flags & HM_REMOVE_LAZY ? MNT_DETACH : 0) < 0 && errno != EINVAL)
    return -errno;
  return 0;
}

static int bb_detach(void *impl, hm_attachment *att, hm_error **err) {
  bind_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  b->detach_calls++;
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static int bb_watch_fd(void *impl, hm_attachment *att) {
  bind_backend *b = impl;
  return b->helper_fd >= 0 ? fcntl(b->helper_fd, F_DUPFD_CLOEXEC, 0) : -1;
}

static int bb_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  bind_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  int dead = b->helper_dead;
  pthread_mutex_unlock(&b->mu);
  if (dead) {
    *reason = strdup("the test's helper exited");
    return 0;
  }
  return 1;
}

static void bb_destroy(void *impl) {
  bind_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  b->destroy_calls++;
  pthread_mutex_unlock(&b->mu);
}

/* ---- environment ---- */

typedef struct env {
  char dir[64];   /* instance directory */
  char share[96]; /* host directory with hello.txt */
  bind_backend b;
  hm_instance *inst;
  pid_t agent;
} env;

/* base: the directory the instance directory is made in. */
static void env_up_in(env *e, int guest_mounts, const char *base) {
  memset(e, 0, sizeof(*e));
  e->b.helper_fd = -1;
  e->b.mounts = guest_mounts;
  snprintf(e->dir, sizeof(e->dir), "%s/hm-loop-XXXXXX", base);
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
  snprintf(e->share, sizeof(e->share), "%s/share", e->dir);
  ck_assert_int_eq(mkdir(e->share, 0755), 0);
  char f[160];
  snprintf(f, sizeof(f), "%s/guest", e->dir);
  ck_assert_int_eq(mkdir(f, 0755), 0);
  snprintf(f, sizeof(f), "%s/hello.txt", e->share);
  FILE *fp = fopen(f, "w");
  ck_assert_ptr_nonnull(fp);
  fputs("hello from the host\n", fp);
  fclose(fp);
  pthread_mutex_init(&e->b.mu, NULL);
  pthread_cond_init(&e->b.cv, NULL);
  e->b.helper_fd = eventfd(0, EFD_CLOEXEC);
  ck_assert_int_ge(e->b.helper_fd, 0);

  hm_fs_hotplugger_ops ops = {
      .struct_size = sizeof(ops),
      .name = "bind",
      .types = 1u << HM_TYPE_VIRTIOFS,
      .attach = bb_attach,
      .detach = bb_detach,
      .destroy = bb_destroy,
      .check = bb_check,
      .watch_fd = bb_watch_fd,
      .flags = guest_mounts ? HM_HOTPLUGGER_GUEST_MOUNTS : 0,
      .guest_umount = bb_guest_umount,
  };
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  ck_assert_msg(hm_fs_hotplugger_new(&hp, &ops, &e->b, &err) == 0, "%s", hm_error_message(err));
  ck_assert_msg(hm_instance_new(&e->inst, e->dir, hp, &err) == 0, "%s", hm_error_message(err));
}

static void env_up(env *e, int guest_mounts) {
  env_up_in(e, guest_mounts, "/tmp");
}

static void guest_path(env *e, char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/guest/%s", e->dir, name);
}

static int is_mount_point(const char *path) {
  FILE *fp = fopen("/proc/self/mountinfo", "r");
  ck_assert_ptr_nonnull(fp);
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof(line), fp)) {
    char target[4096];
    if (sscanf(line, "%*s %*s %*s %*s %4095s", target) == 1)
      found = strcmp(target, path) == 0;
  }
  fclose(fp);
  return found;
}

static void env_down(env *e) {
  hm_instance_free(e->inst);
  e->inst = NULL;
  if (e->agent > 0) {
    kill(e->agent, SIGTERM);
    waitpid(e->agent, NULL, 0);
  }
  /* Mounts the instance leaves on purpose (free does not remove them). */
  char g[160];
  for (const char *n = "a\0b\0c\0"; *n; n += strlen(n) + 1) {
    guest_path(e, g, sizeof(g), n);
    while (is_mount_point(g))
      umount2(g, MNT_DETACH);
  }
  if (e->b.helper_fd >= 0)
    close(e->b.helper_fd);
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup of %s failed\n", e->dir);
}

static hm_mount_spec *spec_of(const char *host, const char *guest) {
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, host, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(s, guest, NULL), 0);
  return s;
}

static int fd_readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n = poll(&p, 1, timeout_ms);
  ck_assert_int_ge(n, 0);
  return n > 0 && (p.revents & POLLIN);
}

/* ---- a log of callbacks, in the order they ran ---- */

#define LOG_MAX 2048

typedef struct entry {
  char what[16]; /* "event", "add", "remove" */
  int a, b;      /* event: old, new; done: result, error code */
  char path[160];
  char msg[256];
  int state; /* event/add: the snapshot's state */
  pthread_t thread;
} entry;

typedef struct cblog {
  entry v[LOG_MAX];
  int n;
  int destroyed; /* destroy calls */
  GMainLoop *quit_on_done;
} cblog;

static entry *log_add(cblog *l, const char *what) {
  ck_assert_int_lt(l->n, LOG_MAX);
  entry *x = &l->v[l->n++];
  memset(x, 0, sizeof(*x));
  snprintf(x->what, sizeof(x->what), "%s", what);
  x->thread = pthread_self();
  return x;
}

static void on_event(hm_instance *inst, const hm_mount *m, int old_state, int new_state, void *ud) {
  entry *x = log_add(ud, "event");
  x->a = old_state;
  x->b = new_state;
  if (m) {
    snprintf(x->path, sizeof(x->path), "%s", hm_mount_get_guest_path(m));
    x->state = hm_mount_get_state(m);
    if (hm_mount_get_reason(m))
      snprintf(x->msg, sizeof(x->msg), "%s", hm_mount_get_reason(m));
  } else {
    snprintf(x->path, sizeof(x->path), "(overflow)");
  }
}

static void on_add(hm_instance *inst, int result, const hm_mount *m, const hm_error *err,
                   void *ud) {
  cblog *l = ud;
  entry *x = log_add(l, "add");
  x->a = result;
  x->b = hm_error_code(err);
  snprintf(x->msg, sizeof(x->msg), "%s", hm_error_message(err));
  if (m) {
    snprintf(x->path, sizeof(x->path), "%s", hm_mount_get_guest_path(m));
    x->state = hm_mount_get_state(m);
  }
  if (l->quit_on_done)
    g_main_loop_quit(l->quit_on_done);
}

static void on_remove(hm_instance *inst, int result, const char *path, const hm_error *err,
                      void *ud) {
  cblog *l = ud;
  entry *x = log_add(l, "remove");
  x->a = result;
  x->b = hm_error_code(err);
  snprintf(x->msg, sizeof(x->msg), "%s", hm_error_message(err));
  snprintf(x->path, sizeof(x->path), "%s", path);
  if (l->quit_on_done)
    g_main_loop_quit(l->quit_on_done);
}

static void on_destroy(void *ud) {
  ((cblog *)ud)->destroyed++;
}

/* Polls the fd and dispatches until a done callback ran (or 20 s). */
static void dispatch_until_done(env *e, cblog *l) {
  int fd = hm_instance_get_fd(e->inst);
  ck_assert_int_ge(fd, 0);
  int start = l->n;
  for (int i = 0; i < 200; i++) {
    for (int k = start; k < l->n; k++)
      if (strcmp(l->v[k].what, "event") != 0)
        return;
    if (fd_readable(fd, 100)) {
      hm_error *err = NULL;
      int n = hm_instance_dispatch(e->inst, &err);
      ck_assert_msg(n > 0, "fd readable but dispatch ran %d callbacks (%s)", n,
                    hm_error_message(err));
    }
  }
  ck_abort_msg("no completion within 20 s");
}

static void expect_event(cblog *l, int i, const char *path, int old_state, int new_state) {
  ck_assert_int_lt(i, l->n);
  entry *x = &l->v[i];
  ck_assert_str_eq(x->what, "event");
  ck_assert_msg(x->a == old_state && x->b == new_state, "event %d: %d -> %d, expected %d -> %d", i,
                x->a, x->b, old_state, new_state);
  ck_assert_str_eq(x->path, path);
}

static char *read_file(const char *path) {
  static char buf[8192];
  FILE *fp = fopen(path, "r");
  if (!fp)
    return NULL;
  size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
  buf[n] = 0;
  fclose(fp);
  return buf;
}

/* ---- tests ---- */

START_TEST(test_bad_input) {
  env e;
  env_up(&e, 1);
  hm_error *err = NULL;
  cblog l = {0};

  ck_assert_int_eq(hm_instance_get_fd(NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_instance_dispatch(NULL, &err), HM_E_INVALID);
  ck_assert_str_eq(hm_error_message(err), "hm_instance_dispatch: inst is NULL");
  hm_error_free(err);
  err = NULL;

  /* Failing calls call destroy once, and never done. */
  ck_assert_int_eq(hm_instance_set_event_callback(NULL, on_event, &l, on_destroy, &err),
                   HM_E_INVALID);
  ck_assert_str_eq(hm_error_message(err), "hm_instance_set_event_callback: inst is NULL");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(l.destroyed, 1);
  ck_assert_int_eq(hm_instance_add_async(e.inst, NULL, on_add, &l, on_destroy, &err), HM_E_INVALID);
  ck_assert_str_eq(hm_error_message(err), "hm_instance_add_async: inst and spec must not be NULL");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(l.destroyed, 2);
  ck_assert_int_eq(hm_instance_remove_async(e.inst, NULL, 0, on_remove, &l, on_destroy, &err),
                   HM_E_INVALID);
  ck_assert(strstr(hm_error_message(err), "hm_instance_remove_async: "));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(l.destroyed, 3);
  ck_assert_int_eq(
      hm_instance_remove_async(e.inst, "/mnt/x", 0x80, on_remove, &l, on_destroy, &err),
      HM_E_INVALID);
  ck_assert_str_eq(hm_error_message(err), "hm_instance_remove_async: unknown flags 0x80");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(l.destroyed, 4);
  ck_assert_int_eq(hm_instance_attach_gmain(NULL, NULL, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  hm_instance_detach_gmain(NULL);
  hm_instance_detach_gmain(e.inst); /* not attached: fine */

  /* One fd for the instance's life, close-on-exec, idle at first. */
  int fd = hm_instance_get_fd(e.inst);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(hm_instance_get_fd(e.inst), fd);
  ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  ck_assert(!fd_readable(fd, 0));
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), 0);

  /* One context at a time. */
  GMainContext *ctx = g_main_context_new();
  ck_assert_int_eq(hm_instance_attach_gmain(e.inst, ctx, NULL), 0);
  ck_assert_int_eq(hm_instance_attach_gmain(e.inst, ctx, &err), HM_E_EXISTS);
  ck_assert(strstr(hm_error_message(err), "already attached"));
  hm_error_free(err);
  hm_instance_detach_gmain(e.inst);
  ck_assert_int_eq(hm_instance_attach_gmain(e.inst, ctx, NULL), 0);
  env_down(&e); /* detaches */
  ck_assert(!g_main_context_iteration(ctx, FALSE));
  g_main_context_unref(ctx);
  ck_assert_int_eq(l.n, 0);
}
END_TEST

START_TEST(test_dispatch_add_remove) {
  env e;
  env_up(&e, 1);
  cblog *l = calloc(1, sizeof(*l));
  char ga[160], gb[160], file[200];
  guest_path(&e, ga, sizeof(ga), "a");
  guest_path(&e, gb, sizeof(gb), "b");
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event, l, on_destroy, NULL), 0);
  int fd = hm_instance_get_fd(e.inst);

  hm_mount_spec *s = spec_of(e.share, ga);
  hm_error *err = NULL;
  ck_assert_msg(hm_instance_add_async(e.inst, s, on_add, l, NULL, &err) == 0, "%s",
                hm_error_message(err));
  hm_mount_spec_free(s); /* copied by the call */
  dispatch_until_done(&e, l);
  ck_assert_int_eq(l->n, 3);
  expect_event(l, 0, ga, HM_STATE_REMOVED, HM_STATE_ATTACHING);
  expect_event(l, 1, ga, HM_STATE_ATTACHING, HM_STATE_MOUNTED);
  ck_assert_str_eq(l->v[2].what, "add");
  ck_assert_msg(l->v[2].a == 0, "add failed: %s", l->v[2].msg);
  ck_assert_str_eq(l->v[2].path, ga);
  ck_assert_int_eq(l->v[2].state, HM_STATE_MOUNTED);
  for (int i = 0; i < 3; i++)
    ck_assert(pthread_equal(l->v[i].thread, pthread_self()));
  ck_assert(!fd_readable(fd, 0)); /* all dispatched */
  snprintf(file, sizeof(file), "%s/hello.txt", ga);
  ck_assert_ptr_nonnull(read_file(file));
  ck_assert_str_eq(read_file(file), "hello from the host\n");

  /* The add's errors come back in done, with the add's own message. */
  s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add_async(e.inst, s, on_add, l, NULL, NULL), 0);
  hm_mount_spec_free(s);
  dispatch_until_done(&e, l);
  ck_assert_int_eq(l->n, 4);
  ck_assert_str_eq(l->v[3].what, "add");
  ck_assert_int_eq(l->v[3].a, HM_E_EXISTS);
  ck_assert_int_eq(l->v[3].b, HM_E_EXISTS);
  ck_assert_msg(strstr(l->v[3].msg, "hm_instance_add: ") && strstr(l->v[3].msg, ga), "%s",
                l->v[3].msg);
  ck_assert_str_eq(l->v[3].path, "");
  ck_assert_int_eq(hm_instance_remove_async(e.inst, gb, 0, on_remove, l, on_destroy, NULL), 0);
  dispatch_until_done(&e, l);
  ck_assert_int_eq(l->n, 5);
  ck_assert_str_eq(l->v[4].what, "remove");
  ck_assert_int_eq(l->v[4].a, HM_E_NOT_FOUND);
  ck_assert_int_eq(l->v[4].b, HM_E_NOT_FOUND);
  ck_assert_msg(strstr(l->v[4].msg, "nothing is hot-mounted at"), "%s", l->v[4].msg);
  ck_assert_str_eq(l->v[4].path, gb);
  ck_assert_int_eq(l->destroyed, 1); /* the remove's destroy, after its done */

  /* Two adds at once, then remove one: completions and events all arrive. */
  s = spec_of(e.share, gb);
  ck_assert_int_eq(hm_instance_add_async(e.inst, s, on_add, l, NULL, NULL), 0);
  hm_mount_spec_free(s);
  ck_assert_int_eq(hm_instance_remove_async(e.inst, ga, 0, on_remove, l, NULL, NULL), 0);
  int done = 0;
  for (int i = 0; i < 200 && done < 2; i++) {
    if (fd_readable(fd, 100))
      ck_assert_int_gt(hm_instance_dispatch(e.inst, NULL), 0);
    done = 0;
    for (int k = 5; k < l->n; k++)
      done += strcmp(l->v[k].what, "event") != 0;
  }
  ck_assert_int_eq(done, 2);
  ck_assert_int_eq(l->n, 5 + 2 + 2 + 2); /* b: 2 events + done; a: 2 events + done */
  int seen_a = 0, seen_b = 0;
  for (int k = 5; k < l->n; k++) {
    entry *x = &l->v[k];
    int is_a = strcmp(x->path, ga) == 0;
    if (!strcmp(x->what, "event")) {
      int step = is_a ? seen_a++ : seen_b++;
      if (is_a)
        ck_assert_msg((step == 0 && x->a == HM_STATE_MOUNTED && x->b == HM_STATE_DETACHING) ||
                          (step == 1 && x->a == HM_STATE_DETACHING && x->b == HM_STATE_REMOVED),
                      "a: step %d: %d -> %d", step, x->a, x->b);
      else
        ck_assert_msg((step == 0 && x->a == HM_STATE_REMOVED && x->b == HM_STATE_ATTACHING) ||
                          (step == 1 && x->a == HM_STATE_ATTACHING && x->b == HM_STATE_MOUNTED),
                      "b: step %d: %d -> %d", step, x->a, x->b);
    } else {
      /* A done comes after its own events. */
      ck_assert_int_eq(is_a ? seen_a : seen_b, 2);
      ck_assert_msg(x->a == 0, "%s: %s", x->what, x->msg);
    }
  }
  ck_assert(!fd_readable(fd, 0));
  ck_assert(!is_mount_point(ga));
  ck_assert(is_mount_point(gb));
  pthread_mutex_lock(&e.b.mu);
  ck_assert_int_eq(e.b.umount_calls, 1);
  ck_assert_int_eq(e.b.detach_calls, 1);
  pthread_mutex_unlock(&e.b.mu);

  /* The health monitor's verdicts come through dispatch too. */
  int before = l->n;
  pthread_mutex_lock(&e.b.mu);
  e.b.helper_dead = 1;
  pthread_mutex_unlock(&e.b.mu);
  uint64_t one = 1;
  ck_assert_int_eq(write(e.b.helper_fd, &one, sizeof(one)), sizeof(one));
  ck_assert_msg(fd_readable(fd, 10000), "no event for a dead helper within 10 s");
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), 1);
  expect_event(l, before, gb, HM_STATE_MOUNTED, HM_STATE_BROKEN);
  ck_assert_int_eq(l->v[before].state, HM_STATE_BROKEN);
  ck_assert_str_eq(l->v[before].msg, "the test's helper exited");
  ck_assert(!fd_readable(fd, 0));

  /* fn NULL: no more events; the old callback's destroy ran once. */
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, NULL, NULL, NULL, NULL), 0);
  ck_assert_int_eq(l->destroyed, 2);
  ck_assert_int_eq(hm_instance_remove(e.inst, gb, 0, NULL), 0);
  ck_assert(!fd_readable(fd, 0));
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), 0);
  env_down(&e);
  ck_assert_int_eq(l->destroyed, 2);
  free(l);
}
END_TEST

typedef struct loop_ctx {
  env *e;
  cblog *l;
  const char *guest;
} loop_ctx;

static gboolean give_up(gpointer data) {
  g_main_loop_quit(data);
  return G_SOURCE_REMOVE;
}

START_TEST(test_gmain) {
  env e;
  env_up(&e, 1);
  cblog *l = calloc(1, sizeof(*l));
  char ga[160];
  guest_path(&e, ga, sizeof(ga), "a");
  GMainContext *ctx = g_main_context_new();
  GMainLoop *loop = g_main_loop_new(ctx, FALSE);
  l->quit_on_done = loop;
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event, l, NULL, NULL), 0);
  ck_assert_int_eq(hm_instance_attach_gmain(e.inst, ctx, NULL), 0);
  GSource *timeout = g_timeout_source_new(20000);
  g_source_set_callback(timeout, give_up, loop, NULL);
  g_source_attach(timeout, ctx);

  hm_mount_spec *s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add_async(e.inst, s, on_add, l, NULL, NULL), 0);
  hm_mount_spec_free(s);
  g_main_loop_run(loop);
  ck_assert_int_eq(l->n, 3);
  expect_event(l, 0, ga, HM_STATE_REMOVED, HM_STATE_ATTACHING);
  expect_event(l, 1, ga, HM_STATE_ATTACHING, HM_STATE_MOUNTED);
  ck_assert_str_eq(l->v[2].what, "add");
  ck_assert_msg(l->v[2].a == 0, "%s", l->v[2].msg);
  for (int i = 0; i < 3; i++)
    ck_assert(pthread_equal(l->v[i].thread, pthread_self()));
  ck_assert(is_mount_point(ga));

  ck_assert_int_eq(hm_instance_remove_async(e.inst, ga, 0, on_remove, l, NULL, NULL), 0);
  g_main_loop_run(loop);
  ck_assert_int_eq(l->n, 6);
  expect_event(l, 3, ga, HM_STATE_MOUNTED, HM_STATE_DETACHING);
  expect_event(l, 4, ga, HM_STATE_DETACHING, HM_STATE_REMOVED);
  ck_assert_str_eq(l->v[5].what, "remove");
  ck_assert_msg(l->v[5].a == 0, "%s", l->v[5].msg);
  ck_assert(!is_mount_point(ga));
  /* Nothing left for the source: the fd is quiet. */
  ck_assert(!fd_readable(hm_instance_get_fd(e.inst), 0));

  g_source_destroy(timeout);
  g_source_unref(timeout);
  env_down(&e);
  g_main_loop_unref(loop);
  g_main_context_unref(ctx);
  free(l);
}
END_TEST

typedef struct releaser {
  bind_backend *b;
  int released;
} releaser;

static void *release_later(void *arg) {
  releaser *r = arg;
  usleep(300 * 1000);
  pthread_mutex_lock(&r->b->mu);
  r->released = 1;
  r->b->hold = 0;
  pthread_cond_broadcast(&r->b->cv);
  pthread_mutex_unlock(&r->b->mu);
  return NULL;
}

START_TEST(test_free_waits) {
  env e;
  env_up(&e, 1);
  cblog *l = calloc(1, sizeof(*l));
  char ga[160];
  guest_path(&e, ga, sizeof(ga), "a");
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event, l, on_destroy, NULL), 0);
  e.b.hold = 1;
  hm_mount_spec *s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add_async(e.inst, s, on_add, l, on_destroy, NULL), 0);
  hm_mount_spec_free(s);
  /* Wait until the worker is inside attach. */
  for (int i = 0; i < 2000; i++) {
    pthread_mutex_lock(&e.b.mu);
    int held = e.b.held;
    pthread_mutex_unlock(&e.b.mu);
    if (held)
      break;
    usleep(10000);
  }
  ck_assert_int_eq(e.b.held, 1);
  releaser r = {&e.b, 0};
  pthread_t t;
  pthread_create(&t, NULL, release_later, &r);
  hm_instance_free(e.inst); /* must wait for the add, then drop its completion */
  e.inst = NULL;
  pthread_mutex_lock(&e.b.mu);
  ck_assert_int_eq(r.released, 1);
  ck_assert_int_eq(e.b.held, 0);
  ck_assert_int_eq(e.b.destroy_calls, 1);
  pthread_mutex_unlock(&e.b.mu);
  pthread_join(t, NULL);
  /* The add finished (it is recorded), nobody was called back, and both
   * destroys ran: the event callback's and the add's. */
  ck_assert(is_mount_point(ga));
  char state[160];
  snprintf(state, sizeof(state), "%s/state.json", e.dir);
  ck_assert_ptr_nonnull(read_file(state));
  ck_assert_ptr_nonnull(strstr(read_file(state), "\"mounted\""));
  ck_assert_int_eq(l->n, 0);
  ck_assert_int_eq(l->destroyed, 2);
  env_down(&e);
  free(l);
}
END_TEST

/* ---- an entry is not read after its owner has let go of it ---- */

/*
 * Once an add or a remove has set busy = 0 and unlocked, a concurrent remove
 * may free the entry: they must not read it after that (issue 16: the add
 * logged "mounted HOST at GUEST", and a remove whose guest unmount failed
 * built its message from the entry, both after the unlock). These tests
 * make the concurrent remove win that race every time instead of once in a
 * blue moon:
 *  - both threads run on one CPU, the slow one (the add, the failing
 *    remove) under SCHED_IDLE, so when its last unlock wakes the fast
 *    remover, that one runs at once and to the end (nothing on its way
 *    blocks: the instance directory is on a tmpfs and the backend's unmount
 *    and detach do nothing) before the slow one goes on;
 *  - the fast one must be waiting on the lock at that unlock: state.json is
 *    made a directory, so every save fails and logs a warning while the lock
 *    is held, and the log callback sleeps when the slow thread logs it.
 * A read after the unlock is then a read of freed memory: ASan and TSan
 * report it (the loop suite runs in both sanitizer passes of tests/run.sh).
 * Without a sanitizer the messages are checked to name the right paths.
 */
static __thread int is_slow;
static pthread_mutex_t race_mu = PTHREAD_MUTEX_INITIALIZER;
static char race_mounted[512];
static int race_slow_saved; /* the slow thread is inside its first critical section */

static void race_log(int level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  if (strncmp(msg, "mounted ", 8) == 0) {
    pthread_mutex_lock(&race_mu);
    snprintf(race_mounted, sizeof(race_mounted), "%s", msg);
    pthread_mutex_unlock(&race_mu);
  }
  if (is_slow && strstr(msg, "state.json")) {
    __atomic_store_n(&race_slow_saved, 1, __ATOMIC_SEQ_CST);
    usleep(50 * 1000); /* the fast remover gets to wait on the instance lock */
  }
}

typedef struct race {
  env *e;
  const char *guest;
  int slow_r, remove_r, tries;
  char slow_msg[512];
} race;

static void slow_thread_setup(void) {
  is_slow = 1;
  struct sched_param sp = {0};
  ck_assert_int_eq(pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp), 0);
}

static void *race_add(void *arg) {
  race *rc = arg;
  slow_thread_setup();
  hm_mount_spec *s = spec_of(rc->e->share, rc->guest);
  hm_error *err = NULL;
  rc->slow_r = hm_instance_add(rc->e->inst, NULL, s, &err);
  snprintf(rc->slow_msg, sizeof(rc->slow_msg), "%s", err ? hm_error_message(err) : "");
  hm_error_free(err);
  hm_mount_spec_free(s);
  return NULL;
}

static void *race_failing_remove(void *arg) {
  race *rc = arg;
  slow_thread_setup();
  hm_error *err = NULL;
  rc->slow_r = hm_instance_remove(rc->e->inst, rc->guest, 0, &err);
  snprintf(rc->slow_msg, sizeof(rc->slow_msg), "%s", err ? hm_error_message(err) : "");
  hm_error_free(err);
  return NULL;
}

static void *race_remove(void *arg) {
  race *rc = arg;
  /* Until the entry exists and is no longer busy: NOT_FOUND, then BUSY. */
  for (rc->tries = 0; rc->tries < 20000; rc->tries++) {
    if (__atomic_load_n(&race_slow_saved, __ATOMIC_SEQ_CST)) {
      rc->remove_r = hm_instance_remove(rc->e->inst, rc->guest, 0, NULL);
      if (rc->remove_r != HM_E_NOT_FOUND && rc->remove_r != HM_E_BUSY)
        break;
    }
    usleep(200);
  }
  return NULL;
}

typedef struct race_env {
  env e;
  char base[64], guest[160], state[160];
} race_env;

/* An instance on a private tmpfs whose backend mounts nothing. */
static void race_up(race_env *r) {
  snprintf(r->base, sizeof(r->base), "/tmp/hm-race-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(r->base));
  ck_assert_int_eq(mount("tmpfs", r->base, "tmpfs", 0, "size=8m,mode=0755"), 0);
  env_up_in(&r->e, 1, r->base);
  r->e.b.mounts = 0; /* own guest mounts (no agent), but no mount(2): nothing blocks */
  guest_path(&r->e, r->guest, sizeof(r->guest), "a");
  snprintf(r->state, sizeof(r->state), "%s/state.json", r->e.dir);
  race_mounted[0] = '\0';
  race_slow_saved = 0;
}

/* Every save fails from here on, then slow and the fast remover race. */
static void race_run(race_env *r, race *rc, void *(*slow)(void *)) {
  unlink(r->state);
  ck_assert_int_eq(mkdir(r->state, 0700), 0);
  hm_set_log_callback(race_log, HM_LOG_INFO, NULL, NULL);
  cpu_set_t one, saved;
  ck_assert_int_eq(sched_getaffinity(0, sizeof(saved), &saved), 0);
  CPU_ZERO(&one);
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &saved)) {
      CPU_SET(c, &one);
      break;
    }
  ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0); /* inherited by both threads */
  *rc = (race){&r->e, r->guest, -1, -1, 0, ""};
  pthread_t ts, tf;
  ck_assert_int_eq(pthread_create(&tf, NULL, race_remove, rc), 0);
  ck_assert_int_eq(pthread_create(&ts, NULL, slow, rc), 0);
  pthread_join(ts, NULL);
  pthread_join(tf, NULL);
  sched_setaffinity(0, sizeof(saved), &saved);
  hm_set_log_callback(NULL, HM_LOG_INFO, NULL, NULL);
  ck_assert_msg(rc->remove_r == 0, "remove: %d after %d tries", rc->remove_r, rc->tries);
}

static void race_down(race_env *r) {
  rmdir(r->state);
  env_down(&r->e);
  umount2(r->base, MNT_DETACH);
  rmdir(r->base);
}

START_TEST(test_add_no_read_after_release) {
  race_env r;
  race rc;
  race_up(&r);
  race_run(&r, &rc, race_add);
  ck_assert_msg(rc.slow_r == 0, "add: %d %s", rc.slow_r, rc.slow_msg);
  char want[512];
  snprintf(want, sizeof(want), "mounted %s at %s (", r.e.share, r.guest);
  ck_assert_msg(strncmp(race_mounted, want, strlen(want)) == 0, "logged \"%s\", want \"%s...\"",
                race_mounted, want);
  race_down(&r);
}
END_TEST

START_TEST(test_failed_remove_no_read_after_release) {
  race_env r;
  race rc;
  race_up(&r);
  hm_mount_spec *s = spec_of(r.e.share, r.guest);
  hm_error *err = NULL;
  ck_assert_msg(hm_instance_add(r.e.inst, NULL, s, &err) == 0, "%s", hm_error_message(err));
  hm_mount_spec_free(s);
  r.e.b.fail_umounts = 1; /* the slow remove's guest unmount fails, the fast one's works */
  race_run(&r, &rc, race_failing_remove);
  char want[512];
  snprintf(want, sizeof(want), "hm_instance_remove: guest unmount of %s failed (retry with force)",
           r.guest);
  ck_assert_msg(rc.slow_r < 0 && strncmp(rc.slow_msg, want, strlen(want)) == 0,
                "failing remove: %d \"%s\", want \"%s...\"", rc.slow_r, rc.slow_msg, want);
  race_down(&r);
}
END_TEST

static int start_agent(env *e) {
  const char *bin = getenv("HM_AGENT_BIN");
  if (!bin || access(bin, X_OK) != 0) {
    fprintf(stderr, "HM_AGENT_BIN (%s) is not built: SKIPPING the agent-backed test\n",
            bin ? bin : "unset");
    return -1;
  }
  char path[100];
  snprintf(path, sizeof(path), "%s/agent.sock", e->dir);
  e->agent = fork();
  ck_assert_int_ge(e->agent, 0);
  if (e->agent == 0) {
    execl(bin, bin, "--socket", path, (char *)NULL);
    _exit(127);
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  for (int i = 0; i < 500; i++) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    if (ok)
      return 0;
    usleep(10000);
  }
  ck_abort_msg("the agent did not start listening on %s", path);
  return -1;
}

/* Through the real agent: the host has no virtiofs tag to mount, so the add
 * fails in the guest step and must be rolled back; done says why. */
START_TEST(test_agent_failure) {
  env e;
  env_up(&e, 0);
  if (start_agent(&e) < 0) {
    env_down(&e);
    return;
  }
  cblog *l = calloc(1, sizeof(*l));
  char ga[160];
  guest_path(&e, ga, sizeof(ga), "c");
  ck_assert_int_eq(hm_instance_set_mount_timeout(e.inst, 300, NULL), 0);
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event, l, NULL, NULL), 0);
  hm_mount_spec *s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add_async(e.inst, s, on_add, l, NULL, NULL), 0);
  hm_mount_spec_free(s);
  dispatch_until_done(&e, l);
  /* The agent waited for virtiofs tag bind-hm-1, which never comes; the
   * rollback detached. */
  ck_assert_int_eq(l->n, 3);
  expect_event(l, 0, ga, HM_STATE_REMOVED, HM_STATE_ATTACHING);
  expect_event(l, 1, ga, HM_STATE_ATTACHING, HM_STATE_REMOVED);
  ck_assert_str_eq(l->v[2].what, "add");
  ck_assert_int_lt(l->v[2].a, 0);
  ck_assert_int_eq(l->v[2].a, l->v[2].b);
  ck_assert_msg(strstr(l->v[2].msg, "bind-hm-1"), "%s", l->v[2].msg);
  ck_assert_msg(strncmp(l->v[2].msg, "hm_", 3) == 0, "%s", l->v[2].msg);
  pthread_mutex_lock(&e.b.mu);
  ck_assert_int_eq(e.b.attach_calls, 1);
  ck_assert_int_eq(e.b.detach_calls, 1);
  pthread_mutex_unlock(&e.b.mu);
  hm_mount_list *ml = NULL;
  ck_assert_int_eq(hm_instance_list(e.inst, &ml, NULL), 0);
  ck_assert_uint_eq(hm_mount_list_count(ml), 0);
  hm_mount_list_free(ml);
  env_down(&e);
  free(l);
}
END_TEST

/* Nobody dispatches: the queue stops at HM_EVENT_QUEUE_MAX and one marker
 * stands for the rest. */
START_TEST(test_overflow) {
  env e;
  env_up(&e, 1);
  cblog *l = calloc(1, sizeof(*l));
  char ga[160];
  guest_path(&e, ga, sizeof(ga), "a");
  hm_mount_spec *s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add(e.inst, NULL, s, NULL), 0);
  hm_mount_spec_free(s);
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event, l, NULL, NULL), 0);
  int fd = hm_instance_get_fd(e.inst);
  /* Flip the entry's state through the library's own hook, as the monitor
   * and add/remove do. */
  pthread_mutex_lock(&e.inst->lock);
  ck_assert_uint_eq(e.inst->n_entries, 1);
  hm_entry *ent = e.inst->entries[0];
  for (int i = 0; i < HM_EVENT_QUEUE_MAX + 500; i++)
    hm_inst_set_state_locked(e.inst, ent, i % 2 ? HM_STATE_MOUNTED : HM_STATE_BROKEN, NULL);
  pthread_mutex_unlock(&e.inst->lock);
  ck_assert(fd_readable(fd, 0));
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), HM_EVENT_QUEUE_MAX + 1);
  ck_assert_int_eq(l->n, HM_EVENT_QUEUE_MAX + 1);
  expect_event(l, 0, ga, HM_STATE_MOUNTED, HM_STATE_BROKEN);
  expect_event(l, HM_EVENT_QUEUE_MAX - 1, ga, HM_STATE_BROKEN, HM_STATE_MOUNTED);
  expect_event(l, HM_EVENT_QUEUE_MAX, "(overflow)", HM_STATE_REMOVED, HM_STATE_REMOVED);
  ck_assert(!fd_readable(fd, 0));
  /* And it works again afterwards. */
  ck_assert_int_eq(hm_instance_remove(e.inst, ga, 0, NULL), 0);
  ck_assert(fd_readable(fd, 0));
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), 2);
  expect_event(l, HM_EVENT_QUEUE_MAX + 2, ga, HM_STATE_DETACHING, HM_STATE_REMOVED);
  env_down(&e);
  free(l);
}
END_TEST

static void on_event_then_stop(hm_instance *inst, const hm_mount *m, int old_state, int new_state,
                               void *ud) {
  on_event(inst, m, old_state, new_state, ud);
  ck_assert_int_eq(hm_instance_set_event_callback(inst, NULL, NULL, NULL, NULL), 0);
}

/* A callback that removes the callback: the rest of the batch is not
 * delivered to the old one (whose user data its destroy just released). */
START_TEST(test_replace_in_callback) {
  env e;
  env_up(&e, 1);
  cblog *l = calloc(1, sizeof(*l));
  char ga[160];
  guest_path(&e, ga, sizeof(ga), "a");
  ck_assert_int_eq(hm_instance_set_event_callback(e.inst, on_event_then_stop, l, on_destroy, NULL),
                   0);
  hm_mount_spec *s = spec_of(e.share, ga);
  ck_assert_int_eq(hm_instance_add(e.inst, NULL, s, NULL), 0); /* two events queued */
  hm_mount_spec_free(s);
  ck_assert_int_eq(hm_instance_dispatch(e.inst, NULL), 1);
  ck_assert_int_eq(l->n, 1);
  expect_event(l, 0, ga, HM_STATE_REMOVED, HM_STATE_ATTACHING);
  ck_assert_int_eq(l->destroyed, 1);
  ck_assert(!fd_readable(hm_instance_get_fd(e.inst), 0));
  env_down(&e);
  ck_assert_int_eq(l->destroyed, 1);
  free(l);
}
END_TEST

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  Suite *s = suite_create("loop");
  TCase *tc = tcase_create("loop");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_dispatch_add_remove);
  tcase_add_test(tc, test_gmain);
  tcase_add_test(tc, test_free_waits);
  tcase_add_test(tc, test_agent_failure);
  tcase_add_test(tc, test_overflow);
  tcase_add_test(tc, test_replace_in_callback);
  tcase_add_test(tc, test_add_no_read_after_release);
  tcase_add_test(tc, test_failed_remove_no_read_after_release);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
