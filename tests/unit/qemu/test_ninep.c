/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 9p hot-mount, host side, against a real QEMU with no guest (-S): an attach
 * plugs a virtserialport named after the mount on hm-serial with a live diod
 * behind it and uses no root port; each mid-attach failure rolls back (no
 * diod, no chardev, no device, no export link, no fd leaked); a dead diod
 * shows as broken and is still removed; bad 9p options are refused by
 * validation. A virtserialport unplug needs no guest, so detach runs here in
 * full. The guest side is in tests/e2e/test_9p.py.
 */
#include "qemu_fixture.h"
#include "ninep.h"
#include "qemu_internal.h"
#include "spawn.h"
#include "virtiofsd.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 2

static qemu_fixture fx;

static void start_qemu(void) {
  qf_start(&fx, SLOTS);
}

/* Live diod processes of our instance (by the HOTMOUNT_INSTANCE marker: a
 * confined diod's command line names no host path): how many, and the pid
 * and command line of the first. */
static pid_t first_diod;
static int diods(char *cmdline, size_t size) {
  DIR *d = opendir("/proc");
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d))) {
    int pid = atoi(de->d_name);
    if (pid <= 1 || !hm_ninep_diod_alive(pid))
      continue;
    char *inst = hm_proc_getenv(pid, "HOTMOUNT_INSTANCE");
    int ours = inst && strcmp(inst, fx.dir) == 0;
    free(inst);
    if (!ours)
      continue;
    char p[64], buf[4096];
    snprintf(p, sizeof(p), "/proc/%d/cmdline", pid);
    FILE *f = fopen(p, "r");
    if (!f)
      continue;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (size_t i = 0; i < len; i++)
      if (!buf[i])
        buf[i] = ' ';
    buf[len] = '\0';
    if (n++ == 0) {
      first_diod = pid;
      if (cmdline)
        snprintf(cmdline, size, "%s", buf);
    }
  }
  closedir(d);
  return n;
}

/* A line "Key:\tvalue" of /proc/PID/status (value copied into out). */
static int proc_status(pid_t pid, const char *key, char *out, size_t size) {
  char p[64], line[512];
  snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
  FILE *f = fopen(p, "r");
  int found = 0;
  size_t klen = strlen(key);
  while (f && !found && fgets(line, sizeof(line), f))
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      char *v = line + klen + 1;
      v += strspn(v, " \t");
      v[strcspn(v, "\n")] = '\0';
      snprintf(out, size, "%s", v);
      found = 1;
    }
  if (f)
    fclose(f);
  return found;
}

/*
 * What a confined diod sees and holds (ninep.c's diod_start): its root and
 * cwd are the share; nothing but the share is mounted for it, with nosuid,
 * nodev (and ro when read-only); a host file outside the share does not
 * exist for it; its bounding set has the user-switching and file-owner
 * capabilities and not CAP_MKNOD, CAP_SYS_ADMIN, CAP_FSETID, CAP_SETFCAP;
 * no new privileges; a seccomp filter; no descriptor of ours (leak_fd,
 * opened without O_CLOEXEC before the attach) was inherited.
 */
