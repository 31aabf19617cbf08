/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hm_error {
  int code;
  char *message;
};

/* Used when even the error object cannot be allocated. */
static struct hm_error oom_error = {HM_E_NOMEM, (char *)"out of memory"};

static char *vformat(const char *func, const char *fmt, va_list ap) {
  char *body = NULL, *msg = NULL;
  if (vasprintf(&body, fmt, ap) < 0)
    return NULL;
  if (asprintf(&msg, "%s: %s", func, body) < 0)
    msg = NULL;
  free(body);
  return msg;
}

int hm_error_set(hm_error **err, int code, const char *func, const char *fmt, ...) {
  if (!err || *err)
    return code;
  va_list ap;
  va_start(ap, fmt);
  char *msg = vformat(func, fmt, ap);
  va_end(ap);
  hm_error *e = msg ? malloc(sizeof(*e)) : NULL;
  if (!e) {
    free(msg);
    *err = &oom_error;
    return code;
  }
  e->code = code;
  e->message = msg;
  *err = e;
  return code;
}

int hm_error_prefix(hm_error **err, int code, const char *func, const char *fmt, ...) {
  if (!err)
    return code;
  if (!*err || *err == &oom_error) {
    /* Nothing to prefix: make a fresh error from the context alone. */
    if (*err == &oom_error)
      *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = NULL;
    int r = vasprintf(&ctx, fmt, ap);
    va_end(ap);
    hm_error_set(err, code, func, "%s", r < 0 ? "(no message)" : ctx);
    free(ctx);
    return code;
  }
  va_list ap;
  va_start(ap, fmt);
  char *ctx = vformat(func, fmt, ap);
  va_end(ap);
  char *msg = NULL;
  if (ctx && asprintf(&msg, "%s: %s", ctx, (*err)->message) >= 0) {
    free((*err)->message);
    (*err)->message = msg;
  }
  free(ctx);
  (*err)->code = code;
  return code;
}

int hm_error_code(const hm_error *err) {
  return err ? err->code : 0;
}

const char *hm_error_message(const hm_error *err) {
  return err ? err->message : "";
}

void hm_error_free(hm_error *err) {
  if (!err || err == &oom_error)
    return;
  free(err->message);
  free(err);
}

const char *hm_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case HM_E_INVALID: return "invalid argument";
  case HM_E_NOMEM: return "out of memory";
  case HM_E_EXISTS: return "mount point already in use";
  case HM_E_NOT_FOUND: return "no such mount";
  case HM_E_NO_SLOT: return "no free hot-plug slot";
  case HM_E_NOT_READY: return "VM or guest agent not reachable";
  case HM_E_TIMEOUT: return "timed out";
  case HM_E_IO: return "input/output error";
  case HM_E_PERM: return "operation not permitted";
  case HM_E_UNSUPPORTED: return "not supported by this backend or host";
  case HM_E_BUSY: return "another operation is in progress on this mount";
  case HM_E_PROTOCOL: return "protocol error";
  case HM_E_QMP: return "QEMU refused the command";
  case HM_E_AGENT: return "guest agent reported a failure";
  case HM_E_HELPER: return "helper process failed";
  case HM_E_INTERNAL: return "internal error";
  case HM_E_AUTH: return "authentication failed";
  default: return code < 0 && code > -4096 ? strerror(-code) : "unknown error";
  }
}
