/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "core/agent_proto.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *hm_agent_op_name(int op) {
  switch (op) {
  case HM_AGENT_OP_HELLO: return "hello";
  case HM_AGENT_OP_MOUNT: return "mount";
  case HM_AGENT_OP_UMOUNT: return "umount";
  case HM_AGENT_OP_LIST: return "list";
  case HM_AGENT_OP_NOTIFY: return "notify";
  default: return NULL;
  }
}

static int op_parse(const char *name) {
  for (int op = HM_AGENT_OP_HELLO; op <= HM_AGENT_OP_NOTIFY; op++)
    if (strcmp(name, hm_agent_op_name(op)) == 0)
      return op;
  return 0;
}

static const char *type_name(int type) {
  switch (type) {
  case HM_TYPE_VIRTIOFS: return "virtiofs";
  case HM_TYPE_9P: return "9p";
  case HM_TYPE_BIND: return "bind";
  default: return NULL;
  }
}

void hm_agent_mount_info_free(hm_agent_mount_info *v, size_t n) {
  if (!v)
    return;
  for (size_t i = 0; i < n; i++) {
    free(v[i].target);
    free(v[i].fstype);
    free(v[i].source);
    free(v[i].options);
  }
  free(v);
}

void hm_agent_request_clear(hm_agent_request *req) {
  if (!req)
    return;
  free(req->tag);
  free(req->port);
  free(req->source);
  free(req->target);
  free(req->options);
  for (size_t i = 0; i < req->n_events; i++)
    free(req->events[i].path);
  free(req->events);
  memset(req, 0, sizeof(*req));
}

void hm_agent_response_clear(hm_agent_response *resp) {
  if (!resp)
    return;
  free(resp->error);
  free(resp->agent_name);
  free(resp->agent_version);
  hm_strv_free(resp->capabilities);
  hm_agent_mount_info_free(resp->mounts, resp->n_mounts);
  free(resp->boot_id);
  memset(resp, 0, sizeof(*resp));
}

/* ------------------------------------------------------------------------ */
/* Encoding */

static int add(json_object *o, const char *key, json_object *v) {
  if (!v)
    return -1;
  if (json_object_object_add(o, key, v) < 0) {
    json_object_put(v);
    return -1;
  }
  return 0;
}

static int add_str(json_object *o, const char *key, const char *s) {
  return add(o, key, json_object_new_string(s));
}

/* Serializes o as one line with a trailing newline; consumes o. */
static int finish(char **out, json_object *o, const char *func, hm_error **err) {
  const char *s =
      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  char *line = NULL;
  if (!s || asprintf(&line, "%s\n", s) < 0) {
    json_object_put(o);
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  }
  json_object_put(o);
  *out = line;
  return 0;
}

