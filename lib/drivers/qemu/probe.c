/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Readiness probe of a running VM without a daemon (`hotmount doctor`): asks
 * QEMU, through a QMP connection of our own, whether what `qemu-args` sets up
 * is there. Separate from the backend on purpose: the backend keeps one QMP
 * connection for its lifetime, and this must work when there is no backend.
 */
#include "agent_client.h"
#include "qemu_internal.h"
#include "qmp.h"
#include "status_internal.h"
#include "userns.h"
#include "virtiofsd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A QEMU already talking to someone else (hotmountd) accepts the connection
 * but sends no greeting until that client leaves: do not wait long. */
#define PROBE_QMP_TIMEOUT_MS 3000
#define PROBE_AGENT_TIMEOUT_MS 2000

/* Runs cmd with one "path" (and optional "property") argument. */
static int qom(hm_qmp *qmp, const char *cmd, const char *path, const char *property,
               json_object **ret) {
  json_object *args = json_object_new_object();
  if (!args)
    return HM_E_NOMEM;
  json_object_object_add(args, "path", json_object_new_string(path));
  if (property)
    json_object_object_add(args, "property", json_object_new_string(property));
  int r = hm_qmp_execute(qmp, cmd, args, -1, ret, PROBE_QMP_TIMEOUT_MS, NULL);
  json_object_put(args);
  return r;
}

