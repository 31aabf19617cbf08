/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "mount_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const type_names[] = {NULL, "virtiofs", "9p", "reverse-sshfs", "bind"};
static const char *const state_names[] = {NULL, "attaching", "mounted", "detaching", "broken"};

const char *hm_mount_type_name(int type) {
  return type >= HM_TYPE_VIRTIOFS && type <= HM_TYPE_BIND ? type_names[type] : NULL;
}

int hm_mount_type_parse(const char *name, hm_error **err) {
  for (int t = HM_TYPE_VIRTIOFS; name && t <= HM_TYPE_BIND; t++)
    if (strcmp(name, type_names[t]) == 0)
      return t;
  return HM_ERR(err, HM_E_INVALID,
                "unknown mount type \"%s\" (expected virtiofs, 9p, reverse-sshfs or bind)",
                name ? name : "(null)");
}

const char *hm_mount_state_name(int state) {
  return state >= HM_STATE_ATTACHING && state <= HM_STATE_BROKEN ? state_names[state] : NULL;
}

/* ----------------------------------------------------------------- specs */

int hm_mount_spec_new(hm_mount_spec **out, hm_error **err) {
  hm_mount_spec *s = calloc(1, sizeof(*s));
  if (!s)
    return HM_ERR_NOMEM(err);
  s->type = HM_TYPE_VIRTIOFS;
  *out = s;
  return 0;
}

void hm_mount_spec_free(hm_mount_spec *spec) {
  if (!spec)
    return;
  free(spec->host_path);
  free(spec->guest_path);
  hm_kv_clear(&spec->options);
  free(spec);
}

static int set_str(char **dst, const char *src) {
  char *d = NULL;
  if (src && !(d = strdup(src)))
    return HM_E_NOMEM;
  free(*dst);
  *dst = d;
  return 0;
}

int hm_mount_spec_copy(hm_mount_spec **out, const hm_mount_spec *spec, hm_error **err) {
  hm_mount_spec *s = NULL;
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  if (hm_mount_spec_new(&s, err) < 0)
    return HM_E_NOMEM;
  s->type = spec->type;
  s->writable = spec->writable;
  s->persist = spec->persist;
  s->notify = spec->notify;
  s->host_dev = spec->host_dev;
  s->host_ino = spec->host_ino;
  if (set_str(&s->host_path, spec->host_path) < 0 ||
      set_str(&s->guest_path, spec->guest_path) < 0 ||
      hm_kv_copy(&s->options, &spec->options) < 0) {
    hm_mount_spec_free(s);
    return HM_ERR_NOMEM(err);
  }
  *out = s;
  return 0;
}

int hm_mount_spec_set_host_path(hm_mount_spec *spec, const char *path, hm_error **err) {
  if (!spec || !path)
    return HM_ERR(err, HM_E_INVALID, "spec and path must not be NULL");
  /* Another path: what validation recorded about the old one is void. */
  spec->host_dev = spec->host_ino = 0;
  return set_str(&spec->host_path, path) < 0 ? HM_ERR_NOMEM(err) : 0;
}

int hm_mount_spec_set_guest_path(hm_mount_spec *spec, const char *path, hm_error **err) {
  if (!spec || !path)
    return HM_ERR(err, HM_E_INVALID, "spec and path must not be NULL");
  return set_str(&spec->guest_path, path) < 0 ? HM_ERR_NOMEM(err) : 0;
}

int hm_mount_spec_set_type(hm_mount_spec *spec, int type, hm_error **err) {
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  if (!hm_mount_type_name(type))
    return HM_ERR(err, HM_E_INVALID, "unknown mount type %d", type);
  spec->type = type;
  return 0;
}

int hm_mount_spec_set_writable(hm_mount_spec *spec, int writable, hm_error **err) {
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  spec->writable = writable != 0;
  return 0;
}

int hm_mount_spec_set_persist(hm_mount_spec *spec, int persist, hm_error **err) {
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  spec->persist = persist != 0;
  return 0;
}

int hm_mount_spec_get_persist(const hm_mount_spec *s) {
  return s ? s->persist : 0;
}

int hm_mount_spec_set_notify(hm_mount_spec *spec, int notify, hm_error **err) {
  if (!spec)
    return HM_ERR(err, HM_E_INVALID, "spec is NULL");
  spec->notify = notify != 0;
  return 0;
}

int hm_mount_spec_get_notify(const hm_mount_spec *s) {
  return s ? s->notify : 0;
}

int hm_mount_spec_set_option(hm_mount_spec *spec, const char *key, const char *value,
                             hm_error **err) {
  if (!spec || !key || !*key)
    return HM_ERR(err, HM_E_INVALID, "spec and key must not be NULL or empty");
  return hm_kv_set(&spec->options, key, value) < 0 ? HM_ERR_NOMEM(err) : 0;
}

