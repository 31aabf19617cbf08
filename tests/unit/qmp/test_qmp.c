/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The QMP client against fake_qmp, a scripted server on a real unix socket. */
#include "qmp.h"
#include "fake_qmp.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FAKE_QMP_EXE
#error "FAKE_QMP_EXE must point at the fake-qmp executable"
#endif
#ifndef FAKE_QMP_DIR
#error "FAKE_QMP_DIR must point at tests/fakes/qmp"
#endif

#define CAPS "{\"expect\": \"qmp_capabilities\", \"reply\": {\"return\": {}}}"

static char tmpdir[64];
static char sock[128];
static fake_qmp *fake;

static void setup(void) {
  strcpy(tmpdir, "/tmp/hm-qmp-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  snprintf(sock, sizeof(sock), "%s/qmp.sock", tmpdir);
  fake = NULL;
}

static void teardown(void) {
  fake_qmp_free(fake);
  fake = NULL;
  unlink(sock);
  rmdir(tmpdir);
}

static void start_json(const char *json) {
  char *msg = NULL;
  fake = fake_qmp_start_json(sock, json, &msg);
  ck_assert_msg(fake != NULL, "fake_qmp_start_json: %s", msg ? msg : "?");
}

static void start_file(const char *name) {
  char path[512], *msg = NULL;
  snprintf(path, sizeof(path), "%s/%s", FAKE_QMP_DIR, name);
  fake = fake_qmp_start(sock, path, &msg);
  ck_assert_msg(fake != NULL, "fake_qmp_start %s: %s", path, msg ? msg : "?");
}

static hm_qmp *connect_ok(void) {
  hm_qmp *q = NULL;
  hm_error *err = NULL;
  int r = hm_qmp_connect(&q, sock, 5000, &err);
  ck_assert_msg(r == 0, "hm_qmp_connect: %d %s", r, hm_error_message(err));
  ck_assert_ptr_nonnull(q);
  ck_assert_ptr_null(err);
  return q;
}

/* Closes the client, then checks the fake saw exactly its transcript. */
static void finish_ok(hm_qmp *q) {
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
  ck_assert_msg(fake_qmp_ok(fake), "fake: %s", fake_qmp_error(fake));
}

static void assert_err(hm_error *err, int code, const char *substr) {
  ck_assert_ptr_nonnull(err);
  ck_assert_int_eq(hm_error_code(err), code);
  ck_assert_msg(strstr(hm_error_message(err), substr), "message \"%s\" lacks \"%s\"",
                hm_error_message(err), substr);
}

START_TEST(test_connect_handshake) {
  start_json("{\"steps\": [" CAPS "]}");
  hm_qmp *q = connect_ok();
  ck_assert_int_eq(hm_qmp_is_connected(q), 1);
  ck_assert_int_eq(fake_qmp_commands(fake), 1);
  ck_assert_int_eq(fake_qmp_steps_done(fake), 1);
  finish_ok(q);
}
END_TEST

START_TEST(test_connect_refused) {
  hm_qmp *q = (hm_qmp *)1;
  hm_error *err = NULL;
  int r = hm_qmp_connect(&q, sock, 1000, &err); /* nobody listens */
  ck_assert_int_eq(r, HM_E_NOT_READY);
  ck_assert_ptr_null(q);
  assert_err(err, HM_E_NOT_READY, "hm_qmp_connect: ");
  assert_err(err, HM_E_NOT_READY, sock);
  hm_error_free(err);
  ck_assert_int_eq(hm_qmp_connect(&q,
                                  "/tmp/x/"
                                  "0123456789012345678901234567890123456789"
                                  "01234567890123456789012345678901234567890123456789"
                                  "0123456789012345678901234567890123456789",
                                  1000, NULL),
                   HM_E_INVALID);
}
END_TEST

START_TEST(test_connect_no_greeting) {
  start_json("{\"greeting\": false, \"steps\": [{\"delay_ms\": 3000}]}");
  hm_qmp *q = NULL;
  hm_error *err = NULL;
  int64_t t0 = hm_now_ms();
  int r = hm_qmp_connect(&q, sock, 200, &err);
  int64_t dt = hm_now_ms() - t0;
  ck_assert_int_eq(r, HM_E_TIMEOUT);
  ck_assert_ptr_null(q);
  assert_err(err, HM_E_TIMEOUT, "greeting");
  ck_assert_int_ge(dt, 190);
  ck_assert_int_lt(dt, 2000);
  hm_error_free(err);
}
END_TEST

START_TEST(test_connect_bad_greeting) {
  start_json("{\"greeting\": {\"hello\": 1}, \"steps\": []}");
  hm_qmp *q = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_connect(&q, sock, 2000, &err), HM_E_PROTOCOL);
  ck_assert_ptr_null(q);
  assert_err(err, HM_E_PROTOCOL, "greeting");
  hm_error_free(err);
}
END_TEST

