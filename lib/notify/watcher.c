/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The recursive inotify watcher of one --notify mount. One thread per
 * watcher: it walks the share, adds a watch per directory, reads events,
 * gathers them per path for HM_NOTIFY_COALESCE_MS and hands batches to the
 * sink. It never takes a lock of the instance, so stopping it (which joins
 * the thread) is safe from anywhere that does not hold what the sink needs.
 */
#include "notify/notify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WATCH_MASK                                                                                 \
  (IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF |  \
   IN_EXCL_UNLINK | IN_ONLYDIR)
/* Paths whose last signature is remembered (for echo suppression); past it
 * the table starts again empty (an echo may then get through once). */
#define MAX_SIGS 65536

struct sig {
  int64_t mtime_ns;
  long long size;
  unsigned long long ino;
  unsigned mode;
};

/* One slot of a string-keyed open-addressing table. */
struct ent {
  char *key;
  int kind;       /* pending table: the merged kind */
  struct sig sig; /* signature table */
};

struct map {
  struct ent *v;
  size_t cap, n;
};

struct dir {
  char *rel; /* "" for the root */
};

/* Who made the changes of a pending path (fanotify): */
#define ORIGIN_GUEST 1 /* the mount's file server, i.e. the guest */
#define ORIGIN_HOST 2  /* anyone else */
#define MAX_PIDS 8

struct hm_notify_watcher {
  char *root;
  int rootfd, ifd, stopfd;
  int fan; /* fanotify (origin filter), or -1 */
  int pids[MAX_PIDS];
  size_t n_pids;
  hm_notify_sink sink;
  void *user;
  pthread_t thread;
  int thread_started;

  pthread_mutex_t lock; /* stats, ready */
  pthread_cond_t cond;
  hm_notify_stats st;
  int ready;

  /* Thread-only state. */
  struct dir **by_wd;
  size_t wd_cap;
  struct map pending, sigs;
  struct map handles;       /* dir handle (hex) -> kind = wd */
  struct map origin;        /* pending path -> kind = ORIGIN_* bits */
  struct map pidcache;      /* pid (decimal) -> kind = 1 guest, 2 not */
  int64_t first_pending_ms; /* when the oldest pending event came; 0: none */
  int64_t good_since_s;     /* wall clock (s) since which no event was lost */
  int warned_limit;
};

/* ---- table ---- */

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static void map_clear(struct map *m) {
  for (size_t i = 0; i < m->cap; i++)
    free(m->v[i].key);
  free(m->v);
  memset(m, 0, sizeof(*m));
}

static struct ent *map_find(struct map *m, const char *key) {
  if (!m->cap)
    return NULL;
  for (size_t i = hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->v[i].key)
      return NULL;
    if (strcmp(m->v[i].key, key) == 0)
      return &m->v[i];
  }
}

/* The entry for key, added (zeroed, key copied) when missing; NULL: no memory. */
static struct ent *map_get(struct map *m, const char *key) {
  struct ent *e = map_find(m, key);
  if (e)
    return e;
  if ((m->n + 1) * 2 > m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct ent *v = calloc(cap, sizeof(*v));
    if (!v)
      return NULL;
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->v[i].key)
        continue;
      size_t j = hash(m->v[i].key) & (cap - 1);
      while (v[j].key)
        j = (j + 1) & (cap - 1);
      v[j] = m->v[i];
    }
    free(m->v);
    m->v = v;
    m->cap = cap;
  }
  size_t i = hash(key) & (m->cap - 1);
  while (m->v[i].key)
    i = (i + 1) & (m->cap - 1);
  if (!(m->v[i].key = strdup(key)))
    return NULL;
  m->n++;
  return &m->v[i];
}

/* ---- paths beneath the root ---- */

static int open_beneath(int rootfd, const char *rel, int flags) {
  struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
                                    RESOLVE_NO_XDEV};
  int fd = (int)syscall(SYS_openat2, rootfd, rel[0] ? rel : ".", &how, sizeof(how));
  if (fd < 0 && errno == ENOSYS)
    return hm_notify_open_walk(rootfd, rel, flags);
  return fd;
}

/* lstat of rel beneath the root, without following a symlink anywhere. */
static int stat_beneath(int rootfd, const char *rel, struct stat *st) {
  const char *slash = strrchr(rel, '/');
  int dfd = rootfd;
  if (slash) {
    char *parent = strndup(rel, (size_t)(slash - rel));
    if (!parent)
      return -1;
    dfd = open_beneath(rootfd, parent, O_PATH | O_DIRECTORY);
    free(parent);
    if (dfd < 0)
      return -1;
  }
  int r = fstatat(dfd, slash ? slash + 1 : rel, st, AT_SYMLINK_NOFOLLOW);
  int e = errno;
  if (dfd != rootfd)
    close(dfd);
  errno = e;
  return r;
}

