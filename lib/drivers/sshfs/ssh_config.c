/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hm_ssh_config: how to reach a guest's sshd; saved as INSTANCE/ssh.json. */
#include "sshfs_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hm_ssh_config {
  hm_kv kv;
};

enum kind { TEXT, NUMBER, PATH, USER, FINGERPRINT };

static const struct {
  const char *key;
  enum kind kind;
  long min, max;
} keys[] = {
    {"host", TEXT, 0, 0},
    {"port", NUMBER, 1, 65535},
    {"user", USER, 0, 0},
    {"identity", PATH, 0, 0},
    {"knownHosts", PATH, 0, 0},
    {"fingerprint", FINGERPRINT, 0, 0},
    {"keepaliveInterval", NUMBER, 100, 600000},
    {"keepaliveCount", NUMBER, 1, 100},
    {"connectTimeout", NUMBER, 100, 600000},
    {"sftpServer", PATH, 0, 0},
};

int hm_ssh_config_new(hm_ssh_config **out, hm_error **err) {
  if (!out)
    return HM_ERR(err, HM_E_INVALID, "out is NULL");
  if (!(*out = calloc(1, sizeof(**out))))
    return HM_ERR_NOMEM(err);
  return 0;
}

void hm_ssh_config_free(hm_ssh_config *cfg) {
  if (!cfg)
    return;
  hm_kv_clear(&cfg->kv);
  free(cfg);
}

static int printable(const char *v) {
  for (const unsigned char *p = (const unsigned char *)v; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return 0;
  return *v != 0;
}

static int check_value(enum kind kind, long min, long max, const char *key, const char *v,
                       hm_error **err) {
  if (!printable(v))
    return HM_ERR(err, HM_E_INVALID, "ssh %s must be non-empty text without control characters",
                  key);
  switch (kind) {
  case NUMBER: {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*end || errno || n < min || n > max)
      return HM_ERR(err, HM_E_INVALID, "ssh %s \"%s\" must be a number from %ld to %ld", key, v,
                    min, max);
    return 0;
  }
  case USER:
    for (const char *p = v; *p; p++)
      if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
        return HM_ERR(err, HM_E_INVALID, "ssh user \"%s\" may hold only letters, digits, . _ -", v);
    return 0;
  case PATH:
    if (v[0] != '/')
      return HM_ERR(err, HM_E_INVALID, "ssh %s \"%s\" must be an absolute path", key, v);
    return 0;
  case FINGERPRINT:
    if (strncmp(v, "SHA256:", 7) != 0 || strlen(v) < 20)
      return HM_ERR(err, HM_E_INVALID,
                    "ssh fingerprint \"%s\" must look like SHA256:... (as `ssh-keygen -lf KEY` "
                    "prints it)",
                    v);
    return 0;
  case TEXT:
    if (strchr(v, ' ') || v[0] == '-')
      return HM_ERR(err, HM_E_INVALID, "ssh %s \"%s\" must not start with '-' or hold spaces", key,
                    v);
    return 0;
  }
  return 0;
}

int hm_ssh_config_set(hm_ssh_config *cfg, const char *key, const char *value, hm_error **err) {
  if (!cfg || !key)
    return HM_ERR(err, HM_E_INVALID, "cfg and key must not be NULL");
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    if (strcmp(keys[i].key, key) != 0)
      continue;
    int r;
    if (value && (r = check_value(keys[i].kind, keys[i].min, keys[i].max, key, value, err)) < 0)
      return r;
    return hm_kv_set(&cfg->kv, key, value) < 0 ? HM_ERR_NOMEM(err) : 0;
  }
  return HM_ERR(err, HM_E_INVALID, "unknown ssh setting \"%s\"", key);
}

const char *hm_ssh_config_get(const hm_ssh_config *cfg, const char *key) {
  return cfg && key ? hm_kv_get(&cfg->kv, key) : NULL;
}

