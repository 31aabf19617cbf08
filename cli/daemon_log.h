/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A size cap for hotmountd.log. The file is written by us and by helpers
 * (virtiofsd, diod) that inherited it as stderr and may outlive the daemon;
 * diod logs names a guest chose. So the cap cannot rely on our own writes:
 * a watcher thread checks the size, and at the cap copies the file to
 * hotmountd.log.1 and truncates it in place. Renaming would leave the
 * helpers writing, unbounded, into the renamed file; every writer appends
 * (O_APPEND), so after the truncation all of them continue at the new end.
 */
#ifndef HM_CLI_DAEMON_LOG_H
#define HM_CLI_DAEMON_LOG_H

/* Default cap; HOTMOUNTD_LOG_MAX (bytes, >= 4096) overrides it (tests). */
#define DAEMON_LOG_MAX (4L * 1024 * 1024)
/* How often the watcher looks, in ms: a helper flooding stderr gets this
 * long to write past the cap. */
#define DAEMON_LOG_CHECK_MS 250

/* Starts watching fd (the log file, opened O_APPEND) at path. Once; errors
 * are reported to the file itself and leave it unwatched. */
void daemon_log_watch(int fd, const char *path);
/* Rotates now if the file is over the cap (call after writing). */
void daemon_log_check(void);

#endif
