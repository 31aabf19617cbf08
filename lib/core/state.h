/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The registry's entries and their persistence in INSTANCE/state.json. */
#ifndef HM_STATE_H
#define HM_STATE_H

#include "driver_internal.h"
#include "mount_internal.h"

typedef struct hm_entry {
  char *id;
  hm_mount_spec *spec;
  hm_attachment *att; /* NULL until the backend attached */
  int state;
  char *reason;
  int busy;           /* an add or remove of this process is working on it (not persisted) */
  int retired;        /* removed, but its device could not be unplugged (see remove) */
  int64_t mounted_at; /* hm_now_ms() when it last became mounted (not persisted) */
  int64_t retry_at;   /* broken persist mounts: next re-attach try (not persisted) */
  struct hm_notify_link *notify; /* --notify: the watcher while mounted (notify_link.c) */
} hm_entry;

/*
 * Writes the registry atomically: a temporary file in the same directory,
 * fsync, rename over state.json, fsync of the directory. A crash leaves
 * either the old or the new file, never a mix.
 */
HM_PRIVATE int hm_state_save(const char *path, unsigned next_id, const char *boot_id,
                             hm_entry *const *entries, size_t n, hm_error **err);

/*
 * Reads state.json. A missing file is an empty registry. A file that cannot
 * be read as a registry (truncated, not JSON, wrong schema) is renamed to
 * state.json.corrupt-<time> and an empty registry is returned, with a warning
 * in the log: the daemon must come up to clean up.
 */
HM_PRIVATE int hm_state_load(const char *path, unsigned *next_id, char **boot_id,
                             hm_entry ***entries, size_t *n, hm_error **err);

#endif
