/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VZ backend's C side through the fs_hotplugger vtable, against the fake
 * shim (tests/fakes/fake_vz_shim.c) that stands in for Virtualization.framework:
 * spare allocation and the tag returned, release and reuse, exhaustion,
 * read-only passed through, rollback on a shim failure, idempotent detach,
 * concurrent attaches, refusal of other mount types, the constructors' error
 * paths, the configuration helper, status facts; and, in a build without the
 * macOS shim, that the public constructors answer HM_E_UNSUPPORTED.
 */
#include "driver_internal.h"
#include "status_internal.h"
#include "vz_internal.h"
#include "fake_vz_shim.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int queue_token;
static fake_vz_vm vm;
static hm_fs_hotplugger *hp;

static void open_backend(unsigned devices, unsigned spares) {
  fake_vz_vm_init(&vm, devices, &queue_token);
  hm_error *err = NULL;
  ck_assert_msg(
      hm_vz_hotplugger_new_with_shim(&hp, &fake_vz_shim_ops, &vm, &queue_token, spares, &err) == 0,
      "%s", hm_error_message(err));
}

static void close_backend(void) {
  hm_fs_hotplugger_free(hp);
  hp = NULL;
  ck_assert_int_eq(vm.open_handles, 0);
  fake_vz_vm_destroy(&vm);
}

