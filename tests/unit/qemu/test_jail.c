/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The helpers' confinement (jail.h) with real programs in real namespaces
 * (coreutils as stand-in helpers, their output on a socketpair): the share
 * is bound from the directory opened once, so swapping a parent for a
 * symlink afterwards changes nothing; the bind is nosuid, nodev, read-only
 * when asked; the filter refuses setuid/setgid modes and device nodes and
 * lets plain modes and FIFOs through; the bounding set and no_new_privs are
 * what was asked; no descriptor of ours reaches the helper. Needs root
 * (mount namespaces); skipped otherwise.
 */
#include "jail.h"
#include "spawn.h"
#include "sshfs_internal.h"
#include "test_user.h"

#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char top[256];

static void put(const char *dir, const char *name, const char *text) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static void setup(void) {
  snprintf(top, sizeof(top), "/tmp/hm-jail-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(top));
  char p[512];
  snprintf(p, sizeof(p), "%s/a", top);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  snprintf(p, sizeof(p), "%s/a/share", top);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  put(p, "f", "original\n");
}

static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
  ck_assert_int_eq(system(cmd), 0);
}

/* Runs argv under share/confine; returns its exit status, its stdout in out. */
static int run(char *const *argv, hm_share *share, const hm_confine *confine, char *out,
               size_t size) {
  hm_spawn_opts o = {.argv = (char **)argv, .share = share, .confine = confine};
  return hm_test_spawn_output(&o, 0, out, size);
}

static void share_path(char *p, size_t size) {
  snprintf(p, size, "%s/a/share", top);
}

