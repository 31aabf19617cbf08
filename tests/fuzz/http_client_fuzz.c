/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for what the client library parses from a daemon's
 * answer (lib/client/client.c, included here so its static parsers are
 * reachable): an error body for any status (daemon_error), the mount object
 * of an add answer, a mount list, a status object. Byte 0 picks the parser
 * and, for error bodies, the HTTP status. A daemon found on a socket path may
 * be anyone's: its answers must end in a clean error.
 */
#include "../../lib/client/client.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long statuses[] = {400, 403, 404, 405, 409, 413, 500, 503, 504, 507};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  /* The answer buffer is NUL-terminated after len bytes (write_cb). */
  char *text = malloc(size);
  if (!text)
    return 0;
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  buffer b = {.data = text, .len = size - 1};
  hm_error *err = NULL;
  switch (data[0] % 4) {
  case 0: {
    int r = daemon_error("fuzz", statuses[(data[0] >> 2) % 10], &b, &err);
    /* never success, and never a code that reads as one */
    if (r >= 0 || hm_error_code(err) >= 0)
      abort();
    break;
  }
  case 1: {
    json_object *m = NULL;
    hm_mount *mount = NULL;
    if (hm_json_parse(&m, b.data, b.len, &err) == 0 &&
        hm_mount_from_json_object(&mount, m, &err) == 0 && !hm_mount_get_id(mount))
      abort();
    json_object_put(m);
    hm_mount_free(mount);
    break;
  }
  case 2: {
    hm_mount_list *l = NULL;
    if (hm_mount_list_from_json(&l, b.data, b.len, &err) == 0) {
      for (size_t i = 0; i < hm_mount_list_count(l); i++)
        hm_mount_get_guest_path(hm_mount_list_get(l, i));
    }
    hm_mount_list_free(l);
    break;
  }
  default: {
    hm_status *st = NULL;
    hm_status_from_json(&st, b.data, b.len, &err);
    hm_status_free(st);
    break;
  }
  }
  hm_error_free(err);
  free(text);
  return 0;
}
