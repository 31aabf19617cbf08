/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The plain C interface between the VZ backend (vz_driver.c) and the
 * Objective-C shim (vz_shim.m) that talks to Virtualization.framework.
 *
 * Nothing Objective-C crosses this boundary: the configuration, the virtual
 * machine and its dispatch queue are opaque `void *` (a
 * VZVirtualMachineConfiguration *, a VZVirtualMachine *, a dispatch_queue_t),
 * and errors come back as a negative HM_E_* code plus a malloc'd sentence
 * (*errmsg, freed by the caller) that the C side turns into an hm_error.
 *
 * The C side reaches the shim only through hm_vz_shim_ops, so unit tests can
 * run all of the slot logic against a fake shim with the same interface
 * (tests/fakes/fake_vz_shim.c). The real ops (hm_vz_shim_real_ops) exist
 * only in a macOS build (HM_HAVE_VZ_SHIM).
 */
#ifndef HM_VZ_SHIM_H
#define HM_VZ_SHIM_H

#include <hotmount/vz.h>
#include <stdbool.h>
#include <stdint.h>

/* Spare i carries the virtio-fs tag HM_VZ_TAG_PREFIX "i" (hotmount/vz.h); at
 * most HM_VZ_MAX_SPARES, so a uint64_t holds one bit per spare. */
/* How long a share change may wait for the VM's queue before giving up. */
#define HM_VZ_QUEUE_TIMEOUT_MS 10000

typedef struct hm_vz_shim_ops {
  /*
   * reserve: appends `spares` VZVirtioFileSystemDeviceConfigurations tagged
   * "hotmount-0".."hotmount-<spares-1>", each with an empty placeholder
   * share, to the configuration's directorySharingDevices. Refuses
   * (HM_E_EXISTS) when a "hotmount-*" device is already there. Any thread
   * that may touch the configuration (it is a plain object, not bound to a
   * queue). 0 or a negative HM_E_* code with *errmsg set.
   */
  int (*reserve)(void *vz_configuration, unsigned spares, char **errmsg);
  /*
   * open: a shim handle for a VM (retains the VM and the queue). Checks that
   * the VM has the spare devices "hotmount-0".."hotmount-<spares-1>"; the
   * check runs on the VM's queue. *in_use gets bit i set when spare i
   * shares something other than the placeholder. *out is freed with close.
   */
  int (*open)(void **out, uint64_t *in_use, void *vz_virtual_machine, void *dispatch_queue,
              unsigned spares, char **errmsg);
  /*
   * set_share: makes spare `index` share host directory `path` (read-only
   * when read_only). clear_share: puts the placeholder back. Both run on the
   * VM's queue and return when it is done there: called from another thread
   * they wait (at most HM_VZ_QUEUE_TIMEOUT_MS for the queue to start the
   * work; after that the work is cancelled, not left pending); called from
   * a block already running on the VM's queue they run inline.
   */
  int (*set_share)(void *shim, unsigned index, const char *path, bool read_only, char **errmsg);
  int (*clear_share)(void *shim, unsigned index, char **errmsg);
  /* Releases the handle from open. Accepts NULL. */
  void (*close)(void *shim);
} hm_vz_shim_ops;

#ifdef HM_HAVE_VZ_SHIM
/* The Virtualization.framework shim (vz_shim.m); meson defines
 * HM_HAVE_VZ_SHIM when it builds it (macOS only). */
extern const hm_vz_shim_ops hm_vz_shim_real_ops __attribute__((visibility("hidden")));
#endif

#endif