static const char *member_string(json_object *o, const char *key) {
  json_object *v;
  return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* The facts that need QEMU. Missing answers leave keys out rather than guess. */
static int probe_qemu(hm_status *st, hm_qmp *qmp, const char *dir, int *port_open) {
  json_object *ret = NULL;
  int r = 0;
  if (hm_qmp_execute(qmp, "query-version", NULL, -1, &ret, PROBE_QMP_TIMEOUT_MS, NULL) == 0) {
    json_object *q;
    if (json_object_object_get_ex(ret, "qemu", &q))
      r = r
              ?: hm_status_setf(st, "qemuVersion", "%s.%s.%s", member_string(q, "major"),
                                member_string(q, "minor"), member_string(q, "micro"));
    json_object_put(ret);
    ret = NULL;
  }
  if (qom(qmp, "qom-get", "/machine", "type", &ret) == 0) {
    r = r ?: hm_status_setf(st, "machineType", "%s", json_object_get_string(ret));
    json_object_put(ret);
    ret = NULL;
  }
  /* vhost-user maps the guest's RAM, so the machine's own RAM backend must be
   * shared; a shared memdev that is not the machine's RAM does not help. */
  if (qom(qmp, "qom-get", "/machine", "memory-backend", &ret) == 0) {
    const char *backend = json_object_get_string(ret);
    json_object *share = NULL;
    r = r ?: hm_status_setf(st, "memoryBackend", "%s", backend ? backend : "");
    if (backend && *backend && qom(qmp, "qom-get", backend, "share", &share) == 0)
      r = r
              ?: hm_status_setf(st, "memoryShared", "%s",
                                json_object_get_boolean(share) ? "true" : "false");
    json_object_put(share);
    json_object_put(ret);
    ret = NULL;
  }
  if (hm_qmp_execute(qmp, "query-memory-size-summary", NULL, -1, &ret, PROBE_QMP_TIMEOUT_MS,
                     NULL) == 0) {
    json_object *v;
    if (json_object_object_get_ex(ret, "base-memory", &v))
      r = r ?: hm_status_setf(st, "memorySize", "%lld", (long long)json_object_get_int64(v));
    json_object_put(ret);
    ret = NULL;
  }
  if (qom(qmp, "qom-list", "/machine/peripheral", NULL, &ret) == 0) {
    int slots = 0, serial = 0;
    size_t plen = strlen(HM_QEMU_ROOT_PORT_PREFIX);
    size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;
    for (size_t i = 0; i < n; i++) {
      json_object *item = json_object_array_get_idx(ret, i);
      const char *name = member_string(item, "name"), *type = member_string(item, "type");
      if (!name || !type)
        continue;
      if (!strcmp(type, "child<pcie-root-port>") && !strncmp(name, HM_QEMU_ROOT_PORT_PREFIX, plen))
        slots++;
      if (!strcmp(name, "hm-serial") && !strcmp(type, "child<virtio-serial-pci>"))
        serial = 1;
    }
    r = r ?: hm_status_setf(st, "slotsTotal", "%d", slots);
    r = r ?: hm_status_setf(st, "virtioSerial", "%s", serial ? "true" : "false");
    json_object_put(ret);
    ret = NULL;
  }
  /* Reserved 9p slots: the marker object qemu-args adds says how many. */
  if (qom(qmp, "qom-list", "/objects", NULL, &ret) == 0) {
    unsigned ro = 0, rw = 0;
    char model[32] = "";
    json_object *id = NULL;
    if (hm_qmp_reply_has(ret, "name", HM_QEMU_9P_MARKER) &&
        qom(qmp, "qom-get", "/objects/" HM_QEMU_9P_MARKER, "identity", &id) == 0)
      hm_qemu_9p_identity_parse(json_object_get_string(id), &ro, &rw, model);
    r = r ?: hm_status_setf(st, "ninepSlotsReadOnly", "%u", ro);
    r = r ?: hm_status_setf(st, "ninepSlotsWritable", "%u", rw);
    if (ro || rw)
      r = r ?: hm_status_setf(st, "ninepSlotsModel", "%s", model);
    json_object_put(id);
    json_object_put(ret);
    ret = NULL;
  }
  /* frontend-open: something in the guest holds the agent's port open. */
  if (hm_qmp_execute(qmp, "query-chardev", NULL, -1, &ret, PROBE_QMP_TIMEOUT_MS, NULL) == 0) {
    int found = 0;
    size_t n = json_object_is_type(ret, json_type_array) ? json_object_array_length(ret) : 0;
    for (size_t i = 0; i < n && !found; i++) {
      json_object *item = json_object_array_get_idx(ret, i), *open;
      const char *label = member_string(item, "label"), *file = member_string(item, "filename");
      if (!label || strcmp(label, "hm-agent") != 0)
        continue;
      found = 1;
      *port_open =
          json_object_object_get_ex(item, "frontend-open", &open) && json_object_get_boolean(open);
      /* The daemon looks for the agent at INSTANCE/agent.sock only. */
      char *want = NULL;
      if (asprintf(&want, "%s/agent.sock", dir) < 0)
        want = NULL;
      if (file && want && !strstr(file, want))
        r = r ?: hm_status_setf(st, "agentChannelPath", "%s", file);
      free(want);
    }
    r = r ?: hm_status_setf(st, "agentChannel", "%s", found ? "true" : "false");
    if (found)
      r = r ?: hm_status_setf(st, "agentPortOpen", "%s", *port_open ? "true" : "false");
    json_object_put(ret);
  }
  return r;
}

static int probe_agent(hm_status *st, const char *dir) {
  char *path = NULL;
  hm_agent *a = NULL;
  hm_error *e = NULL;
  if (asprintf(&path, "%s/agent.sock", dir) < 0)
    return HM_E_NOMEM;
  int r;
  if (hm_agent_connect(&a, path, PROBE_AGENT_TIMEOUT_MS, &e) == 0) {
    r = hm_status_setf(st, "agent", "connected");
    if (r == 0 && hm_agent_get_version(a))
      r = hm_status_setf(st, "agentVersion", "%s", hm_agent_get_version(a));
  } else {
    r = hm_status_setf(st, "agent", "unreachable");
    r = r ?: hm_status_setf(st, "agentError", "%s", hm_error_message(e));
  }
  hm_agent_free(a);
  hm_error_free(e);
  free(path);
  return r;
}

static int probe_virtiofsd(hm_status *st, const char *explicit_path) {
  hm_virtiofsd_info vfs = {0};
  hm_error *e = NULL;
  int r, confinable = hm_userns_status(st);
  if (hm_virtiofsd_detect(&vfs, explicit_path, &e) == 0) {
    r = hm_status_setf(st, "virtiofsd", "%s", vfs.path);
    r = r
            ?: hm_status_setf(st, "virtiofsdFlavor", "%s",
                              vfs.flavor == HM_VIRTIOFSD_RUST ? "rust" : "c");
    /* Without --readonly, read-only needs a bind mount in virtiofsd's own
     * mount namespace: root's, or one in a user namespace (userns.h). */
    r = r
            ?: hm_status_setf(st, "virtiofsdReadonly", "%s",
                              vfs.has_readonly ? "option"
                              : geteuid() == 0 ? "bind"
                              : confinable     ? "userns"
                                               : "unavailable");
  } else {
    r = hm_status_setf(st, "virtiofsd", "%s", "");
    r = r ?: hm_status_setf(st, "virtiofsdError", "%s", hm_error_message(e));
  }
  hm_virtiofsd_info_clear(&vfs);
  hm_error_free(e);
  return r;
}

int hm_qemu_probe(hm_status **out, const hm_qemu_config *cfg, hm_error **err) {
  if (!out || !cfg)
    return HM_ERR(err, HM_E_INVALID, "out and cfg must not be NULL");
  hm_status *st = NULL;
  hm_qmp *qmp = NULL;
  hm_error *e = NULL;
  char *path = NULL;
  int port_open = 0, r;
  if (hm_status_new(&st) < 0 || asprintf(&path, "%s/qmp.sock", cfg->dir) < 0) {
    hm_status_free(st);
    return HM_ERR_NOMEM(err);
  }
  if (hm_qmp_connect(&qmp, path, PROBE_QMP_TIMEOUT_MS, &e) == 0) {
    r = hm_status_setf(st, "qmp", "connected");
    r = r ?: probe_qemu(st, qmp, cfg->dir, &port_open);
  } else {
    r = hm_status_setf(st, "qmp", "unreachable");
    r = r ?: hm_status_setf(st, "qmpError", "%s", hm_error_message(e));
  }
  hm_qmp_free(qmp);
  hm_error_free(e);
  free(path);
  /* A port nobody opened in the guest would only make us wait for nothing. */
  if (r == 0 && port_open)
    r = probe_agent(st, cfg->dir);
  else if (r == 0 && hm_status_get(st, "agentChannel"))
    r = hm_status_setf(st, "agent", "not running");
  r = r ?: probe_virtiofsd(st, cfg->virtiofsd);
  if (r < 0) {
    hm_status_free(st);
    return HM_ERR_NOMEM(err);
  }
  *out = st;
  return 0;
}
