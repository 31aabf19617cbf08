/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The mount model's internals: specs (requests), mounts (registry entries as
 * the API shows them) and their JSON forms. */
#ifndef HM_MOUNT_INTERNAL_H
#define HM_MOUNT_INTERNAL_H

#include "private.h"
#include <json-c/json.h>

struct hm_mount_spec {
  char *host_path;
  char *guest_path;
  int type;
  int writable;
  int persist;
  int notify; /* --notify: host changes shown to guest watchers */
  hm_kv options;
  /* The host directory validation opened (device, inode; both 0: not
   * known, e.g. a record from before they were kept): a later open of
   * host_path must find this same directory (hm_host_path_verify). */
  unsigned long long host_dev, host_ino;
};

struct hm_mount {
  char *id;
  char *host_path;
  char *guest_path;
  char *tag;
  char *via; /* how the backend carries it (attachment data "via"), or NULL */
  char *reason;
  int type;
  int writable;
  int persist;
  int notify;
  int state;
};

struct hm_mount_list {
  hm_mount **items;
  size_t n;
};

/* Builds a mount snapshot; strings are copied (tag, via, reason may be NULL). */
HM_PRIVATE int hm_mount_build(hm_mount **out, const char *id, const hm_mount_spec *spec,
                              const char *tag, const char *via, int state, const char *reason);
HM_PRIVATE int hm_mount_list_new(hm_mount_list **out);
/* Takes ownership of m (freed on failure). */
HM_PRIVATE int hm_mount_list_take(hm_mount_list *l, hm_mount *m);

HM_PRIVATE json_object *hm_mount_to_json_object(const hm_mount *m);
HM_PRIVATE int hm_mount_from_json_object(hm_mount **out, json_object *o, hm_error **err);
HM_PRIVATE int hm_mount_list_from_json(hm_mount_list **out, const char *text, size_t len,
                                       hm_error **err);

/*
 * The API's request body {hostPath, mountPoint, type, writable, options}. Strict:
 * malformed JSON, wrong member types and unknown members are HM_E_INVALID
 * naming the member. Does not validate the paths (hm_mount_spec_validate does).
 */
HM_PRIVATE int hm_mount_spec_from_json(hm_mount_spec **out, const char *text, size_t len,
                                       hm_error **err);
HM_PRIVATE json_object *hm_mount_spec_to_json_object(const hm_mount_spec *spec);

/*
 * hm_host_path_verify: host_path (absolute, already resolved) still leads,
 * without a symlink in any component, to the directory validation recorded
 * (host_dev/host_ino). 0 when it does or nothing was recorded; HM_E_INVALID
 * with what changed otherwise (a component swapped for a symlink, another
 * directory put in its place).
 */
HM_PRIVATE int hm_host_path_verify(const hm_mount_spec *spec, hm_error **err);

/*
 * A backend's option rules, for its validate op: for mounts of type, option
 * key takes one of values (NULL-terminated), or, when values is NULL, a
 * decimal number from min to max. hm_option_rules_check refuses an option
 * of spec that no rule names, or a value its rule does not take
 * (HM_E_INVALID naming key, value and type).
 */
typedef struct hm_option_rule {
  int type;
  const char *key;
  const char *const *values;
  unsigned long min, max;
} hm_option_rule;
HM_PRIVATE int hm_option_rules_check(const hm_mount_spec *spec, const hm_option_rule *rules,
                                     size_t n, hm_error **err);

/* Parses text as one JSON value (nothing else after it). HM_E_INVALID otherwise. */
HM_PRIVATE int hm_json_parse(json_object **out, const char *text, size_t len, hm_error **err);

#endif
