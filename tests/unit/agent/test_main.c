/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of the guest agent: path rules, codec, and the host client
 * against the real hotmount-agent binary (HM_AGENT_BIN) in --socket mode. */
#include "tests.h"

#include <stdlib.h>

int main(void) {
  SRunner *sr = srunner_create(guest_suite());
  srunner_add_suite(sr, proto_suite());
  srunner_add_suite(sr, client_suite());
  srunner_add_suite(sr, relay_suite());
  srunner_add_suite(sr, limits_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