int hm_agent_request_encode(char **out, const hm_agent_request *req, hm_error **err) {
  *out = NULL;
  const char *op = hm_agent_op_name(req->op);
  if (!op)
    return HM_ERR(err, HM_E_INVALID, "unknown op %d", req->op);
  json_object *o = json_object_new_object();
  if (!o)
    return HM_ERR_NOMEM(err);
  int r = 0;
  r |= add(o, "id", json_object_new_int64(req->id));
  r |= add_str(o, "op", op);
  switch (req->op) {
  case HM_AGENT_OP_HELLO:
    r |= add(o, "major", json_object_new_int(req->major));
    r |= add(o, "minor", json_object_new_int(req->minor));
    break;
  case HM_AGENT_OP_MOUNT: {
    const char *t = type_name(req->type);
    /* 9p: a port (trans=fd through the relay) or a tag (trans=virtio). */
    int bind = req->type == HM_TYPE_BIND;
    if (!t || !req->target || (req->type == HM_TYPE_VIRTIOFS && !req->tag) ||
        (req->type == HM_TYPE_9P && !req->port && !req->tag) ||
        (bind && (!req->source || req->tag || req->port || req->options)) ||
        (req->type == HM_TYPE_9P && req->source)) {
      json_object_put(o);
      return HM_ERR(err, HM_E_INVALID, "mount request needs a known type, a target and %s",
                    req->type == HM_TYPE_9P ? "a port or a tag (and no source)"
                    : bind                  ? "a source (and no tag, port or options)"
                                            : "a tag (a source only for virtiofs)");
    }
    r |= add_str(o, "type", t);
    if (req->source)
      r |= add_str(o, "source", req->source);
    if (req->tag)
      r |= add_str(o, "tag", req->tag);
    if (req->port)
      r |= add_str(o, "port", req->port);
    r |= add_str(o, "target", req->target);
    r |= add(o, "readonly", json_object_new_boolean(req->readonly != 0));
    if (req->options)
      r |= add_str(o, "options", req->options);
    r |= add(o, "timeout_ms", json_object_new_int(req->timeout_ms));
    break;
  }
  case HM_AGENT_OP_UMOUNT:
    if (!req->target) {
      json_object_put(o);
      return HM_ERR(err, HM_E_INVALID, "umount request needs a target");
    }
    r |= add_str(o, "target", req->target);
    r |= add(o, "lazy", json_object_new_boolean(req->lazy != 0));
    r |= add(o, "force", json_object_new_boolean(req->force != 0));
    break;
  case HM_AGENT_OP_NOTIFY: {
    if (!req->target || req->n_events > HM_NOTIFY_MAX_BATCH || (req->n_events && !req->events)) {
      json_object_put(o);
      return HM_ERR(err, HM_E_INVALID, "notify request needs a target and 0 to %d events",
                    HM_NOTIFY_MAX_BATCH);
    }
    r |= add_str(o, "target", req->target);
    json_object *arr = json_object_new_array();
    r |= add(o, "events", arr);
    for (size_t i = 0; arr && i < req->n_events; i++) {
      const char *kind = hm_notify_kind_name(req->events[i].kind);
      const char *why = NULL;
      if (!kind || hm_notify_path_check(req->events[i].path, &why) < 0) {
        json_object_put(o);
        return HM_ERR(err, HM_E_INVALID, "notify event %zu: %s", i, kind ? why : "unknown kind");
      }
      json_object *e = json_object_new_object();
      if (!e || json_object_array_add(arr, e) < 0) {
        json_object_put(e);
        r = -1;
        break;
      }
      r |= add_str(e, "kind", kind);
      r |= add_str(e, "path", req->events[i].path);
    }
    break;
  }
  default: break;
  }
  if (r) {
    json_object_put(o);
    return HM_ERR_NOMEM(err);
  }
  return finish(out, o, __func__, err);
}

int hm_agent_response_encode(char **out, int op, const hm_agent_response *resp, hm_error **err) {
  *out = NULL;
  json_object *o = json_object_new_object();
  if (!o)
    return HM_ERR_NOMEM(err);
  int r = 0;
  r |= add(o, "id", json_object_new_int64(resp->id));
  r |= add(o, "ok", json_object_new_boolean(resp->ok != 0));
  if (!resp->ok) {
    r |= add(o, "errno", json_object_new_int(resp->err_no > 0 ? resp->err_no : EIO));
    r |= add_str(o, "error", resp->error ? resp->error : "unknown error");
  } else if (op == HM_AGENT_OP_HELLO) {
    if (resp->boot_id)
      r |= add_str(o, "boot_id", resp->boot_id);
    r |= add(o, "major", json_object_new_int(resp->major));
    r |= add(o, "minor", json_object_new_int(resp->minor));
    r |= add_str(o, "agent", resp->agent_name ? resp->agent_name : "");
    r |= add_str(o, "agent_version", resp->agent_version ? resp->agent_version : "");
    json_object *caps = json_object_new_array();
    r |= add(o, "capabilities", caps);
    for (char **c = resp->capabilities; caps && c && *c; c++)
      r |= json_object_array_add(caps, json_object_new_string(*c)) < 0;
  } else if (op == HM_AGENT_OP_LIST) {
    if (resp->boot_id)
      r |= add_str(o, "boot_id", resp->boot_id);
    json_object *arr = json_object_new_array();
    r |= add(o, "mounts", arr);
    for (size_t i = 0; arr && i < resp->n_mounts; i++) {
      const hm_agent_mount_info *m = &resp->mounts[i];
      json_object *e = json_object_new_object();
      if (!e || json_object_array_add(arr, e) < 0) {
        json_object_put(e);
        r = -1;
        break;
      }
      r |= add_str(e, "target", m->target ? m->target : "");
      r |= add_str(e, "fstype", m->fstype ? m->fstype : "");
      r |= add_str(e, "source", m->source ? m->source : "");
      r |= add_str(e, "options", m->options ? m->options : "");
    }
  }
  if (r) {
    json_object_put(o);
    return HM_ERR_NOMEM(err);
  }
  return finish(out, o, __func__, err);
}

