/* Stub of <Virtualization/Virtualization.h>: only the classes and members the
 * VZ shim and example use, with the SDK's types, nullability and
 * availability. */
#ifndef HM_STUB_VIRTUALIZATION_H
#define HM_STUB_VIRTUALIZATION_H

#include <Foundation/Foundation.h>

#define VZ_EXPORT __attribute__((visibility("default")))

NS_ASSUME_NONNULL_BEGIN

/* VZBootLoader.h, VZLinuxBootLoader.h */
VZ_EXPORT API_AVAILABLE(macos(11.0)) @interface VZBootLoader : NSObject<NSCopying>
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
@end

VZ_EXPORT API_AVAILABLE(macos(11.0)) @interface VZLinuxBootLoader : VZBootLoader
- (instancetype)initWithKernelURL:(NSURL *)kernelURL NS_DESIGNATED_INITIALIZER;
@property(copy) NSURL *kernelURL;
@property(copy) NSString *commandLine;
@property(nullable, copy) NSURL *initialRamdiskURL;
@end

/* VZSharedDirectory.h */
VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZSharedDirectory : NSObject
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
- (instancetype)initWithURL:(NSURL *)url readOnly:(BOOL)readOnly NS_DESIGNATED_INITIALIZER;
@property(readonly, copy) NSURL *URL;
@property(readonly, getter=isReadOnly) BOOL readOnly;
@end

/* VZDirectoryShare.h, VZSingleDirectoryShare.h, VZMultipleDirectoryShare.h */
VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZDirectoryShare : NSObject
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
@end

VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZSingleDirectoryShare : VZDirectoryShare
- (instancetype)initWithDirectory:(VZSharedDirectory *)directory NS_DESIGNATED_INITIALIZER;
@property(readonly) VZSharedDirectory *directory;
@end

VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZMultipleDirectoryShare : VZDirectoryShare
- (instancetype)init;
- (instancetype)initWithDirectories:(NSDictionary<NSString *, VZSharedDirectory *> *)directories
    NS_DESIGNATED_INITIALIZER;
@property(readonly, copy) NSDictionary<NSString *, VZSharedDirectory *> *directories;
@end

/* VZDirectorySharingDeviceConfiguration.h, VZVirtioFileSystemDeviceConfiguration.h */
VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZDirectorySharingDeviceConfiguration
    : NSObject<NSCopying>
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
@end

VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZVirtioFileSystemDeviceConfiguration
    : VZDirectorySharingDeviceConfiguration
- (instancetype)initWithTag:(NSString *)tag NS_DESIGNATED_INITIALIZER;
+ (BOOL)validateTag:(NSString *)tag error:(NSError **)error;
@property(copy) NSString *tag;
@property(nullable, strong) VZDirectoryShare *share;
@end

/* VZDirectorySharingDevice.h, VZVirtioFileSystemDevice.h */
VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZDirectorySharingDevice : NSObject
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
@end

VZ_EXPORT API_AVAILABLE(macos(12.0)) @interface VZVirtioFileSystemDevice : VZDirectorySharingDevice
@property(readonly, copy) NSString *tag;
@property(nullable, strong) VZDirectoryShare *share;
@end

/* VZVirtualMachineConfiguration.h */
VZ_EXPORT API_AVAILABLE(macos(11.0)) @interface VZVirtualMachineConfiguration : NSObject<NSCopying>
@property(nullable, strong) VZBootLoader *bootLoader;
@property(readwrite) uint64_t memorySize;
@property(readwrite) NSUInteger CPUCount;
@property(readwrite, copy)
    NSArray<VZDirectorySharingDeviceConfiguration *> *directorySharingDevices API_AVAILABLE(
        macos(12.0));
- (BOOL)validateWithError:(NSError **)error;
@end

/* VZVirtualMachine.h */
typedef NS_ENUM(NSInteger, VZVirtualMachineState) {
  VZVirtualMachineStateStopped,
  VZVirtualMachineStateRunning,
  VZVirtualMachineStatePaused,
  VZVirtualMachineStateError,
  VZVirtualMachineStateStarting,
  VZVirtualMachineStatePausing,
  VZVirtualMachineStateResuming,
  VZVirtualMachineStateStopping API_AVAILABLE(macos(12.0)),
} API_AVAILABLE(macos(11.0));

VZ_EXPORT API_AVAILABLE(macos(11.0)) @interface VZVirtualMachine : NSObject
+ (instancetype)new NS_UNAVAILABLE;
- (instancetype)init NS_UNAVAILABLE;
- (instancetype)initWithConfiguration:(VZVirtualMachineConfiguration *)configuration;
- (instancetype)initWithConfiguration:(VZVirtualMachineConfiguration *)configuration
                                queue:(dispatch_queue_t)queue NS_DESIGNATED_INITIALIZER;
@property(readonly) VZVirtualMachineState state;
@property(readonly, copy)
    NSArray<VZDirectorySharingDevice *> *directorySharingDevices API_AVAILABLE(macos(12.0));
- (void)startWithCompletionHandler:(void (^)(NSError *_Nullable errorOrNil))completionHandler;
@end

NS_ASSUME_NONNULL_END

#endif
