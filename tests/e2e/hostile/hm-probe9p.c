/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hm-probe9p: a hostile guest's raw 9P2000.L client, for the hostile-guest
 * e2e suite. It opens a 9p hot-mount's virtio-serial port (free once guest
 * root has killed hotmount-agent) and sends what a script on its command
 * line says, one step per argument, printing one machine-readable line per
 * step:
 *
 *   R <step> <op> ok [key=value ...]
 *   R <step> <op> err <errno>          the server's Rlerror
 *   R <step> <op> io <reason>          no answer (timeout, EOF, garbage)
 *
 * Steps (fields separated by ':'; walk elements by '|', so that an element
 * may hold a '/'):
 *   version                       Tversion 9P2000.L, msize 65536
 *   attach:FID:ANAME              Tattach as root (n_uname 0); ANAME may be
 *                                 "slashes:N" for N '/' characters
 *   walk:FID:NEWFID:E1|E2|...     Twalk (an empty list clones FID)
 *   open:FID:FLAGS                Tlopen (FLAGS decimal: 0 read, 2 rdwr)
 *   read:FID                      Tread at 0 (up to 4000 bytes): data=HEX
 *   create:FID:NAME:MODE          Tlcreate O_RDWR|O_CREAT|O_EXCL, MODE octal
 *   write:FID:TEXT                Twrite at 0
 *   symlink:FID:NAME:TARGET       Tsymlink
 *   mknod:FID:NAME:MODE:MAJ:MIN   Tmknod (MODE octal, with the S_IF type)
 *   chmod:FID:MODE                Tsetattr of the mode (octal)
 *   getattr:FID                   Tgetattr: mode=OCTAL uid= gid= rdev=
 *   clunk:FID                     Tclunk
 *
 * A step's failure does not stop the script: each line says what happened.
 * Exit status 0 when every step got an answer (ok or err), 1 otherwise, 2
 * on bad usage. Static, no dependencies: the guest image is busybox.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MSIZE 65536
#define NOTAG 0xffff
#define NOFID 0xffffffffu
#define TIMEOUT_MS 15000

enum {
  Rlerror = 7,
  Tlopen = 12,
  Tlcreate = 14,
  Tsymlink = 16,
  Tmknod = 18,
  Tgetattr = 24,
  Tsetattr = 26,
  Tversion = 100,
  Tattach = 104,
  Twalk = 110,
  Tread = 116,
  Twrite = 118,
  Tclunk = 120,
};

static int port = -1;
static uint16_t next_tag = 1;

typedef struct buf {
  unsigned char d[MSIZE];
  size_t n;
} buf;