const char *hm_mount_spec_get_host_path(const hm_mount_spec *s) {
  return s ? s->host_path : NULL;
}
const char *hm_mount_spec_get_guest_path(const hm_mount_spec *s) {
  return s ? s->guest_path : NULL;
}
int hm_mount_spec_get_type(const hm_mount_spec *s) {
  return s ? s->type : 0;
}
int hm_mount_spec_get_writable(const hm_mount_spec *s) {
  return s ? s->writable : 0;
}
const char *hm_mount_spec_get_option(const hm_mount_spec *s, const char *key) {
  return s && key ? hm_kv_get(&s->options, key) : NULL;
}

size_t hm_mount_spec_get_option_count(const hm_mount_spec *s) {
  return s ? s->options.n : 0;
}

const char *hm_mount_spec_get_option_key(const hm_mount_spec *s, size_t i) {
  return s && i < s->options.n ? s->options.keys[i] : NULL;
}

/* ----------------------------------------------------------------- mounts */

int hm_mount_build(hm_mount **out, const char *id, const hm_mount_spec *spec, const char *tag,
                   const char *via, int state, const char *reason) {
  hm_mount *m = calloc(1, sizeof(*m));
  if (!m)
    return HM_E_NOMEM;
  m->type = spec->type;
  m->writable = spec->writable;
  m->persist = spec->persist;
  m->notify = spec->notify;
  m->state = state;
  if (set_str(&m->id, id) < 0 || set_str(&m->host_path, spec->host_path) < 0 ||
      set_str(&m->guest_path, spec->guest_path) < 0 || set_str(&m->tag, tag) < 0 ||
      set_str(&m->via, via) < 0 || set_str(&m->reason, reason) < 0) {
    hm_mount_free(m);
    return HM_E_NOMEM;
  }
  *out = m;
  return 0;
}

void hm_mount_free(hm_mount *m) {
  if (!m)
    return;
  free(m->id);
  free(m->host_path);
  free(m->guest_path);
  free(m->tag);
  free(m->via);
  free(m->reason);
  free(m);
}

int hm_mount_copy(hm_mount **out, const hm_mount *m, hm_error **err) {
  if (!m)
    return HM_ERR(err, HM_E_INVALID, "mount is NULL");
  hm_mount_spec spec = {.host_path = m->host_path,
                        .guest_path = m->guest_path,
                        .type = m->type,
                        .writable = m->writable,
                        .persist = m->persist,
                        .notify = m->notify};
  if (hm_mount_build(out, m->id, &spec, m->tag, m->via, m->state, m->reason) < 0)
    return HM_ERR_NOMEM(err);
  return 0;
}

const char *hm_mount_get_id(const hm_mount *m) {
  return m ? m->id : NULL;
}
const char *hm_mount_get_host_path(const hm_mount *m) {
  return m ? m->host_path : NULL;
}
const char *hm_mount_get_guest_path(const hm_mount *m) {
  return m ? m->guest_path : NULL;
}
int hm_mount_get_type(const hm_mount *m) {
  return m ? m->type : 0;
}
int hm_mount_get_writable(const hm_mount *m) {
  return m ? m->writable : 0;
}
int hm_mount_get_persist(const hm_mount *m) {
  return m ? m->persist : 0;
}

int hm_mount_get_notify(const hm_mount *m) {
  return m ? m->notify : 0;
}
int hm_mount_get_state(const hm_mount *m) {
  return m ? m->state : 0;
}
const char *hm_mount_get_tag(const hm_mount *m) {
  return m ? m->tag : NULL;
}
const char *hm_mount_get_via(const hm_mount *m) {
  return m ? m->via : NULL;
}
const char *hm_mount_get_reason(const hm_mount *m) {
  return m ? m->reason : NULL;
}

int hm_mount_list_new(hm_mount_list **out) {
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : HM_E_NOMEM;
}

int hm_mount_list_take(hm_mount_list *l, hm_mount *m) {
  hm_mount **items = realloc(l->items, (l->n + 1) * sizeof(*items));
  if (!items) {
    hm_mount_free(m);
    return HM_E_NOMEM;
  }
  l->items = items;
  l->items[l->n++] = m;
  return 0;
}

size_t hm_mount_list_count(const hm_mount_list *l) {
  return l ? l->n : 0;
}

const hm_mount *hm_mount_list_get(const hm_mount_list *l, size_t i) {
  return l && i < l->n ? l->items[i] : NULL;
}

void hm_mount_list_free(hm_mount_list *l) {
  if (!l)
    return;
  for (size_t i = 0; i < l->n; i++)
    hm_mount_free(l->items[i]);
  free(l->items);
  free(l);
}
