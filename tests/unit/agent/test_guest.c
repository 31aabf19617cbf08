/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "guest/guest_mount.h"
#include "guest/guest_path.h"
#include "tests.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

static void norm_ok(const char *in, const char *want) {
  char *out = NULL;
  hm_error *err = NULL;
  int r = hm_guest_path_normalize(&out, in, &err);
  ck_assert_msg(r == 0, "'%s' refused: %s", in, hm_error_message(err));
  ck_assert_str_eq(out, want);
  ck_assert_int_eq(hm_guest_path_check(out, NULL), 0);
  free(out);
}

static void norm_bad(const char *in, const char *needle) {
  char *out = (char *)"x";
  hm_error *err = NULL;
  ck_assert_int_eq(hm_guest_path_normalize(&out, in, &err), HM_E_INVALID);
  ck_assert_ptr_null(out);
  ck_assert_error(err, HM_E_INVALID, needle);
  ck_assert_msg(strchr(hm_error_message(err), '\n') == NULL, "raw newline in message");
  hm_error_free(err);
}

static void refused(const char *path, const char *needle) {
  hm_error *err = NULL;
  ck_assert_int_eq(hm_guest_path_check(path, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, needle);
  hm_error_free(err);
}

START_TEST(path_normalize) {
  norm_ok("/mnt/x", "/mnt/x");
  norm_ok("/mnt//x///y/", "/mnt/x/y");
  norm_ok("/mnt/./x/.", "/mnt/x");
  norm_ok("/mnt/with space", "/mnt/with space");
  norm_ok("/mnt/a,b", "/mnt/a,b");
  norm_ok("/mnt/q'u\"o`te", "/mnt/q'u\"o`te");
  norm_ok("/mnt/dätä/日本語/🙂", "/mnt/dätä/日本語/🙂");
  norm_ok("/mnt/...", "/mnt/...");
  norm_ok("/mnt/..x", "/mnt/..x");

  norm_bad("", "empty");
  norm_bad(NULL, "empty");
  norm_bad("mnt/x", "'mnt/x' is not absolute");
  norm_bad("/mnt/../etc", "'/mnt/../etc' contains a '..' component");
  norm_bad("/mnt/x/..", "'..'");
  norm_bad("/mnt/new\nline", "/mnt/new\\x0aline' contains a control character (U+000A");
  norm_bad("/mnt/tab\t", "control character");
  norm_bad("/mnt/del\x7f", "U+007F");
  norm_bad("/mnt/c1\xc2\x85", "U+0085");
  norm_bad("/mnt/bad\xff", "/mnt/bad\\xff' is not valid UTF-8 (at byte 8)");
  norm_bad("/mnt/overlong\xc0\xaf", "not valid UTF-8");
  norm_bad("/mnt/surrogate\xed\xa0\x80", "not valid UTF-8");
  norm_bad("/mnt/cut\xe6\x97", "not valid UTF-8");
}
END_TEST

START_TEST(path_lengths) {
  /* A 4 KiB file name: over PATH_MAX as a whole, and over NAME_MAX. */
  char *p = malloc(5000);
  strcpy(p, "/mnt/");
  memset(p + 5, 'a', 4096);
  p[5 + 4096] = '\0';
  norm_bad(p, "too long (4101 bytes, the limit is 4095)");
  p[5 + 4000] = '\0';
  norm_bad(p, "has a component of 4000 bytes (the limit is 255)");
  p[5 + 256] = '\0';
  norm_bad(p, "has a component of 256 bytes");
  p[5 + 255] = '\0';
  char *ok = NULL;
  ck_assert_int_eq(hm_guest_path_normalize(&ok, p, NULL), 0);
  free(ok);
  /* 4095 bytes in 255-byte components: the longest path that fits. */
  size_t o = 0;
  while (o < 4095) {
    p[o++] = '/';
    for (int i = 0; i < 254 && o < 4095; i++)
      p[o++] = 'b';
  }
  p[o] = '\0';
  ck_assert_uint_eq(strlen(p), PATH_MAX - 1);
  char *out = NULL;
  ck_assert_int_eq(hm_guest_path_normalize(&out, p, NULL), 0);
  free(out);
  /* One more byte is too long. */
  strcat(p, "c");
  norm_bad(p, "too long (4096 bytes");
  free(p);
}
END_TEST

START_TEST(path_system) {
  char *out = NULL;
  ck_assert_int_eq(hm_guest_path_normalize(&out, "///", NULL), 0);
  ck_assert_str_eq(out, "/");
  refused(out, "guest path '/' is the root directory");
  free(out);
  refused("/proc", "'/proc' is a system path (at or below /proc)");
  refused("/proc/x", "'/proc/x' is a system path (at or below /proc)");
  refused("/etc", "'/etc' is a system path");
  refused("/etc/hotmount", "at or below /etc");
  refused("/sys/fs/x", "/sys");
  refused("/dev/shm/x", "/dev");
  refused("/usr/local/src", "/usr");
  refused("/lib64/x", "/lib64");
  refused("/run/user/0/x", "/run");
  refused("/var", "'/var' is a system directory");
  refused("/tmp", "'/tmp' is a system directory");
  refused("/home", "/home");
  refused("/mnt", "/mnt");
  refused("/media", "/media");
  ck_assert_int_eq(hm_guest_path_check("/var/lib/x", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/tmp/x", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/home/u/src", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/mnt/x", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/etcetera", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/library", NULL), 0);
  ck_assert_int_eq(hm_guest_path_check("/data", NULL), 0);
}
END_TEST

START_TEST(mount_build) {
  hm_guest_mount_call c;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_VIRTIOFS, "hm-3", 1, NULL, &err), 0);
  ck_assert_str_eq(c.source, "hm-3");
  ck_assert_str_eq(c.fstype, "virtiofs");
  ck_assert_ptr_null(c.data);
  ck_assert_uint_eq(c.flags, MS_RDONLY | MS_NOSUID | MS_NODEV);
  hm_guest_mount_call_clear(&c);
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_VIRTIOFS, "a.b_c-D9", 0, "dax=always", &err),
                   0);
  ck_assert_uint_eq(c.flags, MS_NOSUID | MS_NODEV);
  ck_assert_str_eq(c.data, "dax=always");
  hm_guest_mount_call_clear(&c);

  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_VIRTIOFS, "t", 1, "dax,rw", &err),
                   HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "virtiofs option 'rw' is not allowed");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_VIRTIOFS, "t", 1, "dax,,x", &err),
                   HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "empty option");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_9P, "org.hotmount.9p.hm-7", 1,
                                        "version=9p2000.L,msize=262144,cache=mmap", &err),
                   0);
  ck_assert_str_eq(c.source, "org.hotmount.9p.hm-7");
  ck_assert_str_eq(c.fstype, "9p");
  ck_assert_str_eq(c.data, "version=9p2000.L,msize=262144,cache=mmap");
  ck_assert_uint_eq(c.msize, 262144);
  ck_assert_uint_eq(c.flags, MS_RDONLY | MS_NOSUID | MS_NODEV);
  char *data = NULL;
  ck_assert_int_eq(hm_guest_9p_data(&data, &c, 7), 0);
  ck_assert_str_eq(data, "trans=fd,rfdno=7,wfdno=7,version=9p2000.L,msize=262144,cache=mmap");
  free(data);
  hm_guest_mount_call_clear(&c);
  /* Defaults: 9p2000.L and a 256 KiB msize, not the kernel's 8 KiB. */
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_9P, "p", 0, NULL, &err), 0);
  ck_assert_str_eq(c.data, "version=9p2000.L,msize=262144");
  ck_assert_uint_eq(c.flags, MS_NOSUID | MS_NODEV);
  hm_guest_mount_call_clear(&c);
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_9P, "p", 0, "msize=65536,cache=loose", &err),
                   0);
  ck_assert_str_eq(c.data, "version=9p2000.L,msize=65536,cache=loose");
  ck_assert_uint_eq(c.msize, 65536);
  hm_guest_mount_call_clear(&c);
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_9P, "bad port", 1, NULL, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "port name has a character outside");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_guest_mount_build(&c, HM_TYPE_9P, "p", 1, "trans=tcp", &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "9p option 'trans=tcp' is not allowed");
  hm_error_free(err);
  err = NULL;

  ck_assert_int_eq(hm_guest_tag_validate("0123456789abcdef0123456789abcdef0123", NULL), 0);
  ck_assert_int_eq(hm_guest_tag_validate("0123456789abcdef0123456789abcdef01234", &err),
                   HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "longer than 36");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_guest_tag_validate("a/b", &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "outside [A-Za-z0-9._-] at byte 1");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_guest_tag_validate("", &err), HM_E_INVALID);
  hm_error_free(err);
}
END_TEST