static void put1(buf *b, unsigned v) {
  b->d[b->n++] = (unsigned char)v;
}
static void put2(buf *b, unsigned v) {
  put1(b, v & 0xff);
  put1(b, (v >> 8) & 0xff);
}
static void put4(buf *b, uint32_t v) {
  put2(b, v & 0xffff);
  put2(b, v >> 16);
}
static void put8(buf *b, uint64_t v) {
  put4(b, (uint32_t)v);
  put4(b, (uint32_t)(v >> 32));
}
static void puts_(buf *b, const char *s) {
  size_t n = strlen(s);
  put2(b, (unsigned)n);
  memcpy(b->d + b->n, s, n);
  b->n += n;
}
static uint32_t get4(const unsigned char *p) {
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get8(const unsigned char *p) {
  return get4(p) | (uint64_t)get4(p + 4) << 32;
}

/* Starts a message: size (filled by send_msg), type, tag. */
static void begin(buf *b, unsigned type, unsigned tag) {
  b->n = 0;
  put4(b, 0);
  put1(b, type);
  put2(b, tag);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* Reads exactly n bytes within the deadline. 0, or -1 with *why set. */
static int read_full(unsigned char *p, size_t n, long deadline, const char **why) {
  while (n) {
    long left = deadline - now_ms();
    struct pollfd pfd = {port, POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
      *why = "timeout";
      return -1;
    }
    ssize_t r = read(port, p, n);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r <= 0) {
      *why = r == 0 ? "eof" : "read-error";
      return -1;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Sends b and waits for the answer with the same tag (answers to anything
 * else, e.g. a dead relay's last requests, are skipped). The answer is in
 * r; returns its type, or -1 with *why set. */
static int rpc(buf *b, buf *r, const char **why) {
  uint32_t size = (uint32_t)b->n;
  unsigned tag = b->d[5] | b->d[6] << 8;
  b->d[0] = size & 0xff;
  b->d[1] = (size >> 8) & 0xff;
  b->d[2] = (size >> 16) & 0xff;
  b->d[3] = size >> 24;
  for (size_t off = 0; off < b->n;) {
    ssize_t w = write(port, b->d + off, b->n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      *why = "write-error";
      return -1;
    }
    off += (size_t)w;
  }
  long deadline = now_ms() + TIMEOUT_MS;
  for (;;) {
    if (read_full(r->d, 4, deadline, why) < 0)
      return -1;
    uint32_t n = get4(r->d);
    if (n < 7 || n > MSIZE) {
      *why = "bad-size";
      return -1;
    }
    if (read_full(r->d + 4, n - 4, deadline, why) < 0)
      return -1;
    r->n = n;
    if ((unsigned)(r->d[5] | r->d[6] << 8) == tag)
      return r->d[4];
  }
}

static char **split(char *s, char sep, int *count) {
  int n = 1;
  for (char *p = s; *p; p++)
    n += *p == sep;
  char **v = calloc((size_t)n + 1, sizeof(*v));
  int i = 0;
  v[i++] = s;
  for (char *p = s; *p; p++)
    if (*p == sep) {
      *p = '\0';
      v[i++] = p + 1;
    }
  *count = i;
  return v;
}

static void hex(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    printf("%02x", p[i]);
}

/* Runs one step; prints its line. 0 when the server answered. */
static int step(int no, char *spec) {
  int nf;
  char **f = split(spec, ':', &nf);
  const char *op = f[0], *why = "usage";
  static buf b, r;
  int type = -1, want = -1;
  unsigned tag = next_tag++;
#define NEED(k)                                                                                    \
  do {                                                                                             \
    if (nf < (k))                                                                                  \
      goto usage;                                                                                  \
  } while (0)
  if (strcmp(op, "version") == 0) {
    begin(&b, Tversion, NOTAG);
    put4(&b, MSIZE);
    puts_(&b, "9P2000.L");
    want = Tversion + 1;
  } else if (strcmp(op, "attach") == 0) {
    NEED(3);
    /* The aname may hold ':' (rejoin the rest). */
    for (int i = 3; i < nf; i++)
      f[i][-1] = ':';
    char *aname = f[2];
    if (strncmp(aname, "slashes:", 8) == 0) {
      int k = atoi(aname + 8);
      if (k <= 0 || k > 4000)
        goto usage;
      aname = malloc((size_t)k + 1);
      memset(aname, '/', (size_t)k);
      aname[k] = '\0';
    }
    begin(&b, Tattach, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put4(&b, NOFID);
    puts_(&b, "root");
    puts_(&b, aname);
    put4(&b, 0);
    want = Tattach + 1;
  } else if (strcmp(op, "walk") == 0) {
    NEED(3);
    int ne = 0;
    char **e = nf > 3 && *f[3] ? split(f[3], '|', &ne) : NULL;
    begin(&b, Twalk, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put4(&b, (uint32_t)strtoul(f[2], NULL, 10));
    put2(&b, (unsigned)ne);
    for (int i = 0; i < ne; i++)
      puts_(&b, e[i]);
    free(e);
    want = Twalk + 1;
  } else if (strcmp(op, "open") == 0) {
    NEED(3);
    begin(&b, Tlopen, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put4(&b, (uint32_t)strtoul(f[2], NULL, 10));
    want = Tlopen + 1;
  } else if (strcmp(op, "read") == 0) {
    NEED(2);
    begin(&b, Tread, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put8(&b, 0);
    put4(&b, 4000);
    want = Tread + 1;
  } else if (strcmp(op, "create") == 0) {
    NEED(4);
    begin(&b, Tlcreate, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    puts_(&b, f[2]);
    put4(&b, O_RDWR | O_CREAT | O_EXCL);
    put4(&b, (uint32_t)strtoul(f[3], NULL, 8));
    put4(&b, 0);
    want = Tlcreate + 1;
  } else if (strcmp(op, "write") == 0) {
    NEED(3);
    begin(&b, Twrite, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put8(&b, 0);
    put4(&b, (uint32_t)strlen(f[2]));
    memcpy(b.d + b.n, f[2], strlen(f[2]));
    b.n += strlen(f[2]);
    want = Twrite + 1;
  } else if (strcmp(op, "symlink") == 0) {
    NEED(4);
    begin(&b, Tsymlink, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    puts_(&b, f[2]);
    puts_(&b, f[3]);
    put4(&b, 0);
    want = Tsymlink + 1;
  } else if (strcmp(op, "mknod") == 0) {
    NEED(6);
    begin(&b, Tmknod, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    puts_(&b, f[2]);
    put4(&b, (uint32_t)strtoul(f[3], NULL, 8));
    put4(&b, (uint32_t)strtoul(f[4], NULL, 10));
    put4(&b, (uint32_t)strtoul(f[5], NULL, 10));
    put4(&b, 0);
    want = Tmknod + 1;
  } else if (strcmp(op, "chmod") == 0) {
    NEED(3);
    begin(&b, Tsetattr, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put4(&b, 1); /* P9_SETATTR_MODE */
    put4(&b, (uint32_t)strtoul(f[2], NULL, 8));
    put4(&b, 0);
    put4(&b, 0);
    for (int i = 0; i < 5; i++)
      put8(&b, 0);
    want = Tsetattr + 1;
  } else if (strcmp(op, "getattr") == 0) {
    NEED(2);
    begin(&b, Tgetattr, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    put8(&b, 0x7ff); /* P9_GETATTR_BASIC */
    want = Tgetattr + 1;
  } else if (strcmp(op, "clunk") == 0) {
    NEED(2);
    begin(&b, Tclunk, tag);
    put4(&b, (uint32_t)strtoul(f[1], NULL, 10));
    want = Tclunk + 1;
  } else {
    goto usage;
  }
  type = rpc(&b, &r, &why);
  if (type < 0) {
    printf("R %d %s io %s\n", no, op, why);
    free(f);
    return -1;
  }
  if (type == Rlerror) {
    printf("R %d %s err %u\n", no, op, get4(r.d + 7));
    free(f);
    return 0;
  }
  if (type != want) {
    printf("R %d %s io type-%d\n", no, op, type);
    free(f);
    return -1;
  }
  printf("R %d %s ok", no, op);
  const unsigned char *p = r.d + 7;
  if (type == Tversion + 1) {
    printf(" msize=%u", get4(p));
  } else if (type == Twalk + 1) {
    printf(" nwqid=%u", p[0] | p[1] << 8);
  } else if (type == Tread + 1) {
    uint32_t n = get4(p);
    printf(" count=%u data=", n);
    hex(p + 4, n);
  } else if (type == Tgetattr + 1) {
    /* valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] */
    const unsigned char *a = p + 8 + 13;
    printf(" mode=%o uid=%u gid=%u rdev=%llu", get4(a), get4(a + 4), get4(a + 8),
           (unsigned long long)get8(a + 20));
  }
  printf("\n");
  free(f);
  return 0;
usage:
  printf("R %d %s io usage\n", no, op);
  free(f);
  return -1;
#undef NEED
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PORT STEP...\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  port = open(argv[1], O_RDWR | O_CLOEXEC);
  if (port < 0) {
    printf("R 0 open io %s\n", strerror(errno));
    return 1;
  }
  int bad = 0;
  for (int i = 2; i < argc; i++)
    if (step(i - 1, argv[i]) < 0)
      bad = 1;
  close(port);
  return bad;
}
