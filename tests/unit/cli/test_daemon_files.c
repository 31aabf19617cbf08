/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotmountd's own files in the instance directory, against another local
 * user who prepared that directory: a directory of another owner or
 * writable by others is refused with the fix in the message, and a pid file
 * or log planted as a symlink (or hard link) to another file is refused and
 * the file it leads to is left as it was; the CLI (qemu-args, and its
 * connection to the daemon) refuses the same. No VM: hotmountd refuses (or
 * fails to find QEMU, with --wait 0) before it would need one. Runs as root
 * (chown to nobody); skipped otherwise.
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static const char *hotmountd, *hotmount;
static char tmpdir[PATH_MAX];
static char inst[PATH_MAX];
static char victim[PATH_MAX];

static void setup(void) {
  strcpy(tmpdir, "/tmp/hm-dfiles-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  snprintf(inst, sizeof(inst), "%s/inst", tmpdir);
  snprintf(victim, sizeof(victim), "%s/victim", tmpdir);
  FILE *f = fopen(victim, "w");
  ck_assert_ptr_nonnull(f);
  fputs("precious\n", f);
  fclose(f);
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static const char *victim_text(void) {
  static char buf[256];
  FILE *f = fopen(victim, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

/* Runs hotmountd INSTANCE --wait 0 [--foreground]; its exit status, and
 * what it wrote to stderr in out. */
static int run_daemon(int foreground, char *out, size_t len) {
  char errfile[PATH_MAX + 8];
  snprintf(errfile, sizeof(errfile), "%s/stderr", tmpdir);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (!freopen(errfile, "w", stderr))
      _exit(99);
    execl(hotmountd, hotmountd, inst, "--wait", "0", foreground ? "--foreground" : NULL,
          (char *)NULL);
    _exit(98);
  }
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  FILE *f = fopen(errfile, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  unlink(errfile);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *name) {
  char p[PATH_MAX + 64];
  struct stat st;
  snprintf(p, sizeof(p), "%s/%s", inst, name);
  return lstat(p, &st) == 0;
}

START_TEST(test_dir_other_owner) {
  char out[2048];
  ck_assert_int_eq(mkdir(inst, 0700), 0);
  ck_assert_int_eq(chown(inst, NOBODY, NOBODY), 0);
  int rc = run_daemon(0, out, sizeof(out));
  ck_assert_int_eq(rc, 1);
  ck_assert_msg(strstr(out, "owned by uid 65534") && strstr(out, "chown"), "%s", out);
  /* Nothing was created in it. */
  ck_assert(!exists("hotmountd.log") && !exists("hotmountd.pid"));
}
END_TEST

START_TEST(test_dir_writable_by_others) {
  char out[2048];
  ck_assert_int_eq(mkdir(inst, 0700), 0);
  ck_assert_int_eq(chmod(inst, 0777), 0);
  ck_assert_int_eq(run_daemon(0, out, sizeof(out)), 1);
  ck_assert_msg(strstr(out, "writable by others (mode 0777)") && strstr(out, "chmod 0700"), "%s",
                out);
  ck_assert(!exists("hotmountd.log") && !exists("hotmountd.pid"));
  ck_assert_int_eq(chmod(inst, 0770), 0);
  ck_assert_int_eq(run_daemon(1, out, sizeof(out)), 1);
  ck_assert_msg(strstr(out, "writable by its group (mode 0770)"), "%s", out);
  ck_assert(!exists("hotmountd.pid"));
}
END_TEST

START_TEST(test_dir_created_private) {
  char out[2048];
  mode_t old = umask(0);
  /* No QEMU: it fails after creating the directory and its files. */
  ck_assert_int_eq(run_daemon(0, out, sizeof(out)), 1);
  umask(old);
  struct stat st;
  ck_assert_int_eq(stat(inst, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0700);
  char log[PATH_MAX + 32];
  snprintf(log, sizeof(log), "%s/hotmountd.log", inst);
  ck_assert_int_eq(stat(log, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0600);
}
END_TEST

/* name in the instance directory is a symlink to the victim (link 0) or a
 * hard link to it (link 1). */
static void plant(const char *name, int hard) {
  char p[PATH_MAX + 64];
  ck_assert_int_eq(mkdir(inst, 0700), 0);
  snprintf(p, sizeof(p), "%s/%s", inst, name);
  ck_assert_int_eq(hard ? link(victim, p) : symlink(victim, p), 0);
}

START_TEST(test_pid_symlink) {
  char out[2048];
  plant("hotmountd.pid", 0);
  ck_assert_int_eq(run_daemon(1, out, sizeof(out)), 1);
  ck_assert_str_eq(victim_text(), "precious\n");
  ck_assert_msg(strstr(out, "pid file") && strstr(out, "symbolic link"), "%s", out);
}
END_TEST

START_TEST(test_pid_hardlink) {
  char out[2048];
  plant("hotmountd.pid", 1);
  ck_assert_int_eq(run_daemon(1, out, sizeof(out)), 1);
  ck_assert_str_eq(victim_text(), "precious\n");
  ck_assert_msg(strstr(out, "pid file") && strstr(out, "single link"), "%s", out);
}
END_TEST

START_TEST(test_log_symlink) {
  char out[2048];
  plant("hotmountd.log", 0);
  ck_assert_int_eq(run_daemon(0, out, sizeof(out)), 1);
  ck_assert_str_eq(victim_text(), "precious\n");
  ck_assert_msg(strstr(out, "log file") && strstr(out, "symbolic link"), "%s", out);
}
END_TEST

/* Runs hotmount VERB inst; exit status, stderr in out. */
static int run_cli(const char *verb, char *out, size_t len) {
  char errfile[PATH_MAX + 8];
  snprintf(errfile, sizeof(errfile), "%s/stderr", tmpdir);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (!freopen(errfile, "w", stderr) || !freopen("/dev/null", "w", stdout))
      _exit(99);
    execl(hotmount, hotmount, verb, inst, (char *)NULL);
    _exit(98);
  }
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  FILE *f = fopen(errfile, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  unlink(errfile);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* qemu-args would have QEMU put its sockets in a directory others control:
 * refused up front. */
START_TEST(test_qemu_args_refuses_open_dir) {
  char out[2048];
  ck_assert_int_eq(mkdir(inst, 0700), 0);
  ck_assert_int_eq(run_cli("qemu-args", out, sizeof(out)), 0);
  ck_assert_int_eq(chmod(inst, 0777), 0);
  ck_assert_int_ne(run_cli("qemu-args", out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, "writable by its group or others") && strstr(out, "chmod 0700"), "%s",
                out);
  ck_assert_int_eq(chmod(inst, 0700), 0);
  ck_assert_int_eq(chown(inst, NOBODY, NOBODY), 0);
  ck_assert_int_ne(run_cli("qemu-args", out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, "owned by another user"), "%s", out);
}
END_TEST

/* The CLI does not talk to a daemon socket that is a symlink or another
 * user's. */
START_TEST(test_cli_refuses_foreign_socket) {
  char out[2048], sock[PATH_MAX + 32];
  ck_assert_int_eq(mkdir(inst, 0700), 0);
  snprintf(sock, sizeof(sock), "%s/hotmountd.sock", inst);
  ck_assert_int_eq(symlink(victim, sock), 0);
  ck_assert_int_ne(run_cli("list", out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, "a symbolic link") && strstr(out, "refusing"), "%s", out);
  ck_assert_int_eq(unlink(sock), 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(sock), sizeof(sa.sun_path));
  memcpy(sa.sun_path, sock, strlen(sock) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  ck_assert_int_eq(lchown(sock, NOBODY, NOBODY), 0);
  ck_assert_int_ne(run_cli("list", out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, "another user's socket"), "%s", out);
  close(fd);
}
END_TEST

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test-daemon-files HOTMOUNTD HOTMOUNT\n");
    return 2;
  }
  hotmount = argv[2];
  if (geteuid() != 0) {
    fprintf(stderr, "test-daemon-files needs root (chown to nobody): skipped\n");
    return 77;
  }
  hotmountd = argv[1];
  Suite *s = suite_create("daemon-files");
  TCase *tc = tcase_create("daemon-files");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_dir_other_owner);
  tcase_add_test(tc, test_dir_writable_by_others);
  tcase_add_test(tc, test_dir_created_private);
  tcase_add_test(tc, test_pid_symlink);
  tcase_add_test(tc, test_pid_hardlink);
  tcase_add_test(tc, test_log_symlink);
  tcase_add_test(tc, test_qemu_args_refuses_open_dir);
  tcase_add_test(tc, test_cli_refuses_foreign_socket);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
