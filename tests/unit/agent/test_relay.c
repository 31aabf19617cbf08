/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 9p relay on the host: "the 9p client" is one end of a socketpair (A,
 * the relay gets B), "the port" is one end of another socketpair (the relay
 * gets P, the test plays the host side H). Both splice and copy modes.
 */
#include "core/private.h"
#include "relay.h"
#include "tests.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct pair {
  int a, h;           /* the test's ends */
  agent_relay *relay; /* owns B and P */
} pair;

static void start(pair *p, int no_splice, int64_t deadline) {
  int c[2], q[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c), 0);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, q), 0);
  p->a = c[0];
  p->h = q[0];
  agent_relay_opts o = {.name = "test.port", .no_splice = no_splice, .deadline = deadline};
  p->relay = agent_relay_start(c[1], q[1], &o);
  ck_assert_ptr_nonnull(p->relay);
}

/* Byte i of stream seed. */
static unsigned char pat(unsigned seed, size_t i) {
  return (unsigned char)((i * 2654435761u + seed) >> 7 ^ (i >> 13) ^ seed);
}

typedef struct writer {
  int fd;
  size_t n;
  unsigned seed;
  int err;
} writer;

static void *write_all(void *arg) {
  writer *w = arg;
  unsigned char buf[65536 + 17]; /* odd size: pieces do not line up with pages */
  for (size_t off = 0; off < w->n;) {
    size_t k = w->n - off < sizeof(buf) ? w->n - off : sizeof(buf);
    for (size_t i = 0; i < k; i++)
      buf[i] = pat(w->seed, off + i);
    size_t done = 0;
    while (done < k) {
      ssize_t r = write(w->fd, buf + done, k - done);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0) {
        w->err = errno ? errno : EIO;
        return NULL;
      }
      done += (size_t)r;
    }
    off += k;
  }
  return NULL;
}

/* Reads exactly n bytes of stream seed from fd, checking each; fails the test
 * on a mismatch, an early end or 10 s without progress. */
static void read_check(int fd, size_t n, unsigned seed) {
  static unsigned char buf[300000];
  for (size_t off = 0; off < n;) {
    struct pollfd p = {fd, POLLIN, 0};
    ck_assert_msg(poll(&p, 1, 10000) == 1, "no data after %zu of %zu bytes", off, n);
    size_t want = n - off < sizeof(buf) ? n - off : sizeof(buf);
    ssize_t r = read(fd, buf, want);
    ck_assert_msg(r > 0, "stream ended after %zu of %zu bytes (%s)", off, n,
                  r < 0 ? strerror(errno) : "end of file");
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != pat(seed, off + (size_t)i))
        ck_abort_msg("byte %zu differs: %u, expected %u", off + (size_t)i, buf[i],
                     pat(seed, off + (size_t)i));
    off += (size_t)r;
  }
}

/* fd reaches end-of-file within ms. */
static void expect_eof(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  ck_assert_msg(poll(&p, 1, ms) == 1, "no end-of-file within %d ms", ms);
  char c;
  ssize_t r = read(fd, &c, 1);
  ck_assert_msg(r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)),
                "expected end-of-file, read gave %zd (%s)", r, r < 0 ? strerror(errno) : "data");
}

static int wait_state(agent_relay *r, int ms) {
  int64_t end = hm_now_ms() + ms;
  while (agent_relay_state(r) == AGENT_RELAY_RUNNING && hm_now_ms() < end)
    usleep(5000);
  return agent_relay_state(r);
}

static void both_ways(int no_splice) {
  pair p;
  start(&p, no_splice, 0);
  const size_t to_host = 5 * 1024 * 1024 + 12345, to_guest = 3 * 1024 * 1024 + 777;
  writer wa = {p.a, to_host, 1, 0}, wh = {p.h, to_guest, 2, 0};
  pthread_t ta, th;
  ck_assert_int_eq(pthread_create(&ta, NULL, write_all, &wa), 0);
  ck_assert_int_eq(pthread_create(&th, NULL, write_all, &wh), 0);
  read_check(p.h, to_host, 1);
  read_check(p.a, to_guest, 2);
  pthread_join(ta, NULL);
  pthread_join(th, NULL);
  ck_assert_int_eq(wa.err, 0);
  ck_assert_int_eq(wh.err, 0);
  uint64_t tp, tc;
  agent_relay_counts(p.relay, &tp, &tc);
  ck_assert_uint_eq(tp, to_host);
  ck_assert_uint_eq(tc, to_guest);
  ck_assert_int_eq(agent_relay_uses_splice(p.relay), !no_splice);
  ck_assert_int_eq(agent_relay_state(p.relay), AGENT_RELAY_RUNNING);

  /* The host side closes: the relay shuts B down (the client sees the end)
   * and ends by itself. */
  close(p.h);
  expect_eof(p.a, 5000);
  ck_assert_int_eq(wait_state(p.relay, 5000), AGENT_RELAY_PORT_CLOSED);
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_PORT_CLOSED);
  close(p.a);
}

