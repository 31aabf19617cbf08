/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "private.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int valid_name(const char *n) {
  size_t len = strlen(n);
  if (len == 0 || len > 64 || !strcmp(n, ".") || !strcmp(n, ".."))
    return 0;
  for (const char *p = n; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '.' || *p == '_' || *p == '-'))
      return 0;
  return 1;
}

int hm_instance_dir_resolve(char **out, const char *name_or_path, hm_error **err) {
  if (!out || !name_or_path)
    return HM_ERR(err, HM_E_INVALID, "out and name_or_path must not be NULL");
  if (strchr(name_or_path, '/')) {
    /* Sockets live here: sun_path is 108 bytes, leave room for the names. */
    if (strlen(name_or_path) > 80)
      return HM_ERR(err, HM_E_INVALID,
                    "instance directory \"%s\" is too long for unix socket paths (max 80 bytes)",
                    name_or_path);
    if (strpbrk(name_or_path, "\n\r\t"))
      return HM_ERR(err, HM_E_INVALID, "instance directory contains a control character");
    return (*out = strdup(name_or_path)) ? 0 : HM_ERR_NOMEM(err);
  }
  if (!valid_name(name_or_path))
    return HM_ERR(err, HM_E_INVALID,
                  "instance name \"%s\" is not valid: use 1-64 of A-Z a-z 0-9 . _ - "
                  "(or give a directory path containing '/')",
                  name_or_path);
  const char *home = getenv("HOTMOUNT_HOME");
  char *base = NULL;
  if (home && *home) {
    base = strdup(home);
  } else {
    const char *h = getenv("HOME");
    if (!h || !*h) {
      struct passwd *pw = getpwuid(getuid());
      h = pw ? pw->pw_dir : NULL;
    }
    if (!h)
      return HM_ERR(err, HM_E_INVALID, "cannot find the home directory; set HOTMOUNT_HOME");
    if (asprintf(&base, "%s/.hotmount", h) < 0)
      base = NULL;
  }
  if (!base || asprintf(out, "%s/%s", base, name_or_path) < 0) {
    free(base);
    return HM_ERR_NOMEM(err);
  }
  free(base);
  if (strlen(*out) > 80) {
    int r = HM_ERR(err, HM_E_INVALID,
                   "instance directory \"%s\" is too long for unix socket paths (max 80 bytes); "
                   "set a shorter HOTMOUNT_HOME",
                   *out);
    free(*out);
    *out = NULL;
    return r;
  }
  return 0;
}
