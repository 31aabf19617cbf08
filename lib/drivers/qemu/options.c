/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The QEMU backend's option rules (its validate op): what virtiofsd and
 * diod can be asked to do, refused before anything is reserved. */
#include "mount_internal.h"
#include "qemu_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const vfs_cache[] = {"auto", "always", "never", NULL};
static const char *const vfs_device[] = {"shared", "dedicated", NULL};
static const char *const p9_cache[] = {"none", "loose", "fscache", "mmap", NULL};
static const char *const p9_version[] = {"9p2000.L", "9p2000.u", "9p2000", NULL};
static const char *const p9_security[] = {"passthrough", "mapped-xattr", "mapped-file", "none",
                                          NULL};
static const char *const p9_via[] = {"pci", "serial", NULL};

static const hm_option_rule rules[] = {
    {HM_TYPE_VIRTIOFS, "cache", vfs_cache, 0, 0},
    {HM_TYPE_VIRTIOFS, "mapUid", NULL, 0, HM_QEMU_MAP_ID_MAX},
    {HM_TYPE_VIRTIOFS, "mapGid", NULL, 0, HM_QEMU_MAP_ID_MAX},
    {HM_TYPE_9P, "mapUid", NULL, 0, HM_QEMU_MAP_ID_MAX},
    {HM_TYPE_9P, "mapGid", NULL, 0, HM_QEMU_MAP_ID_MAX},
    {HM_TYPE_VIRTIOFS, "device", vfs_device, 0, 0},
    {HM_TYPE_9P, "msize", NULL, 4096, 16 * 1024 * 1024},
    {HM_TYPE_9P, "cache", p9_cache, 0, 0},
    {HM_TYPE_9P, "version", p9_version, 0, 0},
    {HM_TYPE_9P, "securityModel", p9_security, 0, 0},
    {HM_TYPE_9P, "via", p9_via, 0, 0},
};

/* 9p hot mounts are served by diod (QEMU cannot add a virtio-9p fsdev at run
 * time): 9P2000.L only, no QEMU virtfs security models. (A larger msize than
 * diod's 65536 is fine: the guest kernel takes the server's lower figure.)
 * Values that are 9p words but not diod's get their own explanation. */
static int check_9p(const hm_mount_spec *spec, hm_error **err) {
  const char *version = hm_mount_spec_get_option(spec, "version");
  const char *sec = hm_mount_spec_get_option(spec, "securityModel");
  if (version && (strcmp(version, "9p2000.u") == 0 || strcmp(version, "9p2000") == 0))
    return HM_ERR(err, HM_E_INVALID,
                  "option version=\"%s\" is not supported for 9p: the host's 9P server (diod) "
                  "speaks 9p2000.L only",
                  version);
  if (sec && (strcmp(sec, "mapped-xattr") == 0 || strcmp(sec, "mapped-file") == 0 ||
              strcmp(sec, "none") == 0))
    return HM_ERR(err, HM_E_INVALID,
                  "option securityModel=\"%s\" is not supported for 9p: security models are a "
                  "QEMU virtfs notion, and hot 9p mounts are served by diod, which acts as the "
                  "guest's user on the host (passthrough only)",
                  sec);
  return 0;
}

long hm_qemu_map_id(const hm_mount_spec *spec, const char *key) {
  const char *v = hm_mount_spec_get_option(spec, key);
  return v ? strtol(v, NULL, 10) : -1;
}

/* mapUid/mapGid: which guest id is the host user. virtiofs without root
 * only: its user namespace's map says so (userns.h). As root, virtiofsd
 * acts as each guest id itself (passthrough); 9p's servers (QEMU's own for
 * the reserved slots, diod) show host ids as they are, and Linux 6.1's 9p
 * client cannot map them. */
static int check_map(const hm_mount_spec *spec, hm_error **err) {
  const char *key = hm_mount_spec_get_option(spec, "mapUid") ? "mapUid" : "mapGid";
  if (!hm_mount_spec_get_option(spec, key))
    return 0;
  if (hm_mount_spec_get_type(spec) == HM_TYPE_9P)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "option %s is not supported for 9p: its host server (QEMU's own, or diod) shows "
                  "host ids as they are and the guest's 9p client has no id map; use virtiofs or "
                  "reverse-sshfs (uid=/gid=) to map a guest user to the host user",
                  key);
  if (geteuid() == 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "option %s needs hotmountd without root: as root, virtiofsd acts as each guest "
                  "user on the host with the same id (passthrough), so there is no host user to "
                  "map to",
                  key);
  return 0;
}

int hm_qemu_validate(void *impl, const hm_mount_spec *spec, hm_error **err) {
  (void)impl;
  int r = hm_option_rules_check(spec, rules, sizeof(rules) / sizeof(rules[0]), err);
  r = r ?: check_map(spec, err);
  if (r == 0 && hm_mount_spec_get_type(spec) == HM_TYPE_9P)
    r = check_9p(spec, err);
  /* One virtiofsd serves every shared mount, with one cache mode. */
  const char *dev = hm_mount_spec_get_option(spec, "device");
  if (r == 0 && dev && strcmp(dev, "shared") == 0 && hm_mount_spec_get_option(spec, "cache"))
    r = HM_ERR(err, HM_E_INVALID,
               "option cache= cannot be combined with device=shared: one virtiofsd serves every "
               "shared mount of the VM with cache=auto; use device=dedicated for another cache "
               "mode");
  return r;
}
