/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_VZ_H
#define HOTMOUNT_VZ_H

#include <hotmount/common.h>
#include <hotmount/driver.h>
#include <hotmount/error.h>

HM_BEGIN_DECLS

/*
 * Apple Virtualization.framework backend (macOS 13 and later).
 *
 * Virtualization.framework cannot add a device to a running VM, but it can
 * change the share of an existing virtio-fs device. So the VM manager
 * reserves N spare virtio-fs devices when it builds the VM's configuration
 * (hm_vz_config_reserve: tags "hotmount-0" .. "hotmount-<N-1>", each with an
 * empty placeholder share) and, once the VM runs, hands the VM to
 * hm_vz_hotplugger_new. Each attach then picks a free spare, sets its share
 * to the host directory (read-only unless the mount is writable, enforced by
 * Virtualization.framework on the host) and returns the spare's tag for the
 * guest to mount as virtiofs; detach puts the placeholder back.
 *
 * Limits: virtiofs only; N is fixed when the VM is configured; the process
 * that owns the VZVirtualMachine must make the calls (the objects cannot
 * cross processes), which is why this backend is for VM managers that embed
 * the library. The ABI is the same on every platform: elsewhere these calls
 * exist and fail with HM_E_UNSUPPORTED. See docs/vz.md.
 *
 * Objective-C objects cross this interface as plain pointers, so the header
 * needs no Objective-C: under ARC pass them with a __bridge cast, e.g.
 * `(__bridge void *)configuration`. The library retains what it keeps.
 */

/** Tag prefix of the spare devices: spare i has tag "hotmount-i". Since 0.1. */
#define HM_VZ_TAG_PREFIX "hotmount-"
/** Most spares one VM can have reserved. Since 0.1. */
#define HM_VZ_MAX_SPARES 64

/**
 * hm_vz_config_reserve: appends `spares` spare virtio-fs devices to a VM
 * configuration, before the VM is created from it.
 *
 * vz_configuration: a VZVirtualMachineConfiguration *, borrowed (not
 * retained); its directorySharingDevices gets the spare
 * VZVirtioFileSystemDeviceConfigurations "hotmount-0" .. "hotmount-<spares-1>"
 * appended after the devices already there, each sharing an empty
 * VZMultipleDirectoryShare (no host directory at all). spares: 1 ..
 * HM_VZ_MAX_SPARES; the same number must later be given to
 * hm_vz_hotplugger_new.
 *
 * Returns 0, or HM_E_INVALID (NULL configuration, spares out of range),
 * HM_E_EXISTS (the configuration already has a "hotmount-*" device),
 * HM_E_UNSUPPORTED (not macOS 13 or later, or a library built without the
 * VZ shim), HM_E_HELPER (Virtualization.framework refused), with *err set.
 *
 * Threads: any thread that may use the configuration; the configuration is
 * not bound to a queue until a VZVirtualMachine is made from it. Since 0.1.
 */
HM_API int hm_vz_config_reserve(void *vz_configuration, unsigned spares, hm_error **err);

/**
 * hm_vz_hotplugger_new: the VZ backend for a VM whose configuration got
 * `spares` spare devices from hm_vz_config_reserve.
 *
 * vz_virtual_machine: the VZVirtualMachine *; dispatch_queue: the
 * dispatch_queue_t the VM was created with (the main queue when it was made
 * with -initWithConfiguration:). Both are retained until the hotplugger is
 * freed. The spares are checked to be there (on the VM's queue). Spares
 * that already share a directory (a hotplugger made again for the same VM)
 * count as used until a detach clears them. *out is freed with
 * hm_fs_hotplugger_free, or handed to hm_instance_new, which takes it over.
 *
 * Returns 0, or HM_E_INVALID (NULL argument, spares out of range),
 * HM_E_NOT_FOUND (a spare device is missing from the VM),
 * HM_E_UNSUPPORTED (not macOS 13 or later, or a library built without the
 * VZ shim), HM_E_TIMEOUT (the VM's queue did not run the check within 10 s),
 * HM_E_NOMEM, with *err set.
 *
 * Threads: every attach and detach changes a share on the VM's queue and
 * waits for it (up to 10 s for the queue to pick the work up, then
 * HM_E_TIMEOUT and nothing changes). Call this function, and hm_instance_add
 * and hm_instance_remove on an instance using this backend, from any thread
 * except the VM's queue: a call made from the queue runs its share change
 * inline, but hm_instance_add then waits on the guest with the queue
 * blocked. Attaches from several threads at once get distinct spares.
 * Since 0.1.
 */
HM_API int hm_vz_hotplugger_new(hm_fs_hotplugger **out, void *vz_virtual_machine,
                                void *dispatch_queue, unsigned spares, hm_error **err);

HM_END_DECLS

#endif
