/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Request dispatch: fast ops answer inline, slow ones get a thread each. */
#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bounds how many mounts/umounts may wait at once (each holds a thread). */
#define MAX_JOBS 64
/* How long one answer may wait for the peer to take it before it is dropped. */
#define WRITE_STALL_MS 10000

struct agent_conn {
  int fd;
  int owns_fd;
  int dead;
  int refs;
  pthread_mutex_t wlock; /* whole lines only; also guards dead */
};

static pthread_mutex_t refs_lock = PTHREAD_MUTEX_INITIALIZER;
static int jobs;

agent_conn *agent_conn_new(int fd, int owns_fd) {
  agent_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->fd = fd;
  c->owns_fd = owns_fd;
  c->refs = 1;
  pthread_mutex_init(&c->wlock, NULL);
  return c;
}

void agent_conn_ref(agent_conn *c) {
  pthread_mutex_lock(&refs_lock);
  c->refs++;
  pthread_mutex_unlock(&refs_lock);
}

void agent_conn_unref(agent_conn *c) {
  pthread_mutex_lock(&refs_lock);
  int last = --c->refs == 0;
  pthread_mutex_unlock(&refs_lock);
  if (!last)
    return;
  if (c->owns_fd)
    close(c->fd);
  pthread_mutex_destroy(&c->wlock);
  free(c);
}

void agent_conn_set_dead(agent_conn *c) {
  pthread_mutex_lock(&c->wlock);
  c->dead = 1;
  pthread_mutex_unlock(&c->wlock);
}

/*
 * Writes one line. The fd is non-blocking: a virtio port whose host side is
 * closed never becomes writable (it reports POLLHUP instead), and an answer
 * held back until some later host connects would reach a peer that did not
 * ask for it. So a line that cannot go out is dropped.
 */
static void conn_send(agent_conn *c, const char *line) {
  size_t len = strlen(line), off = 0;
  int64_t deadline = hm_now_ms() + WRITE_STALL_MS;
  pthread_mutex_lock(&c->wlock);
  while (!c->dead && off < len) {
    ssize_t n = write(c->fd, line + off, len - off);
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd pfd = {c->fd, POLLOUT, 0};
      int64_t left = deadline - hm_now_ms();
      if (left > 0 && poll(&pfd, 1, (int)left) > 0 && (pfd.revents & POLLOUT))
        continue;
      hm_warn("dropping an answer: the host is not connected or not reading");
      break;
    }
    hm_warn("dropping an answer: write: %s", n < 0 ? strerror(errno) : "nothing written");
    break;
  }
  pthread_mutex_unlock(&c->wlock);
}

static void respond(agent_conn *c, int op, const hm_agent_response *resp) {
  char *line = NULL;
  hm_error *e = NULL;
  if (hm_agent_response_encode(&line, op, resp, &e) < 0) {
    hm_warn("cannot encode an answer: %s", hm_error_message(e));
    hm_error_free(e);
    return;
  }
  conn_send(c, line);
  free(line);
}

static void respond_err(agent_conn *c, int64_t id, int eno, const char *msg) {
  hm_agent_response resp = {.id = id, .ok = 0, .err_no = eno, .error = (char *)msg};
  hm_debug("request %lld failed: %s", (long long)id, msg);
  respond(c, 0, &resp);
}

static void respond_errf(agent_conn *c, int64_t id, int eno, const char *fmt, ...) HM_PRINTF(4, 5);
static void respond_errf(agent_conn *c, int64_t id, int eno, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  respond_err(c, id, eno, msg ? msg : "out of memory");
  free(msg);
}

/* The kernel's id for this boot: a host that sees it change knows the guest
 * rebooted (and so why its mounts are gone). NULL when unreadable. */
static char *boot_id(void) {
  char buf[64] = "";
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
  if (!f)
    return NULL;
  if (!fgets(buf, sizeof(buf), f))
    buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\n")] = '\0';
  return buf[0] ? strdup(buf) : NULL;
}

static void do_hello(agent_conn *c, const hm_agent_request *req) {
  if (req->major != HM_AGENT_PROTO_MAJOR) {
    respond_errf(c, req->id, EPROTONOSUPPORT,
                 "hello: the host speaks protocol %d.%d, this agent (%s %s) speaks %d.%d; the "
                 "major versions must match",
                 req->major, req->minor, HM_AGENT_NAME, HM_VERSION_STRING, HM_AGENT_PROTO_MAJOR,
                 HM_AGENT_PROTO_MINOR);
    return;
  }
  /* What this agent can do; the host checks these rather than versions. */
  /* mount.9p.uname: takes the uname= option (diod -N identity, 0.1+).
   * mount.9p.virtio: a 9p mount with a tag and no port is a virtio-9p-pci
   * device, mounted trans=virtio (reserved 9p slots, 0.1+).
   * mount.bind: type "bind", a directory of a boot-time share bind-mounted.
   * mount.virtiofs.hub: type "virtiofs" with a source: entry hm-N of the
   * shared device (tag hm-hub) bind-mounted (0.1+).
   * notify: the notify op (host changes shown to guest file watchers). */
  static char *caps[] = {"mount.virtiofs",  "mount.virtiofs.hub",
                         "mount.9p",        "mount.9p.uname",
                         "mount.9p.virtio", "mount.bind",
                         "umount",          "umount.lazy",
                         "umount.force",    "list",
                         "notify",          NULL};
  hm_agent_response resp = {.id = req->id,
                            .ok = 1,
                            .major = HM_AGENT_PROTO_MAJOR,
                            .minor = HM_AGENT_PROTO_MINOR,
                            .agent_name = HM_AGENT_NAME,
                            .agent_version = HM_VERSION_STRING,
                            .capabilities = caps,
                            .boot_id = boot_id()};
  hm_info("hello from a host speaking protocol %d.%d", req->major, req->minor);
  respond(c, HM_AGENT_OP_HELLO, &resp);
  free(resp.boot_id);
}

