/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_QEMU_H
#define HOTMOUNT_QEMU_H

#include <hotmount/common.h>
#include <hotmount/driver.h>
#include <hotmount/error.h>
#include <hotmount/status.h>

HM_BEGIN_DECLS

/*
 * QEMU backend and boot-time readiness.
 *
 * A VM is hot-mount ready when QEMU was started with the arguments that
 * hm_qemu_config_build_args prints: guest RAM in a shared memfd (vhost-user
 * needs it), N reserved multifunction pcie-root-ports ("hm-rp-0".."hm-rp-N-1"),
 * one virtio-serial-pci ("hm-serial") carrying the agent port
 * "org.hotmount.agent.0" on INSTANCE/agent.sock, and QMP on INSTANCE/qmp.sock.
 */

typedef struct hm_qemu_config hm_qemu_config;

/** New config for the instance directory dir (copied). 32 slots, 1 GiB. */
HM_API int hm_qemu_config_new(hm_qemu_config **out, const char *instance_dir, hm_error **err);
HM_API void hm_qemu_config_free(hm_qemu_config *cfg);
/** Number of reserved hot-plug root ports, 1..256. */
HM_API int hm_qemu_config_set_slots(hm_qemu_config *cfg, unsigned slots, hm_error **err);
/** Guest memory, as QEMU's -m takes it ("1G", "512M", "2048"). Must match -m. */
HM_API int hm_qemu_config_set_memory(hm_qemu_config *cfg, const char *size, hm_error **err);
/** virtiofsd binary to use; default: search PATH, /usr/libexec, /usr/lib/qemu. */
HM_API int hm_qemu_config_set_virtiofsd(hm_qemu_config *cfg, const char *path, hm_error **err);

/**
 * hm_qemu_config_build_args: the QEMU arguments, one argv element each,
 * NULL-terminated; *out is freed with hm_strv_free. Since 0.1.
 */
HM_API int hm_qemu_config_build_args(char ***out, const hm_qemu_config *cfg, hm_error **err);

/** Frees a NULL-terminated string vector from the library. Accepts NULL. */
HM_API void hm_strv_free(char **strv);

/**
 * hm_qemu_hotplugger_new: the QEMU backend for a running VM started with the
 * arguments above. Connects to INSTANCE/qmp.sock, negotiates capabilities and
 * learns the reserved slots and which are in use from QEMU itself. The config
 * is copied. Since 0.1.
 */
HM_API int hm_qemu_hotplugger_new(hm_fs_hotplugger **out, const hm_qemu_config *cfg,
                                  hm_error **err);

/**
 * hm_qemu_probe: checks a running VM for hot-mount readiness without a
 * daemon, for `hotmount doctor`. Connects to cfg's INSTANCE/qmp.sock and asks
 * QEMU what `hm_qemu_config_build_args` would have set up; then, if the
 * guest has the agent port open, tries the agent handshake on
 * INSTANCE/agent.sock (for up to 2 s); then looks for virtiofsd on this host
 * (cfg's virtiofsd path if set). *out gets ordered key/value facts (free with
 * hm_status_free); keys: qmp ("connected" or "unreachable", then qmpError),
 * qemuVersion, machineType, memoryBackend, memoryShared, memorySize (bytes),
 * slotsTotal, virtioSerial, agentChannel, agentPortOpen, agent ("connected",
 * "unreachable" or "not running"), agentVersion or agentError, virtiofsd,
 * virtiofsdFlavor, virtiofsdReadonly ("option", "bind" or "unavailable") or
 * virtiofsdError; see docs/api.md for their meaning.
 *
 * QMP and the agent socket serve one client at a time: while hotmountd runs
 * for this instance, this call would wait on QEMU until its QMP timeout (ask
 * the daemon instead: hm_client_status). Returns 0 even when QEMU cannot be
 * reached (the facts say so); HM_E_INVALID for bad arguments, HM_E_NOMEM.
 * Blocks for up to a few seconds; any thread. Since 0.1.
 */
HM_API int hm_qemu_probe(hm_status **out, const hm_qemu_config *cfg, hm_error **err);

HM_END_DECLS

#endif
