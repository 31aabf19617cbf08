/* Stub of <objc/objc.h> + <objc/NSObject.h>: the root class and BOOL. */
#ifndef HM_STUB_OBJC_NSOBJECT_H
#define HM_STUB_OBJC_NSOBJECT_H

#include <os/availability.h>
#include <stddef.h>
#include <stdint.h>

/* x86_64 macOS: BOOL is signed char (arm64: bool). */
typedef signed char BOOL;
#define YES __objc_yes
#define NO __objc_no
#define nil ((void *)0)
#define Nil ((void *)0)

typedef long NSInteger;
typedef unsigned long NSUInteger;

#define NS_ASSUME_NONNULL_BEGIN _Pragma("clang assume_nonnull begin")
#define NS_ASSUME_NONNULL_END _Pragma("clang assume_nonnull end")
#define NS_DESIGNATED_INITIALIZER __attribute__((objc_designated_initializer))
#define NS_UNAVAILABLE __attribute__((unavailable))
#define NS_RETURNS_INNER_POINTER __attribute__((objc_returns_inner_pointer))
#define NS_FORMAT_FUNCTION(F, A) __attribute__((format(__NSString__, F, A)))
#define NS_ENUM(T, N)                                                                              \
  enum N : T N;                                                                                    \
  enum N : T

NS_ASSUME_NONNULL_BEGIN

@protocol NSObject
- (BOOL)isEqual:(id)object;
- (BOOL)isKindOfClass:(Class)aClass;
@end

__attribute__((objc_root_class))
@interface NSObject<NSObject> {
  Class isa;
}
+ (instancetype)new;
+ (instancetype)alloc;
- (instancetype)init;
+ (Class)class;
@end

NS_ASSUME_NONNULL_END

#endif