START_TEST(test_connect_caps_error) {
  start_json("{\"steps\": [{\"expect\": \"qmp_capabilities\", \"reply\": {\"error\": "
             "{\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}}]}");
  hm_qmp *q = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_connect(&q, sock, 2000, &err), HM_E_QMP);
  ck_assert_ptr_null(q);
  assert_err(err, HM_E_QMP, "qmp_capabilities: CommandNotFound: nope");
  assert_err(err, HM_E_QMP, "handshake");
  hm_error_free(err);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
  ck_assert_msg(fake_qmp_ok(fake), "fake: %s", fake_qmp_error(fake));
}
END_TEST

START_TEST(test_connect_fd) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char *msg = NULL;
  fake = fake_qmp_start_fd(sv[1],
                           "{\"steps\": [" CAPS ", {\"expect\": \"query-status\", "
                           "\"reply\": {\"return\": {\"status\": \"running\"}}}]}",
                           &msg);
  ck_assert_msg(fake != NULL, "%s", msg ? msg : "?");
  hm_qmp *q = NULL;
  ck_assert_int_eq(hm_qmp_connect_fd(&q, sv[0], 2000, NULL), 0);
  json_object *ret = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "query-status", NULL, -1, &ret, 2000, NULL), 0);
  json_object *st;
  ck_assert(json_object_object_get_ex(ret, "status", &st));
  ck_assert_str_eq(json_object_get_string(st), "running");
  json_object_put(ret);
  finish_ok(q);
  ck_assert_int_eq(hm_qmp_connect_fd(&q, -1, 100, NULL), HM_E_INVALID);
}
END_TEST

static json_object *find_device(json_object *devices, const char *qdev_id) {
  for (size_t i = 0; i < json_object_array_length(devices); i++) {
    json_object *d = json_object_array_get_idx(devices, i), *id;
    if (json_object_object_get_ex(d, "qdev_id", &id) &&
        strcmp(json_object_get_string(id), qdev_id) == 0)
      return d;
  }
  return NULL;
}

