/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STATE_VERSION 1

static json_object *entry_to_json(const hm_entry *e) {
  hm_mount *m = NULL;
  if (hm_mount_build(&m, e->id, e->spec, e->att ? e->att->tag : NULL,
                     e->att ? hm_attachment_get_data(e->att, "via") : NULL, e->state,
                     e->reason) < 0)
    return NULL;
  json_object *o = hm_mount_to_json_object(m);
  hm_mount_free(m);
  if (!o)
    return NULL;
  if (e->spec->options.n) {
    json_object *opts = json_object_new_object();
    for (size_t i = 0; opts && i < e->spec->options.n; i++)
      json_object_object_add(opts, e->spec->options.keys[i],
                             json_object_new_string(e->spec->options.values[i]));
    json_object_object_add(o, "options", opts);
  }
  if (e->spec->host_dev || e->spec->host_ino) {
    char id[48];
    snprintf(id, sizeof(id), "%llu:%llu", e->spec->host_dev, e->spec->host_ino);
    json_object_object_add(o, "hostId", json_object_new_string(id));
  }
  if (e->retired)
    json_object_object_add(o, "retired", json_object_new_boolean(1));
  if (e->att) {
    json_object *b = json_object_new_object();
    for (size_t i = 0; b && i < e->att->data.n; i++)
      json_object_object_add(b, e->att->data.keys[i],
                             json_object_new_string(e->att->data.values[i]));
    json_object_object_add(o, "backend", b);
  }
  return o;
}

