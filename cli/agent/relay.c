/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 9p byte relay (see relay.h). One thread per mount, one poll loop over
 * B, the port and a stop eventfd, a big buffer per direction, and no copy
 * through user space from B to the port where the kernel allows it:
 *
 *  - B -> port: splice(B -> pipe) then splice(pipe -> port). virtio_console
 *    has splice_write (port_fops_splice_write): it queues the whole pipe as one
 *    scatter-gather element, where write(2) is cut at 32 KiB per call. The
 *    fallback is read(2) and writev(2) in 32 KiB pieces (the port has no
 *    write_iter, so the kernel loops over the pieces in one system call).
 *  - port -> B: the port has no splice_read, and each read(2) returns at most
 *    one receive buffer (a page). readv(2) with page-sized pieces gathers many
 *    of them per system call (again the kernel's loop over ->read).
 *
 * Back-pressure: a direction with bytes pending waits for POLLOUT on its
 * destination and stops reading its source meanwhile; nothing spins on EAGAIN.
 * End: the port's read end-of-file (host side closed: virtio_console polls
 * POLLHUP and read returns 0) -> B is shut down, so the 9p client fails its
 * requests (ECONNRESET/EIO) instead of waiting for answers that cannot come.
 * B's end-of-file (the kernel dropped its end at unmount) ends it too.
 */
#include "relay.h"

#include "core/private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define RELAY_MIN_BUF (256U * 1024)
#define RELAY_MAX_BUF (16U * 1024 * 1024)
/* virtio_console takes at most 32 KiB per write(2). */
#define PORT_WRITE_CHUNK (32U * 1024)

struct agent_relay {
  pthread_t thread;
  int b, port, stopfd;
  char *name;
  unsigned buf_size;
  int use_splice;
  _Atomic int64_t deadline;
  _Atomic int state;
  _Atomic uint64_t to_port, to_client;
};

