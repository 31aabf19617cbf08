/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The host client against the real hotmount-agent (--socket mode), and
 * against small scripted peers for handshake corner cases. */
#include "core/agent_client.h"
#include "tests.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define NEVER_TAG "hm-never-42"

static char tmpdir[64];
static char sock_path[128];
static pid_t agent_pid = -1;
/* An extra option for the agent of the next start_agent (NULL: none). */
static const char *agent_opt, *agent_optarg;

static void path_in(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", tmpdir, name);
}

static int try_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return -1;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
    return fd;
  if (fd >= 0)
    close(fd);
  return -1;
}

static void make_tmpdir(void) {
  strcpy(tmpdir, "/tmp/hm-agent-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
  path_in(sock_path, sizeof(sock_path), "agent.sock");
}

static void start_agent(void) {
  const char *bin = getenv("HM_AGENT_BIN");
  ck_assert_msg(bin != NULL, "HM_AGENT_BIN is not set");
  make_tmpdir();
  agent_pid = fork();
  ck_assert_int_ge(agent_pid, 0);
  if (agent_pid == 0) {
    /* Do not outlive a test that failed before its teardown. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execl(bin, bin, "--socket", sock_path, "--log-level", "info", agent_opt, agent_optarg,
          (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 500; i++) {
    /* A probe connection: the agent serves it, sees EOF and accepts the next. */
    int fd = try_connect(sock_path);
    if (fd >= 0) {
      close(fd);
      return;
    }
    usleep(10000);
  }
  ck_abort_msg("the agent did not start listening on %s", sock_path);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path) < 0 ? 0 : 0;
}

static void stop_agent(void) {
  if (agent_pid > 0) {
    kill(agent_pid, SIGKILL);
    waitpid(agent_pid, NULL, 0);
    agent_pid = -1;
  }
  if (tmpdir[0])
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static hm_agent *connect_ok(void) {
  hm_agent *a = NULL;
  hm_error *err = NULL;
  int r = hm_agent_connect(&a, sock_path, 5000, &err);
  ck_assert_msg(r == 0, "connect: %s", hm_error_message(err));
  return a;
}

START_TEST(hello_version) {
  hm_agent *a = connect_ok();
  ck_assert_int_eq(hm_agent_is_connected(a), 1);
  ck_assert_str_eq(hm_agent_get_version(a), HM_VERSION_STRING);
  ck_assert_int_eq(hm_agent_has_capability(a, "mount.virtiofs"), 1);
  ck_assert_int_eq(hm_agent_has_capability(a, "list"), 1);
  ck_assert_int_eq(hm_agent_has_capability(a, "mount.9p"), 1);
  ck_assert_int_eq(hm_agent_has_capability(a, "mount.sshfs"), 0);
  hm_agent_free(a);
  /* A second connection after the first closed is served too. */
  a = connect_ok();
  hm_agent_free(a);
}
END_TEST

START_TEST(connect_errors) {
  hm_agent *a = (hm_agent *)1;
  hm_error *err = NULL;
  char p[128];
  path_in(p, sizeof(p), "nothing.sock");
  ck_assert_int_eq(hm_agent_connect(&a, p, 1000, &err), HM_E_NOT_READY);
  ck_assert_ptr_null(a);
  ck_assert_error(err, HM_E_NOT_READY, "nothing.sock");
  ck_assert_error(err, HM_E_NOT_READY, "hm_agent_connect: ");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_agent_connect(&a, p, -1, &err), HM_E_INVALID);
  hm_error_free(err);
  ck_assert_int_eq(hm_agent_is_connected(NULL), 0);
  hm_agent_free(NULL);
}
END_TEST

START_TEST(list_mounts) {
  hm_agent *a = connect_ok();
  char t[128];
  path_in(t, sizeof(t), "tmpfs");
  ck_assert_int_eq(mkdir(t, 0755), 0);
  ck_assert_int_eq(mount("hm-test", t, "tmpfs", 0, "size=1m"), 0);
  hm_agent_mount_info *v = NULL;
  size_t n = 99;
  hm_error *err = NULL;
  int r = hm_agent_list(a, &v, &n, &err);
  ck_assert_msg(r == 0, "list: %s", hm_error_message(err));
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(strcmp(v[i].fstype, "virtiofs") == 0 || strcmp(v[i].fstype, "9p") == 0 ||
                      strcmp(v[i].fstype, "drvfs") == 0 || strcmp(v[i].fstype, "fuse.sshfs") == 0,
                  "list returned a %s mount", v[i].fstype);
    ck_assert_str_ne(v[i].target, t);
  }
  hm_agent_list_free(v, n);
  umount2(t, MNT_DETACH);
  hm_agent_free(a);
}
END_TEST