static void check_confined(pid_t pid, int readonly, const char *leak_path) {
  char p[4200], v[256];
  struct stat share, st;
  ck_assert_int_eq(stat(fx.share, &share), 0);
  snprintf(p, sizeof(p), "/proc/%d/root", (int)pid);
  ck_assert_int_eq(stat(p, &st), 0);
  ck_assert_msg(st.st_dev == share.st_dev && st.st_ino == share.st_ino,
                "diod's root is not the share");
  snprintf(p, sizeof(p), "/proc/%d/cwd", (int)pid);
  ck_assert_int_eq(stat(p, &st), 0);
  ck_assert(st.st_dev == share.st_dev && st.st_ino == share.st_ino);
  /* The instance directory (outside the share) cannot be named from there. */
  snprintf(p, sizeof(p), "/proc/%d/root%s", (int)pid, fx.dir);
  ck_assert_int_ne(stat(p, &st), 0);
  snprintf(p, sizeof(p), "/proc/%d/root/etc/passwd", (int)pid);
  ck_assert_int_ne(stat(p, &st), 0);
  /* One mount: the share, locked down. */
  snprintf(p, sizeof(p), "/proc/%d/mountinfo", (int)pid);
  FILE *f = fopen(p, "r");
  ck_assert_ptr_nonnull(f);
  char line[1024];
  int mounts = 0;
  while (fgets(line, sizeof(line), f)) {
    mounts++;
    /* id parent major:minor root mountpoint options ... */
    char opts[256] = "", mp[256] = "";
    ck_assert_int_eq(sscanf(line, "%*s %*s %*s %*s %255s %255s", mp, opts), 2);
    ck_assert_str_eq(mp, "/");
    ck_assert_msg(strstr(opts, "nosuid") && strstr(opts, "nodev"), "%s", line);
    ck_assert_msg(strncmp(opts, readonly ? "ro" : "rw", 2) == 0, "%s", line);
  }
  fclose(f);
  ck_assert_int_eq(mounts, 1);
  ck_assert(proc_status(pid, "CapBnd", v, sizeof(v)));
  unsigned long long bnd = strtoull(v, NULL, 16);
  ck_assert_msg(
      bnd == ((1ULL << 0) | (1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 6) | (1ULL << 7)),
      "CapBnd %s", v);
  ck_assert(proc_status(pid, "NoNewPrivs", v, sizeof(v)));
  ck_assert_str_eq(v, "1");
  ck_assert(proc_status(pid, "Seccomp", v, sizeof(v)));
  ck_assert_str_eq(v, "2");
  snprintf(p, sizeof(p), "/proc/%d/fd", (int)pid);
  DIR *d = opendir(p);
  ck_assert_ptr_nonnull(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    char fp[4200], target[4096] = "";
    snprintf(fp, sizeof(fp), "/proc/%d/fd/%s", (int)pid, de->d_name);
    ssize_t n = readlink(fp, target, sizeof(target) - 1);
    if (n > 0)
      target[n] = '\0';
    ck_assert_msg(strcmp(target, leak_path) != 0, "diod inherited fd %s (%s)", de->d_name, target);
  }
  closedir(d);
}

static void stop_qemu(void) {
  hm_fs_hotplugger_free(fx.hp);
  fx.hp = NULL;
  DIR *d = opendir("/proc");
  struct dirent *de;
  while ((de = readdir(d))) {
    int pid = atoi(de->d_name);
    char *m = pid > 1 && hm_ninep_diod_alive(pid) ? hm_proc_getenv(pid, "HOTMOUNT_INSTANCE") : NULL;
    if (m && strcmp(m, fx.dir) == 0)
      kill(pid, SIGKILL);
    free(m);
  }
  closedir(d);
  qf_stop(&fx);
}

/* A 9p spec forced onto the virtio-serial path (the fixture's VM has reserved
 * 9p slots, which a read-only mount would otherwise take). */
