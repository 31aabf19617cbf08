/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HM_TEST_AGENT_TESTS_H
#define HM_TEST_AGENT_TESTS_H

#include <check.h>

Suite *guest_suite(void);
Suite *proto_suite(void);
Suite *client_suite(void);
Suite *relay_suite(void);
Suite *limits_suite(void);

/* Asserts that err is set with code and that its message contains needle. */
#define ck_assert_error(err, code, needle)                                                         \
  do {                                                                                             \
    ck_assert_ptr_nonnull(err);                                                                    \
    ck_assert_int_eq(hm_error_code(err), (code));                                                  \
    ck_assert_msg(strstr(hm_error_message(err), (needle)) != NULL, "message '%s' lacks '%s'",      \
                  hm_error_message(err), (needle));                                                \
  } while (0)

#endif
