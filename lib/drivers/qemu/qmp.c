/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "qmp.h"

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

#define EVENT_HISTORY 256
/* QEMU's biggest replies (query-pci, qom-list on a full machine) are well
 * under a megabyte; anything this large is a broken or hostile peer. */
#define MAX_MESSAGE (16u * 1024 * 1024)
/* query-pci nests about ten levels deep; leave room without allowing the
 * unbounded recursion a hostile peer could ask for. */
#define MAX_DEPTH 64

struct pending {
  uint64_t id;
  json_object *reply; /* set by the reader */
  bool done;
  struct pending *next;
};

struct event {
  char *name;
  json_object *data;
};

struct hm_qmp {
  int fd;
  pthread_t reader;
  bool reader_started;

  pthread_mutex_t lock; /* everything below, except where noted */
  pthread_cond_t cond;  /* replies, events, the greeting, disconnection */
  bool greeted;
  json_object *greeting;
  bool dead;      /* no more replies will come */
  int dead_code;  /* HM_E_NOT_READY or HM_E_PROTOCOL */
  char *dead_why; /* for error messages */
  bool closing;   /* hm_qmp_free is running */
  unsigned users; /* threads inside execute/wait_event */
  uint64_t next_id;
  struct pending *pending;
  struct event events[EVENT_HISTORY];
  uint64_t event_next; /* sequence number of the next event */

  pthread_mutex_t write_lock; /* one command on the wire at a time */

  /* Recursive so the callback may replace itself from inside a call. */
  pthread_mutex_t cb_lock;
  hm_qmp_event_fn cb;
  void *cb_ud;
  void (*cb_destroy)(void *);
};

/* Absolute CLOCK_MONOTONIC deadline; timeout_ms < 0 means none. */
static int64_t deadline_of(int timeout_ms) {
  return timeout_ms < 0 ? -1 : hm_now_ms() + timeout_ms;
}

static int ms_left(int64_t deadline) {
  if (deadline < 0)
    return -1;
  int64_t left = deadline - hm_now_ms();
  return left < 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Waits on q->cond until deadline; returns ETIMEDOUT once it passed. */
static int cond_wait_until(hm_qmp *q, int64_t deadline) {
  if (deadline < 0)
    return pthread_cond_wait(&q->cond, &q->lock);
  struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (long)(deadline % 1000) * 1000000};
  return pthread_cond_timedwait(&q->cond, &q->lock, &ts);
}

/* Called with q->lock held. Only the first reason is kept. */
static void mark_dead(hm_qmp *q, int code, const char *why) {
  if (q->dead)
    return;
  q->dead = true;
  q->dead_code = code;
  q->dead_why = strdup(why);
  pthread_cond_broadcast(&q->cond);
}

static const char *dead_reason(hm_qmp *q) {
  return q->dead_why ? q->dead_why : "connection closed";
}

/* Takes msg. */
static void deliver_reply(hm_qmp *q, json_object *msg) {
  json_object *idv;
  struct pending *p = NULL;
  pthread_mutex_lock(&q->lock);
  if (json_object_object_get_ex(msg, "id", &idv)) {
    uint64_t id = (uint64_t)json_object_get_int64(idv);
    for (p = q->pending; p; p = p->next)
      if (p->id == id && !p->done && json_object_is_type(idv, json_type_int))
        break;
    if (!p)
      hm_debug("qmp: dropping reply to unknown id %s (its caller timed out?)",
               json_object_to_json_string(idv));
  } else {
    /* QEMU omits the id only when it could not parse the command; it handles
     * in-band commands in order, so the reply belongs to the oldest one. */
    struct pending *oldest = NULL;
    for (struct pending *it = q->pending; it; it = it->next)
      if (!it->done && (!oldest || it->id < oldest->id))
        oldest = it;
    p = oldest;
    hm_warn("qmp: reply without id: %s", json_object_to_json_string(msg));
  }
  if (p) {
    /* The whole tree changes hands: json-c reference counts are not atomic,
     * so from here on only the waiter may touch it. */
    p->reply = msg;
    msg = NULL;
    p->done = true;
    pthread_cond_broadcast(&q->cond);
  }
  pthread_mutex_unlock(&q->lock);
  json_object_put(msg);
}

