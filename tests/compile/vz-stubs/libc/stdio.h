/* Stub of <stdio.h> (C11): only what the VZ example uses. */
#ifndef HM_STUB_STDIO_H
#define HM_STUB_STDIO_H
#include <stddef.h>
typedef struct __sFILE FILE;
extern FILE *__stderrp;
#define stderr __stderrp
int fprintf(FILE *restrict stream, const char *restrict format, ...)
    __attribute__((format(printf, 2, 3)));
#endif
