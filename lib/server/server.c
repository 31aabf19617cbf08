/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The HTTP API (docs/api.md) on a unix socket, served by libmicrohttpd.
 *
 * Threads: MHD runs one internal thread that accepts, and one thread per
 * connection that runs the handler, so an add that waits on the guest never
 * delays a list (the instance's own locking allows it; see instance.c).
 * Every thread MHD starts inherits a fully blocked signal mask, so the
 * embedding program's signal handling is not disturbed.
 *
 * Who may talk to us: the socket file is 0600, and each request is checked
 * against the peer's credentials too (hm_plat_peer: SO_PEERCRED on Linux,
 * getpeereid elsewhere), because the file mode is only as good as the
 * directory it sits in and whoever may chmod it.
 */
#include "mount_internal.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Requests are small JSON objects; anything bigger is a mistake or abuse. */
#define MAX_BODY (64 * 1024)
/* Bounds the threads a local client can make us start. */
#define MAX_CONNECTIONS 64
/* Seconds an idle connection is kept; a request in progress is not idle. */
#define IDLE_TIMEOUT_S 60

struct hm_server {
  struct MHD_Daemon *mhd;
  hm_instance *inst;
  char *path;
  /* The socket file we made, so free removes it and not a successor's. */
  dev_t dev;
  ino_t ino;
  uid_t euid;
};

/* Per request: the body as it arrives, and what was decided before it did. */
typedef struct request {
  char *body;
  size_t len;
  int too_large;
  int responded;
  unsigned uid;
} request;

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0)
    return;
  size_t n = strlen(msg);
  while (n && msg[n - 1] == '\n')
    msg[--n] = '\0';
  hm_debug("hm_server: libmicrohttpd: %s", msg);
  free(msg);
}

static int status_for_code(int code) {
  switch (code) {
  case HM_E_INVALID:
  case HM_E_UNSUPPORTED: return 400;
  case HM_E_PERM: return 403;
  case HM_E_NOT_FOUND: return 404;
  case HM_E_EXISTS:
  case HM_E_BUSY: return 409;
  case HM_E_NOT_READY: return 503;
  case HM_E_TIMEOUT: return 504;
  case HM_E_NO_SLOT: return 507;
  case HM_E_AUTH: return 502;
  default: return 500;
  }
}

/* Queues body (malloc'd, taken) with the JSON content type. */
static enum MHD_Result reply(struct MHD_Connection *conn, request *rq, const char *method,
                             const char *url, unsigned status, char *body, const char *allow) {
  static const char oom[] = "{\"error\":\"hm_server: out of memory\",\"code\":-12}";
  struct MHD_Response *resp;
  if (!body) {
    status = 500;
    resp = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
  } else {
    resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
      free(body);
  }
  if (!resp)
    return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  if (allow)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  rq->responded = 1;
  hm_debug("hm_server: uid %u: %s %s -> %u", rq->uid, method, url, status);
  return r;
}

/* {"error": message, "code": code, "class": "qmp", "detail": "DeviceNotFound"}: the
 * class and detail let a client decide as an embedder would (hm_error_class). */
static char *error_body(int code, int klass, const char *detail, const char *message) {
  json_object *o = json_object_new_object();
  if (!o)
    return NULL;
  json_object_object_add(o, "error", json_object_new_string(message ? message : ""));
  json_object_object_add(o, "code", json_object_new_int(code));
  json_object_object_add(o, "class", json_object_new_string(hm_error_class_name(klass)));
  if (detail)
    json_object_object_add(o, "detail", json_object_new_string(detail));
  const char *s =
      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  char *copy = s ? strdup(s) : NULL;
  json_object_put(o);
  return copy;
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, request *rq, const char *method,
                                   const char *url, unsigned status, int code, const char *fmt, ...)
    HM_PRINTF(7, 8);
static enum MHD_Result reply_error(struct MHD_Connection *conn, request *rq, const char *method,
                                   const char *url, unsigned status, int code, const char *fmt,
                                   ...) {
  char *msg = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  /* The server's own refusals are about the request itself. */
  char *body = msg ? error_body(code, HM_ECLASS_HTTP, NULL, msg) : NULL;
  free(msg);
  return reply(conn, rq, method, url, status, body, NULL);
}

/* Answers with err (taken and freed) at the status its code maps to. */
static enum MHD_Result reply_hm_error(struct MHD_Connection *conn, request *rq, const char *method,
                                      const char *url, int code, hm_error *err) {
  if (!err || hm_error_code(err) == 0)
    err = NULL;
  int c = err ? hm_error_code(err) : code;
  char *body = error_body(c, hm_error_class(err), hm_error_detail(err),
                          err ? hm_error_message(err) : hm_strerror(c));
  hm_error_free(err);
  return reply(conn, rq, method, url, (unsigned)status_for_code(c), body, NULL);
}

