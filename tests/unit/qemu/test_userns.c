/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Rootless helpers (userns.h): the /etc/subuid parser, the map builder, and
 * real helpers in a real user namespace made with newuidmap/newgidmap:
 * /bin/sh and setpriv as stand-ins that report what they see, and QEMU's
 * C virtiofsd itself. Those run as an unprivileged user with subordinate
 * ids: the running user, or (run as root) HM_ROOTLESS_USER (default hmci,
 * which tests/rootless.sh creates), which each such test switches to in
 * its own forked process. Skipped when there is no such user.
 */
#include "spawn.h"
#include "userns.h"
#include "virtiofsd.h"

#include <check.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(test_subid_parse) {
  static const char text[] = "# comment\n"
                             "alice:100000:65536\n"
                             "1001:200000:1000\n"
                             "bob\n"
                             "bob:x:1\n"
                             "bob:5:0\n"
                             "bob:4294967295:2\n"
                             "bob:7:8:9\n"
                             ":1:2\n"
                             "carol:300000:10 \r\n"
                             "alice:900000:1\n";
  uint32_t b = 0, n = 0;
  ck_assert_int_eq(hm_subid_find(text, "alice", 4000, &b, &n), 1);
  ck_assert_uint_eq(b, 100000);
  ck_assert_uint_eq(n, 65536); /* the first line wins */
  ck_assert_int_eq(hm_subid_find(text, "dave", 1001, &b, &n), 1);
  ck_assert_uint_eq(b, 200000);
  ck_assert_uint_eq(n, 1000);
  ck_assert_int_eq(hm_subid_find(text, NULL, 1001, &b, &n), 1);
  ck_assert_int_eq(hm_subid_find(text, "bob", 4000, &b, &n), 0); /* every bob line is malformed */
  ck_assert_int_eq(hm_subid_find(text, "carol", 4000, &b, &n), 1);
  ck_assert_uint_eq(b, 300000);
  ck_assert_uint_eq(n, 10);
  ck_assert_int_eq(hm_subid_find(text, "", 4000, &b, &n), 0);
  ck_assert_int_eq(hm_subid_find("", "alice", 0, &b, &n), 0);
  ck_assert_int_eq(hm_subid_find("alice:1:2", "alice", 0, &b, &n), 1); /* no final newline */
  ck_assert_uint_eq(b, 1);
  ck_assert_uint_eq(n, 2);
}
END_TEST

START_TEST(test_idmap_build) {
  hm_idmap m;
  ck_assert_int_eq(hm_idmap_build(&m, 1000, 0, 100000, 65536, NULL), 0);
  ck_assert_int_eq(m.n, 2);
  ck_assert_uint_eq(hm_idmap_outer(&m, 0), 1000);
  ck_assert_uint_eq(hm_idmap_outer(&m, 1), 100000);
  ck_assert_uint_eq(hm_idmap_outer(&m, 1000), 100999);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65536), 165535);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65537), 65534);

  ck_assert_int_eq(hm_idmap_build(&m, 1001, 1000, 100000, 65536, NULL), 0);
  ck_assert_int_eq(m.n, 3);
  ck_assert_uint_eq(hm_idmap_outer(&m, 0), 100000);
  ck_assert_uint_eq(hm_idmap_outer(&m, 999), 100999);
  ck_assert_uint_eq(hm_idmap_outer(&m, 1000), 1001);
  ck_assert_uint_eq(hm_idmap_outer(&m, 1001), 101000);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65536), 165535);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65537), 65534);
  /* Every outer id once: the kernel refuses overlapping maps. */
  uint32_t total = 0;
  for (int i = 0; i < m.n; i++)
    total += m.r[i].count;
  ck_assert_uint_eq(total, 65537);

  ck_assert_int_eq(hm_idmap_build(&m, 1001, 65536, 100000, 65536, NULL), 0);
  ck_assert_int_eq(m.n, 2);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65536), 1001);
  ck_assert_uint_eq(hm_idmap_outer(&m, 65535), 165535);

  hm_error *err = NULL;
  ck_assert_int_eq(hm_idmap_build(&m, 1001, 65537, 100000, 65536, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "hm_idmap_build: id 65537 lies beyond"));
  hm_error_free(err);
  ck_assert_int_eq(hm_idmap_build(&m, 1001, 0, 100000, 0, NULL), HM_E_INVALID);
}
END_TEST

/* --- as an unprivileged user ------------------------------------------ */

static char top[256];

/* Becomes the test user when root (in this test's own forked process), and
 * makes a private directory with a share in it. 0, or 77 when there is no
 * user to test as. */