/* Replays a session recorded from QEMU 7.2, with the real replies. */
START_TEST(test_real_session) {
  start_file("real-basic.json");
  hm_qmp *q = connect_ok();
  json_object *ret = NULL, *args;
  hm_error *err = NULL;

  ck_assert_int_eq(hm_qmp_execute(q, "query-pci", NULL, -1, &ret, 2000, NULL), 0);
  json_object *bus0 = json_object_array_get_idx(ret, 0), *devices;
  ck_assert(json_object_object_get_ex(bus0, "devices", &devices));
  ck_assert_ptr_nonnull(find_device(devices, "hm-rp-0"));
  ck_assert_ptr_nonnull(find_device(devices, "hm-rp-1"));
  json_object_put(ret);

  args = json_tokener_parse("{\"path\": \"/machine/peripheral\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "qom-list", args, -1, &ret, 2000, NULL), 0);
  ck_assert_int_eq(json_object_array_length(ret), 4);
  json_object_put(ret);
  json_object_put(args);

  args = json_tokener_parse("{\"driver\": \"virtio-rng-pci\", \"id\": \"bad\", \"bus\": "
                            "\"nosuchbus\"}");
  ret = (json_object *)1;
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, &ret, 2000, &err), HM_E_QMP);
  ck_assert_ptr_null(ret);
  ck_assert_str_eq(hm_error_message(err),
                   "hm_qmp_execute: device_add: GenericError: Bus 'nosuchbus' not found");
  hm_error_free(err);
  err = NULL;
  json_object_put(args);

  args = json_tokener_parse("{\"driver\": \"nosuchdriver\", \"id\": \"bad2\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "device_add: GenericError: 'nosuchdriver' is not a valid device");
  hm_error_free(err);
  err = NULL;
  json_object_put(args);

  args = json_tokener_parse("{\"id\": \"hm-c0\", \"backend\": {\"type\": \"socket\", \"data\": "
                            "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": "
                            "\"/tmp/qrec/c0.sock\"}}, \"server\": true, \"wait\": false}}}");
  ck_assert_int_eq(hm_qmp_execute(q, "chardev-add", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);
  args = json_tokener_parse("{\"id\": \"hm-c0\", \"backend\": {\"type\": \"null\", \"data\": {}}}");
  ck_assert_int_eq(hm_qmp_execute(q, "chardev-add", args, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "chardev-add: GenericError: Chardev with id 'hm-c0' already exists");
  hm_error_free(err);
  err = NULL;
  json_object_put(args);
  /* The rest of the recording is not replayed: the fake must say so. */
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
  ck_assert(!fake_qmp_ok(fake));
  ck_assert_ptr_nonnull(strstr(fake_qmp_error(fake), "client closed the connection while "
                                                     "'chardev-remove' was expected"));
  ck_assert_int_eq(fake_qmp_steps_done(fake), 7);
}
END_TEST

static int match_device(json_object *data, void *ud) {
  json_object *dev;
  return json_object_object_get_ex(data, "device", &dev) &&
         strcmp(json_object_get_string(dev), ud) == 0;
}

/* Real native-hotplug unplug: two DEVICE_DELETED, the device's one second. */
START_TEST(test_real_device_deleted_after_reply) {
  start_file("real-hotplug-native.json");
  hm_qmp *q = connect_ok();
  json_object *args = json_tokener_parse("{\"id\": \"hm-c1\", \"backend\": {\"type\": \"null\", "
                                         "\"data\": {}}}");
  ck_assert_int_eq(hm_qmp_execute(q, "chardev-add", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);
  args = json_tokener_parse("{\"driver\": \"virtio-serial-pci\", \"id\": \"hm-dev1\", "
                            "\"bus\": \"hm-rp-0\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);

  uint64_t seq = hm_qmp_event_seq(q);
  ck_assert_int_eq(seq, 0);
  args = json_tokener_parse("{\"id\": \"hm-dev1\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);
  json_object *data = NULL, *v;
  ck_assert_int_eq(
      hm_qmp_wait_event(q, "DEVICE_DELETED", seq, match_device, "hm-dev1", &data, 2000, NULL), 0);
  ck_assert(json_object_object_get_ex(data, "path", &v));
  ck_assert_str_eq(json_object_get_string(v), "/machine/peripheral/hm-dev1");
  json_object_put(data);
  /* Without a matcher the first one, the virtio-backend child's, wins. */
  ck_assert_int_eq(hm_qmp_wait_event(q, "DEVICE_DELETED", seq, NULL, NULL, &data, 2000, NULL), 0);
  ck_assert(json_object_object_get_ex(data, "path", &v));
  ck_assert_str_eq(json_object_get_string(v), "/machine/peripheral/hm-dev1/virtio-backend");
  ck_assert(!json_object_object_get_ex(data, "device", NULL));
  json_object_put(data);
  ck_assert_int_eq(hm_qmp_event_seq(q), 2);
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
}
END_TEST

START_TEST(test_event_before_reply) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"device_del\", \"arguments\": {\"id\": \"d1\"},"
             " \"before\": [{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d0\"}},"
             " {\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d1\", \"path\": \"/p\"}}],"
             " \"reply\": {\"return\": {}}}]}");
  hm_qmp *q = connect_ok();
  uint64_t seq = hm_qmp_event_seq(q);
  json_object *args = json_tokener_parse("{\"id\": \"d1\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);
  /* Both events are already in the history when the reply returns. */
  ck_assert_int_eq(hm_qmp_event_seq(q), seq + 2);
  json_object *data = NULL, *v;
  int64_t t0 = hm_now_ms();
  ck_assert_int_eq(hm_qmp_wait_event(q, "DEVICE_DELETED", seq, match_device, "d1", &data, 0, NULL),
                   0);
  ck_assert_int_lt(hm_now_ms() - t0, 50);
  ck_assert(json_object_object_get_ex(data, "path", &v));
  ck_assert_str_eq(json_object_get_string(v), "/p");
  json_object_put(data);
  hm_error *err = NULL;
  ck_assert_int_eq(
      hm_qmp_wait_event(q, "DEVICE_DELETED", seq, match_device, "d9", &data, 100, &err),
      HM_E_TIMEOUT);
  ck_assert_ptr_null(data);
  assert_err(err, HM_E_TIMEOUT, "DEVICE_DELETED");
  hm_error_free(err);
  finish_ok(q);
}
END_TEST

START_TEST(test_event_after_reply_and_since) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"a\", \"reply\": {\"return\": {}},"
             " \"after\": [{\"event\": \"E\", \"data\": {\"n\": 1}}]},"
             " {\"expect\": \"b\", \"reply\": {\"return\": {}},"
             " \"after\": [{\"delay_ms\": 150}, {\"event\": \"OTHER\"},"
             " {\"event\": \"E\", \"data\": {\"n\": 2}}]}]}");
  hm_qmp *q = connect_ok();
  json_object *data = NULL, *v;
  ck_assert_int_eq(hm_qmp_execute(q, "a", NULL, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "E", 0, NULL, NULL, &data, 2000, NULL), 0);
  ck_assert(json_object_object_get_ex(data, "n", &v));
  ck_assert_int_eq(json_object_get_int(v), 1);
  json_object_put(data);

  uint64_t seq = hm_qmp_event_seq(q);
  ck_assert_int_eq(seq, 1);
  ck_assert_int_eq(hm_qmp_execute(q, "b", NULL, -1, NULL, 2000, NULL), 0);
  int64_t t0 = hm_now_ms();
  ck_assert_int_eq(hm_qmp_wait_event(q, "E", seq, NULL, NULL, &data, 2000, NULL), 0);
  ck_assert_int_ge(hm_now_ms() - t0, 100); /* it really waited for the late event */
  ck_assert(json_object_object_get_ex(data, "n", &v));
  ck_assert_int_eq(json_object_get_int(v), 2);
  json_object_put(data);
  ck_assert_int_eq(hm_qmp_event_seq(q), 3);
  /* Nothing at or after seq 3 yet. Event without data: out_data stays NULL. */
  ck_assert_int_eq(hm_qmp_wait_event(q, "E", 3, NULL, NULL, &data, 50, NULL), HM_E_TIMEOUT);
  ck_assert_int_eq(hm_qmp_wait_event(q, "OTHER", 0, NULL, NULL, &data, 0, NULL), 0);
  ck_assert_ptr_null(data);
  finish_ok(q);
}
END_TEST

struct cb_state {
  pthread_mutex_t lock;
  char names[8][32];
  int n, destroyed;
  pthread_t thread;
};

static void on_event(const char *event, json_object *data, void *ud) {
  struct cb_state *s = ud;
  pthread_mutex_lock(&s->lock);
  if (s->n < 8)
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", event);
  s->n++;
  s->thread = pthread_self();
  pthread_mutex_unlock(&s->lock);
}

static void on_destroy(void *ud) {
  struct cb_state *s = ud;
  pthread_mutex_lock(&s->lock);
  s->destroyed++;
  pthread_mutex_unlock(&s->lock);
}

START_TEST(test_event_callback) {
  start_json(
      "{\"steps\": [" CAPS ", {\"expect\": \"x\", \"before\": [{\"event\": \"A\"}],"
      " \"reply\": {\"return\": {}}, \"after\": [{\"event\": \"B\"}]},"
      " {\"expect\": \"y\", \"reply\": {\"return\": {}}, \"after\": [{\"event\": \"C\"}]}]}");
  struct cb_state s1 = {.lock = PTHREAD_MUTEX_INITIALIZER};
  struct cb_state s2 = {.lock = PTHREAD_MUTEX_INITIALIZER};
  hm_qmp *q = connect_ok();
  hm_qmp_set_event_callback(q, on_event, &s1, on_destroy);
  ck_assert_int_eq(hm_qmp_execute(q, "x", NULL, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "B", 0, NULL, NULL, NULL, 2000, NULL), 0);
  hm_qmp_set_event_callback(q, on_event, &s2, on_destroy);
  ck_assert_int_eq(s1.destroyed, 1);
  ck_assert_int_eq(s1.n, 2);
  ck_assert_str_eq(s1.names[0], "A");
  ck_assert_str_eq(s1.names[1], "B");
  ck_assert(!pthread_equal(s1.thread, pthread_self())); /* the reader thread */
  ck_assert_int_eq(hm_qmp_execute(q, "y", NULL, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "C", 0, NULL, NULL, NULL, 2000, NULL), 0);
  finish_ok(q);
  ck_assert_int_eq(s1.destroyed, 1);
  ck_assert_int_eq(s1.n, 2);
  ck_assert_int_eq(s2.n, 1);
  ck_assert_str_eq(s2.names[0], "C");
  ck_assert_int_eq(s2.destroyed, 1);
}
END_TEST

START_TEST(test_timeout_then_late_reply_dropped) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"slow\", \"delay_ms\": 400,"
             " \"reply\": {\"return\": {\"which\": \"slow\"}}},"
             " {\"expect\": \"fast\", \"reply\": {\"return\": {\"which\": \"fast\"}}}]}");
  hm_qmp *q = connect_ok();
  hm_error *err = NULL;
  json_object *ret = (json_object *)1, *v;
  int64_t t0 = hm_now_ms();
  ck_assert_int_eq(hm_qmp_execute(q, "slow", NULL, -1, &ret, 100, &err), HM_E_TIMEOUT);
  int64_t dt = hm_now_ms() - t0;
  ck_assert_int_ge(dt, 95);
  ck_assert_int_lt(dt, 350);
  ck_assert_ptr_null(ret);
  assert_err(err, HM_E_TIMEOUT, "hm_qmp_execute: slow: no reply within 100 ms");
  hm_error_free(err);
  ck_assert_int_eq(hm_qmp_is_connected(q), 1);
  /* The slow reply arrives first on the wire; it must not be taken for this one. */
  ck_assert_int_eq(hm_qmp_execute(q, "fast", NULL, -1, &ret, 2000, NULL), 0);
  ck_assert(json_object_object_get_ex(ret, "which", &v));
  ck_assert_str_eq(json_object_get_string(v), "fast");
  json_object_put(ret);
  finish_ok(q);
}
END_TEST

