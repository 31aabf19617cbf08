/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* reverse-sshfs internals: SSH connections, the confined sftp-server. */
#ifndef HM_SSHFS_INTERNAL_H
#define HM_SSHFS_INTERNAL_H

#include "private.h"

#include <hotmount/sshfs.h>
#include <libssh/libssh.h>
#include <sys/types.h>

HM_PRIVATE int hm_ssh_config_copy(hm_ssh_config **out, const hm_ssh_config *cfg);
/* A numeric setting, or dflt when unset. */
HM_PRIVATE long hm_ssh_config_num(const hm_ssh_config *cfg, const char *key, long dflt);

/*
 * hm_ssh_open: a connected, host-key-verified, authenticated session in
 * blocking mode (timeouts from the config). The host key check: a pinned
 * fingerprint must match exactly; otherwise the known_hosts file must hold
 * this key for this host (an unknown key, a changed key or another key type
 * is refused, with both fingerprints in the message). HM_E_NOT_READY when
 * the guest cannot be reached, HM_E_AUTH for a refused key or login.
 */
HM_PRIVATE int hm_ssh_open(ssh_session *out, const hm_ssh_config *cfg, hm_error **err);
HM_PRIVATE void hm_ssh_close(ssh_session s);

/*
 * hm_ssh_run: runs cmd (a shell command line) in the guest over s and
 * waits up to timeout_ms for it to end. *status gets its exit status (-1
 * when unknown); *out (may be NULL) the first 4 KiB of stdout+stderr,
 * malloc'd.
 */
HM_PRIVATE int hm_ssh_run(ssh_session s, const char *cmd, int timeout_ms, int *status, char **out,
                          hm_error **err);
/* cmd in a fresh exec channel of s (blocking); NULL with *err set on failure. */
HM_PRIVATE ssh_channel hm_ssh_exec(ssh_session s, const char *cmd, hm_error **err);

/* A shell word for s: '...' with embedded ' as '\''. malloc'd. */
HM_PRIVATE char *hm_sh_quote(const char *s);

/*
 * hm_sftp_spawn: starts OpenSSH's sftp-server with stdin/stdout on sock,
 * confined: its own mount namespace whose root is a small tmpfs holding a
 * read-only /usr (for the program and its libraries), a minimal /etc and
 * the shared directory at /share (read-only too when !writable, besides
 * sftp-server's own -R). So a guest speaking SFTP reaches the share and
 * nothing else of the host. jail_dir is an existing empty directory the
 * tmpfs is mounted on (in the child's namespace only). Needs root.
 */
HM_PRIVATE int hm_sftp_spawn(pid_t *out, const char *sftp_server, const char *host_dir,
                             int writable, int sock, const char *jail_dir, char *const *extra_env,
                             hm_error **err);
/* The sftp-server binary: cfg's sftpServer or the usual places; NULL if none. */
HM_PRIVATE const char *hm_sftp_server_find(const hm_ssh_config *cfg);

#endif
