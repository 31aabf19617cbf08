/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "fake_qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* What QEMU 7.2 (Debian 12) says first; recorded from a real run. */
static const char default_greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}";

struct fake_qmp {
  json_object *transcript;
  char *path; /* socket file to unlink, or NULL */
  int listen_fd, conn_fd;
  int stop_pipe[2];
  pthread_t thread;
  bool thread_started;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool finished;
  char *error;
  int commands, fds, steps_done;

  /* read side, only touched by the server thread */
  json_tokener *tok;
  char buf[65536];
  size_t blen, bpos;
  int fds_since_last;
  bool closed; /* by a close step or the peer */
};

static void fail(fake_qmp *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(fake_qmp *f, const char *fmt, ...) {
  char *msg = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&msg, fmt, ap) < 0)
    msg = NULL;
  va_end(ap);
  pthread_mutex_lock(&f->lock);
  if (!f->error) {
    f->error = msg;
    msg = NULL;
  }
  pthread_mutex_unlock(&f->lock);
  free(msg);
}

static bool stopped(fake_qmp *f) {
  struct pollfd p = {.fd = f->stop_pipe[0], .events = POLLIN};
  return poll(&p, 1, 0) > 0;
}

/* Sleeps, but wakes at once when the test stops the fake. false if stopped. */
static bool pause_ms(fake_qmp *f, int ms) {
  struct pollfd p = {.fd = f->stop_pipe[0], .events = POLLIN};
  int64_t end;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  end = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t left = end - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (left <= 0)
      return true;
    int r = poll(&p, 1, (int)left);
    if (r > 0)
      return false;
  }
}

static void send_bytes(fake_qmp *f, const char *data, size_t len) {
  while (len > 0 && f->conn_fd >= 0) {
    ssize_t n = send(f->conn_fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN) {
        struct pollfd p[2] = {{.fd = f->conn_fd, .events = POLLOUT},
                              {.fd = f->stop_pipe[0], .events = POLLIN}};
        poll(p, 2, -1);
        if (p[1].revents)
          return;
        continue;
      }
      return; /* the client went away; reading will notice */
    }
    data += n;
    len -= (size_t)n;
  }
}

static void send_obj(fake_qmp *f, json_object *obj) {
  /* QEMU writes "/" unescaped; do the same so byte-level tests see real output. */
  const char *s =
      json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
  send_bytes(f, s, strlen(s));
  send_bytes(f, "\r\n", 2);
}

static void close_conn(fake_qmp *f) {
  if (f->conn_fd >= 0) {
    shutdown(f->conn_fd, SHUT_RDWR);
    close(f->conn_fd);
    f->conn_fd = -1;
  }
  f->closed = true;
}

