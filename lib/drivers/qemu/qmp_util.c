/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* QMP idioms both QEMU transports (virtiofs, 9p) use. */
#include "qmp.h"

#include <string.h>

#define QMP_TIMEOUT_MS 10000

int hm_qmp_reply_has(json_object *arr, const char *key, const char *value) {
  size_t n = json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
  for (size_t i = 0; i < n; i++) {
    json_object *v;
    if (json_object_object_get_ex(json_object_array_get_idx(arr, i), key, &v) &&
        strcmp(json_object_get_string(v), value) == 0)
      return 1;
  }
  return 0;
}

int hm_qmp_has(hm_qmp *c, const char *cmd, const char *key, const char *name, hm_error **err) {
  json_object *args = NULL, *ret = NULL;
  if (strcmp(cmd, "qom-list") == 0) {
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string("/machine/peripheral"));
  }
  int r = hm_qmp_execute(c, cmd, args, -1, &ret, QMP_TIMEOUT_MS, err);
  json_object_put(args);
  if (r < 0)
    return r;
  r = hm_qmp_reply_has(ret, key, name);
  json_object_put(ret);
  return r;
}

int hm_qmp_error_is(const hm_error *e, const char *qmp_class) {
  const char *d = hm_error_detail(e);
  return hm_error_class(e) == HM_ECLASS_QMP && d && strcmp(d, qmp_class) == 0;
}

int hm_qmp_chardev_remove(hm_qmp *c, const char *id, hm_error **err) {
  json_object *args = json_object_new_object();
  json_object_object_add(args, "id", json_object_new_string(id));
  hm_error *e = NULL;
  int r = hm_qmp_execute(c, "chardev-remove", args, -1, NULL, QMP_TIMEOUT_MS, &e);
  json_object_put(args);
  /* Refused: already gone is what we wanted, anything else is an error. */
  if (r == HM_E_QMP && hm_qmp_has(c, "query-chardev", "label", id, NULL) == 0)
    r = 0;
  if (r < 0 && err && !*err)
    *err = e;
  else
    hm_error_free(e);
  return r;
}

static int match_device(json_object *data, void *ud) {
  json_object *dev;
  return json_object_object_get_ex(data, "device", &dev) &&
         json_object_is_type(dev, json_type_string) &&
         strcmp(json_object_get_string(dev), (const char *)ud) == 0;
}

int hm_qmp_device_del(hm_qmp *c, const char *dev, int timeout_ms, hm_error **err) {
  uint64_t since = hm_qmp_event_seq(c);
  json_object *args = json_object_new_object();
  json_object_object_add(args, "id", json_object_new_string(dev));
  hm_error *e = NULL;
  int r = hm_qmp_execute(c, "device_del", args, -1, NULL, QMP_TIMEOUT_MS, &e);
  json_object_put(args);
  if (r == HM_E_QMP && hm_qmp_error_is(e, "DeviceNotFound")) {
    /* Already gone: nothing to wait for. */
    hm_error_free(e);
    return 0;
  }
  if (r < 0) {
    if (err && !*err)
      *err = e;
    else
      hm_error_free(e);
    return r;
  }
  /* Match on data.device: virtio devices also send one for their backend
   * path, without "device". */
  return hm_qmp_wait_event(c, "DEVICE_DELETED", since, match_device, (void *)dev, NULL, timeout_ms,
                           err);
}