static void deliver_event(hm_qmp *q, const char *name, json_object *data) {
  char *copy = strdup(name);
  /* cb_lock spans recording and the callback: whoever saw the event through
   * wait_event and then replaces the callback knows the old one got it. */
  pthread_mutex_lock(&q->cb_lock);
  pthread_mutex_lock(&q->lock);
  struct event *e = &q->events[q->event_next % EVENT_HISTORY];
  free(e->name);
  json_object_put(e->data);
  e->name = copy;
  e->data = copy ? json_object_get(data) : NULL;
  /* Without memory for the name, better a gap in the sequence than an event
   * recorded under a wrong one. */
  q->event_next++;
  pthread_cond_broadcast(&q->cond);
  pthread_mutex_unlock(&q->lock);
  if (q->cb)
    q->cb(name, data, q->cb_ud);
  pthread_mutex_unlock(&q->cb_lock);
}

/* Sorts one complete top-level message, taking it. Returns 0, or
 * HM_E_PROTOCOL with why. */
static int dispatch(hm_qmp *q, json_object *msg, const char **why) {
  json_object *v;
  int r = 0;
  if (!msg) {
    /* "null" parses as complete JSON too */
    *why = "empty message";
    return HM_E_PROTOCOL;
  }
  if (!json_object_is_type(msg, json_type_object)) {
    *why = "message is not a JSON object";
    r = HM_E_PROTOCOL;
  } else if (json_object_object_get_ex(msg, "QMP", &v)) {
    pthread_mutex_lock(&q->lock);
    if (!q->greeted) {
      q->greeted = true;
      q->greeting = msg;
      msg = NULL;
      pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
  } else if (!q->greeted) { /* only the reader writes it */
    *why = "peer did not start with a QMP greeting";
    r = HM_E_PROTOCOL;
  } else if (json_object_object_get_ex(msg, "event", &v)) {
    if (json_object_is_type(v, json_type_string)) {
      json_object *data = NULL;
      json_object_object_get_ex(msg, "data", &data);
      deliver_event(q, json_object_get_string(v), data);
    } else {
      *why = "event name is not a string";
      r = HM_E_PROTOCOL;
    }
  } else if (json_object_object_get_ex(msg, "return", NULL) ||
             json_object_object_get_ex(msg, "error", NULL)) {
    deliver_reply(q, msg);
    msg = NULL;
  } else {
    *why = "message is neither a reply nor an event";
    r = HM_E_PROTOCOL;
  }
  json_object_put(msg);
  return r;
}

/*
 * Feeds received bytes to the tokenizer; QEMU sends objects back to back,
 * each followed by CRLF. *obj_bytes counts the bytes of the message being
 * assembled, to bound memory. Returns 0 or HM_E_PROTOCOL with a reason.
 */
static int parse_chunk(hm_qmp *q, json_tokener *tok, const char *buf, size_t len, size_t *obj_bytes,
                       const char **why) {
  while (len > 0) {
    /* Whitespace between messages must not count toward a message. */
    if (*obj_bytes == 0) {
      while (len > 0 && (*buf == '\r' || *buf == '\n' || *buf == ' ' || *buf == '\t')) {
        buf++;
        len--;
      }
      if (len == 0)
        break;
    }
    size_t n = len > 0x7fffffff ? 0x7fffffff : len;
    json_object *obj = json_tokener_parse_ex(tok, buf, (int)n);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr == json_tokener_continue) {
      *obj_bytes += n;
      if (*obj_bytes > MAX_MESSAGE) {
        *why = "message larger than 16 MiB";
        return HM_E_PROTOCOL;
      }
      buf += n;
      len -= n;
      continue;
    }
    if (jerr != json_tokener_success) {
      *why = json_tokener_error_desc(jerr);
      return HM_E_PROTOCOL;
    }
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_reset(tok);
    *obj_bytes = 0;
    buf += used;
    len -= used;
    int r = dispatch(q, obj, why);
    if (r < 0)
      return r;
  }
  return 0;
}

