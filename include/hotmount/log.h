/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_LOG_H
#define HOTMOUNT_LOG_H

#include <hotmount/common.h>

HM_BEGIN_DECLS

#define HM_LOG_ERROR 3
#define HM_LOG_WARNING 4
#define HM_LOG_INFO 6
#define HM_LOG_DEBUG 7

/**
 * hm_log_fn: receives one log line (no trailing newline). May be called from
 * any of the library's threads, including its I/O thread; it must not call
 * back into the library. `level` is one of HM_LOG_*.
 */
typedef void (*hm_log_fn)(int level, const char *message, void *user_data);

/**
 * hm_set_log_callback: routes the library's log to fn (NULL: discard, the
 * default; the library never prints). Messages above max_level are not
 * formatted. The previous callback's destroy is called when it is replaced;
 * `destroy` (may be NULL) is called exactly once, even on failure. Process
 * wide; call it before other threads use the library. Since 0.1.
 */
HM_API void hm_set_log_callback(hm_log_fn fn, int max_level, void *user_data,
                                void (*destroy)(void *user_data));

HM_END_DECLS

#endif