static const char *why_name(int why) {
  switch (why) {
  case AGENT_RELAY_STOPPED: return "stopped";
  case AGENT_RELAY_CLIENT_GONE: return "the 9p client closed its end (unmounted)";
  case AGENT_RELAY_PORT_CLOSED: return "the host side of the port closed";
  case AGENT_RELAY_DEADLINE: return "the 9p server did not answer in time";
  case AGENT_RELAY_ERROR: return "an I/O error";
  default: return "running";
  }
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* writev of n bytes at p in PORT_WRITE_CHUNK pieces. */
static ssize_t write_chunks(int fd, const char *p, size_t n, struct iovec *iov, int max_iov) {
  int k = 0;
  for (size_t off = 0; off < n && k < max_iov; k++) {
    size_t len = n - off < PORT_WRITE_CHUNK ? n - off : PORT_WRITE_CHUNK;
    iov[k].iov_base = (char *)p + off;
    iov[k].iov_len = len;
    off += len;
  }
  return k == 1 ? write(fd, p, iov[0].iov_len) : writev(fd, iov, k);
}

static int is_gone(int e) {
  return e == EPIPE || e == ECONNRESET || e == ENOTCONN || e == ENODEV;
}

typedef struct loop_state {
  char *up, *down;      /* port -> B, B -> port (read/write mode) */
  size_t uoff, ulen;    /* pending in up: [uoff, ulen) */
  size_t doff, dlen;    /* pending in down */
  size_t inpipe;        /* bytes in the splice pipe */
  int pipe_r, pipe_w;   /* splice pipe, -1 without */
  struct iovec *rd_iov; /* page-sized pieces of up, for readv */
  int rd_n;             /* entries in rd_iov */
  struct iovec *wr_iov; /* scratch for write_chunks */
  int wr_n;
  int port_hup, port_eof; /* host side closed; and everything it sent was read */
  int splice_tried;       /* a splice to the port has worked once */
} loop_state;

/* Moves pending splice-pipe bytes back into the down buffer (fallback). */
static int unsplice(agent_relay *r, loop_state *s) {
  size_t got = 0;
  while (got < s->inpipe) {
    ssize_t n = read(s->pipe_r, s->down + got, s->inpipe - got);
    if (n <= 0) {
      if (n < 0 && errno == EINTR)
        continue;
      return -1;
    }
    got += (size_t)n;
  }
  s->doff = 0;
  s->dlen = got;
  s->inpipe = 0;
  r->use_splice = 0;
  return 0;
}

/* One round of B -> port. Returns 0 to go on or a reason to end. */
static int pump_down(agent_relay *r, loop_state *s, short brev) {
  int pending = s->inpipe > 0 || s->dlen > s->doff;
  if (!pending && !s->port_eof && (brev & (POLLIN | POLLHUP | POLLERR))) {
    if (r->use_splice) {
      ssize_t n =
          splice(r->b, NULL, s->pipe_w, NULL, r->buf_size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        s->inpipe = (size_t)n;
      } else if (n == 0) {
        return AGENT_RELAY_CLIENT_GONE;
      } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        hm_debug("9p relay %s: no splice from the client socket (%s); copying", r->name,
                 strerror(errno));
        r->use_splice = 0;
      } else if (is_gone(errno)) {
        return AGENT_RELAY_CLIENT_GONE;
      } else if (errno != EAGAIN && errno != EINTR) {
        hm_warn("9p relay %s: splice from the client: %s", r->name, strerror(errno));
        return AGENT_RELAY_ERROR;
      }
    }
    if (!r->use_splice && s->inpipe == 0) {
      ssize_t n = read(r->b, s->down, r->buf_size);
      if (n > 0) {
        s->doff = 0;
        s->dlen = (size_t)n;
      } else if (n == 0 || is_gone(errno)) {
        return AGENT_RELAY_CLIENT_GONE;
      } else if (errno != EAGAIN && errno != EINTR) {
        hm_warn("9p relay %s: read from the client: %s", r->name, strerror(errno));
        return AGENT_RELAY_ERROR;
      }
    }
  }
  if (s->port_hup)
    return 0; /* nobody to write to; the read side ends the relay */
  if (s->inpipe > 0) {
    ssize_t n =
        splice(s->pipe_r, NULL, r->port, NULL, s->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      s->inpipe -= (size_t)n;
      s->splice_tried = 1;
      atomic_fetch_add(&r->to_port, (uint64_t)n);
    } else if (n == 0) {
      /* virtio_console took the pipe's pages but could not queue them (no
       * room in the virtqueue): those bytes are gone and the 9p stream is
       * broken. Only possible without indirect descriptors, which the agent
       * checks before it uses splice. */
      hm_warn("9p relay %s: the port dropped %zu bytes of a splice; ending the mount's stream",
              r->name, s->inpipe);
      return AGENT_RELAY_ERROR;
    } else if (!s->splice_tried && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      hm_debug("9p relay %s: no splice to the port (%s); copying", r->name, strerror(errno));
      if (unsplice(r, s) < 0) {
        hm_warn("9p relay %s: cannot take bytes back from the splice pipe", r->name);
        return AGENT_RELAY_ERROR;
      }
    } else if (is_gone(errno)) {
      return AGENT_RELAY_PORT_CLOSED;
    } else if (errno != EAGAIN && errno != EINTR) {
      hm_warn("9p relay %s: splice to the port: %s", r->name, strerror(errno));
      return AGENT_RELAY_ERROR;
    }
  }
  if (s->dlen > s->doff) {
    ssize_t n = write_chunks(r->port, s->down + s->doff, s->dlen - s->doff, s->wr_iov, s->wr_n);
    if (n > 0) {
      s->doff += (size_t)n;
      atomic_fetch_add(&r->to_port, (uint64_t)n);
      if (s->doff == s->dlen)
        s->doff = s->dlen = 0;
    } else if (n < 0 && is_gone(errno)) {
      return AGENT_RELAY_PORT_CLOSED;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      hm_warn("9p relay %s: write to the port: %s", r->name, strerror(errno));
      return AGENT_RELAY_ERROR;
    }
  }
  return 0;
}