static void expect_agent_error(int r, hm_error *err, const char *needle) {
  ck_assert_int_eq(r, HM_E_AGENT);
  ck_assert_error(err, HM_E_AGENT, needle);
}

START_TEST(mount_refused) {
  hm_agent *a = connect_ok();
  struct {
    const char *target, *needle;
  } cases[] = {
      {"/etc/foo", "'/etc/foo' is a system path (at or below /etc)"},
      {"/", "guest path '/' is the root directory"},
      {"/proc/x", "'/proc/x' is a system path"},
      {"/home", "'/home' is a system directory"},
      {"/mnt/../etc", "contains a '..' component"},
      {"relative/x", "is not absolute"},
      {"/mnt/new\nline", "control character"},
  };
  int64_t t0 = hm_now_ms();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    hm_error *err = NULL;
    int r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, "hm-0", cases[i].target, 1, NULL, 5000, &err);
    expect_agent_error(r, err, cases[i].needle);
    ck_assert_error(err, HM_E_AGENT, "hm_agent_mount: guest agent: ");
    ck_assert_error(err, HM_E_AGENT, "(errno ");
    hm_error_free(err);
  }
  /* Refusals do not wait for any device. */
  ck_assert_int_lt(hm_now_ms() - t0, 2000);
  hm_error *err = NULL;
  int r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, "hm-0", "/etc", 1, NULL, 5000, &err);
  expect_agent_error(r, err, "errno 1:");
  hm_error_free(err);
  hm_agent_free(a);
}
END_TEST

START_TEST(mount_bad_request) {
  int r;
  hm_agent *a = connect_ok();
  char t[128];
  path_in(t, sizeof(t), "m");
  hm_error *err = NULL;
  r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, "hm-0", t, 1, "rw", 5000, &err);
  expect_agent_error(r, err, "virtiofs option 'rw' is not allowed");
  hm_error_free(err);
  err = NULL;
  r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, "bad tag", t, 1, NULL, 5000, &err);
  expect_agent_error(r, err, "outside [A-Za-z0-9._-]");
  hm_error_free(err);
  err = NULL;
  /* 9p: the agent builds the transport itself; the host only picks options. */
  static const struct {
    const char *options, *needle;
  } bad9p[] = {
      {"trans=tcp", "9p option 'trans=tcp' is not allowed"},
      {"rfdno=0,wfdno=1", "9p option 'rfdno=0' is not allowed"},
      {"cache=mmap,wfdno=1", "9p option 'wfdno=1' is not allowed"},
      {"dfltuid=0", "9p option 'dfltuid=0' is not allowed"},
      {"uname=a b", "9p option 'uname=a b' has a value"},
      {"aname=rel", "9p option 'aname=rel' has a value"},
      {"cache=mmap\ntrans=tcp", "9p option 'cache=mmap?trans=tcp' has a value"},
      {"msize=262144,rw", "9p option 'rw' is not allowed"},
  };
  for (size_t i = 0; i < sizeof(bad9p) / sizeof(bad9p[0]); i++) {
    int64_t t0 = hm_now_ms();
    r = hm_agent_mount(a, HM_TYPE_9P, "org.hotmount.9p.0", t, 1, bad9p[i].options, 5000, &err);
    expect_agent_error(r, err, bad9p[i].needle);
    ck_assert_error(err, HM_E_AGENT, "(errno 22");
    /* Refused before any waiting for the port. */
    ck_assert_int_lt(hm_now_ms() - t0, 2000);
    hm_error_free(err);
    err = NULL;
  }
  r = hm_agent_mount(a, HM_TYPE_9P, "org.hotmount.9p,0", t, 1, NULL, 5000, &err);
  expect_agent_error(r, err, "port name has a character outside [A-Za-z0-9._-] at byte 15");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_agent_mount(a, HM_TYPE_REVERSE_SSHFS, "x", t, 1, NULL, 10, &err),
                   HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_agent_umount(a, t, 8, 1000, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "unknown flags");
  hm_error_free(err);
  /* Nothing was left behind by the refused requests. */
  struct stat st;
  ck_assert_int_eq(stat(t, &st), -1);
  hm_agent_free(a);
}
END_TEST

