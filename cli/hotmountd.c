/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotmountd: one per VM instance. Owns the QMP connection, the registry and
 * the helper processes through libhotmount, and serves the HTTP API on
 * INSTANCE/hotmountd.sock. The GMainLoop here only waits for signals; the
 * library serves requests on its own threads.
 */
#include <hotmount/hotmount.h>

#include "daemon_log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glib-unix.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static FILE *log_file;

static void log_line(int level, const char *msg, void *ud) {
  (void)ud;
  static const char *const names[] = {"", "", "", "error", "warning", "", "info", "debug"};
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", localtime_r(&now, &tm));
  fprintf(log_file, "%s hotmountd[%d] %s: %s\n", ts, (int)getpid(),
          level >= 0 && level <= 7 ? names[level] : "?", msg);
  fflush(log_file);
  daemon_log_check();
}

static gboolean on_signal(gpointer loop) {
  g_main_loop_quit(loop);
  return G_SOURCE_CONTINUE;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: hotmountd INSTANCE [--foreground] [--virtiofsd PATH] [--debug] "
             "[--wait SECONDS]\n"
             "                [--ssh-host HOST] [--ssh-port PORT] [--ssh-user USER]\n"
             "                [--ssh-identity KEYFILE] [--ssh-known-hosts FILE | "
             "--ssh-fingerprint SHA256:...]\n"
             "                [--boot-share HOSTDIR=GUESTDIR]...\n"
             "Serves the hot-mount API of one VM on INSTANCE/hotmountd.sock.\n"
             "The VM must run with the arguments of 'hotmount qemu-args INSTANCE'.\n"
             "--ssh-* settings (for reverse-sshfs mounts) are stored in INSTANCE/ssh.json and\n"
             "used by later starts too.\n"
             "--boot-share (repeatable) declares a share the VM got at boot, mounted in the\n"
             "guest at GUESTDIR: 'hotmount add --type bind' shows directories inside it.\n");
}

/* --boot-share HOSTDIR=GUESTDIR, split at the first '='; the host side is
 * made absolute (the daemon runs from /). */
typedef struct boot_shares {
  char **host, **guest;
  size_t n;
} boot_shares;

static void boot_shares_clear(boot_shares *b) {
  for (size_t i = 0; i < b->n; i++) {
    free(b->host[i]);
    free(b->guest[i]);
  }
  free(b->host);
  free(b->guest);
  memset(b, 0, sizeof(*b));
}

static int boot_share_add(boot_shares *b, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg || eq[1] != '/') {
    fprintf(stderr,
            "hotmountd: --boot-share takes HOSTDIR=GUESTDIR with an absolute GUESTDIR, not '%s'\n",
            arg);
    return -1;
  }
  char *h = strndup(arg, (size_t)(eq - arg));
  char *host = h && h[0] != '/' ? realpath(h, NULL) : h;
  if (!host) {
    fprintf(stderr, "hotmountd: --boot-share %s: %s\n", h ? h : arg, strerror(errno));
    free(h);
    return -1;
  }
  if (host != h)
    free(h);
  char **nh = realloc(b->host, (b->n + 1) * sizeof(*nh));
  if (nh)
    b->host = nh;
  char **ng = nh ? realloc(b->guest, (b->n + 1) * sizeof(*ng)) : NULL;
  if (ng)
    b->guest = ng;
  char *guest = ng ? strdup(eq + 1) : NULL;
  if (!guest) {
    free(host);
    fprintf(stderr, "hotmountd: out of memory\n");
    return -1;
  }
  b->host[b->n] = host;
  b->guest[b->n++] = guest;
  return 0;
}

/* --ssh-* options: merged into INSTANCE/ssh.json (validated, then saved);
 * with that file, the reverse-sshfs backend joins the instance. */
