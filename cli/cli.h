/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared by the hotmount verbs: a command table entry, exit codes, helpers. */
#ifndef HM_CLI_H
#define HM_CLI_H

#include <hotmount/hotmount.h>

/* Stable exit codes (documented in hotmount(1)). */
#define EXIT_OK 0
#define EXIT_FAIL 1      /* any other failure */
#define EXIT_USAGE 2     /* bad command line */
#define EXIT_INVALID 3   /* the request was refused as invalid */
#define EXIT_NOT_FOUND 4 /* no such mount */
#define EXIT_CONFLICT 5  /* mount point in use / operation in progress */
#define EXIT_NOT_READY 6 /* daemon, VM or guest agent not reachable */
#define EXIT_NO_SLOT 7   /* no free hot-plug slot */
#define EXIT_TIMEOUT 8   /* the guest did not answer in time */

typedef struct cli_command {
  const char *name;
  const char *synopsis;
  const char *summary;
  int (*run)(int argc, char **argv);
} cli_command;

int cmd_add(int argc, char **argv);
int cmd_remove(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_qemu_args(int argc, char **argv);

/* Prints "hotmount: MESSAGE" and a hint; returns the exit code for err. */
int cli_fail(const hm_error *err);
/* Prints usage of one verb to stderr (or stdout when to_stdout). */
void cli_usage(const char *verb, int to_stdout);
/* Resolves INSTANCE to its directory (see hm_instance_dir_resolve). */
int cli_instance_dir(char **out, const char *instance);
/* Connects a client to INSTANCE's daemon socket. */
int cli_connect(hm_client **out, const char *instance);

#endif
