/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The HTTP API end to end: hm_server and hm_client over a real unix socket,
 * serving a real hm_instance whose backend is a fake made through the public
 * vtable, with the real agent (--socket test mode) where an add must get past
 * the agent handshake. Raw HTTP is used where the status line, headers or
 * malformed bodies matter; hm_client where the code mapping does.
 */
#include <hotmount/hotmount.h>

#include "safe_print.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

/* ---- the fake backend ---- */

typedef struct fake {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int attach_calls, detach_calls, destroy_calls;
  int live; /* attached and not yet detached */
  int hold; /* attach waits while set */
  int held; /* an attach is waiting */
} fake;

static int fake_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  fake *f = impl;
  pthread_mutex_lock(&f->mu);
  f->attach_calls++;
  if (f->hold) {
    f->held++;
    pthread_cond_broadcast(&f->cv);
    while (f->hold)
      pthread_cond_wait(&f->cv, &f->mu);
    f->held--;
  }
  f->live++;
  pthread_mutex_unlock(&f->mu);
  char tag[64];
  snprintf(tag, sizeof(tag), "fake-%s", hm_attachment_get_id(att));
  return hm_attachment_set_tag(att, tag, err);
}

static int fake_detach(void *impl, hm_attachment *att, hm_error **err) {
  fake *f = impl;
  pthread_mutex_lock(&f->mu);
  f->detach_calls++;
  f->live--;
  pthread_mutex_unlock(&f->mu);
  return 0;
}

static void fake_destroy(void *impl) {
  fake *f = impl;
  pthread_mutex_lock(&f->mu);
  f->destroy_calls++;
  pthread_mutex_unlock(&f->mu);
}

/* ---- environment: temp instance dir, instance, server, client ---- */

typedef struct env {
  char dir[32];
  char sock[64];
  char share[64];
  fake f;
  hm_instance *inst;
  hm_server *srv;
  hm_client *cli;
  pid_t agent;
} env;

static void rm_rf(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup of %s failed\n", path);
}

/* small_ops: register the vtable with a struct_size that ends before
 * free_slots, as a backend built against older headers would. */
