/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers are supervised by pidfd, inside an embedder that does its own
 * thing with children: real helpers (/bin/sleep, /bin/sh) started by
 * hm_spawn, stopped by hm_helper_stop, checked by hm_helper_alive, their
 * death seen on a pidfd, in a process
 *   - with SIGCHLD ignored (the kernel reaps every child; waitpid answers
 *     ECHILD): a stop must not wait out its timeout and fail, a dead helper
 *     must count as dead;
 *   - with a GLib child watch on a child of its own: the watch must still
 *     get that child's exit status (nothing of ours may reap it), and our
 *     helper's death must still be seen.
 * Each case forks first, so the SIGCHLD disposition of one does not leak
 * into the next (Check's fork mode).
 */
#include "spawn.h"

#include <check.h>
#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *sleep_argv[] = {"sleep", "100", NULL};

static pid_t spawn_sleep(void) {
  hm_spawn_opts o = {.argv = sleep_argv, .pass_fd = -1, .as_fd = -1, .stdio_fd = -1};
  hm_error *err = NULL;
  pid_t pid = -1;
  ck_assert_msg(hm_spawn(&pid, &o, &err) == 0, "%s", hm_error_message(err));
  ck_assert_int_gt(pid, 1);
  return pid;
}

/* Is fd readable within ms? */
static int readable(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* Start, health, death noticed on the watch fd, stop: what a backend does
 * with a helper over a mount's life. */
static void helper_life(void) {
  pid_t pid = spawn_sleep();
  ck_assert(hm_helper_alive(pid, "sleep"));
  ck_assert(hm_child_is_ours(pid));
  int watch = hm_pidfd_open(pid);
  ck_assert_int_ge(watch, 0);
  ck_assert(!readable(watch, 0));
  /* Someone kills it: the watch fd says so, and it counts as gone (and is
   * reaped and forgotten on the way). */
  ck_assert_int_eq(kill(pid, SIGKILL), 0);
  ck_assert_msg(readable(watch, 5000), "the death of helper %d was not seen", (int)pid);
  ck_assert(!hm_helper_alive(pid, "sleep"));
  ck_assert(!hm_child_is_ours(pid));
  close(watch);
  /* A stop of a dead helper is done at once. */
  ck_assert_int_eq(hm_helper_stop(pid, NULL, "sleep", 3000, NULL), 0);

  /* A live one stops on SIGTERM, well before its timeout. */
  pid = spawn_sleep();
  hm_error *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  ck_assert_msg(hm_helper_stop(pid, NULL, "sleep", 3000, &err) == 0, "%s", hm_error_message(err));
  gint64 ms = (g_get_monotonic_time() - t0) / 1000;
  ck_assert_msg(ms < 1500, "stopping a helper took %lld ms (its timeout is 3000)", (long long)ms);
  ck_assert_int_eq(kill(pid, 0), -1);
  ck_assert_int_eq(errno, ESRCH);
  ck_assert(!hm_child_is_ours(pid));
}

START_TEST(test_sigchld_ignored) {
  ck_assert(signal(SIGCHLD, SIG_IGN) != SIG_ERR);
  helper_life();
  /* A helper that fails to exec is an error naming it, and start-up does not
   * hang waiting for a status the kernel has thrown away. */
  char *argv[] = {"/nonexistent/helper", NULL};
  hm_spawn_opts o = {.argv = argv, .pass_fd = -1, .as_fd = -1, .stdio_fd = -1};
  hm_error *err = NULL;
  pid_t pid = -1;
  ck_assert_int_eq(hm_spawn(&pid, &o, &err), HM_E_HELPER);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "cannot run /nonexistent/helper"));
  hm_error_free(err);
  /* The exit status of a child the kernel reaped is unknown, not an error. */
  pid = spawn_sleep();
  int watch = hm_pidfd_open(pid);
  kill(pid, SIGKILL);
  ck_assert(readable(watch, 5000));
  close(watch);
  int st = 0;
  ck_assert_int_eq(hm_child_exited(pid, 0, &st), 1);
  ck_assert_int_eq(st, -1);
}
END_TEST

struct watched {
  GMainLoop *loop;
  int status, fired;
};

static void on_child(GPid pid, gint status, gpointer ud) {
  struct watched *w = ud;
  (void)pid;
  w->status = status;
  w->fired = 1;
  g_main_loop_quit(w->loop);
}

static gboolean on_timeout(gpointer ud) {
  g_main_loop_quit(ud);
  return G_SOURCE_REMOVE;
}

