/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The instance directory and the host paths against other local users:
 * directories of another owner or writable by others are refused, files are
 * never written through a symlink planted in the directory, the QMP and agent
 * sockets are refused when another user serves them, host directories are
 * resolved once (a swap is caught), and shares may not nest or contain the
 * instance directory; mount targets the guest lists are only adopted in
 * normal form. Runs as root (it chowns to nobody and forks a child
 * that becomes nobody); skipped otherwise.
 */
#include "agent_client.h"
#include "driver_internal.h"
#include "instance_internal.h"
#include "mount_internal.h"
#include "qmp.h"
#include "state.h"

#include <hotmount/sshfs.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static char tmpdir[PATH_MAX];

static void setup(void) {
  strcpy(tmpdir, "/tmp/hm-instdir-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static char *in_tmp(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", tmpdir, name), 0);
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

/* The whole file (at most 4 KiB), for "unchanged" checks. */
static char *read_text(const char *path) {
  static char buf[4096];
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

#define EXPECT_ERR(call, code, needle)                                                             \
  do {                                                                                             \
    hm_error *e_ = NULL;                                                                           \
    int r_ = (call);                                                                               \
    ck_assert_msg(r_ == (code), "%s: got %d, want %d (%s)", #call, r_, (code),                     \
                  e_ ? hm_error_message(e_) : "no error");                                         \
    ck_assert_msg(e_ &&strstr(hm_error_message(e_), (needle)), "message '%s' lacks '%s'",          \
                  e_ ? hm_error_message(e_) : "(none)", (needle));                                 \
    hm_error_free(e_);                                                                             \
  } while (0)

/* A backend that mounts "in the guest" itself (so no agent is needed) and
 * does nothing: enough for the instance's own checks around it. */
static int fake_attach(void *impl, const hm_mount_spec *spec, hm_attachment *att, hm_error **err) {
  (void)impl;
  (void)spec;
  return hm_attachment_set_tag(att, hm_attachment_get_id(att), err);
}
static int fake_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)impl;
  (void)att;
  (void)err;
  return 0;
}
static int fake_umount(void *impl, hm_attachment *att, unsigned flags, hm_error **err) {
  (void)impl;
  (void)att;
  (void)flags;
  (void)err;
  return 0;
}
static int reattached;
static int fake_reattach(void *impl, const hm_mount_spec *spec, hm_attachment *att,
                         hm_error **err) {
  reattached++;
  return fake_attach(impl, spec, att, err);
}

static hm_fs_hotplugger *fake_backend(void) {
  static const hm_fs_hotplugger_ops ops = {.struct_size = sizeof(ops),
                                           .name = "fake",
                                           .types = 1u << HM_TYPE_VIRTIOFS,
                                           .attach = fake_attach,
                                           .detach = fake_detach,
                                           .flags = HM_HOTPLUGGER_GUEST_MOUNTS,
                                           .guest_umount = fake_umount,
                                           .reattach = fake_reattach};
  hm_fs_hotplugger *hp = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &ops, NULL, NULL), 0);
  return hp;
}

static int add(hm_instance *inst, const char *host, const char *guest, int writable,
               hm_error **err) {
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, host, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(s, guest, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_writable(s, writable, NULL), 0);
  int r = hm_instance_add(inst, NULL, s, err);
  hm_mount_spec_free(s);
  return r;
}

/* ------------------------------------------------ the directory itself */