static void env_up(env *e, int small_ops) {
  memset(e, 0, sizeof(*e));
  snprintf(e->dir, sizeof(e->dir), "/tmp/hm-http-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
  snprintf(e->sock, sizeof(e->sock), "%s/hotmountd.sock", e->dir);
  snprintf(e->share, sizeof(e->share), "%s/share", e->dir);
  ck_assert_int_eq(mkdir(e->share, 0755), 0);
  pthread_mutex_init(&e->f.mu, NULL);
  pthread_cond_init(&e->f.cv, NULL);

  hm_fs_hotplugger_ops ops = {
      .struct_size = small_ops ? offsetof(hm_fs_hotplugger_ops, free_slots) : sizeof(ops),
      .name = "fake",
      .types = 1u << HM_TYPE_VIRTIOFS,
      .attach = fake_attach,
      .detach = fake_detach,
      .destroy = fake_destroy, /* beyond a small struct_size: must never be called */
  };
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  ck_assert_msg(hm_fs_hotplugger_new(&hp, &ops, &e->f, &err) == 0, "%s", hm_error_message(err));
  ck_assert_msg(hm_instance_new(&e->inst, e->dir, hp, &err) == 0, "%s", hm_error_message(err));
  ck_assert_msg(hm_server_new(&e->srv, e->inst, e->sock, &err) == 0, "%s", hm_error_message(err));
  ck_assert_msg(hm_client_new(&e->cli, e->sock, &err) == 0, "%s", hm_error_message(err));
}

static void env_down(env *e) {
  hm_client_free(e->cli);
  hm_server_free(e->srv);
  hm_instance_free(e->inst);
  if (e->agent > 0) {
    kill(e->agent, SIGTERM);
    waitpid(e->agent, NULL, 0);
  }
  rm_rf(e->dir);
}

static size_t registry_count(env *e) {
  hm_mount_list *l = NULL;
  ck_assert_int_eq(hm_instance_list(e->inst, &l, NULL), 0);
  size_t n = hm_mount_list_count(l);
  hm_mount_list_free(l);
  return n;
}

/* ---- raw HTTP over the unix socket ---- */

typedef struct resp {
  int status;
  char head[4096];
  char *body;
  size_t len;
} resp;

static int connect_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* Sends req as is (write errors ignored: the server may answer early and
 * close), reads the whole answer. */
static void http_send(const char *sock, const char *req, size_t reqlen, resp *r) {
  memset(r, 0, sizeof(*r));
  int fd = connect_unix(sock);
  ck_assert_msg(fd >= 0, "connect %s: %s", sock, strerror(-fd));
  for (size_t off = 0; off < reqlen;) {
    ssize_t n = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 4096 > cap)
      buf = realloc(buf, cap *= 2);
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  char *sep = strstr(buf, "\r\n\r\n");
  ck_assert_msg(sep, "no complete HTTP answer: '%s'", buf);
  size_t hl = (size_t)(sep - buf);
  ck_assert_uint_lt(hl, sizeof(r->head));
  memcpy(r->head, buf, hl);
  r->head[hl] = '\0';
  ck_assert_int_eq(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
  r->len = len - hl - 4;
  r->body = strdup(sep + 4);
  free(buf);
}

static void http(env *e, const char *method, const char *path, const char *body, resp *r) {
  char *req = NULL;
  size_t bl = body ? strlen(body) : 0;
  int n = asprintf(&req,
                   "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s"
                   "Content-Length: %zu\r\n\r\n%s",
                   method, path, body ? "Content-Type: application/json\r\n" : "", bl,
                   body ? body : "");
  ck_assert_int_gt(n, 0);
  http_send(e->sock, req, (size_t)n, r);
  free(req);
}

static void resp_free(resp *r) {
  free(r->body);
}

static int has_header(const resp *r, const char *line) {
  return strcasestr(r->head, line) != NULL;
}

/* Checks status, JSON content type, and the error body's code and message. */
static void expect_error(const resp *r, int status, int code, const char *needle) {
  ck_assert_msg(r->status == status, "status %d, want %d; body %s", r->status, status, r->body);
  ck_assert_msg(has_header(r, "Content-Type: application/json"), "headers: %s", r->head);
  json_object *o = json_tokener_parse(r->body);
  ck_assert_msg(o && json_object_is_type(o, json_type_object), "body not an object: %s", r->body);
  json_object *m = NULL, *c = NULL;
  ck_assert(json_object_object_get_ex(o, "error", &m) && json_object_is_type(m, json_type_string));
  ck_assert(json_object_object_get_ex(o, "code", &c) && json_object_is_type(c, json_type_int));
  ck_assert_msg(json_object_get_int(c) == code, "code %d, want %d (%s)", json_object_get_int(c),
                code, r->body);
  if (needle)
    ck_assert_msg(strstr(json_object_get_string(m), needle), "message '%s' lacks '%s'",
                  json_object_get_string(m), needle);
  json_object_put(o);
}

/* A macro, so the call runs before err is read (argument order is unspecified). */
#define EXPECT_FAIL(call, err, code, needle)                                                       \
  do {                                                                                             \
    int rc_ = (call);                                                                              \
    expect_client_error(rc_, (err), (code), (needle));                                             \
  } while (0)

static void expect_client_error(int rc, hm_error *err, int code, const char *needle) {
  ck_assert_msg(rc == code, "rc %d, want %d: %s", rc, code, hm_error_message(err));
  ck_assert_int_eq(hm_error_code(err), code);
  if (needle)
    ck_assert_msg(strstr(hm_error_message(err), needle), "message '%s' lacks '%s'",
                  hm_error_message(err), needle);
}

static hm_mount_spec *spec_of(const char *host, const char *guest) {
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, host, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(s, guest, NULL), 0);
  return s;
}

/* ---- tests ---- */

/* The error body's class (hm_error_class_name) and detail (NULL: none). */
static void expect_class(const resp *r, const char *klass, const char *detail) {
  json_object *o = json_tokener_parse(r->body), *k = NULL, *d = NULL;
  ck_assert_msg(o && json_object_object_get_ex(o, "class", &k), "no class: %s", r->body);
  ck_assert_str_eq(json_object_get_string(k), klass);
  if (detail) {
    ck_assert_msg(json_object_object_get_ex(o, "detail", &d), "no detail: %s", r->body);
    ck_assert_str_eq(json_object_get_string(d), detail);
  } else {
    ck_assert_msg(!json_object_object_get_ex(o, "detail", &d), "detail: %s", r->body);
  }
  json_object_put(o);
}

START_TEST(test_list_empty) {
  env e;
  env_up(&e, 0);
  resp r;
  http(&e, "GET", "/v1/mounts", NULL, &r);
  ck_assert_int_eq(r.status, 200);
  ck_assert(has_header(&r, "Content-Type: application/json"));
  ck_assert_str_eq(r.body, "[]");
  resp_free(&r);

  hm_mount_list *l = NULL;
  hm_error *err = NULL;
  ck_assert_msg(hm_client_list(e.cli, &l, &err) == 0, "%s", hm_error_message(err));
  ck_assert_uint_eq(hm_mount_list_count(l), 0);
  hm_mount_list_free(l);
  /* The same handle again: the kept-alive connection must still work. */
  ck_assert_int_eq(hm_client_list(e.cli, &l, NULL), 0);
  hm_mount_list_free(l);

  http(&e, "GET", "/v1/status", NULL, &r);
  ck_assert_int_eq(r.status, 200);
  json_object *o = json_tokener_parse(r.body), *v;
  ck_assert_ptr_nonnull(o);
  ck_assert(json_object_object_get_ex(o, "version", &v));
  ck_assert_str_eq(json_object_get_string(v), hm_version());
  ck_assert(json_object_object_get_ex(o, "mounts", &v));
  ck_assert_int_eq(json_object_get_int(v), 0);
  json_object_put(o);
  resp_free(&r);

  fake *f = &e.f;
  env_down(&e);
  ck_assert_int_eq(f->destroy_calls, 1); /* full-size ops: destroy is part of them */
}
END_TEST

START_TEST(test_post_invalid) {
  env e;
  env_up(&e, 0);
  char file[256], body[1024];
  snprintf(file, sizeof(file), "%s/file", e.dir);
  FILE *fp = fopen(file, "w");
  ck_assert_ptr_nonnull(fp);
  fclose(fp);
  struct {
    const char *fmt; /* %s: the share dir */
    const char *needle;
  } cases[] = {
      {"{", "malformed JSON"},
      {"[]", "must be a JSON object"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\",\"bogus\":1}", "unknown member \"bogus\""},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\",\"writable\":\"yes\"}",
       "\"writable\" must be"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":7}", "\"mountPoint\" must be"},
      {"{\"mountPoint\":\"/mnt/a\"}", "missing member \"hostPath\""},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\",\"type\":\"nfs\"}",
       "unknown mount type \"nfs\""},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"mnt/a\"}", "not absolute"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/proc\"}", "system path"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/proc/x\"}", "system path"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/etc\"}", "system path"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/\"}", "root directory"},
      {"{\"hostPath\":\"%s/nope\",\"mountPoint\":\"/mnt/a\"}", "does not exist"},
      {"{\"hostPath\":\"%s/../file\",\"mountPoint\":\"/mnt/a\"}", "is not a directory"},
      {"{\"hostPath\":\"%s\\n\",\"mountPoint\":\"/mnt/a\"}", "control character"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\\nb\"}", "guest path"},
      {"{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\",\"options\":{\"x\":\"1\"}}",
       "unknown option \"x\" for virtiofs mounts (backend fake takes no options)"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(body, sizeof(body), cases[i].fmt, e.share);
#pragma GCC diagnostic pop
    resp r;
    http(&e, "POST", "/v1/mounts", body, &r);
    expect_error(&r, 400, HM_E_INVALID, cases[i].needle);
    resp_free(&r);
    ck_assert_uint_eq(registry_count(&e), 0);
  }
  /* POST /v1/agent/connect's optional body: a number or an array is refused,
   * not walked as an object (that crashed the daemon: a NULL dereference
   * in json-c's foreach, found by fuzz-http-server). */
  const char *const connect_bodies[] = {"2 ", "[1, 2] ", "\"x\""};
  for (size_t i = 0; i < sizeof(connect_bodies) / sizeof(connect_bodies[0]); i++) {
    resp cr;
    http(&e, "POST", "/v1/agent/connect", connect_bodies[i], &cr);
    expect_error(&cr, 400, HM_E_INVALID, "request body must be a JSON object");
    resp_free(&cr);
  }

  /* A type the backend cannot do is a bad request too. */
  snprintf(body, sizeof(body), "{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\",\"type\":\"9p\"}",
           e.share);
  resp r;
  http(&e, "POST", "/v1/mounts", body, &r);
  expect_error(&r, 400, HM_E_UNSUPPORTED, "cannot hot-mount 9p");
  resp_free(&r);

  /* The client gets the daemon's code and message. */
  struct {
    const char *host, *guest, *needle;
  } ccases[] = {
      {e.share, "relative", "not absolute"},
      {e.share, "/etc", "system path"},
      {e.share, "/", "root directory"},
      {file, "/mnt/a", "is not a directory"},
      {"/nonexistent-hm-dir", "/mnt/a", "does not exist"},
  };
  for (size_t i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
    hm_mount_spec *s = spec_of(ccases[i].host, ccases[i].guest);
    hm_error *err = NULL;
    hm_mount *m = NULL;
    int rc = hm_client_add(e.cli, &m, s, &err);
    expect_client_error(rc, err, HM_E_INVALID, ccases[i].needle);
    ck_assert_ptr_null(m);
    ck_assert_msg(strncmp(hm_error_message(err), "hm_client_add: ", 15) == 0, "%s",
                  hm_error_message(err));
    hm_error_free(err);
    hm_mount_spec_free(s);
  }
  ck_assert_uint_eq(registry_count(&e), 0);
  ck_assert_int_eq(e.f.attach_calls, 0);
  env_down(&e);
}
END_TEST

