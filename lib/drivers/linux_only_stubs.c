/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public entry points of the Linux-only backends (lib/drivers/qemu,
 * lib/drivers/sshfs) for a build without them (meson -Dlinux_backends:
 * disabled, the default off Linux). The library then exports the same
 * symbols everywhere (lib/libhotmount.sym), and a program written for both
 * links on macOS and learns at run time, by HM_E_UNSUPPORTED and a message
 * naming the backend, that this one is not here. Outputs are set to NULL so
 * a caller's cleanup path stays valid.
 */
#include "private.h"

#include <hotmount/qemu.h>
#include <hotmount/sshfs.h>

#include <stddef.h>

#define NO_QEMU(err)                                                                               \
  HM_ERR(err, HM_E_UNSUPPORTED, "the QEMU backend is Linux-only (not in this build)")
#define NO_SSHFS(err)                                                                              \
  HM_ERR(err, HM_E_UNSUPPORTED, "the reverse-sshfs backend is Linux-only (not in this build)")

int hm_qemu_config_new(hm_qemu_config **out, const char *instance_dir, hm_error **err) {
  (void)instance_dir;
  if (out)
    *out = NULL;
  return NO_QEMU(err);
}

void hm_qemu_config_free(hm_qemu_config *cfg) {
  (void)cfg; /* none is ever made */
}

int hm_qemu_config_set_slots(hm_qemu_config *cfg, unsigned slots, hm_error **err) {
  (void)cfg, (void)slots;
  return NO_QEMU(err);
}

int hm_qemu_config_set_memory(hm_qemu_config *cfg, const char *size, hm_error **err) {
  (void)cfg, (void)size;
  return NO_QEMU(err);
}

int hm_qemu_config_set_virtiofsd(hm_qemu_config *cfg, const char *path, hm_error **err) {
  (void)cfg, (void)path;
  return NO_QEMU(err);
}

int hm_qemu_config_set_9p_slots(hm_qemu_config *cfg, unsigned n, hm_error **err) {
  (void)cfg, (void)n;
  return NO_QEMU(err);
}

int hm_qemu_config_set_9p_security(hm_qemu_config *cfg, const char *model, hm_error **err) {
  (void)cfg, (void)model;
  return NO_QEMU(err);
}

int hm_qemu_config_build_args(char ***out, const hm_qemu_config *cfg, hm_error **err) {
  (void)cfg;
  if (out)
    *out = NULL;
  return NO_QEMU(err);
}

int hm_qemu_hotplugger_new(hm_fs_hotplugger **out, const hm_qemu_config *cfg, hm_error **err) {
  (void)cfg;
  if (out)
    *out = NULL;
  return NO_QEMU(err);
}

int hm_qemu_probe(hm_status **out, const hm_qemu_config *cfg, hm_error **err) {
  (void)cfg;
  if (out)
    *out = NULL;
  return NO_QEMU(err);
}

int hm_qemu_accel_choose(hm_status **out, const char *qemu, const char *kernel, unsigned timeout_ms,
                         hm_error **err) {
  (void)qemu, (void)kernel, (void)timeout_ms;
  if (out)
    *out = NULL;
  return NO_QEMU(err);
}

int hm_ssh_config_new(hm_ssh_config **out, hm_error **err) {
  if (out)
    *out = NULL;
  return NO_SSHFS(err);
}

void hm_ssh_config_free(hm_ssh_config *cfg) {
  (void)cfg; /* none is ever made */
}

int hm_ssh_config_set(hm_ssh_config *cfg, const char *key, const char *value, hm_error **err) {
  (void)cfg, (void)key, (void)value;
  return NO_SSHFS(err);
}

const char *hm_ssh_config_get(const hm_ssh_config *cfg, const char *key) {
  (void)cfg, (void)key;
  return NULL;
}

int hm_ssh_config_validate(const hm_ssh_config *cfg, hm_error **err) {
  (void)cfg;
  return NO_SSHFS(err);
}

int hm_ssh_config_load(hm_ssh_config **out, const char *path, hm_error **err) {
  (void)path;
  if (out)
    *out = NULL;
  return NO_SSHFS(err);
}

int hm_ssh_config_save(const hm_ssh_config *cfg, const char *path, hm_error **err) {
  (void)cfg, (void)path;
  return NO_SSHFS(err);
}

int hm_ssh_config_check(const hm_ssh_config *cfg, hm_error **err) {
  (void)cfg;
  return NO_SSHFS(err);
}

int hm_sshfs_hotplugger_new(hm_fs_hotplugger **out, const hm_ssh_config *cfg,
                            const char *instance_dir, hm_error **err) {
  (void)cfg, (void)instance_dir;
  if (out)
    *out = NULL;
  return NO_SSHFS(err);
}