static enum MHD_Result get_mounts(hm_server *srv, struct MHD_Connection *conn, request *rq,
                                  const char *method, const char *url) {
  hm_error *err = NULL;
  hm_mount_list *l = NULL;
  char *json = NULL;
  int r = hm_instance_list(srv->inst, &l, &err);
  if (r == 0)
    r = hm_mount_list_to_json(&json, l, &err);
  hm_mount_list_free(l);
  if (r < 0)
    return reply_hm_error(conn, rq, method, url, r, err);
  return reply(conn, rq, method, url, 200, json, NULL);
}

static enum MHD_Result post_mounts(hm_server *srv, struct MHD_Connection *conn, request *rq,
                                   const char *method, const char *url) {
  hm_error *err = NULL;
  hm_mount_spec *spec = NULL;
  hm_mount *m = NULL;
  char *json = NULL;
  int r = hm_mount_spec_from_json(&spec, rq->body ? rq->body : "", rq->len, &err);
  if (r == 0)
    r = hm_instance_add(srv->inst, &m, spec, &err);
  hm_mount_spec_free(spec);
  if (r == 0)
    r = hm_mount_to_json(&json, m, &err);
  hm_mount_free(m);
  if (r < 0)
    return reply_hm_error(conn, rq, method, url, r, err);
  return reply(conn, rq, method, url, 201, json, NULL);
}

/* Query values for the flags: only the spellings a person would type. */
static int query_bool(const char *v, int *out) {
  if (!strcmp(v, "1") || !strcmp(v, "true") || !*v)
    *out = 1;
  else if (!strcmp(v, "0") || !strcmp(v, "false"))
    *out = 0;
  else
    return -1;
  return 0;
}

typedef struct delete_args {
  char *mount_point;
  int lazy, force;
  char *bad; /* first problem found, malloc'd */
} delete_args;

static enum MHD_Result delete_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value) {
  delete_args *a = cls;
  if (a->bad)
    return MHD_NO;
  int ok = 1;
  if (!strcmp(key, "mountPoint")) {
    /* The last one counts. One without a value ("?mountPoint") is refused,
     * and must not leave the earlier one's freed copy behind. */
    free(a->mount_point);
    a->mount_point = NULL;
    if (!value) {
      if (asprintf(&a->bad, "query parameter \"%s\" needs a value", key) < 0)
        a->bad = NULL;
      return MHD_NO;
    }
    ok = (a->mount_point = strdup(value)) != NULL;
  } else if (!strcmp(key, "lazy")) {
    ok = query_bool(value ? value : "", &a->lazy) == 0;
  } else if (!strcmp(key, "force")) {
    ok = query_bool(value ? value : "", &a->force) == 0;
  } else {
    if (asprintf(&a->bad, "unknown query parameter \"%s\"", key) < 0)
      a->bad = NULL;
    return MHD_NO;
  }
  if (!ok &&
      asprintf(&a->bad, "bad value for query parameter \"%s\" (want true or false)", key) < 0)
    a->bad = NULL;
  return ok ? MHD_YES : MHD_NO;
}

/* The body {mountPoint, lazy?, force?}, strict like the add body. */
static int delete_from_body(delete_args *a, const char *text, size_t len, hm_error **err) {
  json_object *o = NULL;
  int r = hm_json_parse(&o, text, len, err);
  if (r < 0)
    return r;
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    return hm_err_set(err, HM_E_INVALID, "hm_server", "request body must be a JSON object");
  }
  r = 0;
  json_object_object_foreach(o, key, val) {
    json_type want = !strcmp(key, "mountPoint")                      ? json_type_string
                     : !strcmp(key, "lazy") || !strcmp(key, "force") ? json_type_boolean
                                                                     : json_type_null;
    if (want == json_type_null) {
      r = hm_err_set(err, HM_E_INVALID, "hm_server", "unknown member \"%s\"", key);
      break;
    }
    if (!json_object_is_type(val, want)) {
      r = hm_err_set(err, HM_E_INVALID, "hm_server", "member \"%s\" must be a %s", key,
                     json_type_to_name(want));
      break;
    }
    if (want == json_type_string) {
      free(a->mount_point);
      if (!(a->mount_point = strdup(json_object_get_string(val)))) {
        r = hm_err_set(err, HM_E_NOMEM, "hm_server", "out of memory");
        break;
      }
    } else if (!strcmp(key, "lazy")) {
      a->lazy = json_object_get_boolean(val);
    } else {
      a->force = json_object_get_boolean(val);
    }
  }
  json_object_put(o);
  if (r == 0 && !a->mount_point)
    r = hm_err_set(err, HM_E_INVALID, "hm_server", "missing member \"mountPoint\"");
  return r;
}