START_TEST(test_dir_owner_and_mode) {
  char *d = in_tmp("inst");
  ck_assert_int_eq(mkdir(d, 0700), 0);
  int fd = hm_dir_open_private(d, 0, NULL);
  ck_assert_int_ge(fd, 0);
  close(fd);
  /* 0755 is fine: nobody else can write. */
  ck_assert_int_eq(chmod(d, 0755), 0);
  fd = hm_dir_open_private(d, 0, NULL);
  ck_assert_int_ge(fd, 0);
  close(fd);

  ck_assert_int_eq(chmod(d, 0777), 0);
  EXPECT_ERR(hm_dir_open_private(d, 0, &e_), HM_E_PERM, "writable by others (mode 0777)");
  EXPECT_ERR(hm_dir_open_private(d, 0, &e_), HM_E_PERM, "chmod 0700");
  ck_assert_int_eq(chmod(d, 0770), 0);
  EXPECT_ERR(hm_dir_open_private(d, 0, &e_), HM_E_PERM, "writable by its group (mode 0770)");
  ck_assert_int_eq(chmod(d, 0700), 0);
  ck_assert_int_eq(chown(d, NOBODY, NOBODY), 0);
  EXPECT_ERR(hm_dir_open_private(d, 0, &e_), HM_E_PERM, "owned by uid 65534");

  /* The library's own entry point refuses it too, before reading state. */
  hm_instance *inst = NULL;
  EXPECT_ERR(hm_instance_new(&inst, d, fake_backend(), &e_), HM_E_PERM, "owned by uid 65534");
  ck_assert_ptr_null(inst);
  ck_assert_int_eq(chown(d, 0, 0), 0);
  ck_assert_int_eq(chmod(d, 0777), 0);
  EXPECT_ERR(hm_instance_new(&inst, d, fake_backend(), &e_), HM_E_PERM, "writable by others");

  /* A symlink to a good directory is not taken either. */
  ck_assert_int_eq(chmod(d, 0700), 0);
  char *l = in_tmp("link");
  ck_assert_int_eq(symlink(d, l), 0);
  EXPECT_ERR(hm_dir_open_private(l, 0, &e_), HM_E_PERM, "is a symbolic link");

  /* create: a new directory is made 0700 whatever the umask. */
  char *n = in_tmp("new");
  mode_t old = umask(0);
  fd = hm_dir_open_private(n, 1, NULL);
  umask(old);
  ck_assert_int_ge(fd, 0);
  close(fd);
  struct stat st;
  ck_assert_int_eq(stat(n, &st), 0);
  ck_assert_int_eq(st.st_mode & 07777, 0700);
  free(d);
  free(l);
  free(n);
}
END_TEST

/* state.json.tmp-PID planted as a symlink to a file: saving the state
 * replaces the symlink, the file it pointed to stays as it was. */
