/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fake_qmp: a scripted QMP server, a real peer on a real unix socket.
 *
 * It serves exactly one client connection, replaying a JSON transcript, and
 * records whether the client did what the transcript expects. Used by the
 * Check unit tests (as a thread in the test process) and as the standalone
 * `fake-qmp SOCKET TRANSCRIPT.json` (exit 0 when the transcript was consumed).
 *
 * Transcript format (one JSON object):
 *
 *   {
 *     "greeting": {...} | false,   optional; the object sent on connect. Default:
 *                                  QEMU 7.2's greeting. false: send nothing.
 *     "steps": [ STEP, ... ]       run in order
 *   }                              other members (e.g. "comment") are ignored
 *
 * STEP is one of:
 *
 *   {"expect": "NAME",             wait for the next command; it must be NAME
 *    "arguments": {...},           optional; a subset the command's arguments
 *                                  must contain (objects compared recursively
 *                                  as subsets, everything else by equality)
 *    "fd": true,                   optional; an fd must come with the command as
 *                                  SCM_RIGHTS (it is counted, then closed)
 *    "before": [ EMIT, ... ],      optional; sent after the command arrives and
 *                                  before the reply (e.g. DEVICE_DELETED racing
 *                                  ahead of the device_del reply)
 *    "delay_ms": N,                optional; wait before replying
 *    "reply": {"return": ...} | {"error": {"class": C, "desc": D}},
 *                                  optional; omitted: no reply at all. The
 *                                  command's "id" is added unless reply has one.
 *    "after": [ EMIT, ... ]}       optional; sent after the reply
 *
 *   {"unordered": [ EXPECT, ... ], the listed expect steps, in any order (for
 *    "hold": true}                 concurrent clients). hold: reply only when all
 *                                  have arrived, in reverse order of arrival.
 *
 *   EMIT (also valid as a STEP on its own, run without waiting for anything):
 *   {"event": "NAME", "data": {...}}   an event; "timestamp" is added
 *   {"send": {...}}                     this object verbatim, then CRLF
 *   {"raw": "text"}                     these bytes verbatim (no CRLF added)
 *   {"delay_ms": N}                     a pause
 *   {"close": true}                     close the connection; the session ends
 *
 * A command that does not match the current step is "unexpected": the fake
 * records the first such failure (with what it expected instead), answers the
 * client with a GenericError naming both, and stays at the same step. When
 * the client disconnects, remaining expect steps make the session fail too.
 * After the last step the fake keeps answering any command as unexpected until
 * the client disconnects.
 */
#ifndef HM_FAKE_QMP_H
#define HM_FAKE_QMP_H

#include <stdbool.h>

typedef struct fake_qmp fake_qmp;

/* Parses the transcript file, listens on socket_path (replacing a stale
 * socket) and serves one connection from a new thread. Returns NULL with a
 * message in *errmsg (malloc'd; may be NULL) on a bad transcript or socket. */
fake_qmp *fake_qmp_start(const char *socket_path, const char *transcript_file, char **errmsg);
/* Same with the transcript given as a JSON string. */
fake_qmp *fake_qmp_start_json(const char *socket_path, const char *transcript_json, char **errmsg);
/* Serves an already connected stream socket (taken over) instead of listening. */
fake_qmp *fake_qmp_start_fd(int fd, const char *transcript_json, char **errmsg);

/* Waits for the session to end (timeout_ms < 0: forever). 0 when it ended. */
int fake_qmp_wait(fake_qmp *f, int timeout_ms);
/* True once the session ended with every step consumed and nothing unexpected. */
bool fake_qmp_ok(fake_qmp *f);
/* What went wrong first ("unexpected command ...", "transcript not fully
 * consumed ..."), or NULL. The string stays valid until fake_qmp_free. */
const char *fake_qmp_error(fake_qmp *f);
/* Counts so far: commands read, fds received with them, steps consumed. */
int fake_qmp_commands(fake_qmp *f);
int fake_qmp_fds(fake_qmp *f);
int fake_qmp_steps_done(fake_qmp *f);

/* Stops the session if still running, joins the thread, removes the socket
 * file and frees everything. Accepts NULL. */
void fake_qmp_free(fake_qmp *f);

#endif
