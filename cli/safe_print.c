/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Text from the daemon can hold what a guest wrote (agent errors, sshfs
 * stderr, mount targets the guest reported). A terminal acts on control
 * characters (ESC starts sequences that retitle windows, move the cursor or,
 * on some terminals, answer back), so nothing the CLI prints carries them.
 */
#include "safe_print.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at u (code point in *cp), or 0: no
 * overlong forms, surrogates or code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *u, unsigned *cp) {
  if (u[0] < 0x80) {
    *cp = u[0];
    return 1;
  }
  size_t n = u[0] >= 0xc2 && u[0] <= 0xdf   ? 2
             : u[0] >= 0xe0 && u[0] <= 0xef ? 3
             : u[0] >= 0xf0 && u[0] <= 0xf4 ? 4
                                            : 0;
  if (!n)
    return 0;
  unsigned c = u[0] & (0x7f >> n);
  for (size_t i = 1; i < n; i++) {
    if ((u[i] & 0xc0) != 0x80)
      return 0;
    c = (c << 6) | (u[i] & 0x3f);
  }
  if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
      (n == 4 && (c < 0x10000 || c > 0x10ffff)))
    return 0;
  *cp = c;
  return n;
}

static int is_control(unsigned cp) {
  return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

char *cli_escape(const char *s) {
  if (!s)
    return strdup("");
  size_t n = strlen(s);
  char *out = malloc(n * 4 + 1), *o = out;
  if (!out)
    return NULL;
  const unsigned char *u = (const unsigned char *)s;
  while (*u) {
    unsigned cp = 0;
    size_t len = utf8_len(u, &cp);
    if (len == 0 || is_control(cp)) {
      size_t k = len ? len : 1;
      for (size_t i = 0; i < k; i++)
        o += sprintf(o, "\\x%02x", u[i]);
      u += k;
    } else {
      memcpy(o, u, len);
      o += len;
      u += len;
    }
  }
  *o = '\0';
  return out;
}

/* The last few results of cli_safe, freed as new ones come (a printf takes
 * a handful). */
#define KEEP 16
static char *kept[KEEP];
static size_t next_kept;

const char *cli_safe(const char *s) {
  char *e = cli_escape(s);
  if (!e)
    return "(out of memory)";
  free(kept[next_kept]);
  kept[next_kept] = e;
  next_kept = (next_kept + 1) % KEEP;
  return e;
}

char *cli_json_safe(const char *json) {
  size_t n = strlen(json);
  char *out = malloc(n * 6 + 1), *o = out;
  if (!out)
    return NULL;
  const unsigned char *u = (const unsigned char *)json;
  int in_str = 0, esc = 0;
  while (*u) {
    unsigned cp = 0;
    size_t len = utf8_len(u, &cp);
    if (len == 0) {
      /* Not UTF-8: JSON cannot carry the byte; say so visibly. */
      o += sprintf(o, "\\ufffd");
      u++;
      esc = 0;
      continue;
    }
    if (in_str && is_control(cp)) {
      /* Inside a string \u00XX means the same; outside, whitespace stays. */
      o += sprintf(o, "\\u%04x", cp);
    } else {
      memcpy(o, u, len);
      o += len;
      if (in_str && !esc && cp == '"')
        in_str = 0;
      else if (!in_str && cp == '"')
        in_str = 1;
    }
    esc = in_str && !esc && cp == '\\';
    u += len;
  }
  *o = '\0';
  return out;
}