static hm_mount_spec *serial_spec(void) {
  hm_mount_spec *s = qf_spec(&fx, HM_TYPE_9P);
  ck_assert_int_eq(hm_mount_spec_set_option(s, "via", "serial", NULL), 0);
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  return s;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

static int link_exists(const char *id) {
  char p[256];
  struct stat st;
  snprintf(p, sizeof(p), "%s/%s-9p", fx.dir, id);
  return lstat(p, &st) == 0;
}

static char *qom_str(const char *path, const char *prop) {
  char args[256];
  snprintf(args, sizeof(args), "{\"path\":\"%s\",\"property\":\"%s\"}", path, prop);
  json_object *a = json_tokener_parse(args), *ret = NULL;
  ck_assert_int_eq(hm_qmp_execute(fx.mon, "qom-get", a, -1, &ret, 5000, NULL), 0);
  json_object_put(a);
  char *s = strdup(json_object_get_string(ret));
  json_object_put(ret);
  return s;
}

START_TEST(test_attach_detach) {
  hm_error *err = NULL;
  /* A descriptor the daemon forgot to mark close-on-exec: no helper may get it. */
  char leak[4096];
  snprintf(leak, sizeof(leak), "%s/leak-marker", fx.dir);
  int leak_fd = open(leak, O_WRONLY | O_CREAT, 0600);
  ck_assert_int_ge(leak_fd, 0);
  int fds = count_fds();
  hm_mount_spec *s = serial_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-1", NULL);
  int ports = hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_9P, NULL);
  ck_assert_int_eq(ports, 128 - 1 - 1); /* port 0 is for a console; the agent's */
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s", hm_error_message(err));
  ck_assert_str_eq(hm_attachment_get_tag(att), "org.hotmount.9p.hm-1");
  ck_assert_int_eq(hm_attachment_get_type(att), HM_TYPE_9P);
  char want[512];
  /* diod's root is the share: the export is "/". */
  snprintf(want, sizeof(want), "version=9p2000.L,msize=65536,cache=fscache,aname=/,uname=root");
  ck_assert_str_eq(hm_attachment_get_data(att, "guestOptions"), want);
  /* The port: a virtserialport named after the mount, on hm-serial. */
  ck_assert(qf_has_device(&fx, "hm-1-dev"));
  ck_assert(qf_has_chardev(&fx, "hm-1-chr"));
  char *name = qom_str("/machine/peripheral/hm-1-dev", "name");
  ck_assert_str_eq(name, "org.hotmount.9p.hm-1");
  free(name);
  char *chr = qom_str("/machine/peripheral/hm-1-dev", "chardev");
  ck_assert_str_eq(chr, "hm-1-chr");
  free(chr);
  /* No root port taken; one serial port less. */
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS);
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_9P, NULL), ports - 1);
  /* A live diod, read-only, exporting its root, confined to the share. */
  char cmd[4096];
  ck_assert_int_eq(diods(cmd, sizeof(cmd)), 1);
  ck_assert_msg(strstr(cmd, " -o ro") != NULL, "%s", cmd);
  ck_assert_msg(strstr(cmd, "-e / "), "%s", cmd);
  check_confined(first_diod, 1, leak);
  /* The marker link names the share. */
  char target[256] = "", lp[256];
  snprintf(lp, sizeof(lp), "%s/hm-1-9p", fx.dir);
  ck_assert_int_gt(readlink(lp, target, sizeof(target) - 1), 0);
  ck_assert_str_eq(target, fx.share);
  char *reason = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &reason, NULL, NULL), 1);
  int wfd = hm_fs_hotplugger_watch_fd(fx.hp, att);
  ck_assert_int_ge(wfd, 0);
  close(wfd);

  /* Detach works from the id alone, and again. */
  hm_attachment *bare = NULL;
  hm_attachment_new(&bare, "hm-1", NULL);
  ck_assert_msg(hm_fs_hotplugger_detach(fx.hp, bare, &err) == 0, "%s", hm_error_message(err));
  ck_assert(!qf_has_device(&fx, "hm-1-dev"));
  ck_assert(!qf_has_chardev(&fx, "hm-1-chr"));
  ck_assert_int_eq(diods(NULL, 0), 0);
  ck_assert(!link_exists("hm-1"));
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_9P, NULL), ports);
  ck_assert_int_eq(hm_fs_hotplugger_detach(fx.hp, att, NULL), 0);
  int gone = 0;
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &reason, &gone, NULL), 0);
  ck_assert_int_eq(gone, 1); /* the port is no longer in QEMU: typed, not read from reason */
  free(reason);
  hm_attachment_free(bare);
  hm_attachment_free(att);

  /* Writable: no -o ro, cache mmap; options from the spec. */
  hm_mount_spec_set_writable(s, 1, NULL);
  hm_mount_spec_set_option(s, "msize", "1048576", NULL);
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  hm_attachment_new(&att, "hm-2", NULL);
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s", hm_error_message(err));
  ck_assert_int_eq(diods(cmd, sizeof(cmd)), 1);
  ck_assert_msg(strstr(cmd, " -o ro") == NULL, "%s", cmd);
  check_confined(first_diod, 0, leak);
  ck_assert_ptr_nonnull(
      strstr(hm_attachment_get_data(att, "guestOptions"), "msize=65536,cache=mmap,"));
  ck_assert_int_eq(hm_fs_hotplugger_detach(fx.hp, att, NULL), 0);
  ck_assert_int_eq(diods(NULL, 0), 0);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
  ck_assert_int_eq(count_fds(), fds);
  close(leak_fd);
}
END_TEST

