/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "core/agent_client.h"
#include "guest_path.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The agent enforces a mount's timeout itself; we wait this much longer so its
 * own "timed out" answer (which names the tag) reaches us first. */
#define REPLY_GRACE_MS 3000
#define LIST_TIMEOUT_MS 10000
/* Hello resend interval: starts short (the guest may be just about to open
 * the port), backs off so a slow boot does not pile up hellos. */
#define HELLO_FIRST_MS 200
#define HELLO_MAX_MS 2000

struct pending {
  int64_t id;
  hm_agent_msg *msg; /* the answer, once done */
  int too_long;      /* done, but the answer was dropped for its size */
  int done;
  struct pending *next;
};

/* How much of a too-long line the reader keeps: enough for the id our
 * agent writes first ({"id":N,...}), so its waiter fails at once. */
#define LONG_LINE_HEAD 32

struct hm_agent {
  int fd;
  int wake[2]; /* written by hm_agent_free to stop the reader */
  pthread_t reader;
  int reader_started;

  pthread_mutex_t lock; /* everything below */
  pthread_cond_t cond;  /* CLOCK_MONOTONIC; signalled on answers and close */
  struct pending *pending;
  int64_t next_id;
  int closed;
  char *close_reason;
  int handshaken;
  char *agent_version;
  char **caps;
  char *boot_id; /* last seen */
  /* Reader thread only: lines refused, for the log. */
  unsigned long lines_bad, lines_long;

  pthread_mutex_t wlock; /* one request line at a time on the socket */
};

/* ------------------------------------------------------------------------ */
/* Reader thread */

static void mark_closed(hm_agent *a, const char *fmt, ...) HM_PRINTF(2, 3);
static void mark_closed(hm_agent *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *reason = NULL;
  if (vasprintf(&reason, fmt, ap) < 0)
    reason = NULL;
  va_end(ap);
  pthread_mutex_lock(&a->lock);
  if (!a->closed) {
    a->closed = 1;
    a->close_reason = reason;
    reason = NULL;
    hm_debug("agent connection closed: %s", a->close_reason ? a->close_reason : "?");
  }
  pthread_cond_broadcast(&a->cond);
  pthread_mutex_unlock(&a->lock);
  free(reason);
}

/* Completes the first waiter for id (taking msg, or marking the answer too
 * long when msg is NULL); returns whether one was waiting. */
static int complete(hm_agent *a, int64_t id, hm_agent_msg *msg) {
  pthread_mutex_lock(&a->lock);
  struct pending *p = a->pending;
  while (p && (p->id != id || p->done))
    p = p->next;
  if (p) {
    p->msg = msg;
    p->too_long = msg == NULL;
    p->done = 1;
    pthread_cond_broadcast(&a->cond);
  }
  pthread_mutex_unlock(&a->lock);
  return p != NULL;
}

static void dispatch_line(hm_agent *a, const char *line, size_t len) {
  int64_t id;
  hm_error *e = NULL;
  hm_agent_msg *msg = NULL;
  /* Parsed once, here; the waiter decodes this parse. */
  if (hm_agent_msg_parse(&msg, &id, line, len, &e) < 0) {
    a->lines_bad++;
    hm_warn("agent sent an unusable line (%lu so far): %s", a->lines_bad, hm_error_message(e));
    hm_error_free(e);
    return;
  }
  if (!complete(a, id, msg)) {
    /* An answer to a request whose caller gave up, or from an earlier host
     * connection: nobody is waiting. */
    hm_debug("agent answer for unknown id %lld ignored", (long long)id);
    hm_agent_msg_free(msg);
  }
}

/* A line longer than HM_AGENT_MAX_ANSWER, of which head is the start: it
 * was dropped unread. If it starts like one of our agent's answers, its
 * waiter learns now instead of timing out. */
