/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The macOS calls and constants lib/core/platform_posix.c uses that glibc
 * has not, declared with macOS's values (<sys/fcntl.h>, <sys/socket.h>,
 * <sys/un.h>, <unistd.h>), so that its macOS branches type-check on Linux
 * (portable.sh: syntax only; nothing of this is linked or run).
 */
#include <sys/param.h>
#include <sys/types.h>

#define F_GETPATH 50
#define O_NOFOLLOW_ANY 0x20000000
#define SO_NOSIGPIPE 0x1022
#define SOL_LOCAL 0
#define LOCAL_PEERPID 0x002
#define HM_HAVE_GETPEEREID 1
int getpeereid(int fd, uid_t *uid, gid_t *gid);