START_TEST(mount_tag_never_appears) {
  hm_agent *a = connect_ok();
  char t[128], top[128];
  path_in(top, sizeof(top), "deep");
  path_in(t, sizeof(t), "deep/er/mnt");
  hm_error *err = NULL;
  int64_t t0 = hm_now_ms();
  int r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, NEVER_TAG, t, 1, NULL, 800, &err);
  int64_t took = hm_now_ms() - t0;
  ck_assert_int_eq(r, HM_E_TIMEOUT);
  ck_assert_error(err, HM_E_TIMEOUT, "virtiofs tag '" NEVER_TAG "' did not appear within 800 ms");
  ck_assert_error(err, HM_E_TIMEOUT, "errno 110");
  ck_assert_int_ge(took, 800);
  ck_assert_int_lt(took, 800 + 1500);
  /* The directories the agent created for it are gone again. */
  struct stat st;
  ck_assert_int_eq(stat(top, &st), -1);
  ck_assert_int_eq(hm_agent_is_connected(a), 1);
  hm_error_free(err);
  hm_agent_free(a);
}
END_TEST

/* A 9p mount whose port never shows up times out naming the port, and takes
 * back the directories it made. */
START_TEST(mount_9p_port_never_appears) {
  hm_agent *a = connect_ok();
  char t[128], top[128];
  path_in(top, sizeof(top), "p9");
  path_in(t, sizeof(t), "p9/mnt");
  hm_error *err = NULL;
  int64_t t0 = hm_now_ms();
  int r = hm_agent_mount(a, HM_TYPE_9P, "org.hotmount.9p.never-42", t, 0,
                         "version=9p2000.L,msize=262144,cache=mmap", 700, &err);
  int64_t took = hm_now_ms() - t0;
  ck_assert_int_eq(r, HM_E_TIMEOUT);
  ck_assert_error(err, HM_E_TIMEOUT,
                  "virtio-serial port 'org.hotmount.9p.never-42' did not appear within 700 ms");
  ck_assert_error(err, HM_E_TIMEOUT, "errno 110");
  ck_assert_int_ge(took, 700);
  ck_assert_int_lt(took, 700 + 1500);
  struct stat st;
  ck_assert_int_eq(stat(top, &st), -1);
  ck_assert_int_eq(hm_agent_is_connected(a), 1);
  hm_error_free(err);
  hm_agent_free(a);
}
END_TEST

START_TEST(umount_not_mounted) {
  int r;
  hm_agent *a = connect_ok();
  char t[128];
  path_in(t, sizeof(t), "plain");
  ck_assert_int_eq(mkdir(t, 0755), 0);
  hm_error *err = NULL;
  r = hm_agent_umount(a, t, 0, 5000, &err);
  expect_agent_error(r, err, "plain is not mounted");
  ck_assert_error(err, HM_E_AGENT, "errno 22");
  hm_error_free(err);
  err = NULL;
  path_in(t, sizeof(t), "absent");
  r = hm_agent_umount(a, t, HM_REMOVE_LAZY, 5000, &err);
  expect_agent_error(r, err, "absent: no such directory");
  hm_error_free(err);
  err = NULL;
  r = hm_agent_umount(a, "/proc", 0, 5000, &err);
  expect_agent_error(r, err, "system path");
  hm_error_free(err);
  err = NULL;
  /* A mount hotmount did not make (tmpfs) is not the agent's to remove. */
  path_in(t, sizeof(t), "tmpfs");
  ck_assert_int_eq(mkdir(t, 0755), 0);
  ck_assert_int_eq(mount("hm-test", t, "tmpfs", 0, "size=1m"), 0);
  r = hm_agent_umount(a, t, HM_REMOVE_FORCE, 5000, &err);
  expect_agent_error(r, err, "refusing to unmount");
  ck_assert_error(err, HM_E_AGENT, "tmpfs");
  hm_error_free(err);
  ck_assert_int_eq(umount2(t, 0), 0);
  hm_agent_free(a);
}
END_TEST