int hm_state_save(const char *path, unsigned next_id, const char *boot_id, hm_entry *const *entries,
                  size_t n, hm_error **err) {
  json_object *root = json_object_new_object(), *arr = json_object_new_array();
  int r = 0;
  if (!root || !arr) {
    json_object_put(arr);
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  json_object_object_add(root, "version", json_object_new_int(STATE_VERSION));
  json_object_object_add(root, "nextId", json_object_new_int64(next_id));
  if (boot_id)
    json_object_object_add(root, "guestBootId", json_object_new_string(boot_id));
  json_object_object_add(root, "mounts", arr);
  for (size_t i = 0; i < n; i++) {
    json_object *o = entry_to_json(entries[i]);
    if (!o || json_object_array_add(arr, o) < 0) {
      json_object_put(o);
      r = HM_ERR_NOMEM(err);
      goto out;
    }
  }
  const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
  r = hm_write_file_atomic(path, text, err);
out:
  json_object_put(root);
  return r;
}

static int get(json_object *o, const char *key, json_type t, json_object **v) {
  return json_object_object_get_ex(o, key, v) && json_object_is_type(*v, t) ? 0 : -1;
}

static int entry_from_json(hm_entry **out, json_object *o, hm_error **err) {
  hm_mount *m = NULL;
  hm_entry *e = NULL;
  json_object *v;
  int r = hm_mount_from_json_object(&m, o, err);
  if (r < 0)
    return r;
  if (!(e = calloc(1, sizeof(*e))) || hm_mount_spec_new(&e->spec, NULL) < 0)
    goto nomem;
  e->spec->type = m->type;
  e->spec->writable = m->writable;
  e->spec->persist = m->persist;
  e->spec->notify = m->notify;
  e->state = m->state;
  if (!(e->id = strdup(m->id)) || !(e->spec->host_path = strdup(m->host_path)) ||
      !(e->spec->guest_path = strdup(m->guest_path)) ||
      (m->reason && !(e->reason = strdup(m->reason))))
    goto nomem;
  if (get(o, "options", json_type_object, &v) == 0) {
    json_object_object_foreach(v, key, val) {
      if (!json_object_is_type(val, json_type_string)) {
        r = HM_ERR(err, HM_E_PROTOCOL, "option %s of %s is not a string", key, m->id);
        goto fail;
      }
      if (hm_kv_set(&e->spec->options, key, json_object_get_string(val)) < 0)
        goto nomem;
    }
  }
  /* The shared directory's identity ("device:inode"), which reconcile
   * checks the path still leads to. Older files lack it: not checked. */
  if (get(o, "hostId", json_type_string, &v) == 0 &&
      sscanf(json_object_get_string(v), "%llu:%llu", &e->spec->host_dev, &e->spec->host_ino) != 2) {
    r = HM_ERR(err, HM_E_PROTOCOL, "hostId of %s is not device:inode", m->id);
    goto fail;
  }
  if (get(o, "retired", json_type_boolean, &v) == 0)
    e->retired = json_object_get_boolean(v);
  if (get(o, "backend", json_type_object, &v) == 0) {
    if (hm_attachment_new(&e->att, m->id, NULL) < 0 || (m->tag && !(e->att->tag = strdup(m->tag))))
      goto nomem;
    e->att->type = e->spec->type;
    json_object_object_foreach(v, key, val) {
      if (!json_object_is_type(val, json_type_string)) {
        r = HM_ERR(err, HM_E_PROTOCOL, "backend data %s of %s is not a string", key, m->id);
        goto fail;
      }
      if (hm_kv_set(&e->att->data, key, json_object_get_string(val)) < 0)
        goto nomem;
    }
  }
  hm_mount_free(m);
  *out = e;
  return 0;
nomem:
  r = HM_ERR_NOMEM(err);
fail:
  hm_mount_free(m);
  if (e) {
    free(e->id);
    free(e->reason);
    hm_mount_spec_free(e->spec);
    hm_attachment_free(e->att);
    free(e);
  }
  return r;
}

static int parse(const char *text, size_t len, unsigned *next_id, char **boot_id,
                 hm_entry ***entries, size_t *n, hm_error **err) {
  json_object *root = NULL, *v, *arr;
  int r = hm_json_parse(&root, text, len, err);
  if (r < 0)
    return r;
  r = HM_E_PROTOCOL;
  if (!json_object_is_type(root, json_type_object) || get(root, "version", json_type_int, &v) < 0 ||
      json_object_get_int(v) != STATE_VERSION) {
    HM_ERR(err, r, "not a version %d state file", STATE_VERSION);
    goto out;
  }
  if (get(root, "nextId", json_type_int, &v) < 0 || json_object_get_int64(v) < 1 ||
      json_object_get_int64(v) > 0x7fffffff || get(root, "mounts", json_type_array, &arr) < 0) {
    HM_ERR(err, r, "state file lacks nextId or mounts");
    goto out;
  }
  *next_id = (unsigned)json_object_get_int64(v);
  if (get(root, "guestBootId", json_type_string, &v) == 0 &&
      !(*boot_id = strdup(json_object_get_string(v)))) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  size_t count = json_object_array_length(arr);
  hm_entry **list = calloc(count + 1, sizeof(*list));
  if (!list) {
    r = HM_ERR_NOMEM(err);
    goto out;
  }
  for (size_t i = 0; i < count; i++) {
    if ((r = entry_from_json(&list[i], json_object_array_get_idx(arr, i), err)) < 0) {
      for (size_t k = 0; k < i; k++) {
        free(list[k]->id);
        free(list[k]->reason);
        hm_mount_spec_free(list[k]->spec);
        hm_attachment_free(list[k]->att);
        free(list[k]);
      }
      free(list);
      goto out;
    }
  }
  *entries = list;
  *n = count;
  r = 0;
out:
  json_object_put(root);
  return r;
}

int hm_state_load(const char *path, unsigned *next_id, char **boot_id, hm_entry ***entries,
                  size_t *n, hm_error **err) {
  *boot_id = NULL;
  *entries = NULL;
  *n = 0;
  *next_id = 1;
  /* Not through a symlink: whatever it points at would be parsed, and, if
   * unreadable as state, renamed aside below. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
  if (!f) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    if (e == ENOENT)
      return 0;
    if (e == ELOOP)
      return HM_ERR(err, HM_E_PERM, "%s is a symbolic link; refusing to read state through it",
                    path);
    return HM_ERR(err, -e, "cannot read %s: %s", path, strerror(e));
  }
  char *text = NULL;
  size_t cap = 0, len = 0;
  for (;;) {
    if (len + 4096 > cap) {
      char *t = realloc(text, cap = cap ? cap * 2 : 8192);
      if (!t) {
        free(text);
        fclose(f);
        return HM_ERR_NOMEM(err);
      }
      text = t;
    }
    size_t got = fread(text + len, 1, cap - len, f);
    len += got;
    if (got == 0)
      break;
  }
  fclose(f);
  hm_error *perr = NULL;
  int r = parse(text ? text : "", len, next_id, boot_id, entries, n, &perr);
  free(text);
  if (r == HM_E_NOMEM) {
    hm_error_free(perr);
    return HM_ERR_NOMEM(err);
  }
  if (r < 0) {
    char *aside = NULL;
    if (asprintf(&aside, "%s.corrupt-%lld", path, (long long)time(NULL)) >= 0 &&
        rename(path, aside) == 0)
      hm_warn("state file %s is unreadable (%s); kept as %s, starting empty", path,
              hm_error_message(perr), aside);
    else
      hm_warn("state file %s is unreadable (%s); starting empty", path, hm_error_message(perr));
    free(aside);
    hm_error_free(perr);
    free(*boot_id);
    *boot_id = NULL;
    *next_id = 1;
  }
  return 0;
}
