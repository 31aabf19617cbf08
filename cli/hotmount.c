/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hotmount: the command-line client of hotmountd (and of qemu-args). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command commands[] = {
    {"add",
     "add INSTANCE HOST_PATH GUEST_PATH [--type virtiofs|9p|reverse-sshfs|bind] [--writable] "
     "[--persist] [--notify] "
     "[-o KEY=VALUE]...",
     "hot-mount a host directory into the running VM (read-only unless --writable)", cmd_add},
    {"remove", "remove INSTANCE GUEST_PATH [--lazy] [--force]",
     "unmount it in the guest and unplug it", cmd_remove},
    {"list", "list INSTANCE [--json]", "show the VM's hot-mounts", cmd_list},
    {"status", "status INSTANCE [--json]",
     "show the daemon, QEMU, agent, free slots and the transports this host can serve", cmd_status},
    {"doctor", "doctor INSTANCE [--json]",
     "check a running VM for hot-mount readiness and say what to add to its QEMU command line",
     cmd_doctor},
    {"qemu-args",
     "qemu-args INSTANCE [--slots N] [--memory SIZE] [--9p-slots N] [--9p-security MODEL]",
     "print the QEMU arguments that make a VM hot-mount ready, one per line", cmd_qemu_args},
    {"accel", "accel [--kernel KERNEL] [--qemu QEMU] [--timeout S] [--json]",
     "print the accelerator for QEMU here, kvm only when KVM booted KERNEL (else tcg); "
     "HOTMOUNT_ACCEL=kvm|tcg overrides",
     cmd_accel},
    {"help", "help [COMMAND]", "show the commands, or one command's usage", cmd_help},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f) {
  fprintf(f, "Usage: hotmount COMMAND [ARGS]\n\nCommands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nINSTANCE is a name ($HOTMOUNT_HOME/NAME, default ~/.hotmount/NAME) or a "
             "directory path.\nRun 'hotmount help COMMAND' or 'hotmount COMMAND --help' for a "
             "command's options;\nexit codes are listed in hotmount(1).\n");
}

int cli_usage(const char *verb, int to_stdout) {
  FILE *f = to_stdout ? stdout : stderr;
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i].name, verb) == 0) {
      fprintf(f, "Usage: hotmount %s\n%c%s.\n", commands[i].synopsis,
              commands[i].summary[0] - 'a' + 'A', commands[i].summary + 1);
      return 0;
    }
  return -1;
}

int cmd_help(int argc, char **argv) {
  if (argc < 2) {
    usage(stdout);
    return EXIT_OK;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    cli_usage("help", 1);
    return EXIT_OK;
  }
  if (argc > 2)
    return cli_usage_error("help", "too many arguments");
  if (cli_usage(argv[1], 1) < 0) {
    fprintf(stderr, "hotmount: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
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
