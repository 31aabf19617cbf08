/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_SSHFS_H
#define HOTMOUNT_SSHFS_H

/*
 * The reverse-sshfs backend: for guests without virtiofs/9p and hosts
 * without virtiofsd. The host opens SSH to the guest (libssh), runs
 * `sshfs -o passive` there, and pipes that channel to a local OpenSSH
 * sftp-server confined to the shared directory. The host never listens on a
 * TCP port, and the guest needs sshd, sshfs and FUSE, but no hotmount-agent.
 *
 * Add it to an instance next to its main backend:
 *
 *   hm_ssh_config *cfg; hm_fs_hotplugger *hp;
 *   hm_ssh_config_new(&cfg, &err);
 *   hm_ssh_config_set(cfg, "host", "127.0.0.1", &err);
 *   hm_ssh_config_set(cfg, "port", "2222", &err);
 *   hm_ssh_config_set(cfg, "identity", "/path/id_ed25519", &err);
 *   hm_ssh_config_set(cfg, "knownHosts", "/path/known_hosts", &err);
 *   hm_sshfs_hotplugger_new(&hp, cfg, instance_dir, &err);
 *   hm_instance_add_backend(inst, hp, &err);
 *
 * Linux hosts only: in a build without the Linux backends (macOS; meson
 * -Dlinux_backends=disabled) every function below that returns a code
 * returns HM_E_UNSUPPORTED ("the reverse-sshfs backend is Linux-only") and
 * sets *out to NULL; hm_ssh_config_get returns NULL, hm_ssh_config_free does
 * nothing.
 */

#include <hotmount/common.h>
#include <hotmount/driver.h>
#include <hotmount/error.h>

HM_BEGIN_DECLS

/**
 * hm_ssh_config: how to reach one guest over SSH. Keys (all strings):
 *   host            guest address (required)
 *   port            "22" by default
 *   user            "root" by default
 *   identity        private key file (required; OpenSSH format)
 *   knownHosts      known_hosts file holding the guest's host key
 *   fingerprint     the host key pinned instead: "SHA256:..." (as ssh-keygen -l prints)
 *   keepaliveInterval  ms between keepalive probes ("1000")
 *   keepaliveCount  probes without an answer before the connection counts as dead ("3")
 *   connectTimeout  ms ("5000")
 *   sftpServer      host sftp-server path (found in the usual places when unset)
 * One of knownHosts and fingerprint is required: an unknown or changed host
 * key is refused, never accepted silently. Since 0.1.
 */
typedef struct hm_ssh_config hm_ssh_config;

/**
 * hm_ssh_config_new: a new, empty configuration in *out (free with hm_ssh_config_free). Returns 0,
 * HM_E_INVALID (out NULL) or HM_E_NOMEM. Any thread; a configuration is used by one thread at a
 * time. Since 0.1.
 */
HM_API int hm_ssh_config_new(hm_ssh_config **out, hm_error **err);
/** hm_ssh_config_free: frees cfg; accepts NULL. Not while another thread uses cfg. Since 0.1. */
HM_API void hm_ssh_config_free(hm_ssh_config *cfg);
/**
 * hm_ssh_config_set: sets key (see above) to value (copied; NULL unsets). Returns 0, HM_E_INVALID
 * naming an unknown key or a bad value, or HM_E_NOMEM. One thread at a time per configuration.
 * Since 0.1.
 */
HM_API int hm_ssh_config_set(hm_ssh_config *cfg, const char *key, const char *value,
                             hm_error **err);
/**
 * hm_ssh_config_get: the value of key, or NULL; borrowed from cfg (valid until it changes or is
 * freed). Not while another thread changes cfg. Since 0.1.
 */
HM_API const char *hm_ssh_config_get(const hm_ssh_config *cfg, const char *key);
/**
 * hm_ssh_config_validate: checks the configuration is complete (host, identity, a host key
 * source). Returns 0 or HM_E_INVALID naming what is missing. Not while another thread changes cfg.
 * Since 0.1.
 */
HM_API int hm_ssh_config_validate(const hm_ssh_config *cfg, hm_error **err);
/**
 * hm_ssh_config_load: loads a configuration saved by hm_ssh_config_save (JSON) into a new *out
 * (free with hm_ssh_config_free). Returns 0, HM_E_NOT_FOUND when the file does not exist,
 * HM_E_INVALID for a file that is not such a configuration, or -errno. Any thread. Since 0.1.
 */
HM_API int hm_ssh_config_load(hm_ssh_config **out, const char *path, hm_error **err);
/**
 * hm_ssh_config_save: saves cfg as JSON at path (mode 0600, written atomically). Returns 0,
 * HM_E_INVALID (NULL argument), HM_E_NOMEM or -errno. Not while another thread changes cfg.
 * Since 0.1.
 */
HM_API int hm_ssh_config_save(const hm_ssh_config *cfg, const char *path, hm_error **err);

/**
 * hm_ssh_config_check: can reverse-sshfs mount with cfg? Connects (host key
 * verified, login), then checks the guest has sshfs, fusermount and
 * /dev/fuse. 0 when it can; else HM_E_NOT_READY (sshd not reachable),
 * HM_E_AUTH (host key refused, or login), HM_E_UNSUPPORTED (the guest lacks
 * something: the message names it), with *err set. Waits on the network
 * (up to the connect timeout). Thread-safe. Since 0.1.
 */
HM_API int hm_ssh_config_check(const hm_ssh_config *cfg, hm_error **err);

/**
 * hm_sshfs_hotplugger_new: the reverse-sshfs backend for one guest (cfg is
 * copied; it must validate). instance_dir holds its working files. The
 * backend mounts in the guest itself (HM_HOTPLUGGER_GUEST_MOUNTS). Needs
 * root on the host (sftp-server is confined to the shared directory in a
 * private mount namespace). Threads: one data pump thread per mount, which
 * owns that mount's SSH session. Since 0.1.
 */
HM_API int hm_sshfs_hotplugger_new(hm_fs_hotplugger **out, const hm_ssh_config *cfg,
                                   const char *instance_dir, hm_error **err);

HM_END_DECLS

#endif
