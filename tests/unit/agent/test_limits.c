/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host client against a hostile agent (a scripted peer on a real unix
 * socket): garbage, over-long and deeply nested lines, answers too big for
 * the cap, escape sequences in what it says; and the library log's escaping
 * and rate limit.
 */
#include "core/agent_client.h"
#include "tests.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- captured log lines ---- */

#define MAX_LINES 4096
static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;
static char *captured[MAX_LINES];
static size_t n_captured;

static void capture(int level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&cap_lock);
  if (n_captured < MAX_LINES)
    captured[n_captured++] = strdup(msg);
  pthread_mutex_unlock(&cap_lock);
}

static void capture_start(void) {
  hm_set_log_callback(capture, HM_LOG_DEBUG, NULL, NULL);
}

static void capture_stop(void) {
  hm_set_log_callback(NULL, HM_LOG_INFO, NULL, NULL);
  pthread_mutex_lock(&cap_lock);
  for (size_t i = 0; i < n_captured; i++)
    free(captured[i]);
  n_captured = 0;
  pthread_mutex_unlock(&cap_lock);
}

/* Captured lines containing needle; every line is checked for raw control
 * characters on the way. */
static size_t count_lines(const char *needle) {
  size_t n = 0;
  pthread_mutex_lock(&cap_lock);
  for (size_t i = 0; i < n_captured; i++) {
    for (const unsigned char *p = (const unsigned char *)captured[i]; *p; p++)
      ck_assert_msg(*p >= 0x20 && *p != 0x7f, "raw control byte 0x%02x in log line '%s'", *p,
                    captured[i]);
    if (strstr(captured[i], needle))
      n++;
  }
  pthread_mutex_unlock(&cap_lock);
  return n;
}

/* ---- the hostile peer ---- */

struct peer {
  int lfd, fd;
  char path[108];
  pthread_t thread;
};

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

static void send_str(int fd, const char *s) {
  send_all(fd, s, strlen(s));
}

/* n bytes of c, then a newline. */
static void send_run(int fd, const char *prefix, char c, size_t n) {
  send_str(fd, prefix);
  char chunk[65536];
  memset(chunk, c, sizeof(chunk));
  while (n > 0) {
    size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
    send_all(fd, chunk, k);
    n -= k;
  }
  send_str(fd, "\n");
}

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

/* Answers hello with a version holding an escape sequence; the first list
 * after a flood of garbage, over-long and deep lines; the second list with
 * an answer over the cap; a mount with an error holding escape sequences. */
static void *peer_main(void *arg) {
  struct peer *p = arg;
  p->fd = accept(p->lfd, NULL, NULL);
  char line[8192], out[1024];
  int lists = 0;
  while (p->fd >= 0 && read_line(p->fd, line, sizeof(line)) == 0) {
    hm_agent_request req;
    if (hm_agent_request_decode(&req, line, strlen(line), NULL) < 0)
      break;
    long long id = (long long)req.id;
    int op = req.op;
    hm_agent_request_clear(&req);
    switch (op) {
    case HM_AGENT_OP_HELLO:
      snprintf(out, sizeof(out),
               "{\"id\":%lld,\"ok\":true,\"major\":1,\"minor\":1,\"agent\":\"evil\","
               "\"agent_version\":\"6.6\\u001b]0;owned\\u0007\\u001b[2J\",\"capabilities\":[]}\n",
               id);
      send_str(p->fd, out);
      break;
    case HM_AGENT_OP_LIST:
      if (++lists == 1) {
        send_run(p->fd, "{\"id\":1,\"ok\":true,\"x\":", '[', 100000);
        send_run(p->fd, "", 'a', 1024 * 1024); /* a 1 MiB line */
        for (int i = 0; i < 2000; i++)
          send_str(p->fd, "garbage \x1b[31mred\n");
        send_str(p->fd, "{\"id\":7,\"ok\":true,\"mounts\":[]}\n"); /* nobody waits */
        snprintf(out, sizeof(out),
                 "{\"id\":%lld,\"ok\":true,\"mounts\":[{\"target\":\"/mnt/x\",\"fstype\":"
                 "\"virtiofs\",\"source\":\"hm-1\",\"options\":\"ro\"}]}\n",
                 id);
        send_str(p->fd, out);
      } else {
        /* Our id first, as the agent writes it, then more than the cap. */
        snprintf(out, sizeof(out), "{\"id\":%lld,\"ok\":true,\"mounts\":[", id);
        send_str(p->fd, out);
        for (size_t sent = 0; sent < HM_AGENT_MAX_ANSWER + 4096;) {
          const char *e = "{\"target\":\"/mnt/x\",\"fstype\":\"virtiofs\",\"source\":\"hm-1\","
                          "\"options\":\"ro\"},";
          send_str(p->fd, e);
          sent += strlen(e);
        }
        send_str(p->fd, "{\"target\":\"/mnt/y\",\"fstype\":\"9p\",\"source\":\"s\","
                        "\"options\":\"\"}]}\n");
      }
      break;
    default:
      snprintf(out, sizeof(out),
               "{\"id\":%lld,\"ok\":false,\"errno\":5,\"error\":\"mount: \\u001b]0;owned\\u0007"
               "\\u001b[31mbad\\\\x\\u009b\\\"\"}\n",
               id);
      send_str(p->fd, out);
      break;
    }
  }
  return NULL;
}

