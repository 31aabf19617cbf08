/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_QEMU_INTERNAL_H
#define HM_QEMU_INTERNAL_H

#include "private.h"

#define HM_QEMU_MAX_SLOTS 64
#define HM_QEMU_ROOT_PORT_PREFIX "hm-rp-"
#define HM_QEMU_AGENT_PORT "org.hotmount.agent.0"

/* Reserved 9p slots (ninep_slot.c): fsdevs hm-9p-ro-K (readonly=on) and
 * hm-9p-rw-K, whose paths are links INSTANCE/9p/ro-K, INSTANCE/9p/rw-K; the
 * QOM object hm-9p-slots (an authz-simple, which does nothing by itself)
 * says in its identity how many of each and with what security model, so the
 * backend learns the reservation from QEMU itself. */
#define HM_QEMU_9P_MAX_SLOTS 64
#define HM_QEMU_9P_MARKER "hm-9p-slots"
#define HM_QEMU_9P_FSDEV_PREFIX "hm-9p-"
#define HM_QEMU_9P_DIR "9p"
#define HM_QEMU_9P_DEFAULT_SLOTS 16

struct hm_qemu_config {
  char *dir;
  unsigned slots;
  unsigned ninep_slots; /* per kind: this many read-only and this many writable */
  char *ninep_model;    /* security_model of the fsdevs */
  char *memory;         /* normalized, e.g. "1024M" */
  char *virtiofsd;
};

/* Reads the hm-9p-slots identity qemu-args writes ("ro=N/rw=N/model=M"):
 * 0 with the counts (at most HM_QEMU_9P_MAX_SLOTS each) and the model, or -1
 * (then *ro = *rw = 0). model has room for 32 bytes. */
HM_PRIVATE int hm_qemu_9p_identity_parse(const char *s, unsigned *ro, unsigned *rw, char model[32]);

/* Escapes a value for a QEMU -device/-chardev option string (',' -> ',,').
 * Returns a new string or NULL on OOM. */
HM_PRIVATE char *hm_qemu_opt_escape(const char *value);

/* options.c: the backend's validate op (which options virtiofs and 9p
 * mounts take). impl is unused. */
HM_PRIVATE int hm_qemu_validate(void *impl, const hm_mount_spec *spec, hm_error **err);
/* The guest id option key (mapUid, mapGid) asks to map to the host user, or
 * -1 when unset (validated: 0..HM_QEMU_MAP_ID_MAX). */
#define HM_QEMU_MAP_ID_MAX 4294967294UL
HM_PRIVATE long hm_qemu_map_id(const hm_mount_spec *spec, const char *key);

#endif
