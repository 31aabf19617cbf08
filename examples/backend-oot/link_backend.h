/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An out-of-tree libhotmount backend: see link_backend.c. */
#ifndef LINK_BACKEND_H
#define LINK_BACKEND_H

#include <hotmount/hotmount.h>

/* A backend whose "guest" is the directory root: a mount of SHARE at
 * /mnt/x is the symbolic link root/mnt/x -> SHARE. Takes one option,
 * "label" (1 to 32 letters or digits). */
int link_backend_new(hm_fs_hotplugger **out, const char *root, hm_error **err);

#endif
