/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"
#include "safe_print.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int cmd_list(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int json = 0, c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = 1; break;
    case 'h': cli_usage("list", 1); return EXIT_OK;
    default: cli_usage("list", 0); return EXIT_USAGE;
    }
  }
  if (argc - optind != 1) {
    cli_usage("list", 0);
    return EXIT_USAGE;
  }
  hm_client *client = NULL;
  hm_mount_list *l = NULL;
  hm_error *err = NULL;
  char *text = NULL;
  if ((rc = cli_connect(&client, argv[optind])))
    return rc;
  if (hm_client_list(client, &l, &err) < 0)
    goto fail;
  if (json) {
    if (hm_mount_list_to_json(&text, l, &err) < 0)
      goto fail;
    char *safe = cli_json_safe(text);
    printf("%s\n", safe ? safe : "null");
    free(safe);
  } else if (hm_mount_list_count(l) == 0) {
    printf("no hot-mounts\n");
  } else {
    printf("%-8s %-10s %-13s %-3s %-30s %s\n", "ID", "STATE", "TYPE", "RW", "MOUNT POINT",
           "HOST PATH");
    for (size_t i = 0; i < hm_mount_list_count(l); i++) {
      const hm_mount *m = hm_mount_list_get(l, i);
      /* TYPE shows how the backend carries it when it says ("9p/pci"). */
      char type[32];
      const char *via = hm_mount_get_via(m);
      snprintf(type, sizeof(type), "%s%s%s", hm_mount_type_name(hm_mount_get_type(m)),
               via ? "/" : "", via ? via : "");
      /* Targets and reasons may come from the guest: escaped. */
      printf("%-8s %-10s %-13s %-3s %-30s %s\n", cli_safe(hm_mount_get_id(m)),
             hm_mount_state_name(hm_mount_get_state(m)), cli_safe(type),
             hm_mount_get_writable(m) ? "rw" : "ro", cli_safe(hm_mount_get_guest_path(m)),
             cli_safe(hm_mount_get_host_path(m)));
      if (hm_mount_get_notify(m))
        printf("         notify: host changes shown to guest file watchers\n");
      if (hm_mount_get_reason(m))
        printf("         reason: %s\n", cli_safe(hm_mount_get_reason(m)));
    }
  }
  goto out;
fail:
  rc = cli_fail(err);
out:
  free(text);
  hm_error_free(err);
  hm_mount_list_free(l);
  hm_client_free(client);
  return rc;
}