struct waiter {
  hm_qmp *q;
  int is_event;
  int rc;
  int64_t returned_at;
  char msg[256];
};

static void *wait_thread(void *arg) {
  struct waiter *w = arg;
  hm_error *err = NULL;
  if (w->is_event)
    w->rc = hm_qmp_wait_event(w->q, "NEVER", 0, NULL, NULL, NULL, -1, &err);
  else
    w->rc = hm_qmp_execute(w->q, "hang", NULL, -1, NULL, -1, &err);
  w->returned_at = hm_now_ms();
  snprintf(w->msg, sizeof(w->msg), "%s", hm_error_message(err));
  hm_error_free(err);
  return NULL;
}

START_TEST(test_peer_close_wakes_waiters) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"hang\"}, {\"delay_ms\": 200},"
             " {\"close\": true}]}");
  hm_qmp *q = connect_ok();
  struct waiter w[2] = {{.q = q, .is_event = 0}, {.q = q, .is_event = 1}};
  pthread_t t[2];
  int64_t t0 = hm_now_ms();
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, wait_thread, &w[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(w[i].rc, HM_E_NOT_READY);
    ck_assert_int_ge(w[i].returned_at - t0, 150);
    ck_assert_int_lt(w[i].returned_at - t0, 3000);
  }
  ck_assert_msg(strstr(w[0].msg, "hm_qmp_execute: hang: connection closed by QEMU"), "%s",
                w[0].msg);
  ck_assert_int_eq(hm_qmp_is_connected(q), 0);
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "late", NULL, -1, NULL, 2000, &err), HM_E_NOT_READY);
  assert_err(err, HM_E_NOT_READY, "late");
  hm_error_free(err);
  finish_ok(q);
}
END_TEST

