/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "test_user.h"
#include "spawn.h"

#include <check.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int hm_test_become_user(const char *dir) {
  if (geteuid() != 0)
    return 0;
  const char *name = getenv("HM_ROOTLESS_USER");
  if (!name || !*name)
    name = "hmci";
  struct passwd *pw = getpwnam(name);
  if (!pw) {
    printf("no user %s: rootless test skipped\n", name);
    return -1;
  }
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "chown -R %u:%u '%s'", (unsigned)pw->pw_uid, (unsigned)pw->pw_gid,
           dir);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_int_eq(setgroups(0, NULL), 0);
  ck_assert_int_eq(setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid), 0);
  ck_assert_int_eq(setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid), 0);
  return 0;
}

int hm_test_spawn_output(hm_spawn_opts *o, int with_stderr, char *out, size_t size) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  o->pass_fd = o->as_fd = -1;
  o->stdio_fd = sv[1];
  o->stderr_fd = with_stderr ? sv[1] : 0;
  pid_t pid = -1;
  hm_error *err = NULL;
  ck_assert_msg(hm_spawn(&pid, o, &err) == 0, "%s", hm_error_message(err));
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