struct slow_mount {
  hm_agent *a;
  int timeout_ms;
  char target[128];
  int rc;
  char msg[512];
  int64_t took;
  volatile int done;
};

static void *slow_mount_main(void *arg) {
  struct slow_mount *s = arg;
  hm_error *err = NULL;
  int64_t t0 = hm_now_ms();
  s->rc =
      hm_agent_mount(s->a, HM_TYPE_VIRTIOFS, NEVER_TAG, s->target, 0, NULL, s->timeout_ms, &err);
  s->took = hm_now_ms() - t0;
  snprintf(s->msg, sizeof(s->msg), "%s", hm_error_message(err));
  hm_error_free(err);
  __atomic_store_n(&s->done, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

struct lister {
  hm_agent *a;
  int failures;
};

static void *lister_main(void *arg) {
  struct lister *l = arg;
  for (int i = 0; i < 20; i++) {
    hm_agent_mount_info *v;
    size_t n;
    if (hm_agent_list(l->a, &v, &n, NULL) < 0)
      l->failures++;
    else
      hm_agent_list_free(v, n);
  }
  return NULL;
}

START_TEST(concurrent_by_id) {
  int r;
  hm_agent *a = connect_ok();
  struct slow_mount s = {.a = a, .timeout_ms = 1500};
  path_in(s.target, sizeof(s.target), "slow");
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, slow_mount_main, &s), 0);
  usleep(100000);
  /* Later requests are answered while the mount is still waiting. */
  int64_t t0 = hm_now_ms();
  char p[128];
  path_in(p, sizeof(p), "absent");
  for (int i = 0; i < 5; i++) {
    hm_agent_mount_info *v;
    size_t n;
    ck_assert_int_eq(hm_agent_list(a, &v, &n, NULL), 0);
    hm_agent_list_free(v, n);
    hm_error *err = NULL;
    ck_assert_int_eq(hm_agent_umount(a, p, 0, 5000, &err), HM_E_AGENT);
    hm_error_free(err);
  }
  ck_assert_int_lt(hm_now_ms() - t0, 1000);
  ck_assert_int_eq(__atomic_load_n(&s.done, __ATOMIC_SEQ_CST), 0);
  /* A second mount of the same target while the first waits is refused. */
  hm_error *err = NULL;
  r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, NEVER_TAG, s.target, 0, NULL, 5000, &err);
  expect_agent_error(r, err, "another request is working on this target");
  hm_error_free(err);

  struct lister ls[8];
  pthread_t lt[8];
  for (int i = 0; i < 8; i++) {
    ls[i] = (struct lister){.a = a};
    ck_assert_int_eq(pthread_create(&lt[i], NULL, lister_main, &ls[i]), 0);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(lt[i], NULL);
    ck_assert_int_eq(ls[i].failures, 0);
  }
  pthread_join(t, NULL);
  ck_assert_msg(s.rc == HM_E_TIMEOUT, "slow mount: %d %s", s.rc, s.msg);
  ck_assert_ptr_nonnull(strstr(s.msg, NEVER_TAG));
  hm_agent_free(a);
}
END_TEST

START_TEST(agent_killed_mid_request) {
  hm_agent *a = connect_ok();
  struct slow_mount s = {.a = a, .timeout_ms = 20000};
  path_in(s.target, sizeof(s.target), "killed");
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, slow_mount_main, &s), 0);
  usleep(300000);
  ck_assert_int_eq(kill(agent_pid, SIGKILL), 0);
  waitpid(agent_pid, NULL, 0);
  agent_pid = -1;
  pthread_join(t, NULL);
  ck_assert_msg(s.rc == HM_E_NOT_READY, "mount: %d %s", s.rc, s.msg);
  ck_assert_ptr_nonnull(strstr(s.msg, "closed"));
  ck_assert_int_lt(s.took, 2000);
  ck_assert_int_eq(hm_agent_is_connected(a), 0);
  hm_agent_mount_info *v;
  size_t n;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_agent_list(a, &v, &n, &err), HM_E_NOT_READY);
  ck_assert_error(err, HM_E_NOT_READY, "connection is closed");
  hm_error_free(err);
  hm_agent_free(a);
}
END_TEST

/* ---- bind mounts, against the real agent taking ramfs as a share ---- */

static void start_agent_bind(void) {
  agent_opt = "--bind-test-fstype";
  agent_optarg = "ramfs";
  start_agent();
  agent_opt = agent_optarg = NULL;
}