/* ------------------------------------------------------------------------ */
/* Decoding */

/* A key, made safe to put in a message: the peer chose it. */
static void safe_key(char *buf, size_t size, const char *key) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)key; *p && o + 1 < size; p++)
    buf[o++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
  buf[o] = '\0';
  if (key[0] && strlen(key) >= size - 1 && size > 4)
    memcpy(buf + size - 4, "...", 4);
}

static json_object *parse_line(const char *line, size_t len, size_t max, const char *what,
                               const char *func, hm_error **err) {
  if (len > max) {
    hm_err_set(err, HM_E_PROTOCOL, func, "%s is too long (%zu bytes, at most %zu)", what, len, max);
    return NULL;
  }
  if (memchr(line, '\0', len)) {
    hm_err_set(err, HM_E_PROTOCOL, func, "%s contains a NUL byte", what);
    return NULL;
  }
  /* Our messages nest three deep; json-c's default (32) would let a peer
   * make us build and free deep trees for nothing. */
  json_tokener *tok = json_tokener_new_ex(HM_AGENT_MAX_DEPTH);
  if (!tok) {
    hm_err_set(err, HM_E_NOMEM, func, "out of memory");
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *o = json_tokener_parse_ex(tok, line, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!o || jerr != json_tokener_success) {
    json_object_put(o);
    hm_err_set(err, HM_E_PROTOCOL, func, "%s is not valid JSON: %s", what,
               jerr == json_tokener_continue ? "unexpected end of line"
                                             : json_tokener_error_desc(jerr));
    return NULL;
  }
  for (size_t i = end; i < len; i++) {
    if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') {
      json_object_put(o);
      hm_err_set(err, HM_E_PROTOCOL, func, "%s has trailing data after the JSON value", what);
      return NULL;
    }
  }
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    hm_err_set(err, HM_E_PROTOCOL, func, "%s is not a JSON object", what);
    return NULL;
  }
  return o;
}

/* Every key of o must be in allowed (NULL-terminated). */
static int check_keys(json_object *o, const char *const *allowed, const char *what,
                      const char *func, hm_error **err) {
  json_object_object_foreach(o, key, val) {
    (void)val;
    int found = 0;
    for (const char *const *a = allowed; *a; a++)
      if (strcmp(*a, key) == 0)
        found = 1;
    if (!found) {
      char k[64];
      safe_key(k, sizeof(k), key);
      return hm_err_set(err, HM_E_PROTOCOL, func, "%s: unknown field '%s'", what, k);
    }
  }
  return 0;
}

