/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The HTTP API's client (docs/api.md), libcurl over hotmountd's unix socket.
 * One easy handle per client, so consecutive calls reuse the connection.
 */
#include "mount_internal.h"
#include "status_internal.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* A daemon answer is a mount list at most; this bounds a confused peer. */
#define MAX_RESPONSE (16 * 1024 * 1024)
#define DEFAULT_TIMEOUT_MS 120000

struct hm_client {
  char *socket_path;
  CURL *curl;
  long timeout_ms;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void) {
  curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct buffer {
  char *data;
  size_t len;
  int overflow;
} buffer;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
  buffer *b = userdata;
  size_t n = size * nmemb;
  if (b->len + n > MAX_RESPONSE) {
    b->overflow = 1;
    return 0; /* makes curl fail the transfer */
  }
  char *d = realloc(b->data, b->len + n + 1);
  if (!d)
    return 0;
  memcpy(d + b->len, ptr, n);
  b->len += n;
  d[b->len] = '\0';
  b->data = d;
  return n;
}

int hm_client_new(hm_client **out, const char *socket_path, hm_error **err) {
  if (!out || !socket_path || !*socket_path)
    return HM_ERR(err, HM_E_INVALID, "out and socket_path must be given");
  if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return HM_ERR(err, HM_E_INVALID, "socket path %s is too long", socket_path);
  pthread_once(&curl_once, curl_init);
  if (curl_init_result != CURLE_OK)
    return HM_ERR(err, HM_E_INTERNAL, "libcurl initialization failed: %s",
                  curl_easy_strerror(curl_init_result));
  hm_client *c = calloc(1, sizeof(*c));
  if (!c || !(c->socket_path = strdup(socket_path)) || !(c->curl = curl_easy_init())) {
    if (c)
      free(c->socket_path);
    free(c);
    return HM_ERR_NOMEM(err);
  }
  c->timeout_ms = DEFAULT_TIMEOUT_MS;
  *out = c;
  return 0;
}

void hm_client_free(hm_client *c) {
  if (!c)
    return;
  curl_easy_cleanup(c->curl);
  free(c->socket_path);
  free(c);
}

int hm_client_set_timeout(hm_client *c, int timeout_ms, hm_error **err) {
  if (!c || timeout_ms <= 0)
    return HM_ERR(err, HM_E_INVALID, "timeout must be positive");
  c->timeout_ms = timeout_ms;
  return 0;
}

/* The code for an error answer that carries none of ours (a proxy, an older
 * daemon, libmicrohttpd's own error pages). */
static int code_for_status(long status) {
  switch (status) {
  case 400:
  case 413: return HM_E_INVALID;
  case 403: return HM_E_PERM;
  case 404: return HM_E_NOT_FOUND;
  case 405: return HM_E_UNSUPPORTED;
  case 409: return HM_E_EXISTS;
  case 503: return HM_E_NOT_READY;
  case 504: return HM_E_TIMEOUT;
  case 507: return HM_E_NO_SLOT;
  default: return HM_E_PROTOCOL;
  }
}

/* Turns an error answer into *err with the daemon's code, class, detail and
 * message. */
static int daemon_error(const char *func, long status, const buffer *b, hm_error **err) {
  json_object *o = NULL, *msg = NULL, *code = NULL, *klass = NULL, *detail = NULL;
  if (b->data && hm_json_parse(&o, b->data, b->len, NULL) == 0 &&
      json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "error", &msg) &&
      json_object_is_type(msg, json_type_string)) {
    int c = code_for_status(status);
    if (json_object_object_get_ex(o, "code", &code) && json_object_is_type(code, json_type_int)) {
      int64_t v = json_object_get_int64(code);
      /* Only a plausible code is trusted; 0 or positive would read as success. */
      if (v < 0 && v > -100000)
        c = (int)v;
    }
    int k = HM_ECLASS_NONE;
    if (json_object_object_get_ex(o, "class", &klass) &&
        json_object_is_type(klass, json_type_string))
      k = hm_error_class_parse(json_object_get_string(klass));
    const char *d = NULL;
    if (json_object_object_get_ex(o, "detail", &detail) &&
        json_object_is_type(detail, json_type_string))
      d = json_object_get_string(detail);
    int r = hm_err_setc(err, c, k, d, func, "%s", json_object_get_string(msg));
    json_object_put(o);
    return r;
  }
  json_object_put(o);
  return hm_err_setc(err, HM_E_PROTOCOL, HM_ECLASS_HTTP, NULL, func,
                     "the daemon answered HTTP %ld without a valid error body", status);
}