START_TEST(test_beside_glib_child_watch) {
  /* The embedder's own child, watched by GLib, exits 7. */
  char *argv[] = {"/bin/sh", "-c", "exit 7", NULL};
  GPid child;
  GError *gerr = NULL;
  ck_assert_msg(
      g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &child, &gerr), "%s",
      gerr ? gerr->message : "");
  struct watched w = {.loop = g_main_loop_new(NULL, FALSE)};
  g_child_watch_add(child, on_child, &w);
  /* Wait until it is a zombie, without reaping it: from here on, any wait
   * for "some child" in our code would take its status. */
  siginfo_t si = {0};
  ck_assert_int_eq(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT), 0);

  /* Our helpers live and die meanwhile, all of it seen. */
  helper_life();
  pid_t pid = spawn_sleep();
  ck_assert(hm_helper_alive(pid, "sleep"));
  ck_assert_int_eq(hm_helper_stop(pid, NULL, "sleep", 3000, NULL), 0);

  /* The embedder's watch still gets its child's real status. */
  g_timeout_add(5000, on_timeout, w.loop);
  g_main_loop_run(w.loop);
  ck_assert_msg(w.fired, "the GLib child watch never fired");
  ck_assert_msg(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 7,
                "the GLib child watch got status 0x%x, not exit 7: its child was reaped by "
                "someone else",
                (unsigned)w.status);
  g_main_loop_unref(w.loop);
}
END_TEST

static int sleep_alive(pid_t pid) {
  return hm_helper_alive(pid, "sleep");
}

/* A pid known only from the state file (not our child) is signalled only
 * while it still is the helper, and never reaped by us. */
START_TEST(test_not_our_child) {
  pid_t other = fork();
  if (other == 0) {
    execl("/bin/sleep", "sleep", "100", (char *)NULL);
    _exit(127);
  }
  ck_assert_int_gt(other, 0);
  /* Its comm is "sleep" once exec'ed. */
  for (int i = 0; i < 200 && !hm_helper_alive(other, "sleep"); i++)
    usleep(10000);
  ck_assert(!hm_child_is_ours(other));
  /* Another program's name: not ours to touch. */
  ck_assert(!hm_helper_alive(other, "virtiofsd"));
  ck_assert_int_eq(hm_helper_stop(other, NULL, "sleep", 1000, NULL), 0);
  ck_assert_int_eq(kill(other, 0), 0);
  /* It is the helper: stopped, and left for its parent (us, the test) to
   * reap: its status is still here. */
  ck_assert_int_eq(hm_helper_stop(other, sleep_alive, "sleep", 3000, NULL), 0);
  int st = 0;
  ck_assert_int_eq(waitpid(other, &st, 0), other);
  ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
}
END_TEST

/* stdout_fd and stderr_fd (what the accelerator probe reads QEMU by), a
 * program found in PATH, and its exit status through the pidfd. */
START_TEST(test_stdout_stderr) {
  int out[2], errp[2];
  ck_assert_int_eq(pipe(out), 0);
  ck_assert_int_eq(pipe(errp), 0);
  char *argv[] = {"sh", "-c", "echo to-out; echo to-err >&2; exit 3", NULL};
  hm_spawn_opts o = {.argv = argv,
                     .pass_fd = -1,
                     .as_fd = -1,
                     .stdio_fd = -1,
                     .stdout_fd = out[1],
                     .stderr_fd = errp[1]};
  hm_error *err = NULL;
  pid_t pid = -1;
  ck_assert_msg(hm_spawn(&pid, &o, &err) == 0, "%s", hm_error_message(err));
  close(out[1]);
  close(errp[1]);
  char a[64] = "", b[64] = "";
  ck_assert_int_gt(read(out[0], a, sizeof(a) - 1), 0);
  ck_assert_int_gt(read(errp[0], b, sizeof(b) - 1), 0);
  ck_assert_str_eq(a, "to-out\n");
  ck_assert_str_eq(b, "to-err\n");
  int st = -1;
  ck_assert_int_eq(hm_child_exited(pid, 5000, &st), 1);
  ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
  close(out[0]);
  close(errp[0]);
  /* Not in PATH: an error naming it, before anything was forked. */
  char *none[] = {"hm-no-such-program", NULL};
  o.argv = none;
  ck_assert_int_eq(hm_spawn(&pid, &o, &err), HM_E_HELPER);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "cannot run hm-no-such-program"));
  hm_error_free(err);
}
END_TEST

int main(void) {
  Suite *s = suite_create("children");
  TCase *tc = tcase_create("children");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_sigchld_ignored);
  tcase_add_test(tc, test_beside_glib_child_watch);
  tcase_add_test(tc, test_not_our_child);
  tcase_add_test(tc, test_stdout_stderr);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_FORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
