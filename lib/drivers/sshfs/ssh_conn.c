/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* SSH to the guest with libssh: connect, verify the host key, log in, run. */
#include "sshfs_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hm_ssh_close(ssh_session s) {
  if (!s)
    return;
  if (ssh_is_connected(s))
    ssh_disconnect(s);
  ssh_free(s);
}

static char *server_fingerprint(ssh_session s, char **type) {
  ssh_key key = NULL;
  unsigned char *hash = NULL;
  size_t hlen = 0;
  char *fp = NULL;
  if (ssh_get_server_publickey(s, &key) == SSH_OK &&
      ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == 0) {
    char *f = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
    fp = f ? strdup(f) : NULL;
    ssh_string_free_char(f);
    if (type)
      *type = strdup(ssh_key_type_to_char(ssh_key_type(key)));
  }
  ssh_clean_pubkey_hash(&hash);
  ssh_key_free(key);
  return fp;
}

static int verify_host_key(ssh_session s, const hm_ssh_config *cfg, const char *where,
                           hm_error **err) {
  char *type = NULL;
  char *fp = server_fingerprint(s, &type);
  int r = 0;
  if (!fp) {
    r = HM_ERR(err, HM_E_AUTH, "%s: cannot read the guest's host key: %s", where, ssh_get_error(s));
    goto out;
  }
  const char *pin = hm_ssh_config_get(cfg, "fingerprint");
  if (pin) {
    /* Base64 without padding either way; compare what follows "SHA256:". */
    size_t a = strcspn(fp + 7, "="), b = strcspn(pin + 7, "=");
    if (a != b || strncmp(fp + 7, pin + 7, a) != 0)
      r = HM_ERR(err, HM_E_AUTH,
                 "%s: host key mismatch: the guest offers %s key %s, but %s is pinned; refusing "
                 "to connect (a re-created guest, or someone in the middle)",
                 where, type ? type : "a", fp, pin);
    goto out;
  }
  switch (ssh_session_is_known_server(s)) {
  case SSH_KNOWN_HOSTS_OK: break;
  case SSH_KNOWN_HOSTS_CHANGED:
    r = HM_ERR(err, HM_E_AUTH,
               "%s: the guest's host key CHANGED (now %s %s), it does not match %s; refusing to "
               "connect (a re-created guest, or someone in the middle)",
               where, type ? type : "?", fp, hm_ssh_config_get(cfg, "knownHosts"));
    break;
  case SSH_KNOWN_HOSTS_OTHER:
    r = HM_ERR(err, HM_E_AUTH,
               "%s: %s lists a key of another type for this guest, which now offers %s %s; "
               "refusing to connect",
               where, hm_ssh_config_get(cfg, "knownHosts"), type ? type : "?", fp);
    break;
  case SSH_KNOWN_HOSTS_NOT_FOUND:
  case SSH_KNOWN_HOSTS_UNKNOWN:
    r = HM_ERR(err, HM_E_AUTH,
               "%s: unknown host key %s %s (not in %s); refusing to connect: add the guest's "
               "key to that file or pin it with fingerprint",
               where, type ? type : "?", fp, hm_ssh_config_get(cfg, "knownHosts"));
    break;
  default:
    r = HM_ERR(err, HM_E_AUTH, "%s: cannot check the host key against %s: %s", where,
               hm_ssh_config_get(cfg, "knownHosts"), ssh_get_error(s));
  }
out:
  free(fp);
  free(type);
  return r;
}

int hm_ssh_open(ssh_session *out, const hm_ssh_config *cfg, hm_error **err) {
  const char *host = hm_ssh_config_get(cfg, "host");
  const char *user = hm_ssh_config_get(cfg, "user") ?: "root";
  unsigned port = (unsigned)hm_ssh_config_num(cfg, "port", 22);
  long timeout_ms = hm_ssh_config_num(cfg, "connectTimeout", 5000);
  char where[300];
  snprintf(where, sizeof(where), "ssh %s@%s:%u", user, host, port);
  ssh_session s = ssh_new();
  if (!s)
    return HM_ERR_NOMEM(err);
  long sec = timeout_ms / 1000, usec = (timeout_ms % 1000) * 1000;
  int no = 0;
  const char *kh = hm_ssh_config_get(cfg, "knownHosts");
  /* Only what we are told: no ~/.ssh/config, no system known_hosts. */
  if (ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_HOST, host) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_PORT, &port) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_USER, user) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &sec) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &usec) < 0 ||
      ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") < 0 ||
      ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, kh ? kh : "/dev/null") < 0) {
    int r = HM_ERR(err, HM_E_INVALID, "%s: %s", where, ssh_get_error(s));
    ssh_free(s);
    return r;
  }
  if (ssh_connect(s) != SSH_OK) {
    int r = HM_ERR(err, HM_E_NOT_READY, "%s: cannot connect: %s", where, ssh_get_error(s));
    ssh_free(s);
    return r;
  }
  /* libssh makes its socket without SOCK_CLOEXEC: helpers we start later
   * (sftp-server, virtiofsd, diod) must not inherit a guest login. (The
   * moment between its socket() and this line is covered by the spawner
   * closing every fd above the ones it hands on.) */
  if (ssh_get_fd(s) >= 0)
    fcntl(ssh_get_fd(s), F_SETFD, FD_CLOEXEC);
  int r = verify_host_key(s, cfg, where, err);
  if (r < 0) {
    hm_ssh_close(s);
    return r;
  }
  ssh_key key = NULL;
  const char *idf = hm_ssh_config_get(cfg, "identity");
  if (ssh_pki_import_privkey_file(idf, NULL, NULL, NULL, &key) != SSH_OK) {
    hm_ssh_close(s);
    return HM_ERR(err, HM_E_INVALID,
                  "%s: cannot load the identity %s (a passphrase-less private "
                  "key in OpenSSH or PEM format)",
                  where, idf);
  }
  int a = ssh_userauth_publickey(s, NULL, key);
  ssh_key_free(key);
  if (a != SSH_AUTH_SUCCESS) {
    r = HM_ERR(err, a == SSH_AUTH_DENIED ? HM_E_AUTH : HM_E_NOT_READY,
               "%s: login with %s refused%s%s", where, idf, a == SSH_AUTH_DENIED ? "" : ": ",
               a == SSH_AUTH_DENIED ? " (is its public key in the guest's authorized_keys?)"
                                    : ssh_get_error(s));
    hm_ssh_close(s);
    return r;
  }
  *out = s;
  return 0;
}