static void peer_start(struct peer *p) {
  char dir[] = "/tmp/hm-limits-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(p->path, sizeof(p->path), "%s/agent.sock", dir);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, p->path);
  p->fd = -1;
  p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(p->lfd, 1), 0);
  ck_assert_int_eq(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static void peer_stop(struct peer *p) {
  pthread_join(p->thread, NULL);
  if (p->fd >= 0)
    close(p->fd);
  close(p->lfd);
  unlink(p->path);
  *strrchr(p->path, '/') = '\0';
  rmdir(p->path);
}

START_TEST(hostile_agent) {
  struct peer p;
  peer_start(&p);
  capture_start();
  hm_agent *a = NULL;
  hm_error *err = NULL;
  int r = hm_agent_connect(&a, p.path, 5000, &err);
  ck_assert_msg(r == 0, "connect: %s", hm_error_message(err));
  /* The version it claims is kept escaped (status shows it). */
  ck_assert_ptr_null(strchr(hm_agent_get_version(a), '\x1b'));
  ck_assert_ptr_nonnull(strstr(hm_agent_get_version(a), "6.6\\x1b]0;owned\\x07"));

  /* Garbage, a 1 MiB line and deep JSON before the answer: each dropped,
   * the connection kept, the answer still found. */
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  r = hm_agent_list(a, &v, &n, &err);
  ck_assert_msg(r == 0, "list: %s", hm_error_message(err));
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(v[0].target, "/mnt/x");
  hm_agent_list_free(v, n);
  ck_assert_int_eq(hm_agent_is_connected(a), 1);

  /* An answer over the cap fails its request with that reason, without
   * waiting for the list timeout, and the connection stays. */
  r = hm_agent_list(a, &v, &n, &err);
  ck_assert_int_eq(r, HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "answer to list was longer than 262144 bytes");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_agent_is_connected(a), 1);

  /* The agent's error text reaches the message escaped. */
  r = hm_agent_mount(a, HM_TYPE_VIRTIOFS, "hm-1", "/mnt/x", 1, NULL, 1000, &err);
  ck_assert_int_eq(r, HM_E_AGENT);
  ck_assert_error(err, HM_E_AGENT, "mount: \\x1b]0;owned\\x07\\x1b[31mbad\\x5cx\\xc2\\x9b\"");
  for (const char *m = hm_error_message(err); *m; m++)
    ck_assert_msg((unsigned char)*m >= 0x20 && *m != 0x7f, "raw control byte in '%s'",
                  hm_error_message(err));
  hm_error_free(err);
  hm_agent_free(a);
  peer_stop(&p);

  /* Each dropped line was counted in the log, rate-limited: 2000 garbage
   * lines give at most a burst of messages, not 2000. */
  size_t bad = count_lines("agent sent an unusable line");
  ck_assert_msg(bad >= 1 && bad <= 40, "%zu log lines for 2000 garbage lines", bad);
  ck_assert_uint_eq(count_lines("agent sent a line longer than 262144 bytes"), 2);
  ck_assert_uint_eq(count_lines("nesting too deep"), 1);
  capture_stop();
}
END_TEST

/* hm_log: what a guest chose is escaped, and one call site repeated is
 * cut to a burst, then summarised once tokens are back. */
START_TEST(log_escaped_and_limited) {
  capture_start();
  for (int i = 0; i < 500; i++)
    hm_log(HM_LOG_WARNING, "guest said: %s (%d)", "\x1b[2J\xff\\", i);
  size_t shown = count_lines("guest said: \\x1b[2J\\xff\\x5c (");
  ck_assert_msg(shown >= 20 && shown < 500 / 2, "%zu of 500 shown", shown);
  ck_assert_uint_eq(count_lines("suppressed"), 0);
  /* Another call site is not held back by the first one's flood. */
  hm_log(HM_LOG_WARNING, "other site %d", 1);
  ck_assert_uint_eq(count_lines("other site 1"), 1);
  /* Once a token is back (5 a second), the count is reported first. */
  usleep(400000);
  hm_log(HM_LOG_WARNING, "guest said: %s (%d)", "x", 500);
  ck_assert_uint_eq(count_lines("more messages like \"guest said: %s (%d)\" suppressed"), 1);
  ck_assert_uint_eq(count_lines("guest said: x (500)"), 1);
  capture_stop();
}
END_TEST

Suite *limits_suite(void) {
  Suite *s = suite_create("limits");
  TCase *tc = tcase_create("hostile-peer");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, hostile_agent);
  tcase_add_test(tc, log_escaped_and_limited);
  suite_add_tcase(s, tc);
  return s;
}
