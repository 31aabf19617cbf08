/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --notify pieces without a guest: the host watcher (lib/notify/watcher.c)
 * on a real directory (create, modify, nested directories made at once,
 * delete, rename, a burst with coalescing, symlinks not followed, the echo
 * rule, the watch limit, no descriptor or thread left after stop), the
 * relative path rule both sides apply, and the notify op of the agent
 * protocol (encode, strict decode, hostile input).
 */
#include "core/agent_proto.h"
#include "core/mount_internal.h"
#include "notify/notify.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- a sink that records what it got ---- */

struct rec {
  pthread_mutex_t lock;
  char **kind_path; /* "create a/b" */
  size_t n, cap;
  unsigned calls, empty_calls;
};

static void sink(void *user, const hm_notify_event *ev, size_t n) {
  struct rec *r = user;
  pthread_mutex_lock(&r->lock);
  r->calls++;
  if (n == 0)
    r->empty_calls++;
  for (size_t i = 0; i < n; i++) {
    if (r->n == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 64;
      r->kind_path = realloc(r->kind_path, r->cap * sizeof(char *));
    }
    char *s = NULL;
    ck_assert_int_ge(asprintf(&s, "%s %s", hm_notify_kind_name(ev[i].kind), ev[i].path), 0);
    r->kind_path[r->n++] = s;
  }
  pthread_mutex_unlock(&r->lock);
}

static int count(struct rec *r, const char *what) {
  int c = 0;
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < r->n; i++)
    c += strcmp(r->kind_path[i], what) == 0;
  pthread_mutex_unlock(&r->lock);
  return c;
}

/* Waits up to 3 s for what to have been recorded at least once. */
static int wait_for(struct rec *r, const char *what) {
  for (int i = 0; i < 300; i++) {
    if (count(r, what))
      return 1;
    usleep(10000);
  }
  return 0;
}

static void rec_clear(struct rec *r) {
  for (size_t i = 0; i < r->n; i++)
    free(r->kind_path[i]);
  free(r->kind_path);
  memset(r, 0, sizeof(*r));
  pthread_mutex_init(&r->lock, NULL);
}

static int inotify_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *de;
  char path[300], link[64];
  while (d && (de = readdir(d))) {
    snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
    ssize_t l = readlink(path, link, sizeof(link) - 1);
    if (l > 0) {
      link[l] = '\0';
      n += strcmp(link, "anon_inode:inotify") == 0;
    }
  }
  if (d)
    closedir(d);
  return n;
}

static int threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *de;
  while (d && (de = readdir(d)))
    n += de->d_name[0] != '.';
  if (d)
    closedir(d);
  return n;
}

static char tmp[200];

