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
 * "org.hotmount.agent.0" on INSTANCE/agent.sock, QMP on INSTANCE/qmp.sock, and
 * reserved 9p fsdevs "hm-9p-ro-K"/"hm-9p-rw-K" whose paths are links in
 * INSTANCE/9p/ (described to the backend by the QOM object "hm-9p-slots").
 *
 * Linux hosts only: in a build without the Linux backends (macOS; meson
 * -Dlinux_backends=disabled) every function below that returns a code
 * returns HM_E_UNSUPPORTED ("the QEMU backend is Linux-only") and sets *out
 * to NULL; hm_qemu_config_free does nothing. hm_strv_free works everywhere.
 */

typedef struct hm_qemu_config hm_qemu_config;

/**
 * hm_qemu_config_new: a config for the instance directory instance_dir (copied; it will hold
 * qmp.sock and agent.sock): 32 slots, 1 GiB, virtiofsd searched for. *out: free with
 * hm_qemu_config_free. Returns 0, HM_E_INVALID (NULL or empty argument, a line break in the path)
 * or HM_E_NOMEM. Any thread; a config is used by one thread at a time. Since 0.1.
 */
HM_API int hm_qemu_config_new(hm_qemu_config **out, const char *instance_dir, hm_error **err);
/**
 * hm_qemu_config_free: frees cfg; accepts NULL. Objects made from it keep their own copy. Not
 * while another thread uses cfg. Since 0.1.
 */
HM_API void hm_qemu_config_free(hm_qemu_config *cfg);
/**
 * hm_qemu_config_set_slots: number of reserved hot-plug root ports, 1..64 (one per concurrent
 * virtiofs mount or reserved-slot 9p mount; 9p mounts over virtio-serial use none). Returns 0, or
 * HM_E_INVALID out of range. One thread at a time per config. Since 0.1.
 */
HM_API int hm_qemu_config_set_slots(hm_qemu_config *cfg, unsigned slots, hm_error **err);
/**
 * hm_qemu_config_set_memory: guest memory, as QEMU's -m takes it ("1G", "512M", "2048"); copied.
 * It must equal the -m QEMU gets (the shared memory backend replaces guest RAM). Returns 0,
 * HM_E_INVALID (NULL, not a size) or HM_E_NOMEM. One thread at a time per config. Since 0.1.
 */
HM_API int hm_qemu_config_set_memory(hm_qemu_config *cfg, const char *size, hm_error **err);
/**
 * hm_qemu_config_set_virtiofsd: the virtiofsd binary to use (copied); default: search PATH,
 * /usr/libexec, /usr/lib/qemu. Returns 0, HM_E_INVALID or HM_E_NOMEM. One thread at a time per
 * config. Since 0.1.
 */
HM_API int hm_qemu_config_set_virtiofsd(hm_qemu_config *cfg, const char *path, hm_error **err);

/**
 * hm_qemu_config_set_9p_slots: reserved 9p slots, 0..64 of each kind: n read-only and n writable
 * boot-time fsdevs (default 16 each; 0: none, every 9p mount then goes over virtio-serial). A 9p
 * mount through a slot plugs a virtio-9p-pci device on one of the root ports (set_slots), at the
 * speed of a boot-time 9p share. Returns 0, or HM_E_INVALID out of range. One thread at a time per
 * config. Since 0.1.
 */
HM_API int hm_qemu_config_set_9p_slots(hm_qemu_config *cfg, unsigned n, hm_error **err);
/**
 * hm_qemu_config_set_9p_security: QEMU's security_model for the reserved 9p fsdevs (copied):
 * "passthrough" (default when the caller is root: guest uids and modes are the host's), "none"
 * (default otherwise: files are created as QEMU's user, a guest chown is ignored), "mapped-xattr"
 * or "mapped-file" (guest ownership and modes kept in xattrs or files, never applied to the host
 * inode). See docs/security.md for what each lets guest root do on the host. Returns 0, or
 * HM_E_INVALID for another model. One thread at a time per config. Since 0.1.
 */
HM_API int hm_qemu_config_set_9p_security(hm_qemu_config *cfg, const char *model, hm_error **err);

/**
 * hm_qemu_config_build_args: the QEMU arguments that make a VM hot-mount ready, one argv element
 * each (no shell quoting needed), NULL-terminated; append them to QEMU's own. *out: free with
 * hm_strv_free. Returns 0, HM_E_INVALID or HM_E_NOMEM. Reads cfg: not while another thread changes
 * it. Since 0.1.
 */
HM_API int hm_qemu_config_build_args(char ***out, const hm_qemu_config *cfg, hm_error **err);

/**
 * hm_strv_free: frees a NULL-terminated string vector the library returned, strings included.
 * Accepts NULL. Any thread. Since 0.1.
 */
HM_API void hm_strv_free(char **strv);

/**
 * hm_qemu_hotplugger_new: the QEMU backend (virtiofs and 9p) for a running VM started with the
 * arguments above. Connects to INSTANCE/qmp.sock, negotiates capabilities and learns the reserved
 * slots and which are in use from QEMU itself; cfg is copied. QMP serves one client: while this
 * backend lives, nothing else (hotmountd, hm_qemu_probe) can use that socket. *out: hand it to
 * hm_instance_new (which takes it over) or free it with hm_fs_hotplugger_free. Returns 0,
 * HM_E_INVALID, HM_E_NOMEM, HM_E_NOT_READY (QEMU not listening yet: retry while it starts),
 * HM_E_PROTOCOL, HM_E_QMP. Blocks for the QMP handshake; any thread. Since 0.1.
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

/**
 * hm_qemu_accel_choose: which accelerator to give QEMU on this host, "kvm" or "tcg", chosen by
 * proof rather than by /dev/kvm being there (a nested VM's /dev/kvm may open and still not run a
 * guest). KVM is chosen only when QEMU with `-accel kvm` booted `kernel` (any kernel QEMU's
 * -kernel takes: use your guest's) far enough to print its banner on the serial console within
 * timeout_ms (0: 8 s); otherwise TCG, and the call returns by that deadline. Without a kernel KVM
 * is not proven and TCG is chosen. The environment variable HOTMOUNT_ACCEL=kvm|tcg overrides the
 * probe ("auto" or empty: probe). qemu: the QEMU binary (NULL: qemu-system-x86_64 from PATH).
 * *out gets facts (free with hm_status_free): accel ("kvm" or "tcg"), source ("probe" or
 * "HOTMOUNT_ACCEL") and reason (one line, for logs). Pass accel to QEMU as `-accel VALUE`, with
 * the same CPU model the probe used (QEMU's default for q35). Returns 0, HM_E_INVALID (out NULL,
 * kernel unreadable, timeout over 600 s, a bad HOTMOUNT_ACCEL) or HM_E_NOMEM; an errno code when
 * the probe process cannot be started. Starts and reaps one child process of its own, by its pidfd
 * only (works with SIGCHLD ignored, beside a GLib child watch); blocks up to timeout_ms; any
 * thread. Since 0.1.
 */
HM_API int hm_qemu_accel_choose(hm_status **out, const char *qemu, const char *kernel,
                                unsigned timeout_ms, hm_error **err);

HM_END_DECLS

#endif
