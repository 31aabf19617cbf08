/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the agent protocol, both directions: what a guest
 * sends the host (hm_agent_msg_parse, then a strict decode as the answer to
 * every op, as the host's waiter does) and what the host sends the agent
 * (hm_agent_request_decode). Byte 0 picks the op to decode an answer as; the
 * rest is one line. The guest is untrusted: any input must end in a clean
 * error, never a crash, a leak or unbounded work.
 */
#include "agent_proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  int op = HM_AGENT_OP_HELLO + data[0] % 4;
  const char *line = (const char *)data + 1;
  size_t len = size - 1;
  if (memchr(line, '\0', len))
    return 0; /* the line readers stop at NUL: such a line never reaches these */

  hm_agent_msg *msg = NULL;
  int64_t id = 0;
  if (hm_agent_msg_parse(&msg, &id, line, len, NULL) == 0) {
    for (int o = HM_AGENT_OP_HELLO; o <= HM_AGENT_OP_LIST; o++) {
      hm_agent_response resp;
      memset(&resp, 0, sizeof resp);
      hm_agent_response_from_msg(&resp, o, msg, NULL);
      hm_agent_response_clear(&resp);
    }
    hm_agent_msg_free(msg);
  }
  hm_agent_response resp;
  memset(&resp, 0, sizeof resp);
  hm_error *err = NULL;
  hm_agent_response_decode(&resp, op, line, len, &err);
  hm_agent_response_clear(&resp);
  hm_error_free(err);

  hm_agent_request req;
  memset(&req, 0, sizeof req);
  err = NULL;
  if (hm_agent_request_decode(&req, line, len, &err) == 0) {
    /* what the agent accepts must encode back */
    char *out = NULL;
    hm_error *e2 = NULL;
    hm_agent_request_encode(&out, &req, &e2);
    free(out);
    hm_error_free(e2);
  }
  hm_agent_request_clear(&req);
  hm_error_free(err);
  return 0;
}