static void mk(const char *rel, const char *text) {
  char p[600];
  snprintf(p, sizeof(p), "%s/%s", tmp, rel);
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static void mkd(const char *rel) {
  char p[600];
  snprintf(p, sizeof(p), "%s/%s", tmp, rel);
  ck_assert_int_eq(mkdir(p, 0755), 0);
}

static void setup(void) {
  snprintf(tmp, sizeof(tmp), "/tmp/hm-notify-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void teardown(void) {
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_watch_events) {
  struct rec r;
  memset(&r, 0, sizeof(r));
  rec_clear(&r);
  mkd("sub");
  mk("old.txt", "old\n");
  int fds0 = inotify_fds(), th0 = threads();
  hm_notify_watcher *w = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_notify_watcher_start(&w, tmp, sink, &r, &err), 0);
  ck_assert_int_eq(hm_notify_watcher_wait_ready(w, 5000), 0);
  ck_assert_int_eq(inotify_fds(), fds0 + 1);
  hm_notify_stats st;
  hm_notify_watcher_stats(w, &st);
  ck_assert_uint_eq(st.dirs, 2); /* the root and sub */
  ck_assert_uint_eq(r.empty_calls, 1);

  mk("new.txt", "x");
  ck_assert(wait_for(&r, "create new.txt"));
  mk("old.txt", "changed\n");
  ck_assert(wait_for(&r, "modify old.txt"));
  mk("sub/nested.txt", "x");
  ck_assert(wait_for(&r, "create sub/nested.txt"));
  /* a tree made at once: the walk of the new directories reports what
   * was made before their watches existed, and watches them */
  char p[1200];
  snprintf(p, sizeof(p), "mkdir -p '%s/t/u/v' && echo x > '%s/t/u/v/deep.txt'", tmp, tmp);
  ck_assert_int_eq(system(p), 0);
  ck_assert(wait_for(&r, "create t/u/v/deep.txt"));
  mk("t/u/v/later.txt", "x");
  ck_assert(wait_for(&r, "create t/u/v/later.txt"));
  /* delete and rename */
  snprintf(p, sizeof(p), "%s/new.txt", tmp);
  ck_assert_int_eq(unlink(p), 0);
  ck_assert(wait_for(&r, "delete new.txt"));
  char q[600];
  snprintf(p, sizeof(p), "%s/old.txt", tmp);
  snprintf(q, sizeof(q), "%s/sub/moved.txt", tmp);
  ck_assert_int_eq(rename(p, q), 0);
  ck_assert(wait_for(&r, "delete old.txt"));
  ck_assert(wait_for(&r, "rename sub/moved.txt"));
  /* a directory moved away is no longer watched: nothing from inside it */
  snprintf(p, sizeof(p), "%s/t", tmp);
  snprintf(q, sizeof(q), "%s/../%s-away", tmp, strrchr(tmp, '/') + 1);
  ck_assert_int_eq(rename(p, q), 0);
  ck_assert(wait_for(&r, "delete t"));
  snprintf(p, sizeof(p), "echo y > '%s/u/v/gone.txt'", q);
  ck_assert_int_eq(system(p), 0);
  usleep(200000);
  ck_assert_int_eq(count(&r, "create t/u/v/gone.txt"), 0);
  snprintf(p, sizeof(p), "rm -rf '%s'", q);
  ck_assert_int_eq(system(p), 0);

  /* a symlink to a directory outside is reported, never followed */
  snprintf(p, sizeof(p), "%s/out", tmp);
  ck_assert_int_eq(symlink("/etc", p), 0);
  ck_assert(wait_for(&r, "create out"));
  hm_notify_watcher_stats(w, &st);
  ck_assert_uint_eq(st.dirs, 2 + 0); /* t and below went away; /etc is not watched */

  /* the echo rule: a change that leaves mtime, size, inode and mode as they
   * were (what the agent's touch does) is not sent again */
  mk("e.txt", "e");
  ck_assert(wait_for(&r, "create e.txt"));
  usleep(100000);
  snprintf(p, sizeof(p), "%s/e.txt", tmp);
  struct stat sb;
  ck_assert_int_eq(stat(p, &sb), 0);
  struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, sb.st_mtim};
  ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
  usleep(300000);
  ck_assert_int_eq(count(&r, "attrib e.txt") + count(&r, "modify e.txt"), 0);
  hm_notify_watcher_stats(w, &st);
  ck_assert_uint_ge(st.suppressed, 1);
  /* a real change of the same file is sent */
  ck_assert_int_eq(chmod(p, 0600), 0);
  ck_assert(wait_for(&r, "attrib e.txt"));

  hm_notify_watcher_stop(w);
  ck_assert_int_eq(inotify_fds(), fds0);
  ck_assert_int_eq(threads(), th0);
  rec_clear(&r);
}
END_TEST

