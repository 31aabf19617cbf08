/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the JSON the HTTP API carries: a POST /v1/mounts body
 * as the daemon parses it (hm_mount_spec_from_json, then validation with its
 * option rules), and what the client parses from a daemon (mount lists and
 * status objects). Byte 0 picks the parser.
 */
#include "mount_internal.h"
#include "status_internal.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  hm_error *err = NULL;
  switch (data[0] % 3) {
  case 0: {
    hm_mount_spec *spec = NULL;
    if (hm_mount_spec_from_json(&spec, text, len, &err) == 0) {
      hm_error *e2 = NULL;
      hm_mount_spec_validate(spec, &e2);
      hm_error_free(e2);
    }
    hm_mount_spec_free(spec);
    break;
  }
  case 1: {
    hm_mount_list *l = NULL;
    hm_mount_list_from_json(&l, text, len, &err);
    hm_mount_list_free(l);
    break;
  }
  default: {
    hm_status *st = NULL;
    if (hm_status_from_json(&st, text, len, &err) == 0) {
      char *out = NULL;
      hm_status_to_json(&out, st, NULL);
      free(out);
    }
    hm_status_free(st);
    break;
  }
  }
  hm_error_free(err);
  return 0;
}
