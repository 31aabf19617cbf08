/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Included first (-include) by portable.sh: the system headers lib/core may
 * use, then every Linux-only interface poisoned, so that using one outside
 * lib/core/platform_linux.c fails to compile, naming it. (The headers come
 * first so that their own declarations are not the ones refused.)
 */
#pragma GCC system_header
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib.h>
#include <json-c/json.h>

#pragma GCC poison eventfd eventfd_read eventfd_write EFD_CLOEXEC EFD_NONBLOCK signalfd
#pragma GCC poison SO_PEERCRED ucred getrandom GRND_NONBLOCK
#pragma GCC poison O_PATH O_TMPFILE openat2 SYS_openat2 RESOLVE_NO_SYMLINKS renameat2 statx
#pragma GCC poison pipe2 accept4 dup3 SOCK_CLOEXEC SOCK_NONBLOCK MSG_NOSIGNAL
#pragma GCC poison close_range memfd_create pidfd_open pidfd_send_signal P_PIDFD
#pragma GCC poison epoll_create1 epoll_wait inotify_init1 prctl syscall sendfile splice
