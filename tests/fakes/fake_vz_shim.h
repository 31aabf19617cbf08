/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A fake Virtualization.framework behind the VZ backend's shim interface
 * (lib/drivers/vz/vz_shim.h): a "configuration" that collects device tags and
 * a "VM" whose spare virtio-fs devices hold a share (path + read-only) or the
 * placeholder. It checks what the real framework would refuse (unknown
 * spare, wrong queue, missing devices) and can be told to fail or to be slow.
 */
#ifndef FAKE_VZ_SHIM_H
#define FAKE_VZ_SHIM_H

#include "vz_shim.h"

#include <pthread.h>

#define FAKE_VZ_MAX_DEVICES 80

typedef struct fake_vz_config {
  unsigned n;
  char tags[FAKE_VZ_MAX_DEVICES][32];
} fake_vz_config;

typedef struct fake_vz_spare {
  int shared; /* 0: placeholder */
  char path[256];
  bool read_only;
} fake_vz_spare;

typedef struct fake_vz_vm {
  pthread_mutex_t lock;
  unsigned devices; /* spare devices the VM really has */
  void *queue;      /* the queue the VM runs on: open must be given this one */
  fake_vz_spare spare[FAKE_VZ_MAX_DEVICES];
  /* failure injection: the next set/clear fails with this message */
  const char *fail_set, *fail_clear, *fail_open;
  int set_delay_ms;                  /* each set_share takes this long */
  unsigned set_calls, clear_calls;   /* counters */
  unsigned in_flight, max_in_flight; /* concurrent set_share calls */
  int open_handles;
} fake_vz_vm;

extern const hm_vz_shim_ops fake_vz_shim_ops;

/* A VM with `devices` spares "hotmount-0".. on queue token `queue`. */
void fake_vz_vm_init(fake_vz_vm *vm, unsigned devices, void *queue);
void fake_vz_vm_destroy(fake_vz_vm *vm);

#endif