static void long_line(hm_agent *a, const char *head, size_t len) {
  a->lines_long++;
  hm_warn("agent sent a line longer than %d bytes; dropped (%lu so far)", HM_AGENT_MAX_ANSWER,
          a->lines_long);
  static const char prefix[] = "{\"id\":";
  size_t i = sizeof(prefix) - 1;
  if (len <= i || memcmp(head, prefix, i) != 0)
    return;
  int64_t id = 0;
  size_t digits = 0;
  for (; i < len && head[i] >= '0' && head[i] <= '9' && digits < 16; i++, digits++)
    id = id * 10 + (head[i] - '0');
  if (digits && i < len && head[i] == ',')
    complete(a, id, NULL);
}

/*
 * Reads lines of at most HM_AGENT_MAX_ANSWER bytes into a buffer that never
 * grows past that: a longer line is skipped up to its newline (keeping only
 * its head), so a guest sending endless bytes costs neither memory nor the
 * connection.
 */
static void *reader_main(void *arg) {
  hm_agent *a = arg;
  const size_t max = HM_AGENT_MAX_ANSWER + 1; /* a whole line and its newline */
  size_t cap = 64 * 1024, used = 0, head_len = 0;
  char *buf = malloc(cap), head[LONG_LINE_HEAD];
  int skipping = 0;
  if (!buf) {
    mark_closed(a, "out of memory");
    return NULL;
  }
  for (;;) {
    struct pollfd pfd[2] = {{a->fd, POLLIN, 0}, {a->wake[0], POLLIN, 0}};
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      mark_closed(a, "poll: %s", strerror(errno));
      break;
    }
    if (pfd[1].revents)
      break;
    if (used == cap && cap < max) {
      size_t ncap = cap * 2 < max ? cap * 2 : max;
      char *nb = realloc(buf, ncap);
      if (!nb) {
        mark_closed(a, "out of memory");
        break;
      }
      buf = nb;
      cap = ncap;
    } else if (used == cap) {
      /* No newline in a full buffer: this line is too long. */
      if (!skipping) {
        head_len = used < sizeof(head) ? used : sizeof(head);
        memcpy(head, buf, head_len);
        skipping = 1;
      }
      used = 0;
    }
    ssize_t n = read(a->fd, buf + used, cap - used);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      mark_closed(a, "read: %s", strerror(errno));
      break;
    }
    if (n == 0) {
      mark_closed(a, "the agent closed the connection");
      break;
    }
    used += (size_t)n;
    size_t start = 0;
    if (skipping) {
      char *nl = memchr(buf, '\n', used);
      if (!nl) {
        used = 0;
        continue;
      }
      long_line(a, head, head_len);
      skipping = 0;
      start = (size_t)(nl - buf) + 1;
    }
    for (char *nl; (nl = memchr(buf + start, '\n', used - start));) {
      size_t len = (size_t)(nl - (buf + start));
      if (len > 0)
        dispatch_line(a, buf + start, len);
      start += len + 1;
    }
    memmove(buf, buf + start, used - start);
    used -= start;
  }
  free(buf);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Requests */

static struct pending *pending_add(hm_agent *a, const char *func, hm_error **err, int *rc) {
  struct pending *p = calloc(1, sizeof(*p));
  if (!p) {
    *rc = hm_err_set(err, HM_E_NOMEM, func, "out of memory");
    return NULL;
  }
  pthread_mutex_lock(&a->lock);
  if (a->closed) {
    *rc = hm_err_set(err, HM_E_NOT_READY, func, "agent connection is closed: %s",
                     a->close_reason ? a->close_reason : "unknown reason");
    pthread_mutex_unlock(&a->lock);
    free(p);
    return NULL;
  }
  p->id = a->next_id++;
  p->next = a->pending;
  a->pending = p;
  pthread_mutex_unlock(&a->lock);
  return p;
}

/* Caller holds a->lock. */
static void pending_remove_locked(hm_agent *a, struct pending *p) {
  for (struct pending **pp = &a->pending; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  }
  hm_agent_msg_free(p->msg);
  free(p);
}

