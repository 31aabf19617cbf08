/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hotmount: the command-line client of hotmountd (and of qemu-args). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command commands[] = {
    {"add",
     "add INSTANCE HOST_PATH GUEST_PATH [--type virtiofs|9p|reverse-sshfs] [--writable] "
     "[-o KEY=VALUE]...",
     "hot-mount a host directory into the running VM", cmd_add},
    {"remove", "remove INSTANCE GUEST_PATH [--lazy] [--force]",
     "unmount it in the guest and unplug it", cmd_remove},
    {"list", "list INSTANCE [--json]", "show the VM's hot-mounts", cmd_list},
    {"qemu-args", "qemu-args INSTANCE [--slots N] [--memory SIZE]",
     "print the QEMU arguments that make a VM hot-mount ready, one per line", cmd_qemu_args},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f) {
  fprintf(f, "Usage: hotmount COMMAND [ARGS]\n\nCommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nINSTANCE is a name ($HOTMOUNT_HOME/NAME, default ~/.hotmount/NAME) or a "
             "directory path.\nRun 'hotmount COMMAND --help' for a command's options.\n");
}

void cli_usage(const char *verb, int to_stdout) {
  FILE *f = to_stdout ? stdout : stderr;
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i].name, verb) == 0)
      fprintf(f, "Usage: hotmount %s\n%s.\n", commands[i].synopsis, commands[i].summary);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return EXIT_OK;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("hotmount %s (libhotmount %s)\n", HM_VERSION_STRING, hm_version());
    return EXIT_OK;
  }
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i].name, argv[1]) == 0)
      return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "hotmount: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return EXIT_USAGE;
}