START_TEST(test_free_wakes_waiters) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"hang\"}]}");
  hm_qmp *q = connect_ok();
  struct waiter w[2] = {{.q = q, .is_event = 0}, {.q = q, .is_event = 1}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, wait_thread, &w[i]), 0);
  for (int i = 0; i < 200 && fake_qmp_commands(fake) < 2; i++)
    usleep(10000);
  ck_assert_int_eq(fake_qmp_commands(fake), 2);
  usleep(50000); /* let the event waiter block too */
  finish_ok(q);
  for (int i = 0; i < 2; i++) {
    pthread_join(t[i], NULL);
    ck_assert_int_eq(w[i].rc, HM_E_NOT_READY);
  }
}
END_TEST

struct conc {
  hm_qmp *q;
  int n;
  int rc, got;
};

static void *conc_thread(void *arg) {
  struct conc *c = arg;
  json_object *args = json_object_new_object(), *ret = NULL, *v;
  json_object_object_add(args, "n", json_object_new_int(c->n));
  c->rc = hm_qmp_execute(c->q, "echo", args, -1, &ret, 5000, NULL);
  if (c->rc == 0 && json_object_object_get_ex(ret, "n", &v))
    c->got = json_object_get_int(v);
  json_object_put(ret);
  json_object_put(args);
  return NULL;
}

#define NCONC 8

/* Replies come back in reverse order; each caller must get its own. */
START_TEST(test_concurrent_execute) {
  char json[4096] = "{\"steps\": [" CAPS ", {\"hold\": true, \"unordered\": [";
  for (int i = 0; i < NCONC; i++) {
    char item[256];
    snprintf(item, sizeof(item),
             "%s{\"expect\": \"echo\", \"arguments\": {\"n\": %d}, \"reply\": {\"return\": "
             "{\"n\": %d}}}",
             i ? "," : "", i, 100 + i);
    strcat(json, item);
  }
  strcat(json, "]}]}");
  start_json(json);
  hm_qmp *q = connect_ok();
  struct conc c[NCONC];
  pthread_t t[NCONC];
  for (int i = 0; i < NCONC; i++) {
    c[i] = (struct conc){.q = q, .n = i, .rc = 1};
    ck_assert_int_eq(pthread_create(&t[i], NULL, conc_thread, &c[i]), 0);
  }
  for (int i = 0; i < NCONC; i++)
    pthread_join(t[i], NULL);
  for (int i = 0; i < NCONC; i++) {
    ck_assert_int_eq(c[i].rc, 0);
    ck_assert_int_eq(c[i].got, 100 + i);
  }
  finish_ok(q);
}
END_TEST

START_TEST(test_getfd) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"getfd\", \"arguments\": {\"fdname\": \"f0\"},"
             " \"fd\": true, \"reply\": {\"return\": {}}},"
             " {\"expect\": \"getfd\", \"arguments\": {\"fdname\": \"f1\"}, \"fd\": true,"
             " \"reply\": {\"return\": {}}}]}");
  hm_qmp *q = connect_ok();
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  json_object *args = json_tokener_parse("{\"fdname\": \"f0\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "getfd", args, p[0], NULL, 2000, NULL), 0);
  json_object_put(args);
  ck_assert_int_eq(fake_qmp_fds(fake), 1);
  ck_assert_int_ge(fcntl(p[0], F_GETFD), 0); /* still ours */

  /* Without an fd the fake complains, as QEMU would. */
  hm_error *err = NULL;
  args = json_tokener_parse("{\"fdname\": \"f1\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "getfd", args, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP,
             "getfd: GenericError: fake-qmp: step 2: command 'getfd' came "
             "without an fd");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "getfd", args, p[1], NULL, 2000, NULL), 0);
  ck_assert_int_eq(fake_qmp_fds(fake), 2);
  json_object_put(args);
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
  ck_assert_ptr_nonnull(strstr(fake_qmp_error(fake), "without an fd"));
  ck_assert_int_eq(fake_qmp_steps_done(fake), 3);
  close(p[0]);
  close(p[1]);
}
END_TEST