/* hotmountd takes the instance directory as a path; the socket lives in it. */
static int not_running(const char *func, const hm_client *c, const char *detail, hm_error **err) {
  const char *slash = strrchr(c->socket_path, '/');
  int dlen = slash ? (slash == c->socket_path ? 1 : (int)(slash - c->socket_path)) : 1;
  const char *dir = slash ? c->socket_path : ".";
  return hm_err_setc(err, HM_E_NOT_READY, HM_ECLASS_HTTP, NULL, func,
                     "hotmountd is not running at %s (%s); start it with: hotmountd %.*s",
                     c->socket_path, detail, dlen, dir);
}

/*
 * One request. body may be NULL. On success *status and *resp (the body;
 * free resp->data) are set; transport failures are mapped to codes here.
 */
static int request(hm_client *c, const char *func, const char *method, const char *path,
                   const char *body, long *status, buffer *resp, hm_error **err) {
  char errbuf[CURL_ERROR_SIZE] = "";
  char url[64];
  struct curl_slist *headers = NULL, *h;
  memset(resp, 0, sizeof(*resp));
  snprintf(url, sizeof(url), "http://localhost%s", path);

  /* reset keeps the connection cache, so keep-alive still works. */
  curl_easy_reset(c->curl);
  if ((h = curl_slist_append(headers, "Accept: application/json")))
    headers = h;
  if (body) {
    if ((h = curl_slist_append(headers, "Content-Type: application/json")))
      headers = h;
    /* No 100-continue round trip: our bodies are small. */
    if ((h = curl_slist_append(headers, "Expect:")))
      headers = h;
  }
  if (!headers)
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                              \
  do {                                                                                             \
    if (cc == CURLE_OK)                                                                            \
      cc = curl_easy_setopt(c->curl, opt, val);                                                    \
  } while (0)
  SET(CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
  SET(CURLOPT_URL, url);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
  SET(CURLOPT_HTTPHEADER, headers);
  SET(CURLOPT_ERRORBUFFER, errbuf);
  SET(CURLOPT_WRITEFUNCTION, on_data);
  SET(CURLOPT_WRITEDATA, resp);
  SET(CURLOPT_PROTOCOLS_STR, "http");
  if (body) {
    SET(CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    SET(CURLOPT_POSTFIELDS, body);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
    SET(CURLOPT_CUSTOMREQUEST, method);
#undef SET
  if (cc != CURLE_OK) {
    curl_slist_free_all(headers);
    return hm_err_set(err, HM_E_INTERNAL, func, "libcurl refused an option: %s",
                      curl_easy_strerror(cc));
  }

  cc = curl_easy_perform(c->curl);
  curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(headers);
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
  int r = 0;
  switch (cc) {
  case CURLE_OK: break;
  case CURLE_COULDNT_CONNECT: r = not_running(func, c, why, err); break;
  case CURLE_OPERATION_TIMEDOUT:
    r = hm_err_setc(err, HM_E_TIMEOUT, HM_ECLASS_HTTP, NULL, func,
                    "no answer from hotmountd at %s within %ld ms", c->socket_path, c->timeout_ms);
    break;
  case CURLE_OUT_OF_MEMORY: r = hm_err_set(err, HM_E_NOMEM, func, "out of memory"); break;
  case CURLE_WRITE_ERROR:
    r = resp->overflow ? hm_err_setc(err, HM_E_PROTOCOL, HM_ECLASS_HTTP, NULL, func,
                                     "the daemon's answer is larger than %d bytes", MAX_RESPONSE)
                       : hm_err_set(err, HM_E_NOMEM, func, "out of memory");
    break;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
    r = hm_err_setc(err, HM_E_IO, HM_ECLASS_HTTP, NULL, func, "talking to hotmountd at %s: %s",
                    c->socket_path, why);
    break;
  default:
    r = hm_err_setc(err, HM_E_PROTOCOL, HM_ECLASS_HTTP, NULL, func,
                    "bad answer from hotmountd at %s: %s", c->socket_path, why);
    break;
  }
  if (r < 0) {
    free(resp->data);
    memset(resp, 0, sizeof(*resp));
    return r;
  }
  curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
  return 0;
}

int hm_client_add(hm_client *c, hm_mount **out, const hm_mount_spec *spec, hm_error **err) {
  if (!c || !spec)
    return HM_ERR(err, HM_E_INVALID, "c and spec must not be NULL");
  json_object *o = hm_mount_spec_to_json_object(spec);
  const char *s =
      o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
        : NULL;
  char *body = s ? strdup(s) : NULL;
  json_object_put(o);
  if (!body)
    return HM_ERR_NOMEM(err);
  long status = 0;
  buffer resp;
  int r = request(c, __func__, "POST", "/v1/mounts", body, &status, &resp, err);
  free(body);
  if (r < 0)
    return r;
  if (status != 201 && status != 200) {
    r = daemon_error(__func__, status, &resp, err);
  } else {
    json_object *m = NULL;
    hm_mount *mount = NULL;
    r = hm_json_parse(&m, resp.data ? resp.data : "", resp.len, err);
    if (r == 0)
      r = hm_mount_from_json_object(&mount, m, err);
    json_object_put(m);
    if (r < 0 && r != HM_E_NOMEM)
      r = hm_error_prefix(err, HM_E_PROTOCOL, __func__, "bad mount in the daemon's answer");
    if (r == 0 && out)
      *out = mount;
    else
      hm_mount_free(mount);
  }
  free(resp.data);
  return r;
}

int hm_client_remove(hm_client *c, const char *guest_path, unsigned flags, hm_error **err) {
  if (!c || !guest_path)
    return HM_ERR(err, HM_E_INVALID, "c and guest_path must not be NULL");
  if (flags & ~(HM_REMOVE_LAZY | HM_REMOVE_FORCE))
    return HM_ERR(err, HM_E_INVALID, "unknown flags 0x%x",
                  flags & ~(HM_REMOVE_LAZY | HM_REMOVE_FORCE));
  json_object *o = json_object_new_object();
  char *body = NULL;
  if (o) {
    json_object_object_add(o, "mountPoint", json_object_new_string(guest_path));
    if (flags & HM_REMOVE_LAZY)
      json_object_object_add(o, "lazy", json_object_new_boolean(1));
    if (flags & HM_REMOVE_FORCE)
      json_object_object_add(o, "force", json_object_new_boolean(1));
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    body = s ? strdup(s) : NULL;
    json_object_put(o);
  }
  if (!body)
    return HM_ERR_NOMEM(err);
  long status = 0;
  buffer resp;
  int r = request(c, __func__, "DELETE", "/v1/mounts", body, &status, &resp, err);
  free(body);
  if (r < 0)
    return r;
  if (status != 200 && status != 204)
    r = daemon_error(__func__, status, &resp, err);
  free(resp.data);
  return r;
}

int hm_client_list(hm_client *c, hm_mount_list **out, hm_error **err) {
  if (!c || !out)
    return HM_ERR(err, HM_E_INVALID, "c and out must not be NULL");
  long status = 0;
  buffer resp;
  int r = request(c, __func__, "GET", "/v1/mounts", NULL, &status, &resp, err);
  if (r < 0)
    return r;
  if (status != 200) {
    r = daemon_error(__func__, status, &resp, err);
  } else {
    r = hm_mount_list_from_json(out, resp.data ? resp.data : "", resp.len, err);
    if (r < 0 && r != HM_E_NOMEM)
      r = hm_error_prefix(err, HM_E_PROTOCOL, __func__, "bad mount list in the daemon's answer");
  }
  free(resp.data);
  return r;
}

int hm_client_status(hm_client *c, hm_status **out, hm_error **err) {
  if (!c || !out)
    return HM_ERR(err, HM_E_INVALID, "c and out must not be NULL");
  long status = 0;
  buffer resp;
  int r = request(c, __func__, "GET", "/v1/status", NULL, &status, &resp, err);
  if (r < 0)
    return r;
  if (status != 200) {
    r = daemon_error(__func__, status, &resp, err);
  } else {
    r = hm_status_from_json(out, resp.data ? resp.data : "", resp.len, err);
    if (r < 0 && r != HM_E_NOMEM)
      r = hm_error_prefix(err, HM_E_PROTOCOL, __func__, "bad status in the daemon's answer");
  }
  free(resp.data);
  return r;
}

/* The daemon's own limit (lib/server/server.c) is the same. */
#define MAX_AGENT_WAIT_MS 60000
/* Time for the answer to travel back once the daemon gave up waiting. */
#define AGENT_WAIT_GRACE_MS 5000

int hm_client_connect_agent(hm_client *c, int timeout_ms, hm_error **err) {
  if (!c)
    return HM_ERR(err, HM_E_INVALID, "c must not be NULL");
  if (timeout_ms < 1 || timeout_ms > MAX_AGENT_WAIT_MS)
    return HM_ERR(err, HM_E_INVALID, "timeout_ms must be from 1 to %d, not %d", MAX_AGENT_WAIT_MS,
                  timeout_ms);
  char body[64];
  snprintf(body, sizeof(body), "{\"timeoutMs\":%d}", timeout_ms);
  /* The daemon waits timeout_ms for the guest: our own deadline must not cut
   * that short and turn a clear "agent did not answer" into a vague one. */
  long saved = c->timeout_ms;
  if (c->timeout_ms < (long)timeout_ms + AGENT_WAIT_GRACE_MS)
    c->timeout_ms = (long)timeout_ms + AGENT_WAIT_GRACE_MS;
  long status = 0;
  buffer resp;
  int r = request(c, __func__, "POST", "/v1/agent/connect", body, &status, &resp, err);
  c->timeout_ms = saved;
  if (r < 0)
    return r;
  if (status != 200)
    r = daemon_error(__func__, status, &resp, err);
  free(resp.data);
  return r;
}
