/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest mount point rules, shared by the host (request validation) and the
 * guest agent (which checks again: it must not trust the host to have done it).
 * Pure string functions: they never look at a file system.
 */
#ifndef HM_GUEST_PATH_H
#define HM_GUEST_PATH_H

#include "core/private.h"

/*
 * hm_guest_path_normalize: *out = malloc'd normal form of path: absolute,
 * "//" and "." collapsed, no trailing slash ("/" stays "/"). Rejected with
 * HM_E_INVALID and a message naming the path: relative paths, any ".."
 * component, invalid UTF-8, control characters (C0, DEL, C1; newline
 * included), components longer than NAME_MAX, paths of PATH_MAX bytes or more.
 */
HM_PRIVATE int hm_guest_path_normalize(char **out, const char *path, hm_error **err);

/*
 * hm_guest_path_check: refuses (HM_E_INVALID) mount points that would shadow
 * the guest's own system: "/", anything at or below /proc /sys /dev /etc /usr
 * /boot /bin /sbin /lib /lib32 /lib64 /libx32 /run, and exactly /var /tmp
 * /home /root /opt /srv /mnt /media (below those is fine). `normalized` must
 * come from hm_guest_path_normalize.
 */
HM_PRIVATE int hm_guest_path_check(const char *normalized, hm_error **err);

/*
 * hm_guest_path_quote: a malloc'd printable rendering of any string for
 * messages: control characters and invalid UTF-8 bytes become \xNN, so an
 * error message never carries a raw newline. NULL on OOM.
 */
HM_PRIVATE char *hm_guest_path_quote(const char *s);

/*
 * hm_text_scan: checks that the len bytes at s are UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF: each would let another byte
 * string pass a comparison) without control characters (C0, DEL, C1).
 * 0 when they are; else HM_TEXT_BAD_UTF8 or HM_TEXT_CONTROL, with *at the
 * offending byte offset and, for a control character, *cp its code point.
 * Host paths, guest paths and option values all pass through it.
 */
#define HM_TEXT_BAD_UTF8 1
#define HM_TEXT_CONTROL 2
HM_PRIVATE int hm_text_scan(const char *s, size_t len, size_t *at, unsigned *cp);

#endif
