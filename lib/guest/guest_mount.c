/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "guest/guest_mount.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <sys/mount.h>
#else
/* The host side of a non-Linux build only validates; values are Linux's ABI. */
#define MS_RDONLY 1UL
#define MS_NOSUID 2UL
#define MS_NODEV 4UL
#endif

#define TAG_MAX 36

int hm_guest_tag_validate(const char *tag, hm_error **err) {
  if (!tag || !*tag)
    return HM_ERR(err, HM_E_INVALID, "virtiofs tag is empty");
  size_t n = strlen(tag);
  for (size_t i = 0; i < n; i++) {
    char c = tag[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return HM_ERR(err, HM_E_INVALID,
                    "virtiofs tag has a character outside [A-Za-z0-9._-] at byte %zu", i);
  }
  if (n > TAG_MAX)
    return HM_ERR(err, HM_E_INVALID, "virtiofs tag '%.36s...' is longer than %d characters", tag,
                  TAG_MAX);
  return 0;
}

/* Copies an option for a message, with non-printable bytes shown as '?'. */
static void show_option(char *shown, size_t size, const char *p, size_t len) {
  size_t k = len < size - 1 ? len : size - 1;
  for (size_t i = 0; i < k; i++)
    shown[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
  shown[k] = '\0';
}

/* Options a virtiofs mount may carry. Everything else is refused, in
 * particular the generic superblock flags the kernel also parses out of the
 * data string (ro, rw, sync, ...). */
static int virtiofs_option_ok(const char *opt, size_t len) {
  static const char *const ok[] = {"dax",       "dax=always",          "dax=never",
                                   "dax=inode", "default_permissions", "allow_other"};
  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
    if (strlen(ok[i]) == len && memcmp(ok[i], opt, len) == 0)
      return 1;
  return 0;
}

static int check_options(const char *options, hm_error **err) {
  for (const char *p = options;;) {
    const char *e = strchrnul(p, ',');
    size_t len = (size_t)(e - p);
    if (len == 0)
      return HM_ERR(err, HM_E_INVALID, "empty option in virtiofs options");
    if (!virtiofs_option_ok(p, len)) {
      char shown[48];
      show_option(shown, sizeof(shown), p, len);
      return HM_ERR(err, HM_E_INVALID,
                    "virtiofs option '%s' is not allowed (allowed: dax[=always|never|inode], "
                    "default_permissions, allow_other)",
                    shown);
    }
    if (!*e)
      return 0;
    p = e + 1;
  }
}

/*
 * 9p options. The agent builds trans=fd,rfdno=,wfdno= itself, so the host may
 * only choose the protocol and client behaviour: nothing that names another
 * transport or file descriptor (trans, rfdno, wfdno, port, privport), a
 * client-side identity (afid, dfltuid, dfltgid) or another export
 * (remotename), a cache path (cachetag) or debug output, and none of the generic flags (rw, suid,
 * dev, ...) that would undo the mount flags. Values are matched exactly or are
 * bounded decimal numbers, so no value can smuggle a ',' or a control byte.
 */
#define P9_MSIZE_DEFAULT 262144U
#define P9_MSIZE_MIN 4096U
#define P9_MSIZE_MAX (16U * 1024 * 1024)

enum {
  P9_VERSION,
  P9_MSIZE,
  P9_CACHE,
  P9_ACCESS,
  P9_POSIXACL,
  P9_NOXATTR,
  P9_LOCKTIMEOUT,
  P9_ANAME,
  P9_UNAME,
  P9_N
};
#define P9_ANAME_MAX 1024

static const struct p9_key {
  const char *name;
  const char *const *values; /* NULL-terminated exact values; NULL: see min/max */
  unsigned long min, max;    /* decimal value in [min, max] when values is NULL and max > 0;
                                no value at all when both are 0 */
} p9_keys[P9_N] = {
    [P9_VERSION] = {"version", (const char *const[]){"9p2000.L", "9p2000.u", "9p2000", NULL}},
    [P9_MSIZE] = {"msize", NULL, P9_MSIZE_MIN, P9_MSIZE_MAX},
    [P9_CACHE] = {"cache", (const char *const[]){"none", "loose", "fscache", "mmap", NULL}},
    [P9_ACCESS] = {"access", (const char *const[]){"user", "any", "client", NULL}},
    [P9_POSIXACL] = {"posixacl", NULL, 0, 0},
    [P9_NOXATTR] = {"noxattr", NULL, 0, 0},
    [P9_LOCKTIMEOUT] = {"locktimeout", NULL, 1, 3600},
    [P9_ANAME] = {"aname", NULL, 0, 0}, /* checked by aname_ok */
    [P9_UNAME] = {"uname", NULL, 0, 0}, /* checked by uname_ok */
};

#define P9_ALLOWED                                                                                 \
  "version=9p2000.L|9p2000.u|9p2000, msize=4096..16777216, cache=none|loose|fscache|mmap, "        \
  "access=user|any|client, posixacl, noxattr, locktimeout=1..3600, aname=/PATH, uname=NAME"

/* Parses a decimal in [min, max] (no sign, no leading zero, at most 9 digits). */
static int p9_number(const char *v, size_t len, unsigned long min, unsigned long max,
                     unsigned long *out) {
  if (len == 0 || len > 9 || (v[0] == '0' && len > 1))
    return -1;
  unsigned long x = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    x = x * 10 + (unsigned long)(v[i] - '0');
  }
  if (x < min || x > max)
    return -1;
  *out = x;
  return 0;
}

/* The export to attach to (diod matches it against its -e paths; the server
 * decides what it serves). An absolute path without control characters; a
 * ',' cannot occur, it ends the option. */
static int aname_ok(const char *v, size_t len) {
  if (len == 0 || len > P9_ANAME_MAX || v[0] != '/')
    return 0;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
      return 0;
  return 1;
}

/* The user name of the mount's first attach; with access=user|client each
 * guest user then attaches by its own uid (diod -N serves only "root" by
 * name). It names a user to the server, not to this kernel: 1..32 of
 * [A-Za-z0-9._-], not starting with '-'. */
static int uname_ok(const char *v, size_t len) {
  if (len == 0 || len > 32 || v[0] == '-')
    return 0;
  for (size_t i = 0; i < len; i++)
    if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
          (v[i] >= '0' && v[i] <= '9') || v[i] == '.' || v[i] == '_' || v[i] == '-'))
      return 0;
  return 1;
}