START_TEST(test_state_tmp_symlink) {
  char *victim = in_tmp("victim"), *state = in_tmp("state.json"), tmp[PATH_MAX];
  write_text(victim, "precious\n");
  snprintf(tmp, sizeof(tmp), "%s.tmp-%d", state, (int)getpid());
  ck_assert_int_eq(symlink(victim, tmp), 0);
  hm_error *err = NULL;
  ck_assert_msg(hm_state_save(state, 3, NULL, NULL, 0, &err) == 0, "%s", hm_error_message(err));
  ck_assert_str_eq(read_text(victim), "precious\n");
  struct stat st;
  ck_assert_int_eq(lstat(state, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  ck_assert_int_eq(st.st_mode & 07777, 0600);
  ck_assert_ptr_nonnull(strstr(read_text(state), "\"nextId\":3"));
  ck_assert_int_eq(lstat(tmp, &st), -1); /* no temporary left behind */

  /* A hard link there is not written through either. */
  ck_assert_int_eq(link(victim, tmp), 0);
  ck_assert_int_eq(hm_state_save(state, 4, NULL, NULL, 0, NULL), 0);
  ck_assert_str_eq(read_text(victim), "precious\n");

  /* state.json itself a symlink: not read through (and not set aside). */
  ck_assert_int_eq(unlink(state), 0);
  ck_assert_int_eq(symlink(victim, state), 0);
  unsigned next;
  char *boot = NULL;
  hm_entry **entries = NULL;
  size_t n = 0;
  EXPECT_ERR(hm_state_load(state, &next, &boot, &entries, &n, &e_), HM_E_PERM, "symbolic link");
  ck_assert_int_eq(lstat(state, &st), 0);
  ck_assert(S_ISLNK(st.st_mode));
  ck_assert_str_eq(read_text(victim), "precious\n");
  free(victim);
  free(state);
}
END_TEST

/* ssh.json names the login key and the trusted hosts: not read through a
 * symlink, and saved through an O_EXCL temporary like the state. */
START_TEST(test_ssh_json_symlink) {
  char *victim = in_tmp("victim"), *cfgp = in_tmp("ssh.json"), tmp[PATH_MAX];
  write_text(victim, "{\"host\": \"evil.example\"}\n");
  ck_assert_int_eq(symlink(victim, cfgp), 0);
  hm_ssh_config *cfg = NULL;
  EXPECT_ERR(hm_ssh_config_load(&cfg, cfgp, &e_), HM_E_PERM, "symbolic link");
  ck_assert_ptr_null(cfg);
  ck_assert_int_eq(unlink(cfgp), 0);
  snprintf(tmp, sizeof(tmp), "%s.tmp-%d", cfgp, (int)getpid());
  ck_assert_int_eq(symlink(victim, tmp), 0);
  ck_assert_int_eq(hm_ssh_config_new(&cfg, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(cfg, "host", "127.0.0.1", NULL), 0);
  hm_error *err = NULL;
  ck_assert_msg(hm_ssh_config_save(cfg, cfgp, &err) == 0, "%s", hm_error_message(err));
  ck_assert_str_eq(read_text(victim), "{\"host\": \"evil.example\"}\n");
  hm_ssh_config_free(cfg);
  cfg = NULL;
  ck_assert_int_eq(hm_ssh_config_load(&cfg, cfgp, NULL), 0);
  ck_assert_str_eq(hm_ssh_config_get(cfg, "host"), "127.0.0.1");
  hm_ssh_config_free(cfg);
  free(victim);
  free(cfgp);
}
END_TEST

/* ---------------------------------------------------------- the sockets */

/* A child that becomes nobody, then listens on path (in a directory nobody
 * can write to) and accepts connections, greeting each like QEMU. Returns
 * once the socket exists. */
static pid_t listen_as_nobody(const char *path) {
  int ready[2];
  ck_assert_int_eq(pipe(ready), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(ready[0]);
    if (setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
      _exit(2);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    umask(0077);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0)
      _exit(3);
    if (write(ready[1], "x", 1) != 1)
      _exit(4);
    for (;;) {
      int c = accept(fd, NULL, NULL);
      if (c < 0)
        _exit(5);
      static const char greet[] = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
      /* The client under test may have hung up already (it refuses the
       * peer before reading): that must not end this server. */
      ssize_t w = write(c, greet, sizeof(greet) - 1);
      (void)w;
      close(c);
    }
  }
  close(ready[1]);
  char b;
  ck_assert_int_eq(read(ready[0], &b, 1), 1);
  close(ready[0]);
  return pid;
}

static void stop_child(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

START_TEST(test_qmp_peer_other_user) {
  /* The socket's directory must let nobody in to bind. */
  ck_assert_int_eq(chmod(tmpdir, 0755), 0);
  char *d = in_tmp("q");
  ck_assert_int_eq(mkdir(d, 0777), 0);
  ck_assert_int_eq(chmod(d, 0777), 0);
  char *sock = NULL;
  ck_assert_int_ge(asprintf(&sock, "%s/qmp.sock", d), 0);
  pid_t child = listen_as_nobody(sock);
  hm_qmp *q = NULL;
  /* The file is nobody's: refused before connecting. */
  EXPECT_ERR(hm_qmp_connect(&q, sock, 2000, &e_), HM_E_PERM, "belongs to uid 65534");
  ck_assert_ptr_null(q);
  /* Made to look like ours: the peer's credentials still say nobody. */
  ck_assert_int_eq(lchown(sock, 0, 0), 0);
  EXPECT_ERR(hm_qmp_connect(&q, sock, 2000, &e_), HM_E_PERM, "served by uid 65534");
  ck_assert_ptr_null(q);
  /* The agent channel: the same two checks. */
  hm_agent *a = NULL;
  EXPECT_ERR(hm_agent_connect(&a, sock, 2000, &e_), HM_E_PERM, "served by uid 65534");
  ck_assert_ptr_null(a);
  ck_assert_int_eq(lchown(sock, NOBODY, NOBODY), 0);
  EXPECT_ERR(hm_agent_connect(&a, sock, 2000, &e_), HM_E_PERM, "belongs to uid 65534");
  stop_child(child);

  /* A symlink where the socket should be is not followed. */
  char *l = in_tmp("qmp-link.sock");
  ck_assert_int_eq(symlink(sock, l), 0);
  EXPECT_ERR(hm_qmp_connect(&q, l, 2000, &e_), HM_E_PERM, "symbolic link");
  free(l);
  free(sock);
  free(d);
}
END_TEST

START_TEST(test_qmp_socket_mode) {
  char *sock = in_tmp("qmp.sock");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  ck_assert_int_eq(chmod(sock, 0777), 0);
  hm_qmp *q = NULL;
  EXPECT_ERR(hm_qmp_connect(&q, sock, 500, &e_), HM_E_PERM, "can be connected to by any user");
  close(fd);
  free(sock);
}
END_TEST

/* The race-free listener: the name ends up a 0600 socket that accepts, and
 * a name already there (even a symlink) is replaced, never followed. */
START_TEST(test_unix_listen_at) {
  char *victim = in_tmp("victim"), *name = in_tmp("x.sock");
  write_text(victim, "precious\n");
  ck_assert_int_eq(symlink(victim, name), 0);
  int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY);
  ck_assert_int_ge(dfd, 0);
  mode_t old = umask(0);
  hm_error *err = NULL;
  int lfd = hm_unix_listen_at(dfd, "x.sock", 1, &err);
  umask(old);
  ck_assert_msg(lfd >= 0, "%s", hm_error_message(err));
  struct stat st;
  ck_assert_int_eq(lstat(name, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_int_eq(st.st_mode & 07777, 0600);
  ck_assert_str_eq(read_text(victim), "precious\n");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", name);
  int c = socket(AF_UNIX, SOCK_STREAM, 0);
  ck_assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
  int s = accept(lfd, NULL, NULL);
  ck_assert_int_ge(s, 0);
  ck_assert_int_eq(hm_unix_peer_check(c, "x.sock", NULL), 0);
  close(s);
  close(c);
  close(lfd);
  /* Nothing but the socket and the victim is left in the directory. */
  ck_assert_int_eq(fstatat(dfd, ".", &st, 0), 0);
  ck_assert_int_eq(st.st_nlink, 2);
  close(dfd);
  free(victim);
  free(name);
}
END_TEST

/* ----------------------------------------------------------- host paths */

START_TEST(test_host_path_resolved_once) {
  char *share = in_tmp("share"), *moved = in_tmp("share.old"), *other = in_tmp("other");
  ck_assert_int_eq(mkdir(share, 0755), 0);
  ck_assert_int_eq(mkdir(other, 0755), 0);
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, share, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(s, "/mnt/s", NULL), 0);
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  struct stat st;
  ck_assert_int_eq(stat(share, &st), 0);
  ck_assert(s->host_dev == (unsigned long long)st.st_dev);
  ck_assert(s->host_ino == (unsigned long long)st.st_ino);
  ck_assert_int_eq(hm_host_path_verify(s, NULL), 0);
  /* Swapped for a symlink to another directory. */
  ck_assert_int_eq(rename(share, moved), 0);
  ck_assert_int_eq(symlink(other, share), 0);
  EXPECT_ERR(hm_host_path_verify(s, &e_), HM_E_INVALID, "symbolic link");
  /* Swapped for another directory of the same name. */
  ck_assert_int_eq(unlink(share), 0);
  ck_assert_int_eq(mkdir(share, 0755), 0);
  EXPECT_ERR(hm_host_path_verify(s, &e_), HM_E_INVALID, "is now another directory");
  /* A parent component swapped for a symlink (to a tree with the same
   * names) is caught as well. */
  char *p = in_tmp("p"), *pold = in_tmp("p.old"), *pdir = in_tmp("p/d"), *alt = in_tmp("alt"),
       *altd = in_tmp("alt/d");
  ck_assert_int_eq(mkdir(p, 0755), 0);
  ck_assert_int_eq(mkdir(pdir, 0755), 0);
  ck_assert_int_eq(mkdir(alt, 0755), 0);
  ck_assert_int_eq(mkdir(altd, 0755), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, pdir, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  ck_assert_int_eq(rename(p, pold), 0);
  ck_assert_int_eq(symlink(alt, p), 0);
  EXPECT_ERR(hm_host_path_verify(s, &e_), HM_E_INVALID, "symbolic link");
  /* The identity survives the state file. */
  char *state = in_tmp("state.json");
  hm_entry e = {.id = "hm-1", .spec = s, .state = HM_STATE_MOUNTED};
  hm_entry *list[] = {&e};
  ck_assert_int_eq(hm_state_save(state, 2, NULL, list, 1, NULL), 0);
  unsigned next;
  char *boot = NULL;
  hm_entry **out = NULL;
  size_t n = 0;
  ck_assert_int_eq(hm_state_load(state, &next, &boot, &out, &n, NULL), 0);
  ck_assert_int_eq(n, 1);
  ck_assert(out[0]->spec->host_dev == s->host_dev && out[0]->spec->host_ino == s->host_ino);
  hm_inst_entry_free(out[0]);
  free(out);
  hm_mount_spec_free(s);
  free(share);
  free(moved);
  free(other);
  free(p);
  free(pold);
  free(pdir);
  free(alt);
  free(altd);
  free(state);
}
END_TEST

/* openat2 and the walk used where the kernel has no openat2 agree: a
 * symlink in any component is ELOOP, anything else opens. */
START_TEST(test_open_nofollow_walk) {
  char *a = in_tmp("a"), *ab = in_tmp("a/b"), *l = in_tmp("l"), *lb = in_tmp("l/b"),
       *f = in_tmp("a/b/f"), *lf = in_tmp("a/b/lf");
  ck_assert_int_eq(mkdir(a, 0755), 0);
  ck_assert_int_eq(mkdir(ab, 0755), 0);
  ck_assert_int_eq(symlink(a, l), 0);
  write_text(f, "x");
  ck_assert_int_eq(symlink(f, lf), 0);
  int (*const open_fn[])(const char *, int) = {hm_open_nofollow, hm_open_nofollow_walk};
  for (int i = 0; i < 2; i++) {
    int fd = open_fn[i](ab, O_PATH | O_DIRECTORY);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_ge(fd = open_fn[i]("/", O_PATH | O_DIRECTORY), 0);
    close(fd);
    ck_assert_int_ge(fd = open_fn[i](f, O_RDONLY), 0);
    close(fd);
    errno = 0;
    ck_assert_int_eq(open_fn[i](lb, O_PATH | O_DIRECTORY), -1); /* a parent is a link */
    ck_assert_int_eq(errno, ELOOP);
    errno = 0;
    ck_assert_int_eq(open_fn[i](l, O_PATH | O_DIRECTORY), -1); /* the last one is */
    ck_assert_int_eq(errno, ELOOP);
    errno = 0;
    ck_assert_int_eq(open_fn[i](lf, O_RDONLY), -1);
    ck_assert_int_eq(errno, ELOOP);
    errno = 0;
    ck_assert_int_eq(open_fn[i](f, O_PATH | O_DIRECTORY), -1);
    ck_assert_int_eq(errno, ENOTDIR);
  }
  free(a);
  free(ab);
  free(l);
  free(lb);
  free(f);
  free(lf);
}
END_TEST

START_TEST(test_shares_overlap_and_reserved) {
  char *inst_dir = in_tmp("inst"), *share = in_tmp("share"), *sub = in_tmp("share/sub");
  ck_assert_int_eq(mkdir(inst_dir, 0700), 0);
  ck_assert_int_eq(mkdir(share, 0755), 0);
  ck_assert_int_eq(mkdir(sub, 0755), 0);
  hm_instance *inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, fake_backend(), NULL), 0);
  hm_error *err = NULL;
  ck_assert_msg(add(inst, share, "/mnt/a", 0, &err) == 0, "%s", hm_error_message(err));
  /* Inside an existing share, and containing one: refused. */
  EXPECT_ERR(add(inst, sub, "/mnt/b", 0, &e_), HM_E_EXISTS, "overlaps");
  EXPECT_ERR(add(inst, tmpdir, "/mnt/c", 0, &e_), HM_E_INVALID, "contains the instance directory");
  /* The same directory again, elsewhere: allowed. */
  ck_assert_msg(add(inst, share, "/mnt/d", 1, &err) == 0, "%s", hm_error_message(err));
  /* The instance directory itself, or anything containing it, read-only
   * too. */
  EXPECT_ERR(add(inst, inst_dir, "/mnt/e", 0, &e_), HM_E_INVALID,
             "contains the instance directory");
  /* The home directory of the daemon's user: only writable is refused. */
  struct passwd *pw = getpwuid(geteuid());
  ck_assert_ptr_nonnull(pw);
  char *home = realpath(pw->pw_dir, NULL);
  if (home && strcmp(home, "/") != 0 && strncmp(home, tmpdir, strlen(tmpdir)) != 0) {
    EXPECT_ERR(add(inst, home, "/mnt/h", 1, &e_), HM_E_INVALID, "contains the home directory");
    ck_assert_msg(add(inst, home, "/mnt/h", 0, &err) == 0, "%s", hm_error_message(err));
  }
  free(home);
  /* $HOME counts as well, where it differs from the account's home. */
  char *fakehome = in_tmp("home"), *saved = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
  ck_assert_int_eq(mkdir(fakehome, 0755), 0);
  setenv("HOME", fakehome, 1);
  EXPECT_ERR(add(inst, fakehome, "/mnt/i", 1, &e_), HM_E_INVALID, "contains the home directory");
  if (saved)
    setenv("HOME", saved, 1);
  else
    unsetenv("HOME");
  free(saved);
  free(fakehome);
  hm_instance_free(inst);
  free(inst_dir);
  free(share);
  free(sub);
}
END_TEST

/* A restarted daemon finds the shared directory swapped: the mount is not
 * re-established, it is broken with the reason. */
START_TEST(test_reconcile_swapped_share) {
  char *inst_dir = in_tmp("inst"), *share = in_tmp("share"), *moved = in_tmp("share.old"),
       *other = in_tmp("other");
  ck_assert_int_eq(mkdir(inst_dir, 0700), 0);
  ck_assert_int_eq(mkdir(share, 0755), 0);
  ck_assert_int_eq(mkdir(other, 0755), 0);
  hm_instance *inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, fake_backend(), NULL), 0);
  ck_assert_int_eq(add(inst, share, "/mnt/a", 1, NULL), 0);
  hm_instance_free(inst);

  ck_assert_int_eq(rename(share, moved), 0);
  ck_assert_int_eq(symlink(other, share), 0);
  inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, fake_backend(), NULL), 0);
  reattached = 0;
  ck_assert_int_eq(hm_instance_reconcile(inst, NULL), 0);
  ck_assert_int_eq(reattached, 0);
  hm_mount_list *l = NULL;
  ck_assert_int_eq(hm_instance_list(inst, &l, NULL), 0);
  ck_assert_int_eq(hm_mount_list_count(l), 1);
  const hm_mount *m = hm_mount_list_get(l, 0);
  ck_assert_int_eq(hm_mount_get_state(m), HM_STATE_BROKEN);
  ck_assert_msg(strstr(hm_mount_get_reason(m), "symbolic link"), "%s", hm_mount_get_reason(m));
  hm_mount_list_free(l);
  hm_instance_free(inst);

  /* Put back: re-established. */
  ck_assert_int_eq(unlink(share), 0);
  ck_assert_int_eq(rename(moved, share), 0);
  inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, fake_backend(), NULL), 0);
  ck_assert_int_eq(hm_instance_reconcile(inst, NULL), 0);
  hm_instance_free(inst);
  free(inst_dir);
  free(share);
  free(moved);
  free(other);
}
END_TEST