static char *join(const char *dir, const char *name) {
  char *s = NULL;
  if (asprintf(&s, "%s%s%s", dir, dir[0] ? "/" : "", name) < 0)
    return NULL;
  return s;
}

/* ---- origin: who made a change (fanotify) ---- */

#define FAN_MASK                                                                                   \
  (FAN_CREATE | FAN_DELETE | FAN_MODIFY | FAN_ATTRIB | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ONDIR | \
   FAN_EVENT_ON_CHILD)

/* A file handle as a table key: its type and bytes in hex. */
static void handle_key(char *buf, size_t size, const struct file_handle *fh) {
  size_t o = (size_t)snprintf(buf, size, "%x:", (unsigned)fh->handle_type);
  for (unsigned i = 0; i < fh->handle_bytes && o + 3 < size; i++)
    o += (size_t)snprintf(buf + o, size - o, "%02x", fh->f_handle[i]);
}

/* Marks the directory fd (watch wd) for fanotify and remembers its handle. */
static void fan_add(hm_notify_watcher *w, int fd, int wd) {
  if (w->fan < 0)
    return;
  if (fanotify_mark(w->fan, FAN_MARK_ADD, FAN_MASK, fd, NULL) < 0)
    return;
  union {
    struct file_handle fh;
    char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  } h;
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mnt;
  if (name_to_handle_at(fd, "", &h.fh, &mnt, AT_EMPTY_PATH) < 0)
    return;
  char key[2 * MAX_HANDLE_SZ + 16];
  handle_key(key, sizeof(key), &h.fh);
  struct ent *e = map_get(&w->handles, key);
  if (e)
    e->kind = wd;
}

static int parent_of(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the name may hold anything, ')' too */
  int ppid = -1;
  if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
    return -1;
  return ppid;
}

/* Is pid the mount's file server or a child of it (up to 4 generations)? */
static int guest_pid(hm_notify_watcher *w, int pid) {
  char key[24];
  snprintf(key, sizeof(key), "%d", pid);
  struct ent *c = map_find(&w->pidcache, key);
  if (c)
    return c->kind == 1;
  int found = 0;
  for (int p = pid, depth = 0; p > 1 && depth < 5 && !found; depth++, p = parent_of(p))
    for (size_t i = 0; i < w->n_pids; i++)
      if (w->pids[i] == p)
        found = 1;
  if ((c = map_get(&w->pidcache, key)))
    c->kind = found ? 1 : 2;
  return found;
}

static void fan_read(hm_notify_watcher *w) {
  if (w->fan < 0)
    return;
  char buf[16384] __attribute__((aligned(__alignof__(struct fanotify_event_metadata))));
  for (;;) {
    ssize_t n = read(w->fan, buf, sizeof(buf));
    if (n <= 0)
      return;
    struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
    for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
      if (m->vers != FANOTIFY_METADATA_VERSION || (m->mask & FAN_Q_OVERFLOW))
        continue;
      char *p = (char *)m + m->metadata_len, *end = (char *)m + m->event_len;
      while (p + sizeof(struct fanotify_event_info_header) <= end) {
        struct fanotify_event_info_header *h = (struct fanotify_event_info_header *)p;
        if (h->len == 0 || p + h->len > end)
          break;
        if (h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME ||
            h->info_type == FAN_EVENT_INFO_TYPE_DFID) {
          struct fanotify_event_info_fid *fid = (struct fanotify_event_info_fid *)h;
          struct file_handle *fh = (struct file_handle *)fid->handle;
          char key[2 * MAX_HANDLE_SZ + 16];
          handle_key(key, sizeof(key), fh);
          struct ent *e = map_find(&w->handles, key);
          int wd = e ? e->kind : -1;
          if (wd >= 0 && (size_t)wd < w->wd_cap && w->by_wd[wd]) {
            const char *name = h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME
                                   ? (const char *)(fh->f_handle + fh->handle_bytes)
                                   : "";
            char *rel = name[0] && strcmp(name, ".") != 0 ? join(w->by_wd[wd]->rel, name)
                                                          : strdup(w->by_wd[wd]->rel);
            struct ent *o = rel ? map_get(&w->origin, rel) : NULL;
            if (o)
              o->kind |= guest_pid(w, m->pid) ? ORIGIN_GUEST : ORIGIN_HOST;
            free(rel);
          }
        }
        p += h->len;
      }
      if (m->fd >= 0)
        close(m->fd);
    }
  }
}