START_TEST(test_post_no_agent) {
  env e;
  env_up(&e, 1);
  char body[512];
  snprintf(body, sizeof(body), "{\"hostPath\":\"%s\",\"mountPoint\":\"/mnt/a\"}", e.share);
  resp r;
  http(&e, "POST", "/v1/mounts", body, &r);
  expect_error(&r, 503, HM_E_NOT_READY, "agent");
  resp_free(&r);
  ck_assert_uint_eq(registry_count(&e), 0);

  hm_mount_spec *s = spec_of(e.share, "/mnt/a");
  hm_error *err = NULL;
  EXPECT_FAIL(hm_client_add(e.cli, NULL, s, &err), err, HM_E_NOT_READY, "agent");
  hm_error_free(err);
  hm_mount_spec_free(s);

  ck_assert_uint_eq(registry_count(&e), 0);
  ck_assert_int_eq(e.f.attach_calls, 0);
  ck_assert_int_eq(e.f.live, 0);
  fake *f = &e.f;
  env_down(&e);
  /* destroy lies beyond the struct_size the backend declared. */
  ck_assert_int_eq(f->destroy_calls, 0);
}
END_TEST

START_TEST(test_delete) {
  env e;
  env_up(&e, 0);
  resp r;
  http(&e, "DELETE", "/v1/mounts", "{\"mountPoint\":\"/mnt/x\"}", &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, "nothing is hot-mounted at /mnt/x");
  expect_class(&r, "mount", NULL);
  resp_free(&r);
  http(&e, "DELETE", "/v1/mounts?mountPoint=/mnt/y&lazy=true", NULL, &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, "/mnt/y");
  resp_free(&r);
  http(&e, "DELETE", "/v1/mounts?mountPoint=%2Fmnt%2Fz", NULL, &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, "/mnt/z");
  resp_free(&r);

  struct {
    const char *path, *body, *needle;
  } bad[] = {
      {"/v1/mounts", "{\"mountPoint\":\"/mnt/x\",\"bogus\":true}", "unknown member \"bogus\""},
      {"/v1/mounts", "{\"mountPoint\":\"/mnt/x\",\"lazy\":\"yes\"}", "\"lazy\" must be"},
      {"/v1/mounts", "{\"lazy\":true}", "missing member \"mountPoint\""},
      {"/v1/mounts", "{\"mountPoint\":", "malformed JSON"},
      {"/v1/mounts", "\"x\"", "must be a JSON object"},
      {"/v1/mounts", NULL, "missing mount point"},
      {"/v1/mounts?mountPoint=/mnt/x", "{\"mountPoint\":\"/mnt/x\"}", "not both"},
      {"/v1/mounts?mountPoint=/mnt/x&lazy=maybe", NULL, "\"lazy\""},
      {"/v1/mounts?mountPoint=/mnt/x&what=1", NULL, "unknown query parameter \"what\""},
      /* a second mountPoint without a value freed the first one's copy and
       * left it to be freed again (found by fuzz-http-server) */
      {"/v1/mounts?mountPoint=/mnt/x&mountPoint", NULL,
       "query parameter \"mountPoint\" needs a value"},
      {"/v1/mounts?mountPoint", NULL, "query parameter \"mountPoint\" needs a value"},
      {"/v1/mounts", "{\"mountPoint\":\"relative\"}", "not absolute"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    http(&e, "DELETE", bad[i].path, bad[i].body, &r);
    expect_error(&r, 400, HM_E_INVALID, bad[i].needle);
    expect_class(&r, "input", NULL);
    resp_free(&r);
  }

  hm_error *err = NULL;
  EXPECT_FAIL(hm_client_remove(e.cli, "/mnt/x", HM_REMOVE_LAZY | HM_REMOVE_FORCE, &err), err,
              HM_E_NOT_FOUND, "hm_client_remove: ");
  ck_assert(strstr(hm_error_message(err), "nothing is hot-mounted at /mnt/x"));
  /* The class crosses the HTTP API: the daemon's registry said it. */
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_MOUNT);
  ck_assert_ptr_null(hm_error_detail(err));
  hm_error_free(err);
  err = NULL;
  EXPECT_FAIL(hm_client_remove(e.cli, "/mnt/x", 0x80, &err), err, HM_E_INVALID, "flags");
  hm_error_free(err);
  env_down(&e);
}
END_TEST

