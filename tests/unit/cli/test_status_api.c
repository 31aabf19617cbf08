/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public calls behind `hotmount status` and `hotmount doctor`, through
 * the shared library only: hm_client_status, hm_client_connect_agent and
 * hm_qemu_probe, their error paths, and the probe against the scripted QMP
 * fake (a real peer on a real socket).
 */
#include "fake_qmp.h"

#include <hotmount/hotmount.h>

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/hm-status-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

#define ck_assert_error(err, code, func)                                                           \
  do {                                                                                             \
    ck_assert_int_eq(hm_error_code(err), (code));                                                  \
    ck_assert_msg(strncmp(hm_error_message(err), func ": ", strlen(func ": ")) == 0,               \
                  "message \"%s\" does not start with %s", hm_error_message(err), func);           \
  } while (0)

static hm_client *client_for_dir(void) {
  char sock[128];
  hm_client *c = NULL;
  snprintf(sock, sizeof(sock), "%s/hotmountd.sock", dir);
  ck_assert_int_eq(hm_client_new(&c, sock, NULL), 0);
  return c;
}

START_TEST(test_client_status_invalid) {
  hm_error *err = NULL;
  hm_status *st = NULL;
  hm_client *c = client_for_dir();
  ck_assert_int_eq(hm_client_status(NULL, &st, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "hm_client_status");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_client_status(c, NULL, &err), HM_E_INVALID);
  hm_error_free(err);
  ck_assert_int_eq(hm_client_status(c, NULL, NULL), HM_E_INVALID);
  hm_client_free(c);
}
END_TEST

START_TEST(test_client_status_no_daemon) {
  hm_error *err = NULL;
  hm_status *st = NULL;
  hm_client *c = client_for_dir();
  ck_assert_int_eq(hm_client_status(c, &st, &err), HM_E_NOT_READY);
  ck_assert_ptr_null(st);
  ck_assert_error(err, HM_E_NOT_READY, "hm_client_status");
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "start it with: hotmountd"));
  hm_error_free(err);
  hm_client_free(c);
}
END_TEST

START_TEST(test_client_connect_agent_invalid) {
  hm_error *err = NULL;
  hm_client *c = client_for_dir();
  ck_assert_int_eq(hm_client_connect_agent(NULL, 1000, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "hm_client_connect_agent");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_client_connect_agent(c, 0, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "timeout_ms"));
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_client_connect_agent(c, 60001, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_client_connect_agent(c, 1000, &err), HM_E_NOT_READY);
  ck_assert_error(err, HM_E_NOT_READY, "hm_client_connect_agent");
  hm_error_free(err);
  hm_client_free(c);
}
END_TEST

START_TEST(test_probe_invalid) {
  hm_error *err = NULL;
  hm_status *st = NULL;
  hm_qemu_config *cfg = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, dir, NULL), 0);
  ck_assert_int_eq(hm_qemu_probe(NULL, cfg, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "hm_qemu_probe");
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_qemu_probe(&st, NULL, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "hm_qemu_probe");
  hm_error_free(err);
  ck_assert_ptr_null(st);
  hm_qemu_config_free(cfg);
}
END_TEST

/* No QEMU at all is a fact to report, not a failure of the probe. */
START_TEST(test_probe_no_qemu) {
  hm_status *st = NULL;
  hm_qemu_config *cfg = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, dir, NULL), 0);
  ck_assert_int_eq(hm_qemu_probe(&st, cfg, NULL), 0);
  ck_assert_str_eq(hm_status_get(st, "qmp"), "unreachable");
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "qmpError"), "qmp.sock"));
  ck_assert_ptr_null(hm_status_get(st, "slotsTotal"));
  ck_assert_ptr_null(hm_status_get(st, "agent"));
  /* virtiofsd is a fact of this host, asked even without QEMU. */
  ck_assert_ptr_nonnull(hm_status_get(st, "virtiofsd"));
  /* So is whether helpers run in a user namespace, and what that needs
   * (doctor's userns checks), without root only. */
  ck_assert_str_eq(hm_status_get(st, "rootless"), geteuid() != 0 ? "true" : "false");
  static const char *const keys[] = {"userns", "newuidmap", "subuid", "subgid"};
  for (size_t i = 0; i < 4; i++)
    ck_assert_int_eq(hm_status_get(st, keys[i]) != NULL, geteuid() != 0);
  hm_status_free(st);
  hm_qemu_config_free(cfg);
}
END_TEST

/* The replies QEMU 7.2 gives (see tests/fakes/qmp/real-basic.json for the
 * greeting); `share` and the chardev's file name vary per test. */