/* ---------------------------------------- what the guest reports */

/* A scripted guest agent on INSTANCE/agent.sock: answers hello, and list
 * with the mounts in `listed` (tag hm-5 at a normal path, hm-6 at one that
 * is not); anything else gets ok. */
typedef struct script_agent {
  int lfd;
  pthread_t t;
} script_agent;

static void answer(int fd, int op, hm_agent_response *resp) {
  char *line = NULL;
  ck_assert_int_eq(hm_agent_response_encode(&line, op, resp, NULL), 0);
  ck_assert_int_eq(write(fd, line, strlen(line)), (ssize_t)strlen(line));
  free(line);
}

static void *script_agent_main(void *arg) {
  script_agent *a = arg;
  int c;
  while ((c = accept(a->lfd, NULL, NULL)) >= 0) {
    FILE *f = fdopen(c, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (f && (n = getline(&line, &cap, f)) > 0) {
      hm_agent_request req;
      if (hm_agent_request_decode(&req, line, (size_t)n - 1, NULL) < 0) {
        hm_agent_request_clear(&req);
        continue;
      }
      hm_agent_response resp = {.id = req.id, .ok = 1};
      hm_agent_mount_info listed[] = {
          {.target = "/mnt/good", .fstype = "virtiofs", .source = "hm-5", .options = "ro"},
          {.target = "/mnt//bad/", .fstype = "virtiofs", .source = "hm-6", .options = "ro"},
          {.target = "/etc", .fstype = "virtiofs", .source = "hm-7", .options = "ro"}};
      char *caps[] = {NULL};
      if (req.op == HM_AGENT_OP_HELLO) {
        resp.major = 1;
        resp.minor = 1;
        resp.agent_name = "script";
        resp.agent_version = "0";
        resp.capabilities = caps;
        resp.boot_id = "b1";
      } else if (req.op == HM_AGENT_OP_LIST) {
        resp.mounts = listed;
        resp.n_mounts = 3;
        resp.boot_id = "b1";
      }
      answer(c, req.op, &resp);
      hm_agent_request_clear(&req);
    }
    free(line);
    if (f)
      fclose(f);
  }
  return NULL;
}

static void script_agent_start(script_agent *a, const char *dir) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agent.sock", dir);
  a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(a->lfd, 0);
  ck_assert_int_eq(bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(a->lfd, 4), 0);
  ck_assert_int_eq(pthread_create(&a->t, NULL, script_agent_main, a), 0);
}