static void pending_remove(hm_agent *a, struct pending *p) {
  pthread_mutex_lock(&a->lock);
  pending_remove_locked(a, p);
  pthread_mutex_unlock(&a->lock);
}

/* Writes the whole line before deadline. A line cut short would desync the
 * stream, so a stall mid-line closes the connection. */
static int send_line(hm_agent *a, const char *line, int64_t deadline, const char *func,
                     hm_error **err) {
  size_t len = strlen(line), off = 0;
  int rc = 0;
  pthread_mutex_lock(&a->wlock);
  while (off < len) {
    ssize_t n = hm_plat_send(a->fd, line + off, len - off);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      int64_t left = deadline - hm_now_ms();
      struct pollfd pfd = {a->fd, POLLOUT, 0};
      if (left > 0 && poll(&pfd, 1, (int)left) >= 0 && !(pfd.revents & (POLLERR | POLLHUP)))
        continue;
      if (left <= 0 || pfd.revents == 0) {
        if (off > 0)
          mark_closed(a, "a request could not be written completely in time");
        rc = hm_err_set(err, HM_E_TIMEOUT, func,
                        "the agent connection did not accept the request in time");
        break;
      }
    }
    mark_closed(a, "write: %s", n < 0 ? strerror(errno) : "peer closed");
    rc = hm_err_set(err, HM_E_NOT_READY, func, "cannot send to the agent: %s",
                    n < 0 ? strerror(errno) : "connection closed");
    break;
  }
  pthread_mutex_unlock(&a->wlock);
  return rc;
}

static void deadline_ts(struct timespec *ts, int64_t deadline_ms) {
  ts->tv_sec = (time_t)(deadline_ms / 1000);
  ts->tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
}

/*
 * Waits until one of ps[0..n) is answered (returns its index), the
 * connection closes (HM_E_NOT_READY) or deadline passes (HM_E_TIMEOUT,
 * without setting err: the caller knows what it was waiting for).
 * Caller holds a->lock.
 */
static int wait_any_locked(hm_agent *a, struct pending **ps, size_t n, int64_t deadline) {
  struct timespec ts;
  deadline_ts(&ts, deadline);
  for (;;) {
    for (size_t i = 0; i < n; i++)
      if (ps[i]->done)
        return (int)i;
    if (a->closed)
      return HM_E_NOT_READY;
    if (hm_now_ms() >= deadline)
      return HM_E_TIMEOUT;
    pthread_cond_timedwait(&a->cond, &a->lock, &ts);
  }
}

static int closed_error(hm_agent *a, const char *func, const char *op, hm_error **err) {
  pthread_mutex_lock(&a->lock);
  int r = hm_err_set(err, HM_E_NOT_READY, func, "agent connection closed during %s: %s", op,
                     a->close_reason ? a->close_reason : "unknown reason");
  pthread_mutex_unlock(&a->lock);
  return r;
}

/* Turns an ok:false answer into an error. ETIMEDOUT keeps its meaning so
 * callers can tell "device never appeared" from other agent failures. The
 * guest wrote the text: it reaches logs and terminals escaped. */
static int agent_error(const hm_agent_response *resp, const char *func, hm_error **err) {
  int code = resp->err_no == ETIMEDOUT ? HM_E_TIMEOUT : HM_E_AGENT;
  char *q = hm_guest_path_quote(resp->error);
  if (!q)
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  int r = hm_err_set(err, code, func, "guest agent: %s (errno %d: %s)", q, resp->err_no,
                     strerror(resp->err_no));
  free(q);
  return r;
}

