/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the QMP stream parser. The input is what "QEMU" says
 * on the socket, fed through the real client (reader thread and all) over a
 * socketpair. Byte 0 picks the mode: bit 0 clear: a valid greeting and
 * handshake reply come first, so the input exercises replies and events; set:
 * the input is the whole stream, greeting included. Bit 1 set (with a valid
 * greeting): a command is executed and the input is what comes back after
 * the command was read, so replies (id 2, errors, "return" of any shape) meet
 * a waiting caller; events reach an event callback either way.
 *
 * Built by tests/fuzz/meson.build with -Dfuzzing=true. By hand (the sources, not the archive, so
 * the parser gets coverage instrumentation), from the top of the tree:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *     -Ilib/drivers/qemu -Ilib/core -Iinclude -IBUILD/include tests/fuzz/qmp_fuzz.c \
 *     lib/drivers/qemu/qmp.c lib/core/error.c lib/core/log.c \
 *     $(pkg-config --cflags --libs json-c) -lpthread -o qmp_fuzz
 *   ./qmp_fuzz -max_len=4096 CORPUS_DIR
 */
#include "qmp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char prologue[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n{\"return\": {}, \"id\": 1}\r\n";

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

/* The "QEMU" side of execute mode: answers once the command has arrived. */
struct peer {
  int fd;
  const uint8_t *data;
  size_t len;
};

static void *peer_main(void *arg) {
  struct peer *p = arg;
  char buf[4096];
  /* The command is one line; read until its newline (or the end). */
  for (;;) {
    ssize_t n = read(p->fd, buf, sizeof buf);
    if (n <= 0 || memchr(buf, '\n', (size_t)n))
      break;
  }
  if (write(p->fd, p->data, p->len) < 0) {
    /* the client went away: nothing to answer */
  }
  shutdown(p->fd, SHUT_WR);
  return NULL;
}

static void execute_mode(const uint8_t *data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return;
  int sz = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  hm_qmp *q = NULL;
  pthread_t t;
  struct peer p = {sv[1], data, size};
  if (write(sv[1], prologue, strlen(prologue)) < 0 ||
      hm_qmp_connect_fd(&q, sv[0], 2000, NULL) < 0) {
    close(sv[1]);
    return; /* sv[0] is the client's even on failure */
  }
  /* drain the handshake command so the peer thread sees only ours */
  char buf[4096];
  if (read(sv[1], buf, sizeof buf) < 0)
    abort();
  hm_qmp_set_event_callback(q, on_event, NULL, NULL);
  if (pthread_create(&t, NULL, peer_main, &p) != 0)
    abort();
  json_object *args = json_object_new_object();
  json_object *ret = NULL;
  hm_error *err = NULL;
  int r = hm_qmp_execute(q, "query-fuzz", args, -1, &ret, 2000, &err);
  /* a reply that is not an answer to id 2 leaves the caller waiting for the
   * end of the stream, never for the timeout */
  if (r == HM_E_TIMEOUT)
    abort();
  json_object_put(ret);
  json_object_put(args);
  hm_error_free(err);
  pthread_join(t, NULL);
  hm_qmp_free(q);
  close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size >= 1 && size <= 100000 && (data[0] & 3) == 2) {
    execute_mode(data + 1, size - 1);
    return 0;
  }
  /* Everything is written up front, so it must fit in the socket buffer. */
  if (size < 1 || size > 100000)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return 0;
  int sz = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  if (!(data[0] & 1) && write(sv[1], prologue, strlen(prologue)) < 0)
    goto out;
  if (write(sv[1], data + 1, size - 1) < 0)
    goto out;
  shutdown(sv[1], SHUT_WR);

  hm_qmp *q = NULL;
  if (hm_qmp_connect_fd(&q, sv[0], 2000, NULL) == 0) {
    hm_qmp_set_event_callback(q, on_event, NULL, NULL);
    json_object *d = NULL;
    /* Returns once the reader hit the end of the input or gave up on it. */
    hm_qmp_wait_event(q, "NEVER", 0, match_any, NULL, &d, -1, NULL);
    json_object_put(d);
    hm_qmp_event_seq(q);
    hm_qmp_free(q);
  }
  sv[0] = -1; /* taken over by hm_qmp_connect_fd */
out:
  if (sv[0] >= 0)
    close(sv[0]);
  close(sv[1]);
  return 0;
}