static void script_agent_stop(script_agent *a) {
  shutdown(a->lfd, SHUT_RDWR);
  close(a->lfd);
  pthread_join(a->t, NULL);
}

/* The backend holds three attachments the registry lost, all whole. */
static char *scan_hosts[3];
static int detached_ids;
static int scan3(void *impl, hm_attachment ***out, size_t *n, hm_error **err) {
  (void)impl;
  (void)err;
  hm_attachment **v = calloc(3, sizeof(*v));
  for (int i = 0; i < 3; i++) {
    char id[16];
    snprintf(id, sizeof(id), "hm-%d", 5 + i);
    ck_assert_int_eq(hm_attachment_new(&v[i], id, NULL), 0);
    hm_attachment_set_tag(v[i], id, NULL);
    hm_attachment_set_data(v[i], "hostPath", scan_hosts[i], NULL);
    hm_attachment_set_data(v[i], "writable", "0", NULL);
  }
  *out = v;
  *n = 3;
  return 0;
}
static int whole(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  (void)impl;
  (void)att;
  (void)reason;
  (void)err;
  return 1;
}
static int count_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)impl;
  (void)att;
  (void)err;
  detached_ids++;
  return 0;
}

START_TEST(test_reconcile_guest_targets) {
  char *inst_dir = in_tmp("inst");
  ck_assert_int_eq(mkdir(inst_dir, 0700), 0);
  for (int i = 0; i < 3; i++) {
    char name[16];
    snprintf(name, sizeof(name), "s%d", i);
    scan_hosts[i] = in_tmp(name);
    ck_assert_int_eq(mkdir(scan_hosts[i], 0755), 0);
  }
  static const hm_fs_hotplugger_ops ops = {.struct_size = sizeof(ops),
                                           .name = "scan",
                                           .types = 1u << HM_TYPE_VIRTIOFS,
                                           .attach = fake_attach,
                                           .detach = count_detach,
                                           .check = whole,
                                           .scan = scan3};
  hm_fs_hotplugger *hp = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &ops, NULL, NULL), 0);
  script_agent a;
  script_agent_start(&a, inst_dir);
  hm_instance *inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, hp, NULL), 0);
  detached_ids = 0;
  hm_error *err = NULL;
  ck_assert_msg(hm_instance_reconcile(inst, &err) == 0, "%s", hm_error_message(err));
  /* Only the mount at a normal, allowed path is adopted; the other two
   * are not taken at the guest's word (and are cleaned up). */
  hm_mount_list *l = NULL;
  ck_assert_int_eq(hm_instance_list(inst, &l, NULL), 0);
  ck_assert_int_eq(hm_mount_list_count(l), 1);
  ck_assert_str_eq(hm_mount_get_guest_path(hm_mount_list_get(l, 0)), "/mnt/good");
  ck_assert_str_eq(hm_mount_get_id(hm_mount_list_get(l, 0)), "hm-5");
  ck_assert_int_eq(detached_ids, 2);
  hm_mount_list_free(l);
  hm_instance_free(inst);
  script_agent_stop(&a);
  for (int i = 0; i < 3; i++)
    free(scan_hosts[i]);
  free(inst_dir);
}
END_TEST

