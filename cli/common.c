/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

int cli_fail(const hm_error *err) {
  int code = hm_error_code(err);
  fprintf(stderr, "hotmount: %s\n", hm_error_message(err));
  switch (code) {
  case HM_E_INVALID:
  case HM_E_UNSUPPORTED: return EXIT_INVALID;
  case HM_E_NOT_FOUND: return EXIT_NOT_FOUND;
  case HM_E_EXISTS:
  case HM_E_BUSY: return EXIT_CONFLICT;
  case HM_E_NOT_READY: return EXIT_NOT_READY;
  case HM_E_NO_SLOT: return EXIT_NO_SLOT;
  case HM_E_TIMEOUT: return EXIT_TIMEOUT;
  default: return EXIT_FAIL;
  }
}

int cli_instance_dir(char **out, const char *instance) {
  hm_error *err = NULL;
  if (hm_instance_dir_resolve(out, instance, &err) < 0) {
    int rc = cli_fail(err);
    hm_error_free(err);
    return rc;
  }
  return 0;
}

int cli_connect(hm_client **out, const char *instance) {
  char *dir = NULL, *sock = NULL;
  int rc = cli_instance_dir(&dir, instance);
  if (rc)
    return rc;
  if (asprintf(&sock, "%s/hotmountd.sock", dir) < 0) {
    free(dir);
    return EXIT_FAIL;
  }
  hm_error *err = NULL;
  if (hm_client_new(out, sock, &err) < 0) {
    rc = cli_fail(err);
    hm_error_free(err);
  }
  free(dir);
  free(sock);
  return rc;
}
