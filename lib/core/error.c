/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hm_error {
  int code;
  int klass;    /* HM_ECLASS_* */
  char *detail; /* the peer's own class name, or NULL */
  char *message;
};

/* Used when even the error object cannot be allocated. */
static struct hm_error oom_error = {HM_E_NOMEM, HM_ECLASS_OS, NULL, (char *)"out of memory"};

/* The class an error gets when its setter names none: the peer codes say
 * where they come from, HM_E_INVALID is bad input by definition; the rest
 * stays unclassified. */
static int class_of_code(int code) {
  switch (code) {
  case HM_E_INVALID: return HM_ECLASS_INPUT; /* "bad input", by its definition */
  case HM_E_NOMEM: return HM_ECLASS_OS;
  case HM_E_QMP: return HM_ECLASS_QMP;
  case HM_E_AGENT: return HM_ECLASS_AGENT;
  case HM_E_HELPER: return HM_ECLASS_HELPER;
  case HM_E_AUTH: return HM_ECLASS_SSH;
  default: return HM_ECLASS_NONE;
  }
}

static char *vformat(const char *func, const char *fmt, va_list ap) {
  char *body = NULL, *msg = NULL;
  if (vasprintf(&body, fmt, ap) < 0)
    return NULL;
  if (asprintf(&msg, "%s: %s", func, body) < 0)
    msg = NULL;
  free(body);
  return msg;
}

/* Stores a new error in *err (when err is set and *err empty); func NULL:
 * the message is fmt alone. Returns code. */
static int vset(hm_error **err, int code, int klass, const char *detail, const char *func,
                const char *fmt, va_list ap) {
  if (!err || *err)
    return code;
  char *msg = NULL;
  if (func)
    msg = vformat(func, fmt, ap);
  else if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  hm_error *e = msg ? calloc(1, sizeof(*e)) : NULL;
  if (e && detail && !(e->detail = strdup(detail))) {
    free(e);
    e = NULL;
  }
  if (!e) {
    free(msg);
    *err = &oom_error;
    return code;
  }
  e->code = code;
  e->klass = klass > HM_ECLASS_NONE && klass <= HM_ECLASS_LAST ? klass : class_of_code(code);
  e->message = msg;
  *err = e;
  return code;
}

int hm_err_set(hm_error **err, int code, const char *func, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(err, code, HM_ECLASS_NONE, NULL, func, fmt, ap);
  va_end(ap);
  return code;
}

int hm_err_setc(hm_error **err, int code, int klass, const char *detail, const char *func,
                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(err, code, klass, detail, func, fmt, ap);
  va_end(ap);
  return code;
}

#undef hm_error_set /* private.h's literal-format guard */
int hm_error_set(hm_error **err, int code, const char *fmt, ...) {
  if (!fmt)
    fmt = "(no message)";
  va_list ap;
  va_start(ap, fmt);
  int k = class_of_code(code);
  vset(err, code, k ? k : HM_ECLASS_BACKEND, NULL, NULL, fmt, ap);
  va_end(ap);
  return code;
}

int hm_error_set_class(hm_error **err, int code, int klass, const char *detail, const char *fmt,
                       ...) {
  if (!fmt)
    fmt = "(no message)";
  va_list ap;
  va_start(ap, fmt);
  vset(err, code, klass, detail, NULL, fmt, ap);
  va_end(ap);
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
    hm_err_set(err, code, func, "%s", r < 0 ? "(no message)" : ctx);
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

int hm_error_class(const hm_error *err) {
  return err ? err->klass : HM_ECLASS_NONE;
}

const char *hm_error_detail(const hm_error *err) {
  return err ? err->detail : NULL;
}

static const char *const class_names[] = {
    [HM_ECLASS_NONE] = "none",       [HM_ECLASS_INPUT] = "input", [HM_ECLASS_OS] = "os",
    [HM_ECLASS_QMP] = "qmp",         [HM_ECLASS_AGENT] = "agent", [HM_ECLASS_HELPER] = "helper",
    [HM_ECLASS_SSH] = "ssh",         [HM_ECLASS_HTTP] = "http",   [HM_ECLASS_MOUNT] = "mount",
    [HM_ECLASS_BACKEND] = "backend",
};

const char *hm_error_class_name(int klass) {
  return klass >= 0 && klass <= HM_ECLASS_LAST ? class_names[klass] : "none";
}

int hm_error_class_parse(const char *name) {
  for (int k = 0; name && k <= HM_ECLASS_LAST; k++)
    if (strcmp(class_names[k], name) == 0)
      return k;
  return HM_ECLASS_NONE;
}

const char *hm_error_message(const hm_error *err) {
  return err ? err->message : "";
}

void hm_error_free(hm_error *err) {
  if (!err || err == &oom_error)
    return;
  free(err->detail);
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