static int ssh_backend(hm_instance *inst, const char *dir, char **set, hm_error **err) {
  static const char *const keys[] = {"host",     "port",       "user",
                                     "identity", "knownHosts", "fingerprint"};
  char *path = NULL;
  hm_ssh_config *cfg = NULL;
  hm_fs_hotplugger *hp = NULL;
  int any = 0, r;
  for (size_t i = 0; i < 6; i++)
    any |= set[i] != NULL;
  if (asprintf(&path, "%s/ssh.json", dir) < 0)
    return HM_E_NOMEM;
  r = hm_ssh_config_load(&cfg, path, err);
  if (r == HM_E_NOT_FOUND && !any) {
    hm_error_free(*err);
    *err = NULL;
    free(path);
    return 0; /* no reverse-sshfs for this instance */
  }
  if (r == HM_E_NOT_FOUND) {
    hm_error_free(*err);
    *err = NULL;
    r = hm_ssh_config_new(&cfg, err);
  }
  for (size_t i = 0; r == 0 && i < 6; i++) {
    if (!set[i])
      continue;
    r = hm_ssh_config_set(cfg, keys[i], set[i], err);
    /* A pinned fingerprint replaces a known_hosts file and the reverse. */
    if (r == 0 && i == 4)
      r = hm_ssh_config_set(cfg, "fingerprint", NULL, err);
    if (r == 0 && i == 5 && !set[4])
      r = hm_ssh_config_set(cfg, "knownHosts", NULL, err);
  }
  if (r == 0)
    r = hm_ssh_config_validate(cfg, err);
  if (r == 0 && any)
    r = hm_ssh_config_save(cfg, path, err);
  if (r == 0)
    r = hm_sshfs_hotplugger_new(&hp, cfg, dir, err);
  if (r == 0)
    r = hm_instance_add_backend(inst, hp, err);
  hm_ssh_config_free(cfg);
  free(path);
  return r;
}

/*
 * The instance directory: created 0700, or, when it exists, trusted only if
 * it is ours and nobody else may write to it. Whoever can write there can
 * swap qmp.sock and agent.sock for their own, and plant symlinks where this
 * daemon (often root) writes its pid file, log and state. Not a symlink
 * itself. Returns the directory fd, or -1 after saying why.
 */
static int open_instance_dir(const char *dir) {
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    fprintf(stderr, "hotmountd: cannot create %s: %s\n", dir, strerror(errno));
    return -1;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR)
      fprintf(stderr,
              "hotmountd: instance directory %s is a symbolic link or not a directory; "
              "give the real directory\n",
              dir);
    else
      fprintf(stderr, "hotmountd: cannot open %s: %s\n", dir, strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) < 0) {
    fprintf(stderr, "hotmountd: cannot stat %s: %s\n", dir, strerror(errno));
  } else if (st.st_uid != geteuid()) {
    fprintf(stderr,
            "hotmountd: instance directory %s is owned by uid %u, not by this user (uid %u): "
            "another user could replace its sockets and files; remove it, or chown it to uid "
            "%u if it is really yours\n",
            dir, (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid());
  } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    fprintf(stderr,
            "hotmountd: instance directory %s is writable by %s (mode %04o): other users could "
            "replace its sockets and files; run chmod 0700 %s\n",
            dir, st.st_mode & S_IWOTH ? "others" : "its group", (unsigned)(st.st_mode & 07777),
            dir);
  } else {
    return fd;
  }
  close(fd);
  return -1;
}

/* Opens (creating 0600) a file that lives across runs (log, pid file) in the
 * instance directory: never through a symlink, and only our own regular
 * file with one link (a hard link to /etc/shadow is no better than a
 * symlink to it). -1 with the reason in why. */