static hm_mount_spec *spec_of(const char *host, int type, int writable) {
  hm_mount_spec *s = NULL;
  ck_assert_int_eq(hm_mount_spec_new(&s, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_host_path(s, host, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_guest_path(s, "/mnt/x", NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_type(s, type, NULL), 0);
  ck_assert_int_eq(hm_mount_spec_set_writable(s, writable, NULL), 0);
  return s;
}

/* Attaches host as virtiofs; returns the attachment (the test frees it). */
static hm_attachment *attach_ok(const char *id, const char *host, int writable) {
  hm_mount_spec *s = spec_of(host, HM_TYPE_VIRTIOFS, writable);
  hm_attachment *a = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_attachment_new(&a, id, NULL), 0);
  ck_assert_msg(hm_fs_hotplugger_attach(hp, s, a, &err) == 0, "%s", hm_error_message(err));
  hm_mount_spec_free(s);
  return a;
}

static int free_slots(void) {
  return hm_fs_hotplugger_free_slots(hp, HM_TYPE_VIRTIOFS, NULL);
}

START_TEST(test_allocate_returns_tag) {
  open_backend(4, 4);
  ck_assert_int_eq(free_slots(), 4);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  ck_assert_str_eq(hm_attachment_get_tag(a), "hotmount-0");
  ck_assert_str_eq(hm_attachment_get_data(a, "slot"), "0");
  ck_assert_int_eq(vm.spare[0].shared, 1);
  ck_assert_str_eq(vm.spare[0].path, "/srv/a");
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  ck_assert_str_eq(hm_attachment_get_tag(b), "hotmount-1");
  ck_assert_str_eq(vm.spare[1].path, "/srv/b");
  ck_assert_int_eq(free_slots(), 2);
  ck_assert_int_eq(vm.set_calls, 2);
  hm_attachment_free(a);
  hm_attachment_free(b);
  close_backend();
}
END_TEST

START_TEST(test_release_and_reuse_lowest) {
  open_backend(4, 4);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  hm_attachment *c = attach_ok("hm-3", "/srv/c", 0);
  hm_error *err = NULL;
  ck_assert_msg(hm_fs_hotplugger_detach(hp, b, &err) == 0, "%s", hm_error_message(err));
  ck_assert_int_eq(vm.spare[1].shared, 0);
  ck_assert_int_eq(vm.clear_calls, 1);
  ck_assert_int_eq(free_slots(), 2);
  ck_assert_msg(hm_fs_hotplugger_detach(hp, a, &err) == 0, "%s", hm_error_message(err));
  /* Lowest free first: 0, then 1, then 3. */
  hm_attachment *d = attach_ok("hm-4", "/srv/d", 0);
  ck_assert_str_eq(hm_attachment_get_tag(d), "hotmount-0");
  hm_attachment *e = attach_ok("hm-5", "/srv/e", 0);
  ck_assert_str_eq(hm_attachment_get_tag(e), "hotmount-1");
  ck_assert_str_eq(vm.spare[1].path, "/srv/e");
  hm_attachment *f = attach_ok("hm-6", "/srv/f", 0);
  ck_assert_str_eq(hm_attachment_get_tag(f), "hotmount-3");
  hm_attachment *all[] = {a, b, c, d, e, f};
  for (int i = 0; i < 6; i++)
    hm_attachment_free(all[i]);
  close_backend();
}
END_TEST

START_TEST(test_exhaustion) {
  open_backend(2, 2);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  ck_assert_int_eq(free_slots(), 0);
  hm_mount_spec *s = spec_of("/srv/c", HM_TYPE_VIRTIOFS, 0);
  hm_attachment *c = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_attachment_new(&c, "hm-3", NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_attach(hp, s, c, &err), HM_E_NO_SLOT);
  ck_assert_int_eq(hm_error_code(err), HM_E_NO_SLOT);
  ck_assert_msg(strncmp(hm_error_message(err), "hm_vz_attach: ", 14) == 0, "%s",
                hm_error_message(err));
  ck_assert_msg(strstr(hm_error_message(err), "all 2 spare virtio-fs devices are in use"), "%s",
                hm_error_message(err));
  ck_assert_ptr_null(hm_attachment_get_tag(c));
  ck_assert_int_eq(vm.set_calls, 2); /* the shim was not asked */
  hm_error_free(err);
  hm_mount_spec_free(s);
  hm_attachment_free(a);
  hm_attachment_free(b);
  hm_attachment_free(c);
  close_backend();
}
END_TEST

START_TEST(test_read_only_passed_through) {
  open_backend(2, 2);
  hm_attachment *ro = attach_ok("hm-1", "/srv/ro", 0);
  hm_attachment *rw = attach_ok("hm-2", "/srv/rw", 1);
  ck_assert(vm.spare[0].read_only);
  ck_assert(!vm.spare[1].read_only);
  ck_assert_str_eq(hm_attachment_get_data(ro, "writable"), "0");
  ck_assert_str_eq(hm_attachment_get_data(rw, "writable"), "1");
  hm_attachment_free(ro);
  hm_attachment_free(rw);
  close_backend();
}
END_TEST

START_TEST(test_shim_failure_rolls_back) {
  open_backend(2, 2);
  vm.fail_set = "Error Domain=VZErrorDomain Code=2 \"the directory does not exist\"";
  hm_mount_spec *s = spec_of("/srv/gone", HM_TYPE_VIRTIOFS, 0);
  hm_attachment *a = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_attachment_new(&a, "hm-1", NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_attach(hp, s, a, &err), HM_E_HELPER);
  ck_assert_int_eq(hm_error_code(err), HM_E_HELPER);
  const char *m = hm_error_message(err);
  ck_assert_msg(strncmp(m, "hm_vz_attach: ", 14) == 0, "%s", m);
  ck_assert_msg(strstr(m, "sharing /srv/gone on hotmount-0"), "%s", m);
  ck_assert_msg(strstr(m, "the directory does not exist"), "%s", m);
  ck_assert_ptr_null(hm_attachment_get_data(a, "slot"));
  /* The slot is free again and the next attach gets it. */
  ck_assert_int_eq(free_slots(), 2);
  ck_assert_int_eq(vm.spare[0].shared, 0);
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  ck_assert_str_eq(hm_attachment_get_tag(b), "hotmount-0");
  hm_error_free(err);
  hm_mount_spec_free(s);
  hm_attachment_free(a);
  hm_attachment_free(b);
  close_backend();
}
END_TEST

START_TEST(test_detach_idempotent) {
  open_backend(2, 2);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  hm_error *err = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, a, &err), 0);
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, a, &err), 0);
  ck_assert_ptr_null(err);
  ck_assert_int_eq(vm.clear_calls, 1);
  ck_assert_int_eq(free_slots(), 2);
  /* An attachment this backend never attached: nothing to undo. */
  hm_attachment *stray = NULL;
  ck_assert_int_eq(hm_attachment_new(&stray, "hm-9", NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, stray, &err), 0);
  ck_assert_int_eq(hm_attachment_set_tag(stray, "hotmount-7", NULL), 0); /* out of range */
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, stray, &err), 0);
  ck_assert_int_eq(vm.clear_calls, 1);
  hm_attachment_free(stray);
  hm_attachment_free(a);
  close_backend();
}
END_TEST

