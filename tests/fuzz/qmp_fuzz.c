/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the QMP client: what "QEMU" says on the socket, fed
 * through the real client (reader thread and all) over a socketpair, by a
 * peer thread that plays QEMU's part of the conversation. Byte 0 picks the
 * mode:
 *  - bit 0 set: the input is the whole stream, greeting and the handshake's
 *    reply included, written at once;
 *  - else the peer sends a valid greeting, answers qmp_capabilities, and then
 *    the input follows: replies and events meet a caller waiting for an event
 *    (bit 1 clear) or, bit 1 set, for the reply to a command it has just
 *    sent (id 2: a reply of any shape, an error, one without an id).
 * Events also reach an event callback. Any input must end in a clean error
 * or a clean end of the stream, never a crash, a leak or a hang.
 *
 * Built by tests/fuzz/meson.build with -Dfuzzing=true.
 */
#include "qmp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n";
static const char handshake_reply[] = "{\"return\": {}, \"id\": 1}\r\n";

struct peer {
  int fd, whole, command;
  const uint8_t *data;
  size_t len;
};

/* Reads up to the end of one command (each is one write ending in '\n');
 * 0 on end of stream or error. */
static int read_command(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0)
      return 0;
    if (memchr(buf, '\n', (size_t)n))
      return 1;
  }
}

/* MSG_NOSIGNAL: the client may close first. */
static int say(int fd, const void *p, size_t len) {
  const char *c = p;
  while (len) {
    ssize_t n = send(fd, c, len, MSG_NOSIGNAL);
    if (n <= 0)
      return 0;
    c += n;
    len -= (size_t)n;
  }
  return 1;
}

static void *peer_main(void *arg) {
  struct peer *p = arg;
  if (!p->whole) {
    if (!say(p->fd, greeting, strlen(greeting)) || !read_command(p->fd) ||
        !say(p->fd, handshake_reply, strlen(handshake_reply)) ||
        (p->command && !read_command(p->fd)))
      goto out;
  }
  say(p->fd, p->data, p->len);
out:
  shutdown(p->fd, SHUT_WR);
  return NULL;
}

static int match_any(json_object *d, void *ud) {
  (void)ud;
  /* Touch the data the way backend matchers do. */
  json_object *v;
  return d && json_object_object_get_ex(d, "device", &v) && json_object_get_string(v) &&
         strcmp(json_object_get_string(v), "never-matches") == 0;
}

static void on_event(const char *event, json_object *d, void *ud) {
  (void)ud;
  if (!event)
    abort();
  json_object *v;
  if (d && json_object_is_type(d, json_type_object))
    json_object_object_get_ex(d, "id", &v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 100000)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return 0;
  struct peer p = {sv[1], data[0] & 1, (data[0] & 3) == 2, data + 1, size - 1};
  pthread_t t;
  if (pthread_create(&t, NULL, peer_main, &p) != 0)
    abort();

  hm_qmp *q = NULL;
  /* sv[0] is the client's from here, closed on failure too. The timeout
   * only bounds a stream that stops without ending, which the peer never
   * leaves behind. */
  if (hm_qmp_connect_fd(&q, sv[0], 5000, NULL) == 0) {
    hm_qmp_set_event_callback(q, on_event, NULL, NULL);
    if (p.command) {
      json_object *args = json_object_new_object();
      json_object *ret = NULL;
      hm_error *err = NULL;
      if (hm_qmp_execute(q, "query-fuzz", args, -1, &ret, 5000, &err) == HM_E_TIMEOUT)
        abort(); /* the stream ends: the caller must hear of it, not time out */
      json_object_put(ret);
      json_object_put(args);
      hm_error_free(err);
    } else {
      json_object *d = NULL;
      /* Returns once the reader hit the end of the input or gave up on it. */
      hm_qmp_wait_event(q, "NEVER", 0, match_any, NULL, &d, -1, NULL);
      json_object_put(d);
      hm_qmp_event_seq(q);
    }
    hm_qmp_free(q);
  }
  pthread_join(t, NULL);
  close(sv[1]);
  return 0;
}
