/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"
#include "safe_print.h"

#include <getopt.h>
#include <stdio.h>

int cmd_remove(int argc, char **argv) {
  static const struct option opts[] = {{"lazy", no_argument, NULL, 'l'},
                                       {"force", no_argument, NULL, 'f'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  unsigned flags = 0;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "lfh", opts, NULL)) != -1) {
    switch (c) {
    case 'l': flags |= HM_REMOVE_LAZY; break;
    case 'f': flags |= HM_REMOVE_FORCE; break;
    case 'h': cli_usage("remove", 1); return EXIT_OK;
    default: cli_usage("remove", 0); return EXIT_USAGE;
    }
  }
  if (argc - optind != 2) {
    cli_usage("remove", 0);
    return EXIT_USAGE;
  }
  hm_client *client = NULL;
  hm_error *err = NULL;
  if ((rc = cli_connect(&client, argv[optind])))
    return rc;
  cli_spinner *spin = cli_spinner_start("unmounting %s", argv[optind + 1]);
  int r = hm_client_remove(client, argv[optind + 1], flags, &err);
  cli_spinner_stop(spin);
  if (r < 0)
    rc = cli_fail(err);
  else
    printf("removed %s\n", cli_safe(argv[optind + 1]));
  hm_error_free(err);
  hm_client_free(client);
  return rc;
}