/* ---- pending events ---- */

static void pend(hm_notify_watcher *w, const char *rel, int kind) {
  if (hm_notify_path_check(rel, NULL) < 0)
    return; /* a name the guest would refuse (control characters, too long) */
  struct ent *e = map_get(&w->pending, rel);
  if (!e)
    return;
  int old = e->kind;
  if (kind == HM_NOTIFY_DELETE)
    e->kind = HM_NOTIFY_DELETE;
  else if (kind == HM_NOTIFY_CREATE || kind == HM_NOTIFY_RENAME)
    e->kind = old == HM_NOTIFY_DELETE ? HM_NOTIFY_MODIFY : kind;
  else if (old == 0 || old == HM_NOTIFY_ATTRIB)
    e->kind = kind;
  if (!w->first_pending_ms)
    w->first_pending_ms = hm_now_ms();
}

static void sig_of(const struct stat *st, struct sig *s) {
  s->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
  s->size = (long long)st->st_size;
  s->ino = (unsigned long long)st->st_ino;
  s->mode = (unsigned)st->st_mode;
}

/*
 * Decides whether a pending event goes out. A modify or attrib whose file
 * has the signature we last sent for it changed nothing the guest can see:
 * the echo of the agent's own utimensat (same mtime), or a chmod back and
 * forth. Dropping those is what keeps the agent's poke from looping.
 */
static int keep(hm_notify_watcher *w, const char *rel, int kind) {
  struct ent *o = map_find(&w->origin, rel);
  if (o && o->kind == ORIGIN_GUEST) {
    /* Only the guest (through its file server) touched it: the guest's
     * kernel has told its watchers already. Its signature is kept, so that
     * the echo of it (if fanotify missed one) is dropped too. */
    struct stat st;
    struct ent *s;
    if (kind != HM_NOTIFY_DELETE && stat_beneath(w->rootfd, rel, &st) == 0 &&
        (s = map_get(&w->sigs, rel)))
      sig_of(&st, &s->sig);
    return 0;
  }
  if (kind == HM_NOTIFY_DELETE) {
    struct ent *s = map_find(&w->sigs, rel);
    if (s)
      s->sig.ino = 0, s->sig.mtime_ns = -1;
    return 1;
  }
  struct stat st;
  if (stat_beneath(w->rootfd, rel, &st) < 0)
    return 0; /* gone again already: its delete event follows */
  struct sig now;
  sig_of(&st, &now);
  struct ent *s = map_find(&w->sigs, rel);
  /* Equal, or equal but for the nanoseconds of the mtime, which a guest
   * poke over SFTP (whole seconds) drops. */
  if (s && (kind == HM_NOTIFY_MODIFY || kind == HM_NOTIFY_ATTRIB) && s->sig.size == now.size &&
      s->sig.ino == now.ino && s->sig.mode == now.mode &&
      (s->sig.mtime_ns == now.mtime_ns ||
       (now.mtime_ns % 1000000000 == 0 &&
        s->sig.mtime_ns / 1000000000 == now.mtime_ns / 1000000000)))
    return 0;
  if (!s && w->sigs.n >= MAX_SIGS)
    map_clear(&w->sigs);
  if (s || (s = map_get(&w->sigs, rel)))
    s->sig = now;
  return 1;
}

static void flush(hm_notify_watcher *w) {
  /* Everything fanotify knows about these changes is queued by now: both
   * queues are filled by the same kernel call. */
  fan_read(w);
  hm_notify_event batch[HM_NOTIFY_MAX_BATCH];
  size_t n = 0;
  unsigned long sent = 0, dropped = 0;
  for (size_t i = 0; i < w->pending.cap; i++) {
    struct ent *e = &w->pending.v[i];
    if (!e->key)
      continue;
    if (!keep(w, e->key, e->kind)) {
      dropped++;
      continue;
    }
    batch[n].kind = e->kind;
    batch[n].path = e->key;
    if (++n == HM_NOTIFY_MAX_BATCH) {
      w->sink(w->user, batch, n);
      sent += n;
      n = 0;
    }
  }
  if (n) {
    w->sink(w->user, batch, n);
    sent += n;
  }
  map_clear(&w->pending);
  map_clear(&w->origin);
  if (w->pidcache.n > 4096)
    map_clear(&w->pidcache);
  w->first_pending_ms = 0;
  pthread_mutex_lock(&w->lock);
  w->st.sent += sent;
  w->st.suppressed += dropped;
  pthread_mutex_unlock(&w->lock);
}