/* Field getters: required ones fail when missing; optional ones leave *out. */
static int get_field(json_object *o, const char *key, json_type type, int required,
                     json_object **out, const char *what, const char *func, hm_error **err) {
  static const char *const tn[] = {
      [json_type_null] = "null",        [json_type_boolean] = "a boolean",
      [json_type_double] = "a number",  [json_type_int] = "an integer",
      [json_type_object] = "an object", [json_type_array] = "an array",
      [json_type_string] = "a string"};
  json_object *v = NULL;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v)) {
    if (required)
      return hm_err_set(err, HM_E_PROTOCOL, func, "%s: missing field '%s'", what, key);
    return 0;
  }
  if (!json_object_is_type(v, type))
    return hm_err_set(err, HM_E_PROTOCOL, func, "%s: field '%s' must be %s", what, key, tn[type]);
  *out = v;
  return 0;
}

static int get_int(json_object *o, const char *key, int required, int64_t min, int64_t max,
                   int64_t *out, const char *what, const char *func, hm_error **err) {
  json_object *v;
  int r = get_field(o, key, json_type_int, required, &v, what, func, err);
  if (r < 0 || !v)
    return r;
  errno = 0;
  int64_t x = json_object_get_int64(v);
  /* json-c clamps integers beyond int64 to INT64_MIN/MAX without an error, so
   * every range here stops short of those. */
  if (errno == ERANGE || x < min || x > max)
    return hm_err_set(err, HM_E_PROTOCOL, func, "%s: field '%s' is out of range (%lld..%lld)", what,
                      key, (long long)min, (long long)max);
  *out = x;
  return 0;
}

static int get_bool(json_object *o, const char *key, int required, int *out, const char *what,
                    const char *func, hm_error **err) {
  json_object *v;
  int r = get_field(o, key, json_type_boolean, required, &v, what, func, err);
  if (r < 0 || !v)
    return r;
  *out = json_object_get_boolean(v) ? 1 : 0;
  return 0;
}

/* A string field of at most max bytes: the peer may be hostile, and what
 * we keep of it ends up in state, logs and messages. */
static int get_str(json_object *o, const char *key, int required, size_t max, char **out,
                   const char *what, const char *func, hm_error **err) {
  json_object *v;
  int r = get_field(o, key, json_type_string, required, &v, what, func, err);
  if (r < 0 || !v)
    return r;
  const char *s = json_object_get_string(v);
  size_t len = (size_t)json_object_get_string_len(v);
  if (len > max)
    return hm_err_set(err, HM_E_PROTOCOL, func,
                      "%s: field '%s' is too long (%zu bytes, at most %zu)", what, key, len, max);
  /* Our strings are C strings: an escaped \u0000 would silently truncate. */
  if (len != strlen(s))
    return hm_err_set(err, HM_E_PROTOCOL, func, "%s: field '%s' contains a NUL character", what,
                      key);
  char *d = strdup(s);
  if (!d)
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  free(*out);
  *out = d;
  return 0;
}

/* The events of a notify request: each {kind, path}, path relative to the
 * mount and checked here, so neither side acts on one the other refuses. */
static int decode_events(hm_agent_request *out, json_object *arr, const char *func,
                         hm_error **err) {
  static const char *const keys[] = {"kind", "path", NULL};
  const char *what = "notify: event";
  size_t n = json_object_array_length(arr);
  if (n > HM_NOTIFY_MAX_BATCH)
    return hm_err_set(err, HM_E_PROTOCOL, func, "notify: %zu events (0 to %d are accepted)", n,
                      HM_NOTIFY_MAX_BATCH);
  if (!(out->events = calloc(n ? n : 1, sizeof(*out->events))))
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    char *kind = NULL;
    const char *why = NULL;
    int r;
    out->n_events = i + 1;
    if (!json_object_is_type(e, json_type_object))
      return hm_err_set(err, HM_E_PROTOCOL, func, "notify: events[%zu] is not an object", i);
    if ((r = check_keys(e, keys, what, func, err)) < 0 ||
        (r = get_str(e, "kind", 1, HM_AGENT_MAX_NAME, &kind, what, func, err)) < 0 ||
        (r = get_str(e, "path", 1, HM_AGENT_MAX_PATH, &out->events[i].path, what, func, err)) < 0) {
      free(kind);
      return r;
    }
    out->events[i].kind = hm_notify_kind_parse(kind);
    free(kind);
    if (!out->events[i].kind)
      return hm_err_set(err, HM_E_PROTOCOL, func,
                        "notify: events[%zu]: unknown kind (expected create, modify, attrib, "
                        "delete or rename)",
                        i);
    if (hm_notify_path_check(out->events[i].path, &why) < 0)
      return hm_err_set(err, HM_E_PROTOCOL, func, "notify: events[%zu]: %s", i, why);
  }
  return 0;
}