static void check_rolled_back(const char *id, int fds) {
  char dev[32], chr[32];
  snprintf(dev, sizeof(dev), "%s-dev", id);
  snprintf(chr, sizeof(chr), "%s-chr", id);
  ck_assert_int_eq(diods(NULL, 0), 0);
  ck_assert(!link_exists(id));
  ck_assert_int_eq(count_fds(), fds);
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), SLOTS);
  (void)dev;
  (void)chr;
}

START_TEST(test_rollback_chardev_add_fails) {
  hm_error *err = NULL;
  /* The chardev id is taken: chardev-add fails after diod started. */
  qf_exec(&fx, "chardev-add", "{\"id\":\"hm-5-chr\",\"backend\":{\"type\":\"null\",\"data\":{}}}");
  int fds = count_fds();
  int ports = hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_9P, NULL);
  hm_mount_spec *s = serial_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-5", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "chardev-add"));
  hm_error_free(err);
  check_rolled_back("hm-5", fds);
  ck_assert(!qf_has_device(&fx, "hm-5-dev"));
  ck_assert(qf_has_chardev(&fx, "hm-5-chr")); /* the one that was there stays */
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_9P, NULL), ports);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_rollback_device_add_fails) {
  hm_error *err = NULL;
  /* The device id is taken: device_add fails after chardev-add, so the
   * chardev and diod go too. */
  qf_exec(&fx, "device_add",
          "{\"driver\":\"virtserialport\",\"id\":\"hm-6-dev\",\"bus\":\"hm-serial.0\","
          "\"name\":\"test.taken\"}");
  int fds = count_fds();
  hm_mount_spec *s = serial_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-6", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "device_add"));
  hm_error_free(err);
  check_rolled_back("hm-6", fds);
  ck_assert(!qf_has_chardev(&fx, "hm-6-chr"));
  char *name = qom_str("/machine/peripheral/hm-6-dev", "name");
  ck_assert_str_eq(name, "test.taken"); /* the one that was there stays */
  free(name);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_dead_diod) {
  hm_error *err = NULL;
  hm_mount_spec *s = serial_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-3", NULL);
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s", hm_error_message(err));
  int wfd = hm_fs_hotplugger_watch_fd(fx.hp, att);
  ck_assert_int_ge(wfd, 0);
  kill(atoi(hm_attachment_get_data(att, "diod_pid")), SIGKILL);
  struct pollfd p = {.fd = wfd, .events = POLLIN};
  ck_assert_int_eq(poll(&p, 1, 5000), 1);
  close(wfd);
  char *reason = NULL;
  int gone = 1;
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &reason, &gone, NULL), 0);
  ck_assert_int_eq(gone, 0); /* broken, but its port is still plugged */
  ck_assert_msg(strstr(reason, "diod") != NULL, "%s", reason);
  free(reason);
  /* Unlike virtiofs, the port is unplugged as usual (not retired). */
  ck_assert_msg(hm_fs_hotplugger_detach(fx.hp, att, &err) == 0, "%s", hm_error_message(err));
  ck_assert_ptr_null(hm_attachment_get_retired(att));
  ck_assert(!qf_has_device(&fx, "hm-3-dev"));
  ck_assert(!qf_has_chardev(&fx, "hm-3-chr"));
  ck_assert(!link_exists("hm-3"));
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_scan_finds_9p) {
  hm_error *err = NULL;
  hm_mount_spec *s = serial_spec();
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-4", NULL);
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s", hm_error_message(err));
  hm_attachment **v = NULL;
  size_t n = 0;
  ck_assert_int_eq(hm_fs_hotplugger_scan(fx.hp, &v, &n, NULL), 0);
  ck_assert_int_eq(n, 1);
  ck_assert_str_eq(hm_attachment_get_id(v[0]), "hm-4");
  ck_assert_str_eq(hm_attachment_get_tag(v[0]), "org.hotmount.9p.hm-4");
  ck_assert_str_eq(hm_attachment_get_data(v[0], "via"), "serial");
  ck_assert_int_eq(hm_attachment_get_type(v[0]), HM_TYPE_9P);
  ck_assert_str_eq(hm_attachment_get_data(v[0], "hostPath"), fx.share);
  ck_assert_str_eq(hm_attachment_get_data(v[0], "writable"), "0");
  ck_assert_str_eq(hm_attachment_get_data(v[0], "diod_pid"),
                   hm_attachment_get_data(att, "diod_pid"));
  ck_assert_int_eq(hm_fs_hotplugger_detach(fx.hp, v[0], NULL), 0);
  ck_assert_int_eq(diods(NULL, 0), 0);
  hm_attachment_free(v[0]);
  free(v);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

/* A diod that carries this instance's markers but was not started confined
 * (a daemon before the confinement, or anyone setting the variables): scan
 * does not adopt it, check does not count it as the mount's server. */
START_TEST(test_unconfined_diod_not_adopted) {
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  char inst[512], fdarg[16];
  snprintf(inst, sizeof(inst), "HOTMOUNT_INSTANCE=%s", fx.dir);
  snprintf(fdarg, sizeof(fdarg), "-r%d", sv[1]);
  char wfd[16];
  snprintf(wfd, sizeof(wfd), "-w%d", sv[1]);
  char *env[] = {inst,
                 "HOTMOUNT_MOUNT=hm-7",
                 "HOTMOUNT_HOST=/",
                 "HOTMOUNT_WRITABLE=1",
                 "HOTMOUNT_TRANSPORT=9p",
                 NULL};
  char *argv[] = {"/usr/sbin/diod", "-f",  "-n", "-N", "-c", "/dev/null", "-L",
                  "stderr",         fdarg, wfd,  "-e", "/",  NULL};
  pid_t pid = fork();
  if (pid == 0) {
    execve(argv[0], argv, env);
    _exit(127);
  }
  close(sv[1]);
  /* It is running (it answers on its socket) before we look. */
  unsigned char m[21] = {21, 0, 0, 0, 100, 0xff, 0xff, 0, 0, 1, 0, 8, 0};
  memcpy(m + 13, "9P2000.L", 8);
  ck_assert_int_eq(write(sv[0], m, sizeof(m)), (int)sizeof(m));
  unsigned char r[64];
  ck_assert_int_gt(read(sv[0], r, sizeof(r)), 7);
  ck_assert_int_eq(r[4], 101);
  ck_assert(hm_ninep_diod_alive(pid));
  hm_attachment **v = NULL;
  size_t n = 0;
  ck_assert_int_eq(hm_fs_hotplugger_scan(fx.hp, &v, &n, NULL), 0);
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(strcmp(hm_attachment_get_id(v[i]), "hm-7") != 0, "adopted an unconfined diod");
    hm_attachment_free(v[i]);
  }
  free(v);
  hm_attachment *att = NULL;
  hm_attachment_new(&att, "hm-7", NULL);
  hm_attachment_set_data(att, "transport", "9p", NULL);
  ck_assert_int_lt(hm_fs_hotplugger_watch_fd(fx.hp, att), 0);
  hm_attachment_free(att);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  close(sv[0]);
}
END_TEST