START_TEST(test_detach_failure_keeps_slot) {
  open_backend(2, 2);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  vm.fail_clear = "VZ refused the placeholder";
  hm_error *err = NULL;
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, a, &err), HM_E_HELPER);
  ck_assert_msg(strstr(hm_error_message(err), "hm_vz_detach: clearing hotmount-0: VZ refused"),
                "%s", hm_error_message(err));
  hm_error_free(err);
  err = NULL;
  /* Still sharing: not handed out again, and a retry clears it. */
  ck_assert_int_eq(free_slots(), 1);
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  ck_assert_str_eq(hm_attachment_get_tag(b), "hotmount-1");
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, a, &err), 0);
  ck_assert_int_eq(vm.spare[0].shared, 0);
  ck_assert_int_eq(free_slots(), 1);
  hm_attachment_free(a);
  hm_attachment_free(b);
  close_backend();
}
END_TEST

#define THREADS 12

typedef struct attach_job {
  int n;
  int rc;
  char tag[32];
} attach_job;

static void *attach_thread(void *arg) {
  attach_job *j = arg;
  char id[16], host[32];
  snprintf(id, sizeof(id), "hm-%d", j->n);
  snprintf(host, sizeof(host), "/srv/t%d", j->n);
  hm_mount_spec *s = spec_of(host, HM_TYPE_VIRTIOFS, j->n % 2);
  hm_attachment *a = NULL;
  hm_attachment_new(&a, id, NULL);
  j->rc = hm_fs_hotplugger_attach(hp, s, a, NULL);
  if (j->rc == 0)
    snprintf(j->tag, sizeof(j->tag), "%s", hm_attachment_get_tag(a));
  hm_attachment_free(a);
  hm_mount_spec_free(s);
  return NULL;
}