START_TEST(test_unexpected_command) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"device_add\", \"arguments\": "
             "{\"driver\": \"vhost-user-fs-pci\", \"bus\": \"hm-rp-3\"}, "
             "\"reply\": {\"return\": {}}}]}");
  hm_qmp *q = connect_ok();
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", NULL, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "unexpected command 'device_del' (expected 'device_add')");
  hm_error_free(err);
  err = NULL;
  json_object *args = json_tokener_parse("{\"driver\": \"vhost-user-fs-pci\", \"bus\": \"hm-rp-4\""
                                         ", \"id\": \"x\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "do not contain");
  hm_error_free(err);
  json_object_put(args);
  args = json_tokener_parse("{\"driver\": \"vhost-user-fs-pci\", \"bus\": \"hm-rp-3\""
                            ", \"id\": \"x\", \"chardev\": \"c\"}");
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, NULL), 0);
  json_object_put(args);
  ck_assert_int_eq(hm_qmp_execute(q, "extra", NULL, -1, NULL, 2000, NULL), HM_E_QMP);
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 5000), 0);
  ck_assert(!fake_qmp_ok(fake));
  ck_assert_str_eq(fake_qmp_error(fake),
                   "step 1: unexpected command 'device_del' (expected 'device_add')");
  ck_assert_int_eq(fake_qmp_commands(fake), 5);
}
END_TEST

/* Replies split over several writes, glued to events, and a stray id. */
START_TEST(test_stream_fragments) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"q\", \"before\": ["
             "{\"raw\": \"{\\\"return\\\": {}, \\\"id\\\": 999}\\r\\n{\\\"ev\"},"
             "{\"delay_ms\": 50},"
             "{\"raw\": \"ent\\\": \\\"X\\\"}\\r\\n{\\\"retu\"},"
             "{\"delay_ms\": 50},"
             "{\"raw\": \"rn\\\": {\\\"ok\\\": true}, \\\"id\\\": 2}\\r\\n\"}]}]}");
  hm_qmp *q = connect_ok();
  json_object *ret = NULL, *v;
  ck_assert_int_eq(hm_qmp_execute(q, "q", NULL, -1, &ret, 2000, NULL), 0);
  ck_assert(json_object_object_get_ex(ret, "ok", &v));
  ck_assert(json_object_get_boolean(v));
  json_object_put(ret);
  ck_assert_int_eq(hm_qmp_event_seq(q), 1);
  ck_assert_int_eq(hm_qmp_wait_event(q, "X", 0, NULL, NULL, NULL, 0, NULL), 0);
  finish_ok(q);
}
END_TEST

static const char *const garbage[] = {
    "this is not json\\r\\n",
    "[1, 2]\\r\\n",
    "\\\"just a string\\\"\\r\\n",
    "{\\\"neither\\\": 1}\\r\\n",
    "{\\\"return\\\": }\\r\\n",
    "{\\\"event\\\": 5}\\r\\n",
    "}\\r\\n",
    "\\u0000\\r\\n",
    /* deeper than the parser allows */
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]\\r\\n",
};

START_TEST(test_garbage) {
  char json[1024];
  snprintf(json, sizeof(json),
           "{\"steps\": [" CAPS ", {\"expect\": \"q\", \"before\": [{\"raw\": \"%s\"}]}]}",
           garbage[_i]);
  start_json(json);
  hm_qmp *q = connect_ok();
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "q", NULL, -1, NULL, 2000, &err), HM_E_PROTOCOL);
  assert_err(err, HM_E_PROTOCOL, "q: malformed QMP stream: ");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_qmp_is_connected(q), 0);
  ck_assert_int_eq(hm_qmp_execute(q, "q2", NULL, -1, NULL, 2000, &err), HM_E_NOT_READY);
  hm_error_free(err);
  finish_ok(q);
}
END_TEST

START_TEST(test_garbage_greeting) {
  start_json("{\"greeting\": false, \"steps\": [{\"raw\": \"\\u0001\\u0002garbage\\r\\n\"}]}");
  hm_qmp *q = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_connect(&q, sock, 2000, &err), HM_E_PROTOCOL);
  assert_err(err, HM_E_PROTOCOL, "malformed QMP stream");
  hm_error_free(err);
}
END_TEST

