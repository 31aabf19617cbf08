/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "status_internal.h"
#include "mount_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hm_status_new(hm_status **out) {
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : HM_E_NOMEM;
}

int hm_status_setf(hm_status *st, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *v = NULL;
  int r = vasprintf(&v, fmt, ap);
  va_end(ap);
  if (r < 0)
    return HM_E_NOMEM;
  r = hm_kv_set(&st->kv, key, v);
  free(v);
  return r;
}

size_t hm_status_count(const hm_status *st) {
  return st ? st->kv.n : 0;
}

const char *hm_status_key(const hm_status *st, size_t i) {
  return st && i < st->kv.n ? st->kv.keys[i] : NULL;
}

const char *hm_status_value(const hm_status *st, size_t i) {
  return st && i < st->kv.n ? st->kv.values[i] : NULL;
}

const char *hm_status_get(const hm_status *st, const char *key) {
  return st && key ? hm_kv_get(&st->kv, key) : NULL;
}

void hm_status_free(hm_status *st) {
  if (!st)
    return;
  hm_kv_clear(&st->kv);
  free(st);
}

static json_object *typed(const char *v) {
  if (!strcmp(v, "true") || !strcmp(v, "false"))
    return json_object_new_boolean(v[0] == 't');
  char *end;
  long long n = strtoll(v, &end, 10);
  if (*v && *end == '\0' && (v[0] != '0' || v[1] == '\0') && strlen(v) < 16)
    return json_object_new_int64(n);
  return json_object_new_string(v);
}

int hm_status_to_json(char **out, const hm_status *st, hm_error **err) {
  if (!out || !st)
    return HM_ERR(err, HM_E_INVALID, "out and st must not be NULL");
  json_object *o = json_object_new_object();
  for (size_t i = 0; o && i < st->kv.n; i++)
    json_object_object_add(o, st->kv.keys[i], typed(st->kv.values[i]));
  const char *s =
      o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
        : NULL;
  *out = s ? strdup(s) : NULL;
  json_object_put(o);
  return *out ? 0 : HM_ERR_NOMEM(err);
}

int hm_status_from_json(hm_status **out, const char *text, size_t len, hm_error **err) {
  json_object *o = NULL;
  hm_status *st = NULL;
  int r = hm_json_parse(&o, text, len, err);
  if (r < 0)
    return hm_error_prefix(err, HM_E_PROTOCOL, __func__, "status");
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    return HM_ERR(err, HM_E_PROTOCOL, "status must be a JSON object");
  }
  if (hm_status_new(&st) < 0) {
    json_object_put(o);
    return HM_ERR_NOMEM(err);
  }
  json_object_object_foreach(o, key, val) {
    const char *v = json_object_is_type(val, json_type_string) ? json_object_get_string(val)
                                                               : json_object_to_json_string(val);
    if (hm_kv_set(&st->kv, key, v) < 0) {
      hm_status_free(st);
      json_object_put(o);
      return HM_ERR_NOMEM(err);
    }
  }
  json_object_put(o);
  *out = st;
  return 0;
}

int hm_status_set(hm_status *st, const char *key, const char *value, hm_error **err) {
  if (!st || !key || !*key || !value)
    return HM_ERR(err, HM_E_INVALID, "st, key and value must not be NULL or empty");
  return hm_kv_set(&st->kv, key, value) < 0 ? HM_ERR_NOMEM(err) : 0;
}
