/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_STATUS_INTERNAL_H
#define HM_STATUS_INTERNAL_H

#include "private.h"
#include <json-c/json.h>

struct hm_status {
  hm_kv kv; /* insertion order kept */
};

HM_PRIVATE int hm_status_new(hm_status **out);
/* Sets key (replacing); printf-style value. HM_E_NOMEM on failure. */
HM_PRIVATE int hm_status_setf(hm_status *st, const char *key, const char *fmt, ...) HM_PRINTF(3, 4);
/* From a JSON object as hm_status_to_json makes it (for the HTTP client). */
HM_PRIVATE int hm_status_from_json(hm_status **out, const char *text, size_t len, hm_error **err);

#endif
