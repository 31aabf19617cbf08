/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"
#include "safe_print.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The daemon resolves paths in its own working directory: send absolute ones.
 * Not realpath(): a missing path must reach the daemon to be refused there
 * with the same message every client gets. */
static char *absolute(const char *p) {
  if (p[0] == '/')
    return strdup(p);
  char cwd[PATH_MAX], *out = NULL;
  if (!getcwd(cwd, sizeof(cwd)) || asprintf(&out, "%s/%s", cwd, p) < 0)
    return NULL;
  return out;
}

int cmd_add(int argc, char **argv) {
  static const struct option opts[] = {{"type", required_argument, NULL, 't'},
                                       {"writable", no_argument, NULL, 'w'},
                                       {"persist", no_argument, NULL, 'p'},
                                       {"option", required_argument, NULL, 'o'},
                                       {"notify", no_argument, NULL, 'n'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  hm_mount_spec *spec = NULL;
  hm_client *client = NULL;
  hm_mount *m = NULL;
  hm_error *err = NULL;
  char *host = NULL;
  int rc = EXIT_OK, c;
  if (hm_mount_spec_new(&spec, &err) < 0)
    goto fail;
  optind = 1;
  while ((c = getopt_long(argc, argv, "t:wpno:h", opts, NULL)) != -1) {
    switch (c) {
    case 't': {
      int t = hm_mount_type_parse(optarg, &err);
      if (t < 0 || hm_mount_spec_set_type(spec, t, &err) < 0)
        goto fail;
      break;
    }
    case 'w': hm_mount_spec_set_writable(spec, 1, NULL); break;
    case 'p': hm_mount_spec_set_persist(spec, 1, NULL); break;
    case 'n': hm_mount_spec_set_notify(spec, 1, NULL); break;
    case 'o': {
      char *eq = strchr(optarg, '=');
      if (!eq || eq == optarg) {
        fprintf(stderr, "hotmount: option \"%s\" must be KEY=VALUE\n", cli_safe(optarg));
        rc = EXIT_USAGE;
        goto out;
      }
      *eq = '\0';
      if (hm_mount_spec_set_option(spec, optarg, eq + 1, &err) < 0)
        goto fail;
      break;
    }
    case 'h': cli_usage("add", 1); goto out;
    default:
      cli_usage("add", 0);
      rc = EXIT_USAGE;
      goto out;
    }
  }
  if (argc - optind != 3) {
    cli_usage("add", 0);
    rc = EXIT_USAGE;
    goto out;
  }
  if (!(host = absolute(argv[optind + 1]))) {
    fprintf(stderr, "hotmount: cannot make \"%s\" absolute\n", cli_safe(argv[optind + 1]));
    rc = EXIT_FAIL;
    goto out;
  }
  if (hm_mount_spec_set_host_path(spec, host, &err) < 0 ||
      hm_mount_spec_set_guest_path(spec, argv[optind + 2], &err) < 0)
    goto fail;
  if ((rc = cli_connect(&client, argv[optind])))
    goto out;
  cli_spinner *spin = cli_spinner_start("mounting %s at %s", host, argv[optind + 2]);
  int r = hm_client_add(client, &m, spec, &err);
  cli_spinner_stop(spin);
  if (r < 0)
    goto fail;
  printf("%s mounted at %s (%s, %s, %s%s)\n", cli_safe(hm_mount_get_host_path(m)),
         cli_safe(hm_mount_get_guest_path(m)), cli_safe(hm_mount_get_id(m)),
         hm_mount_type_name(hm_mount_get_type(m)),
         hm_mount_get_writable(m) ? "read-write" : "read-only",
         hm_mount_get_notify(m) ? ", notify" : "");
  goto out;
fail:
  rc = cli_fail(err);
out:
  hm_error_free(err);
  hm_mount_free(m);
  hm_client_free(client);
  hm_mount_spec_free(spec);
  free(host);
  return rc;
}
