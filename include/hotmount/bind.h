/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_BIND_H
#define HOTMOUNT_BIND_H

/*
 * The bind backend: HM_TYPE_BIND mounts, which hot-mount a directory the guest
 * already has through a share it got at boot (a -virtfs/virtio-9p-pci or
 * vhost-user-fs share of the VM's configuration, or WSL2's drvfs /mnt/c) with
 * a guest bind mount only: no device, no helper process, no slot.
 *
 * The VM manager declares the boot-time shares (host directory, and where the
 * guest mounts it); an add maps the mount's host path to the guest directory
 * inside the share that holds it, and the guest agent bind-mounts that
 * directory after checking that it lies inside a virtiofs, 9p or drvfs mount
 * with no symbolic link on the way. Read-only is a guest mount flag only:
 * the host side is whatever the boot-time share enforces (docs/security.md).
 */

#include <hotmount/common.h>
#include <hotmount/driver.h>
#include <hotmount/error.h>

HM_BEGIN_DECLS

/**
 * hm_bind_hotplugger_new: a backend for HM_TYPE_BIND mounts over n boot-time shares: host_dirs[i]
 * is shared with the guest, which has it mounted at guest_dirs[i] (absolute). Host directories
 * must exist; they are resolved (symlinks) when the backend is made, and a mount's host path
 * belongs to the share with the longest matching host directory. n may be 0 (every bind add is
 * then refused, naming the problem). The arrays and strings are copied. *out: hand it to
 * hm_instance_add_backend (which takes it over) or free it with hm_fs_hotplugger_free. Returns 0,
 * HM_E_INVALID (a missing, relative or non-directory host directory, a guest directory that is
 * not absolute and normal, naming which) or HM_E_NOMEM. Attach fails with HM_E_INVALID when the
 * host path lies in no declared share. Any thread; the backend is immutable and may be used from
 * any thread. Since 0.1.
 */
HM_API int hm_bind_hotplugger_new(hm_fs_hotplugger **out, const char *const *host_dirs,
                                  const char *const *guest_dirs, size_t n, hm_error **err);

HM_END_DECLS

#endif