/* Two backends: reconcile must scan both and check, adopt and settle each
 * entry with its own backend. The main one (virtiofs) calls everything
 * broken; the second (9p) holds hm-5, whole, whose device can later only be
 * retired, and then leaves the VM (HM_CHECK_GONE). */
static int second_gone;
static int main_broken(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  (void)impl;
  (void)att;
  (void)err;
  *reason = hm_strdup("the main backend was asked about a 9p mount");
  return HM_CHECK_BROKEN;
}
static int second_check(void *impl, hm_attachment *att, char **reason, hm_error **err) {
  (void)impl;
  (void)err;
  ck_assert_int_eq(hm_attachment_get_type(att), HM_TYPE_9P);
  if (!second_gone)
    return HM_CHECK_WHOLE;
  *reason = hm_strdup("its port left the VM");
  return HM_CHECK_GONE;
}
static int second_scan(void *impl, hm_attachment ***out, size_t *n, hm_error **err) {
  (void)impl;
  hm_attachment **v = hm_alloc(1, sizeof(*v));
  ck_assert_int_eq(hm_attachment_new(&v[0], "hm-5", err), 0);
  hm_attachment_set_tag(v[0], "hm-5", NULL);
  hm_attachment_set_type(v[0], HM_TYPE_9P, NULL);
  hm_attachment_set_data(v[0], "hostPath", scan_hosts[0], NULL);
  hm_attachment_set_data(v[0], "writable", "0", NULL);
  *out = v;
  *n = 1;
  return 0;
}
static int second_detach(void *impl, hm_attachment *att, hm_error **err) {
  (void)impl;
  return hm_attachment_set_retired(att, "its server died; the port stays until the VM restarts",
                                   err);
}

