/* Stub of <os/availability.h>: API_AVAILABLE(macos(x)) as clang's attribute. */
#ifndef HM_STUB_OS_AVAILABILITY_H
#define HM_STUB_OS_AVAILABILITY_H
#define HM_STUB_AVAIL_macos(v) __attribute__((availability(macos, introduced = v)))
#define API_AVAILABLE(x) HM_STUB_AVAIL_##x
#endif