/* One round of port -> B. */
static int pump_up(agent_relay *r, loop_state *s, short prev) {
  if (s->ulen == 0 && !s->port_eof && (s->port_hup || (prev & (POLLIN | POLLHUP | POLLERR)))) {
    ssize_t n = readv(r->port, s->rd_iov, s->rd_n);
    if (n > 0) {
      s->uoff = 0;
      s->ulen = (size_t)n;
      atomic_fetch_add(&r->to_client, (uint64_t)n);
    } else if (n == 0 || (s->port_hup && errno == EAGAIN) || is_gone(errno)) {
      s->port_eof = s->port_hup = 1;
    } else if (errno != EAGAIN && errno != EINTR) {
      hm_warn("9p relay %s: read from the port: %s", r->name, strerror(errno));
      return AGENT_RELAY_ERROR;
    }
  }
  if (s->ulen > s->uoff) {
    ssize_t n = write(r->b, s->up + s->uoff, s->ulen - s->uoff);
    if (n > 0) {
      s->uoff += (size_t)n;
      if (s->uoff == s->ulen)
        s->uoff = s->ulen = 0;
    } else if (n < 0 && is_gone(errno)) {
      return AGENT_RELAY_CLIENT_GONE;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      hm_warn("9p relay %s: write to the client: %s", r->name, strerror(errno));
      return AGENT_RELAY_ERROR;
    }
  }
  if (s->port_eof && s->ulen == 0)
    return AGENT_RELAY_PORT_CLOSED;
  return 0;
}

static int relay_loop(agent_relay *r) {
  loop_state s = {.pipe_r = -1, .pipe_w = -1};
  int why = AGENT_RELAY_ERROR;
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0)
    page = 4096;
  s.rd_n = (int)(r->buf_size / (size_t)page);
  if (s.rd_n > IOV_MAX)
    s.rd_n = IOV_MAX;
  s.wr_n = (int)(r->buf_size / PORT_WRITE_CHUNK) + 1;
  if (s.wr_n > IOV_MAX)
    s.wr_n = IOV_MAX;
  s.up = malloc(r->buf_size);
  s.down = malloc(r->buf_size);
  s.rd_iov = calloc((size_t)s.rd_n, sizeof(*s.rd_iov));
  s.wr_iov = calloc((size_t)s.wr_n, sizeof(*s.wr_iov));
  if (!s.up || !s.down || !s.rd_iov || !s.wr_iov) {
    hm_warn("9p relay %s: out of memory", r->name);
    goto out;
  }
  for (int i = 0; i < s.rd_n; i++) {
    s.rd_iov[i].iov_base = s.up + (size_t)i * (size_t)page;
    s.rd_iov[i].iov_len = (size_t)page;
  }
  if (r->use_splice) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
      r->use_splice = 0;
    } else {
      s.pipe_r = p[0];
      s.pipe_w = p[1];
      /* More pages per splice; the default pipe holds 64 KiB. */
      if (fcntl(s.pipe_w, F_SETPIPE_SZ, (int)r->buf_size) < 0)
        hm_debug("9p relay %s: pipe size stays default (%s)", r->name, strerror(errno));
    }
  }

  for (;;) {
    int down_pending = s.inpipe > 0 || s.dlen > s.doff;
    int up_pending = s.ulen > s.uoff;
    struct pollfd p[3] = {{r->stopfd, POLLIN, 0}, {r->port, 0, 0}, {r->b, 0, 0}};
    if (s.port_hup)
      p[1].fd = -1; /* it polls HUP for ever now; read it until end-of-file instead */
    else
      p[1].events = (short)((up_pending ? 0 : POLLIN) | (down_pending ? POLLOUT : 0));
    p[2].events = (short)((down_pending || s.port_eof ? 0 : POLLIN) | (up_pending ? POLLOUT : 0));
    int timeout = -1;
    if (s.port_hup && !up_pending)
      timeout = 0; /* read what is left on the port without waiting */
    int64_t dl = atomic_load(&r->deadline);
    if (dl > 0) {
      int64_t left = dl - hm_now_ms();
      if (left <= 0) {
        why = AGENT_RELAY_DEADLINE;
        goto out;
      }
      if (timeout < 0 || left < timeout)
        timeout = left > INT_MAX ? INT_MAX : (int)left;
    }
    int n = poll(p, 3, timeout);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      hm_warn("9p relay %s: poll: %s", r->name, strerror(errno));
      goto out;
    }
    if (p[0].revents) {
      why = AGENT_RELAY_STOPPED;
      goto out;
    }
    if (p[1].revents & POLLNVAL || p[2].revents & POLLNVAL) {
      hm_warn("9p relay %s: a descriptor was closed under the relay", r->name);
      goto out;
    }
    if (p[1].revents & (POLLHUP | POLLERR))
      s.port_hup = 1;
    int w = pump_up(r, &s, p[1].revents);
    if (!w)
      w = pump_down(r, &s, p[2].revents);
    if (!w && (p[2].revents & (POLLHUP | POLLERR)) && !(p[2].revents & POLLIN) &&
        !(s.ulen > s.uoff))
      w = AGENT_RELAY_CLIENT_GONE; /* hung up with nothing left to read */
    if (w) {
      why = w;
      goto out;
    }
  }
