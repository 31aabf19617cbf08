/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU backend against a real QEMU (no guest OS: -S, so nothing runs and
 * an unplug would never complete). Covers what needs no guest: the boot
 * arguments are accepted, slots are discovered from QEMU, an attach plugs a
 * real virtiofsd-backed device into the first free root port, slots run out
 * cleanly, and each mid-attach failure rolls back (no virtiofsd, no chardev,
 * no socket file, slot free again). The full cycle with a guest is in e2e.
 */
#include "qemu_fixture.h"
#include "virtiofsd.h"

#include <check.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 3

static qemu_fixture fx;
static char *const dir = fx.dir;
static char *const share = fx.share;

static int virtiofsd_pids(pid_t *out, int max, int top_only);

static void start_qemu(void) {
  qf_start(&fx, SLOTS);
}

static void stop_qemu(void) {
  /* Stop QEMU first: any virtiofsd still running then is a leak the test
   * reported itself. */
  hm_fs_hotplugger_free(fx.hp);
  fx.hp = NULL;
  hm_qmp_free(fx.mon);
  fx.mon = NULL;
  kill(fx.qemu_pid, SIGKILL);
  waitpid(fx.qemu_pid, NULL, 0);
  fx.qemu_pid = 0;
  pid_t pids[64];
  int n = virtiofsd_pids(pids, 64, 0);
  for (int i = 0; i < n; i++)
    kill(pids[i], SIGKILL);
  qf_stop(&fx);
}

/* virtiofsd processes serving our share whose parent is not a virtiofsd
 * (the C virtiofsd forks a sandboxed child: one share, one top process). */
static int virtiofsd_pids(pid_t *out, int max, int top_only) {
  DIR *d = opendir("/proc");
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d)) && n < max) {
    char p[300], buf[4096];
    int pid = atoi(de->d_name), ppid = 0;
    if (pid <= 0)
      continue;
    snprintf(p, sizeof(p), "/proc/%d/cmdline", pid);
    FILE *f = fopen(p, "r");
    if (!f)
      continue;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < len; i++)
      if (!buf[i])
        buf[i] = ' ';
    buf[len] = '\0';
    if (!strstr(buf, "virtiofsd") || !strstr(buf, share) || strncmp(buf, "sh ", 3) == 0)
      continue;
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    if ((f = fopen(p, "r"))) {
      if (fscanf(f, "%*d %*s %*c %d", &ppid) != 1)
        ppid = 0;
      fclose(f);
    }
    char comm[64] = "";
    snprintf(p, sizeof(p), "/proc/%d/comm", ppid);
    if ((f = fopen(p, "r"))) {
      if (!fgets(comm, sizeof(comm), f))
        comm[0] = '\0';
      fclose(f);
    }
    if (top_only && strncmp(comm, "virtiofsd", 9) == 0)
      continue;
    out[n++] = pid;
  }
  closedir(d);
  return n;
}

static int count_virtiofsd(void) {
  pid_t pids[64];
  return virtiofsd_pids(pids, 64, 1);
}

static int count_sockets(void) {
  int n = 0;
  DIR *d = opendir(dir);
  struct dirent *de;
  while ((de = readdir(d)))
    n += strstr(de->d_name, "-vfs.sock") != NULL;
  closedir(d);
  return n;
}

static int has_chardev(const char *id) {
  return qf_has_chardev(&fx, id);
}

static hm_mount_spec *make_spec(void) {
  return qf_spec(&fx, HM_TYPE_VIRTIOFS);
}

static void mon_exec(const char *cmd, const char *args_json) {
  qf_exec(&fx, cmd, args_json);
}