/* Builds {"steps": [caps, {"expect": "big", "reply": {"return": "xxx..."}}]}. */
static char *big_transcript(size_t n) {
  const char *head = "{\"steps\": [" CAPS ", {\"expect\": \"big\", \"reply\": {\"return\": \"";
  const char *tail = "\"}}]}";
  size_t hl = strlen(head), tl = strlen(tail);
  char *s = malloc(hl + n + tl + 1);
  ck_assert_ptr_nonnull(s);
  memcpy(s, head, hl);
  for (size_t i = 0; i < n; i++)
    s[hl + i] = (char)('a' + i % 26);
  memcpy(s + hl + n, tail, tl + 1);
  return s;
}

START_TEST(test_huge_line) {
  size_t n = 4u * 1024 * 1024;
  char *t = big_transcript(n);
  start_json(t);
  free(t);
  hm_qmp *q = connect_ok();
  json_object *ret = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "big", NULL, -1, &ret, 10000, NULL), 0);
  ck_assert_int_eq(json_object_get_string_len(ret), (int)n);
  const char *s = json_object_get_string(ret);
  ck_assert_int_eq(s[0], 'a');
  ck_assert_int_eq(s[n - 1], 'a' + (n - 1) % 26);
  json_object_put(ret);
  finish_ok(q);
}
END_TEST

START_TEST(test_too_huge_line) {
  char *t = big_transcript(17u * 1024 * 1024);
  start_json(t);
  free(t);
  hm_qmp *q = connect_ok();
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "big", NULL, -1, NULL, 20000, &err), HM_E_PROTOCOL);
  assert_err(err, HM_E_PROTOCOL, "larger than 16 MiB");
  hm_error_free(err);
  hm_qmp_free(q);
  ck_assert_int_eq(fake_qmp_wait(fake, 10000), 0);
}
END_TEST

START_TEST(test_bad_arguments) {
  start_json("{\"steps\": [" CAPS "]}");
  hm_qmp *q = connect_ok();
  hm_error *err = NULL;
  json_object *arr = json_object_new_array();
  ck_assert_int_eq(hm_qmp_execute(q, "x", arr, -1, NULL, 100, &err), HM_E_INVALID);
  assert_err(err, HM_E_INVALID, "arguments must be a JSON object");
  hm_error_free(err);
  json_object_put(arr);
  ck_assert_int_eq(hm_qmp_execute(q, NULL, NULL, -1, NULL, 100, NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_qmp_wait_event(q, NULL, 0, NULL, NULL, NULL, 100, NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_qmp_is_connected(NULL), 0);
  hm_qmp_free(NULL);
  finish_ok(q);
}
END_TEST

/* The standalone fake-qmp, as daemon tests will run it. */
static pid_t spawn_fake_exe(const char *transcript, int *err_fd) {
  char path[512];
  int pfd[2];
  snprintf(path, sizeof(path), "%s/%s", FAKE_QMP_DIR, transcript);
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(pfd[1], 2);
    execl(FAKE_QMP_EXE, "fake-qmp", sock, path, (char *)NULL);
    _exit(127);
  }
  close(pfd[1]);
  *err_fd = pfd[0];
  return pid;
}

static hm_qmp *connect_retry(void) {
  hm_qmp *q = NULL;
  for (int i = 0; i < 200 && !q; i++)
    if (hm_qmp_connect(&q, sock, 2000, NULL) < 0)
      usleep(10000);
  ck_assert_ptr_nonnull(q);
  return q;
}

static int wait_exit(pid_t pid, int err_fd, char *out, size_t outlen) {
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ssize_t n = read(err_fd, out, outlen - 1);
  out[n > 0 ? n : 0] = 0;
  close(err_fd);
  ck_assert(WIFEXITED(st));
  return WEXITSTATUS(st);
}

/* Recorded ACPI unplug with no guest OS: device_del "succeeds", nothing
 * follows; then quit, after which QEMU drops the connection. */
START_TEST(test_fake_exe_real_acpi_pending) {
  int err_fd;
  pid_t pid = spawn_fake_exe("real-unplug-acpi-pending.json", &err_fd);
  hm_qmp *q = connect_retry();
  json_object *args = json_tokener_parse("{\"driver\": \"virtio-rng-pci\", \"id\": \"hm-dev3\","
                                         " \"bus\": \"hm-rp-0\"}");
  json_object *del = json_tokener_parse("{\"id\": \"hm-dev3\"}");
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_execute(q, "cont", NULL, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "RESUME", 0, NULL, NULL, NULL, 2000, NULL), 0);
  uint64_t seq = hm_qmp_event_seq(q);
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", del, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "DEVICE_DELETED", seq, NULL, NULL, NULL, 200, NULL),
                   HM_E_TIMEOUT);
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", del, -1, NULL, 2000, NULL), 0);
  json_object *path = json_tokener_parse("{\"path\": \"/machine/peripheral\"}"), *ret = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "qom-list", path, -1, &ret, 2000, NULL), 0);
  ck_assert_int_eq(json_object_array_length(ret), 3);
  json_object_put(ret);
  ck_assert_int_eq(hm_qmp_execute(q, "device_add", args, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "device_add: GenericError: Duplicate device ID 'hm-dev3'");
  hm_error_free(err);
  ck_assert_int_eq(hm_qmp_execute(q, "quit", NULL, -1, NULL, 2000, NULL), 0);
  ck_assert_int_eq(hm_qmp_wait_event(q, "NEVER", 0, NULL, NULL, NULL, 2000, NULL), HM_E_NOT_READY);
  ck_assert_int_eq(hm_qmp_is_connected(q), 0);
  hm_qmp_free(q);
  json_object_put(args);
  json_object_put(del);
  json_object_put(path);
  char out[1024];
  int rc = wait_exit(pid, err_fd, out, sizeof(out));
  ck_assert_msg(rc == 0, "fake-qmp exit %d: %s", rc, out);
  ck_assert_msg(strstr(out, "8 commands, 0 fds, 8 steps done"), "%s", out);
}
END_TEST