static const char *status_of(hm_instance *inst, const char *key, char *buf, size_t len) {
  hm_status *st = NULL;
  ck_assert_int_eq(hm_instance_status(inst, &st, NULL), 0);
  snprintf(buf, len, "%s", hm_status_get(st, key) ? hm_status_get(st, key) : "(none)");
  hm_status_free(st);
  return buf;
}

START_TEST(test_reconcile_per_backend) {
  char *inst_dir = in_tmp("inst");
  ck_assert_int_eq(mkdir(inst_dir, 0700), 0);
  scan_hosts[0] = in_tmp("s0");
  ck_assert_int_eq(mkdir(scan_hosts[0], 0755), 0);
  static const hm_fs_hotplugger_ops main_ops = {.struct_size = sizeof(main_ops),
                                                .name = "main",
                                                .types = 1u << HM_TYPE_VIRTIOFS,
                                                .attach = fake_attach,
                                                .detach = count_detach,
                                                .check = main_broken};
  static const hm_fs_hotplugger_ops second_ops = {.struct_size = sizeof(second_ops),
                                                  .name = "second",
                                                  .types = 1u << HM_TYPE_9P,
                                                  .attach = fake_attach,
                                                  .detach = second_detach,
                                                  .check = second_check,
                                                  .scan = second_scan};
  script_agent a;
  script_agent_start(&a, inst_dir);
  for (int round = 0; round < 2; round++) {
    hm_fs_hotplugger *hp = NULL, *hp2 = NULL;
    ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &main_ops, NULL, NULL), 0);
    ck_assert_int_eq(hm_fs_hotplugger_new(&hp2, &second_ops, NULL, NULL), 0);
    hm_instance *inst = NULL;
    ck_assert_int_eq(hm_instance_new(&inst, inst_dir, hp, NULL), 0);
    ck_assert_int_eq(hm_instance_add_backend(inst, hp2, NULL), 0);
    hm_error *err = NULL;
    ck_assert_msg(hm_instance_reconcile(inst, &err) == 0, "%s", hm_error_message(err));
    /* Round 0 adopts what the second backend found, as 9p; round 1 finds
     * it in the registry and keeps it mounted (checked by its backend). */
    hm_mount_list *l = NULL;
    ck_assert_int_eq(hm_instance_list(inst, &l, NULL), 0);
    ck_assert_int_eq(hm_mount_list_count(l), 1);
    const hm_mount *m = hm_mount_list_get(l, 0);
    ck_assert_str_eq(hm_mount_get_id(m), "hm-5");
    ck_assert_int_eq(hm_mount_get_type(m), HM_TYPE_9P);
    ck_assert_msg(hm_mount_get_state(m) == HM_STATE_MOUNTED, "round %d: %s", round,
                  hm_mount_get_reason(m) ? hm_mount_get_reason(m) : "");
    hm_mount_list_free(l);
    hm_instance_free(inst);
  }
  /* Removed, but the backend retires its device: hidden, still counted. */
  hm_fs_hotplugger *hp = NULL, *hp2 = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &main_ops, NULL, NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp2, &second_ops, NULL, NULL), 0);
  hm_instance *inst = NULL;
  ck_assert_int_eq(hm_instance_new(&inst, inst_dir, hp, NULL), 0);
  ck_assert_int_eq(hm_instance_add_backend(inst, hp2, NULL), 0);
  hm_error *err = NULL;
  ck_assert_msg(hm_instance_remove(inst, "/mnt/good", 0, &err) == 0, "%s", hm_error_message(err));
  char buf[64];
  ck_assert_str_eq(status_of(inst, "devicesRetired", buf, sizeof(buf)), "1");
  /* Still there: reconcile keeps the record. */
  second_gone = 0;
  ck_assert_int_eq(hm_instance_reconcile(inst, NULL), 0);
  ck_assert_str_eq(status_of(inst, "devicesRetired", buf, sizeof(buf)), "1");
  /* Gone from the VM (typed, not read from the reason): dropped. */
  second_gone = 1;
  ck_assert_int_eq(hm_instance_reconcile(inst, NULL), 0);
  ck_assert_str_eq(status_of(inst, "devicesRetired", buf, sizeof(buf)), "0");
  hm_instance_free(inst);
  script_agent_stop(&a);
  free(scan_hosts[0]);
  free(inst_dir);
}
END_TEST

int main(void) {
  if (geteuid() != 0) {
    fprintf(stderr, "test-instdir needs root (chown to nobody, a child as nobody): skipped\n");
    return 77;
  }
  Suite *s = suite_create("instdir");
  TCase *tc = tcase_create("instdir");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_dir_owner_and_mode);
  tcase_add_test(tc, test_state_tmp_symlink);
  tcase_add_test(tc, test_ssh_json_symlink);
  tcase_add_test(tc, test_qmp_peer_other_user);
  tcase_add_test(tc, test_qmp_socket_mode);
  tcase_add_test(tc, test_unix_listen_at);
  tcase_add_test(tc, test_host_path_resolved_once);
  tcase_add_test(tc, test_open_nofollow_walk);
  tcase_add_test(tc, test_shares_overlap_and_reserved);
  tcase_add_test(tc, test_reconcile_swapped_share);
  tcase_add_test(tc, test_reconcile_guest_targets);
  tcase_add_test(tc, test_reconcile_per_backend);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