int hm_agent_request_decode(hm_agent_request *out, const char *line, size_t len, hm_error **err) {
  static const char *const k_hello[] = {"id", "op", "major", "minor", NULL};
  static const char *const k_mount[] = {"id",      "op",         "type",   "tag",
                                        "port",    "source",     "target", "readonly",
                                        "options", "timeout_ms", NULL};
  static const char *const k_umount[] = {"id", "op", "target", "lazy", "force", NULL};
  static const char *const k_list[] = {"id", "op", NULL};
  static const char *const k_notify[] = {"id", "op", "target", "events", NULL};
  const char *func = __func__;
  memset(out, 0, sizeof(*out));
  json_object *o = parse_line(line, len, HM_AGENT_MAX_LINE, "request", func, err);
  if (!o)
    return HM_E_PROTOCOL;
  int64_t x = 0;
  int r = get_int(o, "id", 1, 0, HM_AGENT_MAX_ID, &x, "request", func, err);
  if (r < 0)
    goto out;
  out->id = x;
  char *opname = NULL;
  r = get_str(o, "op", 1, HM_AGENT_MAX_NAME, &opname, "request", func, err);
  if (r < 0)
    goto out;
  out->op = op_parse(opname);
  if (!out->op) {
    char k[64];
    safe_key(k, sizeof(k), opname);
    free(opname);
    r = hm_err_set(err, HM_E_UNSUPPORTED, func, "unknown op '%s'", k);
    goto out;
  }
  free(opname);
  const char *what = hm_agent_op_name(out->op);
  switch (out->op) {
  case HM_AGENT_OP_HELLO:
    if ((r = check_keys(o, k_hello, what, func, err)) < 0 ||
        (r = get_int(o, "major", 1, 0, INT32_MAX, &x, what, func, err)) < 0)
      goto out;
    out->major = (int)x;
    if ((r = get_int(o, "minor", 1, 0, INT32_MAX, &x, what, func, err)) < 0)
      goto out;
    out->minor = (int)x;
    break;
  case HM_AGENT_OP_MOUNT: {
    char *type = NULL;
    if ((r = check_keys(o, k_mount, what, func, err)) < 0 ||
        (r = get_str(o, "type", 1, HM_AGENT_MAX_NAME, &type, what, func, err)) < 0)
      goto out;
    out->type = strcmp(type, "virtiofs") == 0 ? HM_TYPE_VIRTIOFS
                : strcmp(type, "9p") == 0     ? HM_TYPE_9P
                : strcmp(type, "bind") == 0   ? HM_TYPE_BIND
                                              : 0;
    if (!out->type) {
      char k[64];
      safe_key(k, sizeof(k), type);
      free(type);
      r = hm_err_set(err, HM_E_PROTOCOL, func,
                     "mount: unknown type '%s' (expected \"virtiofs\", \"9p\" or \"bind\")", k);
      goto out;
    }
    free(type);
    int virtiofs = out->type == HM_TYPE_VIRTIOFS, bind = out->type == HM_TYPE_BIND;
    if ((r = get_str(o, "tag", virtiofs, HM_AGENT_MAX_PATH, &out->tag, what, func, err)) < 0 ||
        (r = get_str(o, "port", 0, HM_AGENT_MAX_PATH, &out->port, what, func, err)) < 0 ||
        (r = get_str(o, "source", bind, HM_AGENT_MAX_PATH, &out->source, what, func, err)) < 0 ||
        (r = get_str(o, "target", 1, HM_AGENT_MAX_PATH, &out->target, what, func, err)) < 0 ||
        (r = get_bool(o, "readonly", 1, &out->readonly, what, func, err)) < 0 ||
        (r = get_str(o, "options", 0, HM_AGENT_MAX_PATH, &out->options, what, func, err)) < 0 ||
        (r = get_int(o, "timeout_ms", 1, 0, HM_AGENT_MAX_TIMEOUT_MS, &x, what, func, err)) < 0)
      goto out;
    out->timeout_ms = (int)x;
    if ((virtiofs || bind) && out->port) {
      r = hm_err_set(err, HM_E_PROTOCOL, func, "mount: field 'port' is only for type 9p");
      goto out;
    }
    /* virtiofs with a source: an entry of the shared device (hub). */
    if (out->type == HM_TYPE_9P && out->source) {
      r = hm_err_set(err, HM_E_PROTOCOL, func,
                     "mount: field 'source' is only for types bind and virtiofs");
      goto out;
    }
    /* A bind has no device: what the fields of the others name it has not. */
    if (bind && (out->tag || out->options)) {
      r = hm_err_set(err, HM_E_PROTOCOL, func, "mount: type bind takes no '%s'",
                     out->tag ? "tag" : "options");
      goto out;
    }
    if (bind)
      break;
    /* 9p names its channel: a port (trans=fd relay) or a tag (trans=virtio). */
    if (!virtiofs && !out->port && !out->tag) {
      r = hm_err_set(err, HM_E_PROTOCOL, func, "mount: type 9p needs a 'port' or a 'tag'");
      goto out;
    }
    break;
  }
  case HM_AGENT_OP_UMOUNT:
    if ((r = check_keys(o, k_umount, what, func, err)) < 0 ||
        (r = get_str(o, "target", 1, HM_AGENT_MAX_PATH, &out->target, what, func, err)) < 0 ||
        (r = get_bool(o, "lazy", 0, &out->lazy, what, func, err)) < 0 ||
        (r = get_bool(o, "force", 0, &out->force, what, func, err)) < 0)
      goto out;
    break;
  case HM_AGENT_OP_LIST: r = check_keys(o, k_list, what, func, err); break;
  case HM_AGENT_OP_NOTIFY: {
    json_object *arr = NULL;
    if ((r = check_keys(o, k_notify, what, func, err)) < 0 ||
        (r = get_str(o, "target", 1, HM_AGENT_MAX_PATH, &out->target, what, func, err)) < 0 ||
        (r = get_field(o, "events", json_type_array, 1, &arr, what, func, err)) < 0)
      goto out;
    r = decode_events(out, arr, func, err);
    break;
  }
  }
out:
  json_object_put(o);
  return r;
}

