/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_COMMON_H
#define HOTMOUNT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define HM_BEGIN_DECLS extern "C" {
#define HM_END_DECLS }
#else
#define HM_BEGIN_DECLS
#define HM_END_DECLS
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HM_API __attribute__((visibility("default")))
#else
#define HM_API
#endif

#endif