static enum MHD_Result delete_mounts(hm_server *srv, struct MHD_Connection *conn, request *rq,
                                     const char *method, const char *url) {
  hm_error *err = NULL;
  delete_args a = {0};
  int r;
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, delete_query_arg, &a);
  if (a.bad) {
    r = hm_err_set(&err, HM_E_INVALID, "hm_server", "%s", a.bad);
  } else if (rq->len) {
    if (a.mount_point) {
      r = hm_err_set(&err, HM_E_INVALID, "hm_server",
                     "give the mount point in the body or the query, not both");
    } else {
      r = delete_from_body(&a, rq->body, rq->len, &err);
    }
  } else if (!a.mount_point) {
    r = hm_err_set(&err, HM_E_INVALID, "hm_server",
                   "missing mount point (body {\"mountPoint\": ...} or query ?mountPoint=...)");
  } else {
    r = 0;
  }
  if (r == 0)
    r = hm_instance_remove(srv->inst, a.mount_point,
                           (a.lazy ? HM_REMOVE_LAZY : 0u) | (a.force ? HM_REMOVE_FORCE : 0u), &err);
  free(a.mount_point);
  free(a.bad);
  if (r < 0)
    return reply_hm_error(conn, rq, method, url, r, err);
  return reply(conn, rq, method, url, 200, strdup("{}"), NULL);
}

static enum MHD_Result get_status(hm_server *srv, struct MHD_Connection *conn, request *rq,
                                  const char *method, const char *url) {
  hm_error *err = NULL;
  hm_status *st = NULL;
  char *json = NULL;
  int r = hm_instance_status(srv->inst, &st, &err);
  if (r == 0)
    r = hm_status_to_json(&json, st, &err);
  hm_status_free(st);
  if (r < 0)
    return reply_hm_error(conn, rq, method, url, r, err);
  return reply(conn, rq, method, url, 200, json, NULL);
}

/* Bounds how long one request may hold a connection thread. */
#define MAX_AGENT_WAIT_MS 60000
#define DEFAULT_AGENT_WAIT_MS 5000

/* The optional body {timeoutMs}, strict like the others. */
static int agent_wait_from_body(int *timeout_ms, const char *text, size_t len, hm_error **err) {
  json_object *o = NULL, *v = NULL;
  int r = hm_json_parse(&o, text, len, err);
  if (r < 0)
    return r;
  if (!json_object_is_type(o, json_type_object)) {
    /* not into the loop below: json-c's foreach takes the object's table,
     * which a scalar or an array has none of (a NULL dereference) */
    json_object_put(o);
    return hm_err_set(err, HM_E_INVALID, "hm_server", "request body must be a JSON object");
  }
  json_object_object_foreach(o, key, val) {
    if (r < 0)
      break;
    if (strcmp(key, "timeoutMs") != 0)
      r = hm_err_set(err, HM_E_INVALID, "hm_server", "unknown member \"%s\"", key);
    else
      v = val;
  }
  if (r == 0 && v) {
    int64_t t = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
    if (t < 1 || t > MAX_AGENT_WAIT_MS)
      r = hm_err_set(err, HM_E_INVALID, "hm_server",
                     "member \"timeoutMs\" must be an integer from 1 to %d", MAX_AGENT_WAIT_MS);
    else
      *timeout_ms = (int)t;
  }
  json_object_put(o);
  return r;
}

static enum MHD_Result post_agent_connect(hm_server *srv, struct MHD_Connection *conn, request *rq,
                                          const char *method, const char *url) {
  hm_error *err = NULL;
  int timeout_ms = DEFAULT_AGENT_WAIT_MS, r = 0;
  if (rq->len)
    r = agent_wait_from_body(&timeout_ms, rq->body, rq->len, &err);
  if (r == 0)
    r = hm_instance_connect_agent(srv->inst, timeout_ms, &err);
  if (r < 0)
    return reply_hm_error(conn, rq, method, url, r, err);
  return reply(conn, rq, method, url, 200, strdup("{}"), NULL);
}

typedef enum MHD_Result (*route_fn)(hm_server *, struct MHD_Connection *, request *, const char *,
                                    const char *);

