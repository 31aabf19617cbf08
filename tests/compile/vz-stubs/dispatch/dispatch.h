/* Stub of <dispatch/dispatch.h> as seen from Objective-C with ARC
 * (OS_OBJECT_USE_OBJC: queues and semaphores are retainable objects). */
#ifndef HM_STUB_DISPATCH_H
#define HM_STUB_DISPATCH_H

#include <objc/NSObject.h>

NS_ASSUME_NONNULL_BEGIN

@protocol OS_object <NSObject>
@end
@protocol OS_dispatch_object <OS_object>
@end
@protocol OS_dispatch_queue <OS_dispatch_object>
@end
@protocol OS_dispatch_queue_attr <OS_dispatch_object>
@end
@protocol OS_dispatch_semaphore <OS_dispatch_object>
@end
typedef NSObject<OS_dispatch_queue> *dispatch_queue_t;
typedef NSObject<OS_dispatch_queue_attr> *dispatch_queue_attr_t;
typedef NSObject<OS_dispatch_semaphore> *dispatch_semaphore_t;

typedef uint64_t dispatch_time_t;
#define DISPATCH_TIME_NOW (0ull)
#define DISPATCH_TIME_FOREVER (~0ull)
#define NSEC_PER_SEC 1000000000ull
#define NSEC_PER_MSEC 1000000ull
#define DISPATCH_QUEUE_SERIAL NULL

typedef void (^dispatch_block_t)(void);
typedef void (*dispatch_function_t)(void *_Nullable);

void dispatch_async(dispatch_queue_t queue, dispatch_block_t block);
void dispatch_sync(dispatch_queue_t queue, __attribute__((noescape)) dispatch_block_t block);
dispatch_queue_t dispatch_queue_create(const char *_Nullable label,
                                       dispatch_queue_attr_t _Nullable attr);
/* An inline function returning &_dispatch_main_q in the SDK. */
dispatch_queue_t dispatch_get_main_queue(void);
void dispatch_queue_set_specific(dispatch_queue_t queue, const void *key, void *_Nullable context,
                                 dispatch_function_t _Nullable destructor);
void *_Nullable dispatch_get_specific(const void *key);
dispatch_semaphore_t dispatch_semaphore_create(intptr_t value);
intptr_t dispatch_semaphore_wait(dispatch_semaphore_t dsema, dispatch_time_t timeout);
intptr_t dispatch_semaphore_signal(dispatch_semaphore_t dsema);
dispatch_time_t dispatch_time(dispatch_time_t when, int64_t delta);
void dispatch_main(void) __attribute__((noreturn));

NS_ASSUME_NONNULL_END

#endif
