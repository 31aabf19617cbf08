/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hotmount accel: which accelerator to give QEMU here, kvm or tcg, by proof. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_accel(int argc, char **argv) {
  static const struct option opts[] = {
      {"kernel", required_argument, NULL, 'k'},  {"qemu", required_argument, NULL, 'q'},
      {"timeout", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
  const char *kernel = NULL, *qemu = getenv("HM_QEMU");
  unsigned timeout_ms = 0;
  int json = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "k:q:t:jh", opts, NULL)) != -1) {
    switch (c) {
    case 'k': kernel = optarg; break;
    case 'q': qemu = optarg; break;
    case 't': {
      char *end;
      double s = strtod(optarg, &end);
      if (*end || end == optarg || !(s > 0 && s <= 600))
        return cli_usage_error("accel", "--timeout takes seconds (0 < S <= 600), not \"%s\"",
                               optarg);
      timeout_ms = (unsigned)(s * 1000);
      break;
    }
    case 'j': json = 1; break;
    case 'h': cli_usage("accel", 1); return EXIT_OK;
    default: cli_usage("accel", 0); return EXIT_USAGE;
    }
  }
  if (argc != optind)
    return cli_usage_error("accel", "unexpected argument \"%s\"", argv[optind]);
  hm_status *st = NULL;
  hm_error *err = NULL;
  if (hm_qemu_accel_choose(&st, qemu, kernel, timeout_ms, &err) < 0) {
    int rc = cli_fail(err);
    hm_error_free(err);
    return rc;
  }
  int rc = EXIT_OK;
  if (json) {
    char *text = NULL;
    if (hm_status_to_json(&text, st, &err) < 0) {
      rc = cli_fail(err);
      hm_error_free(err);
    } else {
      printf("%s\n", text);
      free(text);
    }
  } else {
    /* stdout: the bare word, for `-accel $(hotmount accel ...)`; the why on
     * stderr, for the log. */
    printf("%s\n", hm_status_get(st, "accel"));
    fprintf(stderr, "hotmount: accelerator %s (%s: %s)\n", hm_status_get(st, "accel"),
            hm_status_get(st, "source"), hm_status_get(st, "reason"));
  }
  hm_status_free(st);
  return rc;
}