static void write_file(const char *dir, const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  ck_assert_msg(f != NULL, "%s: %s", p, strerror(errno));
  fputs(text, f);
  ck_assert_int_eq(fclose(f), 0);
}

static int read_is(const char *dir, const char *name, const char *text) {
  char p[512], buf[256] = "";
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  FILE *f = fopen(p, "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strcmp(buf, text) == 0;
}

static int is_mount_point(const char *path) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  char line[4096], a[4096];
  int found = 0;
  while (f && fgets(line, sizeof(line), f))
    found |= sscanf(line, "%*s %*s %*s %*s %4095s", a) == 1 && strcmp(a, path) == 0;
  if (f)
    fclose(f);
  return found;
}

/* share = a ramfs (what the test agent takes as a share) holding proj/. */
static void make_share(char *share, size_t size) {
  path_in(share, size, "share");
  ck_assert_int_eq(mkdir(share, 0755), 0);
  ck_assert_int_eq(mount("hm-test-share", share, "ramfs", 0, NULL), 0);
  char proj[256];
  snprintf(proj, sizeof(proj), "%s/proj", share);
  ck_assert_int_eq(mkdir(proj, 0755), 0);
  write_file(proj, "f", "hello");
}

START_TEST(bind_read_only_and_writable) {
  hm_agent *a = connect_ok();
  ck_assert(hm_agent_has_capability(a, "mount.bind"));
  char share[256], proj[300], mnt[256], mnt_top[256];
  make_share(share, sizeof(share));
  snprintf(proj, sizeof(proj), "%s/proj", share);
  path_in(mnt_top, sizeof(mnt_top), "mnt");
  path_in(mnt, sizeof(mnt), "mnt/proj");
  hm_error *err = NULL;

  int r = hm_agent_mount(a, HM_TYPE_BIND, proj, mnt, 1, NULL, 5000, &err);
  ck_assert_msg(r == 0, "bind: %s", hm_error_message(err));
  ck_assert(is_mount_point(mnt));
  ck_assert(read_is(mnt, "f", "hello"));
  /* The share's later writes show through; the bind itself is read-only,
   * nosuid, nodev. */
  write_file(proj, "g", "from the share");
  ck_assert(read_is(mnt, "g", "from the share"));
  char p[512];
  snprintf(p, sizeof(p), "%s/h", mnt);
  ck_assert_int_lt(open(p, O_WRONLY | O_CREAT, 0644), 0);
  ck_assert_int_eq(errno, EROFS);
  struct statvfs sv;
  ck_assert_int_eq(statvfs(mnt, &sv), 0);
  ck_assert(sv.f_flag & ST_RDONLY);
  ck_assert(sv.f_flag & ST_NOSUID);
  ck_assert(sv.f_flag & ST_NODEV);
  /* A second mount on the same point is refused. */
  r = hm_agent_mount(a, HM_TYPE_BIND, proj, mnt, 1, NULL, 5000, &err);
  expect_agent_error(r, err, "already a mount point");
  hm_error_free(err);
  err = NULL;

  r = hm_agent_umount(a, mnt, 0, 5000, &err);
  ck_assert_msg(r == 0, "umount: %s", hm_error_message(err));
  ck_assert(!is_mount_point(mnt));
  /* The directories the agent made are gone again. */
  ck_assert_int_lt(access(mnt_top, F_OK), 0);

  r = hm_agent_mount(a, HM_TYPE_BIND, proj, mnt, 0, NULL, 5000, &err);
  ck_assert_msg(r == 0, "writable bind: %s", hm_error_message(err));
  write_file(mnt, "w", "from the bind");
  ck_assert(read_is(proj, "w", "from the bind"));
  ck_assert_int_eq(statvfs(mnt, &sv), 0);
  ck_assert(!(sv.f_flag & ST_RDONLY));
  ck_assert(sv.f_flag & ST_NOSUID);
  r = hm_agent_umount(a, mnt, 0, 5000, &err);
  ck_assert_msg(r == 0, "umount: %s", hm_error_message(err));
  umount2(share, MNT_DETACH);
  hm_agent_free(a);
}
END_TEST

