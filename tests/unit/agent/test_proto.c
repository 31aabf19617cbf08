/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "core/agent_proto.h"
#include "tests.h"

#include <errno.h>
#include <stdarg.h>
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

/* bind: a source, no tag, port or options, both ways. */
START_TEST(request_bind) {
  hm_agent_request in = {.id = 11,
                         .op = HM_AGENT_OP_MOUNT,
                         .type = HM_TYPE_BIND,
                         .source = "/srv/boot share/proj",
                         .target = "/mnt/proj",
                         .readonly = 1,
                         .timeout_ms = 100};
  char *line = NULL;
  ck_assert_int_eq(hm_agent_request_encode(&line, &in, NULL), 0);
  ck_assert_ptr_nonnull(strstr(line, "\"type\":\"bind\""));
  ck_assert_ptr_nonnull(strstr(line, "\"source\":\"/srv/boot share/proj\""));
  hm_agent_request out;
  ck_assert_int_eq(dec(&out, line, NULL), 0);
  ck_assert_int_eq(out.type, HM_TYPE_BIND);
  ck_assert_str_eq(out.source, "/srv/boot share/proj");
  ck_assert_str_eq(out.target, "/mnt/proj");
  ck_assert_int_eq(out.readonly, 1);
  ck_assert_ptr_null(out.tag);
  ck_assert_ptr_null(out.port);
  ck_assert_ptr_null(out.options);
  hm_agent_request_clear(&out);
  free(line);

  /* The encoder refuses what the decoder would. */
  hm_error *err = NULL;
  hm_agent_request no_src = in;
  no_src.source = NULL;
  ck_assert_int_eq(hm_agent_request_encode(&line, &no_src, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "a source");
  hm_error_free(err);
  err = NULL;
  hm_agent_request with_tag = in;
  with_tag.tag = "hm-1";
  ck_assert_int_eq(hm_agent_request_encode(&line, &with_tag, &err), HM_E_INVALID);
  hm_error_free(err);
  err = NULL;
  /* virtiofs with a source: an entry of the shared device (hub). */
  hm_agent_request vfs_src = {.id = 1,
                              .op = HM_AGENT_OP_MOUNT,
                              .type = HM_TYPE_VIRTIOFS,
                              .tag = "hm-hub",
                              .source = "hm-3",
                              .target = "/mnt/x",
                              .readonly = 1,
                              .timeout_ms = 100};
  ck_assert_int_eq(hm_agent_request_encode(&line, &vfs_src, NULL), 0);
  ck_assert_int_eq(dec(&out, line, NULL), 0);
  ck_assert_int_eq(out.type, HM_TYPE_VIRTIOFS);
  ck_assert_str_eq(out.tag, "hm-hub");
  ck_assert_str_eq(out.source, "hm-3");
  hm_agent_request_clear(&out);
  free(line);
  hm_agent_request p9_src = {.id = 1,
                             .op = HM_AGENT_OP_MOUNT,
                             .type = HM_TYPE_9P,
                             .port = "p",
                             .source = "/x",
                             .target = "/mnt/x"};
  ck_assert_int_eq(hm_agent_request_encode(&line, &p9_src, &err), HM_E_INVALID);
  ck_assert_error(err, HM_E_INVALID, "and no source");
  hm_error_free(err);

  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"bind\",\"target\":\"/mnt/x\","
          "\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "missing field 'source'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"bind\",\"source\":\"/s\",\"tag\":\"t\","
          "\"target\":\"/mnt/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "type bind takes no 'tag'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"bind\",\"source\":\"/s\",\"options\":"
          "\"rw\",\"target\":\"/mnt/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "type bind takes no 'options'", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"bind\",\"source\":\"/s\",\"port\":"
          "\"p\",\"target\":\"/mnt/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "'port' is only for type 9p", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"9p\",\"port\":\"p\",\"source\":"
          "\"/s\",\"target\":\"/mnt/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "'source' is only for types bind and virtiofs", 9);
  req_bad("{\"id\":9,\"op\":\"mount\",\"type\":\"bind\",\"source\":5,"
          "\"target\":\"/mnt/x\",\"readonly\":true,\"timeout_ms\":1}",
          HM_E_PROTOCOL, "field 'source' must be a string", 9);
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
          HM_E_PROTOCOL, "type 9p needs a 'port' or a 'tag'", 9);
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
  hm_agent_msg *msg = NULL;
  ck_assert_int_eq(hm_agent_msg_parse(&msg, &id, line, strlen(line), NULL), 0);
  ck_assert_int_eq(id, 11);
  hm_agent_response_clear(&r);
  /* The parse the reader made is what the waiter decodes. */
  ck_assert_int_eq(hm_agent_response_from_msg(&r, HM_AGENT_OP_HELLO, msg, NULL), 0);
  ck_assert_str_eq(r.agent_name, "hotmount-agent");
  hm_agent_msg_free(msg);
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
  ck_assert_int_eq(hm_agent_msg_parse(&msg, &id, "{\"ok\":true}", 11, &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "missing field 'id'");
  ck_assert_ptr_null(msg);
  hm_error_free(err);
}
END_TEST

/* A string of n copies of c (malloc'd). */
static char *rep(char c, size_t n) {
  char *s = malloc(n + 1);
  ck_assert_ptr_nonnull(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* Decoding line (malloc'd, freed here) as an answer to op must fail with
 * HM_E_PROTOCOL naming needle. */
static void resp_bad(int op, char *line, const char *needle) {
  hm_agent_response r;
  hm_error *err = NULL;
  ck_assert_int_eq(rdec(&r, op, line, &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, needle);
  hm_agent_response_clear(&r);
  hm_error_free(err);
  free(line);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *s = NULL;
  ck_assert_int_ge(vasprintf(&s, f, ap), 0);
  va_end(ap);
  return s;
}

/* What a hostile guest sends: every field is capped, lines too, and JSON
 * nesting; the largest honest values still pass. */
START_TEST(response_caps) {
  hm_agent_response r;
  char *big;
  /* Field caps: one byte over fails naming the field; the cap itself passes. */
  big = rep('e', HM_AGENT_MAX_ERROR + 1);
  resp_bad(HM_AGENT_OP_MOUNT, fmt("{\"id\":1,\"ok\":false,\"errno\":5,\"error\":\"%s\"}", big),
           "field 'error' is too long");
  big[HM_AGENT_MAX_ERROR] = '\0';
  char *line = fmt("{\"id\":1,\"ok\":false,\"errno\":5,\"error\":\"%s\"}", big);
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_MOUNT, line, NULL), 0);
  ck_assert_uint_eq(strlen(r.error), HM_AGENT_MAX_ERROR);
  hm_agent_response_clear(&r);
  free(line);
  free(big);

  const char *hello = "{\"id\":1,\"ok\":true,\"major\":1,\"minor\":1,\"agent\":\"%s\","
                      "\"agent_version\":\"%s\",\"capabilities\":[%s]%s}";
  big = rep('v', HM_AGENT_MAX_NAME + 1);
  resp_bad(HM_AGENT_OP_HELLO, fmt(hello, "a", big, "", ""), "field 'agent_version' is too long");
  resp_bad(HM_AGENT_OP_HELLO, fmt(hello, big, "1", "", ""), "field 'agent' is too long");
  char *cap = fmt("\"%s\"", big);
  resp_bad(HM_AGENT_OP_HELLO, fmt(hello, "a", "1", cap, ""), "capabilities[0] is too long");
  free(cap);
  free(big);
  /* 65 capabilities */
  size_t clen = (size_t)(HM_AGENT_MAX_CAPS + 1) * 4;
  char *caps = calloc(1, clen + 1);
  for (int i = 0; i <= HM_AGENT_MAX_CAPS; i++)
    strcat(caps, i ? ",\"c\"" : "\"c\"");
  resp_bad(HM_AGENT_OP_HELLO, fmt(hello, "a", "1", caps, ""), "65 capabilities, at most 64");
  free(caps);
  /* Boot ids: a UUID passes; a huge one, or one carrying other text, fails. */
  line = fmt(hello, "a", "1", "", ",\"boot_id\":\"0f6c1e2a-9b3d-4c5e-8f70-123456789abc\"");
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_HELLO, line, NULL), 0);
  ck_assert_str_eq(r.boot_id, "0f6c1e2a-9b3d-4c5e-8f70-123456789abc");
  hm_agent_response_clear(&r);
  free(line);
  big = rep('a', HM_AGENT_MAX_BOOT_ID + 1);
  char *tail = fmt(",\"boot_id\":\"%s\"", big);
  resp_bad(HM_AGENT_OP_HELLO, fmt(hello, "a", "1", "", tail), "field 'boot_id' is too long");
  free(tail);
  free(big);
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"boot_id\":\"ab/../etc\",\"mounts\":[]}"),
           "'boot_id' holds a character other than");
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"boot_id\":\"\",\"mounts\":[]}"),
           "'boot_id' is empty");

  /* Mount list entries and their number. */
  const char *entry = "{\"target\":\"%s\",\"fstype\":\"%s\",\"source\":\"%s\",\"options\":\"%s\"}";
  big = rep('p', HM_AGENT_MAX_PATH + 1);
  big[0] = '/';
  char *e = fmt(entry, big, "9p", "s", "");
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", e),
           "mount entry: field 'target' is too long");
  free(e);
  e = fmt(entry, "/a", "9p", big, "");
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", e),
           "field 'source' is too long");
  free(e);
  e = fmt(entry, "/a", "9p", "s", big);
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", e),
           "field 'options' is too long");
  free(e);
  big[HM_AGENT_MAX_NAME + 1] = '\0';
  e = fmt(entry, "/a", big, "s", "");
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", e),
           "field 'fstype' is too long");
  free(e);
  free(big);
  e = fmt(entry, "/mnt/x", "virtiofs", "hm-1", "ro");
  size_t elen = strlen(e) + 1;
  char *many = calloc(1, elen * (HM_AGENT_MAX_MOUNTS + 1) + 1);
  for (int i = 0; i < HM_AGENT_MAX_MOUNTS; i++) {
    if (i)
      strcat(many, ",");
    strcat(many, e);
  }
  line = fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", many);
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_LIST, line, NULL), 0);
  ck_assert_uint_eq(r.n_mounts, HM_AGENT_MAX_MOUNTS);
  hm_agent_response_clear(&r);
  free(line);
  strcat(many, ",");
  strcat(many, e);
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"mounts\":[%s]}", many),
           "257 mounts, at most 256");
  free(many);
  free(e);

  /* A line over the answer cap is refused before it is parsed. */
  big = rep('x', HM_AGENT_MAX_ANSWER);
  resp_bad(HM_AGENT_OP_MOUNT, fmt("{\"id\":1,\"ok\":false,\"errno\":5,\"error\":\"%s\"}", big),
           "response is too long");
  free(big);
}
END_TEST