int hm_guest_9p_options(char **out, unsigned *msize, const char *options, hm_error **err) {
  *out = NULL;
  int seen[P9_N] = {0};
  unsigned long ms = P9_MSIZE_DEFAULT;
  for (const char *p = options && *options ? options : NULL; p;) {
    const char *e = strchrnul(p, ',');
    size_t len = (size_t)(e - p);
    char shown[48];
    show_option(shown, sizeof(shown), p, len);
    if (len == 0)
      return HM_ERR(err, HM_E_INVALID, "empty option in 9p options");
    const char *eq = memchr(p, '=', len);
    size_t klen = eq ? (size_t)(eq - p) : len;
    int k = -1;
    for (int i = 0; i < P9_N; i++)
      if (strlen(p9_keys[i].name) == klen && memcmp(p9_keys[i].name, p, klen) == 0)
        k = i;
    if (k < 0)
      return HM_ERR(err, HM_E_INVALID,
                    "9p option '%s' is not allowed (the agent sets the transport itself; "
                    "allowed: " P9_ALLOWED ")",
                    shown);
    if (seen[k]++)
      return HM_ERR(err, HM_E_INVALID, "9p option '%s' is given twice", p9_keys[k].name);
    const struct p9_key *key = &p9_keys[k];
    int ok;
    if (k == P9_ANAME) {
      ok = eq && aname_ok(eq + 1, len - klen - 1);
    } else if (k == P9_UNAME) {
      ok = eq && uname_ok(eq + 1, len - klen - 1);
    } else if (key->values) {
      ok = 0;
      for (const char *const *v = key->values; eq && *v; v++)
        if (strlen(*v) == len - klen - 1 && memcmp(*v, eq + 1, len - klen - 1) == 0)
          ok = 1;
    } else if (key->max) {
      unsigned long x = 0;
      ok = eq && p9_number(eq + 1, len - klen - 1, key->min, key->max, &x) == 0;
      if (ok && k == P9_MSIZE)
        ms = x;
    } else {
      ok = !eq;
    }
    if (!ok)
      return HM_ERR(err, HM_E_INVALID,
                    "9p option '%s' has a value that is not allowed (allowed: %s)", shown,
                    P9_ALLOWED);
    p = *e ? e + 1 : NULL;
  }
  /* The kernel's defaults are 9p2000.L and an msize of 8 KiB (trans=fd),
   * which makes every large read a train of tiny messages. */
  const char *opts = options && *options ? options : "";
  if (asprintf(out, "%s%s%s", seen[P9_VERSION] ? "" : "version=9p2000.L,",
               seen[P9_MSIZE] ? "" : "msize=262144,", opts) < 0) {
    *out = NULL;
    return HM_ERR_NOMEM(err);
  }
  size_t n = strlen(*out);
  if (n && (*out)[n - 1] == ',')
    (*out)[n - 1] = '\0';
  if (msize)
    *msize = (unsigned)ms;
  return 0;
}