static void *reader_main(void *arg) {
  hm_qmp *q = arg;
  json_tokener *tok = json_tokener_new_ex(MAX_DEPTH);
  size_t obj_bytes = 0;
  char *buf = malloc(65536);
  int code = HM_E_NOT_READY;
  const char *why = "connection closed by QEMU";
  char errbuf[128];

  if (!tok || !buf) {
    why = "out of memory in the QMP reader";
    goto out;
  }
  /* Runs in the caller's process: tolerate signals, never exit. */
  for (;;) {
    struct pollfd p = {.fd = q->fd, .events = POLLIN};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      snprintf(errbuf, sizeof(errbuf), "poll: %s", strerror(errno));
      why = errbuf;
      break;
    }
    ssize_t n = read(q->fd, buf, 65536);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      /* QEMU resets the socket on "quit"; that is a close like any other. */
      snprintf(errbuf, sizeof(errbuf), "connection lost: %s", strerror(errno));
      why = errbuf;
      break;
    }
    if (n == 0)
      break;
    int r = parse_chunk(q, tok, buf, (size_t)n, &obj_bytes, &why);
    if (r < 0) {
      snprintf(errbuf, sizeof(errbuf), "malformed QMP stream: %s", why);
      why = errbuf;
      code = HM_E_PROTOCOL;
      break;
    }
  }
out:
  pthread_mutex_lock(&q->lock);
  if (q->closing)
    mark_dead(q, HM_E_NOT_READY, "connection closed");
  else
    mark_dead(q, code, why);
  pthread_mutex_unlock(&q->lock);
  if (code == HM_E_PROTOCOL)
    hm_warn("qmp: %s; dropping the connection", why);
  /* No more reads: make QEMU see the end too, and later writes fail fast. */
  shutdown(q->fd, SHUT_RDWR);
  if (tok)
    json_tokener_free(tok);
  free(buf);
  return NULL;
}

/* Sends all of data; the first chunk carries fd (if >= 0) as SCM_RIGHTS. */
static int send_all(hm_qmp *q, const char *data, size_t len, int fd, int64_t deadline,
                    bool *partial, const char **why) {
  bool fd_sent = fd < 0;
  while (len > 0) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } control;
    if (!fd_sent) {
      memset(&control, 0, sizeof(control));
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof(control.buf);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n = sendmsg(q->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = q->fd, .events = POLLOUT};
        int r = poll(&p, 1, ms_left(deadline));
        if (r == 0) {
          *why = "timed out sending the command";
          return HM_E_TIMEOUT;
        }
        continue;
      }
      int e = errno;
      *why = strerror(e);
      return e == EBADF || e == EINVAL ? HM_E_INVALID : HM_E_NOT_READY;
    }
    fd_sent = true;
    *partial = (size_t)n < len;
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