START_TEST(bind_refused) {
  hm_agent *a = connect_ok();
  char share[256], plain[256], src[512], mnt[256], mnt_top[256];
  make_share(share, sizeof(share));
  path_in(plain, sizeof(plain), "plain");
  ck_assert_int_eq(mkdir(plain, 0755), 0);
  path_in(mnt_top, sizeof(mnt_top), "mnt");
  path_in(mnt, sizeof(mnt), "mnt/x");
  struct {
    const char *src_fmt; /* %s: share, or plain for the first */
    const char *needle;
  } cases[] = {
      {"%s", "not inside a share the host gave the guest"}, /* plain: on /tmp's file system */
      {"%s/missing", "no such directory"},
      {"%s/link", "is a symbolic link"},   /* -> proj, inside the share */
      {"%s/out", "is a symbolic link"},    /* -> /etc, out of it */
      {"%s/link/f", "is a symbolic link"}, /* a link on the way */
      {"%s/proj/f", "not a directory"},
      {"%s/proj/../proj", "'..'"},
      {"relative/%s", "absolute"},
  };
  char lnk[300];
  snprintf(lnk, sizeof(lnk), "%s/link", share);
  ck_assert_int_eq(symlink("proj", lnk), 0);
  snprintf(lnk, sizeof(lnk), "%s/out", share);
  ck_assert_int_eq(symlink("/etc", lnk), 0);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    snprintf(src, sizeof(src), cases[i].src_fmt, i == 0 ? plain : share);
    hm_error *err = NULL;
    int r = hm_agent_mount(a, HM_TYPE_BIND, src, mnt, 1, NULL, 5000, &err);
    ck_assert_msg(r == HM_E_AGENT, "case %zu (%s): %d %s", i, src, r, hm_error_message(err));
    ck_assert_msg(strstr(hm_error_message(err), cases[i].needle), "case %zu: '%s' lacks '%s'", i,
                  hm_error_message(err), cases[i].needle);
    hm_error_free(err);
    /* Nothing left: no mount, no directory. */
    ck_assert(!is_mount_point(mnt));
    ck_assert_msg(access(mnt_top, F_OK) < 0, "case %zu left %s", i, mnt_top);
  }
  /* The mount point may not lie inside the source (it would be made in the
   * share, on the host's disk). */
  char inside[512];
  snprintf(src, sizeof(src), "%s/proj", share);
  snprintf(inside, sizeof(inside), "%s/proj/sub", share);
  hm_error *err = NULL;
  int r = hm_agent_mount(a, HM_TYPE_BIND, src, inside, 1, NULL, 5000, &err);
  expect_agent_error(r, err, "lies inside the source");
  hm_error_free(err);
  err = NULL;
  /* A bind of a system path is refused like any mount. */
  r = hm_agent_mount(a, HM_TYPE_BIND, src, "/etc", 1, NULL, 5000, &err);
  expect_agent_error(r, err, "/etc");
  hm_error_free(err);
  err = NULL;
  /* A share mounted read-only is not made writable through a bind. */
  ck_assert_int_eq(mount(NULL, share, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
  r = hm_agent_mount(a, HM_TYPE_BIND, src, mnt, 0, NULL, 5000, &err);
  expect_agent_error(r, err, "is on a read-only mount");
  hm_error_free(err);
  err = NULL;
  ck_assert(!is_mount_point(mnt));
  ck_assert_int_lt(access(mnt_top, F_OK), 0);
  r = hm_agent_mount(a, HM_TYPE_BIND, src, mnt, 1, NULL, 5000, &err);
  ck_assert_msg(r == 0, "read-only bind of a read-only share: %s", hm_error_message(err));
  ck_assert_int_eq(hm_agent_umount(a, mnt, 0, 5000, NULL), 0);
  umount2(share, MNT_DETACH);
  hm_agent_free(a);
}
END_TEST

/* ---- scripted peers ---- */

enum fake_mode { FAKE_DROP_FIRST, FAKE_MAJOR_2, FAKE_REFUSE, FAKE_SILENT, FAKE_OLD };

struct fake {
  int lfd;
  enum fake_mode mode;
  int hellos;
};

static int read_line(int fd, char *buf, size_t size) {
  size_t o = 0;
  while (o + 1 < size) {
    ssize_t n = read(fd, buf + o, 1);
    if (n <= 0)
      return -1;
    if (buf[o] == '\n')
      break;
    o++;
  }
  buf[o] = '\0';
  return 0;
}

static void *fake_main(void *arg) {
  struct fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  char line[4096], out[1024];
  while (fd >= 0 && read_line(fd, line, sizeof(line)) == 0) {
    f->hellos++;
    hm_agent_request req;
    if (hm_agent_request_decode(&req, line, strlen(line), NULL) < 0)
      break;
    long long id = (long long)req.id;
    hm_agent_request_clear(&req);
    /* Like virtio-serial while the guest has the port closed: lost. */
    if (f->mode == FAKE_SILENT || (f->mode == FAKE_DROP_FIRST && f->hellos == 1))
      continue;
    if (f->mode == FAKE_REFUSE)
      snprintf(out, sizeof(out),
               "{\"id\":%lld,\"ok\":false,\"errno\":93,\"error\":\"hello: host too old\"}\n", id);
    else
      snprintf(out, sizeof(out),
               "{\"id\":%lld,\"ok\":true,\"major\":%d,\"minor\":0,\"agent\":\"fake\","
               "\"agent_version\":\"9.9\",\"capabilities\":[]}\n",
               id, f->mode == FAKE_MAJOR_2 ? 2 : 1);
    if (write(fd, out, strlen(out)) < 0)
      break;
  }
  /* Hold the connection until the client goes. */
  while (fd >= 0 && read(fd, line, sizeof(line)) > 0)
    ;
  if (fd >= 0)
    close(fd);
  return NULL;
}

static int fake_connect(enum fake_mode mode, int timeout_ms, hm_agent **a, hm_error **err,
                        int *hellos) {
  make_tmpdir();
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fake.sock", tmpdir);
  struct fake f = {.mode = mode};
  f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(f.lfd, 1), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, fake_main, &f), 0);
  int r = hm_agent_connect(a, sa.sun_path, timeout_ms, err);
  hm_agent_free(*a);
  *a = NULL;
  pthread_join(t, NULL);
  close(f.lfd);
  *hellos = f.hellos;
  return r;
}