START_TEST(test_share_open_refuses_links) {
  char link[512], p[512];
  share_path(p, sizeof(p));
  snprintf(link, sizeof(link), "%s/link", top);
  ck_assert_int_eq(symlink(p, link), 0);
  hm_share s;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_share_open(&s, link, 1, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "hm_share_open: "));
  hm_error_free(err);
  err = NULL;
  /* A symlink in a parent component too. */
  char plink[512];
  snprintf(link, sizeof(link), "%s/alink", top);
  snprintf(p, sizeof(p), "%s/a", top);
  ck_assert_int_eq(symlink(p, link), 0);
  snprintf(plink, sizeof(plink), "%s/alink/share", top);
  ck_assert_int_eq(hm_share_open(&s, plink, 1, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "symbolic link"));
  hm_error_free(err);
  err = NULL;
  snprintf(p, sizeof(p), "%s/a/share/f", top);
  ck_assert_int_eq(hm_share_open(&s, p, 1, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  /* Not normalized: the staging path must not climb out of its tmpfs. */
  snprintf(p, sizeof(p), "%s/a/../a/share", top);
  ck_assert_int_eq(hm_share_open(&s, p, 1, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "not a normalized absolute path"));
  hm_error_free(err);
  ck_assert_int_eq(hm_share_open(&s, "a/share", 1, NULL), HM_E_INVALID);
}
END_TEST

/* The parent swapped for a symlink after the open: the helper still gets
 * the directory that was opened. */
START_TEST(test_swap_after_open) {
  char p[512], moved[512], evil[512], a[512], out[4096];
  share_path(p, sizeof(p));
  hm_share s;
  ck_assert_int_eq(hm_share_open(&s, p, 1, NULL), 0);
  snprintf(a, sizeof(a), "%s/a", top);
  snprintf(moved, sizeof(moved), "%s/a-moved", top);
  snprintf(evil, sizeof(evil), "%s/evil", top);
  ck_assert_int_eq(rename(a, moved), 0);
  ck_assert_int_eq(mkdir(evil, 0755), 0);
  snprintf(p, sizeof(p), "%s/evil/share", top);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  put(p, "f", "swapped in\n");
  ck_assert_int_eq(symlink(evil, a), 0);
  char f[sizeof(s.stage) + 8];
  snprintf(f, sizeof(f), "%s/f", s.stage);
  char *argv[] = {"/bin/cat", f, NULL};
  ck_assert_int_eq(run(argv, &s, NULL, out, sizeof(out)), 0);
  ck_assert_str_eq(out, "original\n");
  hm_share_close(&s);
}
END_TEST

START_TEST(test_bind_flags) {
  char p[512], out[16384];
  share_path(p, sizeof(p));
  for (int ro = 0; ro <= 1; ro++) {
    hm_share s;
    ck_assert_int_eq(hm_share_open(&s, p, ro, NULL), 0);
    char script[2 * PATH_MAX + 128];
    snprintf(script, sizeof(script),
             "grep ' %s ' /proc/self/mountinfo; echo new > '%s/new' 2>/dev/null && echo wrote",
             s.stage, s.stage);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    run(argv, &s, NULL, out, sizeof(out));
    ck_assert_msg(strstr(out, "nosuid") && strstr(out, "nodev"), "%s", out);
    ck_assert_msg(strstr(out, ro ? " ro," : " rw,") != NULL, "%s", out);
    char np[600];
    snprintf(np, sizeof(np), "%s/new", p);
    ck_assert_int_eq(access(np, F_OK) == 0, !ro);
    ck_assert_int_eq(strstr(out, "wrote") != NULL, !ro);
    unlink(np);
    hm_share_close(&s);
  }
}
END_TEST

static const hm_confine filter_only = {.filter = 1};

START_TEST(test_filter) {
  char p[512], out[4096], f[PATH_MAX + 8], dev[PATH_MAX + 8], fifo[PATH_MAX + 8];
  share_path(p, sizeof(p));
  hm_share s;
  ck_assert_int_eq(hm_share_open(&s, p, 0, NULL), 0);
  snprintf(f, sizeof(f), "%s/f", s.stage);
  char hf[600];
  snprintf(hf, sizeof(hf), "%s/f", p);
  struct stat st;
  /* setuid, setgid: refused; a plain mode: done. */
  const char *const modes[] = {"4755", "2755", "6777"};
  for (size_t i = 0; i < 3; i++) {
    char *argv[] = {"/bin/chmod", (char *)modes[i], f, NULL};
    ck_assert_int_ne(run(argv, &s, &filter_only, out, sizeof(out)), 0);
    ck_assert_int_eq(stat(hf, &st), 0);
    ck_assert_int_eq(st.st_mode & 06000, 0);
  }
  char *plain[] = {"/bin/chmod", "700", f, NULL};
  ck_assert_int_eq(run(plain, &s, &filter_only, out, sizeof(out)), 0);
  ck_assert_int_eq(stat(hf, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0700);
  /* Devices: refused; a FIFO: made. */
  snprintf(dev, sizeof(dev), "%s/dev", s.stage);
  char *mkc[] = {"/bin/mknod", dev, "c", "1", "3", NULL};
  ck_assert_int_ne(run(mkc, &s, &filter_only, out, sizeof(out)), 0);
  char *mkb[] = {"/bin/mknod", dev, "b", "7", "0", NULL};
  ck_assert_int_ne(run(mkb, &s, &filter_only, out, sizeof(out)), 0);
  snprintf(hf, sizeof(hf), "%s/dev", p);
  ck_assert_int_ne(lstat(hf, &st), 0);
  snprintf(fifo, sizeof(fifo), "%s/fifo", s.stage);
  char *mkp[] = {"/bin/mknod", fifo, "p", NULL};
  ck_assert_int_eq(run(mkp, &s, &filter_only, out, sizeof(out)), 0);
  snprintf(hf, sizeof(hf), "%s/fifo", p);
  ck_assert_int_eq(lstat(hf, &st), 0);
  ck_assert(S_ISFIFO(st.st_mode));
  /* A new file created with a setuid mode: refused. */
  char script[PATH_MAX + 64];
  snprintf(script, sizeof(script), "install -m 4755 /dev/null '%s/su'", s.stage);
  char *inst[] = {"/bin/sh", "-c", script, NULL};
  run(inst, &s, &filter_only, out, sizeof(out));
  snprintf(hf, sizeof(hf), "%s/su", p);
  ck_assert(lstat(hf, &st) != 0 || (st.st_mode & 06000) == 0);
  hm_share_close(&s);
}
END_TEST

START_TEST(test_caps_and_fds) {
  char out[8192];
  /* A descriptor of ours without close-on-exec. */
  char leak[512];
  snprintf(leak, sizeof(leak), "%s/leak", top);
  int fd = open(leak, O_WRONLY | O_CREAT, 0600);
  ck_assert_int_ge(fd, 3);
  int high = dup2(fd, 77);
  ck_assert_int_eq(high, 77);
  hm_confine c = {.drop_caps = 1, .keep_caps = HM_CAP(CAP_SETUID) | HM_CAP(CAP_CHOWN), .filter = 1};
  char *argv[] = {"/bin/sh", "-c",
                  "grep -E '^(CapBnd|CapPrm|CapInh|NoNewPrivs|Seccomp):' "
                  "/proc/self/status; ls /proc/self/fd | tr '\\n' ' '",
                  NULL};
  ck_assert_int_eq(run(argv, NULL, &c, out, sizeof(out)), 0);
  ck_assert_msg(strstr(out, "CapBnd:\t0000000000000081"), "%s", out);
  ck_assert_msg(strstr(out, "CapPrm:\t0000000000000081"), "%s", out);
  ck_assert_msg(strstr(out, "CapInh:\t0000000000000000"), "%s", out);
  ck_assert_msg(strstr(out, "NoNewPrivs:\t1"), "%s", out);
  ck_assert_msg(strstr(out, "Seccomp:\t2"), "%s", out);
  ck_assert_msg(!strstr(out, " 77 "), "%s", out);
  close(fd);
  close(high);
}
END_TEST

/* One SFTP packet: length, type, body; the answer's type and body. */
static int sftp_rpc(int fd, unsigned char type, const void *body, size_t len, unsigned char *out,
                    size_t size) {
  unsigned char h[5];
  uint32_t n = htonl((uint32_t)len + 1);
  memcpy(h, &n, 4);
  h[4] = type;
  ck_assert_int_eq(write(fd, h, 5), 5);
  ck_assert_int_eq(write(fd, body, len), (ssize_t)len);
  ck_assert_int_eq(read(fd, h, 4), 4);
  memcpy(&n, h, 4);
  size_t want = ntohl(n), got = 0;
  ck_assert_uint_le(want, size);
  while (got < want) {
    ssize_t r = read(fd, out + got, want - got);
    ck_assert_int_gt(r, 0);
    got += (size_t)r;
  }
  return out[0];
}

/* SSH_FXP_SETSTAT of path's permissions; the SSH_FXP_STATUS code. */
static uint32_t sftp_chmod(int fd, const char *path, uint32_t mode) {
  unsigned char b[512], r[512];
  size_t plen = strlen(path), k = 0;
  uint32_t v = htonl(7); /* request id */
  memcpy(b + k, &v, 4), k += 4;
  v = htonl((uint32_t)plen);
  memcpy(b + k, &v, 4), k += 4;
  memcpy(b + k, path, plen), k += plen;
  v = htonl(4); /* SSH_FILEXFER_ATTR_PERMISSIONS */
  memcpy(b + k, &v, 4), k += 4;
  v = htonl(mode);
  memcpy(b + k, &v, 4), k += 4;
  ck_assert_int_eq(sftp_rpc(fd, 9 /* SETSTAT */, b, k, r, sizeof(r)), 101 /* STATUS */);
  memcpy(&v, r + 5, 4);
  return ntohl(v);
}

/* The reverse-sshfs server (sftp_jail.c): chrooted, the share nosuid,nodev,
 * /usr read-only, its bounding set, no_new_privs, the filter; spoken to in
 * SFTP, a setuid chmod is refused and a plain one done. */
static void sftp_server_confined(void) {
  const char *sftp = "/usr/lib/openssh/sftp-server";
  if (access(sftp, X_OK) != 0)
    return; /* openssh-sftp-server not installed */
  char p[512], jail[512], f[PATH_MAX], v[256];
  share_path(p, sizeof(p));
  snprintf(jail, sizeof(jail), "%s/jail", top);
  ck_assert_int_eq(mkdir(jail, 0700), 0);
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = -1;
  hm_error *err = NULL;
  ck_assert_msg(hm_sftp_spawn(&pid, sftp, p, 1, sv[1], jail, NULL, &err) == 0, "%s",
                hm_error_message(err));
  close(sv[1]);
  unsigned char init[4] = {0, 0, 0, 3}, r[4096];
  ck_assert_int_eq(sftp_rpc(sv[0], 1 /* INIT */, init, 4, r, sizeof(r)), 2 /* VERSION */);
  char st[64];
  snprintf(st, sizeof(st), "/proc/%d/status", (int)pid);
  FILE *fp = fopen(st, "r");
  ck_assert_ptr_nonnull(fp);
  char line[256];
  int seen = 0;
  while (fgets(line, sizeof(line), fp)) {
    if (sscanf(line, "CapBnd: %255s", v) == 1) {
      seen++;
      ck_assert_str_eq(v, "000000000000000f");
    }
    if (sscanf(line, "NoNewPrivs: %255s", v) == 1) {
      seen++;
      ck_assert_str_eq(v, "1");
    }
    if (sscanf(line, "Seccomp: %255s", v) == 1) {
      seen++;
      ck_assert_str_eq(v, "2");
    }
  }
  fclose(fp);
  ck_assert_int_eq(seen, 3);
  snprintf(st, sizeof(st), "/proc/%d/mountinfo", (int)pid);
  fp = fopen(st, "r");
  ck_assert_ptr_nonnull(fp);
  int share_seen = 0;
  while (fgets(line, sizeof(line), fp)) {
    char mp[256], opts[256];
    if (sscanf(line, "%*s %*s %*s %*s %255s %255s", mp, opts) != 2)
      continue;
    /* Mount points as the chrooted server sees them, or below the jail. */
    const char *m = strncmp(mp, jail, strlen(jail)) == 0 ? mp + strlen(jail) : mp;
    if (strcmp(m, "/share") == 0 || strcmp(m, "/usr") == 0) {
      share_seen += strcmp(m, "/share") == 0;
      ck_assert_msg(strstr(opts, "nosuid") && strstr(opts, "nodev"), "%s", line);
    }
  }
  fclose(fp);
  ck_assert_int_eq(share_seen, 1);
  ck_assert_uint_ne(sftp_chmod(sv[0], "/share/f", 04755), 0);
  ck_assert_uint_ne(sftp_chmod(sv[0], "/share/f", 02755), 0);
  snprintf(f, sizeof(f), "%s/f", p);
  struct stat sb;
  ck_assert_int_eq(stat(f, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 06000, 0);
  ck_assert_uint_eq(sftp_chmod(sv[0], "/share/f", 0700), 0);
  ck_assert_int_eq(stat(f, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 07777, 0700);
  close(sv[0]);
  int ws = 0;
  ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
}

START_TEST(test_sftp_server_confined) {
  sftp_server_confined();
}
END_TEST

/* The same jail without root, in a user namespace (userns.h): run as the
 * user itself, or as root through HM_ROOTLESS_USER (default hmci), to whom
 * this test's forked process switches; skipped without such a user or
 * without subordinate ids. */
START_TEST(test_sftp_server_rootless) {
  if (hm_test_become_user(top) < 0)
    return;
  hm_userns u;
  hm_error *err = NULL;
  if (hm_userns_prepare(&u, "sftp-server", -1, -1, &err) < 0) {
    printf("jail: rootless sftp-server test skipped: %s\n", hm_error_message(err));
    hm_error_free(err);
    return;
  }
  sftp_server_confined();
}
END_TEST

int main(void) {
  Suite *s = suite_create("jail");
  TCase *tc = tcase_create("root");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_sftp_server_rootless);
  if (geteuid() == 0) {
    tcase_add_test(tc, test_share_open_refuses_links);
    tcase_add_test(tc, test_swap_after_open);
    tcase_add_test(tc, test_bind_flags);
    tcase_add_test(tc, test_filter);
    tcase_add_test(tc, test_caps_and_fds);
    tcase_add_test(tc, test_sftp_server_confined);
  } else {
    printf("jail: not root, root's confinement tests skipped\n");
  }
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
