/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* JSON forms of specs and mounts: the HTTP API's bodies and the state file. */
#include "mount_internal.h"

#include <stdlib.h>
#include <string.h>

int hm_json_parse(json_object **out, const char *text, size_t len, hm_error **err) {
  if (!text)
    return HM_ERR(err, HM_E_INVALID, "no JSON text");
  if (len > 1024 * 1024)
    return HM_ERR(err, HM_E_INVALID, "JSON text too large (%zu bytes)", len);
  json_tokener *tok = json_tokener_new();
  if (!tok)
    return HM_ERR_NOMEM(err);
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  json_object *o = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t used = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (jerr != json_tokener_success || !o) {
    json_object_put(o);
    return HM_ERR(err, HM_E_INVALID, "malformed JSON: %s",
                  jerr == json_tokener_continue ? "unexpected end of input"
                                                : json_tokener_error_desc(jerr));
  }
  for (; used < len; used++) {
    if (!strchr(" \t\r\n", text[used])) {
      json_object_put(o);
      return HM_ERR(err, HM_E_INVALID, "malformed JSON: trailing data after the value");
    }
  }
  *out = o;
  return 0;
}

json_object *hm_mount_to_json_object(const hm_mount *m) {
  json_object *o = json_object_new_object();
  if (!o)
    return NULL;
  json_object_object_add(o, "id", json_object_new_string(m->id ? m->id : ""));
  json_object_object_add(o, "hostPath", json_object_new_string(m->host_path ? m->host_path : ""));
  json_object_object_add(o, "mountPoint",
                         json_object_new_string(m->guest_path ? m->guest_path : ""));
  json_object_object_add(o, "type", json_object_new_string(hm_mount_type_name(m->type)));
  json_object_object_add(o, "writable", json_object_new_boolean(m->writable));
  json_object_object_add(o, "persist", json_object_new_boolean(m->persist));
  json_object_object_add(o, "notify", json_object_new_boolean(m->notify));
  json_object_object_add(o, "state", json_object_new_string(hm_mount_state_name(m->state)));
  if (m->tag)
    json_object_object_add(o, "tag", json_object_new_string(m->tag));
  if (m->via)
    json_object_object_add(o, "via", json_object_new_string(m->via));
  if (m->reason)
    json_object_object_add(o, "reason", json_object_new_string(m->reason));
  return o;
}

static int dump(char **out, json_object *o, hm_error **err) {
  if (!o)
    return HM_ERR_NOMEM(err);
  const char *s =
      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  *out = s ? strdup(s) : NULL;
  json_object_put(o);
  return *out ? 0 : HM_ERR_NOMEM(err);
}

int hm_mount_to_json(char **out, const hm_mount *m, hm_error **err) {
  if (!out || !m)
    return HM_ERR(err, HM_E_INVALID, "out and m must not be NULL");
  return dump(out, hm_mount_to_json_object(m), err);
}

int hm_mount_list_to_json(char **out, const hm_mount_list *l, hm_error **err) {
  if (!out || !l)
    return HM_ERR(err, HM_E_INVALID, "out and l must not be NULL");
  json_object *a = json_object_new_array();
  for (size_t i = 0; a && i < l->n; i++) {
    json_object *o = hm_mount_to_json_object(l->items[i]);
    if (!o || json_object_array_add(a, o) < 0) {
      json_object_put(o);
      json_object_put(a);
      return HM_ERR_NOMEM(err);
    }
  }
  return dump(out, a, err);
}

/* Member lookup with a type check; missing is fine when !required. */
static int member(json_object *o, const char *key, json_type type, int required, json_object **v,
                  const char *func, hm_error **err) {
  *v = NULL;
  if (!json_object_object_get_ex(o, key, v) || !*v) {
    if (required)
      return hm_err_set(err, HM_E_INVALID, func, "missing member \"%s\"", key);
    return 0;
  }
  if (!json_object_is_type(*v, type))
    return hm_err_set(err, HM_E_INVALID, func, "member \"%s\" must be a %s", key,
                      json_type_to_name(type));
  return 0;
}