START_TEST(hello_resent) {
  hm_agent *a;
  hm_error *err = NULL;
  int hellos = 0;
  int r = fake_connect(FAKE_DROP_FIRST, 3000, &a, &err, &hellos);
  ck_assert_msg(r == 0, "connect: %s", hm_error_message(err));
  ck_assert_int_ge(hellos, 2);
}
END_TEST

START_TEST(hello_mismatch) {
  hm_agent *a;
  hm_error *err = NULL;
  int hellos = 0;
  ck_assert_int_eq(fake_connect(FAKE_MAJOR_2, 3000, &a, &err, &hellos), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "speaks protocol 2.0, this host 1.1");
  hm_error_free(err);
  err = NULL;
  stop_agent();
  ck_assert_int_eq(fake_connect(FAKE_REFUSE, 3000, &a, &err, &hellos), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "refused protocol 1.1: hello: host too old");
  hm_error_free(err);
}
END_TEST

/* An agent without mount.bind: refused on the host with what to do, before
 * anything is sent. */
START_TEST(bind_old_agent) {
  make_tmpdir();
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fake.sock", tmpdir);
  struct fake f = {.mode = FAKE_OLD};
  f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(f.lfd, 1), 0);
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, fake_main, &f), 0);
  hm_agent *a = NULL;
  hm_error *err = NULL;
  int r = hm_agent_connect(&a, sa.sun_path, 3000, &err);
  ck_assert_msg(r == 0, "connect: %s", hm_error_message(err));
  r = hm_agent_mount(a, HM_TYPE_BIND, "/srv/share/x", "/mnt/x", 1, NULL, 1000, &err);
  ck_assert_int_eq(r, HM_E_AGENT);
  ck_assert_error(err, HM_E_AGENT, "lacks mount.bind); update it in the guest");
  hm_error_free(err);
  ck_assert_int_eq(f.hellos, 1); /* no mount request reached it */
  hm_agent_free(a);
  pthread_join(t, NULL);
  close(f.lfd);
}
END_TEST

