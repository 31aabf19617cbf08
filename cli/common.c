/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"
#include "safe_print.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *instance_name;
static char *instance_dir;

const char *cli_instance_name(void) {
  return instance_name ? instance_name : "INSTANCE";
}

int cli_exit_code(int code) {
  switch (code) {
  case 0: return EXIT_OK;
  case HM_E_INVALID:
  case HM_E_UNSUPPORTED: return EXIT_INVALID;
  case HM_E_NOT_FOUND: return EXIT_NOT_FOUND;
  case HM_E_EXISTS:
  case HM_E_BUSY: return EXIT_CONFLICT;
  case HM_E_NOT_READY:
  case HM_E_AUTH: return EXIT_NOT_READY;
  case HM_E_NO_SLOT: return EXIT_NO_SLOT;
  case HM_E_TIMEOUT: return EXIT_TIMEOUT;
  default: return EXIT_FAIL;
  }
}

/* What to do next, for the errors a person can act on. The library's
 * messages say what went wrong; these say which command helps. */
static void hint(const hm_error *err) {
  const char *name = cli_instance_name();
  /* HM_ECLASS_HTTP: about reaching hotmountd or the request itself, not
   * about the VM or a mount. */
  int http = hm_error_class(err) == HM_ECLASS_HTTP;
  switch (hm_error_code(err)) {
  case HM_E_NOT_READY:
    /* The client's own message already names the hotmountd command. */
    if (http)
      break;
    fprintf(stderr,
            "hint: the VM or its guest agent is not reachable; 'hotmount doctor %s' says what is "
            "missing\n",
            name);
    break;
  case HM_E_NO_SLOT:
    fprintf(stderr,
            "hint: every reserved hot-plug slot is in use; remove a mount ('hotmount list %s'), "
            "or restart the VM with more slots: $(hotmount qemu-args %s --slots N)\n",
            name, name);
    break;
  case HM_E_NOT_FOUND:
    /* An unknown URL (a daemon of another version), not a mount. */
    if (http)
      break;
    fprintf(stderr, "hint: 'hotmount list %s' shows what is mounted\n", name);
    break;
  case HM_E_EXISTS:
  case HM_E_BUSY:
    fprintf(stderr, "hint: 'hotmount list %s' shows what uses that mount point\n", name);
    break;
  case HM_E_TIMEOUT:
    fprintf(stderr, "hint: the guest did not answer in time; 'hotmount doctor %s' checks it\n",
            name);
    break;
  case HM_E_PERM:
    fprintf(stderr, "hint: run hotmount as the user that runs hotmountd (or as root)\n");
    break;
  case HM_E_AUTH:
    fprintf(stderr,
            "hint: check the SSH settings given to hotmountd (--ssh-known-hosts or "
            "--ssh-fingerprint, --ssh-identity); they are kept in %s's ssh.json\n",
            name);
    break;
  default: break;
  }
}

int cli_fail(const hm_error *err) {
  /* The most common mistake gets a short message with the exact command,
   * spelt with the instance as the user typed it. */
  if (hm_error_code(err) == HM_E_NOT_READY && hm_error_class(err) == HM_ECLASS_HTTP &&
      instance_name && instance_dir) {
    fprintf(stderr,
            "hotmount: hotmountd is not running for %s (nothing answers on %s/hotmountd.sock)\n"
            "hint: start it with: hotmountd %s\n",
            instance_name, instance_dir, instance_name);
    return EXIT_NOT_READY;
  }
  /* Errors can carry guest text (agent messages, sshfs stderr). */
  fprintf(stderr, "hotmount: %s\n", cli_safe(hm_error_message(err)));
  hint(err);
  return cli_exit_code(hm_error_code(err));
}

int cli_usage_error(const char *verb, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("hotmount: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\n", stderr);
  va_end(ap);
  cli_usage(verb, 0);
  return EXIT_USAGE;
}

int cli_instance_dir(char **out, const char *instance) {
  hm_error *err = NULL;
  instance_name = instance;
  if (hm_instance_dir_resolve(out, instance, &err) < 0) {
    int rc = cli_fail(err);
    hm_error_free(err);
    return rc == EXIT_INVALID ? EXIT_USAGE : rc;
  }
  free(instance_dir);
  instance_dir = strdup(*out);
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
  /* Requests carry host paths and answers are shown as the truth: the
   * daemon's socket must be our own user's or root's, not a symlink or a
   * socket someone else left in a directory they could write to. */
  struct stat st;
  if (lstat(sock, &st) == 0 &&
      (!S_ISSOCK(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0))) {
    fprintf(stderr,
            "hotmount: %s is %s: refusing to talk to it (hotmountd makes it a socket of its own "
            "user in a directory only that user can write)\n",
            sock,
            S_ISLNK(st.st_mode)     ? "a symbolic link"
            : !S_ISSOCK(st.st_mode) ? "not a socket"
                                    : "another user's socket");
    free(dir);
    free(sock);
    return cli_exit_code(HM_E_PERM);
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

char *cli_json_string(const char *s) {
  size_t n = 3;
  for (const char *p = s; *p; p++)
    n += 6;
  char *out = malloc(n), *o = out;
  if (!out)
    return NULL;
  *o++ = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      *o++ = '\\';
      *o++ = (char)*p;
    } else if (*p == '\n') {
      *o++ = '\\';
      *o++ = 'n';
    } else if (*p < 0x20) {
      o += sprintf(o, "\\u%04x", *p);
    } else {
      *o++ = (char)*p;
    }
  }
  *o++ = '"';
  *o = '\0';
  return out;
}
