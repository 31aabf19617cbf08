/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of the core: errors, version, specs and their validation, JSON
 * codecs, the state file, qemu-args, virtiofsd argv, instance dirs, and the
 * growable driver vtable. */
#include "driver_internal.h"
#include "mount_internal.h"
#include "qemu_internal.h"
#include "state.h"
#include "virtiofsd.h"

#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];

static void setup(void) {
  strcpy(tmpdir, "/tmp/hm-core-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ck_assert_int_eq(system(cmd), 0);
}

static char *path_in_tmp(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", tmpdir, name), 0);
  return p;
}

/* Validates a spec with the given paths; returns the code, message in *msg. */
static int validate(const char *host, const char *guest, char **msg, hm_mount_spec **out) {
  hm_mount_spec *s = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  if (host)
    ck_assert_int_eq(hm_mount_spec_set_host_path(s, host, NULL), 0);
  if (guest)
    ck_assert_int_eq(hm_mount_spec_set_guest_path(s, guest, NULL), 0);
  int r = hm_mount_spec_validate(s, &err);
  if (msg)
    *msg = strdup(hm_error_message(err));
  hm_error_free(err);
  if (out && r == 0)
    *out = s;
  else
    hm_mount_spec_free(s);
  return r;
}

START_TEST(test_error_classes) {
  ck_assert_int_eq(hm_error_class(NULL), HM_ECLASS_NONE);
  ck_assert_ptr_null(hm_error_detail(NULL));
  hm_error *err = NULL;
  /* A peer's code implies its class; the library's own conditions have none. */
  HM_ERR(&err, HM_E_AGENT, "x");
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_AGENT);
  hm_error_free(err);
  err = NULL;
  HM_ERR(&err, HM_E_IO, "x");
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_NONE);
  hm_error_free(err);
  err = NULL;
  /* Public setters, for backends: message as given, class BACKEND. */
  ck_assert_int_eq(hm_error_set(&err, HM_E_IO, "mine: %s %d", "disk", 3), HM_E_IO);
  ck_assert_str_eq(hm_error_message(err), "mine: disk 3");
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_BACKEND);
  ck_assert_int_eq(hm_error_set(&err, HM_E_TIMEOUT, "second"), HM_E_TIMEOUT);
  ck_assert_str_eq(hm_error_message(err), "mine: disk 3"); /* the first one stays */
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_error_set(NULL, HM_E_IO, "nowhere"), HM_E_IO);
  ck_assert_int_eq(hm_error_set_class(&err, HM_E_QMP, HM_ECLASS_QMP, "DeviceNotFound", "q"),
                   HM_E_QMP);
  ck_assert_str_eq(hm_error_detail(err), "DeviceNotFound");
  /* Context added on the way up keeps where it came from. */
  hm_error_prefix(&err, HM_E_NOT_READY, "outer", "while %s", "y");
  ck_assert_int_eq(hm_error_code(err), HM_E_NOT_READY);
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_QMP);
  ck_assert_str_eq(hm_error_detail(err), "DeviceNotFound");
  ck_assert_str_eq(hm_error_message(err), "outer: while y: q");
  hm_error_free(err);
  err = NULL;
  /* An out-of-range class falls back to the code's. */
  hm_error_set_class(&err, HM_E_HELPER, 99, NULL, "h");
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_HELPER);
  hm_error_free(err);
  for (int k = HM_ECLASS_NONE; k <= HM_ECLASS_LAST; k++)
    ck_assert_int_eq(hm_error_class_parse(hm_error_class_name(k)), k);
  ck_assert_str_eq(hm_error_class_name(HM_ECLASS_HTTP), "http");
  ck_assert_str_eq(hm_error_class_name(-1), "none");
  ck_assert_int_eq(hm_error_class_parse("bogus"), HM_ECLASS_NONE);
  /* Library-owned allocation for backends. */
  char *d = hm_strdup("why");
  ck_assert_str_eq(d, "why");
  hm_free(d);
  ck_assert_ptr_null(hm_strdup(NULL));
  void **v = hm_alloc(4, sizeof(void *));
  ck_assert(v && !v[3]);
  hm_free(v);
  ck_assert_ptr_null(hm_alloc(SIZE_MAX / 2, 4));
}
END_TEST

START_TEST(test_error_basics) {
  ck_assert_int_eq(hm_error_code(NULL), 0);
  ck_assert_str_eq(hm_error_message(NULL), "");
  hm_error_free(NULL);
  hm_error *err = NULL;
  int r = HM_ERR(&err, HM_E_NO_SLOT, "slot %d", 7);
  ck_assert_int_eq(r, HM_E_NO_SLOT);
  ck_assert_int_eq(hm_error_code(err), HM_E_NO_SLOT);
  ck_assert_str_eq(hm_error_message(err), "test_error_basics_fn: slot 7");
  /* A second error does not replace the first. */
  HM_ERR(&err, HM_E_IO, "other");
  ck_assert_int_eq(hm_error_code(err), HM_E_NO_SLOT);
  ck_assert_int_eq(hm_error_prefix(&err, HM_E_NOT_READY, "ctx", "while %s", "x"), HM_E_NOT_READY);
  ck_assert_str_eq(hm_error_message(err), "ctx: while x: test_error_basics_fn: slot 7");
  ck_assert_int_eq(hm_error_code(err), HM_E_NOT_READY);
  hm_error_free(err);
  ck_assert_str_eq(hm_strerror(HM_E_NO_SLOT), "no free hot-plug slot");
  ck_assert_str_eq(hm_strerror(-13), "Permission denied");
  ck_assert_int_eq(HM_E_INVALID, -22);
}
END_TEST