struct hm_agent_msg {
  json_object *o;
};

int hm_agent_msg_parse(hm_agent_msg **out, int64_t *id, const char *line, size_t len,
                       hm_error **err) {
  *out = NULL;
  json_object *o = parse_line(line, len, HM_AGENT_MAX_ANSWER, "response", __func__, err);
  if (!o)
    return HM_E_PROTOCOL;
  int64_t x = 0;
  int r = get_int(o, "id", 1, 0, HM_AGENT_MAX_ID, &x, "response", __func__, err);
  hm_agent_msg *m = r < 0 ? NULL : malloc(sizeof(*m));
  if (!m) {
    json_object_put(o);
    return r < 0 ? r : hm_err_set(err, HM_E_NOMEM, __func__, "out of memory");
  }
  m->o = o;
  *out = m;
  *id = x;
  return 0;
}

void hm_agent_msg_free(hm_agent_msg *msg) {
  if (!msg)
    return;
  json_object_put(msg->o);
  free(msg);
}

/* A boot id is the guest kernel's UUID: hex digits and dashes. It is
 * stored in state.json and compared; nothing else may ride in it. */
static int check_boot_id(const char *b, const char *what, const char *func, hm_error **err) {
  size_t n = 0;
  for (; b[n]; n++)
    if (!((b[n] >= '0' && b[n] <= '9') || (b[n] >= 'a' && b[n] <= 'f') ||
          (b[n] >= 'A' && b[n] <= 'F') || b[n] == '-'))
      return hm_err_set(err, HM_E_PROTOCOL, func,
                        "%s: field 'boot_id' holds a character other than hex digits and '-'",
                        what);
  if (n == 0)
    return hm_err_set(err, HM_E_PROTOCOL, func, "%s: field 'boot_id' is empty", what);
  return 0;
}
static int decode_mounts(hm_agent_response *out, json_object *arr, const char *func,
                         hm_error **err) {
  static const char *const keys[] = {"target", "fstype", "source", "options", NULL};
  const char *what = "list: mount entry";
  size_t n = json_object_array_length(arr);
  if (n > HM_AGENT_MAX_MOUNTS)
    return hm_err_set(err, HM_E_PROTOCOL, func, "list: %zu mounts, at most %d are accepted", n,
                      HM_AGENT_MAX_MOUNTS);
  out->mounts = calloc(n ? n : 1, sizeof(*out->mounts));
  if (!out->mounts)
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    hm_agent_mount_info *m = &out->mounts[i];
    out->n_mounts = i + 1;
    int r;
    if (!json_object_is_type(e, json_type_object))
      return hm_err_set(err, HM_E_PROTOCOL, func, "list: mounts[%zu] is not an object", i);
    if ((r = check_keys(e, keys, what, func, err)) < 0 ||
        (r = get_str(e, "target", 1, HM_AGENT_MAX_PATH, &m->target, what, func, err)) < 0 ||
        (r = get_str(e, "fstype", 1, HM_AGENT_MAX_NAME, &m->fstype, what, func, err)) < 0 ||
        (r = get_str(e, "source", 1, HM_AGENT_MAX_PATH, &m->source, what, func, err)) < 0 ||
        (r = get_str(e, "options", 1, HM_AGENT_MAX_PATH, &m->options, what, func, err)) < 0)
      return r;
  }
  return 0;
}