START_TEST(test_concurrent_attaches) {
  /* One spare fewer than threads: exactly one must get HM_E_NO_SLOT. */
  open_backend(THREADS - 1, THREADS - 1);
  vm.set_delay_ms = 30; /* a slow queue: attaches overlap inside the shim */
  pthread_t t[THREADS];
  attach_job jobs[THREADS];
  for (int i = 0; i < THREADS; i++) {
    jobs[i] = (attach_job){.n = i};
    ck_assert_int_eq(pthread_create(&t[i], NULL, attach_thread, &jobs[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  int seen[THREADS] = {0}, ok = 0, noslot = 0;
  for (int i = 0; i < THREADS; i++) {
    if (jobs[i].rc == HM_E_NO_SLOT) {
      noslot++;
      continue;
    }
    ck_assert_int_eq(jobs[i].rc, 0);
    ok++;
    int k = atoi(jobs[i].tag + strlen(HM_VZ_TAG_PREFIX));
    ck_assert_int_lt(k, THREADS - 1);
    ck_assert_msg(!seen[k], "two attaches got %s", jobs[i].tag);
    seen[k] = 1;
    ck_assert_int_eq(vm.spare[k].shared, 1);
    char host[32];
    snprintf(host, sizeof(host), "/srv/t%d", i);
    ck_assert_str_eq(vm.spare[k].path, host);
    ck_assert(vm.spare[k].read_only == !(i % 2));
  }
  ck_assert_int_eq(ok, THREADS - 1);
  ck_assert_int_eq(noslot, 1);
  /* The slot lock is not held across the shim call. */
  ck_assert_uint_gt(vm.max_in_flight, 1);
  ck_assert_int_eq(free_slots(), 0);
  close_backend();
}
END_TEST

START_TEST(test_other_types_refused) {
  open_backend(2, 2);
  ck_assert(hm_fs_hotplugger_supports(hp, HM_TYPE_VIRTIOFS));
  ck_assert(!hm_fs_hotplugger_supports(hp, HM_TYPE_9P));
  ck_assert(!hm_fs_hotplugger_supports(hp, HM_TYPE_REVERSE_SSHFS));
  ck_assert_str_eq(hm_fs_hotplugger_get_name(hp), "vz");
  int types[] = {HM_TYPE_9P, HM_TYPE_REVERSE_SSHFS};
  for (int i = 0; i < 2; i++) {
    hm_mount_spec *s = spec_of("/srv/a", types[i], 0);
    hm_attachment *a = NULL;
    hm_error *err = NULL;
    ck_assert_int_eq(hm_attachment_new(&a, "hm-1", NULL), 0);
    ck_assert_int_eq(hm_fs_hotplugger_attach(hp, s, a, &err), HM_E_UNSUPPORTED);
    ck_assert_msg(
        strstr(hm_error_message(err), "hm_vz_attach: the VZ backend mounts only virtiofs"), "%s",
        hm_error_message(err));
    hm_error_free(err);
    err = NULL;
    ck_assert_int_eq(hm_fs_hotplugger_free_slots(hp, types[i], &err), HM_E_UNSUPPORTED);
    hm_error_free(err);
    hm_attachment_free(a);
    hm_mount_spec_free(s);
  }
  ck_assert_int_eq(vm.set_calls, 0);
  ck_assert_int_eq(free_slots(), 2);
  close_backend();
}
END_TEST

START_TEST(test_existing_shares_count_as_used) {
  /* A hotplugger made again for a VM whose spare 1 still shares something. */
  fake_vz_vm_init(&vm, 3, &queue_token);
  vm.spare[1].shared = 1;
  snprintf(vm.spare[1].path, sizeof(vm.spare[1].path), "/srv/old");
  ck_assert_int_eq(
      hm_vz_hotplugger_new_with_shim(&hp, &fake_vz_shim_ops, &vm, &queue_token, 3, NULL), 0);
  ck_assert_int_eq(free_slots(), 2);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  hm_attachment *b = attach_ok("hm-2", "/srv/b", 0);
  ck_assert_str_eq(hm_attachment_get_tag(a), "hotmount-0");
  ck_assert_str_eq(hm_attachment_get_tag(b), "hotmount-2");
  /* The old record (tag only, as persisted before) can still be detached. */
  hm_attachment *old = NULL;
  ck_assert_int_eq(hm_attachment_new(&old, "hm-0", NULL), 0);
  ck_assert_int_eq(hm_attachment_set_tag(old, "hotmount-1", NULL), 0);
  ck_assert_int_eq(hm_fs_hotplugger_detach(hp, old, NULL), 0);
  ck_assert_int_eq(vm.spare[1].shared, 0);
  ck_assert_int_eq(free_slots(), 1);
  hm_attachment_free(a);
  hm_attachment_free(b);
  hm_attachment_free(old);
  close_backend();
}
END_TEST

static void expect_new_error(fake_vz_vm *v, void *queue, unsigned spares, int code,
                             const char *needle) {
  hm_fs_hotplugger *h = (hm_fs_hotplugger *)&queue_token; /* must be reset to nothing */
  hm_error *err = NULL;
  ck_assert_int_eq(
      hm_vz_hotplugger_new_with_shim(v ? &h : NULL, &fake_vz_shim_ops, v, queue, spares, &err),
      code);
  ck_assert_int_eq(hm_error_code(err), code);
  ck_assert_msg(strncmp(hm_error_message(err), "hm_vz_hotplugger_new: ", 22) == 0, "%s",
                hm_error_message(err));
  ck_assert_msg(strstr(hm_error_message(err), needle), "%s", hm_error_message(err));
  hm_error_free(err);
}

START_TEST(test_new_errors) {
  fake_vz_vm_init(&vm, 2, &queue_token);
  expect_new_error(NULL, &queue_token, 2, HM_E_INVALID, "must not be NULL");
  expect_new_error(&vm, NULL, 2, HM_E_INVALID, "must not be NULL");
  expect_new_error(&vm, &queue_token, 0, HM_E_INVALID, "spares must be 1..64, not 0");
  expect_new_error(&vm, &queue_token, 65, HM_E_INVALID, "spares must be 1..64, not 65");
  expect_new_error(&vm, &queue_token, 4, HM_E_NOT_FOUND, "no spare device hotmount-2");
  vm.fail_open = "Virtualization.framework is not available";
  expect_new_error(&vm, &queue_token, 2, HM_E_HELPER, "is not available");
  ck_assert_int_eq(vm.open_handles, 0);
  fake_vz_vm_destroy(&vm);
}
END_TEST

START_TEST(test_config_reserve) {
  fake_vz_config cfg = {.n = 1, .tags = {"rosetta"}};
  hm_error *err = NULL;
  ck_assert_msg(hm_vz_config_reserve_with_shim(&fake_vz_shim_ops, &cfg, 3, &err) == 0, "%s",
                hm_error_message(err));
  ck_assert_uint_eq(cfg.n, 4);
  ck_assert_str_eq(cfg.tags[0], "rosetta");
  ck_assert_str_eq(cfg.tags[1], "hotmount-0");
  ck_assert_str_eq(cfg.tags[3], "hotmount-2");
  ck_assert_int_eq(hm_vz_config_reserve_with_shim(&fake_vz_shim_ops, &cfg, 3, &err), HM_E_EXISTS);
  ck_assert_msg(strstr(hm_error_message(err), "hm_vz_config_reserve: reserving spare devices: "
                                              "the configuration already has device hotmount-0"),
                "%s", hm_error_message(err));
  hm_error_free(err);
  err = NULL;
  ck_assert_uint_eq(cfg.n, 4);
  ck_assert_int_eq(hm_vz_config_reserve_with_shim(&fake_vz_shim_ops, &cfg, 0, &err), HM_E_INVALID);
  ck_assert_msg(strstr(hm_error_message(err), "hm_vz_config_reserve: spares must be 1..64"), "%s",
                hm_error_message(err));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_vz_config_reserve_with_shim(&fake_vz_shim_ops, NULL, 2, &err), HM_E_INVALID);
  hm_error_free(err);
}
END_TEST

START_TEST(test_describe) {
  open_backend(3, 3);
  hm_attachment *a = attach_ok("hm-1", "/srv/a", 0);
  hm_status *st = NULL;
  ck_assert_int_eq(hm_status_new(&st), 0);
  ck_assert_int_eq(hm_fs_hotplugger_describe(hp, st, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "slotsTotal"), "3");
  ck_assert_str_eq(hm_status_get(st, "slotsFree"), "2");
  ck_assert_str_eq(hm_status_get(st, "vzTags"), "hotmount-0..hotmount-2");
  hm_status_free(st);
  hm_attachment_free(a);
  close_backend();
}
END_TEST

START_TEST(test_public_constructors_unsupported) {
#ifdef HM_HAVE_VZ_SHIM
  (void)0; /* a macOS build: the real shim answers instead */
#else
  fake_vz_config cfg = {0};
  hm_error *err = NULL;
  ck_assert_int_eq(hm_vz_config_reserve(&cfg, 4, &err), HM_E_UNSUPPORTED);
  ck_assert_int_eq(hm_error_code(err), HM_E_UNSUPPORTED);
  ck_assert_msg(strncmp(hm_error_message(err), "hm_vz_config_reserve: ", 22) == 0, "%s",
                hm_error_message(err));
  ck_assert_msg(strstr(hm_error_message(err), "the VZ backend needs macOS 13+"), "%s",
                hm_error_message(err));
  ck_assert_uint_eq(cfg.n, 0);
  hm_error_free(err);
  err = NULL;
  hm_fs_hotplugger *h = (hm_fs_hotplugger *)&cfg;
  fake_vz_vm_init(&vm, 2, &queue_token);
  ck_assert_int_eq(hm_vz_hotplugger_new(&h, &vm, &queue_token, 2, &err), HM_E_UNSUPPORTED);
  ck_assert_ptr_null(h);
  ck_assert_msg(strncmp(hm_error_message(err), "hm_vz_hotplugger_new: ", 22) == 0, "%s",
                hm_error_message(err));
  ck_assert_msg(strstr(hm_error_message(err), "the VZ backend needs macOS 13+"), "%s",
                hm_error_message(err));
  ck_assert_int_eq(vm.open_handles, 0);
  hm_error_free(err);
  /* NULL err is allowed. */
  ck_assert_int_eq(hm_vz_config_reserve(NULL, 0, NULL), HM_E_UNSUPPORTED);
  fake_vz_vm_destroy(&vm);
#endif
}
END_TEST

int main(void) {
  Suite *s = suite_create("vz-backend");
  TCase *tc = tcase_create("slots");
  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, test_allocate_returns_tag);
  tcase_add_test(tc, test_release_and_reuse_lowest);
  tcase_add_test(tc, test_exhaustion);
  tcase_add_test(tc, test_read_only_passed_through);
  tcase_add_test(tc, test_shim_failure_rolls_back);
  tcase_add_test(tc, test_detach_idempotent);
  tcase_add_test(tc, test_detach_failure_keeps_slot);
  tcase_add_test(tc, test_concurrent_attaches);
  tcase_add_test(tc, test_other_types_refused);
  tcase_add_test(tc, test_existing_shares_count_as_used);
  tcase_add_test(tc, test_new_errors);
  tcase_add_test(tc, test_config_reserve);
  tcase_add_test(tc, test_describe);
  tcase_add_test(tc, test_public_constructors_unsupported);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