START_TEST(test_slots_and_attach) {
  hm_error *err = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS);
  hm_mount_spec *s = make_spec();
  hm_attachment *att[SLOTS + 1] = {0};
  for (int i = 0; i < SLOTS; i++) {
    char id[16];
    snprintf(id, sizeof(id), "hm-%d", i + 1);
    hm_attachment_new(&att[i], id, NULL);
    ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att[i], &err) == 0, "%s",
                  hm_error_message(err));
    ck_assert_str_eq(hm_attachment_get_tag(att[i]), id);
    char port[16];
    snprintf(port, sizeof(port), "hm-rp-%d", i);
    ck_assert_str_eq(hm_attachment_get_data(att[i], "port"), port);
    ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS - 1 - i);
  }
  ck_assert_int_eq(count_virtiofsd(), SLOTS);
  ck_assert_int_eq(count_sockets(), 0); /* unlinked once QEMU connected */
  hm_attachment_new(&att[SLOTS], "hm-9", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att[SLOTS], &err), HM_E_NO_SLOT);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "all 3 hot-plug slots are in use"));
  hm_error_free(err);
  ck_assert_int_eq(count_virtiofsd(), SLOTS);
  ck_assert(!has_chardev("hm-9-chr"));
  for (int i = 0; i <= SLOTS; i++)
    hm_attachment_free(att[i]);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_rollback_chardev_add_fails) {
  hm_error *err = NULL;
  /* Someone already holds the chardev id: chardev-add fails after virtiofsd
   * started, so virtiofsd must be stopped and its socket removed. */
  char args[256];
  snprintf(args, sizeof(args), "{\"id\":\"hm-5-chr\",\"backend\":{\"type\":\"null\",\"data\":{}}}");
  mon_exec("chardev-add", args);
  hm_mount_spec *s = make_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-5", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "chardev-add"));
  hm_error_free(err);
  ck_assert_int_eq(count_virtiofsd(), 0);
  ck_assert_int_eq(count_sockets(), 0);
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_rollback_device_add_fails) {
  hm_error *err = NULL;
  /* The device id is taken: device_add fails after chardev-add, so the
   * chardev goes too. */
  mon_exec("device_add", "{\"driver\":\"virtserialport\",\"id\":\"hm-6-dev\","
                         "\"bus\":\"hm-serial.0\",\"name\":\"test.taken\"}");
  hm_mount_spec *s = make_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-6", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "device_add"));
  hm_error_free(err);
  ck_assert(!has_chardev("hm-6-chr"));
  ck_assert_int_eq(count_virtiofsd(), 0);
  ck_assert_int_eq(count_sockets(), 0);
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

/* In an embedder that ignores SIGCHLD (the kernel reaps its children, a
 * wait says ECHILD): virtiofsd is started, healthy, its death is seen on the
 * watch fd and by the check, the dead mount is retired; a rollback stops
 * its virtiofsd at once rather than waiting out the stop timeout and
 * SIGKILLing a pid that may be someone else's by then. */
START_TEST(test_sigchld_ignored) {
  ck_assert(signal(SIGCHLD, SIG_IGN) != SIG_ERR);
  hm_error *err = NULL;
  hm_mount_spec *s = make_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-1", NULL);
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s", hm_error_message(err));
  char *reason = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &reason, NULL, NULL), 1);
  int watch = hm_fs_hotplugger_watch_fd(fx.hp, att);
  ck_assert_int_ge(watch, 0);
  struct pollfd p = {.fd = watch, .events = POLLIN};
  ck_assert_int_eq(poll(&p, 1, 0), 0);
  pid_t pid = (pid_t)atoi(hm_attachment_get_data(att, "virtiofsd_pid"));
  ck_assert_int_eq(kill(pid, SIGKILL), 0);
  ck_assert_msg(poll(&p, 1, 5000) == 1, "virtiofsd's death not seen on the watch fd");
  close(watch);
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &reason, NULL, NULL), 0);
  ck_assert_ptr_nonnull(strstr(reason, "virtiofsd for hm-1 is not running"));
  free(reason);
  ck_assert_msg(hm_fs_hotplugger_detach(fx.hp, att, &err) == 0, "%s", hm_error_message(err));
  ck_assert_ptr_nonnull(hm_attachment_get_retired(att));
  hm_attachment_free(att);

  /* A rollback cleans up (chardev-add fails once virtiofsd runs). */
  mon_exec("chardev-add", "{\"id\":\"hm-5-chr\",\"backend\":{\"type\":\"null\",\"data\":{}}}");
  hm_attachment_new(&att, "hm-5", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(count_virtiofsd(), 0);
  ck_assert_int_eq(count_sockets(), 0);
  hm_attachment_free(att);
  hm_mount_spec_free(s);

  /* A stop says it stopped: a wait for the status the kernel has thrown
   * away must not read as "did not exit after SIGKILL". */
  hm_virtiofsd_info vfs;
  ck_assert_msg(hm_virtiofsd_detect(&vfs, NULL, &err) == 0, "%s", hm_error_message(err));
  char sock[128];
  snprintf(sock, sizeof(sock), "%s/stop-vfs.sock", dir);
  ck_assert_msg(hm_virtiofsd_start(&pid, &vfs, share, 0, NULL, sock, NULL, NULL, &err) == 0, "%s",
                hm_error_message(err));
  ck_assert(hm_virtiofsd_alive(pid));
  ck_assert_msg(hm_virtiofsd_stop(pid, 3000, &err) == 0, "%s", hm_error_message(err));
  ck_assert(!hm_virtiofsd_alive(pid));
  ck_assert_int_eq(count_virtiofsd(), 0);
  unlink(sock);
  hm_virtiofsd_info_clear(&vfs);
}
END_TEST

