/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Rootless unit tests run as root: switch to the test user. */
#ifndef HM_TEST_USER_H
#define HM_TEST_USER_H

/*
 * When root, in this test's own forked process: gives `dir` (recursively)
 * to HM_ROOTLESS_USER (default hmci, which tests/rootless.sh creates) and
 * becomes that user (groups, gid, uid). Not root: nothing to do. 0, or -1
 * when there is no such user (the test is then skipped; said on stdout).
 */
int hm_test_become_user(const char *dir);

#include "spawn.h"

/*
 * Runs o (its argv, share, confine, userns ...) with stdin and stdout (and
 * stderr with with_stderr) on a socketpair (o's fd fields are set here),
 * collects its output in out (NUL-terminated) and reaps it: its exit
 * status, or 128 + signal.
 */
int hm_test_spawn_output(hm_spawn_opts *o, int with_stderr, char *out, size_t size);

#endif