START_TEST(options_9p) {
  static const struct {
    const char *options, *needle;
  } bad[] = {
      {"trans=virtio", "9p option 'trans=virtio' is not allowed"},
      {"rfdno=0", "9p option 'rfdno=0' is not allowed"},
      {"wfdno=1", "9p option 'wfdno=1' is not allowed"},
      {"cache=mmap,rfdno=3,wfdno=3", "9p option 'rfdno=3' is not allowed"},
      {"port=564", "'port=564' is not allowed"},
      {"uname=", "'uname=' has a value"},
      {"uname=a b", "'uname=a b' has a value"},
      {"uname=-x", "'uname=-x' has a value"},
      {"uname=root,uname=x", "9p option 'uname' is given twice"},
      {"aname=etc", "'aname=etc' has a value"},
      {"aname=", "'aname=' has a value"},
      {"aname=/a\tb", "'aname=/a?b' has a value"},
      {"aname=/x,aname=/y", "9p option 'aname' is given twice"},
      {"dfltuid=0", "'dfltuid=0' is not allowed"},
      {"debug=0xffff", "'debug=0xffff' is not allowed"},
      {"rw", "9p option 'rw' is not allowed"},
      {"suid", "9p option 'suid' is not allowed"},
      {"frobnicate", "9p option 'frobnicate' is not allowed"},
      {"cache=mmap\n", "9p option 'cache=mmap?' has a value that is not allowed"},
      {"cache=mmap\ntrans=tcp", "9p option 'cache=mmap?trans=tcp' has a value"},
      {"version=9p2000.L\n,trans=tcp", "has a value that is not allowed"},
      {"cache", "9p option 'cache' has a value that is not allowed"},
      {"cache=", "9p option 'cache=' has a value"},
      {"cache=mmap=x", "has a value that is not allowed"},
      {"cache=MMAP", "has a value that is not allowed"},
      {"version=9p2000.X", "'version=9p2000.X' has a value"},
      {"msize=", "'msize=' has a value"},
      {"msize=4095", "'msize=4095' has a value"},
      {"msize=16777217", "has a value"},
      {"msize=0262144", "has a value"},
      {"msize=-1", "has a value"},
      {"msize=1e6", "has a value"},
      {"msize=99999999999999999999", "has a value"},
      {"posixacl=1", "'posixacl=1' has a value"},
      {"locktimeout=0", "has a value"},
      {"access=0", "'access=0' has a value"},
      {"cache=mmap,cache=none", "9p option 'cache' is given twice"},
      {"cache=mmap,", "empty option"},
      {",cache=mmap", "empty option"},
      {"cache=mmap,,msize=8192", "empty option"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char *out = (char *)1;
    hm_error *err = NULL;
    ck_assert_msg(hm_guest_9p_options(&out, NULL, bad[i].options, &err) == HM_E_INVALID,
                  "'%s' was accepted", bad[i].options);
    ck_assert_ptr_null(out);
    ck_assert_error(err, HM_E_INVALID, bad[i].needle);
    hm_error_free(err);
  }
  static const struct {
    const char *options, *out;
    unsigned msize;
  } good[] = {
      {"", "version=9p2000.L,msize=262144", 262144},
      {"version=9p2000.u", "msize=262144,version=9p2000.u", 262144},
      {"msize=4096", "version=9p2000.L,msize=4096", 4096},
      {"msize=16777216,version=9p2000.L", "msize=16777216,version=9p2000.L", 16777216},
      {"version=9p2000.L,msize=262144,cache=mmap", "version=9p2000.L,msize=262144,cache=mmap",
       262144},
      {"cache=none,access=client,posixacl,noxattr,locktimeout=30",
       "version=9p2000.L,msize=262144,cache=none,access=client,posixacl,noxattr,locktimeout=30",
       262144},
      {"cache=fscache,access=user", "version=9p2000.L,msize=262144,cache=fscache,access=user",
       262144},
      {"aname=/srv/my dir/ü=1", "version=9p2000.L,msize=262144,aname=/srv/my dir/ü=1", 262144},
      {"uname=root", "version=9p2000.L,msize=262144,uname=root", 262144},
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    char *out = NULL;
    unsigned msize = 0;
    hm_error *err = NULL;
    int r = hm_guest_9p_options(&out, &msize, good[i].options, &err);
    ck_assert_msg(r == 0, "'%s' refused: %s", good[i].options, hm_error_message(err));
    ck_assert_str_eq(out, good[i].out);
    ck_assert_uint_eq(msize, good[i].msize);
    free(out);
  }
  ck_assert_int_eq(hm_guest_port_validate("org.hotmount.9p.hm-7", NULL), 0);
  char longname[HM_GUEST_PORT_MAX + 2];
  memset(longname, 'p', sizeof(longname) - 1);
  longname[HM_GUEST_PORT_MAX + 1] = '\0';
  hm_error *err = NULL;
  ck_assert_int_eq(hm_guest_port_validate(longname, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "longer than 127 bytes");
  hm_error_free(err);
  longname[HM_GUEST_PORT_MAX] = '\0';
  ck_assert_int_eq(hm_guest_port_validate(longname, NULL), 0);
  err = NULL;
  ck_assert_int_eq(hm_guest_port_validate("a,b", &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "outside [A-Za-z0-9._-] at byte 1");
  hm_error_free(err);
  ck_assert_int_eq(hm_guest_port_validate("", NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_guest_port_validate(NULL, NULL), HM_E_INVALID);
}
END_TEST

START_TEST(mountinfo) {
  const char *text =
      "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n"
      "40 22 0:35 / /mnt/with\\040space ro,nosuid,nodev,relatime shared:9 master:2 - virtiofs "
      "hm-1 rw\n"
      "41 22 0:36 / /mnt/n9 rw,relatime - 9p hm-p rw,trans=fd,rfdno=4,wfdno=4\n"
      "42 22 0:37 / /home/u/s rw,nosuid,nodev - fuse.sshfs :/src rw,user_id=0,group_id=0\n";
  hm_agent_mount_info *v = NULL;
  size_t n = 0;
  ck_assert_int_eq(hm_guest_mountinfo_parse(&v, &n, text, 1, NULL), 0);
  ck_assert_uint_eq(n, 3);
  ck_assert_str_eq(v[0].target, "/mnt/with space");
  ck_assert_str_eq(v[0].fstype, "virtiofs");
  ck_assert_str_eq(v[0].source, "hm-1");
  ck_assert_str_eq(v[0].options, "ro,nosuid,nodev,relatime");
  ck_assert_str_eq(v[1].options, "rw,relatime,trans=fd,rfdno=4,wfdno=4");
  ck_assert_str_eq(v[2].fstype, "fuse.sshfs");
  ck_assert_str_eq(v[2].source, ":/src");
  hm_agent_mount_info_free(v, n);
  ck_assert_int_eq(hm_guest_mountinfo_parse(&v, &n, text, 0, NULL), 0);
  ck_assert_uint_eq(n, 4);
  hm_agent_mount_info_free(v, n);

  hm_error *err = NULL;
  ck_assert_int_eq(hm_guest_mountinfo_parse(&v, &n, "1 2 3 4\n", 0, &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "line 1");
  hm_error_free(err);
}
END_TEST

Suite *guest_suite(void) {
  Suite *s = suite_create("guest");
  TCase *tc = tcase_create("path");
  tcase_add_test(tc, path_normalize);
  tcase_add_test(tc, path_lengths);
  tcase_add_test(tc, path_system);
  suite_add_tcase(s, tc);
  tc = tcase_create("mount");
  tcase_add_test(tc, mount_build);
  tcase_add_test(tc, options_9p);
  tcase_add_test(tc, mountinfo);
  suite_add_tcase(s, tc);
  return s;
}