int hm_guest_port_validate(const char *port, hm_error **err) {
  if (!port || !*port)
    return HM_ERR(err, HM_E_INVALID, "virtio-serial port name is empty");
  size_t n = strlen(port);
  for (size_t i = 0; i < n; i++) {
    char c = port[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return HM_ERR(err, HM_E_INVALID,
                    "virtio-serial port name has a character outside [A-Za-z0-9._-] at byte %zu",
                    i);
  }
  if (n > HM_GUEST_PORT_MAX)
    return HM_ERR(err, HM_E_INVALID, "virtio-serial port name '%.40s...' is longer than %d bytes",
                  port, HM_GUEST_PORT_MAX);
  return 0;
}

void hm_guest_mount_call_clear(hm_guest_mount_call *c) {
  if (!c)
    return;
  free(c->source);
  free(c->fstype);
  free(c->data);
  memset(c, 0, sizeof(*c));
}

int hm_guest_mount_build(hm_guest_mount_call *out, int type, const char *tag, int readonly,
                         const char *options, hm_error **err) {
  memset(out, 0, sizeof(*out));
  int r;
  if (type == HM_TYPE_9P) {
    if ((r = hm_guest_port_validate(tag, err)) < 0)
      return r;
    if ((r = hm_guest_9p_options(&out->data, &out->msize, options, err)) < 0)
      return r;
    out->source = strdup(tag);
    out->fstype = strdup("9p");
    if (!out->source || !out->fstype) {
      hm_guest_mount_call_clear(out);
      return HM_ERR_NOMEM(err);
    }
    out->flags = MS_NOSUID | MS_NODEV | (readonly ? MS_RDONLY : 0);
    return 0;
  }
  if (type != HM_TYPE_VIRTIOFS)
    return HM_ERR(err, HM_E_INVALID, "mount type %d is not supported by the guest agent", type);
  r = hm_guest_tag_validate(tag, err);
  if (r < 0)
    return r;
  if (options && *options && (r = check_options(options, err)) < 0)
    return r;
  out->source = strdup(tag);
  out->fstype = strdup("virtiofs");
  out->data = options && *options ? strdup(options) : NULL;
  if (!out->source || !out->fstype || (options && *options && !out->data)) {
    hm_guest_mount_call_clear(out);
    return HM_ERR_NOMEM(err);
  }
  out->flags = MS_NOSUID | MS_NODEV | (readonly ? MS_RDONLY : 0);
  return 0;
}

int hm_guest_9p_data(char **out, const hm_guest_mount_call *c, int fd) {
  const char *sep = c->data && *c->data ? "," : "", *data = c->data ? c->data : "";
  int n = fd >= 0 ? asprintf(out, "trans=fd,rfdno=%d,wfdno=%d%s%s", fd, fd, sep, data)
                  : asprintf(out, "trans=virtio%s%s", sep, data);
  if (n < 0) {
    *out = NULL;
    return -1;
  }
  return 0;
}

int hm_guest_fstype_is_ours(const char *fstype) {
  return hm_guest_fstype_is_share(fstype) || strcmp(fstype, "fuse.sshfs") == 0;
}

int hm_guest_fstype_is_share(const char *fstype) {
  return strcmp(fstype, "virtiofs") == 0 || strcmp(fstype, "9p") == 0 ||
         strcmp(fstype, "drvfs") == 0;
}

/* Decodes mountinfo's \ooo escapes (space, tab, newline, backslash) in place. */
static void unescape(char *s) {
  char *o = s;
  for (char *p = s; *p;) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
        p[3] <= '7') {
      *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
      p += 4;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
}

static char *join_options(const char *mnt, const char *super) {
  size_t a = strlen(mnt), b = strlen(super);
  char *r = malloc(a + b + 2);
  if (!r)
    return NULL;
  memcpy(r, mnt, a + 1);
  size_t o = a;
  for (const char *p = super; *p;) {
    const char *e = strchrnul(p, ',');
    size_t len = (size_t)(e - p);
    if (len && !(len == 2 && (memcmp(p, "ro", 2) == 0 || memcmp(p, "rw", 2) == 0))) {
      if (o)
        r[o++] = ',';
      memcpy(r + o, p, len);
      o += len;
    }
    p = *e ? e + 1 : e;
  }
  r[o] = '\0';
  return r;
}

int hm_guest_mountinfo_parse(hm_agent_mount_info **out, size_t *n, const char *text, int ours_only,
                             hm_error **err) {
  *out = NULL;
  *n = 0;
  char *copy = strdup(text);
  if (!copy)
    return HM_ERR_NOMEM(err);
  hm_agent_mount_info *v = NULL;
  size_t cnt = 0, cap = 0, lineno = 0;
  int r = 0;
  char *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    lineno++;
    /* 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue */
    char *f[6], *s2 = NULL;
    size_t nf = 0;
    /* Exactly six: the optional fields that follow vary in number. */
    while (nf < 6 && (f[nf] = strtok_r(nf ? NULL : line, " ", &s2)))
      nf++;
    char *fstype = NULL, *source = NULL, *super = NULL;
    for (char *t = strtok_r(NULL, " ", &s2); t; t = strtok_r(NULL, " ", &s2)) {
      if (strcmp(t, "-") == 0) {
        fstype = strtok_r(NULL, " ", &s2);
        source = strtok_r(NULL, " ", &s2);
        super = strtok_r(NULL, " ", &s2);
        break;
      }
    }
    if (nf < 6 || !fstype || !source) {
      r = HM_ERR(err, HM_E_PROTOCOL, "mountinfo line %zu is malformed", lineno);
      break;
    }
    unescape(f[4]);
    unescape(source);
    unescape(fstype);
    if (ours_only && !hm_guest_fstype_is_ours(fstype))
      continue;
    if (cnt == cap) {
      size_t nc = cap ? cap * 2 : 8;
      hm_agent_mount_info *nv = realloc(v, nc * sizeof(*v));
      if (!nv) {
        r = HM_ERR_NOMEM(err);
        break;
      }
      v = nv;
      cap = nc;
    }
    hm_agent_mount_info *m = &v[cnt++];
    m->target = strdup(f[4]);
    m->fstype = strdup(fstype);
    m->source = strdup(source);
    m->options = join_options(f[5], super ? super : "");
    if (!m->target || !m->fstype || !m->source || !m->options) {
      r = HM_ERR_NOMEM(err);
      break;
    }
  }
  free(copy);
  if (r < 0) {
    hm_agent_mount_info_free(v, cnt);
    return r;
  }
  *out = v;
  *n = cnt;
  return 0;
}
