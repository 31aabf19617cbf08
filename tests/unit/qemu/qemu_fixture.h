/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A real QEMU with no guest (-S) started with `hotmount qemu-args`, a QMP
 * monitor of the test's own (test-qmp.sock) and the QEMU backend on
 * qmp.sock. Shared by the QEMU backend tests.
 */
#ifndef HM_TEST_QEMU_FIXTURE_H
#define HM_TEST_QEMU_FIXTURE_H

#include "driver_internal.h"
#include "mount_internal.h"
#include "qmp.h"

#include <sys/types.h>

typedef struct qemu_fixture {
  char dir[64];    /* the instance directory (removed by qf_stop) */
  char share[256]; /* dir/share, an empty directory to share */
  pid_t qemu_pid;
  hm_qmp *mon; /* the test's own monitor, separate from the backend's */
  hm_fs_hotplugger *hp;
} qemu_fixture;

/* Starts QEMU with `slots` root ports and connects; asserts on failure. */
void qf_start(qemu_fixture *f, unsigned slots);
/* Frees the backend, kills QEMU, removes the directory. */
void qf_stop(qemu_fixture *f);
/* Runs a command on the test's monitor; asserts it succeeds. */
void qf_exec(qemu_fixture *f, const char *cmd, const char *args_json);
/* Does QEMU have chardev id / a /machine/peripheral child named id? */
int qf_has_chardev(qemu_fixture *f, const char *id);
int qf_has_device(qemu_fixture *f, const char *id);
/* A validated spec sharing f->share at /mnt/x, of type. */
hm_mount_spec *qf_spec(qemu_fixture *f, int type);

#endif