static void unlink_pending(hm_qmp *q, struct pending *p) {
  for (struct pending **pp = &q->pending; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  json_object_put(p->reply);
  p->reply = NULL;
}

static void leave(hm_qmp *q) {
  q->users--;
  pthread_cond_broadcast(&q->cond);
}

static int error_reply(json_object *reply, const char *command, hm_error **err) {
  json_object *e, *cls = NULL, *desc = NULL;
  json_object_object_get_ex(reply, "error", &e);
  json_object_object_get_ex(e, "class", &cls);
  json_object_object_get_ex(e, "desc", &desc);
  /* QEMU's class goes in the detail: callers decide by it, not by desc. */
  const char *klass =
      json_object_is_type(cls, json_type_string) ? json_object_get_string(cls) : "UnknownError";
  return hm_err_setc(err, HM_E_QMP, HM_ECLASS_QMP, klass, "hm_qmp_execute", "%s: %s: %s", command,
                     klass, desc ? json_object_get_string(desc) : "(no description)");
}

int hm_qmp_execute(hm_qmp *q, const char *command, json_object *args, int fd,
                   json_object **out_return, int timeout_ms, hm_error **err) {
  if (out_return)
    *out_return = NULL;
  if (!q || !command || !*command)
    return HM_ERR(err, HM_E_INVALID, "no connection or no command");
  if (args && !json_object_is_type(args, json_type_object))
    return HM_ERR(err, HM_E_INVALID, "%s: arguments must be a JSON object", command);

  int64_t deadline = deadline_of(timeout_ms);
  struct pending p = {0};
  int r = 0;
  const char *why = NULL;

  pthread_mutex_lock(&q->lock);
  if (q->dead || q->closing) {
    r = HM_ERR(err, HM_E_NOT_READY, "%s: %s", command, dead_reason(q));
    pthread_mutex_unlock(&q->lock);
    return r;
  }
  q->users++;
  p.id = ++q->next_id;
  /* Registered before sending so a fast reply always finds its waiter. */
  p.next = q->pending;
  q->pending = &p;
  pthread_mutex_unlock(&q->lock);

  json_object *msg = json_object_new_object();
  json_object *name = json_object_new_string(command);
  json_object *idv = json_object_new_int64((int64_t)p.id);
  const char *text = NULL;
  if (msg && name && idv && json_object_object_add(msg, "execute", name) == 0) {
    name = NULL;
    if ((!args || json_object_object_add(msg, "arguments", json_object_get(args)) == 0) &&
        json_object_object_add(msg, "id", idv) == 0) {
      idv = NULL;
      text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
    }
  }
  json_object_put(name);
  json_object_put(idv);
  char *line = NULL;
  if (text) {
    size_t tl = strlen(text);
    line = malloc(tl + 3);
    if (line)
      memcpy(line, text, tl), memcpy(line + tl, "\r\n", 3);
  }
  json_object_put(msg);

  if (!line) {
    r = HM_ERR_NOMEM(err);
    pthread_mutex_lock(&q->lock);
    goto out;
  }

  bool partial = false;
  pthread_mutex_lock(&q->write_lock);
  r = send_all(q, line, strlen(line), fd, deadline, &partial, &why);
  pthread_mutex_unlock(&q->write_lock);
  free(line);

  pthread_mutex_lock(&q->lock);
  if (r < 0) {
    r = HM_ERR(err, r, "%s: sending: %s", command, q->dead ? dead_reason(q) : why);
    if (partial) {
      /* Half a command is on the wire: whatever follows would be garbage to
       * QEMU, so the connection cannot be used any more. */
      mark_dead(q, HM_E_NOT_READY, "a command was cut off while sending");
      shutdown(q->fd, SHUT_RDWR);
    }
    goto out;
  }
  while (!p.done && !q->dead) {
    if (cond_wait_until(q, deadline) == ETIMEDOUT && !p.done) {
      r = HM_ERR(err, HM_E_TIMEOUT, "%s: no reply within %d ms", command, timeout_ms);
      goto out;
    }
  }
  if (!p.done) {
    r = HM_ERR(err, q->dead_code, "%s: %s", command, dead_reason(q));
    goto out;
  }
  json_object *ret;
  if (json_object_object_get_ex(p.reply, "return", &ret)) {
    if (out_return)
      *out_return = json_object_get(ret);
  } else {
    r = error_reply(p.reply, command, err);
  }
out:
  unlink_pending(q, &p);
  leave(q);
  pthread_mutex_unlock(&q->lock);
  return r;
}

uint64_t hm_qmp_event_seq(hm_qmp *q) {
  pthread_mutex_lock(&q->lock);
  uint64_t s = q->event_next;
  pthread_mutex_unlock(&q->lock);
  return s;
}

int hm_qmp_wait_event(hm_qmp *q, const char *event, uint64_t since,
                      int (*match)(json_object *data, void *ud), void *ud, json_object **out_data,
                      int timeout_ms, hm_error **err) {
  if (out_data)
    *out_data = NULL;
  if (!q || !event)
    return HM_ERR(err, HM_E_INVALID, "no connection or no event name");
  int64_t deadline = deadline_of(timeout_ms);
  int r;
  pthread_mutex_lock(&q->lock);
  q->users++;
  uint64_t pos = since;
  for (;;) {
    /* Events older than the history are gone; start at the oldest kept. */
    if (q->event_next > EVENT_HISTORY && pos < q->event_next - EVENT_HISTORY)
      pos = q->event_next - EVENT_HISTORY;
    while (pos < q->event_next) {
      struct event *e = &q->events[pos % EVENT_HISTORY];
      pos++;
      if (!e->name || strcmp(e->name, event) != 0)
        continue;
      /* A private copy: json-c reference counts are not atomic, and the
       * reader and other waiters hold the history's objects. */
      json_object *data = NULL;
      if (e->data && json_object_deep_copy(e->data, &data, NULL) != 0) {
        r = HM_ERR_NOMEM(err);
        goto out;
      }
      int ok = 1;
      if (match) {
        /* Unlocked: the matcher is the caller's code and may take its time. */
        pthread_mutex_unlock(&q->lock);
        ok = match(data, ud);
        pthread_mutex_lock(&q->lock);
      }
      if (ok) {
        if (out_data)
          *out_data = data;
        else
          json_object_put(data);
        r = 0;
        goto out;
      }
      json_object_put(data);
    }
    if (q->dead || q->closing) {
      r = HM_ERR(err, HM_E_NOT_READY, "%s: %s", event, dead_reason(q));
      goto out;
    }
    if (cond_wait_until(q, deadline) == ETIMEDOUT && pos == q->event_next) {
      r = HM_ERR(err, HM_E_TIMEOUT, "no %s event within %d ms", event, timeout_ms);
      goto out;
    }
  }
out:
  leave(q);
  pthread_mutex_unlock(&q->lock);
  return r;
}

void hm_qmp_set_event_callback(hm_qmp *q, hm_qmp_event_fn fn, void *ud, void (*destroy)(void *)) {
  if (!q) {
    if (destroy)
      destroy(ud);
    return;
  }
  pthread_mutex_lock(&q->cb_lock);
  void *old_ud = q->cb_ud;
  void (*old_destroy)(void *) = q->cb_destroy;
  q->cb = fn;
  q->cb_ud = ud;
  q->cb_destroy = destroy;
  pthread_mutex_unlock(&q->cb_lock);
  if (old_destroy)
    old_destroy(old_ud);
}

int hm_qmp_peer_uid(hm_qmp *q, uid_t *uid) {
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (!q || q->fd < 0 || getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return -1;
  *uid = cr.uid;
  return 0;
}

int hm_qmp_peer_pid(hm_qmp *q, pid_t *pid) {
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (!q || q->fd < 0 || getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return -1;
  *pid = cr.pid;
  return 0;
}

int hm_qmp_is_connected(hm_qmp *q) {
  if (!q)
    return 0;
  pthread_mutex_lock(&q->lock);
  int up = q->greeted && !q->dead && !q->closing;
  pthread_mutex_unlock(&q->lock);
  return up;
}

void hm_qmp_free(hm_qmp *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->lock);
  q->closing = true;
  mark_dead(q, HM_E_NOT_READY, "connection closed");
  pthread_mutex_unlock(&q->lock);
  /* Also wakes the reader and any sender stuck waiting for buffer space. */
  if (q->fd >= 0)
    shutdown(q->fd, SHUT_RDWR);
  /* Waiters on other threads wake with HM_E_NOT_READY; let them leave before
   * the memory they are blocked on goes away. */
  pthread_mutex_lock(&q->lock);
  while (q->users > 0)
    pthread_cond_wait(&q->cond, &q->lock);
  pthread_mutex_unlock(&q->lock);
  if (q->reader_started)
    pthread_join(q->reader, NULL);
  if (q->fd >= 0)
    close(q->fd);
  if (q->cb_destroy)
    q->cb_destroy(q->cb_ud);
  for (size_t i = 0; i < EVENT_HISTORY; i++) {
    free(q->events[i].name);
    json_object_put(q->events[i].data);
  }
  json_object_put(q->greeting);
  free(q->dead_why);
  pthread_mutex_destroy(&q->lock);
  pthread_cond_destroy(&q->cond);
  pthread_mutex_destroy(&q->write_lock);
  pthread_mutex_destroy(&q->cb_lock);
  free(q);
}

int hm_qmp_connect_fd(hm_qmp **out, int fd, int timeout_ms, hm_error **err) {
  if (out)
    *out = NULL;
  if (!out || fd < 0) {
    if (fd >= 0)
      close(fd);
    return HM_ERR(err, HM_E_INVALID, "no output pointer or no fd");
  }
  int64_t deadline = deadline_of(timeout_ms);
  hm_qmp *q = calloc(1, sizeof(*q));
  if (!q) {
    close(fd);
    return HM_ERR_NOMEM(err);
  }
  q->fd = fd;
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&q->cb_lock, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_mutex_init(&q->lock, NULL);
  pthread_mutex_init(&q->write_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->cond, &ca);
  pthread_condattr_destroy(&ca);

  /* Writes honour per-command deadlines; the reader polls, so non-blocking
   * costs nothing there. FD_CLOEXEC: helpers we spawn must not inherit QMP. */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    int e = errno;
    hm_qmp_free(q);
    return HM_ERR(err, HM_E_INVALID, "not a usable fd: %s", strerror(e));
  }
  /* The reader must not take signals meant for the host program. */
  int r = hm_thread_create(&q->reader, reader_main, q);
  if (r != 0) {
    hm_qmp_free(q);
    return HM_ERR(err, r == EAGAIN ? HM_E_NOMEM : -r, "cannot start the reader thread");
  }
  q->reader_started = true;

  pthread_mutex_lock(&q->lock);
  r = 0;
  while (!q->greeted && !q->dead) {
    if (cond_wait_until(q, deadline) == ETIMEDOUT && !q->greeted) {
      r = HM_ERR(err, HM_E_TIMEOUT, "no QMP greeting within %d ms", timeout_ms);
      break;
    }
  }
  if (r == 0 && !q->greeted)
    r = HM_ERR(err, q->dead_code, "before the greeting: %s", dead_reason(q));
  pthread_mutex_unlock(&q->lock);
  if (r < 0) {
    hm_qmp_free(q);
    return r;
  }

  r = hm_qmp_execute(q, "qmp_capabilities", NULL, -1, NULL, ms_left(deadline), err);
  if (r < 0) {
    hm_qmp_free(q);
    return hm_error_prefix(err, r, __func__, "handshake");
  }
  *out = q;
  return 0;
}

int hm_qmp_connect(hm_qmp **out, const char *socket_path, int timeout_ms, hm_error **err) {
  if (out)
    *out = NULL;
  if (!out || !socket_path)
    return HM_ERR(err, HM_E_INVALID, "no output pointer or no socket path");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(socket_path) >= sizeof(sa.sun_path))
    return HM_ERR(err, HM_E_INVALID, "%s: socket path too long", socket_path);
  strcpy(sa.sun_path, socket_path);
  /* QMP can run anything on the host QEMU runs as, and we send it host
   * paths and fds: it must be QEMU's socket of our own user (or root's). */
  int r = hm_unix_path_check(socket_path, err);
  if (r < 0)
    return hm_error_prefix(err, r, __func__, "refusing the QMP socket");
  int64_t deadline = deadline_of(timeout_ms);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    int e = errno;
    return HM_ERR(err, e == ENOMEM || e == ENOBUFS ? HM_E_NOMEM : -e, "socket: %s", strerror(e));
  }
  /* A unix connect never completes asynchronously: it succeeds, fails, or
   * says EAGAIN while the listener's backlog is full; retry that until the
   * deadline rather than block in connect(2) without one. */
  while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    int e = errno;
    if (e == EINTR)
      continue;
    if (e == EAGAIN && ms_left(deadline) != 0) {
      poll(NULL, 0, 10);
      continue;
    }
    close(fd);
    return HM_ERR(err, e == EAGAIN ? HM_E_TIMEOUT : HM_E_NOT_READY, "%s: %s", socket_path,
                  strerror(e));
  }
  /* The file was checked before connect, but it could have been swapped
   * since: the peer's credentials are what we actually talk to. */
  if ((r = hm_unix_peer_check(fd, socket_path, err)) < 0) {
    close(fd);
    return hm_error_prefix(err, r, __func__, "refusing the QMP socket");
  }
  r = hm_qmp_connect_fd(out, fd, ms_left(deadline), err);
  return r < 0 ? hm_error_prefix(err, r, __func__, "%s", socket_path) : 0;
}
