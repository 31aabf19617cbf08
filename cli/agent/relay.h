/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 9p byte relay. The kernel's 9p client cannot use a virtio-serial port
 * directly (virtio_console has no write_iter: "kernel write not supported"),
 * so a 9p mount runs trans=fd on one end (A) of a socketpair and this relay
 * moves bytes between the other end (B) and the port, for the life of the
 * mount. It takes plain descriptors, so the host's unit tests drive it with
 * socketpairs and pipes.
 */
#ifndef HM_AGENT_RELAY_H
#define HM_AGENT_RELAY_H

#include <stdint.h>

typedef struct agent_relay agent_relay;

/* Why a relay ended. */
enum {
  AGENT_RELAY_RUNNING = 0,
  AGENT_RELAY_STOPPED,     /* agent_relay_stop */
  AGENT_RELAY_CLIENT_GONE, /* B read end-of-file: the kernel released A (unmount) */
  AGENT_RELAY_PORT_CLOSED, /* the port read end-of-file / hung up: the host side closed */
  AGENT_RELAY_DEADLINE,    /* still armed at its deadline: the server never answered */
  AGENT_RELAY_ERROR,       /* a read or write failed */
};

typedef struct agent_relay_opts {
  const char *name;  /* for logs: the port name */
  unsigned buf_size; /* bytes per direction; 0: 256 KiB (raised to at least that) */
  int no_splice;     /* 1: plain read/write only (tests; ports without indirect descriptors) */
  int64_t deadline;  /* hm_now_ms() scale, 0: none. Until agent_relay_disarm, the relay gives
                        up at this time (shutting B down), so a mount(2) waiting for a server
                        that never answers fails instead of hanging. */
} agent_relay_opts;

/*
 * agent_relay_start: starts a thread relaying between b (a stream socket,
 * the 9p client's peer) and port (the virtio-serial port, or anything
 * readable and writable). Takes ownership of both descriptors; they are made
 * non-blocking. When the port side ends, B is shut down (the 9p client then
 * fails its requests with an error instead of waiting forever) and both are
 * closed. NULL with errno on failure (the descriptors are closed then too).
 */
agent_relay *agent_relay_start(int b, int port, const agent_relay_opts *opts);
/* The mount went through: the deadline no longer applies. */
void agent_relay_disarm(agent_relay *r);
/* AGENT_RELAY_RUNNING, or why it ended. */
int agent_relay_state(agent_relay *r);
/* Ends the relay (if it still runs), waits for its thread, closes what is
 * still open and frees r. Returns why it ended. NULL: no-op (0). */
int agent_relay_stop(agent_relay *r);
/* Bytes moved so far: to_port from B to the port, to_client the other way. */
void agent_relay_counts(agent_relay *r, uint64_t *to_port, uint64_t *to_client);
/* Whether the relay moves B->port with splice (1) or read/write (0). */
int agent_relay_uses_splice(agent_relay *r);

#endif