START_TEST(test_routes) {
  env e;
  env_up(&e, 0);
  resp r;
  http(&e, "GET", "/v1/nope", NULL, &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, "/v1/nope");
  expect_class(&r, "http", NULL); /* the route, not a mount, is missing */
  resp_free(&r);
  http(&e, "GET", "/", NULL, &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, NULL);
  resp_free(&r);
  http(&e, "POST", "/v1/nope", "{\"a\":1}", &r);
  expect_error(&r, 404, HM_E_NOT_FOUND, NULL);
  resp_free(&r);
  http(&e, "PUT", "/v1/mounts", "{}", &r);
  expect_error(&r, 405, HM_E_UNSUPPORTED, "PUT");
  ck_assert_msg(has_header(&r, "Allow: GET, POST, DELETE"), "%s", r.head);
  resp_free(&r);
  http(&e, "POST", "/v1/status", "{}", &r);
  expect_error(&r, 405, HM_E_UNSUPPORTED, NULL);
  ck_assert_msg(has_header(&r, "Allow: GET"), "%s", r.head);
  resp_free(&r);
  http(&e, "PATCH", "/v1/status", NULL, &r);
  expect_error(&r, 405, HM_E_UNSUPPORTED, NULL);
  resp_free(&r);
  env_down(&e);
}
END_TEST

