/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Printing text that may come from a guest (see safe_print.c). */
#ifndef HM_CLI_SAFE_PRINT_H
#define HM_CLI_SAFE_PRINT_H

/* s with control characters (C0, DEL, C1) and invalid UTF-8 bytes as \xNN;
 * malloc'd, NULL on OOM. NULL s gives "". Backslashes stay: what the
 * library escaped already (\x1b) is shown once, not as \x5cx1b. */
char *cli_escape(const char *s);
/* cli_escape for printf arguments: the result stays valid for the next 15
 * calls (the CLI prints from one thread). */
const char *cli_safe(const char *s);
/* A JSON text with every control character inside its strings as \u00XX
 * and any byte that is not UTF-8 as \ufffd; malloc'd, NULL on OOM. */
char *cli_json_safe(const char *json);

#endif