static const struct route {
  const char *url;
  const char *method;
  route_fn fn;
  const char *allow;
} routes[] = {
    {"/v1/mounts", MHD_HTTP_METHOD_GET, get_mounts, "GET, POST, DELETE"},
    {"/v1/mounts", MHD_HTTP_METHOD_POST, post_mounts, "GET, POST, DELETE"},
    {"/v1/mounts", MHD_HTTP_METHOD_DELETE, delete_mounts, "GET, POST, DELETE"},
    {"/v1/status", MHD_HTTP_METHOD_GET, get_status, "GET"},
    {"/v1/agent/connect", MHD_HTTP_METHOD_POST, post_agent_connect, "POST"},
};

/* The route for url and method; *allow is set when only the method is wrong. */
static const struct route *find_route(const char *url, const char *method, const char **allow) {
  *allow = NULL;
  for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
    if (strcmp(routes[i].url, url) != 0)
      continue;
    if (strcmp(routes[i].method, method) == 0)
      return &routes[i];
    *allow = routes[i].allow;
  }
  return NULL;
}

/* The connecting process's uid, or -1 when it cannot be learnt (then the
 * caller refuses the peer). */
static long peer_uid(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  uid_t uid;
  pid_t pid;
  if (!ci || hm_plat_peer(ci->connect_fd, &uid, &pid) < 0)
    return -1;
  return (long)uid;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
  hm_server *srv = cls;
  request *rq = *con_cls;
  const char *allow;

  if (!rq) {
    /* Headers only so far: decide what needs no body. */
    if (!(rq = calloc(1, sizeof(*rq))))
      return MHD_NO;
    *con_cls = rq;
    long uid = peer_uid(conn);
    rq->uid = uid < 0 ? (unsigned)-1 : (unsigned)uid;
    if (uid < 0 || (uid != 0 && (uid_t)uid != srv->euid))
      return reply_error(conn, rq, method, url, 403, HM_E_PERM,
                         "hm_server: uid %ld may not use this server (only uid %u and root may)",
                         uid, (unsigned)srv->euid);
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
      errno = 0;
      char *end;
      unsigned long long n = strtoull(cl, &end, 10);
      if (errno || end == cl || n > MAX_BODY)
        /* Refused before reading it: MHD skips the body and closes. */
        return reply_error(conn, rq, method, url, 413, HM_E_INVALID,
                           "hm_server: request body too large (limit %d bytes)", MAX_BODY);
    }
    return MHD_YES;
  }

  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (rq->responded || rq->too_large)
      return MHD_YES;
    if (rq->len + n > MAX_BODY) {
      /* Chunked, so no length up front: drain it, answer at the end. */
      rq->too_large = 1;
      free(rq->body);
      rq->body = NULL;
      rq->len = 0;
      return MHD_YES;
    }
    char *b = realloc(rq->body, rq->len + n + 1);
    if (!b)
      return MHD_NO;
    memcpy(b + rq->len, upload_data, n);
    rq->len += n;
    b[rq->len] = '\0';
    rq->body = b;
    return MHD_YES;
  }

  if (rq->responded)
    return MHD_YES;
  if (rq->too_large)
    return reply_error(conn, rq, method, url, 413, HM_E_INVALID,
                       "hm_server: request body too large (limit %d bytes)", MAX_BODY);
  const struct route *rt = find_route(url, method, &allow);
  if (rt)
    return rt->fn(srv, conn, rq, method, url);
  if (allow) {
    char *body = NULL, *msg = NULL;
    if (asprintf(&msg, "hm_server: method %s is not allowed on %s (allowed: %s)", method, url,
                 allow) >= 0)
      body = error_body(HM_E_UNSUPPORTED, HM_ECLASS_HTTP, NULL, msg);
    free(msg);
    return reply(conn, rq, method, url, 405, body, allow);
  }
  return reply_error(conn, rq, method, url, 404, HM_E_NOT_FOUND, "hm_server: no such resource: %s",
                     url);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
  request *rq = *con_cls;
  if (!rq)
    return;
  free(rq->body);
  free(rq);
  *con_cls = NULL;
}

/* A unix stream socket, close-on-exec (hm_plat_socket) and non-blocking;
 * -1 with errno. */
