/* Stub of <stdlib.h> (C11/POSIX): only what the VZ shim and example use. */
#ifndef HM_STUB_STDLIB_H
#define HM_STUB_STDLIB_H
#include <stddef.h>
void *malloc(size_t size);
void free(void *ptr);
void exit(int status) __attribute__((noreturn));
#define EXIT_FAILURE 1
#define EXIT_SUCCESS 0
#endif