START_TEST(test_burst) {
  struct rec r;
  memset(&r, 0, sizeof(r));
  rec_clear(&r);
  hm_notify_watcher *w = NULL;
  ck_assert_int_eq(hm_notify_watcher_start(&w, tmp, sink, &r, NULL), 0);
  ck_assert_int_eq(hm_notify_watcher_wait_ready(w, 5000), 0);
  for (int i = 0; i < 1000; i++) {
    char n[32];
    snprintf(n, sizeof(n), "b%04d", i);
    mk(n, "x"); /* each file written twice in a row: 6 inotify events */
    mk(n, "y");
  }
  char last[32];
  snprintf(last, sizeof(last), "create b0999");
  ck_assert(wait_for(&r, last) || wait_for(&r, "modify b0999"));
  usleep(200000);
  int missing = 0;
  for (int i = 0; i < 1000; i++) {
    char a[32], b[32];
    snprintf(a, sizeof(a), "create b%04d", i);
    snprintf(b, sizeof(b), "modify b%04d", i);
    missing += count(&r, a) + count(&r, b) == 0;
  }
  ck_assert_int_eq(missing, 0);
  /* coalesced: about one event per file, not the 6000 inotify reported */
  ck_assert_uint_lt(r.n, 1500);
  ck_assert_uint_le(r.calls, r.n);
  hm_notify_watcher_stop(w);
  rec_clear(&r);
}
END_TEST

/* A sink that stalls once: the watcher stops reading, the kernel's queue
 * overflows, and the rescan must still report every file. */
static volatile int stall_once, released;
static void slow_sink(void *user, const hm_notify_event *ev, size_t n) {
  if (n && stall_once) {
    stall_once = 0;
    for (int i = 0; i < 3000 && !released; i++) /* until the test has made its files */
      usleep(10000);
  }
  sink(user, ev, n);
}

START_TEST(test_overflow) {
  struct rec r;
  memset(&r, 0, sizeof(r));
  rec_clear(&r);
  FILE *f = fopen("/proc/sys/fs/inotify/max_queued_events", "r");
  long maxq = 16384;
  if (f) {
    ck_assert_int_eq(fscanf(f, "%ld", &maxq), 1);
    fclose(f);
  }
  hm_notify_watcher *w = NULL;
  stall_once = 1;
  released = 0;
  ck_assert_int_eq(hm_notify_watcher_start(&w, tmp, slow_sink, &r, NULL), 0);
  ck_assert_int_eq(hm_notify_watcher_wait_ready(w, 5000), 0);
  mk("first", "x"); /* the batch whose sink call stalls */
  usleep(100000);
  int files = (int)maxq + 2000; /* one IN_CREATE each at least: more than the queue holds */
  if (files > 60000)
    files = 60000;
  for (int i = 0; i < files; i++) {
    char n[32];
    snprintf(n, sizeof(n), "o%05d", i);
    mk(n, "x");
  }
  released = 1;
  hm_notify_stats st;
  for (int i = 0; i < 1000; i++) {
    hm_notify_watcher_stats(w, &st);
    if (st.overflows && st.sent >= (unsigned long)files)
      break;
    usleep(10000);
  }
  ck_assert_uint_ge(st.overflows, 1);
  usleep(300000);
  char *seen = calloc((size_t)files, 1);
  pthread_mutex_lock(&r.lock);
  for (size_t i = 0; i < r.n; i++) {
    int k;
    if (sscanf(r.kind_path[i], "%*s o%d", &k) == 1 && k >= 0 && k < files)
      seen[k] = 1;
  }
  pthread_mutex_unlock(&r.lock);
  int missing = 0;
  for (int i = 0; i < files; i++)
    missing += !seen[i];
  free(seen);
  ck_assert_int_eq(missing, 0);
  hm_notify_watcher_stop(w);
  rec_clear(&r);
}
END_TEST

START_TEST(test_start_errors) {
  hm_notify_watcher *w = (hm_notify_watcher *)1;
  hm_error *err = NULL;
  struct rec r;
  memset(&r, 0, sizeof(r));
  ck_assert_int_eq(hm_notify_watcher_start(&w, "relative", sink, &r, &err), HM_E_INVALID);
  ck_assert_ptr_null(w);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "hm_notify_watcher_start"));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_notify_watcher_start(&w, "/nonexistent/dir", sink, &r, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "/nonexistent/dir"));
  hm_error_free(err);
  hm_notify_watcher_stop(NULL);
}
END_TEST