/* ---- watches ---- */

static unsigned long read_max_watches(void) {
  unsigned long v = 0;
  FILE *f = fopen("/proc/sys/fs/inotify/max_user_watches", "re");
  if (f) {
    if (fscanf(f, "%lu", &v) != 1)
      v = 0;
    fclose(f);
  }
  return v;
}

static int set_dir(hm_notify_watcher *w, int wd, const char *rel) {
  if ((size_t)wd >= w->wd_cap) {
    size_t cap = w->wd_cap ? w->wd_cap : 256;
    while (cap <= (size_t)wd)
      cap *= 2;
    struct dir **v = realloc(w->by_wd, cap * sizeof(*v));
    if (!v)
      return -1;
    memset(v + w->wd_cap, 0, (cap - w->wd_cap) * sizeof(*v));
    w->by_wd = v;
    w->wd_cap = cap;
  }
  struct dir *d = w->by_wd[wd];
  char *copy = strdup(rel);
  if (!copy)
    return -1;
  if (d) {
    free(d->rel);
    d->rel = copy;
    return 0;
  }
  if (!(d = calloc(1, sizeof(*d)))) {
    free(copy);
    return -1;
  }
  d->rel = copy;
  w->by_wd[wd] = d;
  pthread_mutex_lock(&w->lock);
  w->st.dirs++;
  pthread_mutex_unlock(&w->lock);
  return 0;
}

static void drop_wd(hm_notify_watcher *w, int wd) {
  if (wd < 0 || (size_t)wd >= w->wd_cap || !w->by_wd[wd])
    return;
  free(w->by_wd[wd]->rel);
  free(w->by_wd[wd]);
  w->by_wd[wd] = NULL;
  pthread_mutex_lock(&w->lock);
  w->st.dirs--;
  pthread_mutex_unlock(&w->lock);
}

/* Stops watching rel and everything below it (a directory moved away). */
static void drop_subtree(hm_notify_watcher *w, const char *rel) {
  size_t len = strlen(rel);
  for (size_t i = 0; i < w->wd_cap; i++) {
    struct dir *d = w->by_wd[i];
    if (d && strncmp(d->rel, rel, len) == 0 && (d->rel[len] == '\0' || d->rel[len] == '/')) {
      inotify_rm_watch(w->ifd, (int)i);
      drop_wd(w, (int)i);
    }
  }
}

/*
 * Watches rel and every directory below it. report: the tree is new (made
 * or moved in while we watch), so every entry found is reported as created:
 * files made before the new directory's watch existed are not missed.
 * since_s > 0 (a rescan after an overflow): entries changed since then are
 * reported as modified.
 */
static void walk(hm_notify_watcher *w, const char *top, int report, int64_t since_s) {
  hm_strv q = {0};
  if (hm_strv_push(&q, top) < 0)
    return;
  for (size_t qi = 0; qi < q.n; qi++) {
    const char *rel = q.v[qi];
    int fd = open_beneath(w->rootfd, rel, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
      continue; /* gone, or a symlink: not ours to follow */
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int wd = inotify_add_watch(w->ifd, proc, WATCH_MASK);
    if (wd >= 0) {
      set_dir(w, wd, rel);
      fan_add(w, fd, wd);
    } else if (errno == ENOSPC) {
      unsigned long max = read_max_watches();
      pthread_mutex_lock(&w->lock);
      w->st.unwatched++;
      w->st.max_watches = max;
      pthread_mutex_unlock(&w->lock);
      if (!w->warned_limit) {
        w->warned_limit = 1;
        hm_warn("notify %s: the inotify watch limit is reached "
                "(fs.inotify.max_user_watches=%lu); changes in the directories not watched "
                "are not seen (see hotmount status)",
                w->root, max);
      }
    }
    DIR *dp = fdopendir(fd);
    if (!dp) {
      close(fd);
      continue;
    }
    struct dirent *de;
    while ((de = readdir(dp))) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
        continue;
      char *child = join(rel, de->d_name);
      if (!child)
        continue;
      int isdir = de->d_type == DT_DIR;
      struct stat st;
      int have = 0;
      if (de->d_type == DT_UNKNOWN || since_s > 0) {
        have = fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0;
        if (have)
          isdir = S_ISDIR(st.st_mode);
      }
      if (report)
        pend(w, child, HM_NOTIFY_CREATE);
      else if (since_s > 0 && have &&
               (st.st_ctim.tv_sec >= since_s || st.st_mtim.tv_sec >= since_s))
        pend(w, child, HM_NOTIFY_MODIFY);
      if (isdir && strlen(child) < 4000)
        hm_strv_push(&q, child);
      free(child);
    }
    closedir(dp);
  }
  hm_strv_clear(&q);
}

