/* Stub of <string.h> (C11/POSIX): only what the VZ shim and example use. */
#ifndef HM_STUB_STRING_H
#define HM_STUB_STRING_H
#include <stddef.h>
char *strdup(const char *s);
size_t strlen(const char *s);
#endif