int hm_ssh_config_validate(const hm_ssh_config *cfg, hm_error **err) {
  if (!cfg)
    return HM_ERR(err, HM_E_INVALID, "cfg is NULL");
  if (!hm_ssh_config_get(cfg, "host"))
    return HM_ERR(err, HM_E_INVALID, "ssh host is not set");
  const char *id = hm_ssh_config_get(cfg, "identity");
  if (!id)
    return HM_ERR(err, HM_E_INVALID, "ssh identity (private key file) is not set");
  if (access(id, R_OK) < 0)
    return HM_ERR(err, HM_E_INVALID, "ssh identity %s cannot be read: %s", id, strerror(errno));
  const char *kh = hm_ssh_config_get(cfg, "knownHosts");
  if (!kh && !hm_ssh_config_get(cfg, "fingerprint"))
    return HM_ERR(err, HM_E_INVALID,
                  "the guest's host key must be known: set knownHosts (a known_hosts file) or "
                  "fingerprint (SHA256:...); hotmount never accepts an unknown host key");
  if (kh && access(kh, R_OK) < 0)
    return HM_ERR(err, HM_E_INVALID, "ssh knownHosts %s cannot be read: %s", kh, strerror(errno));
  return 0;
}

int hm_ssh_config_copy(hm_ssh_config **out, const hm_ssh_config *cfg) {
  if (hm_ssh_config_new(out, NULL) < 0)
    return HM_E_NOMEM;
  if (hm_kv_copy(&(*out)->kv, &cfg->kv) < 0) {
    hm_ssh_config_free(*out);
    *out = NULL;
    return HM_E_NOMEM;
  }
  return 0;
}

long hm_ssh_config_num(const hm_ssh_config *cfg, const char *key, long dflt) {
  const char *v = hm_ssh_config_get(cfg, key);
  return v ? strtol(v, NULL, 10) : dflt;
}

int hm_ssh_config_load(hm_ssh_config **out, const char *path, hm_error **err) {
  if (!out || !path)
    return HM_ERR(err, HM_E_INVALID, "out and path must not be NULL");
  /* Not through a symlink: the settings name the key we log in with and
   * the hosts we trust. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return HM_ERR(err,
                  errno == ENOENT  ? HM_E_NOT_FOUND
                  : errno == ELOOP ? HM_E_PERM
                                   : -errno,
                  "cannot read %s: %s", path,
                  errno == ELOOP ? "it is a symbolic link" : strerror(errno));
  json_object *root = json_object_from_fd(fd);
  close(fd);
  if (!root || !json_object_is_type(root, json_type_object)) {
    json_object_put(root);
    return HM_ERR(err, HM_E_INVALID, "%s is not a JSON object", path);
  }
  hm_ssh_config *cfg = NULL;
  int r = hm_ssh_config_new(&cfg, err);
  json_object_object_foreach(root, k, v) {
    if (r < 0)
      break;
    if (!json_object_is_type(v, json_type_string)) {
      r = HM_ERR(err, HM_E_INVALID, "%s: \"%s\" must be a string", path, k);
      break;
    }
    r = hm_ssh_config_set(cfg, k, json_object_get_string(v), err);
    if (r < 0)
      r = hm_error_prefix(err, r, __func__, "%s", path);
  }
  json_object_put(root);
  if (r < 0) {
    hm_ssh_config_free(cfg);
    return r;
  }
  *out = cfg;
  return 0;
}

int hm_ssh_config_save(const hm_ssh_config *cfg, const char *path, hm_error **err) {
  if (!cfg || !path)
    return HM_ERR(err, HM_E_INVALID, "cfg and path must not be NULL");
  json_object *root = json_object_new_object();
  if (!root)
    return HM_ERR_NOMEM(err);
  for (size_t i = 0; i < cfg->kv.n; i++)
    json_object_object_add(root, cfg->kv.keys[i], json_object_new_string(cfg->kv.values[i]));
  const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE);
  int r = hm_write_file_atomic(path, text, err);
  json_object_put(root);
  return r;
}