/* ---- the thread ---- */

static void handle(hm_notify_watcher *w, const struct inotify_event *ev) {
  if (ev->mask & IN_Q_OVERFLOW) {
    pthread_mutex_lock(&w->lock);
    w->st.overflows++;
    pthread_mutex_unlock(&w->lock);
    int64_t since = w->good_since_s - 2;
    hm_warn("notify %s: the inotify queue overflowed; rescanning the share for what changed "
            "since then",
            w->root);
    walk(w, "", 0, since > 0 ? since : 1);
    w->good_since_s = time(NULL);
    return;
  }
  if (ev->wd < 0 || (size_t)ev->wd >= w->wd_cap || !w->by_wd[ev->wd])
    return;
  if (ev->mask & IN_IGNORED) {
    drop_wd(w, ev->wd);
    return;
  }
  const char *dir = w->by_wd[ev->wd]->rel;
  if (!ev->len || !ev->name[0]) {
    /* An event on the directory itself (its own attributes). */
    if ((ev->mask & IN_ATTRIB) && dir[0])
      pend(w, dir, HM_NOTIFY_ATTRIB);
    return;
  }
  char *rel = join(dir, ev->name);
  if (!rel)
    return;
  int isdir = (ev->mask & IN_ISDIR) != 0;
  if (ev->mask & IN_CREATE) {
    pend(w, rel, HM_NOTIFY_CREATE);
    if (isdir)
      walk(w, rel, 1, 0);
  } else if (ev->mask & IN_MOVED_TO) {
    pend(w, rel, HM_NOTIFY_RENAME);
    if (isdir)
      walk(w, rel, 1, 0);
  } else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
    pend(w, rel, HM_NOTIFY_DELETE);
    if (isdir && (ev->mask & IN_MOVED_FROM))
      drop_subtree(w, rel);
  } else if (ev->mask & IN_MODIFY) {
    pend(w, rel, HM_NOTIFY_MODIFY);
  } else if (ev->mask & IN_ATTRIB) {
    pend(w, rel, HM_NOTIFY_ATTRIB);
  }
  free(rel);
}

static void *thread_main(void *arg) {
  hm_notify_watcher *w = arg;
  w->good_since_s = time(NULL);
  w->sink(w->user, NULL, 0);
  walk(w, "", 0, 0);
  pthread_mutex_lock(&w->lock);
  w->ready = 1;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    int timeout = -1;
    if (w->first_pending_ms) {
      int64_t left = w->first_pending_ms + HM_NOTIFY_COALESCE_MS - hm_now_ms();
      timeout = left > 0 ? (int)left : 0;
    }
    struct pollfd p[3] = {{.fd = w->ifd, .events = POLLIN},
                          {.fd = w->stopfd, .events = POLLIN},
                          {.fd = w->fan, .events = POLLIN}};
    int r = poll(p, w->fan >= 0 ? 3 : 2, timeout);
    if (r < 0 && errno != EINTR)
      break;
    if (p[1].revents)
      break;
    /* Read as they come, so the kernel's queue never fills; what they say
     * is used at the next flush. */
    if (w->fan >= 0 && (p[2].revents & POLLIN))
      fan_read(w);
    if (r > 0 && (p[0].revents & POLLIN)) {
      for (;;) {
        ssize_t n = read(w->ifd, buf, sizeof(buf));
        if (n <= 0)
          break;
        for (char *q = buf; q < buf + n;) {
          const struct inotify_event *ev = (const struct inotify_event *)q;
          handle(w, ev);
          q += sizeof(*ev) + ev->len;
        }
        /* A burst: send what is gathered before reading more, so a batch
         * never waits for a writer that does not stop. */
        if (w->pending.n >= HM_NOTIFY_MAX_BATCH * 4)
          break;
      }
    }
    if (w->first_pending_ms && (hm_now_ms() - w->first_pending_ms >= HM_NOTIFY_COALESCE_MS ||
                                w->pending.n >= HM_NOTIFY_MAX_BATCH * 4))
      flush(w);
  }
  pthread_mutex_lock(&w->lock);
  w->st.running = 0;
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