static void expect_refused(const char *key, const char *value, const char *needle) {
  hm_mount_spec *s = NULL;
  hm_error *err = NULL;
  hm_mount_spec_new(&s, NULL);
  hm_mount_spec_set_host_path(s, "/tmp", NULL);
  hm_mount_spec_set_guest_path(s, "/mnt/x", NULL);
  hm_mount_spec_set_type(s, HM_TYPE_9P, NULL);
  hm_mount_spec_set_option(s, key, value, NULL);
  /* The generic checks pass; the QEMU backend's rules refuse it. */
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  ck_assert_int_eq(hm_qemu_validate(NULL, s, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), needle) != NULL, "%s", hm_error_message(err));
  hm_error_free(err);
  hm_mount_spec_free(s);
}

START_TEST(test_options) {
  expect_refused("version", "9p2000.u", "diod) speaks 9p2000.L only");
  expect_refused("version", "9p2001", "version=\"9p2001\" is not valid for 9p");
  expect_refused("securityModel", "mapped-xattr", "passthrough only");
  expect_refused("securityModel", "none", "passthrough only");
  expect_refused("msize", "100", "must be a number from 4096");
  expect_refused("cache", "always", "cache=\"always\" is not valid for 9p");
  expect_refused("dax", "always", "unknown option \"dax\" for 9p");
  /* What the guest is told. */
  hm_mount_spec *s = NULL;
  char *o = NULL;
  hm_mount_spec_new(&s, NULL);
  hm_mount_spec_set_type(s, HM_TYPE_9P, NULL);
  ck_assert_int_eq(hm_ninep_guest_options(&o, s, "/i/hm-1-9p", NULL), 0);
  ck_assert_str_eq(o, "version=9p2000.L,msize=65536,cache=fscache,aname=/i/hm-1-9p,uname=root");
  free(o);
  hm_mount_spec_set_writable(s, 1, NULL);
  hm_mount_spec_set_option(s, "msize", "8192", NULL);
  hm_mount_spec_set_option(s, "cache", "none", NULL);
  ck_assert_int_eq(hm_ninep_guest_options(&o, s, "/i/hm-1-9p", NULL), 0);
  ck_assert_str_eq(o, "version=9p2000.L,msize=8192,cache=none,aname=/i/hm-1-9p,uname=root");
  free(o);
  hm_error *err = NULL;
  ck_assert_int_eq(hm_ninep_guest_options(&o, s, "/a,b/hm-1-9p", &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "comma"));
  hm_error_free(err);
  hm_mount_spec_free(s);
  /* diod's command line. */
  char **argv = NULL;
  ck_assert_int_eq(hm_ninep_diod_argv(&argv, "/usr/sbin/diod", "/d/hm-1-9p", 1, 3, NULL), 0);
  const char *want[] = {
      "/usr/sbin/diod", "-f", "-n", "-N", "-c", "/dev/null", "-L", "stderr", "-r3", "-w3", "-e",
      "/d/hm-1-9p",     "-o", "ro", NULL};
  for (int i = 0; want[i] || argv[i]; i++) {
    ck_assert_ptr_nonnull(argv[i]);
    ck_assert_ptr_nonnull(want[i]);
    ck_assert_str_eq(argv[i], want[i]);
  }
  hm_strv_free(argv);
}
END_TEST

