/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* fake-qmp SOCKET TRANSCRIPT.json: serves one QMP session from a transcript
 * (format in fake_qmp.h). Exit 0 when the client did exactly what it says. */
#include "fake_qmp.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
  got_signal = sig;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SOCKET TRANSCRIPT.json\n", argv[0]);
    return 2;
  }
  char *msg = NULL;
  fake_qmp *f = fake_qmp_start(argv[1], argv[2], &msg);
  if (!f) {
    fprintf(stderr, "fake-qmp: %s\n", msg ? msg : "cannot start");
    free(msg);
    return 2;
  }
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* Poll so a signal can end the session while a client is still connected. */
  while (!got_signal && fake_qmp_wait(f, 100) != 0)
    ;
  int ok = fake_qmp_wait(f, 0) == 0 && fake_qmp_ok(f);
  const char *e = fake_qmp_error(f);
  if (!ok)
    fprintf(stderr, "fake-qmp: %s\n", e ? e : "session did not finish");
  fprintf(stderr, "fake-qmp: %d commands, %d fds, %d steps done\n", fake_qmp_commands(f),
          fake_qmp_fds(f), fake_qmp_steps_done(f));
  fake_qmp_free(f);
  return ok ? 0 : 1;
}