static int open_file_at(int dfd, const char *name, int flags, char *why, size_t len) {
  int fd = openat(dfd, name, flags | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
  struct stat st;
  if (fd < 0) {
    snprintf(why, len, "%s: %s", name,
             errno == ELOOP ? "is a symbolic link; refusing to follow it" : strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1) {
    snprintf(why, len, "%s: not a regular file of ours with a single link; refusing it", name);
    close(fd);
    return -1;
  }
  return fd;
}

/* Tells the parent (which waits in the foreground) how start-up went. */
static void report(int fd, const char *msg) {
  if (fd < 0)
    return;
  ssize_t w = write(fd, msg, strlen(msg));
  (void)w;
  close(fd);
}

/* The error, and for QEMU not answering (the usual first-run mistake) what
 * helps; NULL when there is nothing to add. */
static char *failure_message(const hm_error *err, const char *instance) {
  char *msg = NULL;
  if (hm_error_code(err) != HM_E_NOT_READY ||
      asprintf(&msg,
               "%s\nhint: start the VM with $(hotmount qemu-args %s --memory SIZE) appended; "
               "'hotmount doctor %s' checks a running one",
               hm_error_message(err), instance, instance) < 0)
    return NULL;
  return msg;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"foreground", no_argument, NULL, 'f'},
                                       {"virtiofsd", required_argument, NULL, 'v'},
                                       {"debug", no_argument, NULL, 'd'},
                                       {"wait", required_argument, NULL, 'w'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"ssh-host", required_argument, NULL, 1000},
                                       {"ssh-port", required_argument, NULL, 1001},
                                       {"ssh-user", required_argument, NULL, 1002},
                                       {"ssh-identity", required_argument, NULL, 1003},
                                       {"ssh-known-hosts", required_argument, NULL, 1004},
                                       {"ssh-fingerprint", required_argument, NULL, 1005},
                                       {"boot-share", required_argument, NULL, 1006},
                                       {NULL, 0, NULL, 0}};
  int foreground = 0, debug = 0, wait_s = 10, c;
  const char *virtiofsd = NULL;
  char *ssh_set[6] = {NULL};
  boot_shares shares = {0};
  while ((c = getopt_long(argc, argv, "fv:dw:h", opts, NULL)) != -1) {
    if (c == 1006) {
      if (boot_share_add(&shares, optarg) < 0) {
        boot_shares_clear(&shares);
        return 2;
      }
      continue;
    }
    if (c >= 1000 && c <= 1005) {
      /* Files are stored as absolute paths: the daemon runs from /. */
      free(ssh_set[c - 1000]);
      ssh_set[c - 1000] =
          (c == 1003 || c == 1004) && optarg[0] != '/' ? realpath(optarg, NULL) : strdup(optarg);
      if (!ssh_set[c - 1000]) {
        fprintf(stderr, "hotmountd: %s: %s\n", optarg, strerror(errno));
        return 2;
      }
      continue;
    }
    switch (c) {
    case 'f': foreground = 1; break;
    case 'v': virtiofsd = optarg; break;
    case 'd': debug = 1; break;
    case 'w': wait_s = atoi(optarg); break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (argc - optind != 1) {
    usage(stderr);
    return 2;
  }
  hm_error *err = NULL;
  char *dir = NULL, *sock = NULL, *logpath = NULL;
  /* Every way out frees what main holds: the parent of a background start
   * and refusals too (sanitizer builds check each). */
  int rc = 1, dfd = -1;
  if (hm_instance_dir_resolve(&dir, argv[optind], &err) < 0) {
    fprintf(stderr, "hotmountd: %s\n", hm_error_message(err));
    hm_error_free(err);
    rc = 2;
    goto done;
  }
  /* The directory is held open from here on: its files are opened through
   * this fd, never through a path someone could re-point. */
  dfd = open_instance_dir(dir);
  if (dfd < 0)
    goto done;
  if (asprintf(&sock, "%s/hotmountd.sock", dir) < 0 ||
      asprintf(&logpath, "%s/hotmountd.log", dir) < 0)
    goto done;

  /* In the background, the parent stays until start-up is done, so that
   * `hotmountd NAME && hotmount add NAME ...` works. */
  int ready_fd = -1;
  if (!foreground) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
      goto done;
    pid_t pid = fork();
    if (pid < 0) {
      close(p[0]);
      close(p[1]);
      goto done;
    }
    if (pid > 0) {
      close(p[1]);
      char buf[1024];
      ssize_t n = read(p[0], buf, sizeof(buf) - 1);
      if (n <= 0) {
        fprintf(stderr, "hotmountd: failed to start; see %s\n", logpath);
      } else {
        buf[n] = '\0';
        if (strcmp(buf, "ok") != 0)
          fprintf(stderr, "hotmountd: %s\n", buf);
        else
          rc = 0;
      }
      close(p[0]);
      goto done;
    }
    close(p[0]);
    ready_fd = p[1];
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, 0);
      close(null);
    }
    char why[512];
    int lf = open_file_at(dfd, "hotmountd.log", O_WRONLY | O_APPEND, why, sizeof(why));
    if (lf < 0 || !(log_file = fdopen(lf, "a"))) {
      char msg[600];
      snprintf(msg, sizeof(msg), "cannot open the log file: %s", lf < 0 ? why : strerror(errno));
      report(ready_fd, msg);
      goto done;
    }
    dup2(fileno(log_file), 1);
    dup2(fileno(log_file), 2);
    daemon_log_watch(fileno(log_file), logpath);
  } else {
    log_file = stderr;
  }
  hm_set_log_callback(log_line, debug ? HM_LOG_DEBUG : HM_LOG_INFO, NULL, NULL);

  /* One daemon per instance. Not O_EXCL: the lock lives on the file, so a
   * second daemon must open the same one to find it taken; open_file_at
   * never follows a symlink and checks it is our own regular file before
   * the ftruncate below. */
  char why[512];
  int lfd = open_file_at(dfd, "hotmountd.pid", O_RDWR, why, sizeof(why));
  if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) < 0) {
    char msg[700];
    if (lfd < 0)
      snprintf(msg, sizeof(msg), "cannot open the pid file: %s", why);
    else
      snprintf(msg, sizeof(msg), "another hotmountd already serves %s", dir);
    fprintf(log_file, "hotmountd: %s\n", msg);
    report(ready_fd, msg);
    if (lfd >= 0)
      close(lfd);
    goto done;
  }
  if (ftruncate(lfd, 0) == 0)
    dprintf(lfd, "%d\n", (int)getpid());

  hm_qemu_config *cfg = NULL;
  hm_fs_hotplugger *hp = NULL;
  hm_instance *inst = NULL;
  hm_server *srv = NULL;
  char *fail_msg = NULL;
  if (hm_qemu_config_new(&cfg, dir, &err) < 0 ||
      (virtiofsd && hm_qemu_config_set_virtiofsd(cfg, virtiofsd, &err) < 0))
    goto fail;
  /* QEMU may still be starting: give its QMP socket a moment to appear. */
  for (int64_t tries = 0;; tries++) {
    if (hm_qemu_hotplugger_new(&hp, cfg, &err) == 0)
      break;
    if (hm_error_code(err) != HM_E_NOT_READY || tries >= wait_s * 10)
      goto fail;
    hm_error_free(err);
    err = NULL;
    g_usleep(100000);
  }
  if (hm_instance_new(&inst, dir, hp, &err) < 0)
    goto fail;
  hp = NULL;
  if (ssh_backend(inst, dir, ssh_set, &err) < 0)
    goto fail;
  /* Always there, with no share too: a bind add then says what is missing. */
  if (hm_bind_hotplugger_new(&hp, (const char *const *)shares.host,
                             (const char *const *)shares.guest, shares.n, &err) < 0 ||
      hm_instance_add_backend(inst, hp, &err) < 0) {
    hp = NULL;
    goto fail;
  }
  hp = NULL;
  /* Settle what an earlier daemon left behind before taking requests. */
  if (hm_instance_reconcile(inst, &err) < 0)
    goto fail;
  if (hm_server_new(&srv, inst, sock, &err) < 0)
    goto fail;
  {
    GMainLoop *loop = g_main_loop_new(NULL, FALSE);
    g_unix_signal_add(SIGTERM, on_signal, loop);
    g_unix_signal_add(SIGINT, on_signal, loop);
    signal(SIGPIPE, SIG_IGN);
    log_line(HM_LOG_INFO, "serving", NULL);
    fprintf(log_file, "hotmountd: serving %s on %s\n", dir, sock);
    fflush(log_file);
    report(ready_fd, "ok");
    ready_fd = -1;
    g_main_loop_run(loop);
    g_main_loop_unref(loop);
  }
  rc = 0;
  goto out;
