/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* hm_qemu_accel_choose: the override, and the probe's verdicts against
 * stand-in QEMUs (shell scripts) that print a kernel banner, fail, or hang.
 * The probe against a real QEMU and kernel runs in e2e-boot (test_boot.py). */
#include <hotmount/hotmount.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];
static char kernel[PATH_MAX];

static void setup(void) {
  strcpy(tmpdir, "/tmp/hm-accel-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  snprintf(kernel, sizeof kernel, "%s/vmlinuz", tmpdir);
  FILE *f = fopen(kernel, "w");
  ck_assert_ptr_nonnull(f);
  fputs("not really a kernel: the stand-in QEMUs never read it\n", f);
  fclose(f);
  unsetenv("HOTMOUNT_ACCEL");
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

/* The probe only gets to QEMU when /dev/kvm opens: else it says TCG first. */
static int kvm_opens(void) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return 0;
  close(fd);
  return 1;
}

/* Writes an executable stand-in QEMU whose body is script; returns its path
 * (static buffer). It records its pid in tmpdir/pid and its argv in
 * tmpdir/argv. */
static const char *fake_qemu(const char *script) {
  static char path[PATH_MAX + 8];
  snprintf(path, sizeof path, "%s/qemu", tmpdir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "#!/bin/sh\necho $$ > '%s/pid'\necho \"$@\" > '%s/argv'\n%s\n", tmpdir, tmpdir,
          script);
  fclose(f);
  ck_assert_int_eq(chmod(path, 0755), 0);
  return path;
}

static int choose(const char *qemu, const char *kern, unsigned timeout_ms, hm_status **st,
                  char **msg) {
  hm_error *err = NULL;
  int r = hm_qemu_accel_choose(st, qemu, kern, timeout_ms, &err);
  if (msg)
    *msg = err ? strdup(hm_error_message(err)) : NULL;
  hm_error_free(err);
  return r;
}

static pid_t fake_pid(void) {
  char path[PATH_MAX + 8];
  snprintf(path, sizeof path, "%s/pid", tmpdir);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  int pid = -1;
  if (fscanf(f, "%d", &pid) != 1)
    pid = -1;
  fclose(f);
  return pid;
}

START_TEST(test_override) {
  hm_status *st = NULL;
  char *msg = NULL;
  setenv("HOTMOUNT_ACCEL", "kvm", 1);
  ck_assert_int_eq(choose("/nonexistent/qemu", NULL, 0, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "kvm");
  ck_assert_str_eq(hm_status_get(st, "source"), "HOTMOUNT_ACCEL");
  hm_status_free(st);
  setenv("HOTMOUNT_ACCEL", "tcg", 1);
  ck_assert_int_eq(choose(NULL, kernel, 0, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "tcg");
  hm_status_free(st);
  st = NULL;
  setenv("HOTMOUNT_ACCEL", "xen", 1);
  ck_assert_int_eq(choose(NULL, kernel, 0, &st, &msg), HM_E_INVALID);
  ck_assert_ptr_null(st);
  ck_assert_ptr_nonnull(strstr(msg, "hm_qemu_accel_choose: HOTMOUNT_ACCEL=\"xen\""));
  free(msg);
  /* "auto" probes: with no kernel that is TCG, whatever /dev/kvm says */
  setenv("HOTMOUNT_ACCEL", "auto", 1);
  ck_assert_int_eq(choose(fake_qemu("exit 0"), NULL, 0, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "tcg");
  ck_assert_str_eq(hm_status_get(st, "source"), "probe");
  hm_status_free(st);
  unsetenv("HOTMOUNT_ACCEL");
}
END_TEST

START_TEST(test_bad_args) {
  hm_status *st = NULL;
  char *msg = NULL;
  ck_assert_int_eq(hm_qemu_accel_choose(NULL, NULL, kernel, 0, NULL), HM_E_INVALID);
  ck_assert_int_eq(choose(NULL, kernel, 600001, &st, &msg), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "hm_qemu_accel_choose: timeout 600001 ms"));
  free(msg);
  if (kvm_opens()) {
    char missing[PATH_MAX + 8];
    snprintf(missing, sizeof missing, "%s/nope", tmpdir);
    ck_assert_int_eq(choose(NULL, missing, 0, &st, &msg), HM_E_INVALID);
    ck_assert_ptr_nonnull(strstr(msg, "/nope: No such file"));
    free(msg);
  }
  ck_assert_ptr_null(st);
}
END_TEST

/* A banner split across two writes still proves the boot. */
START_TEST(test_banner_proves_kvm) {
  if (!kvm_opens())
    return; /* the probe says TCG before QEMU runs: nothing to see here */
  hm_status *st = NULL;
  const char *q = fake_qemu("printf 'SeaBIOS\\nProbing EDD... ok\\n[ 0.0] Linux ver'\n"
                            "sleep 0.3\nprintf 'sion 6.1.0-test\\n'\nexec sleep 30");
  ck_assert_int_eq(choose(q, kernel, 20000, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "kvm");
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "reason"), "booted"));
  hm_status_free(st);
  /* the probe asked for KVM and this kernel, and stopped its QEMU */
  char path[PATH_MAX + 8], argv[4096] = "";
  snprintf(path, sizeof path, "%s/argv", tmpdir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(argv, sizeof argv, f));
  fclose(f);
  ck_assert_ptr_nonnull(strstr(argv, "accel=kvm"));
  ck_assert_ptr_nonnull(strstr(argv, kernel));
  ck_assert_int_eq(kill(fake_pid(), 0), -1);
  ck_assert_int_eq(errno, ESRCH);
}
END_TEST

/* What /dev/kvm-that-lies looks like: firmware output, then silence. */
START_TEST(test_silence_is_tcg) {
  if (!kvm_opens())
    return;
  hm_status *st = NULL;
  const char *q =
      fake_qemu("echo 'qemu: warning: host doesn'\"'\"'t support requested feature' >&2\n"
                "printf 'Probing EDD (edd=off to disable)... ok\\n'\nexec sleep 30");
  ck_assert_int_eq(choose(q, kernel, 1000, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "tcg");
  const char *why = hm_status_get(st, "reason");
  ck_assert_ptr_nonnull(strstr(why, "within 1000 ms"));
  ck_assert_ptr_nonnull(strstr(why, "requested feature"));
  hm_status_free(st);
  ck_assert_int_eq(kill(fake_pid(), 0), -1); /* killed and reaped, not left running */
}
END_TEST

START_TEST(test_qemu_fails_is_tcg) {
  if (!kvm_opens())
    return;
  hm_status *st = NULL;
  const char *q = fake_qemu("echo 'qemu: failed to set MSR 0x10a' >&2\nexit 1");
  ck_assert_int_eq(choose(q, kernel, 20000, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "tcg");
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "reason"), "exited before the kernel printed"));
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "reason"), "MSR 0x10a"));
  hm_status_free(st);
  ck_assert_int_eq(choose("/nonexistent/qemu-system-x86_64", kernel, 20000, &st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "accel"), "tcg");
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "reason"), "cannot run /nonexistent"));
  hm_status_free(st);
}
END_TEST

int main(void) {
  Suite *s = suite_create("accel");
  TCase *tc = tcase_create("accel");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_override);
  tcase_add_test(tc, test_bad_args);
  tcase_add_test(tc, test_banner_proves_kvm);
  tcase_add_test(tc, test_silence_is_tcg);
  tcase_add_test(tc, test_qemu_fails_is_tcg);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
