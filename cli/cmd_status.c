/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hotmount status: the daemon's GET /v1/status, readable or as JSON. */
#include "cli.h"
#include "safe_print.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every value printed goes through here: some come from the guest (the
 * agent's version), so they are escaped. */
static const char *get(const hm_status *st, const char *key) {
  const char *v = hm_status_get(st, key);
  return v ? cli_safe(v) : "";
}

static int is_true(const hm_status *st, const char *key) {
  return strcmp(get(st, key), "true") == 0;
}

/* Which transports this host can serve, and what is missing for the rest. */
static void print_transports(const hm_status *st) {
  const char *vfs = get(st, "virtiofsd"), *ro = get(st, "virtiofsdReadonly");
  printf("transports on this host:\n");
  if (*vfs)
    printf("  %-14s yes: %s virtiofsd %s; read-only %s\n", "virtiofs",
           !strcmp(get(st, "virtiofsdFlavor"), "rust") ? "Rust" : "QEMU's C", vfs,
           !strcmp(ro, "option") ? "by its --readonly"
           : !strcmp(ro, "bind") ? "by a read-only bind mount"
                                 : "cannot be enforced (run hotmountd as root, or use the Rust "
                                   "virtiofsd >= 1.13)");
  else
    printf("  %-14s no: virtiofsd not found (install it, or hotmountd --virtiofsd PATH)\n",
           "virtiofs");
  if (*get(st, "diod"))
    printf("  %-14s yes: diod at %s\n", "9p", get(st, "diod"));
  else
    printf("  %-14s no: needs diod (Debian: apt install diod)\n", "9p");
  if (*get(st, "sftpServer"))
    printf("  %-14s yes: sftp-server at %s\n", "reverse-sshfs", get(st, "sftpServer"));
  else
    printf("  %-14s no: needs sftp-server (Debian: apt install openssh-sftp-server)\n",
           "reverse-sshfs");
  if (atol(get(st, "bootShares")) > 0)
    printf("  %-14s yes: %s boot-time share(s) declared\n", "bind", get(st, "bootShares"));
  else
    printf("  %-14s no: no boot-time share declared (hotmountd --boot-share HOSTDIR=GUESTDIR)\n",
           "bind");
}

static void print_human(const hm_status *st) {
  static const char *const shown[] = {"version",
                                      "instance",
                                      "backend",
                                      "mounts",
                                      "mountsBroken",
                                      "agent",
                                      "agentVersion",
                                      "diod",
                                      "sftpServer",
                                      "qmp",
                                      "slotsTotal",
                                      "slotsFree",
                                      "memoryShared",
                                      "agentChannel",
                                      "virtiofsd",
                                      "virtiofsdFlavor",
                                      "virtiofsdReadonly",
                                      "ninepSlotsReadOnly",
                                      "ninepSlotsWritable",
                                      "ninepSlotsReadOnlyFree",
                                      "ninepSlotsWritableFree",
                                      "ninepSlotsModel",
                                      NULL};
  printf("%-12s running (libhotmount %s)\n", "hotmountd", get(st, "version"));
  printf("%-12s %s\n", "instance", get(st, "instance"));
  printf("%-12s %s, QMP %s\n", "backend", get(st, "backend"),
         *get(st, "qmp") ? get(st, "qmp") : "n/a");
  printf("%-12s %s (%s broken)\n", "mounts", get(st, "mounts"),
         *get(st, "mountsBroken") ? get(st, "mountsBroken") : "0");
  if (*get(st, "slotsTotal"))
    printf("%-12s %s free of %s\n", "slots", get(st, "slotsFree"), get(st, "slotsTotal"));
  if (*get(st, "ninepSlotsReadOnly")) {
    if (!strcmp(get(st, "ninepSlotsReadOnly"), "0") && !strcmp(get(st, "ninepSlotsWritable"), "0"))
      printf("%-12s none reserved (9p goes over virtio-serial; hotmount qemu-args --9p-slots N)\n",
             "9p slots");
    else
      printf("%-12s read-only %s free of %s, writable %s free of %s (%s)\n", "9p slots",
             get(st, "ninepSlotsReadOnlyFree"), get(st, "ninepSlotsReadOnly"),
             get(st, "ninepSlotsWritableFree"), get(st, "ninepSlotsWritable"),
             cli_safe(get(st, "ninepSlotsModel")));
  }
  if (*get(st, "agentVersion"))
    printf("%-12s %s (%s)\n", "agent", get(st, "agent"), get(st, "agentVersion"));
  else
    printf("%-12s %s%s\n", "agent", get(st, "agent"),
           !strcmp(get(st, "agent"), "unknown") ? " (not contacted yet; the first add connects)"
                                                : "");
  if (hm_status_get(st, "memoryShared"))
    printf("%-12s %s\n", "memory",
           is_true(st, "memoryShared") ? "shared" : "NOT shared (see hotmount doctor)");
  if (hm_status_get(st, "agentChannel"))
    printf("%-12s %s\n", "agent port",
           is_true(st, "agentChannel") ? "present" : "MISSING (see hotmount doctor)");
  /* Facts this CLI does not know yet still get shown. */
  for (size_t i = 0; i < hm_status_count(st); i++) {
    const char *k = hm_status_key(st, i);
    int known = 0;
    for (const char *const *s = shown; *s && !known; s++)
      known = !strcmp(*s, k);
    if (!known)
      printf("%-12s %s\n", cli_safe(k), cli_safe(hm_status_value(st, i)));
  }
  print_transports(st);
}

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int json = 0, c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = 1; break;
    case 'h': cli_usage("status", 1); return EXIT_OK;
    default: cli_usage("status", 0); return EXIT_USAGE;
    }
  }
  if (argc - optind != 1)
    return cli_usage_error("status", "status takes exactly one INSTANCE");
  hm_client *client = NULL;
  hm_status *st = NULL;
  hm_error *err = NULL;
  char *text = NULL;
  if ((rc = cli_connect(&client, argv[optind])))
    return rc;
  /* status is for a quick look: do not hang on a wedged daemon. */
  hm_client_set_timeout(client, 15000, NULL);
  if (hm_client_status(client, &st, &err) < 0) {
    if (json) {
      /* Scripts get an answer on stdout too, and the exit code. */
      char *msg = cli_json_string(cli_safe(hm_error_message(err)));
      printf("{\"daemon\":\"%s\",\"error\":%s}\n",
             hm_error_code(err) == HM_E_NOT_READY ? "not running" : "error", msg ? msg : "\"\"");
      free(msg);
    }
    rc = cli_fail(err);
    goto out;
  }
  if (json) {
    if (hm_status_to_json(&text, st, &err) < 0) {
      rc = cli_fail(err);
      goto out;
    }
    /* The daemon's object, with whether it answered first. */
    char *safe = cli_json_safe(text);
    if (!safe) {
      rc = EXIT_FAIL;
      goto out;
    }
    printf("{\"daemon\":\"running\"%s%s\n", strcmp(safe, "{}") ? "," : "", safe + 1);
    free(safe);
  } else {
    print_human(st);
  }
out:
  free(text);
  hm_status_free(st);
  hm_error_free(err);
  hm_client_free(client);
  return rc;
}