static void do_list(agent_conn *c, const hm_agent_request *req) {
  hm_agent_response resp = {.id = req->id, .ok = 1};
  int eno = 0;
  char *msg = NULL;
  if (agent_op_list(&resp.mounts, &resp.n_mounts, &eno, &msg) < 0) {
    respond_err(c, req->id, eno, msg ? msg : "list failed");
    free(msg);
    return;
  }
  resp.boot_id = boot_id();
  respond(c, HM_AGENT_OP_LIST, &resp);
  hm_agent_mount_info_free(resp.mounts, resp.n_mounts);
  free(resp.boot_id);
}

struct job {
  agent_conn *c;
  hm_agent_request req;
};

static void *job_main(void *arg) {
  struct job *j = arg;
  int eno = 0;
  char *msg = NULL;
  int r = j->req.op == HM_AGENT_OP_MOUNT    ? agent_op_mount(&j->req, &eno, &msg)
          : j->req.op == HM_AGENT_OP_NOTIFY ? agent_op_notify(&j->req, &eno, &msg)
                                            : agent_op_umount(&j->req, &eno, &msg);
  if (r < 0) {
    respond_err(j->c, j->req.id, eno, msg ? msg : "failed");
  } else {
    hm_agent_response resp = {.id = j->req.id, .ok = 1};
    respond(j->c, j->req.op, &resp);
  }
  free(msg);
  agent_conn_unref(j->c);
  hm_agent_request_clear(&j->req);
  free(j);
  pthread_mutex_lock(&refs_lock);
  jobs--;
  pthread_mutex_unlock(&refs_lock);
  return NULL;
}

/* Takes ownership of *req (cleared on return). */
static void start_job(agent_conn *c, hm_agent_request *req) {
  struct job *j = calloc(1, sizeof(*j));
  pthread_mutex_lock(&refs_lock);
  int full = jobs >= MAX_JOBS;
  if (!full && j)
    jobs++;
  pthread_mutex_unlock(&refs_lock);
  if (!j || full) {
    respond_errf(c, req->id, EAGAIN, "%s: too many requests in progress (limit %d)",
                 hm_agent_op_name(req->op), MAX_JOBS);
    free(j);
    hm_agent_request_clear(req);
    return;
  }
  j->c = c;
  j->req = *req;
  memset(req, 0, sizeof(*req));
  agent_conn_ref(c);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  int e = pthread_create(&t, &attr, job_main, j);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    respond_errf(c, j->req.id, e, "%s: cannot start a thread: %s", hm_agent_op_name(j->req.op),
                 strerror(e));
    agent_conn_unref(c);
    hm_agent_request_clear(&j->req);
    free(j);
    pthread_mutex_lock(&refs_lock);
    jobs--;
    pthread_mutex_unlock(&refs_lock);
  }
}

static void handle_line(agent_conn *c, const char *line, size_t len) {
  hm_agent_request req;
  hm_error *e = NULL;
  int r = hm_agent_request_decode(&req, line, len, &e);
  if (r < 0) {
    /* An op we do not know is a version skew, not a malformed request. */
    respond_err(c, req.id, r == HM_E_UNSUPPORTED ? ENOSYS : EINVAL, hm_error_message(e));
    hm_error_free(e);
    hm_agent_request_clear(&req);
    return;
  }
  hm_debug("request %lld: %s", (long long)req.id, hm_agent_op_name(req.op));
  switch (req.op) {
  case HM_AGENT_OP_HELLO: do_hello(c, &req); break;
  case HM_AGENT_OP_LIST: do_list(c, &req); break;
  default: start_job(c, &req); break;
  }
  hm_agent_request_clear(&req);
}

void agent_reader_reset(agent_reader *r) {
  r->len = 0;
  r->discarding = 0;
}

void agent_reader_feed(agent_reader *r, agent_conn *c, const char *data, size_t n) {
  while (n > 0) {
    const char *nl = memchr(data, '\n', n);
    size_t take = nl ? (size_t)(nl - data) : n;
    if (!r->discarding) {
      if (r->len + take > HM_AGENT_MAX_LINE) {
        r->discarding = 1;
        r->len = 0;
      } else {
        if (r->len + take > r->cap) {
          size_t cap = r->cap ? r->cap : 4096;
          while (cap < r->len + take)
            cap *= 2;
          char *nb = realloc(r->buf, cap);
          if (!nb) {
            r->discarding = 1;
            r->len = 0;
          } else {
            r->buf = nb;
            r->cap = cap;
          }
        }
        if (!r->discarding) {
          memcpy(r->buf + r->len, data, take);
          r->len += take;
        }
      }
    }
    if (!nl)
      return;
    if (r->discarding)
      respond_errf(c, 0, EINVAL, "request line longer than %d bytes (or out of memory); ignored",
                   HM_AGENT_MAX_LINE);
    else if (r->len > 0 && !(r->len == 1 && r->buf[0] == '\r'))
      handle_line(c, r->buf, r->len);
    agent_reader_reset(r);
    data = nl + 1;
    n -= take + 1;
  }
}