static int unix_socket_nonblock(void) {
  int fd = hm_plat_socket(AF_UNIX, SOCK_STREAM);
  if (fd < 0)
    return -1;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* 1 when something accepts connections at sa. */
static int socket_is_live(const struct sockaddr_un *sa) {
  int fd = unix_socket_nonblock();
  if (fd < 0)
    return -errno;
  int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
  /* EAGAIN: its backlog is full, which only a live listener has. */
  int live = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
  int e = errno;
  close(fd);
  if (live)
    return 1;
  return e == ECONNREFUSED ? 0 : -e;
}

/* A listening socket at path, mode 0600, or a negative code. */
static int make_listener(hm_server *srv, const char *path, hm_error **err) {
  static const char func[] = "hm_server_new";
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  struct stat st;
  if (strlen(path) >= sizeof(sa.sun_path))
    return hm_err_set(err, HM_E_INVALID, func, "socket path %s is too long (limit %zu bytes)", path,
                      sizeof(sa.sun_path) - 1);
  memcpy(sa.sun_path, path, strlen(path) + 1);

  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return hm_err_set(err, HM_E_EXISTS, func, "%s exists and is not a socket; not replacing it",
                        path);
    int live = socket_is_live(&sa);
    if (live > 0)
      return hm_err_set(err, HM_E_EXISTS, func, "a server is already running on %s", path);
    if (live < 0)
      return hm_err_set(err, live, func, "cannot probe the existing socket %s: %s", path,
                        strerror(-live));
    /* Left behind by a server that died: nobody answers on it. */
    if (unlink(path) < 0 && errno != ENOENT)
      return hm_err_set(err, -errno, func, "cannot remove the stale socket %s: %s", path,
                        strerror(errno));
    hm_info("hm_server: replaced the stale socket %s", path);
  } else if (errno != ENOENT) {
    return hm_err_set(err, -errno, func, "%s: %s", path, strerror(errno));
  }

  int fd = unix_socket_nonblock();
  if (fd < 0)
    return hm_err_set(err, -errno, func, "socket: %s", strerror(errno));
  /* The file must never exist with a wider mode, not even for a moment.
   * umask is process-wide; this is the documented window in which another
   * thread creating files would get 0600 too, which errs on the safe side. */
  mode_t old = umask(0177);
  int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
  int e = errno;
  umask(old);
  if (r < 0) {
    close(fd);
    if (e == EADDRINUSE)
      return hm_err_set(err, HM_E_EXISTS, func, "%s appeared while starting (another server?)",
                        path);
    return hm_err_set(err, -e, func, "cannot bind %s: %s", path, strerror(e));
  }
  if (lstat(path, &st) < 0 || listen(fd, 64) < 0) {
    e = errno;
    unlink(path);
    close(fd);
    return hm_err_set(err, -e, func, "cannot listen on %s: %s", path, strerror(e));
  }
  srv->dev = st.st_dev;
  srv->ino = st.st_ino;
  return fd;
}

/* Removes the socket file if it is still the one we created. */
static void remove_socket(hm_server *srv) {
  struct stat st;
  if (srv->path && lstat(srv->path, &st) == 0 && st.st_dev == srv->dev && st.st_ino == srv->ino)
    unlink(srv->path);
}

int hm_server_new(hm_server **out, hm_instance *inst, const char *socket_path, hm_error **err) {
  if (!out || !inst || !socket_path || !*socket_path)
    return HM_ERR(err, HM_E_INVALID, "out, inst and socket_path must be given");
  hm_server *srv = calloc(1, sizeof(*srv));
  if (!srv || !(srv->path = strdup(socket_path))) {
    free(srv);
    return HM_ERR_NOMEM(err);
  }
  srv->inst = inst;
  srv->euid = geteuid();
  int fd = make_listener(srv, socket_path, err);
  if (fd < 0) {
    free(srv->path);
    free(srv);
    return fd;
  }

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  /* poll, not select: the embedding process may have fds above FD_SETSIZE. */
  /* The logger goes first: MHD uses stderr for whatever comes before it. */
  srv->mhd =
      MHD_start_daemon(MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                           MHD_USE_ERROR_LOG | MHD_USE_ITC,
                       0, NULL, NULL, handle, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                       MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_NOTIFY_COMPLETED,
                       completed, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_END);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!srv->mhd) {
    remove_socket(srv);
    close(fd);
    free(srv->path);
    free(srv);
    return HM_ERR(err, HM_E_INTERNAL, "libmicrohttpd could not start serving %s", socket_path);
  }
  hm_info("hm_server: serving the HTTP API on %s", socket_path);
  *out = srv;
  return 0;
}

void hm_server_free(hm_server *srv) {
  if (!srv)
    return;
  /* Unlink first: from here on a client gets "not running" at once instead
   * of a connection that is about to be cut. */
  remove_socket(srv);
  /* Joins every connection thread, so requests in flight finish first; it
   * also closes the listening socket we handed over. */
  MHD_stop_daemon(srv->mhd);
  free(srv->path);
  free(srv);
}