START_TEST(test_path_rule) {
  const char *why = NULL;
  static const char *const good[] = {"a",   "a/b",    "dir with space/f,comma'q", "ünïcödé", "..a",
                                     "a..", ".hidden"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    ck_assert_msg(hm_notify_path_check(good[i], &why) == 0, "%s: %s", good[i], why);
  static const char *const bad[] = {"",      "/abs",     "..",      "a/..", "../x",
                                    "a/./b", ".",        "a//b",    "a/",   "new\nline",
                                    "tab\t", "\xff\xfe", "\xc0\xaf"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ck_assert_msg(hm_notify_path_check(bad[i], &why) == -EINVAL, "accepted %s", bad[i]);
  char longc[300];
  memset(longc, 'a', 256);
  longc[256] = '\0';
  ck_assert_int_eq(hm_notify_path_check(longc, &why), -EINVAL);
  ck_assert_ptr_nonnull(strstr(why, "255"));
}
END_TEST

START_TEST(test_protocol) {
  hm_notify_event ev[2] = {{HM_NOTIFY_CREATE, "a/b.txt"}, {HM_NOTIFY_DELETE, "c"}};
  hm_agent_request req = {
      .id = 9, .op = HM_AGENT_OP_NOTIFY, .target = "/mnt/x", .events = ev, .n_events = 2};
  char *line = NULL;
  ck_assert_int_eq(hm_agent_request_encode(&line, &req, NULL), 0);
  hm_agent_request got;
  ck_assert_int_eq(hm_agent_request_decode(&got, line, strlen(line) - 1, NULL), 0);
  ck_assert_int_eq(got.op, HM_AGENT_OP_NOTIFY);
  ck_assert_str_eq(got.target, "/mnt/x");
  ck_assert_uint_eq(got.n_events, 2);
  ck_assert_int_eq(got.events[1].kind, HM_NOTIFY_DELETE);
  ck_assert_str_eq(got.events[0].path, "a/b.txt");
  hm_agent_request_clear(&got);
  free(line);
  /* an empty batch (prepare) is fine */
  req.n_events = 0;
  ck_assert_int_eq(hm_agent_request_encode(&line, &req, NULL), 0);
  ck_assert_int_eq(hm_agent_request_decode(&got, line, strlen(line) - 1, NULL), 0);
  hm_agent_request_clear(&got);
  free(line);
  /* the encoder refuses what the agent would */
  hm_notify_event badev = {HM_NOTIFY_MODIFY, "../etc/passwd"};
  req.events = &badev;
  req.n_events = 1;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_agent_request_encode(&line, &req, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), ".."));
  hm_error_free(err);
  /* hostile requests: each refused with a message naming the problem */
  static const char *const hostile[][2] = {
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[{\"kind\":\"create\","
       "\"path\":\"/etc/passwd\"}]}",
       "absolute"},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[{\"kind\":\"create\","
       "\"path\":\"a/../../x\"}]}",
       ".."},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[{\"kind\":\"explode\","
       "\"path\":\"a\"}]}",
       "unknown kind"},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[{\"kind\":\"create\","
       "\"path\":\"a\",\"extra\":1}]}",
       "unknown field"},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[\"a\"]}", "not an object"},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":{}}", "array"},
      {"{\"id\":1,\"op\":\"notify\",\"events\":[]}", "target"},
      {"{\"id\":1,\"op\":\"notify\",\"target\":\"/mnt/x\",\"events\":[{\"kind\":\"create\","
       "\"path\":\"a\\u0000b\"}]}",
       "NUL"},
  };
  for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
    err = NULL;
    int r = hm_agent_request_decode(&got, hostile[i][0], strlen(hostile[i][0]), &err);
    ck_assert_msg(r == HM_E_PROTOCOL && strstr(hm_error_message(err), hostile[i][1]),
                  "case %zu: %d %s", i, r, err ? hm_error_message(err) : "");
    ck_assert_int_eq(got.id, 1);
    hm_error_free(err);
    hm_agent_request_clear(&got);
  }
  /* more than a batch */
  size_t cap = 64 + 40 * (HM_NOTIFY_MAX_BATCH + 1);
  char *big = malloc(cap);
  size_t o =
      (size_t)snprintf(big, cap, "{\"id\":1,\"op\":\"notify\",\"target\":\"/m\",\"events\":[");
  for (int i = 0; i <= HM_NOTIFY_MAX_BATCH; i++)
    o += (size_t)snprintf(big + o, cap - o, "%s{\"kind\":\"create\",\"path\":\"f%d\"}",
                          i ? "," : "", i);
  o += (size_t)snprintf(big + o, cap - o, "]}");
  err = NULL;
  ck_assert_int_eq(hm_agent_request_decode(&got, big, o, &err), HM_E_PROTOCOL);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "events"));
  hm_error_free(err);
  hm_agent_request_clear(&got);
  free(big);
}
END_TEST