int hm_agent_response_from_msg(hm_agent_response *out, int op, const hm_agent_msg *msg,
                               hm_error **err) {
  static const char *const k_err[] = {"id", "ok", "errno", "error", NULL};
  static const char *const k_plain[] = {"id", "ok", NULL};
  static const char *const k_hello[] = {
      "id", "ok", "major", "minor", "agent", "agent_version", "capabilities", "boot_id", NULL};
  static const char *const k_list[] = {"id", "ok", "mounts", "boot_id", NULL};
  const char *func = __func__;
  memset(out, 0, sizeof(*out));
  const char *what = hm_agent_op_name(op);
  if (!what)
    return hm_err_set(err, HM_E_INVALID, func, "unknown op %d", op);
  json_object *o = msg->o;
  int64_t x = 0;
  json_object *v = NULL;
  int r;
  if ((r = get_int(o, "id", 1, 0, HM_AGENT_MAX_ID, &x, what, func, err)) < 0)
    goto out;
  out->id = x;
  if ((r = get_bool(o, "ok", 1, &out->ok, what, func, err)) < 0)
    goto out;
  if (!out->ok) {
    if ((r = check_keys(o, k_err, what, func, err)) < 0 ||
        (r = get_int(o, "errno", 1, 1, 4095, &x, what, func, err)) < 0 ||
        (r = get_str(o, "error", 1, HM_AGENT_MAX_ERROR, &out->error, what, func, err)) < 0)
      goto out;
    out->err_no = (int)x;
    goto out;
  }
  switch (op) {
  case HM_AGENT_OP_HELLO: {
    if ((r = check_keys(o, k_hello, what, func, err)) < 0 ||
        (r = get_int(o, "major", 1, 0, INT32_MAX, &x, what, func, err)) < 0)
      goto out;
    out->major = (int)x;
    if ((r = get_int(o, "minor", 1, 0, INT32_MAX, &x, what, func, err)) < 0)
      goto out;
    out->minor = (int)x;
    if ((r = get_str(o, "boot_id", 0, HM_AGENT_MAX_BOOT_ID, &out->boot_id, what, func, err)) < 0 ||
        (out->boot_id && (r = check_boot_id(out->boot_id, what, func, err)) < 0) ||
        (r = get_str(o, "agent", 1, HM_AGENT_MAX_NAME, &out->agent_name, what, func, err)) < 0 ||
        (r = get_str(o, "agent_version", 1, HM_AGENT_MAX_NAME, &out->agent_version, what, func,
                     err)) < 0 ||
        (r = get_field(o, "capabilities", json_type_array, 1, &v, what, func, err)) < 0)
      goto out;
    if (json_object_array_length(v) > HM_AGENT_MAX_CAPS) {
      r = hm_err_set(err, HM_E_PROTOCOL, func, "hello: %zu capabilities, at most %d are accepted",
                     json_object_array_length(v), HM_AGENT_MAX_CAPS);
      goto out;
    }
    hm_strv caps = {0};
    for (size_t i = 0; i < json_object_array_length(v); i++) {
      json_object *c = json_object_array_get_idx(v, i);
      if (!json_object_is_type(c, json_type_string)) {
        hm_strv_clear(&caps);
        r = hm_err_set(err, HM_E_PROTOCOL, func, "hello: capabilities[%zu] is not a string", i);
        goto out;
      }
      if (json_object_get_string_len(c) > HM_AGENT_MAX_NAME) {
        hm_strv_clear(&caps);
        r = hm_err_set(err, HM_E_PROTOCOL, func,
                       "hello: capabilities[%zu] is too long (at most %d bytes)", i,
                       HM_AGENT_MAX_NAME);
        goto out;
      }
      if (hm_strv_push(&caps, json_object_get_string(c)) < 0) {
        hm_strv_clear(&caps);
        r = hm_err_set(err, HM_E_NOMEM, func, "out of memory");
        goto out;
      }
    }
    out->capabilities = hm_strv_steal(&caps);
    if (!out->capabilities)
      r = hm_err_set(err, HM_E_NOMEM, func, "out of memory");
    break;
  }
  case HM_AGENT_OP_LIST:
    if ((r = check_keys(o, k_list, what, func, err)) < 0 ||
        (r = get_str(o, "boot_id", 0, HM_AGENT_MAX_BOOT_ID, &out->boot_id, what, func, err)) < 0 ||
        (out->boot_id && (r = check_boot_id(out->boot_id, what, func, err)) < 0) ||
        (r = get_field(o, "mounts", json_type_array, 1, &v, what, func, err)) < 0)
      goto out;
    r = decode_mounts(out, v, func, err);
    break;
  default: r = check_keys(o, k_plain, what, func, err); break;
  }
out:
  return r;
}

int hm_agent_response_decode(hm_agent_response *out, int op, const char *line, size_t len,
                             hm_error **err) {
  memset(out, 0, sizeof(*out));
  hm_agent_msg *msg = NULL;
  int64_t id;
  if (!hm_agent_op_name(op))
    return hm_err_set(err, HM_E_INVALID, __func__, "unknown op %d", op);
  int r = hm_agent_msg_parse(&msg, &id, line, len, err);
  if (r < 0)
    return r;
  r = hm_agent_response_from_msg(out, op, msg, err);
  hm_agent_msg_free(msg);
  return r;
}
