/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * lib/core/platform.h, built twice: against platform_linux.c and against
 * platform_posix.c (the macOS variant, whose portable parts run here too).
 * What each promises: the wake-up fd is readable exactly between a signal
 * and a drain (however many signals), sockets and pipes are close-on-exec,
 * a send to a closed peer is EPIPE and not SIGPIPE, and where a variant
 * cannot do something on this system it says ENOSYS (so callers refuse or
 * fall back) instead of doing it unsafely.
 */
#include "platform.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int readable(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1;
}

static int cloexec(int fd) {
  return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
}

START_TEST(test_wake) {
  hm_wake w = HM_WAKE_NONE;
  ck_assert_int_eq(hm_wake_open(&w), 0);
  ck_assert(cloexec(w.rfd) && cloexec(w.wfd));
  ck_assert(!readable(w.rfd));
  ck_assert_int_eq(hm_wake_drain(&w), 0); /* nothing to drain: not an error */
  ck_assert_int_eq(hm_wake_signal(&w), 0);
  ck_assert(readable(w.rfd));
  ck_assert_int_eq(hm_wake_drain(&w), 0);
  ck_assert(!readable(w.rfd));
  /* More signals than a pipe holds: never blocks, never fails, one drain
   * empties it. */
  for (int i = 0; i < 100000; i++)
    ck_assert_int_eq(hm_wake_signal(&w), 0);
  ck_assert(readable(w.rfd));
  ck_assert_int_eq(hm_wake_drain(&w), 0);
  ck_assert(!readable(w.rfd));
  hm_wake_close(&w);
  ck_assert_int_eq(w.rfd, -1);
  ck_assert_int_eq(w.wfd, -1);
  hm_wake_close(&w); /* twice: nothing */
}
END_TEST

START_TEST(test_socket_pipe_send) {
  int p[2];
  ck_assert_int_eq(hm_plat_pipe(p), 0);
  ck_assert(cloexec(p[0]) && cloexec(p[1]));
  close(p[0]);
  close(p[1]);
  int s = hm_plat_socket(AF_UNIX, SOCK_STREAM);
  ck_assert_int_ge(s, 0);
  ck_assert(cloexec(s));
  close(s);
  /* A send to a peer that is gone: EPIPE, and the process lives (SIGPIPE
   * is at its default, which would kill it). */
  signal(SIGPIPE, SIG_DFL);
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  close(sv[1]);
  /* (The portable variant turns SIGPIPE off on the sockets it makes, with
   * SO_NOSIGPIPE: macOS has it, Linux has not.) */
#ifdef HM_PLATFORM_LINUX
  ck_assert_int_eq(hm_plat_send(sv[0], "x", 1), -1);
  ck_assert_int_eq(errno, EPIPE);
#endif
  close(sv[0]);
}
END_TEST

START_TEST(test_random) {
  unsigned char a[300] = {0}, b[300] = {0};
  ck_assert_int_eq(hm_plat_random(a, sizeof(a)), 0); /* over getentropy's 256 */
  ck_assert_int_eq(hm_plat_random(b, sizeof(b)), 0);
  ck_assert(memcmp(a, b, sizeof(a)) != 0);
}
END_TEST

START_TEST(test_peer) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  uid_t uid = (uid_t)-1;
  pid_t pid = 0;
  int r = hm_plat_peer(sv[0], &uid, &pid);
#if defined(HM_PLATFORM_LINUX) || defined(HM_HAVE_GETPEEREID)
  ck_assert_int_eq(r, 0);
  ck_assert_int_eq(uid, geteuid());
#ifdef HM_PLATFORM_LINUX
  ck_assert_int_eq(pid, getpid());
#endif
#else
  /* No way to ask on this system: the caller must refuse the peer. */
  ck_assert_int_eq(r, -1);
  ck_assert_int_eq(errno, ENOSYS);
#endif
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(test_open_nosymlinks_and_dirfd_path) {
  char dir[] = "/tmp/hm-plat-XXXXXX", link[64], file[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(file, sizeof(file), "%s/f", dir);
  snprintf(link, sizeof(link), "%s/l", dir);
  ck_assert_int_eq(mkdir(file, 0700), 0);
  ck_assert_int_eq(symlink(file, link), 0);
  int fd = hm_plat_open_nosymlinks(file, HM_O_PATH | O_DIRECTORY);
  if (fd < 0) {
    /* The portable variant without O_NOFOLLOW_ANY: callers walk instead. */
    ck_assert_int_eq(errno, ENOSYS);
  } else {
    close(fd);
    ck_assert_int_eq(hm_plat_open_nosymlinks(link, HM_O_PATH | O_DIRECTORY), -1);
    ck_assert_int_eq(errno, ELOOP);
  }
  int dfd = open(dir, HM_O_PATH | O_DIRECTORY | O_CLOEXEC);
  ck_assert_int_ge(dfd, 0);
  char p[108];
  if (hm_plat_dirfd_path(dfd, p, sizeof(p)) == 0) {
    char sub[128];
    struct stat a, b;
    snprintf(sub, sizeof(sub), "%s/f", p);
    ck_assert_int_eq(stat(sub, &a), 0);
    ck_assert_int_eq(stat(file, &b), 0);
    ck_assert(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    ck_assert_int_eq(hm_plat_dirfd_path(dfd, p, 4), -1);
    ck_assert_int_eq(errno, ENAMETOOLONG);
  } else {
    ck_assert_int_eq(errno, ENOSYS);
  }
  close(dfd);
  unlink(link);
  rmdir(file);
  rmdir(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("platform");
  TCase *tc = tcase_create("platform");
  tcase_add_test(tc, test_wake);
  tcase_add_test(tc, test_socket_pipe_send);
  tcase_add_test(tc, test_random);
  tcase_add_test(tc, test_peer);
  tcase_add_test(tc, test_open_nosymlinks_and_dirfd_path);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