int hm_ssh_config_check(const hm_ssh_config *cfg, hm_error **err) {
  int r = hm_ssh_config_validate(cfg, err);
  ssh_session s = NULL;
  if (r < 0 || (r = hm_ssh_open(&s, cfg, err)) < 0)
    return r;
  int status = -1;
  char *out = NULL;
  r = hm_ssh_run(s,
                 "for c in sshfs fusermount3:fusermount; do ok=; for p in $(echo $c | tr : ' '); "
                 "do command -v $p >/dev/null 2>&1 && ok=1; done; [ -n \"$ok\" ] || "
                 "echo \"${c%%:*} is not installed in the guest\"; done; "
                 "[ -e /dev/fuse ] || echo '/dev/fuse is missing in the guest (FUSE module not "
                 "loaded?)'",
                 10000, &status, &out, err);
  hm_ssh_close(s);
  if (r == 0 && out && *out) {
    out[strcspn(out, "\n")] = 0;
    r = HM_ERR(err, HM_E_UNSUPPORTED, "%s", out);
  }
  free(out);
  return r;
}

char *hm_sh_quote(const char *s) {
  size_t n = 3;
  for (const char *p = s; *p; p++)
    n += *p == '\'' ? 4 : 1;
  char *q = malloc(n), *o = q;
  if (!q)
    return NULL;
  *o++ = '\'';
  for (const char *p = s; *p; p++) {
    if (*p == '\'') {
      memcpy(o, "'\\''", 4);
      o += 4;
    } else {
      *o++ = *p;
    }
  }
  *o++ = '\'';
  *o = 0;
  return q;
}

ssh_channel hm_ssh_exec(ssh_session s, const char *cmd, hm_error **err) {
  ssh_channel ch = ssh_channel_new(s);
  if (!ch) {
    HM_ERR(err, HM_E_NOT_READY, "cannot open an SSH channel: %s", ssh_get_error(s));
    return NULL;
  }
  if (ssh_channel_open_session(ch) != SSH_OK || ssh_channel_request_exec(ch, cmd) != SSH_OK) {
    HM_ERR(err, HM_E_NOT_READY, "cannot run a command in the guest over SSH: %s", ssh_get_error(s));
    ssh_channel_free(ch);
    return NULL;
  }
  return ch;
}

int hm_ssh_run(ssh_session s, const char *cmd, int timeout_ms, int *status, char **out,
               hm_error **err) {
  *status = -1;
  if (out)
    *out = NULL;
  ssh_channel ch = hm_ssh_exec(s, cmd, err);
  if (!ch)
    return HM_E_NOT_READY;
  char buf[4096];
  size_t len = 0;
  int64_t deadline = hm_now_ms() + timeout_ms;
  int r = 0;
  for (;;) {
    int left = (int)(deadline - hm_now_ms());
    if (left <= 0) {
      r = HM_ERR(err, HM_E_TIMEOUT, "a command in the guest did not finish in %d ms", timeout_ms);
      break;
    }
    int got = 0, failed = 0;
    for (int is_err = 0; is_err < 2; is_err++) {
      char tmp[1024];
      int n = ssh_channel_read_nonblocking(ch, tmp, sizeof(tmp), is_err);
      failed |= n == SSH_ERROR;
      if (n > 0) {
        got = 1;
        size_t c = (size_t)n < sizeof(buf) - 1 - len ? (size_t)n : sizeof(buf) - 1 - len;
        memcpy(buf + len, tmp, c);
        len += c;
      }
    }
    if (failed) {
      r = HM_ERR(err, HM_E_NOT_READY, "SSH connection lost: %s", ssh_get_error(s));
      break;
    }
    if (got)
      continue;
    if (ssh_channel_is_eof(ch) || ssh_channel_is_closed(ch))
      break;
    if (ssh_channel_poll_timeout(ch, left < 50 ? left : 50, 0) == SSH_ERROR) {
      r = HM_ERR(err, HM_E_NOT_READY, "SSH connection lost: %s", ssh_get_error(s));
      break;
    }
  }
  if (r == 0) {
    *status = ssh_channel_get_exit_status(ch);
    buf[len] = 0;
    if (out && !(*out = strdup(buf)))
      r = HM_ERR_NOMEM(err);
  }
  ssh_channel_close(ch);
  ssh_channel_free(ch);
  return r;
}
