/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reverse-sshfs pump under a guest flood, without a VM: the "guest" is a
 * real dropbear on a loopback port, started in a mount namespace of its own
 * where sshfs is a script that says it mounted and then writes zeros to
 * stderr as fast as it can (what a hostile guest root can do), and awk is a
 * script that reports the mount once that happened. The backend attaches
 * through the real SSH session and sftp-server; detach must then return
 * while the flood goes on: the pump has to see its stop fd.
 */
#include "driver_internal.h"
#include "sshfs_internal.h"

#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char tmpdir[] = "/tmp/hm-test-pump-XXXXXX";
static pid_t sshd_pid;

static char *path_in(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", tmpdir, name), 0);
  return p;
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  ck_assert_int_eq(chmod(path, mode), 0);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *cmd = NULL;
  ck_assert_int_ge(vasprintf(&cmd, fmt, ap), 0);
  va_end(ap);
  int st = system(cmd);
  free(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof(a);
  ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
  ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &l), 0);
  close(s);
  return ntohs(a.sin_port);
}

/* dropbear in its own mount namespace, with the fake sshfs and awk bound
 * over the real ones and a home of its own (authorized_keys) over /root. */
static void start_guest(int port, const char *host_key) {
  char awk[PATH_MAX];
  ck_assert_ptr_nonnull(realpath("/usr/bin/awk", awk));
  char *fake_sshfs = path_in("sshfs"), *fake_awk = path_in("awk"), *home = path_in("home");
  char listen[64];
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
  sshd_pid = fork();
  ck_assert_int_ge(sshd_pid, 0);
  if (sshd_pid == 0) {
    setpgid(0, 0);
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount(fake_sshfs, "/usr/bin/sshfs", NULL, MS_BIND, NULL) < 0 ||
        mount(fake_awk, awk, NULL, MS_BIND, NULL) < 0 ||
        mount(home, "/root", NULL, MS_BIND, NULL) < 0)
      _exit(120);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    execl("/usr/sbin/dropbear", "dropbear", "-F", "-E", "-s", "-p", listen, "-r", host_key, NULL);
    _exit(127);
  }
  for (int i = 0; i < 100; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = connect(s, (struct sockaddr *)&a, sizeof(a));
    close(s);
    if (c == 0)
      break;
    ck_assert_int_eq(waitpid(sshd_pid, NULL, WNOHANG), 0);
    usleep(50000);
  }
  free(fake_sshfs);
  free(fake_awk);
  free(home);
}

static void stop_guest(void) {
  if (sshd_pid > 0) {
    kill(-sshd_pid, SIGKILL);
    waitpid(sshd_pid, NULL, 0);
  }
  sshd_pid = 0;
}