START_TEST(test_fake_exe_reports_failure) {
  int err_fd;
  pid_t pid = spawn_fake_exe("real-unplug-acpi-pending.json", &err_fd);
  hm_qmp *q = connect_retry();
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qmp_execute(q, "device_del", NULL, -1, NULL, 2000, &err), HM_E_QMP);
  assert_err(err, HM_E_QMP, "unexpected command 'device_del' (expected 'device_add')");
  hm_error_free(err);
  hm_qmp_free(q);
  char out[1024];
  ck_assert_int_eq(wait_exit(pid, err_fd, out, sizeof(out)), 1);
  ck_assert_msg(strstr(out, "fake-qmp: step 1: unexpected command 'device_del' (expected "
                            "'device_add')"),
                "%s", out);
}
END_TEST

/* A peer that stops reading: the send times out half-way, which spoils the
 * stream, so the connection must be given up. */
START_TEST(test_send_timeout) {
  start_json("{\"steps\": [" CAPS ", {\"expect\": \"a\", \"delay_ms\": 3000}]}");
  hm_qmp *q = connect_ok();
  ck_assert_int_eq(hm_qmp_execute(q, "a", NULL, -1, NULL, 50, NULL), HM_E_TIMEOUT);
  size_t n = 8u * 1024 * 1024;
  char *big = malloc(n + 1);
  ck_assert_ptr_nonnull(big);
  memset(big, 'x', n);
  big[n] = 0;
  json_object *args = json_object_new_object();
  json_object_object_add(args, "blob", json_object_new_string(big));
  free(big);
  hm_error *err = NULL;
  int64_t t0 = hm_now_ms();
  ck_assert_int_eq(hm_qmp_execute(q, "b", args, -1, NULL, 200, &err), HM_E_TIMEOUT);
  ck_assert_int_lt(hm_now_ms() - t0, 2000);
  assert_err(err, HM_E_TIMEOUT, "b: sending: timed out sending the command");
  hm_error_free(err);
  err = NULL;
  json_object_put(args);
  ck_assert_int_eq(hm_qmp_is_connected(q), 0);
  ck_assert_int_eq(hm_qmp_execute(q, "c", NULL, -1, NULL, 200, &err), HM_E_NOT_READY);
  assert_err(err, HM_E_NOT_READY, "cut off");
  hm_error_free(err);
  hm_qmp_free(q);
}
END_TEST

static Suite *qmp_suite(void) {
  Suite *s = suite_create("qmp");
  TCase *tc = tcase_create("client");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_connect_handshake);
  tcase_add_test(tc, test_connect_refused);
  tcase_add_test(tc, test_connect_no_greeting);
  tcase_add_test(tc, test_connect_bad_greeting);
  tcase_add_test(tc, test_connect_caps_error);
  tcase_add_test(tc, test_connect_fd);
  tcase_add_test(tc, test_real_session);
  tcase_add_test(tc, test_real_device_deleted_after_reply);
  tcase_add_test(tc, test_event_before_reply);
  tcase_add_test(tc, test_event_after_reply_and_since);
  tcase_add_test(tc, test_event_callback);
  tcase_add_test(tc, test_timeout_then_late_reply_dropped);
  tcase_add_test(tc, test_peer_close_wakes_waiters);
  tcase_add_test(tc, test_free_wakes_waiters);
  tcase_add_test(tc, test_concurrent_execute);
  tcase_add_test(tc, test_getfd);
  tcase_add_test(tc, test_unexpected_command);
  tcase_add_test(tc, test_stream_fragments);
  tcase_add_loop_test(tc, test_garbage, 0, (int)(sizeof(garbage) / sizeof(garbage[0])));
  tcase_add_test(tc, test_garbage_greeting);
  tcase_add_test(tc, test_huge_line);
  tcase_add_test(tc, test_too_huge_line);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_send_timeout);
  tcase_add_test(tc, test_fake_exe_real_acpi_pending);
  tcase_add_test(tc, test_fake_exe_reports_failure);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(qmp_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
