/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for mount options, from the user's -o KEY=VALUE to the
 * string the guest mounts with. Byte 0 picks the mount type; the rest is a
 * list of lines. Host side: each line is one -o argument, split at its first
 * '=' as `hotmount add` does, set with hm_mount_spec_set_option, then the
 * spec is validated with the per-transport option rules, and a 9p spec that
 * passes (with the QEMU backend's option rules) is turned into the guest's
 * option string (hm_ninep_guest_options).
 * Guest side: the agent takes an option string from the host as it comes, so
 * the raw text after byte 0 is also fed to hm_guest_9p_options and to
 * hm_guest_mount_build for each type, and what the host would send is checked
 * to be accepted by the agent.
 */
#include "guest_mount.h"
#include "mount_internal.h"
#include "ninep.h"
#include "qemu_internal.h"

#include <hotmount/mount.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void guest_side(int type, const char *options) {
  hm_error *err = NULL;
  char *out = NULL;
  unsigned msize = 0;
  if (hm_guest_9p_options(&out, &msize, options, &err) == 0 && !out)
    abort(); /* success promises a string */
  free(out);
  hm_error_free(err);
  err = NULL;
  hm_guest_mount_call call;
  memset(&call, 0, sizeof call);
  if (hm_guest_mount_build(&call, type, type == HM_TYPE_9P ? "hm-9p-1" : "hm-tag", 1, options,
                           &err) == 0) {
    char *d = NULL;
    if (type == HM_TYPE_9P && hm_guest_9p_data(&d, &call, 3) == 0)
      free(d);
    hm_guest_mount_call_clear(&call);
  }
  hm_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 16384)
    return 0;
  int type = HM_TYPE_VIRTIOFS + data[0] % 3;
  char *text = malloc(size);
  if (!text)
    return 0;
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  if (strlen(text) == size - 1)
    guest_side(type, text);

  hm_mount_spec *spec = NULL;
  if (hm_mount_spec_new(&spec, NULL) < 0)
    abort();
  hm_mount_spec_set_type(spec, type, NULL);
  hm_mount_spec_set_host_path(spec, "/tmp", NULL);
  hm_mount_spec_set_guest_path(spec, "/mnt/fuzz", NULL);
  int usage_ok = 1;
  for (char *line = text, *next; line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    char *eq = strchr(line, '=');
    if (!eq || eq == line) {
      usage_ok = 0; /* hotmount add stops here with a usage error */
      continue;
    }
    *eq = '\0';
    hm_error *err = NULL;
    if (hm_mount_spec_set_option(spec, line, eq + 1, &err) < 0)
      usage_ok = 0;
    hm_error_free(err);
  }
  hm_error *err = NULL;
  /* The core's checks, then the QEMU backend's option rules (its validate
   * op), as hm_instance_add runs them for virtiofs and 9p. */
  int valid = usage_ok && hm_mount_spec_validate(spec, &err) == 0 &&
              (type == HM_TYPE_REVERSE_SSHFS || hm_qemu_validate(NULL, spec, &err) == 0);
  if (valid && type == HM_TYPE_9P) {
    char *opts = NULL;
    hm_error *e2 = NULL;
    if (hm_ninep_guest_options(&opts, spec, "/", &e2) == 0) {
      /* A valid spec must give options the agent accepts. */
      char *checked = NULL;
      hm_error *e3 = NULL;
      if (hm_guest_9p_options(&checked, NULL, opts, &e3) < 0)
        abort();
      free(checked);
      hm_error_free(e3);
    }
    free(opts);
    hm_error_free(e2);
  }
  hm_error_free(err);
  /* What the daemon would write to state.json must read back. */
  json_object *o = hm_mount_spec_to_json_object(spec);
  if (o) {
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    hm_mount_spec *back = NULL;
    hm_error *e4 = NULL;
    if (hm_mount_spec_from_json(&back, s, strlen(s), &e4) < 0 && hm_error_code(e4) != HM_E_NOMEM)
      abort();
    hm_mount_spec_free(back);
    hm_error_free(e4);
    json_object_put(o);
  }
  hm_mount_spec_free(spec);
  free(text);
  return 0;
}