START_TEST(test_body_too_large) {
  env e;
  env_up(&e, 0);
  size_t n = 70 * 1024;
  char *big = malloc(n + 1);
  memset(big, ' ', n);
  big[0] = '{';
  big[n - 1] = '}';
  big[n] = '\0';
  resp r;
  http(&e, "POST", "/v1/mounts", big, &r);
  expect_error(&r, 413, HM_E_INVALID, "too large");
  resp_free(&r);
  http(&e, "DELETE", "/v1/mounts", big, &r);
  expect_error(&r, 413, HM_E_INVALID, "too large");
  resp_free(&r);

  /* Chunked: no length up front, so the limit is found while reading. */
  char *req = NULL;
  int len = asprintf(&req,
                     "POST /v1/mounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                     n, big);
  ck_assert_int_gt(len, 0);
  http_send(e.sock, req, (size_t)len, &r);
  expect_error(&r, 413, HM_E_INVALID, "too large");
  resp_free(&r);
  free(req);

  /* A lying length is refused before any of the body is read. */
  const char *huge = "POST /v1/mounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Length: 99999999999999999999999\r\n\r\n{";
  http_send(e.sock, huge, strlen(huge), &r);
  ck_assert_int_ne(r.status, 200);
  ck_assert_int_lt(r.status, 500);
  resp_free(&r);
  free(big);
  ck_assert_uint_eq(registry_count(&e), 0);

  /* The server is still fine. */
  http(&e, "GET", "/v1/mounts", NULL, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  env_down(&e);
}
END_TEST

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  ck_assert_ptr_nonnull(d);
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

START_TEST(test_socket_lifecycle) {
  env e;
  env_up(&e, 0);
  struct stat st;
  ck_assert_int_eq(lstat(e.sock, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_int_eq(st.st_mode & 0777, 0600);

  /* A second server on the live socket is refused and leaves it alone. */
  hm_server *s2 = NULL;
  hm_error *err = NULL;
  EXPECT_FAIL(hm_server_new(&s2, e.inst, e.sock, &err), err, HM_E_EXISTS, "already running");
  ck_assert_ptr_null(s2);
  hm_error_free(err);
  err = NULL;
  hm_mount_list *l = NULL;
  ck_assert_int_eq(hm_client_list(e.cli, &l, NULL), 0);
  hm_mount_list_free(l);

  /* A path that is not a socket is never replaced. */
  char path[256];
  snprintf(path, sizeof(path), "%s/plain", e.dir);
  FILE *fp = fopen(path, "w");
  ck_assert_ptr_nonnull(fp);
  fclose(fp);
  EXPECT_FAIL(hm_server_new(&s2, e.inst, path, &err), err, HM_E_EXISTS, "not a socket");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(lstat(path, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  EXPECT_FAIL(hm_server_new(&s2, e.inst, e.dir, &err), err, HM_E_EXISTS, "not a socket");
  hm_error_free(err);
  err = NULL;

  /* Bad arguments. */
  char longp[300];
  memset(longp, 'a', sizeof(longp) - 1);
  longp[0] = '/';
  longp[sizeof(longp) - 1] = '\0';
  EXPECT_FAIL(hm_server_new(&s2, e.inst, longp, &err), err, HM_E_INVALID, "too long");
  hm_error_free(err);
  err = NULL;
  EXPECT_FAIL(hm_server_new(&s2, NULL, e.sock, &err), err, HM_E_INVALID, NULL);
  hm_error_free(err);
  err = NULL;

  /* free removes the socket file... */
  hm_server_free(e.srv);
  e.srv = NULL;
  ck_assert_int_eq(lstat(e.sock, &st), -1);
  /* ...and then the client says the daemon is not running, and how to start it. */
  EXPECT_FAIL(hm_client_list(e.cli, &l, &err), err, HM_E_NOT_READY, "hotmountd is not running at");
  char want[256];
  snprintf(want, sizeof(want), "hotmountd %s", e.dir);
  ck_assert_msg(strstr(hm_error_message(err), want), "%s", hm_error_message(err));
  hm_error_free(err);
  err = NULL;

  /* A stale socket (bound, nobody listening) is replaced. */
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, e.sock, strlen(e.sock) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  close(fd);
  ck_assert_int_eq(lstat(e.sock, &st), 0);
  ck_assert_msg(hm_server_new(&e.srv, e.inst, e.sock, &err) == 0, "%s", hm_error_message(err));
  ck_assert_int_eq(lstat(e.sock, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  ck_assert_msg(hm_client_list(e.cli, &l, &err) == 0, "%s", hm_error_message(err));
  hm_mount_list_free(l);

  /* new + free leaves no descriptor behind (MHD closes the listener we hand it). */
  char other[64];
  snprintf(other, sizeof(other), "%s/other.sock", e.dir);
  int before = count_fds();
  ck_assert_int_eq(hm_server_new(&s2, e.inst, other, NULL), 0);
  hm_server_free(s2);
  ck_assert_int_eq(count_fds(), before);
  env_down(&e);
}
END_TEST

/* Child side of the other-uid test: exit status says what happened. */
static int as_nobody(const char *sock, int expect_connect_refused) {
  if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
    return 20;
  int fd = connect_unix(sock);
  if (expect_connect_refused)
    return fd == -EACCES ? 0 : 21;
  if (fd < 0)
    return 22;
  const char req[] = "GET /v1/mounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
    return 23;
  static char buf[8192];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  if (strncmp(buf, "HTTP/1.1 403", 12) != 0)
    return 24;
  if (!strcasestr(buf, "Content-Type: application/json") || !strstr(buf, "\"code\":-1"))
    return 25;
  return 0;
}

static int run_as_nobody(const char *sock, int expect_connect_refused) {
  pid_t pid = fork();
  if (pid == 0)
    _exit(as_nobody(sock, expect_connect_refused));
  int st = 0;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert(WIFEXITED(st));
  return WEXITSTATUS(st);
}

START_TEST(test_other_uid) {
  if (geteuid() != 0) {
    fprintf(stderr, "test_other_uid: SKIPPED (needs root to switch uid)\n");
    return;
  }
  env e;
  env_up(&e, 0);
  ck_assert_int_eq(chmod(e.dir, 0711), 0);
  /* The 0600 file mode keeps another uid out... */
  ck_assert_int_eq(run_as_nobody(e.sock, 1), 0);
  /* ...and if the mode is widened, SO_PEERCRED still does. */
  ck_assert_int_eq(chmod(e.sock, 0666), 0);
  ck_assert_int_eq(run_as_nobody(e.sock, 0), 0);
  /* Root (us) still gets in. */
  resp r;
  http(&e, "GET", "/v1/mounts", NULL, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  env_down(&e);
}
END_TEST

/* ---- a canned peer for the client's handling of bad answers ---- */

typedef struct canned {
  int lfd;
  const char *answer; /* NULL: close without answering */
} canned;

static void *canned_serve(void *arg) {
  canned *c = arg;
  int fd = accept(c->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  char buf[4096];
  size_t len = 0;
  /* Read the request head (and a small body) before answering. */
  while (len < sizeof(buf) - 1) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0)
      break;
    ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  if (c->answer && write(fd, c->answer, strlen(c->answer)) < 0)
    perror("canned write");
  close(fd);
  return NULL;
}

static int canned_list(const char *dir, const char *answer, hm_error **err) {
  char path[64];
  snprintf(path, sizeof(path), "%s/canned.sock", dir);
  unlink(path);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  canned c = {socket(AF_UNIX, SOCK_STREAM, 0), answer};
  ck_assert_int_eq(bind(c.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(c.lfd, 4), 0);
  pthread_t t;
  pthread_create(&t, NULL, canned_serve, &c);
  hm_client *cli = NULL;
  ck_assert_int_eq(hm_client_new(&cli, path, NULL), 0);
  hm_client_set_timeout(cli, 5000, NULL);
  hm_mount_list *l = NULL;
  int rc = hm_client_list(cli, &l, err);
  hm_mount_list_free(l);
  hm_client_free(cli);
  pthread_join(t, NULL);
  close(c.lfd);
  return rc;
}

START_TEST(test_client_bad_answers) {
  char dir[] = "/tmp/hm-http-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  struct {
    const char *answer;
    int code;
    const char *needle;
  } cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nnot json", HM_E_PROTOCOL,
       "bad mount list"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n[{\"id\":1}]",
       HM_E_PROTOCOL, "bad mount list"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", HM_E_PROTOCOL, NULL},
      {"HTTP/1.1 500 Oops\r\nContent-Length: 6\r\nConnection: close\r\n\r\n<html>", HM_E_PROTOCOL,
       "HTTP 500"},
      {"HTTP/1.1 503 No\r\nContent-Length: 30\r\nConnection: close\r\n\r\n"
       "{\"error\":\"x: y z\",\"code\":-107}",
       HM_E_NOT_READY, "hm_client_list: x: y z"},
      /* A code that is not an error code: the status decides. */
      {"HTTP/1.1 507 No\r\nContent-Length: 23\r\nConnection: close\r\n\r\n"
       "{\"error\":\"x\",\"code\":17}",
       HM_E_NO_SLOT, NULL},
      {"hello there\n", HM_E_PROTOCOL, NULL},
      {NULL, HM_E_PROTOCOL, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    hm_error *err = NULL;
    int rc = canned_list(dir, cases[i].answer, &err);
    ck_assert_msg(rc == cases[i].code, "case %zu: rc %d, want %d: %s", i, rc, cases[i].code,
                  hm_error_message(err));
    expect_client_error(rc, err, cases[i].code, cases[i].needle);
    hm_error_free(err);
  }
  rm_rf(dir);

  hm_client *c = NULL;
  hm_error *err = NULL;
  EXPECT_FAIL(hm_client_new(&c, "", &err), err, HM_E_INVALID, "hm_client_new: ");
  hm_error_free(err);
  err = NULL;
  EXPECT_FAIL(hm_client_new(&c, NULL, &err), err, HM_E_INVALID, NULL);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_client_new(&c, "/nonexistent/x.sock", NULL), 0);
  EXPECT_FAIL(hm_client_set_timeout(c, 0, &err), err, HM_E_INVALID, NULL);
  hm_error_free(err);
  hm_client_free(c);
  hm_client_free(NULL);
  hm_server_free(NULL);
}
END_TEST

/* ---- guest text from the daemon, on its way to a terminal ---- */

/* The client hands the daemon's error text over as it is (it may quote an
 * agent); what the CLI prints of it carries no control character. */
START_TEST(test_cli_escapes_daemon_text) {
  char dir[] = "/tmp/hm-http-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  const char *body = "{\"error\":\"guest agent: \\u001b]0;pwned\\u0007\\u001b[2J"
                     "\\u009b31m \\\\x1b is text\",\"code\":-4001}";
  char answer[512];
  snprintf(answer, sizeof(answer),
           "HTTP/1.1 500 No\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(body),
           body);
  hm_error *err = NULL;
  canned_list(dir, answer, &err);
  rm_rf(dir);
  ck_assert_ptr_nonnull(err);
  const char *msg = hm_error_message(err);
  ck_assert_msg(strchr(msg, '\x1b') != NULL, "the client changed the text: '%s'", msg);
  char *shown = cli_escape(msg);
  ck_assert_ptr_nonnull(shown);
  for (const unsigned char *p = (const unsigned char *)shown; *p; p++)
    ck_assert_msg(*p >= 0x20 && *p != 0x7f && !(p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f),
                  "control character 0x%02x left in '%s'", *p, shown);
  ck_assert_msg(strstr(shown, "guest agent: \\x1b]0;pwned\\x07\\x1b[2J\\xc2\\x9b31m \\x1b is text"),
                "'%s'", shown);
  free(shown);
  hm_error_free(err);
  /* Bytes that are not UTF-8 (overlong, stray continuation, truncated). */
  shown = cli_escape("a\xc0\x80"
                     "b\x80"
                     "c\xe2\x82");
  ck_assert_str_eq(shown, "a\\xc0\\x80b\\x80c\\xe2\\x82");
  free(shown);
  shown = cli_escape("gr\xc3\xbc\xc3\x9f"
                     "e \xe2\x9c\x93");
  ck_assert_str_eq(shown, "gr\xc3\xbc\xc3\x9f"
                          "e \xe2\x9c\x93"); /* valid UTF-8 stays */
  free(shown);
  /* --json: control characters inside strings become \u00XX (an escaped
   * quote does not end the string); layout outside strings stays. */
  char *j = cli_json_safe("{\"a\": \"q\\\"\x1b[2J\x7f\xc2\x9b\",\n \"b\": 1}\xff");
  ck_assert_str_eq(j, "{\"a\": \"q\\\"\\u001b[2J\\u007f\\u009b\",\n \"b\": 1}\\ufffd");
  free(j);
}
END_TEST

/* ---- concurrency: list answers while an add is held in attach ---- */

typedef struct add_job {
  const char *sock;
  const char *host, *guest;
  int timeout_ms;
  int rc;
  int code;
  char msg[512];
} add_job;

static void *add_thread(void *arg) {
  add_job *j = arg;
  hm_client *c = NULL;
  hm_error *err = NULL;
  if (hm_client_new(&c, j->sock, &err) == 0) {
    if (j->timeout_ms)
      hm_client_set_timeout(c, j->timeout_ms, NULL);
    hm_mount_spec *s = spec_of(j->host, j->guest);
    j->rc = hm_client_add(c, NULL, s, &err);
    hm_mount_spec_free(s);
  }
  j->code = hm_error_code(err);
  snprintf(j->msg, sizeof(j->msg), "%s", hm_error_message(err));
  hm_error_free(err);
  hm_client_free(c);
  return NULL;
}

static int start_agent(env *e) {
  const char *bin = getenv("HM_AGENT_BIN");
  if (!bin || access(bin, X_OK) != 0) {
    fprintf(stderr, "HM_AGENT_BIN (%s) is not built yet: SKIPPING the agent-backed test\n",
            bin ? bin : "unset");
    return -1;
  }
  char path[256];
  snprintf(path, sizeof(path), "%s/agent.sock", e->dir);
  e->agent = fork();
  ck_assert_int_ge(e->agent, 0);
  if (e->agent == 0) {
    execl(bin, bin, "--socket", path, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 500; i++) {
    int fd = connect_unix(path);
    if (fd >= 0) {
      close(fd);
      return 0;
    }
    usleep(10000);
  }
  ck_abort_msg("the agent did not start listening on %s", path);
  return -1;
}

static void wait_held(fake *f, int n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 20;
  pthread_mutex_lock(&f->mu);
  int r = 0;
  while (f->held < n && r == 0)
    r = pthread_cond_timedwait(&f->cv, &f->mu, &ts);
  int held = f->held;
  pthread_mutex_unlock(&f->mu);
  ck_assert_msg(held >= n, "attach was not reached (%d of %d held)", held, n);
}

START_TEST(test_list_while_add_blocked) {
  env e;
  env_up(&e, 0);
  if (start_agent(&e) < 0) {
    env_down(&e);
    return;
  }
  /* The agent cannot mount a fake tag on the host: the add ends in an error
   * once released, and must roll the attach back. Keep that short. */
  ck_assert_int_eq(hm_instance_set_mount_timeout(e.inst, 300, NULL), 0);
  char guest_a[256], guest_b[256];
  snprintf(guest_a, sizeof(guest_a), "%s/guest/a", e.dir);
  snprintf(guest_b, sizeof(guest_b), "%s/guest/b", e.dir);

  e.f.hold = 1;
  add_job a = {.sock = e.sock, .host = e.share, .guest = guest_a};
  pthread_t ta;
  pthread_create(&ta, NULL, add_thread, &a);
  wait_held(&e.f, 1);

  /* The add is parked inside attach; list must still answer. */
  hm_mount_list *l = NULL;
  hm_error *err = NULL;
  ck_assert_msg(hm_client_list(e.cli, &l, &err) == 0, "%s", hm_error_message(err));
  ck_assert_uint_eq(hm_mount_list_count(l), 1);
  const hm_mount *m = hm_mount_list_get(l, 0);
  ck_assert_int_eq(hm_mount_get_state(m), HM_STATE_ATTACHING);
  ck_assert_str_eq(hm_mount_get_guest_path(m), guest_a);
  hm_mount_list_free(l);
  resp r;
  http(&e, "GET", "/v1/status", NULL, &r);
  ck_assert_int_eq(r.status, 200);
  ck_assert(strstr(r.body, "\"mounts\":1"));
  resp_free(&r);
  pthread_mutex_lock(&e.f.mu);
  ck_assert_int_eq(e.f.held, 1); /* still held: list did not wait for it */
  pthread_mutex_unlock(&e.f.mu);

  /* The same mount point again, or removing it now, is a conflict. */
  hm_mount_spec *s = spec_of(e.share, guest_a);
  EXPECT_FAIL(hm_client_add(e.cli, NULL, s, &err), err, HM_E_EXISTS, "being mounted");
  hm_error_free(err);
  err = NULL;
  hm_mount_spec_free(s);
  EXPECT_FAIL(hm_client_remove(e.cli, guest_a, 0, &err), err, HM_E_BUSY, "being mounted");
  hm_error_free(err);
  err = NULL;

  /* A client that gives up waits no longer than its timeout. */
  add_job b = {.sock = e.sock, .host = e.share, .guest = guest_b, .timeout_ms = 300};
  pthread_t tb;
  pthread_create(&tb, NULL, add_thread, &b);
  wait_held(&e.f, 2);
  pthread_join(tb, NULL);
  ck_assert_msg(b.rc == HM_E_TIMEOUT && b.code == HM_E_TIMEOUT, "rc %d: %s", b.rc, b.msg);

  pthread_mutex_lock(&e.f.mu);
  e.f.hold = 0;
  pthread_cond_broadcast(&e.f.cv);
  pthread_mutex_unlock(&e.f.mu);
  pthread_join(ta, NULL);
  ck_assert_msg(a.rc < 0 && a.rc == a.code, "rc %d: %s", a.rc, a.msg);
  ck_assert_msg(strncmp(a.msg, "hm_client_add: ", 15) == 0, "%s", a.msg);

  /* Both adds were rolled back, including the one whose client left. */
  for (int i = 0; i < 2000 && registry_count(&e) != 0; i++)
    usleep(10000);
  ck_assert_uint_eq(registry_count(&e), 0);
  pthread_mutex_lock(&e.f.mu);
  ck_assert_int_eq(e.f.attach_calls, 2);
  ck_assert_int_eq(e.f.detach_calls, 2);
  ck_assert_int_eq(e.f.live, 0);
  pthread_mutex_unlock(&e.f.mu);
  env_down(&e);
}
END_TEST

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("api");
  tcase_set_timeout(tc, 50);
  tcase_add_test(tc, test_list_empty);
  tcase_add_test(tc, test_post_invalid);
  tcase_add_test(tc, test_post_no_agent);
  tcase_add_test(tc, test_delete);
  tcase_add_test(tc, test_routes);
  tcase_add_test(tc, test_body_too_large);
  tcase_add_test(tc, test_socket_lifecycle);
  tcase_add_test(tc, test_other_uid);
  tcase_add_test(tc, test_client_bad_answers);
  tcase_add_test(tc, test_cli_escapes_daemon_text);
  tcase_add_test(tc, test_list_while_add_blocked);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
