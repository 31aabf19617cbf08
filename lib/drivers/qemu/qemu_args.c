/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Boot-time readiness: the QEMU arguments that make a VM hot-mount ready. */
#include "qemu_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hm_qemu_config_new(hm_qemu_config **out, const char *instance_dir, hm_error **err) {
  if (!out || !instance_dir || !*instance_dir)
    return HM_ERR(err, HM_E_INVALID, "out and instance_dir must not be NULL or empty");
  if (strpbrk(instance_dir, "\n\r"))
    return HM_ERR(err, HM_E_INVALID, "instance directory contains a line break");
  hm_qemu_config *c = calloc(1, sizeof(*c));
  /* QEMU as root: passthrough (guest uids and modes as they are). As a
   * user: none (files as that user; a guest chown is not an error). */
  if (!c || !(c->dir = strdup(instance_dir)) || !(c->memory = strdup("1024M")) ||
      !(c->ninep_model = strdup(geteuid() == 0 ? "passthrough" : "none"))) {
    hm_qemu_config_free(c);
    return HM_ERR_NOMEM(err);
  }
  c->slots = 32;
  c->ninep_slots = HM_QEMU_9P_DEFAULT_SLOTS;
  *out = c;
  return 0;
}

void hm_qemu_config_free(hm_qemu_config *cfg) {
  if (!cfg)
    return;
  free(cfg->dir);
  free(cfg->memory);
  free(cfg->virtiofsd);
  free(cfg->ninep_model);
  free(cfg);
}

int hm_qemu_config_set_9p_slots(hm_qemu_config *cfg, unsigned n, hm_error **err) {
  if (!cfg)
    return HM_ERR(err, HM_E_INVALID, "cfg is NULL");
  if (n > HM_QEMU_9P_MAX_SLOTS)
    return HM_ERR(err, HM_E_INVALID, "9p slots must be from 0 to %d per kind, not %u",
                  HM_QEMU_9P_MAX_SLOTS, n);
  cfg->ninep_slots = n;
  return 0;
}

int hm_qemu_config_set_9p_security(hm_qemu_config *cfg, const char *model, hm_error **err) {
  static const char *const models[] = {"passthrough", "none", "mapped-xattr", "mapped-file", NULL};
  if (!cfg || !model)
    return HM_ERR(err, HM_E_INVALID, "cfg and model must not be NULL");
  for (const char *const *m = models; *m; m++) {
    if (strcmp(*m, model) == 0) {
      char *d = strdup(model);
      if (!d)
        return HM_ERR_NOMEM(err);
      free(cfg->ninep_model);
      cfg->ninep_model = d;
      return 0;
    }
  }
  return HM_ERR(err, HM_E_INVALID,
                "9p security model \"%s\" is not one of passthrough, none, mapped-xattr, "
                "mapped-file",
                model);
}

int hm_qemu_config_set_slots(hm_qemu_config *cfg, unsigned slots, hm_error **err) {
  if (!cfg)
    return HM_ERR(err, HM_E_INVALID, "cfg is NULL");
  if (slots < 1 || slots > HM_QEMU_MAX_SLOTS)
    return HM_ERR(err, HM_E_INVALID, "slots must be from 1 to %d, not %u", HM_QEMU_MAX_SLOTS,
                  slots);
  cfg->slots = slots;
  return 0;
}

int hm_qemu_config_set_memory(hm_qemu_config *cfg, const char *size, hm_error **err) {
  if (!cfg || !size)
    return HM_ERR(err, HM_E_INVALID, "cfg and size must not be NULL");
  char *end;
  errno = 0;
  unsigned long long v = strtoull(size, &end, 10);
  unsigned long long mib;
  int ok = end != size && !errno && isdigit((unsigned char)size[0]);
  switch (ok ? toupper((unsigned char)*end) : '?') {
  case '\0': mib = v; break;
  case 'M':
    mib = v;
    end++;
    break;
  case 'G':
    mib = v * 1024;
    end++;
    break;
  case 'T':
    mib = v * 1024 * 1024;
    end++;
    break;
  default: ok = 0; mib = 0;
  }
  if (ok && (*end == 'B' || *end == 'b') && end[-1] != size[0])
    end++;
  if (!ok || *end || mib < 64 || mib > 16ull * 1024 * 1024)
    return HM_ERR(err, HM_E_INVALID,
                  "memory size \"%s\" is not valid (use QEMU's -m form: 2048, 512M, 4G)", size);
  char *m = NULL;
  if (asprintf(&m, "%lluM", mib) < 0)
    return HM_ERR_NOMEM(err);
  free(cfg->memory);
  cfg->memory = m;
  return 0;
}

int hm_qemu_config_set_virtiofsd(hm_qemu_config *cfg, const char *path, hm_error **err) {
  if (!cfg || !path || !*path)
    return HM_ERR(err, HM_E_INVALID, "cfg and path must not be NULL or empty");
  char *p = strdup(path);
  if (!p)
    return HM_ERR_NOMEM(err);
  free(cfg->virtiofsd);
  cfg->virtiofsd = p;
  return 0;
}

