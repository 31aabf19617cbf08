/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Builds without inotify: --notify is refused with a message saying so. */
#include "notify/notify.h"

#include <string.h>

int hm_notify_watcher_start(hm_notify_watcher **out, const char *root, hm_notify_sink sink,
                            void *user, hm_error **err) {
  (void)root, (void)sink, (void)user;
  *out = NULL;
  return HM_ERR(err, HM_E_UNSUPPORTED, "change notification (--notify) needs Linux inotify");
}

int hm_notify_watcher_start_ex(hm_notify_watcher **out, const char *root, const int *pids, size_t n,
                               hm_notify_sink sink, void *user, hm_error **err) {
  (void)pids, (void)n;
  return hm_notify_watcher_start(out, root, sink, user, err);
}

void hm_notify_watcher_stop(hm_notify_watcher *w) {
  (void)w;
}

void hm_notify_watcher_stats(hm_notify_watcher *w, hm_notify_stats *out) {
  (void)w;
  memset(out, 0, sizeof(*out));
}

int hm_notify_watcher_wait_ready(hm_notify_watcher *w, int timeout_ms) {
  (void)w, (void)timeout_ms;
  return 0;
}