static int check_known(json_object *o, const char *const *known, const char *func, hm_error **err) {
  json_object_object_foreach(o, key, val) {
    (void)val;
    int ok = 0;
    for (const char *const *k = known; *k; k++)
      ok |= strcmp(*k, key) == 0;
    if (!ok)
      return hm_err_set(err, HM_E_INVALID, func, "unknown member \"%s\"", key);
  }
  return 0;
}

int hm_mount_spec_from_json(hm_mount_spec **out, const char *text, size_t len, hm_error **err) {
  static const char *const known[] = {"hostPath", "mountPoint", "type",    "writable",
                                      "persist",  "notify",     "options", NULL};
  json_object *o = NULL, *v;
  hm_mount_spec *s = NULL;
  int r = hm_json_parse(&o, text, len, err);
  if (r < 0)
    return r;
  if (!json_object_is_type(o, json_type_object)) {
    r = HM_ERR(err, HM_E_INVALID, "request body must be a JSON object");
    goto out;
  }
  if ((r = check_known(o, known, __func__, err)) < 0 || (r = hm_mount_spec_new(&s, err)) < 0)
    goto out;
  if ((r = member(o, "hostPath", json_type_string, 1, &v, __func__, err)) < 0 ||
      (r = hm_mount_spec_set_host_path(s, json_object_get_string(v), err)) < 0)
    goto out;
  if ((r = member(o, "mountPoint", json_type_string, 1, &v, __func__, err)) < 0 ||
      (r = hm_mount_spec_set_guest_path(s, json_object_get_string(v), err)) < 0)
    goto out;
  if ((r = member(o, "type", json_type_string, 0, &v, __func__, err)) < 0)
    goto out;
  if (v && (r = hm_mount_type_parse(json_object_get_string(v), err)) < 0)
    goto out;
  if (v)
    s->type = r;
  if ((r = member(o, "writable", json_type_boolean, 0, &v, __func__, err)) < 0)
    goto out;
  s->writable = v ? json_object_get_boolean(v) : 0;
  if ((r = member(o, "persist", json_type_boolean, 0, &v, __func__, err)) < 0)
    goto out;
  s->persist = v ? json_object_get_boolean(v) : 0;
  if ((r = member(o, "notify", json_type_boolean, 0, &v, __func__, err)) < 0)
    goto out;
  s->notify = v ? json_object_get_boolean(v) : 0;
  if ((r = member(o, "options", json_type_object, 0, &v, __func__, err)) < 0)
    goto out;
  if (v) {
    json_object_object_foreach(v, key, val) {
      if (!json_object_is_type(val, json_type_string)) {
        r = HM_ERR(err, HM_E_INVALID, "option \"%s\" must be a string", key);
        goto out;
      }
      if ((r = hm_mount_spec_set_option(s, key, json_object_get_string(val), err)) < 0)
        goto out;
    }
  }
  r = 0;
  *out = s;
  s = NULL;
out:
  hm_mount_spec_free(s);
  json_object_put(o);
  return r;
}

json_object *hm_mount_spec_to_json_object(const hm_mount_spec *spec) {
  json_object *o = json_object_new_object();
  if (!o)
    return NULL;
  json_object_object_add(o, "hostPath",
                         json_object_new_string(spec->host_path ? spec->host_path : ""));
  json_object_object_add(o, "mountPoint",
                         json_object_new_string(spec->guest_path ? spec->guest_path : ""));
  json_object_object_add(o, "type", json_object_new_string(hm_mount_type_name(spec->type)));
  json_object_object_add(o, "writable", json_object_new_boolean(spec->writable));
  if (spec->persist)
    json_object_object_add(o, "persist", json_object_new_boolean(1));
  if (spec->notify)
    json_object_object_add(o, "notify", json_object_new_boolean(1));
  if (spec->options.n) {
    json_object *opts = json_object_new_object();
    for (size_t i = 0; opts && i < spec->options.n; i++)
      json_object_object_add(opts, spec->options.keys[i],
                             json_object_new_string(spec->options.values[i]));
    json_object_object_add(o, "options", opts);
  }
  return o;
}