static char *transcript(const char *share, const char *chardev_file) {
  char *t = NULL;
  int r = asprintf(
      &t,
      "{\"steps\":["
      "{\"expect\":\"qmp_capabilities\",\"reply\":{\"return\":{}}},"
      "{\"expect\":\"query-version\",\"reply\":{\"return\":{\"qemu\":{\"micro\":22,\"minor\":2,"
      "\"major\":7},\"package\":\"\"}}},"
      "{\"expect\":\"qom-get\",\"arguments\":{\"path\":\"/machine\",\"property\":\"type\"},"
      "\"reply\":{\"return\":\"pc-q35-7.2-machine\"}},"
      "{\"expect\":\"qom-get\",\"arguments\":{\"path\":\"/"
      "machine\",\"property\":\"memory-backend\"},"
      "\"reply\":{\"return\":\"/objects/hm-mem\"}},"
      "{\"expect\":\"qom-get\",\"arguments\":{\"path\":\"/objects/hm-mem\",\"property\":\"share\"},"
      "\"reply\":{\"return\":%s}},"
      "{\"expect\":\"query-memory-size-summary\",\"reply\":{\"return\":{\"base-memory\":268435456,"
      "\"plugged-memory\":0}}},"
      "{\"expect\":\"qom-list\",\"arguments\":{\"path\":\"/machine/peripheral\"},"
      "\"reply\":{\"return\":[{\"name\":\"type\",\"type\":\"string\"},"
      "{\"name\":\"hm-serial\",\"type\":\"child<virtio-serial-pci>\"},"
      "{\"name\":\"hm-rp-0\",\"type\":\"child<pcie-root-port>\"},"
      "{\"name\":\"hm-rp-1\",\"type\":\"child<pcie-root-port>\"},"
      "{\"name\":\"other-rp\",\"type\":\"child<pcie-root-port>\"}]}},"
      "{\"expect\":\"qom-list\",\"arguments\":{\"path\":\"/objects\"},"
      "\"reply\":{\"return\":[{\"name\":\"hm-9p-slots\",\"type\":\"child<authz-simple>\"}]}},"
      "{\"expect\":\"qom-get\",\"arguments\":{\"path\":\"/objects/hm-9p-slots\","
      "\"property\":\"identity\"},\"reply\":{\"return\":\"ro=4/rw=2/model=none\"}},"
      "{\"expect\":\"query-chardev\",\"reply\":{\"return\":["
      "{\"frontend-open\":false,\"filename\":\"disconnected:unix:%s,server=on\","
      "\"label\":\"hm-agent\"},"
      "{\"frontend-open\":true,\"filename\":\"unix:/x/qmp.sock,server=on\","
      "\"label\":\"compat_monitor0\"}]}}"
      "]}",
      share, chardev_file);
  ck_assert_int_ge(r, 0);
  return t;
}

static hm_status *probe_with(const char *json, fake_qmp **out_fake) {
  char sock[128], *msg = NULL;
  snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
  fake_qmp *f = fake_qmp_start_json(sock, json, &msg);
  ck_assert_msg(f != NULL, "fake-qmp: %s", msg ? msg : "?");
  hm_qemu_config *cfg = NULL;
  hm_status *st = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_qemu_config_new(&cfg, dir, NULL), 0);
  ck_assert_msg(hm_qemu_probe(&st, cfg, &err) == 0, "%s", hm_error_message(err));
  hm_qemu_config_free(cfg);
  ck_assert_int_eq(fake_qmp_wait(f, 5000), 0);
  *out_fake = f;
  return st;
}

START_TEST(test_probe_ready_vm) {
  char agent[128];
  snprintf(agent, sizeof(agent), "%s/agent.sock", dir);
  char *t = transcript("true", agent);
  fake_qmp *f = NULL;
  hm_status *st = probe_with(t, &f);
  ck_assert_msg(fake_qmp_ok(f), "%s", fake_qmp_error(f));
  ck_assert_str_eq(hm_status_get(st, "qmp"), "connected");
  ck_assert_str_eq(hm_status_get(st, "qemuVersion"), "7.2.22");
  ck_assert_str_eq(hm_status_get(st, "machineType"), "pc-q35-7.2-machine");
  ck_assert_str_eq(hm_status_get(st, "memoryBackend"), "/objects/hm-mem");
  ck_assert_str_eq(hm_status_get(st, "memoryShared"), "true");
  ck_assert_str_eq(hm_status_get(st, "memorySize"), "268435456");
  /* Only our own hm-rp-N ports are hot-plug slots. */
  ck_assert_str_eq(hm_status_get(st, "slotsTotal"), "2");
  ck_assert_str_eq(hm_status_get(st, "virtioSerial"), "true");
  /* The reserved 9p slots, as the marker object says. */
  ck_assert_str_eq(hm_status_get(st, "ninepSlotsReadOnly"), "4");
  ck_assert_str_eq(hm_status_get(st, "ninepSlotsWritable"), "2");
  ck_assert_str_eq(hm_status_get(st, "ninepSlotsModel"), "none");
  ck_assert_str_eq(hm_status_get(st, "agentChannel"), "true");
  ck_assert_str_eq(hm_status_get(st, "agentPortOpen"), "false");
  ck_assert_ptr_null(hm_status_get(st, "agentChannelPath"));
  /* Nobody opened the port in the guest: no handshake attempted. */
  ck_assert_str_eq(hm_status_get(st, "agent"), "not running");
  char *json = NULL;
  ck_assert_int_eq(hm_status_to_json(&json, st, NULL), 0);
  ck_assert_ptr_nonnull(strstr(json, "\"slotsTotal\":2"));
  ck_assert_ptr_nonnull(strstr(json, "\"memoryShared\":true"));
  free(json);
  hm_status_free(st);
  fake_qmp_free(f);
  free(t);
}
END_TEST

START_TEST(test_probe_unshared_memory_and_foreign_chardev) {
  char *t = transcript("false", "/elsewhere/agent.sock");
  fake_qmp *f = NULL;
  hm_status *st = probe_with(t, &f);
  ck_assert_msg(fake_qmp_ok(f), "%s", fake_qmp_error(f));
  ck_assert_str_eq(hm_status_get(st, "memoryShared"), "false");
  ck_assert_ptr_nonnull(strstr(hm_status_get(st, "agentChannelPath"), "/elsewhere/agent.sock"));
  hm_status_free(st);
  fake_qmp_free(f);
  free(t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("status-api");
  TCase *tc = tcase_create("all");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_client_status_invalid);
  tcase_add_test(tc, test_client_status_no_daemon);
  tcase_add_test(tc, test_client_connect_agent_invalid);
  tcase_add_test(tc, test_probe_invalid);
  tcase_add_test(tc, test_probe_no_qemu);
  tcase_add_test(tc, test_probe_ready_vm);
  tcase_add_test(tc, test_probe_unshared_memory_and_foreign_chardev);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