/* The spec's notify flag through the API body, the mount JSON (list, state)
 * and the setters. */
START_TEST(test_json_field) {
  hm_mount_spec *s = NULL;
  const char *body = "{\"hostPath\":\"/srv/x\",\"mountPoint\":\"/mnt/x\",\"notify\":true}";
  ck_assert_int_eq(hm_mount_spec_from_json(&s, body, strlen(body), NULL), 0);
  ck_assert_int_eq(hm_mount_spec_get_notify(s), 1);
  json_object *o = hm_mount_spec_to_json_object(s);
  ck_assert_ptr_nonnull(
      strstr(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), "\"notify\":true"));
  json_object_put(o);
  hm_mount *m = NULL;
  ck_assert_int_eq(hm_mount_build(&m, "hm-1", s, "t", NULL, HM_STATE_MOUNTED, NULL), 0);
  ck_assert_int_eq(hm_mount_get_notify(m), 1);
  o = hm_mount_to_json_object(m);
  hm_mount *back = NULL;
  ck_assert_int_eq(hm_mount_from_json_object(&back, o, NULL), 0);
  ck_assert_int_eq(hm_mount_get_notify(back), 1);
  json_object_put(o);
  hm_mount_free(back);
  hm_mount_free(m);
  ck_assert_int_eq(hm_mount_spec_set_notify(s, 0, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_get_notify(s), 0);
  hm_mount_spec_free(s);
  /* default off; a wrong type is refused naming the member */
  body = "{\"hostPath\":\"/srv/x\",\"mountPoint\":\"/mnt/x\"}";
  ck_assert_int_eq(hm_mount_spec_from_json(&s, body, strlen(body), NULL), 0);
  ck_assert_int_eq(hm_mount_spec_get_notify(s), 0);
  hm_mount_spec_free(s);
  body = "{\"hostPath\":\"/srv/x\",\"mountPoint\":\"/mnt/x\",\"notify\":\"yes\"}";
  hm_error *err = NULL;
  ck_assert_int_eq(hm_mount_spec_from_json(&s, body, strlen(body), &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "notify"));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_mount_spec_set_notify(NULL, 1, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "hm_mount_spec_set_notify"));
  hm_error_free(err);
  ck_assert_int_eq(hm_mount_spec_get_notify(NULL), 0);
  ck_assert_int_eq(hm_mount_get_notify(NULL), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("notify");
  TCase *tc = tcase_create("watcher");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_watch_events);
  tcase_add_test(tc, test_burst);
  tcase_add_test(tc, test_overflow);
  suite_add_tcase(s, tc);
  TCase *tp = tcase_create("rules");
  tcase_add_test(tp, test_start_errors);
  tcase_add_test(tp, test_path_rule);
  tcase_add_test(tp, test_protocol);
  tcase_add_test(tp, test_json_field);
  suite_add_tcase(s, tp);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