static int state_parse(const char *name) {
  for (int s = HM_STATE_ATTACHING; name && s <= HM_STATE_BROKEN; s++)
    if (strcmp(name, hm_mount_state_name(s)) == 0)
      return s;
  return -1;
}

int hm_mount_from_json_object(hm_mount **out, json_object *o, hm_error **err) {
  json_object *id, *host, *guest, *type, *writable, *persist, *notify, *state, *tag, *via, *reason;
  if (!json_object_is_type(o, json_type_object))
    return HM_ERR(err, HM_E_PROTOCOL, "mount must be a JSON object");
  if (member(o, "id", json_type_string, 1, &id, __func__, err) < 0 ||
      member(o, "hostPath", json_type_string, 1, &host, __func__, err) < 0 ||
      member(o, "mountPoint", json_type_string, 1, &guest, __func__, err) < 0 ||
      member(o, "type", json_type_string, 1, &type, __func__, err) < 0 ||
      member(o, "writable", json_type_boolean, 1, &writable, __func__, err) < 0 ||
      member(o, "persist", json_type_boolean, 0, &persist, __func__, err) < 0 ||
      member(o, "notify", json_type_boolean, 0, &notify, __func__, err) < 0 ||
      member(o, "state", json_type_string, 1, &state, __func__, err) < 0 ||
      member(o, "tag", json_type_string, 0, &tag, __func__, err) < 0 ||
      member(o, "via", json_type_string, 0, &via, __func__, err) < 0 ||
      member(o, "reason", json_type_string, 0, &reason, __func__, err) < 0)
    return HM_E_PROTOCOL;
  int t = hm_mount_type_parse(json_object_get_string(type), err);
  if (t < 0)
    return t;
  int st = state_parse(json_object_get_string(state));
  if (st < 0)
    return HM_ERR(err, HM_E_PROTOCOL, "unknown state \"%s\"", json_object_get_string(state));
  hm_mount_spec spec = {.host_path = (char *)json_object_get_string(host),
                        .guest_path = (char *)json_object_get_string(guest),
                        .type = t,
                        .writable = json_object_get_boolean(writable),
                        .persist = persist ? json_object_get_boolean(persist) : 0,
                        .notify = notify ? json_object_get_boolean(notify) : 0};
  if (hm_mount_build(out, json_object_get_string(id), &spec,
                     tag ? json_object_get_string(tag) : NULL,
                     via ? json_object_get_string(via) : NULL, st,
                     reason ? json_object_get_string(reason) : NULL) < 0)
    return HM_ERR_NOMEM(err);
  return 0;
}

int hm_mount_list_from_json(hm_mount_list **out, const char *text, size_t len, hm_error **err) {
  json_object *a = NULL;
  hm_mount_list *l = NULL;
  int r = hm_json_parse(&a, text, len, err);
  if (r < 0)
    return r;
  if (!json_object_is_type(a, json_type_array)) {
    r = HM_ERR(err, HM_E_PROTOCOL, "mount list must be a JSON array");
    goto out;
  }
  if (hm_mount_list_new(&l) < 0) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  for (size_t i = 0; i < json_object_array_length(a); i++) {
    hm_mount *m = NULL;
    if ((r = hm_mount_from_json_object(&m, json_object_array_get_idx(a, i), err)) < 0)
      goto out;
    if ((r = hm_mount_list_take(l, m)) < 0) {
      r = HM_ERR_NOMEM(err);
      goto out;
    }
  }
  r = 0;
  *out = l;
  l = NULL;
out:
  hm_mount_list_free(l);
  json_object_put(a);
  return r;
}
