/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "qemu_fixture.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void qf_start(qemu_fixture *f, unsigned slots) {
  memset(f, 0, sizeof(*f));
  strcpy(f->dir, "/tmp/hm-qemu-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(f->dir));
  snprintf(f->share, sizeof(f->share), "%s/share", f->dir);
  ck_assert_int_eq(mkdir(f->share, 0755), 0);
  hm_qemu_config *cfg = NULL;
  char **args = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, f->dir, NULL), 0);
  ck_assert_int_eq(hm_qemu_config_set_slots(cfg, slots, NULL), 0);
  ck_assert_int_eq(hm_qemu_config_set_memory(cfg, "256M", NULL), 0);
  ck_assert_int_eq(hm_qemu_config_build_args(&args, cfg, NULL), 0);
  hm_strv argv = {0};
  const char *head[] = {"qemu-system-x86_64", "-M",       "q35",  "-accel", "tcg", "-m", "256M",
                        "-nodefaults",        "-display", "none", "-S",     NULL};
  for (const char **h = head; *h; h++)
    hm_strv_push(&argv, *h);
  for (char **a = args; *a; a++)
    hm_strv_push(&argv, *a);
  hm_strv_push(&argv, "-chardev");
  hm_strv_pushf(&argv, "socket,id=tmon,path=%s/test-qmp.sock,server=on,wait=off", f->dir);
  hm_strv_push(&argv, "-mon");
  hm_strv_push(&argv, "chardev=tmon,mode=control");
  f->qemu_pid = fork();
  if (f->qemu_pid == 0) {
    execvp(argv.v[0], argv.v);
    _exit(127);
  }
  hm_strv_clear(&argv);
  hm_strv_free(args);
  char path[128];
  snprintf(path, sizeof(path), "%s/test-qmp.sock", f->dir);
  for (int i = 0; i < 300 && access(path, F_OK) < 0; i++)
    usleep(20000);
  /* The socket file exists from QEMU's bind(), before its listen():
   * "connection refused" until then, so both connects retry for a while
   * (as hm_qemu_hotplugger_new's doc says to while QEMU starts). */
  hm_error *err = NULL;
  int r = -1;
  for (int i = 0; i < 500; i++) {
    hm_error_free(err);
    err = NULL;
    if ((r = hm_qmp_connect(&f->mon, path, 10000, &err)) != HM_E_NOT_READY)
      break;
    usleep(20000);
  }
  ck_assert_msg(r == 0, "%s", hm_error_message(err));
  for (int i = 0; i < 500; i++) {
    hm_error_free(err);
    err = NULL;
    if ((r = hm_qemu_hotplugger_new(&f->hp, cfg, &err)) != HM_E_NOT_READY)
      break;
    usleep(20000);
  }
  ck_assert_msg(r == 0, "%s", hm_error_message(err));
  hm_error_free(err);
  hm_qemu_config_free(cfg);
}

void qf_stop(qemu_fixture *f) {
  hm_fs_hotplugger_free(f->hp);
  hm_qmp_free(f->mon);
  if (f->qemu_pid > 0) {
    kill(f->qemu_pid, SIGKILL);
    waitpid(f->qemu_pid, NULL, 0);
  }
  f->hp = NULL;
  f->mon = NULL;
  f->qemu_pid = 0;
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
  if (system(cmd) < 0)
    perror("cleanup");
}

void qf_exec(qemu_fixture *f, const char *cmd, const char *args_json) {
  json_object *args = json_tokener_parse(args_json);
  hm_error *err = NULL;
  ck_assert_msg(hm_qmp_execute(f->mon, cmd, args, -1, NULL, 5000, &err) == 0, "%s",
                hm_error_message(err));
  json_object_put(args);
}

static int listed(qemu_fixture *f, const char *cmd, const char *path, const char *key,
                  const char *id) {
  json_object *ret = NULL, *args = NULL;
  if (path) {
    args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(path));
  }
  ck_assert_int_eq(hm_qmp_execute(f->mon, cmd, args, -1, &ret, 5000, NULL), 0);
  json_object_put(args);
  int found = 0;
  for (size_t i = 0; i < json_object_array_length(ret); i++) {
    json_object *v;
    if (json_object_object_get_ex(json_object_array_get_idx(ret, i), key, &v))
      found |= strcmp(json_object_get_string(v), id) == 0;
  }
  json_object_put(ret);
  return found;
}

int qf_has_chardev(qemu_fixture *f, const char *id) {
  return listed(f, "query-chardev", NULL, "label", id);
}

int qf_has_device(qemu_fixture *f, const char *id) {
  return listed(f, "qom-list", "/machine/peripheral", "name", id);
}

hm_mount_spec *qf_spec(qemu_fixture *f, int type) {
  hm_mount_spec *s = NULL;
  hm_mount_spec_new(&s, NULL);
  hm_mount_spec_set_host_path(s, f->share, NULL);
  hm_mount_spec_set_guest_path(s, "/mnt/x", NULL);
  hm_mount_spec_set_type(s, type, NULL);
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  return s;
}