/* --- reserved 9p slots (ninep_slot.c) ------------------------------------ */

/* Where INSTANCE/9p/NAME points ("" when it is not a link). */
static void slot_link(const char *name, char *out, size_t size) {
  char p[512];
  snprintf(p, sizeof(p), "%s/9p/%s", fx.dir, name);
  ssize_t n = readlink(p, out, size - 1);
  out[n > 0 ? n : 0] = '\0';
}

static hm_attachment *attach_ok(hm_mount_spec *s, const char *id) {
  hm_attachment *att = NULL;
  hm_error *err = NULL;
  hm_attachment_new(&att, id, NULL);
  ck_assert_msg(hm_fs_hotplugger_attach(fx.hp, s, att, &err) == 0, "%s: %s", id,
                hm_error_message(err));
  return att;
}

START_TEST(test_slot_attach) {
  int fds = count_fds();
  int ports = hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL);
  hm_mount_spec *s = qf_spec(&fx, HM_TYPE_9P); /* read-only, no via: a slot */
  hm_attachment *att = attach_ok(s, "hm-1");
  ck_assert_str_eq(hm_attachment_get_tag(att), "hm-1");
  ck_assert_str_eq(hm_attachment_get_data(att, "via"), "pci");
  ck_assert_str_eq(hm_attachment_get_data(att, "guestTransport"), "virtio");
  ck_assert_str_eq(hm_attachment_get_data(att, "fsdev"), "hm-9p-ro-0");
  ck_assert_str_eq(hm_attachment_get_data(att, "guestOptions"),
                   "version=9p2000.L,msize=524288,cache=fscache");
  /* The device: a virtio-9p-pci on one of the root ports, the shared pool. */
  char *v = qom_str("/machine/peripheral/hm-1-dev", "fsdev");
  ck_assert_str_eq(v, "hm-9p-ro-0");
  free(v);
  v = qom_str("/machine/peripheral/hm-1-dev", "mount_tag");
  ck_assert_str_eq(v, "hm-1");
  free(v);
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(fx.hp, HM_TYPE_VIRTIOFS, NULL), ports - 1);
  /* The fsdev's link is back at the placeholder, the marker link names the
   * share, no diod runs and no descriptor stayed open. */
  char t[256];
  slot_link("ro-0", t, sizeof(t));
  ck_assert_str_eq(t, "empty");
  char mk[512], mt[4096] = "";
  snprintf(mk, sizeof(mk), "%s/hm-1-9p", fx.dir);
  ck_assert_int_gt(readlink(mk, mt, sizeof(mt) - 1), 0);
  ck_assert_str_eq(mt, fx.share);
  ck_assert_int_eq(diods(NULL, 0), 0);
  ck_assert_int_eq(count_fds(), fds);
  ck_assert_int_lt(hm_fs_hotplugger_watch_fd(fx.hp, att), 0);
  char *why = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_check(fx.hp, att, &why, NULL, NULL), 1);
  ck_assert_ptr_null(why);
  /* The next read-only mount takes the next fsdev. */
  hm_attachment *b = attach_ok(s, "hm-2");
  ck_assert_str_eq(hm_attachment_get_data(b, "fsdev"), "hm-9p-ro-1");
  /* Scan (a lost registry) finds both as slot mounts. */
  hm_attachment **sv = NULL;
  size_t n = 0;
  ck_assert_int_eq(hm_fs_hotplugger_scan(fx.hp, &sv, &n, NULL), 0);
  ck_assert_int_eq(n, 2);
  for (size_t i = 0; i < n; i++) {
    ck_assert_str_eq(hm_attachment_get_data(sv[i], "via"), "pci");
    ck_assert_str_eq(hm_attachment_get_tag(sv[i]), hm_attachment_get_id(sv[i]));
    ck_assert_str_eq(hm_attachment_get_data(sv[i], "hostPath"), fx.share);
    hm_attachment_free(sv[i]);
  }
  free(sv);
  hm_attachment_free(att);
  hm_attachment_free(b);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_slot_choice) {
  /* QEMU runs as root here and the slots use passthrough: a writable mount
   * goes over virtio-serial unless via=pci insists. */
  hm_mount_spec *rw = qf_spec(&fx, HM_TYPE_9P);
  hm_mount_spec_set_writable(rw, 1, NULL);
  hm_attachment *a = attach_ok(rw, "hm-1");
  ck_assert_str_eq(hm_attachment_get_data(a, "via"), "serial");
  ck_assert_str_eq(hm_attachment_get_tag(a), "org.hotmount.9p.hm-1");
  hm_mount_spec_set_option(rw, "via", "pci", NULL);
  hm_attachment *b = attach_ok(rw, "hm-2");
  ck_assert_str_eq(hm_attachment_get_data(b, "via"), "pci");
  ck_assert_str_eq(hm_attachment_get_data(b, "fsdev"), "hm-9p-rw-0");
  /* Both root ports are taken now (SLOTS = 2, one by hm-2; a read-only
   * slot mount takes the other): a further read-only mount falls back to
   * the serial path, and via=pci is refused with the reason. */
  hm_mount_spec *ro = qf_spec(&fx, HM_TYPE_9P);
  hm_attachment *c = attach_ok(ro, "hm-3");
  ck_assert_str_eq(hm_attachment_get_data(c, "via"), "pci");
  hm_attachment *d = attach_ok(ro, "hm-4");
  ck_assert_str_eq(hm_attachment_get_data(d, "via"), "serial");
  hm_mount_spec_set_option(ro, "via", "pci", NULL);
  hm_attachment *e = NULL;
  hm_error *err = NULL;
  hm_attachment_new(&e, "hm-5", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, ro, e, &err), HM_E_NO_SLOT);
  ck_assert_msg(strstr(hm_error_message(err), "hot-plug slots are in use"), "%s",
                hm_error_message(err));
  hm_error_free(err);
  ck_assert(!link_exists("hm-5"));
  ck_assert(!qf_has_device(&fx, "hm-5-dev"));
  /* The serial ones detach without a guest; the slots' fsdevs stay taken. */
  ck_assert_int_eq(hm_fs_hotplugger_detach(fx.hp, a, NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_detach(fx.hp, d, NULL), 0);
  ck_assert_int_eq(diods(NULL, 0), 0);
  hm_attachment *all[] = {a, b, c, d, e};
  for (size_t i = 0; i < 5; i++)
    hm_attachment_free(all[i]);
  hm_mount_spec_free(rw);
  hm_mount_spec_free(ro);
}
END_TEST

