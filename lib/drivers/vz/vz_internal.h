/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VZ backend's entry points with an explicit shim, for the public
 * constructors (real shim) and the unit tests (fake shim). Not installed. */
#ifndef HM_VZ_INTERNAL_H
#define HM_VZ_INTERNAL_H

#include "private.h"
#include "vz_shim.h"

HM_PRIVATE int hm_vz_config_reserve_with_shim(const hm_vz_shim_ops *ops, void *vz_configuration,
                                              unsigned spares, hm_error **err);
HM_PRIVATE int hm_vz_hotplugger_new_with_shim(hm_fs_hotplugger **out, const hm_vz_shim_ops *ops,
                                              void *vz_virtual_machine, void *dispatch_queue,
                                              unsigned spares, hm_error **err);

#endif