START_TEST(test_version) {
  ck_assert_str_eq(hm_version(), HM_VERSION_STRING);
  ck_assert_uint_eq(hm_version_number(),
                    HM_VERSION_MAJOR * 10000u + HM_VERSION_MINOR * 100u + HM_VERSION_PATCH);
  ck_assert(HM_CHECK_VERSION(0, 0, 1));
  ck_assert(!HM_CHECK_VERSION(HM_VERSION_MAJOR + 1, 0, 0));
}
END_TEST

START_TEST(test_spec_defaults_and_setters) {
  hm_mount_spec *s = NULL, *c = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_get_type(s), HM_TYPE_VIRTIOFS);
  ck_assert_int_eq(hm_mount_spec_get_writable(s), 0);
  ck_assert_int_eq(hm_mount_spec_set_type(s, 99, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(
      strstr(hm_error_message(err), "hm_mount_spec_set_type: unknown mount type 99"));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, NULL, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_mount_spec_set_option(s, "", "x", NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_mount_spec_set_option(s, "cache", "never", NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_writable(s, 5, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_get_writable(s), 1);
  ck_assert_int_eq(hm_mount_spec_copy(&c, s, NULL), 0);
  ck_assert_str_eq(hm_mount_spec_get_option(c, "cache"), "never");
  ck_assert_ptr_null(hm_mount_spec_get_option(c, "nope"));
  hm_mount_spec_free(s);
  hm_mount_spec_free(c);
  hm_mount_spec_free(NULL);
  ck_assert_int_eq(hm_mount_type_parse("9p", NULL), HM_TYPE_9P);
  ck_assert_int_eq(hm_mount_type_parse("nfs", &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "unknown mount type \"nfs\""));
  hm_error_free(err);
}
END_TEST

START_TEST(test_validate_host_paths) {
  char *msg = NULL;
  hm_mount_spec *s = NULL;
  char *missing = path_in_tmp("missing");
  ck_assert_int_eq(validate(missing, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "does not exist"));
  free(msg);

  char *file = path_in_tmp("file");
  FILE *f = fopen(file, "w");
  fclose(f);
  ck_assert_int_eq(validate(file, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "not a directory"));
  free(msg);

  /* Awkward but legal names work and come back canonical. */
  const char *names[] = {"with space", "with,comma", "quo\"te's", "ünïcødé ✓", "semi;colon$"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    char *d = path_in_tmp(names[i]);
    ck_assert_int_eq(mkdir(d, 0755), 0);
    char *dd = NULL;
    ck_assert_int_ge(asprintf(&dd, "%s/./", d), 0);
    ck_assert_int_eq(validate(dd, "/mnt/x", &msg, &s), 0);
    ck_assert_str_eq(hm_mount_spec_get_host_path(s), d);
    hm_mount_spec_free(s);
    free(msg);
    free(d);
    free(dd);
  }

  char *nl = path_in_tmp("new\nline");
  ck_assert_int_eq(mkdir(nl, 0755), 0);
  ck_assert_int_eq(validate(nl, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "control character"));
  free(msg);

  ck_assert_int_eq(validate("/tmp/\xff\xfe", "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "not valid UTF-8"));
  free(msg);
  /* The same rules as guest paths: an overlong '/' and a surrogate are not
   * UTF-8; a C1 control (U+0085, NEL) is a control character. */
  ck_assert_int_eq(validate("/tmp/a\xc0\xaf"
                            "b",
                            "/mnt/x", &msg, NULL),
                   HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "not valid UTF-8 (byte 6)"));
  free(msg);
  ck_assert_int_eq(validate("/tmp/\xed\xa0\x80", "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "not valid UTF-8"));
  free(msg);
  ck_assert_int_eq(validate("/tmp/a\xc2\x85", "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "control character (byte 6)"));
  free(msg);

  /* A symlink is followed to the real directory; a link to "/" is refused. */
  char *real = path_in_tmp("real"), *link = path_in_tmp("link"), *rootlink = path_in_tmp("rl");
  ck_assert_int_eq(mkdir(real, 0755), 0);
  ck_assert_int_eq(symlink(real, link), 0);
  ck_assert_int_eq(symlink("/", rootlink), 0);
  ck_assert_int_eq(validate(link, "/mnt/x", &msg, &s), 0);
  ck_assert_str_eq(hm_mount_spec_get_host_path(s), real);
  hm_mount_spec_free(s);
  free(msg);
  ck_assert_int_eq(validate(rootlink, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "not shareable"));
  free(msg);
  ck_assert_int_eq(validate("/proc/self", "/mnt/x", &msg, NULL), HM_E_INVALID);
  free(msg);

  /* A 4 KiB name. */
  char *big = malloc(4200);
  snprintf(big, 4200, "%s/", tmpdir);
  memset(big + strlen(big), 'a', 4096);
  big[strlen(tmpdir) + 1 + 4096] = '\0';
  ck_assert_int_eq(validate(big, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "too long"));
  free(msg);
  free(big);

  ck_assert_int_eq(validate(NULL, "/mnt/x", &msg, NULL), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(msg, "host path is missing"));
  free(msg);
  free(missing);
  free(file);
  free(nl);
  free(real);
  free(link);
  free(rootlink);
}
END_TEST

START_TEST(test_validate_guest_paths) {
  char *msg = NULL;
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(validate(tmpdir, "/mnt//a/./b/", &msg, &s), 0);
  ck_assert_str_eq(hm_mount_spec_get_guest_path(s), "/mnt/a/b");
  hm_mount_spec_free(s);
  free(msg);
  const char *bad[] = {"relative/x",  "/",         "/proc", "/proc/sys", "/etc", "/etc/foo",
                       "/mnt/../etc", "/mnt/a\nb", "",      "/sys/x",    "/dev", "/usr/local/x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ck_assert_msg(validate(tmpdir, bad[i], &msg, NULL) == HM_E_INVALID, "accepted %s", bad[i]);
    ck_assert_msg(strlen(msg) > 20, "message too thin for %s: %s", bad[i], msg);
    free(msg);
  }
  ck_assert_int_eq(validate(tmpdir, NULL, &msg, NULL), HM_E_INVALID);
  free(msg);
}
END_TEST

START_TEST(test_validate_options) {
  hm_mount_spec *s = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  hm_mount_spec_set_host_path(s, tmpdir, NULL);
  hm_mount_spec_set_guest_path(s, "/mnt/x", NULL);
  hm_mount_spec_set_option(s, "msize", "262144", NULL);
  /* Which options a type takes is the backend's rule (the QEMU backend's
   * validate op here); the generic validation only checks they are text. */
  ck_assert_int_eq(hm_mount_spec_validate(s, NULL), 0);
  ck_assert_uint_eq(hm_mount_spec_get_option_count(s), 1);
  ck_assert_str_eq(hm_mount_spec_get_option_key(s, 0), "msize");
  ck_assert_ptr_null(hm_mount_spec_get_option_key(s, 1));
  ck_assert_int_eq(hm_qemu_validate(NULL, s, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "unknown option \"msize\" for virtiofs"));
  ck_assert_int_eq(hm_error_class(err), HM_ECLASS_INPUT);
  hm_error_free(err);
  err = NULL;
  hm_mount_spec_set_type(s, HM_TYPE_9P, NULL);
  ck_assert_int_eq(hm_qemu_validate(NULL, s, NULL), 0);
  hm_mount_spec_set_option(s, "msize", "12abc", NULL);
  ck_assert_int_eq(hm_qemu_validate(NULL, s, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "must be a number"));
  hm_error_free(err);
  err = NULL;
  hm_mount_spec_set_option(s, "msize", NULL, NULL);
  hm_mount_spec_set_option(s, "cache", "bogus", NULL);
  ck_assert_int_eq(hm_qemu_validate(NULL, s, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "cache=\"bogus\" is not valid for 9p"));
  hm_error_free(err);
  err = NULL;
  /* Option values are still text. */
  hm_mount_spec_set_option(s, "cache", "a\nb", NULL);
  ck_assert_int_eq(hm_mount_spec_validate(s, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "control character"));
  hm_error_free(err);
  hm_mount_spec_free(s);
}
END_TEST

static int spec_json_code(const char *text, char **msg) {
  hm_mount_spec *s = NULL;
  hm_error *err = NULL;
  int r = hm_mount_spec_from_json(&s, text, strlen(text), &err);
  *msg = strdup(hm_error_message(err));
  hm_error_free(err);
  hm_mount_spec_free(s);
  return r;
}

START_TEST(test_spec_json) {
  struct {
    const char *text, *needle;
  } bad[] = {
      {"{", "malformed JSON"},
      {"", "malformed JSON"},
      {"[]", "must be a JSON object"},
      {"{\"hostPath\":\"/a\",\"mountPoint\":\"/b\"} x", "malformed JSON"},
      {"{\"mountPoint\":\"/b\"}", "missing member \"hostPath\""},
      {"{\"hostPath\":1,\"mountPoint\":\"/b\"}", "\"hostPath\" must be a string"},
      {"{\"hostPath\":\"/a\",\"mountPoint\":\"/b\",\"writable\":\"yes\"}",
       "\"writable\" must be a boolean"},
      {"{\"hostPath\":\"/a\",\"mountPoint\":\"/b\",\"type\":\"nfs\"}", "unknown mount type"},
      {"{\"hostPath\":\"/a\",\"mountPoint\":\"/b\",\"bogus\":1}", "unknown member \"bogus\""},
      {"{\"hostPath\":\"/a\",\"mountPoint\":\"/b\",\"options\":{\"msize\":5}}",
       "option \"msize\" must be a string"},
  };
  char *msg;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ck_assert_msg(spec_json_code(bad[i].text, &msg) == HM_E_INVALID, "accepted %s", bad[i].text);
    ck_assert_msg(strstr(msg, bad[i].needle), "%s: got \"%s\"", bad[i].text, msg);
    free(msg);
  }
  const char *good = "{\"hostPath\":\"/a b,c\",\"mountPoint\":\"/mnt/x\",\"type\":\"9p\","
                     "\"writable\":true,\"persist\":true,\"options\":{\"msize\":\"65536\"}}";
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_from_json(&s, good, strlen(good), NULL), 0);
  ck_assert_str_eq(hm_mount_spec_get_host_path(s), "/a b,c");
  ck_assert_int_eq(hm_mount_spec_get_type(s), HM_TYPE_9P);
  ck_assert_int_eq(hm_mount_spec_get_writable(s), 1);
  ck_assert_int_eq(hm_mount_spec_get_persist(s), 1);
  ck_assert_str_eq(hm_mount_spec_get_option(s, "msize"), "65536");
  json_object *o = hm_mount_spec_to_json_object(s);
  const char *again = json_object_to_json_string(o);
  hm_mount_spec *s2 = NULL;
  ck_assert_int_eq(hm_mount_spec_from_json(&s2, again, strlen(again), NULL), 0);
  ck_assert_str_eq(hm_mount_spec_get_host_path(s2), "/a b,c");
  json_object_put(o);
  hm_mount_spec_free(s);
  hm_mount_spec_free(s2);
}
END_TEST

START_TEST(test_mount_list_json) {
  hm_mount_spec spec = {.host_path = "/h", .guest_path = "/mnt/g", .type = HM_TYPE_VIRTIOFS};
  hm_mount *m = NULL;
  hm_mount_list *l = NULL, *back = NULL;
  char *text = NULL;
  ck_assert_int_eq(hm_mount_build(&m, "hm-1", &spec, "hm-1", NULL, HM_STATE_BROKEN, "gone"), 0);
  ck_assert_int_eq(hm_mount_list_new(&l), 0);
  ck_assert_int_eq(hm_mount_list_take(l, m), 0);
  ck_assert_int_eq(hm_mount_list_to_json(&text, l, NULL), 0);
  ck_assert_ptr_nonnull(strstr(text, "\"mountPoint\":\"/mnt/g\""));
  ck_assert_ptr_nonnull(strstr(text, "\"state\":\"broken\""));
  ck_assert_int_eq(hm_mount_list_from_json(&back, text, strlen(text), NULL), 0);
  ck_assert_uint_eq(hm_mount_list_count(back), 1);
  const hm_mount *b = hm_mount_list_get(back, 0);
  ck_assert_str_eq(hm_mount_get_reason(b), "gone");
  ck_assert_int_eq(hm_mount_get_state(b), HM_STATE_BROKEN);
  ck_assert_ptr_null(hm_mount_list_get(back, 1));
  hm_error *err = NULL;
  hm_mount_list *bad = NULL;
  ck_assert_int_eq(hm_mount_list_from_json(&bad, "[{\"id\":1}]", 10, &err), HM_E_PROTOCOL);
  hm_error_free(err);
  free(text);
  hm_mount_list_free(l);
  hm_mount_list_free(back);
}
END_TEST

static hm_entry *make_entry(const char *id, const char *guest, int with_att) {
  hm_entry *e = calloc(1, sizeof(*e));
  e->id = strdup(id);
  hm_mount_spec_new(&e->spec, NULL);
  hm_mount_spec_set_host_path(e->spec, "/srv/a,b c", NULL);
  hm_mount_spec_set_guest_path(e->spec, guest, NULL);
  hm_mount_spec_set_option(e->spec, "cache", "never", NULL);
  e->state = HM_STATE_MOUNTED;
  if (with_att) {
    hm_attachment_new(&e->att, id, NULL);
    hm_attachment_set_tag(e->att, id, NULL);
    hm_attachment_set_data(e->att, "slot", "3", NULL);
  }
  return e;
}

static void free_entries(hm_entry **v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i]->id);
    free(v[i]->reason);
    hm_mount_spec_free(v[i]->spec);
    hm_attachment_free(v[i]->att);
    free(v[i]);
  }
  free(v);
}

START_TEST(test_state_roundtrip) {
  char *path = path_in_tmp("state.json");
  hm_entry *in[2] = {make_entry("hm-4", "/mnt/a", 1), make_entry("hm-5", "/mnt/b", 0)};
  ck_assert_int_eq(hm_state_save(path, 6, "boot-1", in, 2, NULL), 0);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  unsigned next = 0;
  hm_entry **out = NULL;
  size_t n = 0;
  char *boot = NULL;
  ck_assert_int_eq(hm_state_load(path, &next, &boot, &out, &n, NULL), 0);
  ck_assert_str_eq(boot, "boot-1");
  free(boot);
  ck_assert_uint_eq(next, 6);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(out[0]->id, "hm-4");
  ck_assert_str_eq(out[0]->spec->host_path, "/srv/a,b c");
  ck_assert_str_eq(hm_kv_get(&out[0]->spec->options, "cache"), "never");
  ck_assert_str_eq(hm_attachment_get_data(out[0]->att, "slot"), "3");
  ck_assert_str_eq(hm_attachment_get_tag(out[0]->att), "hm-4");
  ck_assert_ptr_null(out[1]->att);
  free_entries(out, n);
  for (int i = 0; i < 2; i++) {
    hm_entry *one[1] = {in[i]};
    free_entries(NULL, 0);
    (void)one;
  }
  free(in[0]->id), free(in[1]->id);
  hm_mount_spec_free(in[0]->spec), hm_mount_spec_free(in[1]->spec);
  hm_attachment_free(in[0]->att);
  free(in[0]), free(in[1]);
  /* A missing file is an empty registry. */
  unlink(path);
  ck_assert_int_eq(hm_state_load(path, &next, &boot, &out, &n, NULL), 0);
  ck_assert_uint_eq(n, 0);
  ck_assert_uint_eq(next, 1);
  ck_assert_ptr_null(boot);
  free(path);
}
END_TEST

static int count_corrupt(void) {
  int n = 0;
  DIR *d = opendir(tmpdir);
  struct dirent *de;
  while ((de = readdir(d)))
    n += strncmp(de->d_name, "state.json.corrupt-", 19) == 0;
  closedir(d);
  return n;
}

START_TEST(test_state_corrupt) {
  const char *bodies[] = {"{\"version\":1,\"nextId\":3,\"mou", "not json at all",
                          "{\"version\":1,\"nextId\":3,\"mounts\":[{\"id\":7}]}",
                          "{\"version\":99,\"nextId\":3,\"mounts\":[]}", "[]"};
  char *path = path_in_tmp("state.json");
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    FILE *f = fopen(path, "w");
    fputs(bodies[i], f);
    fclose(f);
    unsigned next = 0;
    hm_entry **out = NULL;
    size_t n = 99;
    char *boot = NULL;
    ck_assert_int_eq(hm_state_load(path, &next, &boot, &out, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(boot);
    ck_assert_int_eq(access(path, F_OK), -1); /* moved aside */
    ck_assert_int_ge(count_corrupt(), 1);
    free(out);
    /* Different seconds are not guaranteed: clear the kept copies. */
    char cmd[PATH_MAX + 40];
    snprintf(cmd, sizeof(cmd), "rm -f '%s'/state.json.corrupt-*", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
  }
  free(path);
}
END_TEST

static size_t count_args(char **v, const char *needle) {
  size_t n = 0;
  for (; *v; v++)
    n += strstr(*v, needle) != NULL;
  return n;
}

START_TEST(test_qemu_args) {
  hm_qemu_config *c = NULL;
  char **args = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&c, "/run/a,b", NULL), 0);
  ck_assert_int_eq(hm_qemu_config_build_args(&args, c, NULL), 0);
  ck_assert_uint_eq(count_args(args, "pcie-root-port,id=hm-rp-"), 32);
  ck_assert_uint_eq(count_args(args, "multifunction=on"), 4);
  ck_assert_uint_eq(count_args(args, "memory-backend-memfd,id=hm-mem,size=1024M,share=on"), 1);
  ck_assert_uint_eq(count_args(args, "path=/run/a,,b/agent.sock"), 1);
  ck_assert_uint_eq(count_args(args, "path=/run/a,,b/qmp.sock"), 1);
  ck_assert_uint_eq(count_args(args, "name=org.hotmount.agent.0"), 1);
  hm_strv_free(args);
  ck_assert_int_eq(hm_qemu_config_set_slots(c, 0, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_qemu_config_set_slots(c, 65, NULL), HM_E_INVALID);
  ck_assert_int_eq(hm_qemu_config_set_slots(c, 9, NULL), 0);
  ck_assert_int_eq(hm_qemu_config_set_memory(c, "2G", NULL), 0);
  ck_assert_int_eq(hm_qemu_config_build_args(&args, c, NULL), 0);
  ck_assert_uint_eq(count_args(args, "pcie-root-port"), 9);
  ck_assert_uint_eq(count_args(args, "size=2048M"), 1);
  ck_assert_uint_eq(count_args(args, "addr=0x11.0,multifunction=on"), 1);
  ck_assert_uint_eq(count_args(args, "id=hm-rp-8,bus=pcie.0,chassis=200,slot=8,"), 1);
  hm_strv_free(args);
  const char *good[] = {"512", "512M", "4g", "1G", "3GB"};
  for (size_t i = 0; i < 5; i++)
    ck_assert_msg(hm_qemu_config_set_memory(c, good[i], NULL) == 0, "refused %s", good[i]);
  const char *bad[] = {"", "x", "12Q", "-1G", "1G,share=off", "10"};
  for (size_t i = 0; i < 6; i++) {
    ck_assert_msg(hm_qemu_config_set_memory(c, bad[i], &err) == HM_E_INVALID, "took %s", bad[i]);
    hm_error_free(err);
    err = NULL;
  }
  hm_qemu_config_free(c);
  ck_assert_int_eq(hm_qemu_config_new(&c, "/a\nb", &err), HM_E_INVALID);
  hm_error_free(err);
}
END_TEST

START_TEST(test_virtiofsd_argv) {
  hm_virtiofsd_info c = {.path = "/usr/lib/qemu/virtiofsd", .flavor = HM_VIRTIOFSD_C};
  hm_virtiofsd_info rust = {
      .path = "/usr/libexec/virtiofsd", .flavor = HM_VIRTIOFSD_RUST, .has_readonly = 1};
  char **v = NULL;
  int ro_bind = -1;
  ck_assert_int_eq(hm_virtiofsd_argv(&v, &ro_bind, &c, "/a,b\\c", 1, NULL, 3, NULL), 0);
  ck_assert_int_eq(ro_bind, 1);
  ck_assert_str_eq(v[1], "--fd=3");
  ck_assert_str_eq(v[2], "-o");
  ck_assert_str_eq(v[3], "source=/a\\,b\\\\c");
  ck_assert_str_eq(v[5], "cache=auto");
  /* No device nodes, setuid bits kept on writes or file capabilities. */
  ck_assert_str_eq(v[6], "-o");
  ck_assert_str_eq(v[7], "modcaps=-mknod:-fsetid:-setfcap");
  ck_assert_ptr_null(v[8]);
  hm_strv_free(v);
  ck_assert_int_eq(hm_virtiofsd_argv(&v, &ro_bind, &rust, "/a,b", 1, "never", 3, NULL), 0);
  ck_assert_int_eq(ro_bind, 0);
  ck_assert_str_eq(v[2], "--shared-dir");
  ck_assert_str_eq(v[3], "/a,b");
  ck_assert_str_eq(v[4], "--cache=never");
  ck_assert_str_eq(v[5], "--readonly");
  hm_strv_free(v);
  rust.has_readonly = 0;
  ck_assert_int_eq(hm_virtiofsd_argv(&v, &ro_bind, &rust, "/a", 0, NULL, 3, NULL), 0);
  ck_assert_int_eq(ro_bind, 0);
  ck_assert_uint_eq(count_args(v, "--readonly"), 0);
  hm_strv_free(v);
  hm_virtiofsd_info found = {0};
  hm_error *err = NULL;
  ck_assert_int_eq(hm_virtiofsd_detect(&found, "/nonexistent/virtiofsd", &err), HM_E_UNSUPPORTED);
  hm_error_free(err);
  /* Flavour detection reads --help: a stand-in that answers like the Rust
   * virtiofsd 1.13 (which this Debian does not ship). */
  char *fake = path_in_tmp("virtiofsd");
  FILE *f = fopen(fake, "w");
  fputs("#!/bin/sh\necho 'Usage: virtiofsd [OPTIONS] --shared-dir <SHARED_DIR>'\n"
        "echo '      --readonly   Share directory in read-only mode'\n",
        f);
  fclose(f);
  chmod(fake, 0755);
  ck_assert_int_eq(hm_virtiofsd_detect(&found, fake, NULL), 0);
  ck_assert_int_eq(found.flavor, HM_VIRTIOFSD_RUST);
  ck_assert_int_eq(found.has_readonly, 1);
  hm_virtiofsd_info_clear(&found);
  f = fopen(fake, "w");
  fputs("#!/bin/sh\necho 'Usage: virtiofsd [OPTIONS] --shared-dir <SHARED_DIR>'\n", f);
  fclose(f);
  ck_assert_int_eq(hm_virtiofsd_detect(&found, fake, NULL), 0);
  ck_assert_int_eq(found.flavor, HM_VIRTIOFSD_RUST);
  ck_assert_int_eq(found.has_readonly, 0); /* older Rust virtiofsd: ro bind instead */
  hm_virtiofsd_info_clear(&found);
  setenv("HOTMOUNT_VIRTIOFSD", fake, 1);
  ck_assert_int_eq(hm_virtiofsd_detect(&found, NULL, NULL), 0);
  ck_assert_str_eq(found.path, fake);
  hm_virtiofsd_info_clear(&found);
  unsetenv("HOTMOUNT_VIRTIOFSD");
  free(fake);
  if (access("/usr/lib/qemu/virtiofsd", X_OK) == 0) {
    ck_assert_int_eq(hm_virtiofsd_detect(&found, "/usr/lib/qemu/virtiofsd", NULL), 0);
    ck_assert_int_eq(found.flavor, HM_VIRTIOFSD_C);
    ck_assert_int_eq(found.has_readonly, 0);
    hm_virtiofsd_info_clear(&found);
  }
}
END_TEST

START_TEST(test_instance_dir) {
  char *out = NULL;
  hm_error *err = NULL;
  setenv("HOTMOUNT_HOME", "/srv/hm", 1);
  ck_assert_int_eq(hm_instance_dir_resolve(&out, "vm1", NULL), 0);
  ck_assert_str_eq(out, "/srv/hm/vm1");
  free(out);
  ck_assert_int_eq(hm_instance_dir_resolve(&out, "./x", NULL), 0);
  ck_assert_str_eq(out, "./x");
  free(out);
  unsetenv("HOTMOUNT_HOME");
  setenv("HOME", "/home/u", 1);
  ck_assert_int_eq(hm_instance_dir_resolve(&out, "a.b-c_d", NULL), 0);
  ck_assert_str_eq(out, "/home/u/.hotmount/a.b-c_d");
  free(out);
  const char *bad[] = {"", ".", "..", "a b", "a;b", "ü"};
  for (size_t i = 0; i < 6; i++) {
    ck_assert_int_eq(hm_instance_dir_resolve(&out, bad[i], &err), HM_E_INVALID);
    ck_assert_ptr_nonnull(strstr(hm_error_message(err), "not valid"));
    hm_error_free(err);
    err = NULL;
  }
  char longp[200];
  memset(longp, 'a', sizeof(longp));
  longp[0] = '/';
  longp[199] = '\0';
  ck_assert_int_eq(hm_instance_dir_resolve(&out, longp, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "too long"));
  hm_error_free(err);
}
END_TEST

static int destroyed;
static void fake_destroy(void *impl) {
  destroyed += impl == (void *)&destroyed;
}
static int fake_attach(void *impl, const hm_mount_spec *s, hm_attachment *a, hm_error **err) {
  return 0; /* forgets to set the tag */
}
static int detached;
static int fake_detach(void *impl, hm_attachment *a, hm_error **err) {
  detached++;
  return 0;
}

START_TEST(test_hotplugger_vtable) {
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  destroyed = 0;
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, NULL, NULL, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  /* Missing attach: refused, and destroy still runs exactly once. */
  hm_fs_hotplugger_ops ops = {.struct_size = sizeof(ops), .name = "t", .destroy = fake_destroy};
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &ops, &destroyed, &err), HM_E_INVALID);
  ck_assert_int_eq(destroyed, 1);
  hm_error_free(err);
  err = NULL;
  /* An "older" backend whose struct ends before free_slots: the members it
   * does not know are treated as absent even if garbage follows. */
  hm_fs_hotplugger_ops big;
  memset(&big, 0xff, sizeof(big));
  big.struct_size = offsetof(hm_fs_hotplugger_ops, free_slots);
  big.name = "old";
  big.types = 1u << HM_TYPE_VIRTIOFS;
  big.attach = fake_attach;
  big.detach = fake_detach;
  ck_assert_int_eq(hm_fs_hotplugger_new(&hp, &big, NULL, NULL), 0);
  ck_assert_str_eq(hm_fs_hotplugger_get_name(hp), "old");
  ck_assert(hm_fs_hotplugger_supports(hp, HM_TYPE_VIRTIOFS));
  ck_assert(!hm_fs_hotplugger_supports(hp, HM_TYPE_9P));
  ck_assert_int_eq(hm_fs_hotplugger_free_slots(hp, HM_TYPE_VIRTIOFS, &err), HM_E_UNSUPPORTED);
  hm_error_free(err);
  err = NULL;
  /* An attach that sets no tag is undone and reported. */
  hm_attachment *att = NULL;
  hm_mount_spec *s = NULL;
  hm_mount_spec_new(&s, NULL);
  hm_attachment_new(&att, "hm-1", NULL);
  detached = 0;
  ck_assert_int_eq(hm_fs_hotplugger_attach(hp, s, att, &err), HM_E_INTERNAL);
  ck_assert_int_eq(detached, 1);
  hm_error_free(err);
  hm_attachment_free(att);
  hm_mount_spec_free(s);
  hm_fs_hotplugger_free(hp); /* no destroy member: must not call garbage */
  hm_fs_hotplugger_free(NULL);
}
END_TEST

/* The bind backend maps a host path to the guest directory inside the
 * boot-time share that holds it (longest share wins), and names the problem
 * when none does. */
START_TEST(test_bind_backend) {
  char a[PATH_MAX + 32], ab[PATH_MAX + 32], ab_c[PATH_MAX + 32], other[PATH_MAX + 32],
      file[PATH_MAX + 32];
  snprintf(a, sizeof(a), "%s/a", tmpdir);
  snprintf(ab, sizeof(ab), "%s/a/b", tmpdir);
  snprintf(ab_c, sizeof(ab_c), "%s/a/b/c d", tmpdir);
  snprintf(other, sizeof(other), "%s/other", tmpdir);
  snprintf(file, sizeof(file), "%s/file", tmpdir);
  ck_assert_int_eq(mkdir(a, 0755), 0);
  ck_assert_int_eq(mkdir(ab, 0755), 0);
  ck_assert_int_eq(mkdir(ab_c, 0755), 0);
  ck_assert_int_eq(mkdir(other, 0755), 0);
  fclose(fopen(file, "w"));
  const char *hosts[] = {a, ab};
  const char *guests[] = {"/srv/a", "/mnt/b"};
  hm_fs_hotplugger *hp = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_bind_hotplugger_new(&hp, hosts, guests, 2, &err), 0);
  ck_assert(hm_fs_hotplugger_supports(hp, HM_TYPE_BIND));
  ck_assert(!hm_fs_hotplugger_supports(hp, HM_TYPE_VIRTIOFS));
  ck_assert_str_eq(hm_fs_hotplugger_get_name(hp), "bind");

  struct {
    const char *host, *want;
  } cases[] = {{a, "/srv/a"}, {ab, "/mnt/b"}, {ab_c, "/mnt/b/c d"}};
  for (size_t i = 0; i < 3; i++) {
    hm_mount_spec *spec = NULL;
    hm_attachment *att = NULL;
    ck_assert_int_eq(hm_mount_spec_new(&spec, NULL), 0);
    ck_assert_int_eq(hm_mount_spec_set_type(spec, HM_TYPE_BIND, NULL), 0);
    ck_assert_int_eq(hm_mount_spec_set_host_path(spec, cases[i].host, NULL), 0);
    ck_assert_int_eq(hm_mount_spec_set_guest_path(spec, "/mnt/x", NULL), 0);
    ck_assert_int_eq(hm_mount_spec_validate(spec, NULL), 0);
    ck_assert_int_eq(hm_attachment_new(&att, "hm-1", NULL), 0);
    int r = hm_fs_hotplugger_attach(hp, spec, att, &err);
    ck_assert_msg(r == 0, "attach %s: %s", cases[i].host, hm_error_message(err));
    ck_assert_str_eq(hm_attachment_get_tag(att), cases[i].want);
    ck_assert_int_eq(hm_fs_hotplugger_detach(hp, att, NULL), 0);
    hm_attachment_free(att);
    hm_mount_spec_free(spec);
  }
  /* Outside every share: refused, naming the path and the shares. */
  hm_mount_spec *spec = NULL;
  hm_attachment *att = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&spec, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_type(spec, HM_TYPE_BIND, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(spec, other, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(spec, "/mnt/x", NULL), 0);
  ck_assert_int_eq(hm_mount_spec_validate(spec, NULL), 0);
  ck_assert_int_eq(hm_attachment_new(&att, "hm-2", NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_attach(hp, spec, att, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), "is not inside a boot-time share of this VM") &&
                    strstr(hm_error_message(err), other) &&
                    strstr(hm_error_message(err), "(guest /mnt/b)"),
                "%s", hm_error_message(err));
  ck_assert_ptr_null(hm_attachment_get_tag(att));
  hm_error_free(err);
  err = NULL;
  hm_fs_hotplugger_free(hp);

  /* No share at all: says how to declare one. */
  ck_assert_int_eq(hm_bind_hotplugger_new(&hp, NULL, NULL, 0, NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_attach(hp, spec, att, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), "none is declared (hotmountd --boot-share"), "%s",
                hm_error_message(err));
  hm_error_free(err);
  err = NULL;
  hm_fs_hotplugger_free(hp);
  hm_attachment_free(att);
  hm_mount_spec_free(spec);

  /* Bad declarations, each named. */
  struct {
    const char *host, *guest, *needle;
  } bad[] = {{"rel/dir", "/mnt/a", "is not absolute"},
             {"/nonexistent/hm", "/mnt/a", "/nonexistent/hm: No such file"},
             {file, "/mnt/a", "is not a directory"},
             {a, "mnt/a", "share guest directory"},
             {a, "/mnt/../a", "'..'"},
             {a, "/mnt//a/", "not in normal form (say /mnt/a)"}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char *h[] = {bad[i].host}, *g[] = {bad[i].guest};
    hp = NULL;
    ck_assert_int_eq(hm_bind_hotplugger_new(&hp, h, g, 1, &err), HM_E_INVALID);
    ck_assert_ptr_null(hp);
    ck_assert_msg(strstr(hm_error_message(err), bad[i].needle) &&
                      !strncmp(hm_error_message(err), "hm_bind_hotplugger_new: ", 24),
                  "case %zu: %s", i, hm_error_message(err));
    hm_error_free(err);
    err = NULL;
  }
  ck_assert_int_eq(hm_bind_hotplugger_new(NULL, NULL, NULL, 0, &err), HM_E_INVALID);
  hm_error_free(err);
  ck_assert_int_eq(hm_mount_type_parse("bind", NULL), HM_TYPE_BIND);
  ck_assert_str_eq(hm_mount_type_name(HM_TYPE_BIND), "bind");
}
END_TEST

int main(void) {
  Suite *s = suite_create("core");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_error_basics);
  tcase_add_test(tc, test_error_classes);
  tcase_add_test(tc, test_version);
  tcase_add_test(tc, test_spec_defaults_and_setters);
  tcase_add_test(tc, test_validate_host_paths);
  tcase_add_test(tc, test_validate_guest_paths);
  tcase_add_test(tc, test_validate_options);
  tcase_add_test(tc, test_spec_json);
  tcase_add_test(tc, test_mount_list_json);
  tcase_add_test(tc, test_state_roundtrip);
  tcase_add_test(tc, test_state_corrupt);
  tcase_add_test(tc, test_qemu_args);
  tcase_add_test(tc, test_virtiofsd_argv);
  tcase_add_test(tc, test_instance_dir);
  tcase_add_test(tc, test_hotplugger_vtable);
  tcase_add_test(tc, test_bind_backend);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