static void watcher_free(hm_notify_watcher *w) {
  if (w->rootfd >= 0)
    close(w->rootfd);
  if (w->ifd >= 0)
    close(w->ifd);
  if (w->stopfd >= 0)
    close(w->stopfd);
  if (w->fan >= 0)
    close(w->fan);
  map_clear(&w->handles);
  map_clear(&w->origin);
  map_clear(&w->pidcache);
  for (size_t i = 0; i < w->wd_cap; i++) {
    if (w->by_wd[i]) {
      free(w->by_wd[i]->rel);
      free(w->by_wd[i]);
    }
  }
  free(w->by_wd);
  map_clear(&w->pending);
  map_clear(&w->sigs);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w->root);
  free(w);
}

int hm_notify_watcher_start(hm_notify_watcher **out, const char *root, hm_notify_sink sink,
                            void *user, hm_error **err) {
  return hm_notify_watcher_start_ex(out, root, NULL, 0, sink, user, err);
}

int hm_notify_watcher_start_ex(hm_notify_watcher **out, const char *root, const int *pids,
                               size_t n_pids, hm_notify_sink sink, void *user, hm_error **err) {
  *out = NULL;
  if (!root || root[0] != '/' || !sink)
    return HM_ERR(err, HM_E_INVALID, "an absolute root and a sink are required");
  hm_notify_watcher *w = calloc(1, sizeof(*w));
  if (!w)
    return HM_ERR_NOMEM(err);
  w->rootfd = w->ifd = w->stopfd = w->fan = -1;
  for (size_t i = 0; i < n_pids && w->n_pids < MAX_PIDS; i++)
    if (pids[i] > 1)
      w->pids[w->n_pids++] = pids[i];
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  w->sink = sink;
  w->user = user;
  int r;
  if (!(w->root = strdup(root))) {
    r = HM_ERR_NOMEM(err);
    goto fail;
  }
  w->rootfd = hm_open_nofollow(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (w->rootfd < 0) {
    r = HM_ERR(err, HM_E_INVALID, "cannot open %s: %s", root, strerror(errno));
    goto fail;
  }
  w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->ifd < 0) {
    r = HM_ERR(err, errno == EMFILE ? HM_E_NOT_READY : HM_E_IO,
               "inotify_init1: %s (fs.inotify.max_user_instances?)", strerror(errno));
    goto fail;
  }
  w->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->stopfd < 0) {
    r = HM_ERR(err, HM_E_IO, "eventfd: %s", strerror(errno));
    goto fail;
  }
  if (w->n_pids) {
    /* Best effort: without it (no CAP_SYS_ADMIN, an old kernel) guest-made
     * changes may come back to the guest once. */
    w->fan = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
                           O_RDONLY | O_CLOEXEC);
    if (w->fan < 0)
      hm_info("notify %s: no fanotify (%s): changes the guest made may be echoed back to it", root,
              strerror(errno));
  }
  w->st.origin_filter = w->fan >= 0;
  w->st.running = 1;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&w->thread, NULL, thread_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e != 0) {
    r = HM_ERR(err, HM_E_IO, "cannot start the watcher thread: %s", strerror(e));
    goto fail;
  }
  w->thread_started = 1;
  *out = w;
  return 0;
fail:
  watcher_free(w);
  return r;
}

void hm_notify_watcher_stop(hm_notify_watcher *w) {
  if (!w)
    return;
  if (w->thread_started) {
    uint64_t one = 1;
    if (write(w->stopfd, &one, sizeof(one)) < 0)
      hm_warn("notify %s: cannot signal the watcher thread: %s", w->root, strerror(errno));
    pthread_join(w->thread, NULL);
  }
  watcher_free(w);
}

void hm_notify_watcher_stats(hm_notify_watcher *w, hm_notify_stats *out) {
  memset(out, 0, sizeof(*out));
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  *out = w->st;
  pthread_mutex_unlock(&w->lock);
}

int hm_notify_watcher_wait_ready(hm_notify_watcher *w, int timeout_ms) {
  int64_t deadline = hm_now_ms() + timeout_ms;
  pthread_mutex_lock(&w->lock);
  while (!w->ready) {
    int64_t left = deadline - hm_now_ms();
    if (left <= 0)
      break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000)
      ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&w->cond, &w->lock, &ts);
  }
  int r = w->ready ? 0 : -ETIMEDOUT;
  pthread_mutex_unlock(&w->lock);
  return r;
}
