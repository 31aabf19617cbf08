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
#define EXIT_CHECK 9     /* doctor: at least one readiness check failed */

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
int cmd_status(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_accel(int argc, char **argv);
int cmd_help(int argc, char **argv);

/* Prints "hotmount: MESSAGE" and a hint on what to do next (naming the
 * instance given to cli_connect / cli_instance_dir); returns the exit code. */
int cli_fail(const hm_error *err);
/* The exit code for an error code, printing nothing. */
int cli_exit_code(int code);
/* Prints usage of one verb to stderr (or stdout when to_stdout); 0 when the
 * verb exists. */
int cli_usage(const char *verb, int to_stdout);
/* Prints the usage of verb and returns EXIT_USAGE (for bad command lines). */
int cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Resolves INSTANCE to its directory (see hm_instance_dir_resolve). */
int cli_instance_dir(char **out, const char *instance);
/* Connects a client to INSTANCE's daemon socket. */
int cli_connect(hm_client **out, const char *instance);
/* The INSTANCE argument as the user typed it (for hints), or "INSTANCE". */
const char *cli_instance_name(void);

/* s as a JSON string literal, quotes included; malloc'd (NULL on OOM). */
char *cli_json_string(const char *s);

/*
 * A progress line on stderr while a blocking call runs: a spinner, the
 * message and the seconds waited, redrawn every 100 ms by a thread, erased
 * when stopped. Only when stderr is a terminal; otherwise nothing at all.
 */
typedef struct cli_spinner cli_spinner;
cli_spinner *cli_spinner_start(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_spinner_stop(cli_spinner *s); /* accepts NULL */

#endif
