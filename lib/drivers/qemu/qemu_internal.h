/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_QEMU_INTERNAL_H
#define HM_QEMU_INTERNAL_H

#include "private.h"

#define HM_QEMU_MAX_SLOTS 64
#define HM_QEMU_ROOT_PORT_PREFIX "hm-rp-"
#define HM_QEMU_AGENT_PORT "org.hotmount.agent.0"

struct hm_qemu_config {
  char *dir;
  unsigned slots;
  char *memory; /* normalized, e.g. "1024M" */
  char *virtiofsd;
};

/* Escapes a value for a QEMU -device/-chardev option string (',' -> ',,').
 * Returns a new string or NULL on OOM. */
HM_PRIVATE char *hm_qemu_opt_escape(const char *value);

#endif