fail:
  fail_msg = failure_message(err, argv[optind]);
  if (!fail_msg)
    fail_msg = strdup(hm_error_message(err));
  fprintf(log_file, "hotmountd: %s\n", fail_msg ? fail_msg : "failed to start");
out:
  /* Mounts outlive the daemon: the next one picks them up from state.json. */
  hm_server_free(srv);
  hm_instance_free(inst);
  hm_fs_hotplugger_free(hp);
  hm_qemu_config_free(cfg);
  hm_error_free(err);
  /* Only the file we locked: the name may no longer be ours to remove if
   * it was replaced, and removing through the held directory fd keeps it
   * inside the instance directory. */
  struct stat lst, fst;
  if (fstatat(dfd, "hotmountd.pid", &lst, AT_SYMLINK_NOFOLLOW) == 0 && fstat(lfd, &fst) == 0 &&
      lst.st_dev == fst.st_dev && lst.st_ino == fst.st_ino)
    unlinkat(dfd, "hotmountd.pid", 0);
  close(lfd);
  /* Told only now, with the lock released: a caller that starts another
   * daemon right after this one failed must not find the instance taken. */
  if (fail_msg) {
    report(ready_fd, fail_msg);
    free(fail_msg);
  }
done:
  if (dfd >= 0)
    close(dfd);
  free(dir);
  free(sock);
  free(logpath);
  for (size_t i = 0; i < 6; i++)
    free(ssh_set[i]);
  boot_shares_clear(&shares);
  return rc;
}
