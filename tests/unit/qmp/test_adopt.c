/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helper adoption against other local users: after a restart the QEMU
 * backend finds virtiofsd processes by the markers in their environment
 * (instance, mount id, host path). Markers are strings anyone can set, so a
 * process is only adopted when it also runs as our euid and runs the
 * virtiofsd we would start, as the leader of its own session (as
 * hm_spawn_helper starts it). Impostors here: a copy of sleep(1) named
 * "virtiofsd" carrying our markers, (a) run as nobody with the configured
 * binary, (b) run as us with another binary, (d) not a session leader (what
 * virtiofsd's sandbox child is, which outlives its killed parent for a
 * moment); (c), the configured binary run as us in its own session, is
 * adopted (so the scan can see adoptions at all). QEMU is the
 * scripted fake (no devices). Root only (a child becomes nobody).
 */
#include "driver_internal.h"
#include "fake_qmp.h"

#include <hotmount/qemu.h>

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static const char *const transcript =
    "{\"steps\": ["
    " {\"expect\": \"qmp_capabilities\", \"reply\": {\"return\": {}}},"
    " {\"expect\": \"qom-list\", \"reply\": {\"return\": []}},"
    " {\"expect\": \"query-chardev\", \"reply\": {\"return\": []}}]}";

static char tmpdir[PATH_MAX];

/* Copies /bin/sleep to path (mode 0755): a program whose comm will be its
 * file name. */
static void copy_sleep(const char *path) {
  char cmd[PATH_MAX * 2];
  snprintf(cmd, sizeof(cmd), "cp /bin/sleep '%s' && chmod 0755 '%s'", path, path);
  ck_assert_int_eq(system(cmd), 0);
}

/* Starts prog (a sleep named virtiofsd) with our markers for mount id, as
 * uid; returns its pid once it has exec'ed. */
static pid_t impostor(const char *prog, const char *id, uid_t uid, int leader) {
  int p[2];
  ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(p[0]);
    char inst[PATH_MAX + 32], mount[64];
    snprintf(inst, sizeof(inst), "HOTMOUNT_INSTANCE=%s", tmpdir);
    snprintf(mount, sizeof(mount), "HOTMOUNT_MOUNT=%s", id);
    char *env[] = {inst, mount, "HOTMOUNT_HOST=/etc", "HOTMOUNT_WRITABLE=1", NULL};
    /* Like hm_spawn_helper: its own session (leader 0: like virtiofsd's
     * sandbox child, which is not). */
    if (leader && setsid() < 0)
      _exit(4);
    if (uid != 0 && (setgid(NOBODY) < 0 || setuid(uid) < 0))
      _exit(2);
    execle(prog, "virtiofsd", "1000", (char *)NULL, env);
    _exit(3);
  }
  close(p[1]);
  char b;
  /* EOF once exec closed the write end. */
  ck_assert_int_eq(read(p[0], &b, 1), 0);
  close(p[0]);
  return pid;
}

START_TEST(test_adopt_only_ours) {
  strcpy(tmpdir, "/tmp/hm-adopt-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  ck_assert_int_eq(chmod(tmpdir, 0755), 0); /* nobody must reach the program */
  char vfs[PATH_MAX + 32], other[PATH_MAX + 32], sock[PATH_MAX + 32];
  snprintf(vfs, sizeof(vfs), "%s/virtiofsd", tmpdir);
  snprintf(other, sizeof(other), "%s/bin", tmpdir);
  ck_assert_int_eq(mkdir(other, 0755), 0);
  strcat(other, "/virtiofsd");
  snprintf(sock, sizeof(sock), "%s/qmp.sock", tmpdir);
  copy_sleep(vfs);
  copy_sleep(other);
  pid_t a = impostor(vfs, "hm-1", NOBODY, 1);
  pid_t b = impostor(other, "hm-2", 0, 1);
  pid_t c = impostor(vfs, "hm-3", 0, 1);
  pid_t d = impostor(vfs, "hm-4", 0, 0);

  char *msg = NULL;
  fake_qmp *fake = fake_qmp_start_json(sock, transcript, &msg);
  ck_assert_msg(fake, "%s", msg ? msg : "?");
  hm_qemu_config *cfg = NULL;
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, tmpdir, NULL), 0);
  ck_assert_int_eq(hm_qemu_config_set_virtiofsd(cfg, vfs, NULL), 0);
  ck_assert_msg(hm_qemu_hotplugger_new(&hp, cfg, &err) == 0, "%s", hm_error_message(err));
  hm_attachment **v = NULL;
  size_t n = 0;
  ck_assert_msg(hm_fs_hotplugger_scan(hp, &v, &n, &err) == 0, "%s", hm_error_message(err));
  int seen[5] = {0};
  for (size_t i = 0; i < n; i++) {
    const char *id = hm_attachment_get_id(v[i]);
    const char *pid = hm_attachment_get_data(v[i], "virtiofsd_pid");
    if (pid && id && !strncmp(id, "hm-", 3) && id[3] >= '1' && id[3] <= '4')
      seen[id[3] - '0'] = atoi(pid);
    hm_attachment_free(v[i]);
  }
  free(v);
  ck_assert_msg(seen[1] == 0, "adopted the nobody-owned impostor %d", seen[1]);
  ck_assert_msg(seen[2] == 0, "adopted the impostor running another binary %d", seen[2]);
  ck_assert_int_eq(seen[3], c);
  ck_assert_msg(seen[4] == 0, "adopted a process that does not lead its session %d", seen[4]);
  hm_fs_hotplugger_free(hp);
  hm_qemu_config_free(cfg);
  fake_qmp_free(fake);
  free(msg);
  pid_t kids[] = {a, b, c, d};
  for (int i = 0; i < 4; i++) {
    kill(kids[i], SIGKILL);
    waitpid(kids[i], NULL, 0);
  }
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
  if (geteuid() != 0) {
    fprintf(stderr, "test-adopt needs root (an impostor runs as nobody): skipped\n");
    return 77;
  }
  Suite *s = suite_create("adopt");
  TCase *tc = tcase_create("adopt");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_adopt_only_ours);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