/* A waiter's answer: decoded, or an error when it was dropped as too long. */
static int answer_decode(hm_agent_response *resp, int op, struct pending *p, const char *func,
                         hm_error **err) {
  memset(resp, 0, sizeof(*resp));
  if (p->too_long)
    return hm_err_set(err, HM_E_PROTOCOL, func,
                      "the guest agent's answer to %s was longer than %d bytes (dropped)",
                      hm_agent_op_name(op), HM_AGENT_MAX_ANSWER);
  hm_error *e = NULL;
  int rc = hm_agent_response_from_msg(resp, op, p->msg, &e);
  if (rc < 0) {
    rc = hm_err_set(err, rc, func, "bad answer from the guest agent: %s", hm_error_message(e));
    hm_error_free(e);
    hm_agent_response_clear(resp);
  }
  return rc;
}

/* One request, one answer: *resp is the decoded answer (ok or not). */
static int call(hm_agent *a, hm_agent_request *req, hm_agent_response *resp, int64_t deadline,
                const char *func, hm_error **err) {
  int rc = 0;
  struct pending *p = pending_add(a, func, err, &rc);
  if (!p)
    return rc;
  req->id = p->id;
  char *line = NULL;
  hm_error *e = NULL;
  if ((rc = hm_agent_request_encode(&line, req, &e)) < 0) {
    pending_remove(a, p);
    rc = hm_err_set(err, rc, func, "%s", hm_error_message(e));
    hm_error_free(e);
    return rc;
  }
  rc = send_line(a, line, deadline, func, err);
  free(line);
  if (rc < 0) {
    pending_remove(a, p);
    return rc;
  }
  pthread_mutex_lock(&a->lock);
  rc = wait_any_locked(a, &p, 1, deadline);
  pthread_mutex_unlock(&a->lock);
  const char *op = hm_agent_op_name(req->op);
  if (rc >= 0)
    rc = answer_decode(resp, req->op, p, func, err);
  pending_remove(a, p);
  if (rc == HM_E_NOT_READY)
    return closed_error(a, func, op, err);
  if (rc == HM_E_TIMEOUT)
    return hm_err_set(err, HM_E_TIMEOUT, func, "no answer from the guest agent to %s in time", op);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Handshake */

static int hello_accept(hm_agent *a, hm_agent_response *resp, const char *func, hm_error **err) {
  if (!resp->ok) {
    if (resp->err_no == EPROTONOSUPPORT) {
      char *q = hm_guest_path_quote(resp->error);
      int r = q ? hm_err_set(err, HM_E_PROTOCOL, func,
                             "guest agent refused protocol %d.%d: %s (update the agent or the "
                             "host)",
                             HM_AGENT_PROTO_MAJOR, HM_AGENT_PROTO_MINOR, q)
                : hm_err_set(err, HM_E_NOMEM, func, "out of memory");
      free(q);
      return r;
    }
    return agent_error(resp, func, err);
  }
  /* The version is shown in status and messages: kept escaped. */
  char *name = hm_guest_path_quote(resp->agent_name);
  char *version = hm_guest_path_quote(resp->agent_version);
  if (!name || !version) {
    free(name);
    free(version);
    return hm_err_set(err, HM_E_NOMEM, func, "out of memory");
  }
  if (resp->major != HM_AGENT_PROTO_MAJOR) {
    int r = hm_err_set(err, HM_E_PROTOCOL, func,
                       "guest agent %s %s speaks protocol %d.%d, this host %d.%d; major "
                       "versions must match (update the agent or the host)",
                       name, version, resp->major, resp->minor, HM_AGENT_PROTO_MAJOR,
                       HM_AGENT_PROTO_MINOR);
    free(name);
    free(version);
    return r;
  }
  free(name);
  pthread_mutex_lock(&a->lock);
  if (resp->boot_id) {
    free(a->boot_id);
    a->boot_id = resp->boot_id;
    resp->boot_id = NULL;
  }
  free(a->agent_version);
  hm_strv_free(a->caps);
  a->agent_version = version;
  a->caps = resp->capabilities;
  resp->capabilities = NULL;
  a->handshaken = 1;
  pthread_mutex_unlock(&a->lock);
  return 0;
}

static int handshake(hm_agent *a, int timeout_ms, const char *func, hm_error **err) {
  int64_t deadline = hm_now_ms() + timeout_ms;
  struct pending *ps[64];
  size_t n = 0;
  int interval = HELLO_FIRST_MS, rc = HM_E_TIMEOUT, got = -1;
  hm_agent_request req = {
      .op = HM_AGENT_OP_HELLO, .major = HM_AGENT_PROTO_MAJOR, .minor = HM_AGENT_PROTO_MINOR};
  while (got < 0) {
    int64_t now = hm_now_ms();
    if (now >= deadline)
      break;
    /* Each resend is a new request with its own id: an answer to any of them
     * completes the handshake, and late answers to the others are ignored. */
    if (n < sizeof(ps) / sizeof(ps[0])) {
      if (!(ps[n] = pending_add(a, func, err, &rc)))
        goto out;
      req.id = ps[n]->id;
      n++;
      char *line = NULL;
      if ((rc = hm_agent_request_encode(&line, &req, err)) < 0)
        goto out;
      rc = send_line(a, line, deadline, func, err);
      free(line);
      if (rc == HM_E_TIMEOUT) {
        /* Our socket buffer is full: QEMU stalls it while the guest has the
         * port closed. Keep waiting for an answer to what already went out. */
        hm_error_free(err ? *err : NULL);
        if (err)
          *err = NULL;
      } else if (rc < 0) {
        goto out;
      }
    }
    int64_t until = now + interval < deadline ? now + interval : deadline;
    interval = interval * 2 > HELLO_MAX_MS ? HELLO_MAX_MS : interval * 2;
    pthread_mutex_lock(&a->lock);
    int w = wait_any_locked(a, ps, n, until);
    pthread_mutex_unlock(&a->lock);
    if (w >= 0)
      got = w;
    else if (w == HM_E_NOT_READY) {
      rc = closed_error(a, func, "hello", err);
      goto out;
    }
  }
  if (got < 0) {
    rc = hm_err_set(err, HM_E_TIMEOUT, func,
                    "the guest agent did not answer hello within %d ms (is hotmount-agent "
                    "running in the guest?)",
                    timeout_ms);
    goto out;
  }
  hm_agent_response resp;
  rc = answer_decode(&resp, HM_AGENT_OP_HELLO, ps[got], func, err);
  if (rc == 0)
    rc = hello_accept(a, &resp, func, err);
  hm_agent_response_clear(&resp);
out:
  pthread_mutex_lock(&a->lock);
  for (size_t i = 0; i < n; i++)
    pending_remove_locked(a, ps[i]);
  pthread_mutex_unlock(&a->lock);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Public (library-internal) API */

static int64_t first_id(void) {
  /* Ids must not repeat across host connections: the agent may still answer a
   * request of an earlier connection after we reconnected through the same
   * virtio-serial port. Random start, kept below 2^40 (exact in doubles). */
  uint64_t r = 0;
  if (hm_plat_random(&r, sizeof(r)) < 0)
    r = (uint64_t)hm_now_ms() ^ ((uint64_t)getpid() << 20);
  return (int64_t)(r & ((1ULL << 40) - 1)) + 1;
}

int hm_agent_connect(hm_agent **out, const char *socket_path, int timeout_ms, hm_error **err) {
  *out = NULL;
  if (!socket_path || timeout_ms < 0)
    return HM_ERR(err, HM_E_INVALID, "socket path is NULL or timeout is negative");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof(sa.sun_path))
    return HM_ERR(err, HM_E_INVALID, "socket path '%s' is too long for a unix socket", socket_path);
  strcpy(sa.sun_path, socket_path);

  hm_agent *a = calloc(1, sizeof(*a));
  if (!a)
    return HM_ERR_NOMEM(err);
  a->fd = -1;
  a->wake[0] = a->wake[1] = -1;
  a->next_id = first_id();
  pthread_mutex_init(&a->lock, NULL);
  pthread_mutex_init(&a->wlock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&a->cond, &ca);
  pthread_condattr_destroy(&ca);

  int rc;
  /* The agent channel is QEMU's: a socket of another user there would
   * receive our mount requests and feed us its answers. */
  if ((rc = hm_unix_path_check(socket_path, err)) < 0) {
    hm_error_prefix(err, rc, __func__, "refusing the agent socket");
    goto fail;
  }
  a->fd = hm_plat_socket(AF_UNIX, SOCK_STREAM);
  if (a->fd < 0) {
    rc = HM_ERR(err, -errno, "socket: %s", strerror(errno));
    goto fail;
  }
  if (connect(a->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    rc = HM_ERR(err, HM_E_NOT_READY, "cannot connect to the agent socket %s: %s", socket_path,
                strerror(errno));
    goto fail;
  }
  if ((rc = hm_unix_peer_check(a->fd, socket_path, err)) < 0) {
    hm_error_prefix(err, rc, __func__, "refusing the agent socket");
    goto fail;
  }
  /* Non-blocking from here on: a stalled port must not block a writer past
   * its deadline. */
  if (fcntl(a->fd, F_SETFL, fcntl(a->fd, F_GETFL) | O_NONBLOCK) < 0 || hm_plat_pipe(a->wake) < 0) {
    rc = HM_ERR(err, -errno, "setting up the connection: %s", strerror(errno));
    goto fail;
  }
  /* The reader must not take the application's signals. */
  int tr = hm_thread_create(&a->reader, reader_main, a);
  if (tr != 0) {
    rc = HM_ERR(err, -tr, "cannot start the reader thread: %s", strerror(tr));
    goto fail;
  }
  a->reader_started = 1;
  if ((rc = handshake(a, timeout_ms, __func__, err)) < 0)
    goto fail;
  *out = a;
  return 0;
fail:
  hm_agent_free(a);
  return rc;
}

void hm_agent_free(hm_agent *a) {
  if (!a)
    return;
  if (a->reader_started) {
    ssize_t w;
    do
      w = write(a->wake[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(a->reader, NULL);
  }
  if (a->fd >= 0)
    close(a->fd);
  if (a->wake[0] >= 0)
    close(a->wake[0]);
  if (a->wake[1] >= 0)
    close(a->wake[1]);
  while (a->pending)
    pending_remove_locked(a, a->pending);
  free(a->close_reason);
  free(a->agent_version);
  free(a->boot_id);
  hm_strv_free(a->caps);
  pthread_mutex_destroy(&a->lock);
  pthread_mutex_destroy(&a->wlock);
  pthread_cond_destroy(&a->cond);
  free(a);
}

int hm_agent_is_connected(hm_agent *a) {
  if (!a)
    return 0;
  pthread_mutex_lock(&a->lock);
  int r = a->handshaken && !a->closed;
  pthread_mutex_unlock(&a->lock);
  return r;
}

const char *hm_agent_get_version(hm_agent *a) {
  return a ? a->agent_version : NULL;
}

int hm_agent_has_capability(hm_agent *a, const char *cap) {
  for (char **c = a ? a->caps : NULL; c && *c; c++)
    if (strcmp(*c, cap) == 0)
      return 1;
  return 0;
}

static int agent_mount(hm_agent *a, int type, const char *tag, const char *port,
                       const char *hub_entry, const char *target, int readonly, const char *options,
                       int timeout_ms, hm_error **err) {
  if (!a || !tag || !target || timeout_ms < 0 || timeout_ms > HM_AGENT_MAX_TIMEOUT_MS)
    return HM_ERR(err, HM_E_INVALID, "missing argument or timeout out of range (0..%d ms)",
                  HM_AGENT_MAX_TIMEOUT_MS);
  if (type != HM_TYPE_VIRTIOFS && type != HM_TYPE_9P && type != HM_TYPE_BIND)
    return HM_ERR(err, HM_E_INVALID, "type %d cannot be mounted by the guest agent", type);
  /* An agent from before bind mounts would refuse the type as a protocol
   * error; say what to do instead. */
  if (type == HM_TYPE_BIND && !hm_agent_has_capability(a, "mount.bind"))
    return HM_ERR(err, HM_E_AGENT,
                  "the guest's hotmount-agent %s cannot make bind mounts (it lacks mount.bind); "
                  "update it in the guest",
                  a->agent_version ? a->agent_version : "(unknown version)");
  /* bind: tag is the guest directory to bind-mount. */
  int bind = type == HM_TYPE_BIND;
  if (hub_entry && !hm_agent_has_capability(a, "mount.virtiofs.hub"))
    return HM_ERR(err, HM_E_AGENT,
                  "the guest's hotmount-agent %s cannot mount from the shared virtiofs device "
                  "(it lacks mount.virtiofs.hub); update it in the guest, or add the mount with "
                  "-o device=dedicated",
                  a->agent_version ? a->agent_version : "(unknown version)");
  /* An agent from before 9p identity passing refuses uname=; say why. */
  if (type == HM_TYPE_9P && options && strstr(options, "uname=") &&
      !hm_agent_has_capability(a, "mount.9p.uname"))
    return HM_ERR(err, HM_E_AGENT,
                  "the guest's hotmount-agent %s is too old for 9p mounts (it lacks "
                  "mount.9p.uname, which passes guest uids through); update it in the guest",
                  a->agent_version ? a->agent_version : "(unknown version)");
  /* Likewise for a 9p mount over a virtio-9p-pci device (no relay port). */
  if (type == HM_TYPE_9P && !port && !hm_agent_has_capability(a, "mount.9p.virtio"))
    return HM_ERR(err, HM_E_AGENT,
                  "the guest's hotmount-agent %s cannot mount 9p from a virtio-9p device (it "
                  "lacks mount.9p.virtio); update it in the guest, or add the mount with "
                  "-o via=serial",
                  a->agent_version ? a->agent_version : "(unknown version)");
  hm_agent_request req = {
      .op = HM_AGENT_OP_MOUNT,
      .type = type,
      /* Only read by the encoder; the casts do not let it write. */
      .tag = bind ? NULL : (char *)tag,
      .port = (char *)port,
      .source = bind ? (char *)tag : (char *)hub_entry,
      .target = (char *)target,
      .readonly = readonly != 0,
      .options = bind ? NULL : (char *)options,
      .timeout_ms = timeout_ms,
  };
  hm_agent_response resp;
  int rc = call(a, &req, &resp, hm_now_ms() + timeout_ms + REPLY_GRACE_MS, "hm_agent_mount", err);
  if (rc < 0)
    return rc;
  if (!resp.ok)
    rc = agent_error(&resp, "hm_agent_mount", err);
  hm_agent_response_clear(&resp);
  return rc;
}

int hm_agent_mount(hm_agent *a, int type, const char *tag, const char *target, int readonly,
                   const char *options, int timeout_ms, hm_error **err) {
  /* 9p: tag is the virtio-serial port name; it is also the mount's source,
   * so the agent gets it as both. */
  return agent_mount(a, type, tag, type == HM_TYPE_9P ? tag : NULL, NULL, target, readonly, options,
                     timeout_ms, err);
}

int hm_agent_mount_att(hm_agent *a, int type, const hm_attachment *att, const char *target,
                       int readonly, int timeout_ms, hm_error **err) {
  const char *tag = hm_attachment_get_tag(att);
  const char *gt = hm_attachment_get_data(att, "guestTransport");
  int virtio9p = type == HM_TYPE_9P && gt && strcmp(gt, "virtio") == 0;
  if (!tag)
    return HM_ERR(err, HM_E_INTERNAL, "the backend set no tag for mount %s",
                  hm_attachment_get_id(att));
  /* A shared-device entry: the hub's tag, and the entry as the source. */
  const char *hub = type == HM_TYPE_VIRTIOFS ? hm_attachment_get_data(att, "hubEntry") : NULL;
  return agent_mount(a, type, hub ? "hm-hub" : tag, type == HM_TYPE_9P && !virtio9p ? tag : NULL,
                     hub, target, readonly, hm_attachment_get_data(att, "guestOptions"), timeout_ms,
                     err);
}

/* A request whose answer carries nothing but ok or an error. */
static int call_plain(hm_agent *a, hm_agent_request *req, int timeout_ms, const char *func,
                      hm_error **err) {
  hm_agent_response resp;
  int rc = call(a, req, &resp, hm_now_ms() + timeout_ms, func, err);
  if (rc < 0)
    return rc;
  if (!resp.ok)
    rc = agent_error(&resp, func, err);
  hm_agent_response_clear(&resp);
  return rc;
}

int hm_agent_umount(hm_agent *a, const char *target, unsigned flags, int timeout_ms,
                    hm_error **err) {
  if (!a || !target || timeout_ms < 0)
    return HM_ERR(err, HM_E_INVALID, "missing argument or negative timeout");
  if (flags & ~(HM_REMOVE_LAZY | HM_REMOVE_FORCE))
    return HM_ERR(err, HM_E_INVALID, "unknown flags 0x%x", flags);
  hm_agent_request req = {
      .op = HM_AGENT_OP_UMOUNT,
      .target = (char *)target,
      .lazy = (flags & HM_REMOVE_LAZY) != 0,
      .force = (flags & HM_REMOVE_FORCE) != 0,
  };
  return call_plain(a, &req, timeout_ms, __func__, err);
}

int hm_agent_notify(hm_agent *a, const char *target, const hm_notify_event *ev, size_t n,
                    int timeout_ms, hm_error **err) {
  if (!a || !target || (n && !ev) || n > HM_NOTIFY_MAX_BATCH || timeout_ms < 0)
    return HM_ERR(err, HM_E_INVALID,
                  "missing argument, more than %d events, or a negative "
                  "timeout",
                  HM_NOTIFY_MAX_BATCH);
  if (!hm_agent_has_capability(a, "notify"))
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "the guest agent (%s) lacks notify; update it in the guest to use --notify",
                  hm_agent_get_version(a));
  hm_agent_request req = {.op = HM_AGENT_OP_NOTIFY,
                          .target = (char *)target,
                          .events = (hm_notify_event *)ev,
                          .n_events = n};
  return call_plain(a, &req, timeout_ms, __func__, err);
}

int hm_agent_list(hm_agent *a, hm_agent_mount_info **out, size_t *n, hm_error **err) {
  *out = NULL;
  *n = 0;
  if (!a)
    return HM_ERR(err, HM_E_INVALID, "agent is NULL");
  hm_agent_request req = {.op = HM_AGENT_OP_LIST};
  hm_agent_response resp;
  int rc = call(a, &req, &resp, hm_now_ms() + LIST_TIMEOUT_MS, __func__, err);
  if (rc < 0)
    return rc;
  if (!resp.ok) {
    rc = agent_error(&resp, __func__, err);
  } else {
    *out = resp.mounts;
    *n = resp.n_mounts;
    resp.mounts = NULL;
    resp.n_mounts = 0;
    if (resp.boot_id) {
      pthread_mutex_lock(&a->lock);
      free(a->boot_id);
      a->boot_id = resp.boot_id;
      resp.boot_id = NULL;
      pthread_mutex_unlock(&a->lock);
    }
  }
  hm_agent_response_clear(&resp);
  return rc;
}

char *hm_agent_boot_id(hm_agent *a) {
  if (!a)
    return NULL;
  pthread_mutex_lock(&a->lock);
  char *b = a->boot_id ? strdup(a->boot_id) : NULL;
  pthread_mutex_unlock(&a->lock);
  return b;
}

void hm_agent_list_free(hm_agent_mount_info *v, size_t n) {
  hm_agent_mount_info_free(v, n);
}