out:
  if (s.pipe_r >= 0)
    close(s.pipe_r);
  if (s.pipe_w >= 0)
    close(s.pipe_w);
  free(s.up);
  free(s.down);
  free(s.rd_iov);
  free(s.wr_iov);
  return why;
}

static void *relay_main(void *arg) {
  agent_relay *r = arg;
  int why = relay_loop(r);
  /* The 9p client must see its transport fail, not wait for answers. */
  shutdown(r->b, SHUT_RDWR);
  if (why != AGENT_RELAY_STOPPED) {
    /* Let the host drop the port (device_del) without waiting for an unmount. */
    close(r->port);
    r->port = -1;
  }
  uint64_t tp = atomic_load(&r->to_port), tc = atomic_load(&r->to_client);
  if (why == AGENT_RELAY_CLIENT_GONE || why == AGENT_RELAY_STOPPED)
    hm_info("9p relay for port %s ended: %s (%llu bytes to the host, %llu to the guest)", r->name,
            why_name(why), (unsigned long long)tp, (unsigned long long)tc);
  else
    hm_warn("9p relay for port %s ended: %s (%llu bytes to the host, %llu to the guest); the "
            "mount now fails with I/O errors",
            r->name, why_name(why), (unsigned long long)tp, (unsigned long long)tc);
  atomic_store(&r->state, why);
  return NULL;
}

agent_relay *agent_relay_start(int b, int port, const agent_relay_opts *opts) {
  agent_relay *r = calloc(1, sizeof(*r));
  int e = ENOMEM;
  if (!r || !(r->name = strdup(opts && opts->name ? opts->name : "?")))
    goto fail;
  r->b = b;
  r->port = port;
  r->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->stopfd < 0 || set_nonblock(b) < 0 || set_nonblock(port) < 0) {
    e = errno;
    goto fail;
  }
  unsigned bs = opts ? opts->buf_size : 0;
  r->buf_size = bs < RELAY_MIN_BUF ? RELAY_MIN_BUF : bs > RELAY_MAX_BUF ? RELAY_MAX_BUF : bs;
  r->use_splice = !(opts && opts->no_splice);
  atomic_init(&r->deadline, opts ? opts->deadline : 0);
  atomic_init(&r->state, AGENT_RELAY_RUNNING);
  atomic_init(&r->to_port, 0);
  atomic_init(&r->to_client, 0);
  if ((e = pthread_create(&r->thread, NULL, relay_main, r)) != 0)
    goto fail;
  return r;
fail:
  if (r) {
    if (r->stopfd > 0)
      close(r->stopfd);
    free(r->name);
    free(r);
  }
  close(b);
  close(port);
  errno = e;
  return NULL;
}

void agent_relay_disarm(agent_relay *r) {
  atomic_store(&r->deadline, 0);
  /* The loop re-reads the deadline after any event; a stale timeout only
   * wakes it once more. */
}

int agent_relay_state(agent_relay *r) {
  return atomic_load(&r->state);
}

int agent_relay_uses_splice(agent_relay *r) {
  return r->use_splice;
}

void agent_relay_counts(agent_relay *r, uint64_t *to_port, uint64_t *to_client) {
  if (to_port)
    *to_port = atomic_load(&r->to_port);
  if (to_client)
    *to_client = atomic_load(&r->to_client);
}

int agent_relay_stop(agent_relay *r) {
  if (!r)
    return 0;
  uint64_t one = 1;
  if (write(r->stopfd, &one, sizeof(one)) < 0)
    hm_debug("9p relay %s: stop signal: %s", r->name, strerror(errno));
  pthread_join(r->thread, NULL);
  int why = atomic_load(&r->state);
  if (r->port >= 0)
    close(r->port);
  close(r->b);
  close(r->stopfd);
  free(r->name);
  free(r);
  return why;
}
