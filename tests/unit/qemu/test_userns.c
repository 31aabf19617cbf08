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
#include "test_user.h"
#include "userns.h"
#include "virtiofsd.h"

#include <check.h>
#include <errno.h>
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

static void cleanup(void) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
  ck_assert_int_eq(system(cmd), 0);
}

/* A private directory with a share in it, owned by the test user (who this
 * process becomes when root, test_user.h), and the namespace maps for
 * map_uid/map_gid: 1, or 0 when the test is to be skipped (no test user, or
 * it lacks what a user namespace needs: said on stdout, for CI logs). */
static int begin(hm_userns *u, long map_uid, long map_gid) {
  snprintf(top, sizeof(top), "/tmp/hm-userns-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(top));
  char p[512];
  snprintf(p, sizeof(p), "%s/share", top);
  ck_assert_int_eq(mkdir(p, 0755), 0);
  if (hm_test_become_user(top) < 0) {
    cleanup();
    return 0;
  }
  hm_error *err = NULL;
  if (hm_userns_prepare(u, "test", map_uid, map_gid, &err) < 0) {
    printf("userns: skipped: %s\n", hm_error_message(err));
    hm_error_free(err);
    cleanup();
    return 0;
  }
  return 1;
}

/* Runs sh -c script in a user namespace with the share bound; its output,
 * and its exit status. */
static int run_sh(const hm_userns *u, hm_share *s, const char *script, char *out, size_t size) {
  char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
  static const hm_confine filter = {.filter = 1};
  hm_spawn_opts o = {.argv = argv, .share = s, .confine = &filter, .userns = u};
  /* stderr too: the refusals are what some tests look for. */
  return hm_test_spawn_output(&o, 1, out, size);
}

static uid_t owner(const char *name) {
  char p[600];
  struct stat st;
  snprintf(p, sizeof(p), "%s/share/%s", top, name);
  ck_assert_msg(lstat(p, &st) == 0, "%s: %s", p, strerror(errno));
  return st.st_uid;
}

/* In the share (writable): `first`, then inner root and inner uid 1000
 * each make a file (byroot, by1000); the output. */
static void write_both(const hm_userns *u, const char *first, char *out, size_t size) {
  char share[512], script[10000];
  snprintf(share, sizeof(share), "%s/share", top);
  hm_share s;
  ck_assert_int_eq(hm_share_open(&s, share, 0, NULL), 0);
  snprintf(script, sizeof(script),
           "cd '%s' && %s && echo x > byroot && setpriv --reuid 1000 --regid 1000 "
           "--clear-groups sh -c 'echo y > by1000' && echo wrote",
           s.stage, first);
  int rc = run_sh(u, &s, script, out, size);
  ck_assert_msg(rc == 0 && strstr(out, "wrote"), "exit %d: %s", rc, out);
  hm_share_close(&s);
}

/* Guest root is the host user; other ids are subordinate ids; the bind is
 * read-only when asked, for inner root and inner uid 1000. */
START_TEST(test_userns_default_map) {
  hm_userns u;
  if (!begin(&u, -1, -1))
    return;
  char share[512], script[10000], out[8192];
  snprintf(share, sizeof(share), "%s/share", top);
  write_both(&u, "id -u && chmod 777 .", out, sizeof(out));
  ck_assert_msg(strncmp(out, "0\n", 2) == 0, "%s", out);
  ck_assert_uint_eq(owner("byroot"), getuid());
  ck_assert_uint_eq(owner("by1000"), hm_idmap_outer(&u.uid, 1000));
  ck_assert_uint_eq(owner("by1000"), u.uid.r[1].outer + 999);

  hm_share s;
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
  hm_userns u;
  if (!begin(&u, 1000, 1000))
    return;
  char out[8192];
  write_both(&u, "stat -c %u:%g .", out, sizeof(out));
  ck_assert_msg(strncmp(out, "1000:1000\n", 10) == 0, "%s", out);
  ck_assert_uint_eq(owner("by1000"), getuid());
  ck_assert_uint_eq(owner("byroot"), u.uid.r[0].outer);
  ck_assert_uint_ne(owner("byroot"), getuid());

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
  hm_userns u;
  if (!begin(&u, -1, -1))
    return;
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

/* newuidmap refuses a range that is not the user's: the spawn fails with
 * what it said, the waiting child is gone, nothing was exec'ed. */
START_TEST(test_userns_map_refused) {
  hm_userns u;
  if (!begin(&u, -1, -1))
    return;
  u.uid.r[1].outer = 1; /* ids 1.. are not this user's to map */
  char *argv[] = {"/bin/true", NULL};
  hm_spawn_opts o = {.argv = argv, .pass_fd = -1, .as_fd = -1, .stdio_fd = -1, .userns = &u};
  pid_t pid = -1;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_spawn(&pid, &o, &err), HM_E_HELPER);
  ck_assert_msg(strstr(hm_error_message(err), "newuidmap failed for") != NULL, "%s",
                hm_error_message(err));
  hm_error_free(err);
  ck_assert_int_eq(pid, -1);
  /* No child of ours is left, waiting or not. */
  char kids[64], buf[64] = "";
  snprintf(kids, sizeof(kids), "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
  FILE *k = fopen(kids, "re");
  ck_assert_ptr_nonnull(k);
  ck_assert_ptr_null(fgets(buf, sizeof(buf), k));
  fclose(k);
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
  tcase_add_test(tc, test_userns_map_refused);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
