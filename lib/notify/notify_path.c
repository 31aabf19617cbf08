/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Event kinds and the rule for a path relative to a mount, shared by the
 * host watcher and the guest agent (both check what the other sends). */
#include "notify/notify.h"
#include "core/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

static const char *const kinds[] = {[HM_NOTIFY_CREATE] = "create",
                                    [HM_NOTIFY_MODIFY] = "modify",
                                    [HM_NOTIFY_ATTRIB] = "attrib",
                                    [HM_NOTIFY_DELETE] = "delete",
                                    [HM_NOTIFY_RENAME] = "rename"};

const char *hm_notify_kind_name(int kind) {
  return kind >= HM_NOTIFY_CREATE && kind <= HM_NOTIFY_RENAME ? kinds[kind] : NULL;
}

int hm_notify_kind_parse(const char *name) {
  for (int k = HM_NOTIFY_CREATE; k <= HM_NOTIFY_RENAME; k++)
    if (strcmp(name, kinds[k]) == 0)
      return k;
  return 0;
}

/* Length of the UTF-8 sequence at p (1..4), or 0 when it is not valid UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *p) {
  if (p[0] < 0x80)
    return 1;
  size_t n;
  unsigned cp;
  if ((p[0] & 0xe0) == 0xc0)
    n = 2, cp = p[0] & 0x1f;
  else if ((p[0] & 0xf0) == 0xe0)
    n = 3, cp = p[0] & 0x0f;
  else if ((p[0] & 0xf8) == 0xf0)
    n = 4, cp = p[0] & 0x07;
  else
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

int hm_notify_path_check(const char *path, const char **why) {
  const char *dummy;
  if (!why)
    why = &dummy;
  size_t len = path ? strlen(path) : 0;
  if (len == 0)
    return *why = "the path is empty", -EINVAL;
  if (len >= 4096)
    return *why = "the path is 4096 bytes or longer", -EINVAL;
  if (path[0] == '/')
    return *why = "the path is absolute (it must be relative to the mount)", -EINVAL;
  const unsigned char *p = (const unsigned char *)path;
  size_t comp = 0;
  const unsigned char *start = p;
  while (*p) {
    if (*p < 0x20 || *p == 0x7f)
      return *why = "the path contains a control character", -EINVAL;
    if (*p == '/') {
      size_t n = (size_t)(p - start);
      if (n == 0)
        return *why = "the path has an empty component (//, or a trailing /)", -EINVAL;
      if ((n == 1 && start[0] == '.') || (n == 2 && start[0] == '.' && start[1] == '.'))
        return *why = "the path has a '.' or '..' component", -EINVAL;
      p++;
      start = p;
      comp = 0;
      continue;
    }
    size_t n = utf8_len(p);
    if (n == 0)
      return *why = "the path is not valid UTF-8", -EINVAL;
    comp += n;
    if (comp > 255)
      return *why = "a component of the path is longer than 255 bytes", -EINVAL;
    p += n;
  }
  size_t n = (size_t)(p - start);
  if (n == 0)
    return *why = "the path has an empty component (//, or a trailing /)", -EINVAL;
  if ((n == 1 && start[0] == '.') || (n == 2 && start[0] == '.' && start[1] == '.'))
    return *why = "the path has a '.' or '..' component", -EINVAL;
  return 0;
}

int hm_notify_open_walk(int dirfd, const char *rel, int flags) {
  if (!rel[0] || strcmp(rel, ".") == 0)
    return openat(dirfd, ".", flags | O_CLOEXEC);
  int cur = dirfd;
  const char *p = rel;
  for (;;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    char name[NAME_MAX + 1];
    if (n == 0 || n > NAME_MAX || (n <= 2 && strncmp(p, "..", n) == 0)) {
      if (cur != dirfd)
        close(cur);
      errno = EINVAL;
      return -1;
    }
    memcpy(name, p, n);
    name[n] = '\0';
    /* O_NOFOLLOW on every component: a symlink is ELOOP (or ENOTDIR with
     * O_DIRECTORY), never followed. */
    int next = openat(cur, name,
                      slash ? HM_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                            : flags | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    if (cur != dirfd)
      close(cur);
    if (next < 0 || !slash) {
      errno = e;
      return next;
    }
    cur = next;
    p = slash + 1;
  }
}
