/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_STATUS_H
#define HOTMOUNT_STATUS_H

#include <hotmount/common.h>
#include <hotmount/error.h>

HM_BEGIN_DECLS

/*
 * hm_status: a snapshot of an instance's health as ordered key/value pairs of
 * strings ("qmp" = "connected", "slotsFree" = "31", ...), so that new facts
 * can be added without an ABI change. Keys in use are listed in docs/api.md
 * (GET /v1/status). Immutable once returned; free with hm_status_free.
 */
typedef struct hm_status hm_status;

/**
 * hm_status_count: number of entries of st (0 for NULL). Any thread: a returned status is
 * immutable. Since 0.1.
 */
HM_API size_t hm_status_count(const hm_status *st);
/**
 * hm_status_key: key of entry i, or NULL when i is out of range; borrowed from st (valid until
 * hm_status_free). Any thread. Since 0.1.
 */
HM_API const char *hm_status_key(const hm_status *st, size_t i);
/**
 * hm_status_value: value of entry i, or NULL when i is out of range; borrowed from st. Any thread.
 * Since 0.1.
 */
HM_API const char *hm_status_value(const hm_status *st, size_t i);
/**
 * hm_status_get: value for key, or NULL when st has no such key; borrowed from st. Any thread.
 * Since 0.1.
 */
HM_API const char *hm_status_get(const hm_status *st, const char *key);
/**
 * hm_status_to_json: a JSON object of the entries (values that are decimal integers become
 * numbers, "true"/"false" booleans). *out is malloc'd: free it with hm_free (or free() from C).
 * Returns 0, HM_E_INVALID (NULL argument) or HM_E_NOMEM. Any thread. Since 0.1.
 */
HM_API int hm_status_to_json(char **out, const hm_status *st, hm_error **err);
/** hm_status_free: frees st; accepts NULL. Any thread, once. Since 0.1. */
HM_API void hm_status_free(hm_status *st);

HM_END_DECLS

#endif