/* This process's resident size in KiB. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

struct detach_job {
  hm_fs_hotplugger *hp;
  hm_attachment *att;
  int rc;
  volatile int done;
};

static void *detach_main(void *arg) {
  struct detach_job *j = arg;
  j->rc = hm_fs_hotplugger_detach(j->hp, j->att, NULL);
  j->done = 1;
  return NULL;
}

START_TEST(test_detach_under_flood) {
  if (access("/usr/sbin/dropbear", X_OK) != 0 || access("/usr/bin/sshfs", F_OK) != 0)
    ck_abort_msg("dropbear-bin and sshfs must be installed (tests/run.sh installs them)");
  char *flag = path_in("mounted"), *script = NULL;
  /* The guest's "sshfs": mounted, then a stderr flood that never ends. */
  ck_assert_int_ge(asprintf(&script, "#!/bin/sh\ntouch %s\nexec cat /dev/zero >&2\n", flag), 0);
  char *p = path_in("sshfs");
  write_file(p, script, 0755);
  free(p);
  free(script);
  /* awk as the backend's mount check uses it: T=fuse.sshfs awk ... */
  ck_assert_int_ge(asprintf(&script, "#!/bin/sh\n[ \"$T\" = fuse.sshfs ] && [ -e %s ]\n", flag), 0);
  p = path_in("awk");
  write_file(p, script, 0755);
  free(p);
  free(script);
  free(flag);
  ck_assert_int_eq(
      sh("mkdir -m 700 %s/home %s/home/.ssh %s/share %s/inst", tmpdir, tmpdir, tmpdir, tmpdir), 0);
  ck_assert_int_eq(sh("dropbearkey -t ed25519 -f %s/host_key >/dev/null 2>&1 && "
                      "ssh-keygen -q -t ed25519 -N '' -f %s/client && "
                      "cp %s/client.pub %s/home/.ssh/authorized_keys && "
                      "printf '[127.0.0.1]:%%s %%s\\n' X \"$(dropbearkey -y -f %s/host_key | "
                      "grep '^ssh-' | cut -d' ' -f1,2)\" > %s/kh.in",
                      tmpdir, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir),
                   0);
  int port = free_port();
  ck_assert_int_eq(sh("sed 's/:X /:%d /' %s/kh.in > %s/known_hosts", port, tmpdir, tmpdir), 0);
  char *hk = path_in("host_key");
  start_guest(port, hk);
  free(hk);

  hm_ssh_config *cfg = NULL;
  char portstr[16], *key = path_in("client"), *kh = path_in("known_hosts");
  snprintf(portstr, sizeof(portstr), "%d", port);
  ck_assert_int_eq(hm_ssh_config_new(&cfg, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "host", "127.0.0.1", NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "port", portstr, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "user", "root", NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "identity", key, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "knownHosts", kh, NULL), 0);
  free(key);
  free(kh);
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  char *inst = path_in("inst"), *share = path_in("share"), *gp = path_in("mnt");
  int r = hm_sshfs_hotplugger_new(&hp, cfg, inst, &err);
  ck_assert_msg(r == 0, "hotplugger: %s", hm_error_message(err));
  hm_mount_spec *spec = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&spec, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_type(spec, HM_TYPE_REVERSE_SSHFS, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(spec, share, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(spec, gp, NULL), 0);
  hm_attachment *att = NULL;
  ck_assert_int_eq(hm_attachment_new(&att, "hm-1", NULL), 0);
  long rss0 = rss_kib();
  r = hm_fs_hotplugger_attach(hp, spec, att, &err);
  ck_assert_msg(r == 0, "attach: %s", hm_error_message(err));

  /* The flood must not pile up in memory: libssh buffers whatever the pump
   * does not read, and grants the guest room for more on every read. A few
   * seconds of flood took hundreds of MiB before the pump drained stderr. */
  sleep(5);
  long grown = rss_kib() - rss0;
  /* Under AddressSanitizer freed memory stays resident in its quarantine
   * (256 MiB by default), so RSS says nothing there. */
  if (!UNDER_ASAN)
    ck_assert_msg(grown < 32 * 1024, "the pump's process grew by %ld KiB in 5 s of stderr flood",
                  grown);
  struct detach_job j = {.hp = hp, .att = att};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, detach_main, &j), 0);
  /* Promptly is what matters, not how fast: the bound is generous (a
   * stop takes well under a second here); before the fix it never came. */
  for (int i = 0; i < 300 && !j.done; i++)
    usleep(100000);
  ck_assert_msg(j.done, "detach did not return within 30 s while the guest floods stderr");
  pthread_join(t, NULL);
  ck_assert_int_eq(j.rc, 0);

  hm_attachment_free(att);
  hm_mount_spec_free(spec);
  hm_fs_hotplugger_free(hp);
  hm_ssh_config_free(cfg);
  free(inst);
  free(share);
  free(gp);
  stop_guest();
}
END_TEST

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  Suite *s = suite_create("sshfs-pump");
  TCase *tc = tcase_create("flood");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_detach_under_flood);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  /* In process: a failed check still reaches stop_guest below. */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  stop_guest();
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
  if (system(cmd) != 0)
    fprintf(stderr, "# could not remove %s\n", tmpdir);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