/* What QEMU 7.2 answers for ids it does not have, and that "already gone"
 * is decided from QMP's typed answers, never from the text. */
START_TEST(test_qmp_missing_ids) {
  hm_error *err = NULL;
  json_object *args = json_object_new_object();
  json_object_object_add(args, "id", json_object_new_string("hm-9-dev"));
  ck_assert_int_eq(hm_qmp_execute(fx.mon, "device_del", args, -1, NULL, 5000, &err), HM_E_QMP);
  json_object_put(args);
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_QMP);
  ck_assert_str_eq(hm_error_detail(err), "DeviceNotFound");
  ck_assert(hm_qmp_error_is(err, "DeviceNotFound"));
  hm_error_free(err);
  err = NULL;
  /* chardev-remove of a missing id is only a GenericError... */
  args = json_object_new_object();
  json_object_object_add(args, "id", json_object_new_string("hm-9-chr"));
  ck_assert_int_eq(hm_qmp_execute(fx.mon, "chardev-remove", args, -1, NULL, 5000, &err), HM_E_QMP);
  json_object_put(args);
  ck_assert_str_eq(hm_error_detail(err), "GenericError");
  ck_assert(!hm_qmp_error_is(err, "DeviceNotFound"));
  hm_error_free(err);
  err = NULL;
  /* ...so hm_qmp_chardev_remove asks QEMU whether it is there: gone is done. */
  ck_assert_int_eq(hm_qmp_chardev_remove(fx.mon, "hm-9-chr", NULL), 0);
  ck_assert_int_eq(hm_qmp_device_del(fx.mon, "hm-9-dev", 1000, NULL), 0);
  /* A chardev QEMU refuses to remove (in use by a port) is an error. */
  mon_exec("chardev-add", "{\"id\":\"busy-chr\",\"backend\":{\"type\":\"null\",\"data\":{}}}");
  mon_exec("device_add", "{\"driver\":\"virtserialport\",\"id\":\"busy-dev\","
                         "\"bus\":\"hm-serial.0\",\"chardev\":\"busy-chr\",\"name\":\"t.busy\"}");
  ck_assert_int_eq(hm_qmp_chardev_remove(fx.mon, "busy-chr", &err), HM_E_QMP);
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_QMP);
  ck_assert(has_chardev("busy-chr"));
  hm_error_free(err);
}
END_TEST

START_TEST(test_no_qemu) {
  hm_qemu_config *cfg = NULL;
  hm_fs_hotplugger *h = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, "/nonexistent/hm", NULL), 0);
  ck_assert_int_eq(hm_qemu_hotplugger_new(&h, cfg, &err), HM_E_NOT_READY);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "/nonexistent/hm/qmp.sock"));
  ck_assert_ptr_null(h);
  hm_error_free(err);
  hm_qemu_config_free(cfg);
}
END_TEST

int main(void) {
  if (system("command -v qemu-system-x86_64 >/dev/null") != 0 || geteuid() != 0) {
    printf("qemu-system-x86_64 missing or not root (virtiofsd needs it): skipped\n");
    return 77;
  }
  Suite *s = suite_create("qemu-backend");
  TCase *tc = tcase_create("real-qemu");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, start_qemu, stop_qemu);
  tcase_add_test(tc, test_slots_and_attach);
  tcase_add_test(tc, test_rollback_chardev_add_fails);
  tcase_add_test(tc, test_rollback_device_add_fails);
  tcase_add_test(tc, test_sigchld_ignored);
  tcase_add_test(tc, test_qmp_missing_ids);
  suite_add_tcase(s, tc);
  TCase *tc2 = tcase_create("no-qemu");
  tcase_add_test(tc2, test_no_qemu);
  suite_add_tcase(s, tc2);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