START_TEST(test_slot_share_replaced) {
  /* The share is swapped for another directory after it was checked: the
   * attach refuses it and leaves nothing behind. */
  int fds = count_fds();
  hm_mount_spec *s = qf_spec(&fx, HM_TYPE_9P);
  char moved[512], other[512];
  snprintf(moved, sizeof(moved), "%s/share.orig", fx.dir);
  snprintf(other, sizeof(other), "%s/other", fx.dir);
  ck_assert_int_eq(mkdir(other, 0755), 0);
  ck_assert_int_eq(rename(fx.share, moved), 0);
  ck_assert_int_eq(rename(other, fx.share), 0);
  hm_attachment *att = NULL;
  hm_error *err = NULL;
  hm_attachment_new(&att, "hm-7", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), "replaced"), "%s", hm_error_message(err));
  hm_error_free(err);
  ck_assert(!link_exists("hm-7"));
  ck_assert(!qf_has_device(&fx, "hm-7-dev"));
  ck_assert_int_eq(count_fds(), fds);
  /* Its fsdev and root port were given back: the original share, back in
   * place, attaches to fsdev 0. */
  ck_assert_int_eq(rename(fx.share, other), 0);
  ck_assert_int_eq(rename(moved, fx.share), 0);
  hm_attachment *b = attach_ok(s, "hm-8");
  ck_assert_str_eq(hm_attachment_get_data(b, "fsdev"), "hm-9p-ro-0");
  hm_attachment_free(att);
  hm_attachment_free(b);
  hm_mount_spec_free(s);
}
END_TEST

