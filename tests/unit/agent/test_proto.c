/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "core/agent_proto.h"
#include "tests.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dec(hm_agent_request *req, const char *line, hm_error **err) {
  return hm_agent_request_decode(req, line, strlen(line), err);
}

/* Decoding line must fail with code and a message containing needle. */
static void req_bad(const char *line, int code, const char *needle, int64_t want_id) {
  hm_agent_request req;
  hm_error *err = NULL;
  ck_assert_int_eq(dec(&req, line, &err), code);
  ck_assert_error(err, code, needle);
  ck_assert_int_eq(req.id, want_id);
  hm_agent_request_clear(&req);
  hm_error_free(err);
}

START_TEST(request_roundtrip) {
  hm_agent_request in = {.id = 42,
                         .op = HM_AGENT_OP_MOUNT,
                         .type = HM_TYPE_VIRTIOFS,
                         .tag = "hm-0",
                         .target = "/mnt/a \"b\"\n",
                         .readonly = 1,
                         .options = "dax",
                         .timeout_ms = 1500};
  char *line = NULL;
  ck_assert_int_eq(hm_agent_request_encode(&line, &in, NULL), 0);
  size_t len = strlen(line);
  ck_assert_int_eq(line[len - 1], '\n');
  ck_assert_ptr_null(memchr(line, '\n', len - 1));
  hm_agent_request out;
  ck_assert_int_eq(hm_agent_request_decode(&out, line, len - 1, NULL), 0);
  ck_assert_int_eq(out.id, 42);
  ck_assert_int_eq(out.op, HM_AGENT_OP_MOUNT);
  ck_assert_int_eq(out.type, HM_TYPE_VIRTIOFS);
  ck_assert_str_eq(out.tag, "hm-0");
  ck_assert_str_eq(out.target, "/mnt/a \"b\"\n");
  ck_assert_int_eq(out.readonly, 1);
  ck_assert_str_eq(out.options, "dax");
  ck_assert_int_eq(out.timeout_ms, 1500);
  ck_assert_ptr_null(out.port);
  hm_agent_request_clear(&out);
  free(line);

  hm_agent_request um = {.id = 7, .op = HM_AGENT_OP_UMOUNT, .target = "/mnt/x", .lazy = 1};
  ck_assert_int_eq(hm_agent_request_encode(&line, &um, NULL), 0);
  ck_assert_int_eq(dec(&out, line, NULL), 0); /* the trailing newline counts as whitespace */
  ck_assert_int_eq(out.lazy, 1);
  ck_assert_int_eq(out.force, 0);
  hm_agent_request_clear(&out);
  free(line);

  hm_agent_request h = {.id = 1, .op = HM_AGENT_OP_HELLO, .major = 1, .minor = 3};
  ck_assert_int_eq(hm_agent_request_encode(&line, &h, NULL), 0);
  ck_assert_str_eq(line, "{\"id\":1,\"op\":\"hello\",\"major\":1,\"minor\":3}\n");
  free(line);

  hm_agent_request nine = {.id = 2,
                           .op = HM_AGENT_OP_MOUNT,
                           .type = HM_TYPE_9P,
                           .port = "org.hotmount.9p.1",
                           .target = "/mnt/n",
                           .timeout_ms = 1};
  ck_assert_int_eq(hm_agent_request_encode(&line, &nine, NULL), 0);
  ck_assert_int_eq(dec(&out, line, NULL), 0);
  ck_assert_str_eq(out.port, "org.hotmount.9p.1");
  hm_agent_request_clear(&out);
  free(line);

  hm_error *err = NULL;
  hm_agent_request bad = {.id = 3, .op = HM_AGENT_OP_MOUNT, .type = HM_TYPE_VIRTIOFS};
  ck_assert_int_eq(hm_agent_request_encode(&line, &bad, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "needs");
  hm_error_free(err);
}
END_TEST

START_TEST(request_malformed) {
  req_bad("", HM_E_PROTOCOL, "not valid JSON", 0);
  req_bad("{\"id\":1,\"op\":\"list\"", HM_E_PROTOCOL, "not valid JSON", 0);
  req_bad("not json", HM_E_PROTOCOL, "not valid JSON", 0);
  req_bad("[1,2]", HM_E_PROTOCOL, "not a JSON object", 0);
  req_bad("{\"id\":1,\"op\":\"list\"} x", HM_E_PROTOCOL, "request ", 0);
  req_bad("{\"id\":1,\"op\":\"list\"}{}", HM_E_PROTOCOL, "request ", 0);
  req_bad("{\"op\":\"list\"}", HM_E_PROTOCOL, "missing field 'id'", 0);
  req_bad("{\"id\":\"1\",\"op\":\"list\"}", HM_E_PROTOCOL, "field 'id' must be an integer", 0);
  req_bad("{\"id\":1.5,\"op\":\"list\"}", HM_E_PROTOCOL, "field 'id' must be an integer", 0);
  req_bad("{\"id\":-1,\"op\":\"list\"}", HM_E_PROTOCOL, "'id' is out of range", 0);
  req_bad("{\"id\":99999999999999999999,\"op\":\"list\"}", HM_E_PROTOCOL, "out of range", 0);
  req_bad("{\"id\":4}", HM_E_PROTOCOL, "missing field 'op'", 4);
  req_bad("{\"id\":4,\"op\":7}", HM_E_PROTOCOL, "field 'op' must be a string", 4);
  /* Invalid UTF-8 inside a JSON string. */
  req_bad("{\"id\":4,\"op\":\"list\xff\"}", HM_E_PROTOCOL, "not valid JSON", 0);
  hm_agent_request req;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_agent_request_decode(&req, "{\"id\":1}\0x", 10, &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "NUL byte");
  hm_error_free(err);
}
END_TEST

START_TEST(request_unknown_op) {
  req_bad("{\"id\":5,\"op\":\"reboot\"}", HM_E_UNSUPPORTED, "unknown op 'reboot'", 5);
  req_bad("{\"id\":5,\"op\":\"ev\\nil\"}", HM_E_UNSUPPORTED, "unknown op 'ev?il'", 5);
}
END_TEST

START_TEST(request_fields) {
  const char *m =
      "{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"tag\":\"t\",\"target\":\"/mnt/"
      "x\",\"readonly\":true,\"timeout_ms\":100";
  char line[512];
#define WITH(extra) (snprintf(line, sizeof(line), "%s%s}", m, extra), line)
  hm_agent_request req;
  ck_assert_int_eq(dec(&req, WITH(""), NULL), 0);
  ck_assert_ptr_null(req.options);
  hm_agent_request_clear(&req);
  req_bad(WITH(",\"readOnly\":false"), HM_E_PROTOCOL, "mount: unknown field 'readOnly'", 9);
  req_bad(WITH(",\"port\":\"p\""), HM_E_PROTOCOL, "'port' is only for type 9p", 9);
  req_bad(WITH(",\"options\":5"), HM_E_PROTOCOL, "field 'options' must be a string", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"tag\":\"t\",\"target\":\"/x\","
          "\"readonly\":\"yes\",\"timeout_ms\":1}",
          HM_E_PROTOCOL, "field 'readonly' must be a boolean", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"target\":\"/x\","
          "\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "missing field 'tag'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"tag\":\"t\",\"target\":\"/x\","
          "\"readonly\":true}",
          HM_E_PROTOCOL, "missing field 'timeout_ms'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"tag\":\"t\",\"target\":\"/x\","
          "\"readonly\":true,\"timeout_ms\":-5}",
          HM_E_PROTOCOL, "'timeout_ms' is out of range", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"nfs\",\"target\":\"/x\"}", HM_E_PROTOCOL,
          "unknown type 'nfs'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"9p\",\"target\":\"/x\",\"readonly\":true,"
          "\"timeout_ms\":1}",
          HM_E_PROTOCOL, "missing field 'port'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"virtiofs\",\"tag\":\"t\\u0000x\",\"target\":"
          "\"/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "'tag' contains a NUL", 9);
  req_bad("{\"id\":3,\"op\":\"umount\"}", HM_E_PROTOCOL, "umount: missing field 'target'", 3);
  req_bad("{\"id\":3,\"op\":\"umount\",\"target\":\"/x\",\"lazy\":1}", HM_E_PROTOCOL,
          "field 'lazy' must be a boolean", 3);
  req_bad("{\"id\":3,\"op\":\"list\",\"all\":true}", HM_E_PROTOCOL, "list: unknown field 'all'", 3);
  req_bad("{\"id\":3,\"op\":\"hello\",\"major\":1}", HM_E_PROTOCOL, "missing field 'minor'", 3);
#undef WITH
}
END_TEST

static int rdec(hm_agent_response *r, int op, const char *line, hm_error **err) {
  return hm_agent_response_decode(r, op, line, strlen(line), err);
}

START_TEST(response_codec) {
  char *caps[] = {"mount.virtiofs", "list", NULL};
  hm_agent_response h = {.id = 11,
                         .ok = 1,
                         .major = 1,
                         .minor = 0,
                         .agent_name = "hotmount-agent",
                         .agent_version = "0.1.0",
                         .capabilities = caps};
  char *line = NULL;
  ck_assert_int_eq(hm_agent_response_encode(&line, HM_AGENT_OP_HELLO, &h, NULL), 0);
  hm_agent_response r;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_HELLO, line, NULL), 0);
  ck_assert_int_eq(r.id, 11);
  ck_assert_str_eq(r.agent_version, "0.1.0");
  ck_assert_str_eq(r.capabilities[1], "list");
  ck_assert_ptr_null(r.capabilities[2]);
  int64_t id = 0;
  ck_assert_int_eq(hm_agent_response_id(&id, line, strlen(line), NULL), 0);
  ck_assert_int_eq(id, 11);
  hm_agent_response_clear(&r);
  free(line);

  hm_agent_mount_info mi[] = {{"/mnt/a", "virtiofs", "hm-1", "ro"}};
  hm_agent_response l = {.id = 12, .ok = 1, .mounts = mi, .n_mounts = 1};
  ck_assert_int_eq(hm_agent_response_encode(&line, HM_AGENT_OP_LIST, &l, NULL), 0);
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_LIST, line, NULL), 0);
  ck_assert_uint_eq(r.n_mounts, 1);
  ck_assert_str_eq(r.mounts[0].source, "hm-1");
  hm_agent_response_clear(&r);
  free(line);

  hm_agent_response e = {.id = 13, .ok = 0, .err_no = EPERM, .error = "no"};
  ck_assert_int_eq(hm_agent_response_encode(&line, HM_AGENT_OP_MOUNT, &e, NULL), 0);
  ck_assert_str_eq(line, "{\"id\":13,\"ok\":false,\"errno\":1,\"error\":\"no\"}\n");
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_MOUNT, line, NULL), 0);
  ck_assert_int_eq(r.ok, 0);
  ck_assert_int_eq(r.err_no, EPERM);
  ck_assert_str_eq(r.error, "no");
  hm_agent_response_clear(&r);
  free(line);

  hm_error *err = NULL;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_MOUNT, "{\"id\":1,\"ok\":true,\"extra\":1}", &err),
                   HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "unknown field 'extra'");
  hm_agent_response_clear(&r);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(
      rdec(&r, HM_AGENT_OP_MOUNT, "{\"id\":1,\"ok\":false,\"errno\":0,\"error\":\"x\"}", &err),
      HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "'errno' is out of range");
  hm_agent_response_clear(&r);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_MOUNT, "{\"id\":1,\"ok\":false,\"errno\":5}", &err),
                   HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "missing field 'error'");
  hm_agent_response_clear(&r);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_LIST,
                        "{\"id\":1,\"ok\":true,\"mounts\":[{\"target\":\"/a\",\"fstype\":\"9p\","
                        "\"source\":\"s\",\"options\":\"\",\"dev\":1}]}",
                        &err),
                   HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "mount entry: unknown field 'dev'");
  hm_agent_response_clear(&r);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_HELLO,
                        "{\"id\":1,\"ok\":true,\"major\":1,\"minor\":0,\"agent\":\"a\","
                        "\"agent_version\":\"v\",\"capabilities\":[1]}",
                        &err),
                   HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "capabilities[0] is not a string");
  hm_agent_response_clear(&r);
  hm_error_free(err);
  err = NULL;
  ck_assert_int_eq(hm_agent_response_id(&id, "{\"ok\":true}", 11, &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "missing field 'id'");
  hm_error_free(err);
}
END_TEST

Suite *proto_suite(void) {
  Suite *s = suite_create("proto");
  TCase *tc = tcase_create("codec");
  tcase_add_test(tc, request_roundtrip);
  tcase_add_test(tc, request_malformed);
  tcase_add_test(tc, request_unknown_op);
  tcase_add_test(tc, request_fields);
  tcase_add_test(tc, response_codec);
  suite_add_tcase(s, tc);
  return s;
}
