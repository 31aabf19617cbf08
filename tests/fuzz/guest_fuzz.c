/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for what hotmount-agent parses from the host, past the
 * line decoder (agent_fuzz covers hm_agent_request_decode): a decoded mount
 * or umount request goes through the same checks as in cli/agent/ops.c
 * (port and tag validation, hm_guest_path_normalize/check/quote on the
 * target, hm_guest_mount_build with the host's option string, the 9p data
 * for a relay port or for a virtio-9p-pci tag), without the mount(2)
 * itself. Byte 0 even: the rest is one request line from the host; odd: a
 * /proc/self/mountinfo text as the agent's list and umount read it
 * (hm_guest_mountinfo_parse, both modes). The host may be a compromised
 * daemon: the agent must refuse cleanly, never crash.
 */
#include "agent_proto.h"
#include "guest_mount.h"
#include "guest_path.h"

#include <hotmount/mount.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void path_checks(const char *target) {
  char *norm = NULL, *q = NULL;
  hm_error *err = NULL;
  if (hm_guest_path_normalize(&norm, target, &err) == 0) {
    hm_error *e2 = NULL;
    hm_guest_path_check(norm, &e2);
    hm_error_free(e2);
    /* normal form is a fixed point */
    char *again = NULL;
    if (hm_guest_path_normalize(&again, norm, NULL) < 0 || strcmp(again, norm) != 0)
      abort();
    free(again);
  }
  q = hm_guest_path_quote(target);
  free(q);
  free(norm);
  hm_error_free(err);
}

static void request(const char *line, size_t len) {
  hm_agent_request req;
  memset(&req, 0, sizeof req);
  hm_error *err = NULL;
  if (hm_agent_request_decode(&req, line, len, &err) == 0) {
    if (req.target)
      path_checks(req.target);
    if (req.op == HM_AGENT_OP_MOUNT) {
      int is9p = req.type == HM_TYPE_9P;
      /* 9p without a port: a virtio-9p-pci device mounted by its tag */
      int virtio9p = is9p && !req.port;
      hm_error *e2 = NULL;
      if (!is9p || virtio9p || hm_guest_port_validate(req.port, &e2) == 0) {
        hm_guest_mount_call call;
        memset(&call, 0, sizeof call);
        if (hm_guest_mount_build(&call, req.type, is9p && !req.tag ? req.port : req.tag,
                                 req.readonly, req.options, &e2) == 0) {
          char *d = NULL;
          if (is9p && hm_guest_9p_data(&d, &call, virtio9p ? -1 : 5) == 0)
            free(d);
          hm_guest_mount_call_clear(&call);
        }
      }
      hm_error_free(e2);
      if (req.tag) {
        e2 = NULL;
        hm_guest_tag_validate(req.tag, &e2);
        hm_error_free(e2);
      }
    }
  }
  hm_agent_request_clear(&req);
  hm_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  char *text = malloc(size);
  if (!text)
    return 0;
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  size_t len = size - 1;
  if (memchr(text, '\0', len)) {
    free(text); /* lines and /proc files are read as C strings: no NUL reaches these */
    return 0;
  }
  if (!(data[0] & 1)) {
    request(text, len);
  } else {
    for (int ours = 0; ours <= 1; ours++) {
      hm_agent_mount_info *v = NULL;
      size_t n = 0;
      hm_error *err = NULL;
      if (hm_guest_mountinfo_parse(&v, &n, text, ours, &err) == 0) {
        for (size_t i = 0; i < n; i++)
          if (!v[i].target || !v[i].fstype)
            abort();
        hm_agent_mount_info_free(v, n);
      }
      hm_error_free(err);
    }
  }
  free(text);
  return 0;
}
