/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir -p with mode 0700 for the directories we create: the instance
 * directory holds sockets that give control over the VM. */
static int mkdirs(const char *path) {
  char *p = strdup(path);
  if (!p)
    return -1;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(p, 0700) < 0 && errno != EEXIST) {
      free(p);
      return -1;
    }
    *s = '/';
  }
  int r = mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
  free(p);
  return r;
}

int cmd_qemu_args(int argc, char **argv) {
  static const struct option opts[] = {
      {"slots", required_argument, NULL, 's'},    {"memory", required_argument, NULL, 'm'},
      {"9p-slots", required_argument, NULL, 'p'}, {"9p-security", required_argument, NULL, 'S'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  const char *slots = NULL, *memory = NULL, *p9slots = NULL, *p9sec = NULL;
  int c, rc = EXIT_OK;
  optind = 1;
  while ((c = getopt_long(argc, argv, "s:m:h", opts, NULL)) != -1) {
    switch (c) {
    case 's': slots = optarg; break;
    case 'm': memory = optarg; break;
    case 'p': p9slots = optarg; break;
    case 'S': p9sec = optarg; break;
    case 'h': cli_usage("qemu-args", 1); return EXIT_OK;
    default: cli_usage("qemu-args", 0); return EXIT_USAGE;
    }
  }
  if (argc - optind != 1) {
    cli_usage("qemu-args", 0);
    return EXIT_USAGE;
  }
  char *dir = NULL, **args = NULL;
  hm_qemu_config *cfg = NULL;
  hm_error *err = NULL;
  if ((rc = cli_instance_dir(&dir, argv[optind])))
    return rc;
  if (hm_qemu_config_new(&cfg, dir, &err) < 0)
    goto fail;
  if (slots) {
    char *end;
    unsigned long n = strtoul(slots, &end, 10);
    if (*end || end == slots || n > 100000) {
      fprintf(stderr, "hotmount: --slots takes a number, not \"%s\"\n", slots);
      rc = EXIT_USAGE;
      goto out;
    }
    if (hm_qemu_config_set_slots(cfg, (unsigned)n, &err) < 0)
      goto fail;
  }
  if (p9slots) {
    char *end;
    unsigned long n = strtoul(p9slots, &end, 10);
    if (*end || end == p9slots || n > 100000) {
      fprintf(stderr, "hotmount: --9p-slots takes a number, not \"%s\"\n", p9slots);
      rc = EXIT_USAGE;
      goto out;
    }
    if (hm_qemu_config_set_9p_slots(cfg, (unsigned)n, &err) < 0)
      goto fail;
  }
  if (p9sec && hm_qemu_config_set_9p_security(cfg, p9sec, &err) < 0)
    goto fail;
  if (memory && hm_qemu_config_set_memory(cfg, memory, &err) < 0)
    goto fail;
  if (hm_qemu_config_build_args(&args, cfg, &err) < 0)
    goto fail;
  if (mkdirs(dir) < 0) {
    fprintf(stderr, "hotmount: cannot create %s: %s\n", dir, strerror(errno));
    rc = EXIT_FAIL;
    goto out;
  }
  /* QEMU will put its QMP and agent sockets there: in a directory another
   * user owns or may write to, they could be swapped (hotmountd refuses
   * such a directory; say so now rather than after the VM is up). */
  struct stat st;
  if (lstat(dir, &st) == 0 &&
      (S_ISLNK(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))) {
    fprintf(stderr,
            "hotmount: instance directory %s is %s: other users could replace QEMU's sockets "
            "there; %s\n",
            dir,
            S_ISLNK(st.st_mode)      ? "a symbolic link"
            : st.st_uid != geteuid() ? "owned by another user"
                                     : "writable by its group or others",
            S_ISLNK(st.st_mode) || st.st_uid != geteuid() ? "use a directory of your own"
                                                          : "run chmod 0700 on it");
    rc = cli_exit_code(HM_E_PERM);
    goto out;
  }
  for (char **a = args; *a; a++)
    printf("%s\n", *a);
  goto out;
fail:
  rc = cli_fail(err);
out:
  hm_strv_free(args);
  hm_qemu_config_free(cfg);
  hm_error_free(err);
  free(dir);
  return rc;
}