/* 1: got a command; 0: peer closed; -1: stopped, or the peer sent garbage. */
static int next_command(fake_qmp *f, json_object **out, int *out_fds) {
  for (;;) {
    while (f->bpos < f->blen) {
      size_t len = f->blen - f->bpos;
      json_object *obj = json_tokener_parse_ex(f->tok, f->buf + f->bpos, (int)len);
      enum json_tokener_error jerr = json_tokener_get_error(f->tok);
      if (jerr == json_tokener_continue) {
        f->bpos = f->blen;
        break;
      }
      if (jerr != json_tokener_success || !obj) {
        fail(f, "client sent malformed JSON: %s", json_tokener_error_desc(jerr));
        return -1;
      }
      f->bpos += json_tokener_get_parse_end(f->tok);
      json_tokener_reset(f->tok);
      /* Commands are sent with a trailing CRLF that the tokenizer leaves. */
      while (f->bpos < f->blen && strchr(" \t\r\n", f->buf[f->bpos]))
        f->bpos++;
      *out = obj;
      *out_fds = f->fds_since_last;
      f->fds_since_last = 0;
      return 1;
    }
    f->bpos = f->blen = 0;
    if (f->conn_fd < 0)
      return 0;
    struct pollfd p[2] = {{.fd = f->conn_fd, .events = POLLIN},
                          {.fd = f->stop_pipe[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (p[1].revents)
      return -1;
    union {
      char buf[CMSG_SPACE(sizeof(int) * 16)];
      struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = f->buf, .iov_len = sizeof(f->buf)};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    ssize_t n = recvmsg(f->conn_fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      close_conn(f);
      return 0;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        continue;
      size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *fds = (int *)CMSG_DATA(c);
      for (size_t i = 0; i < nfd; i++) {
        int fd;
        memcpy(&fd, &fds[i], sizeof(fd));
        close(fd);
        f->fds_since_last++;
      }
    }
    if (n == 0) {
      close_conn(f);
      return 0;
    }
    f->blen = (size_t)n;
  }
}

/* Subset match: every member of want is in have with a matching value. */
static bool subset(json_object *want, json_object *have) {
  if (json_object_is_type(want, json_type_object)) {
    if (!json_object_is_type(have, json_type_object))
      return false;
    json_object_object_foreach(want, key, wval) {
      json_object *hval;
      if (!json_object_object_get_ex(have, key, &hval))
        return false;
      if (!subset(wval, hval))
        return false;
    }
    return true;
  }
  return json_object_equal(want, have);
}

static const char *to_text(json_object *o) {
  return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

static const char *str_member(json_object *o, const char *key) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

static bool bool_member(json_object *o, const char *key) {
  json_object *v;
  return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* NULL when cmd satisfies the expect step, else why not (malloc'd). */
static char *mismatch(json_object *step, json_object *cmd, int nfds) {
  const char *want = str_member(step, "expect");
  const char *name = str_member(cmd, "execute");
  char *why = NULL;
  json_object *wargs, *args = NULL;
  if (!name) {
    if (asprintf(&why, "not a command: %s", to_text(cmd)) < 0)
      why = NULL;
    return why ? why : strdup("not a command");
  }
  if (!want || strcmp(want, name) != 0) {
    if (asprintf(&why, "unexpected command '%s' (expected '%s')", name, want ? want : "?") < 0)
      why = NULL;
    return why ? why : strdup("unexpected command");
  }
  json_object_object_get_ex(cmd, "arguments", &args);
  if (json_object_object_get_ex(step, "arguments", &wargs) && !subset(wargs, args)) {
    if (asprintf(&why, "unexpected command '%s': arguments %s do not contain %s", name,
                 args ? to_text(args) : "(none)", to_text(wargs)) < 0)
      why = NULL;
    return why ? why : strdup("unexpected arguments");
  }
  if (bool_member(step, "fd") && nfds == 0) {
    if (asprintf(&why, "command '%s' came without an fd (SCM_RIGHTS expected)", name) < 0)
      why = NULL;
    return why ? why : strdup("missing fd");
  }
  return NULL;
}

static void reply_error(fake_qmp *f, json_object *cmd, const char *desc) {
  json_object *r = json_object_new_object(), *e = json_object_new_object(), *id;
  json_object_object_add(e, "class", json_object_new_string("GenericError"));
  json_object_object_add(e, "desc", json_object_new_string(desc));
  json_object_object_add(r, "error", e);
  if (json_object_object_get_ex(cmd, "id", &id))
    json_object_object_add(r, "id", json_object_get(id));
  send_obj(f, r);
  json_object_put(r);
}

static void unexpected(fake_qmp *f, int step_no, json_object *cmd, const char *why) {
  fail(f, "step %d: %s", step_no, why);
  char *desc = NULL;
  if (asprintf(&desc, "fake-qmp: step %d: %s", step_no, why) < 0)
    desc = NULL;
  reply_error(f, cmd, desc ? desc : why);
  free(desc);
}

/* Runs one emitting step. false when the session is over (closed/stopped). */
static bool emit(fake_qmp *f, json_object *step) {
  json_object *v;
  if (json_object_object_get_ex(step, "event", &v)) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_object *ev = json_object_new_object(), *ts = json_object_new_object();
    json_object_object_add(ts, "seconds", json_object_new_int64(tv.tv_sec));
    json_object_object_add(ts, "microseconds", json_object_new_int64(tv.tv_usec));
    json_object_object_add(ev, "timestamp", ts);
    json_object_object_add(ev, "event", json_object_get(v));
    if (json_object_object_get_ex(step, "data", &v))
      json_object_object_add(ev, "data", json_object_get(v));
    send_obj(f, ev);
    json_object_put(ev);
  } else if (json_object_object_get_ex(step, "send", &v)) {
    send_obj(f, v);
  } else if (json_object_object_get_ex(step, "raw", &v)) {
    send_bytes(f, json_object_get_string(v), (size_t)json_object_get_string_len(v));
  } else if (json_object_object_get_ex(step, "close", &v)) {
    close_conn(f);
    return false;
  } else if (json_object_object_get_ex(step, "delay_ms", &v)) {
    if (!pause_ms(f, json_object_get_int(v)))
      return false;
  }
  return !stopped(f);
}

static bool emit_list(fake_qmp *f, json_object *step, const char *key) {
  json_object *list;
  if (!json_object_object_get_ex(step, key, &list))
    return true;
  for (size_t i = 0; i < json_object_array_length(list); i++)
    if (!emit(f, json_object_array_get_idx(list, i)))
      return false;
  return true;
}

static void send_reply(fake_qmp *f, json_object *step, json_object *cmd) {
  json_object *reply, *id;
  if (!json_object_object_get_ex(step, "reply", &reply))
    return;
  json_object *r = NULL;
  if (json_object_deep_copy(reply, &r, NULL) != 0)
    return;
  if (json_object_is_type(r, json_type_object) && !json_object_object_get_ex(r, "id", NULL) &&
      json_object_object_get_ex(cmd, "id", &id))
    json_object_object_add(r, "id", json_object_get(id));
  send_obj(f, r);
  json_object_put(r);
}

/* Everything an expect step does once its command arrived. */
static bool respond(fake_qmp *f, json_object *step, json_object *cmd, bool with_reply) {
  json_object *v;
  if (!emit_list(f, step, "before"))
    return false;
  if (json_object_object_get_ex(step, "delay_ms", &v) && !pause_ms(f, json_object_get_int(v)))
    return false;
  if (!with_reply)
    return true;
  send_reply(f, step, cmd);
  return emit_list(f, step, "after");
}

static void step_done(fake_qmp *f) {
  pthread_mutex_lock(&f->lock);
  f->steps_done++;
  pthread_mutex_unlock(&f->lock);
}

static void count_command(fake_qmp *f, int nfds) {
  pthread_mutex_lock(&f->lock);
  f->commands++;
  f->fds += nfds;
  pthread_mutex_unlock(&f->lock);
}

/* Reads commands until one matches `step`. false when the session is over. */
static bool run_expect(fake_qmp *f, int step_no, json_object *step) {
  for (;;) {
    json_object *cmd;
    int nfds, r = next_command(f, &cmd, &nfds);
    if (r == 0)
      fail(f, "step %d: client closed the connection while '%s' was expected", step_no,
           str_member(step, "expect"));
    if (r <= 0)
      return false;
    count_command(f, nfds);
    char *why = mismatch(step, cmd, nfds);
    if (why) {
      unexpected(f, step_no, cmd, why);
      free(why);
      json_object_put(cmd);
      continue;
    }
    step_done(f);
    bool go_on = respond(f, step, cmd, true);
    json_object_put(cmd);
    return go_on;
  }
}

static bool run_unordered(fake_qmp *f, int step_no, json_object *step) {
  json_object *group;
  json_object_object_get_ex(step, "unordered", &group);
  size_t n = json_object_array_length(group), got = 0;
  bool hold = bool_member(step, "hold");
  json_object **cmds = calloc(n ? n : 1, sizeof(*cmds));
  size_t *order = calloc(n ? n : 1, sizeof(*order));
  bool go_on = cmds && order;
  while (go_on && got < n) {
    json_object *cmd;
    int nfds, r = next_command(f, &cmd, &nfds);
    if (r == 0)
      fail(f, "step %d: client closed the connection with %zu of %zu unordered commands missing",
           step_no, n - got, n);
    if (r <= 0) {
      go_on = false;
      break;
    }
    count_command(f, nfds);
    size_t i;
    char *why = NULL;
    for (i = 0; i < n; i++) {
      if (cmds[i])
        continue;
      free(why);
      why = mismatch(json_object_array_get_idx(group, i), cmd, nfds);
      if (!why)
        break;
    }
    if (i == n) {
      unexpected(f, step_no, cmd, why ? why : "unexpected command (group complete)");
      free(why);
      json_object_put(cmd);
      continue;
    }
    cmds[i] = cmd;
    order[got++] = i;
    go_on = respond(f, json_object_array_get_idx(group, i), cmd, !hold);
  }
  if (got == n)
    step_done(f);
  if (go_on && hold) {
    for (size_t k = got; k-- > 0 && go_on;) {
      json_object *s = json_object_array_get_idx(group, order[k]);
      send_reply(f, s, cmds[order[k]]);
      go_on = emit_list(f, s, "after");
    }
  }
  for (size_t i = 0; cmds && i < n; i++)
    json_object_put(cmds[i]);
  free(cmds);
  free(order);
  return go_on;
}

static void *serve(void *arg) {
  fake_qmp *f = arg;
  json_object *greeting, *steps = NULL;
  size_t nsteps = 0, i = 0;

  if (f->conn_fd < 0) {
    struct pollfd p[2] = {{.fd = f->listen_fd, .events = POLLIN},
                          {.fd = f->stop_pipe[0], .events = POLLIN}};
    while (poll(p, 2, -1) < 0 && errno == EINTR)
      ;
    if (p[1].revents)
      goto out;
    f->conn_fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (f->conn_fd < 0) {
      fail(f, "accept: %s", strerror(errno));
      goto out;
    }
  }

  if (json_object_object_get_ex(f->transcript, "greeting", &greeting)) {
    if (!json_object_is_type(greeting, json_type_boolean))
      send_obj(f, greeting);
  } else {
    send_bytes(f, default_greeting, strlen(default_greeting));
    send_bytes(f, "\r\n", 2);
  }

  json_object_object_get_ex(f->transcript, "steps", &steps);
  nsteps = steps ? json_object_array_length(steps) : 0;
  for (i = 0; i < nsteps; i++) {
    json_object *step = json_object_array_get_idx(steps, i);
    bool go_on;
    if (json_object_object_get_ex(step, "expect", NULL))
      go_on = run_expect(f, (int)i, step);
    else if (json_object_object_get_ex(step, "unordered", NULL))
      go_on = run_unordered(f, (int)i, step);
    else {
      go_on = emit(f, step);
      if (go_on || f->closed)
        step_done(f);
    }
    if (!go_on)
      break;
  }
  if (i == nsteps) {
    for (;;) {
      json_object *cmd;
      int nfds;
      if (next_command(f, &cmd, &nfds) <= 0)
        break;
      count_command(f, nfds);
      char *why = NULL;
      if (asprintf(&why, "unexpected command '%s' after the end of the transcript",
                   str_member(cmd, "execute") ? str_member(cmd, "execute") : "?") < 0)
        why = NULL;
      unexpected(f, (int)nsteps, cmd, why ? why : "unexpected command");
      free(why);
      json_object_put(cmd);
    }
  }

out:
  close_conn(f);
  pthread_mutex_lock(&f->lock);
  if (!f->error && f->steps_done < (int)nsteps) {
    json_object *s = json_object_array_get_idx(steps, (size_t)f->steps_done);
    if (asprintf(&f->error, "transcript not fully consumed: stopped at step %d of %zu: %s",
                 f->steps_done, nsteps, to_text(s)) < 0)
      f->error = NULL;
  }
  f->finished = true;
  pthread_cond_broadcast(&f->cond);
  pthread_mutex_unlock(&f->lock);
  return NULL;
}

static void set_errmsg(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_errmsg(char **errmsg, const char *fmt, ...) {
  if (!errmsg)
    return;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(errmsg, fmt, ap) < 0)
    *errmsg = NULL;
  va_end(ap);
}

static bool valid_transcript(json_object *t, char **errmsg) {
  json_object *steps;
  if (!json_object_is_type(t, json_type_object)) {
    set_errmsg(errmsg, "transcript is not a JSON object");
    return false;
  }
  if (json_object_object_get_ex(t, "steps", &steps) &&
      !json_object_is_type(steps, json_type_array)) {
    set_errmsg(errmsg, "transcript: \"steps\" is not an array");
    return false;
  }
  for (size_t i = 0; steps && i < json_object_array_length(steps); i++) {
    json_object *s = json_object_array_get_idx(steps, i), *g;
    if (!json_object_is_type(s, json_type_object)) {
      set_errmsg(errmsg, "transcript: step %zu is not an object", i);
      return false;
    }
    if (json_object_object_get_ex(s, "unordered", &g) && !json_object_is_type(g, json_type_array)) {
      set_errmsg(errmsg, "transcript: step %zu: \"unordered\" is not an array", i);
      return false;
    }
  }
  return true;
}

static fake_qmp *start(json_object *t, const char *socket_path, int fd, char **errmsg) {
  if (errmsg)
    *errmsg = NULL;
  if (!t || !valid_transcript(t, errmsg)) {
    if (!t)
      set_errmsg(errmsg, "transcript is not valid JSON");
    json_object_put(t);
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  fake_qmp *f = calloc(1, sizeof(*f));
  if (!f) {
    json_object_put(t);
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  f->transcript = t;
  f->listen_fd = -1;
  f->conn_fd = fd;
  f->stop_pipe[0] = f->stop_pipe[1] = -1;
  pthread_mutex_init(&f->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&f->cond, &ca);
  pthread_condattr_destroy(&ca);
  f->tok = json_tokener_new_ex(64);
  if (!f->tok || pipe2(f->stop_pipe, O_CLOEXEC) < 0) {
    set_errmsg(errmsg, "out of resources");
    fake_qmp_free(f);
    return NULL;
  }
  if (socket_path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
      set_errmsg(errmsg, "socket path too long: %s", socket_path);
      fake_qmp_free(f);
      return NULL;
    }
    strcpy(sa.sun_path, socket_path);
    unlink(socket_path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(f->listen_fd, 1) < 0) {
      set_errmsg(errmsg, "listen on %s: %s", socket_path, strerror(errno));
      fake_qmp_free(f);
      return NULL;
    }
    f->path = strdup(socket_path);
  }
  if (pthread_create(&f->thread, NULL, serve, f) != 0) {
    set_errmsg(errmsg, "pthread_create failed");
    fake_qmp_free(f);
    return NULL;
  }
  f->thread_started = true;
  return f;
}

fake_qmp *fake_qmp_start(const char *socket_path, const char *transcript_file, char **errmsg) {
  json_object *t = json_object_from_file(transcript_file);
  if (!t) {
    set_errmsg(errmsg, "cannot read transcript %s: %s", transcript_file,
               json_util_get_last_err() ? json_util_get_last_err() : "?");
    return NULL;
  }
  return start(t, socket_path, -1, errmsg);
}

fake_qmp *fake_qmp_start_json(const char *socket_path, const char *transcript_json, char **errmsg) {
  return start(json_tokener_parse(transcript_json), socket_path, -1, errmsg);
}

fake_qmp *fake_qmp_start_fd(int fd, const char *transcript_json, char **errmsg) {
  return start(json_tokener_parse(transcript_json), NULL, fd, errmsg);
}

int fake_qmp_wait(fake_qmp *f, int timeout_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  if (timeout_ms >= 0) {
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
  }
  pthread_mutex_lock(&f->lock);
  while (!f->finished) {
    if (timeout_ms < 0)
      pthread_cond_wait(&f->cond, &f->lock);
    else if (pthread_cond_timedwait(&f->cond, &f->lock, &ts) == ETIMEDOUT)
      break;
  }
  int r = f->finished ? 0 : -1;
  pthread_mutex_unlock(&f->lock);
  return r;
}

bool fake_qmp_ok(fake_qmp *f) {
  pthread_mutex_lock(&f->lock);
  bool ok = f->finished && !f->error;
  pthread_mutex_unlock(&f->lock);
  return ok;
}

const char *fake_qmp_error(fake_qmp *f) {
  pthread_mutex_lock(&f->lock);
  const char *e = f->error;
  pthread_mutex_unlock(&f->lock);
  return e;
}

#define GETTER(name, field)                                                                        \
  int fake_qmp_##name(fake_qmp *f) {                                                               \
    pthread_mutex_lock(&f->lock);                                                                  \
    int v = f->field;                                                                              \
    pthread_mutex_unlock(&f->lock);                                                                \
    return v;                                                                                      \
  }
GETTER(commands, commands)
GETTER(fds, fds)
GETTER(steps_done, steps_done)

void fake_qmp_free(fake_qmp *f) {
  if (!f)
    return;
  if (f->thread_started) {
    if (f->stop_pipe[1] >= 0)
      (void)!write(f->stop_pipe[1], "x", 1);
    pthread_join(f->thread, NULL);
  }
  if (f->conn_fd >= 0)
    close(f->conn_fd);
  if (f->listen_fd >= 0)
    close(f->listen_fd);
  if (f->path)
    unlink(f->path);
  for (int i = 0; i < 2; i++)
    if (f->stop_pipe[i] >= 0)
      close(f->stop_pipe[i]);
  if (f->tok)
    json_tokener_free(f->tok);
  json_object_put(f->transcript);
  pthread_mutex_destroy(&f->lock);
  pthread_cond_destroy(&f->cond);
  free(f->error);
  free(f->path);
  free(f);
}