static int become_user(void) {
  if (geteuid() == 0) {
    const char *name = getenv("HM_ROOTLESS_USER");
    struct passwd *pw = getpwnam(name && *name ? name : "hmci");
    if (!pw)
      return 77;
    snprintf(top, sizeof(top), "/tmp/hm-userns-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(top));
    ck_assert_int_eq(chown(top, pw->pw_uid, pw->pw_gid), 0);
    ck_assert_int_eq(setgroups(0, NULL), 0);
    ck_assert_int_eq(setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid), 0);
    ck_assert_int_eq(setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid), 0);
  } else {
    snprintf(top, sizeof(top), "/tmp/hm-userns-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(top));
  }
  char p[512];
  snprintf(p, sizeof(p), "%s/share", top);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  return 0;
}

static void cleanup(void) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
  ck_assert_int_eq(system(cmd), 0);
}

/* The test user has what a user namespace needs, else the test is skipped
 * (printed, so a CI log shows it). */
static int usable(hm_userns *u, long map_uid, long map_gid) {
  hm_error *err = NULL;
  if (hm_userns_prepare(u, "test", map_uid, map_gid, &err) < 0) {
    printf("userns: skipped: %s\n", hm_error_message(err));
    hm_error_free(err);
    return 0;
  }
  return 1;
}

/* Runs sh -c script in a user namespace with the share bound; its output. */
static int run_sh(const hm_userns *u, hm_share *s, const char *script, char *out, size_t size) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
  static const hm_confine filter = {.filter = 1};
  hm_spawn_opts o = {.argv = argv,
                     .pass_fd = -1,
                     .as_fd = -1,
                     .stdio_fd = sv[1],
                     .stderr_fd = sv[1],
                     .share = s,
                     .confine = &filter,
                     .userns = u};
  pid_t pid = -1;
  hm_error *err = NULL;
  ck_assert_msg(hm_spawn(&pid, &o, &err) == 0, "%s", hm_error_message(err));
  close(sv[1]);
  size_t got = 0;
  ssize_t n;
  while (got + 1 < size && (n = read(sv[0], out + got, size - 1 - got)) > 0)
    got += (size_t)n;
  out[got] = '\0';
  close(sv[0]);
  int st = -1;
  ck_assert_int_eq(hm_child_exited(pid, -1, &st), 1);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uid_t owner(const char *name) {
  char p[600];
  struct stat st;
  snprintf(p, sizeof(p), "%s/share/%s", top, name);
  ck_assert_msg(lstat(p, &st) == 0, "%s: %s", p, strerror(errno));
  return st.st_uid;
}

/* Guest root is the host user; other ids are subordinate ids; the bind is
 * read-only when asked, also after a remount,rw attempt inside. */
START_TEST(test_userns_default_map) {
  if (become_user() == 77)
    return;
  hm_userns u;
  if (!usable(&u, -1, -1)) {
    cleanup();
    return;
  }
  char share[512], script[10000], out[8192];
  snprintf(share, sizeof(share), "%s/share", top);
  hm_share s;
  ck_assert_int_eq(hm_share_open(&s, share, 0, NULL), 0);
  snprintf(script, sizeof(script),
           "id -u; cd '%s' && chmod 777 . && echo x > byroot && setpriv --reuid 1000 --regid 1000 "
           "--clear-groups sh -c 'echo y > by1000' && echo wrote",
           s.stage);
  int rc = run_sh(&u, &s, script, out, sizeof(out));
  ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
  ck_assert_msg(strncmp(out, "0\n", 2) == 0 && strstr(out, "wrote"), "%s", out);
  ck_assert_uint_eq(owner("byroot"), getuid());
  ck_assert_uint_eq(owner("by1000"), hm_idmap_outer(&u.uid, 1000));
  ck_assert_uint_eq(owner("by1000"), u.uid.r[1].outer + 999);
  hm_share_close(&s);

  ck_assert_int_eq(hm_share_open(&s, share, 1, NULL), 0);
  snprintf(script, sizeof(script),
           "cd '%s'; echo x > ro1 || echo refused; setpriv --reuid 1000 --regid 1000 "
           "--clear-groups sh -c 'echo x > ro2' || echo refused2",
           s.stage);
  run_sh(&u, &s, script, out, sizeof(out));
  ck_assert_msg(strstr(out, "Read-only file system") && strstr(out, "refused\n") &&
                    strstr(out, "refused2"),
                "%s", out);
  hm_share_close(&s);
  char p[600];
  snprintf(p, sizeof(p), "%s/ro1", share);
  ck_assert_int_eq(access(p, F_OK), -1);
  snprintf(p, sizeof(p), "%s/ro2", share);
  ck_assert_int_eq(access(p, F_OK), -1);
  cleanup();
}
END_TEST

/* mapUid/mapGid=1000: guest 1000 is the host user, guest root a
 * subordinate id. */