START_TEST(hello_timeout) {
  hm_agent *a;
  hm_error *err = NULL;
  int hellos = 0;
  int64_t t0 = hm_now_ms();
  ck_assert_int_eq(fake_connect(FAKE_SILENT, 700, &a, &err, &hellos), HM_E_TIMEOUT);
  int64_t took = hm_now_ms() - t0;
  ck_assert_error(err, HM_E_TIMEOUT, "did not answer hello within 700 ms");
  ck_assert_int_ge(took, 700);
  ck_assert_int_lt(took, 1500);
  ck_assert_int_ge(hellos, 2);
  hm_error_free(err);
}
END_TEST

/* The real agent, spoken to byte by byte: bad input gets an answer, and the
 * agent keeps serving. */
START_TEST(agent_raw_protocol) {
  int fd = try_connect(sock_path);
  ck_assert_int_ge(fd, 0);
  const char *in = "garbage\n"
                   "{\"id\":5,\"op\":\"hello\",\"major\":2,\"minor\":0}\n"
                   "{\"id\":6,\"op\":\"format-disk\"}\n"
                   "\n"
                   "{\"id\":7,\"op\":\"hello\",\"major\":1,\"minor\":9}\n";
  ck_assert_int_eq(write(fd, in, strlen(in)), (ssize_t)strlen(in));
  char line[4096];
  hm_agent_response r;
  ck_assert_int_eq(read_line(fd, line, sizeof(line)), 0);
  ck_assert_int_eq(hm_agent_response_decode(&r, HM_AGENT_OP_LIST, line, strlen(line), NULL), 0);
  ck_assert_int_eq(r.id, 0);
  ck_assert_int_eq(r.err_no, EINVAL);
  ck_assert_ptr_nonnull(strstr(r.error, "not valid JSON"));
  hm_agent_response_clear(&r);
  ck_assert_int_eq(read_line(fd, line, sizeof(line)), 0);
  ck_assert_int_eq(hm_agent_response_decode(&r, HM_AGENT_OP_HELLO, line, strlen(line), NULL), 0);
  ck_assert_int_eq(r.id, 5);
  ck_assert_int_eq(r.err_no, EPROTONOSUPPORT);
  ck_assert_ptr_nonnull(strstr(r.error, "major versions must match"));
  hm_agent_response_clear(&r);
  ck_assert_int_eq(read_line(fd, line, sizeof(line)), 0);
  ck_assert_int_eq(hm_agent_response_decode(&r, HM_AGENT_OP_LIST, line, strlen(line), NULL), 0);
  ck_assert_int_eq(r.id, 6);
  ck_assert_int_eq(r.err_no, ENOSYS);
  ck_assert_ptr_nonnull(strstr(r.error, "unknown op 'format-disk'"));
  hm_agent_response_clear(&r);
  ck_assert_int_eq(read_line(fd, line, sizeof(line)), 0);
  ck_assert_int_eq(hm_agent_response_decode(&r, HM_AGENT_OP_HELLO, line, strlen(line), NULL), 0);
  ck_assert_int_eq(r.id, 7);
  ck_assert_int_eq(r.ok, 1);
  ck_assert_int_eq(r.major, HM_AGENT_PROTO_MAJOR);
  hm_agent_response_clear(&r);
  close(fd);
}
END_TEST

Suite *client_suite(void) {
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("real-agent");
  tcase_add_checked_fixture(tc, start_agent, stop_agent);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, hello_version);
  tcase_add_test(tc, connect_errors);
  tcase_add_test(tc, list_mounts);
  tcase_add_test(tc, mount_refused);
  tcase_add_test(tc, mount_bad_request);
  tcase_add_test(tc, mount_tag_never_appears);
  tcase_add_test(tc, mount_9p_port_never_appears);
  tcase_add_test(tc, umount_not_mounted);
  tcase_add_test(tc, concurrent_by_id);
  tcase_add_test(tc, agent_killed_mid_request);
  tcase_add_test(tc, agent_raw_protocol);
  suite_add_tcase(s, tc);
  tc = tcase_create("scripted-peer");
  tcase_add_checked_fixture(tc, NULL, stop_agent);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, hello_resent);
  tcase_add_test(tc, hello_mismatch);
  tcase_add_test(tc, hello_timeout);
  tcase_add_test(tc, bind_old_agent);
  suite_add_tcase(s, tc);
  tc = tcase_create("real-agent-bind");
  tcase_add_checked_fixture(tc, start_agent_bind, stop_agent);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, bind_read_only_and_writable);
  tcase_add_test(tc, bind_refused);
  suite_add_tcase(s, tc);
  return s;
}
