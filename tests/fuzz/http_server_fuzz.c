/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for what hotmountd's HTTP API parses from a request
 * (lib/server/server.c, included here so its static parsers are reachable):
 * the POST /v1/mounts body (hm_mount_spec_from_json then validation), the
 * DELETE /v1/mounts body and query arguments, and the POST /v1/agent/connect
 * body. Byte 0 picks the parser. The caller is a local user the socket's
 * owner let in, but a confused or hostile client must only ever get an
 * error answer.
 */
#include "../../lib/server/server.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "k=v&k2&..." as MHD hands the pairs to delete_query_arg. */
static void query_args(char *text) {
  delete_args a = {0};
  for (char *kv = text, *next; kv; kv = next) {
    next = strchr(kv, '&');
    if (next)
      *next++ = '\0';
    char *eq = strchr(kv, '=');
    if (eq)
      *eq++ = '\0';
    if (delete_query_arg(&a, MHD_GET_ARGUMENT_KIND, kv, eq) == MHD_NO)
      break;
  }
  free(a.mount_point);
  free(a.bad);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  /* Bodies arrive NUL-terminated after len bytes (access_handler). */
  char *text = malloc(size);
  if (!text)
    return 0;
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  size_t len = size - 1;
  hm_error *err = NULL;
  switch (data[0] % 4) {
  case 0: {
    hm_mount_spec *spec = NULL;
    if (hm_mount_spec_from_json(&spec, text, len, &err) == 0) {
      hm_error *e2 = NULL;
      hm_mount_spec_validate(spec, &e2);
      hm_error_free(e2);
    }
    hm_mount_spec_free(spec);
    break;
  }
  case 1: {
    delete_args a = {0};
    delete_from_body(&a, text, len, &err);
    free(a.mount_point);
    free(a.bad);
    break;
  }
  case 2: {
    int t = DEFAULT_AGENT_WAIT_MS;
    if (agent_wait_from_body(&t, text, len, &err) == 0 && (t < 1 || t > MAX_AGENT_WAIT_MS))
      abort();
    break;
  }
  default:
    if (strlen(text) == len)
      query_args(text);
    break;
  }
  hm_error_free(err);
  free(text);
  return 0;
}