START_TEST(test_userns_mapped_user) {
  if (become_user() == 77)
    return;
  hm_userns u;
  if (!usable(&u, 1000, 1000)) {
    cleanup();
    return;
  }
  char share[512], script[10000], out[8192];
  snprintf(share, sizeof(share), "%s/share", top);
  hm_share s;
  ck_assert_int_eq(hm_share_open(&s, share, 0, NULL), 0);
  snprintf(script, sizeof(script),
           "stat -c %%u:%%g '%s'; cd '%s' && echo x > byroot && setpriv --reuid 1000 --regid 1000 "
           "--clear-groups sh -c 'echo y > by1000' && echo wrote",
           s.stage, s.stage);
  int rc = run_sh(&u, &s, script, out, sizeof(out));
  ck_assert_msg(rc == 0, "exit %d: %s", rc, out);
  ck_assert_msg(strncmp(out, "1000:1000\n", 10) == 0 && strstr(out, "wrote"), "%s", out);
  ck_assert_uint_eq(owner("by1000"), getuid());
  ck_assert_uint_eq(owner("byroot"), u.uid.r[0].outer);
  ck_assert_uint_ne(owner("byroot"), getuid());
  hm_share_close(&s);

  hm_error *err = NULL;
  ck_assert_int_eq(hm_userns_prepare(&u, "virtiofsd", 70000, -1, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), "virtiofsd: cannot map guest ids") &&
                    strstr(hm_error_message(err), "70000"),
                "%s", hm_error_message(err));
  hm_error_free(err);
  cleanup();
}
END_TEST

/* QEMU's C virtiofsd, rootless: it starts, is ours (also when it runs as a
 * subordinate id), has the maps asked for, and stops. */
START_TEST(test_userns_virtiofsd) {
  if (become_user() == 77)
    return;
  hm_userns u;
  if (!usable(&u, -1, -1)) {
    cleanup();
    return;
  }
  hm_virtiofsd_info vfs;
  hm_error *err = NULL;
  ck_assert_msg(hm_virtiofsd_detect(&vfs, NULL, &err) == 0, "%s", hm_error_message(err));
  char share[512], sock[512];
  snprintf(share, sizeof(share), "%s/share", top);
  for (int mapped = 0; mapped <= 1; mapped++) {
    if (mapped)
      ck_assert_int_eq(hm_userns_prepare(&u, "virtiofsd", 1000, 1000, NULL), 0);
    snprintf(sock, sizeof(sock), "%s/vfs%d.sock", top, mapped);
    pid_t pid = -1;
    char *env[] = {"HOTMOUNT_MOUNT=hm-test", NULL};
    ck_assert_msg(hm_virtiofsd_start(&pid, &vfs, share, 1, NULL, sock, env, &u, &err) == 0, "%s",
                  hm_error_message(err));
    ck_assert(hm_virtiofsd_alive(pid));
    /* A vhost-user peer connects: virtiofsd then sets up its sandbox
     * (forks into new pid/mount/net namespaces, drops capabilities), after
     * which it must still be ours. */
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock), sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
    for (int i = 0; i < 100; i++) {
      char kids[64], buf[64] = "";
      snprintf(kids, sizeof(kids), "/proc/%d/task/%d/children", (int)pid, (int)pid);
      FILE *k = fopen(kids, "re");
      if (k && fgets(buf, sizeof(buf), k) && buf[0]) {
        fclose(k);
        break;
      }
      if (k)
        fclose(k);
      usleep(20000);
    }
    usleep(200000);
    ck_assert(hm_virtiofsd_alive(pid));
    ck_assert(hm_proc_is_ours(pid, vfs.path));
    /* Its markers are readable (with mapUid its /proc files are a
     * subordinate id's: read from inside its namespace). */
    char *m = hm_proc_getenv(pid, "HOTMOUNT_MOUNT");
    ck_assert_msg(m && strcmp(m, "hm-test") == 0, "mapped %d: %s", mapped, m ? m : "(unreadable)");
    free(m);
    ck_assert_int_eq(hm_proc_in_our_userns(pid), 1);
    char p[64], line[256];
    snprintf(p, sizeof(p), "/proc/%d/uid_map", (int)pid);
    FILE *f = fopen(p, "re");
    ck_assert_ptr_nonnull(f);
    unsigned in, outer, cnt, seen = 0, want = 0;
    for (int i = 0; i < u.uid.n; i++)
      want += u.uid.r[i].count;
    while (fgets(line, sizeof(line), f) && sscanf(line, "%u %u %u", &in, &outer, &cnt) == 3) {
      ck_assert_uint_eq(hm_idmap_outer(&u.uid, in), outer);
      seen += cnt;
    }
    fclose(f);
    ck_assert_uint_eq(seen, want);
    ck_assert_msg(hm_virtiofsd_stop(pid, 3000, &err) == 0, "%s", hm_error_message(err));
    ck_assert(!hm_virtiofsd_alive(pid));
    close(c);
    unlink(sock);
  }
  hm_virtiofsd_info_clear(&vfs);
  cleanup();
}
END_TEST

int main(void) {
  Suite *s = suite_create("userns");
  TCase *tc = tcase_create("userns");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_subid_parse);
  tcase_add_test(tc, test_idmap_build);
  tcase_add_test(tc, test_userns_default_map);
  tcase_add_test(tc, test_userns_mapped_user);
  tcase_add_test(tc, test_userns_virtiofsd);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