START_TEST(test_slot_device_add_fails) {
  /* The device id is taken: device_add fails after the link was pointed;
   * the link goes back to the placeholder, the marker link goes. */
  qf_exec(&fx, "device_add",
          "{\"driver\":\"virtserialport\",\"id\":\"hm-6-dev\",\"bus\":\"hm-serial.0\","
          "\"name\":\"test.taken\"}");
  int fds = count_fds();
  hm_mount_spec *s = qf_spec(&fx, HM_TYPE_9P);
  hm_attachment *att = NULL;
  hm_error *err = NULL;
  hm_attachment_new(&att, "hm-6", NULL);
  ck_assert_int_eq(hm_fs_hotplugger_attach(fx.hp, s, att, &err), HM_E_QMP);
  hm_error_free(err);
  char t[256];
  slot_link("ro-0", t, sizeof(t));
  ck_assert_str_eq(t, "empty");
  ck_assert(!link_exists("hm-6"));
  ck_assert_int_eq(count_fds(), fds);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ninep");
  TCase *tc0 = tcase_create("options");
  tcase_add_test(tc0, test_options);
  suite_add_tcase(s, tc0);
  if (system("command -v qemu-system-x86_64 >/dev/null") == 0 &&
      system("command -v diod >/dev/null || test -x /usr/sbin/diod") == 0) {
    TCase *tc = tcase_create("real-qemu");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, start_qemu, stop_qemu);
    tcase_add_test(tc, test_attach_detach);
    tcase_add_test(tc, test_rollback_chardev_add_fails);
    tcase_add_test(tc, test_rollback_device_add_fails);
    tcase_add_test(tc, test_dead_diod);
    tcase_add_test(tc, test_scan_finds_9p);
    tcase_add_test(tc, test_unconfined_diod_not_adopted);
    tcase_add_test(tc, test_slot_attach);
    tcase_add_test(tc, test_slot_choice);
    tcase_add_test(tc, test_slot_share_replaced);
    tcase_add_test(tc, test_slot_device_add_fails);
    suite_add_tcase(s, tc);
  } else {
    printf("qemu-system-x86_64 or diod missing: only the option tests run\n");
  }
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
