/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Memory the library hands out is freed by the library: an FFI caller (Python
 * ctypes, Go, Rust) cannot know which allocator the library's free() is, and
 * the C library's free() it can reach may not be it (a sanitizer's or another
 * malloc interposed in the library's process). */
#include "private.h"

#include <stdlib.h>

void hm_free(void *p) {
  free(p);
}