/* Nesting: our deepest answer (list -> mounts -> entry) passes; one level
 * more is refused by the tokener, wherever it hides. */
START_TEST(response_depth) {
  hm_agent_response r;
  ck_assert_int_eq(rdec(&r, HM_AGENT_OP_LIST,
                        "{\"id\":1,\"ok\":true,\"mounts\":[{\"target\":\"/a\",\"fstype\":\"9p\","
                        "\"source\":\"s\",\"options\":\"\"}]}",
                        NULL),
                   0);
  hm_agent_response_clear(&r);
  resp_bad(HM_AGENT_OP_LIST, fmt("{\"id\":1,\"ok\":true,\"x\":[[[1]]]}"), "not valid JSON");
  size_t n = 100000;
  char *deep = malloc(2 * n + 64);
  char *p = deep + sprintf(deep, "{\"id\":1,\"ok\":true,\"x\":");
  memset(p, '[', n);
  memset(p + n, ']', n);
  strcpy(p + 2 * n, "}");
  resp_bad(HM_AGENT_OP_LIST, deep, "nesting too deep");
  /* Requests (what the agent reads) are flat: the same limit holds. */
  hm_agent_request req;
  hm_error *err = NULL;
  ck_assert_int_eq(dec(&req, "{\"id\":1,\"op\":\"list\",\"x\":[[[[1]]]]}", &err), HM_E_PROTOCOL);
  ck_assert_error(err, HM_E_PROTOCOL, "nesting too deep");
  hm_agent_request_clear(&req);
  hm_error_free(err);
}
END_TEST

Suite *proto_suite(void) {
  Suite *s = suite_create("proto");
  TCase *tc = tcase_create("codec");
  tcase_add_test(tc, request_roundtrip);
  tcase_add_test(tc, request_bind);
  tcase_add_test(tc, request_malformed);
  tcase_add_test(tc, request_unknown_op);
  tcase_add_test(tc, request_fields);
  tcase_add_test(tc, response_codec);
  tcase_add_test(tc, response_caps);
  tcase_add_test(tc, response_depth);
  suite_add_tcase(s, tc);
  return s;
}