int hm_qemu_9p_identity_parse(const char *s, unsigned *ro, unsigned *rw, char model[32]) {
  model[0] = '\0';
  if (!s || sscanf(s, "ro=%u/rw=%u/model=%31[a-z-]", ro, rw, model) != 3) {
    *ro = *rw = 0;
    return -1;
  }
  *ro = *ro < HM_QEMU_9P_MAX_SLOTS ? *ro : HM_QEMU_9P_MAX_SLOTS;
  *rw = *rw < HM_QEMU_9P_MAX_SLOTS ? *rw : HM_QEMU_9P_MAX_SLOTS;
  return 0;
}

char *hm_qemu_opt_escape(const char *value) {
  size_t n = 0;
  for (const char *p = value; *p; p++)
    n += *p == ',' ? 2 : 1;
  char *out = malloc(n + 1), *o = out;
  if (!out)
    return NULL;
  for (const char *p = value; *p; p++) {
    *o++ = *p;
    if (*p == ',')
      *o++ = ',';
  }
  *o = '\0';
  return out;
}

int hm_qemu_config_build_args(char ***out, const hm_qemu_config *cfg, hm_error **err) {
  if (!out || !cfg)
    return HM_ERR(err, HM_E_INVALID, "out and cfg must not be NULL");
  hm_strv v = {0};
  char *dir = hm_qemu_opt_escape(cfg->dir);
  int r = dir ? 0 : HM_E_NOMEM;
  /* vhost-user devices map guest RAM into virtiofsd: it must be a shared fd. */
  r = r ?: hm_strv_push(&v, "-object");
  r = r ?: hm_strv_pushf(&v, "memory-backend-memfd,id=hm-mem,size=%s,share=on", cfg->memory);
  r = r ?: hm_strv_push(&v, "-machine");
  r = r ?: hm_strv_push(&v, "memory-backend=hm-mem");
  /* Spare root ports are the hot-plug slots; 8 functions per PCI slot so 32+
   * fit in a few of the 32 slots of pcie.0, starting at 0x10 to stay clear of
   * the machine's own devices. Each port needs a (chassis, slot) pair of its
   * own: chassis 200+ keeps clear of libvirt-style ports (chassis=N, slot=0)
   * a user may already have. */
  for (unsigned i = 0; !r && i < cfg->slots; i++) {
    r = r ?: hm_strv_push(&v, "-device");
    r = r
            ?: hm_strv_pushf(&v,
                             "pcie-root-port,id=" HM_QEMU_ROOT_PORT_PREFIX
                             "%u,bus=pcie.0,chassis=%u,slot=%u,addr=0x%x.%u%s",
                             i, 200 + i / 32, i % 32, 0x10 + i / 8, i % 8,
                             i % 8 == 0 ? ",multifunction=on" : "");
  }
  /* The agent's port; 9p hot-mounts add more ports to this controller. */
  r = r ?: hm_strv_push(&v, "-device");
  r = r ?: hm_strv_push(&v, "virtio-serial-pci,id=hm-serial,max_ports=128");
  r = r ?: hm_strv_push(&v, "-chardev");
  r = r ?: hm_strv_pushf(&v, "socket,id=hm-agent,path=%s/agent.sock,server=on,wait=off", dir);
  r = r ?: hm_strv_push(&v, "-device");
  r = r
          ?: hm_strv_push(
                 &v, "virtserialport,bus=hm-serial.0,chardev=hm-agent,name=" HM_QEMU_AGENT_PORT);
  /* Reserved 9p slots (see qemu_internal.h): QEMU opens an fsdev's path only
   * when a virtio-9p-pci using it is realized, so each path is a link the
   * backend points at the share just before it plugs the device. */
  for (unsigned k = 0; !r && k < 2 * cfg->ninep_slots; k++) {
    unsigned i = k % cfg->ninep_slots;
    const char *kind = k < cfg->ninep_slots ? "ro" : "rw";
    r = r ?: hm_strv_push(&v, "-fsdev");
    r = r
            ?: hm_strv_pushf(&v,
                             "local,id=" HM_QEMU_9P_FSDEV_PREFIX "%s-%u,path=%s/" HM_QEMU_9P_DIR
                             "/%s-%u,security_model=%s%s",
                             kind, i, dir, kind, i, cfg->ninep_model,
                             k < cfg->ninep_slots ? ",readonly=on" : "");
  }
  if (cfg->ninep_slots) {
    r = r ?: hm_strv_push(&v, "-object");
    r = r
            ?: hm_strv_pushf(&v,
                             "authz-simple,id=" HM_QEMU_9P_MARKER ",identity=ro=%u/rw=%u/model=%s",
                             cfg->ninep_slots, cfg->ninep_slots, cfg->ninep_model);
  }
  r = r ?: hm_strv_push(&v, "-chardev");
  r = r ?: hm_strv_pushf(&v, "socket,id=hm-qmp,path=%s/qmp.sock,server=on,wait=off", dir);
  r = r ?: hm_strv_push(&v, "-mon");
  r = r ?: hm_strv_push(&v, "chardev=hm-qmp,mode=control");
  free(dir);
  if (r < 0) {
    hm_strv_clear(&v);
    return HM_ERR_NOMEM(err);
  }
  *out = hm_strv_steal(&v);
  return 0;
}
