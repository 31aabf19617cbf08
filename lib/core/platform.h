/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The platform layer: what lib/core needs from the system that Linux and the
 * other POSIX systems (macOS, for the VZ backend) spell differently. lib/core
 * calls these and never the Linux-only interfaces themselves (eventfd,
 * SO_PEERCRED, openat2, getrandom, O_PATH, pipe2, SOCK_CLOEXEC, MSG_NOSIGNAL,
 * /proc). One implementation is built: platform_linux.c, or
 * platform_posix.c (meson -Dplatform=auto|linux|posix; auto: linux on
 * Linux). lib/server uses it too. The Linux-only backends (lib/drivers/qemu,
 * lib/drivers/sshfs) and the guest agent use Linux directly; they are not
 * built elsewhere (-Dlinux_backends; lib/drivers/linux_only_stubs.c stands
 * in). tests/compile/portable.sh builds lib/core, lib/server and the VZ
 * backend with the portable variant and Linux's own interfaces poisoned.
 */
#ifndef HM_PLATFORM_H
#define HM_PLATFORM_H

#include "private.h"

#include <fcntl.h>
#include <stddef.h>
#include <sys/types.h>

/* Opening a directory only to hold it (walk, fstat, *at calls): O_PATH on
 * Linux needs no read permission; elsewhere a read-only open. */
#ifdef HM_PLATFORM_LINUX
#define HM_O_PATH O_PATH
#else
#define HM_O_PATH O_RDONLY
#endif

/*
 * A wake-up: rfd becomes readable after hm_wake_signal and stays so until
 * hm_wake_drain (an eventfd on Linux, where rfd == wfd; a pipe elsewhere).
 * Both ends non-blocking and close-on-exec. Thread-safe: signal from any
 * thread, drain from the one that polls rfd.
 */
typedef struct hm_wake {
  int rfd, wfd;
} hm_wake;
#define HM_WAKE_NONE ((hm_wake){-1, -1})
/* 0, or -1 with errno. */
HM_PRIVATE int hm_wake_open(hm_wake *w);
/* 0, or -1 with errno (already readable is not an error). */
HM_PRIVATE int hm_wake_signal(hm_wake *w);
/* Makes rfd not readable again. 0, or -1 with errno. */
HM_PRIVATE int hm_wake_drain(hm_wake *w);
/* Closes what is open; *w becomes HM_WAKE_NONE. */
HM_PRIVATE void hm_wake_close(hm_wake *w);

/* socket(2) with close-on-exec set, and sends on it never raising SIGPIPE
 * (with hm_plat_send). -1 with errno. Where the system has no
 * SOCK_CLOEXEC, set right after (a fork+exec on another thread in between
 * can inherit it). */
HM_PRIVATE int hm_plat_socket(int domain, int type);
/* send(2) without SIGPIPE on a closed peer (EPIPE instead). */
HM_PRIVATE ssize_t hm_plat_send(int fd, const void *buf, size_t len);
/* pipe(2), both ends close-on-exec. 0, or -1 with errno. */
HM_PRIVATE int hm_plat_pipe(int p[2]);

/* Who is connected at the other end of unix socket fd: its uid, and its
 * pid where the system says (else *pid = -1). 0, or -1 with errno (ENOSYS:
 * this system cannot tell, and a caller must then refuse the peer). */
HM_PRIVATE int hm_plat_peer(int fd, uid_t *uid, pid_t *pid);

/* n random bytes (not for keys: names and ids). 0, or -1 when the system
 * gives none without blocking. */
HM_PRIVATE int hm_plat_random(void *buf, size_t n);

/* open(2) of an absolute path with no symbolic link in any component, by
 * the kernel (openat2 RESOLVE_NO_SYMLINKS on Linux, O_NOFOLLOW_ANY on
 * macOS). -1 with errno; ENOSYS: the kernel cannot, walk instead
 * (hm_open_nofollow_walk). */
HM_PRIVATE int hm_plat_open_nosymlinks(const char *path, int flags);

/* A path by which bind(2) (which takes no directory fd) reaches the
 * directory dirfd holds, even if it was renamed: /proc/self/fd/N on Linux,
 * fcntl F_GETPATH on macOS. 0, or -1 with errno. */
HM_PRIVATE int hm_plat_dirfd_path(int dirfd, char *buf, size_t size);

#endif