START_TEST(relay_splice) {
  both_ways(0);
}
END_TEST

START_TEST(relay_copy) {
  both_ways(1);
}
END_TEST

/* What the host sent before it closed still reaches the client, then the end. */
static void *write_all_close(void *arg) {
  writer *w = arg;
  write_all(w);
  close(w->fd); /* at once, before the client has read it all */
  return NULL;
}

START_TEST(relay_drains_before_end) {
  pair p;
  start(&p, _i, 0);
  const size_t n = 2 * 1024 * 1024 + 3;
  writer wh = {p.h, n, 7, 0};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, write_all_close, &wh), 0);
  read_check(p.a, n, 7);
  expect_eof(p.a, 5000);
  pthread_join(th, NULL);
  ck_assert_int_eq(wh.err, 0);
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_PORT_CLOSED);
  close(p.a);
}
END_TEST

/* The client closes its end (the kernel does at unmount): the relay ends and
 * lets go of the port. */
START_TEST(relay_client_gone) {
  pair p;
  start(&p, _i, 0);
  ck_assert_int_eq(write(p.a, "hello", 5), 5);
  char buf[8];
  struct pollfd pf = {p.h, POLLIN, 0};
  ck_assert_int_eq(poll(&pf, 1, 5000), 1);
  ck_assert_int_eq(read(p.h, buf, sizeof(buf)), 5);
  close(p.a);
  ck_assert_int_eq(wait_state(p.relay, 5000), AGENT_RELAY_CLIENT_GONE);
  expect_eof(p.h, 5000);
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_CLIENT_GONE);
  close(p.h);
}
END_TEST

/* Armed, a relay whose server never answers gives up at its deadline and
 * shuts the client out; disarmed, it keeps running. */
START_TEST(relay_deadline) {
  pair p;
  int64_t t0 = hm_now_ms();
  start(&p, 0, t0 + 300);
  ck_assert_int_eq(write(p.a, "Tversion", 8), 8);
  expect_eof(p.a, 5000);
  ck_assert_int_ge(hm_now_ms() - t0, 290);
  ck_assert_int_eq(wait_state(p.relay, 5000), AGENT_RELAY_DEADLINE);
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_DEADLINE);
  close(p.a);
  close(p.h);

  start(&p, 0, hm_now_ms() + 300);
  agent_relay_disarm(p.relay);
  usleep(600 * 1000);
  ck_assert_int_eq(agent_relay_state(p.relay), AGENT_RELAY_RUNNING);
  ck_assert_int_eq(write(p.h, "Rversion", 8), 8);
  char buf[8];
  struct pollfd pf = {p.a, POLLIN, 0};
  ck_assert_int_eq(poll(&pf, 1, 5000), 1);
  ck_assert_int_eq(read(p.a, buf, sizeof(buf)), 8);
  ck_assert_int_eq(memcmp(buf, "Rversion", 8), 0);
  /* Stopped from outside (unmount): it ends, and the client is shut out. */
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_STOPPED);
  expect_eof(p.a, 1000);
  close(p.a);
  close(p.h);
}
END_TEST

/* Back-pressure: a client that does not read stalls the port direction
 * without the relay spinning or losing bytes. */
START_TEST(relay_backpressure) {
  pair p;
  start(&p, _i, 0);
  const size_t n = 4 * 1024 * 1024;
  writer wh = {p.h, n, 9, 0};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, write_all, &wh), 0);
  struct timespec c0, c1;
  usleep(200 * 1000); /* buffers fill up and the relay waits */
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  usleep(500 * 1000);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
  ck_assert_msg(cpu < 0.1, "the stalled relay used %.3f s of CPU in 0.5 s (spinning?)", cpu);
  read_check(p.a, n, 9);
  pthread_join(th, NULL);
  ck_assert_int_eq(wh.err, 0);
  ck_assert_int_eq(agent_relay_stop(p.relay), AGENT_RELAY_STOPPED);
  close(p.a);
  close(p.h);
}
END_TEST

Suite *relay_suite(void) {
  Suite *s = suite_create("relay");
  TCase *tc = tcase_create("relay");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, relay_splice);
  tcase_add_test(tc, relay_copy);
  tcase_add_loop_test(tc, relay_drains_before_end, 0, 2);
  tcase_add_loop_test(tc, relay_client_gone, 0, 2);
  tcase_add_test(tc, relay_deadline);
  tcase_add_loop_test(tc, relay_backpressure, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}
