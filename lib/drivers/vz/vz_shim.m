/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Objective-C shim between the VZ backend's C side and
 * Virtualization.framework (ARC; macOS only; see vz_shim.h for the contract).
 *
 * Threads: a VZVirtualMachine must only be touched on the serial queue it
 * was created with. Every VM access here runs as a block on that queue; the
 * caller waits for it with a semaphore. A block that the queue has not
 * started within HM_VZ_QUEUE_TIMEOUT_MS is cancelled (a flag it checks
 * first) so a timed-out change can never land later, behind the C side's
 * back. A caller already on the queue (recognised by a queue-specific key we
 * set) runs the work inline instead of waiting on itself.
 */
#import <Foundation/Foundation.h>
#import <Virtualization/Virtualization.h>
#include <dispatch/dispatch.h>

#include "vz_shim.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The address is the key; the value marks "this queue is a VM's queue". */
static char queue_key;

static char *copy_message(NSString *s) {
  const char *u = s.UTF8String;
  return strdup(u ? u : "(no message)");
}

static char *error_message(NSString *what, NSError *error) {
  return copy_message([NSString stringWithFormat:@"%@: %@ (%@ %ld)", what,
                                                 error.localizedDescription, error.domain,
                                                 (long)error.code]);
}

static char *exception_message(NSString *what, NSException *e) {
  return copy_message([NSString stringWithFormat:@"%@: %@: %@", what, e.name, e.reason]);
}

static NSString *spare_tag(unsigned i) {
  return [NSString stringWithFormat:@"%s%u", HM_VZ_TAG_PREFIX, i];
}

/* The placeholder share of a cleared spare: a share with no host directory
 * at all, so a guest that still has the tag mounted sees an empty root. */
API_AVAILABLE(macos(13.0))
static VZDirectoryShare *placeholder_share(void) {
  return [[VZMultipleDirectoryShare alloc] init];
}

static int reserve(void *vz_configuration, unsigned spares, char **errmsg) {
  if (@available(macOS 13, *)) {
    VZVirtualMachineConfiguration *config =
        (__bridge VZVirtualMachineConfiguration *)vz_configuration;
    @try {
      NSMutableArray<VZDirectorySharingDeviceConfiguration *> *devices =
          [NSMutableArray arrayWithArray:config.directorySharingDevices];
      for (VZDirectorySharingDeviceConfiguration *d in devices) {
        if (![d isKindOfClass:[VZVirtioFileSystemDeviceConfiguration class]])
          continue;
        NSString *tag = ((VZVirtioFileSystemDeviceConfiguration *)d).tag;
        if ([tag hasPrefix:@HM_VZ_TAG_PREFIX]) {
          *errmsg = copy_message(
              [NSString stringWithFormat:@"the configuration already has device %@", tag]);
          return HM_E_EXISTS;
        }
      }
      for (unsigned i = 0; i < spares; i++) {
        NSString *tag = spare_tag(i);
        NSError *error = nil;
        if (![VZVirtioFileSystemDeviceConfiguration validateTag:tag error:&error]) {
          *errmsg = error_message([NSString stringWithFormat:@"tag %@", tag], error);
          return HM_E_HELPER;
        }
        VZVirtioFileSystemDeviceConfiguration *fs =
            [[VZVirtioFileSystemDeviceConfiguration alloc] initWithTag:tag];
        fs.share = placeholder_share();
        [devices addObject:fs];
      }
      config.directorySharingDevices = devices;
    } @catch (NSException *e) {
      *errmsg = exception_message(@"Virtualization.framework", e);
      return HM_E_HELPER;
    }
    return 0;
  }
  *errmsg = strdup("the VZ backend needs macOS 13+");
  return HM_E_UNSUPPORTED;
}

/* The shim handle: the VM and its queue, retained. */
@interface HMVZShim : NSObject
@property(nonatomic, strong) VZVirtualMachine *vm;
@property(nonatomic, strong) dispatch_queue_t queue;
@property(nonatomic) unsigned spares;
@end

@implementation HMVZShim
@end

/* One piece of work for the VM's queue. state: 0 pending, 1 started, 2
 * cancelled (by a caller that gave up waiting). */
@interface HMVZCall : NSObject {
@public
  _Atomic int state;
  int rc;
  char *errmsg;
}
@end

@implementation HMVZCall
@end

/*
 * Runs work on the VM's queue and waits for it. work returns 0 or a negative
 * HM_E_* code with *errmsg set; it must not block.
 */
static int on_queue(HMVZShim *shim, int (^work)(char **errmsg), char **errmsg) {
  if (dispatch_get_specific(&queue_key) == (__bridge void *)shim.queue) {
    @try {
      return work(errmsg);
    } @catch (NSException *e) {
      *errmsg = exception_message(@"Virtualization.framework", e);
      return HM_E_HELPER;
    }
  }
  HMVZCall *call = [[HMVZCall alloc] init];
  dispatch_semaphore_t done = dispatch_semaphore_create(0);
  dispatch_async(shim.queue, ^{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&call->state, &expected, 1))
      return; /* the caller gave up; it already reported a timeout */
    char *msg = NULL;
    @try {
      call->rc = work(&msg);
    } @catch (NSException *e) {
      msg = exception_message(@"Virtualization.framework", e);
      call->rc = HM_E_HELPER;
    }
    call->errmsg = msg;
    dispatch_semaphore_signal(done);
  });
  dispatch_time_t deadline =
      dispatch_time(DISPATCH_TIME_NOW, (int64_t)HM_VZ_QUEUE_TIMEOUT_MS * NSEC_PER_MSEC);
  if (dispatch_semaphore_wait(done, deadline) != 0) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&call->state, &expected, 2)) {
      *errmsg = strdup("the VM's dispatch queue did not run the request within 10 s (is a "
                       "thread blocking it, or is it the main queue without a running loop?)");
      return HM_E_TIMEOUT;
    }
    /* Started just now: it does not block, so wait for it to finish. */
    dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
  }
  if (call->errmsg)
    *errmsg = call->errmsg;
  return call->rc;
}

/* Spare i on the running VM. Call on the VM's queue. */
API_AVAILABLE(macos(13.0))
static VZVirtioFileSystemDevice *find_spare(VZVirtualMachine *vm, unsigned i) {
  NSString *tag = spare_tag(i);
  for (VZDirectorySharingDevice *d in vm.directorySharingDevices)
    if ([d isKindOfClass:[VZVirtioFileSystemDevice class]] &&
        [((VZVirtioFileSystemDevice *)d).tag isEqualToString:tag])
      return (VZVirtioFileSystemDevice *)d;
  return nil;
}

static char *no_spare(unsigned i) {
  return copy_message(
      [NSString stringWithFormat:@"the VM has no spare device %@ (was it configured with "
                                 @"hm_vz_config_reserve and as many spares?)",
                                 spare_tag(i)]);
}

/* Anything but a directory share with no directories counts as in use. */
API_AVAILABLE(macos(13.0))
static BOOL is_placeholder(VZDirectoryShare *share) {
  if (!share)
    return YES;
  return [share isKindOfClass:[VZMultipleDirectoryShare class]] &&
         ((VZMultipleDirectoryShare *)share).directories.count == 0;
}

static int shim_open(void **out, uint64_t *in_use, void *vz_virtual_machine, void *dispatch_queue,
                     unsigned spares, char **errmsg) {
  if (@available(macOS 13, *)) {
    HMVZShim *shim = [[HMVZShim alloc] init];
    shim.vm = (__bridge VZVirtualMachine *)vz_virtual_machine;
    shim.queue = (__bridge dispatch_queue_t)dispatch_queue;
    shim.spares = spares;
    /* Marks the queue so a call made from it runs inline (see on_queue). The
     * value is the queue itself: another VM's queue is not mistaken for it. */
    dispatch_queue_set_specific(shim.queue, &queue_key, dispatch_queue, NULL);
    __block uint64_t used = 0;
    int r = on_queue(
        shim,
        ^int(char **msg) {
          for (unsigned i = 0; i < spares; i++) {
            VZVirtioFileSystemDevice *d = find_spare(shim.vm, i);
            if (!d) {
              *msg = no_spare(i);
              return HM_E_NOT_FOUND;
            }
            if (!is_placeholder(d.share))
              used |= (uint64_t)1 << i;
          }
          return 0;
        },
        errmsg);
    if (r < 0)
      return r;
    *in_use = used;
    *out = (__bridge_retained void *)shim;
    return 0;
  }
  *errmsg = strdup("the VZ backend needs macOS 13+");
  return HM_E_UNSUPPORTED;
}

static int shim_set_share(void *handle, unsigned index, const char *path, bool read_only,
                          char **errmsg) {
  if (@available(macOS 13, *)) {
    HMVZShim *shim = (__bridge HMVZShim *)handle;
    NSString *dir = [NSString stringWithUTF8String:path];
    if (!dir) {
      *errmsg = strdup("the host path is not UTF-8");
      return HM_E_INVALID;
    }
    NSURL *url = [NSURL fileURLWithPath:dir isDirectory:YES];
    return on_queue(
        shim,
        ^int(char **msg) {
          VZVirtioFileSystemDevice *d = find_spare(shim.vm, index);
          if (!d) {
            *msg = no_spare(index);
            return HM_E_NOT_FOUND;
          }
          VZSharedDirectory *shared = [[VZSharedDirectory alloc] initWithURL:url
                                                                    readOnly:read_only];
          d.share = [[VZSingleDirectoryShare alloc] initWithDirectory:shared];
          return 0;
        },
        errmsg);
  }
  *errmsg = strdup("the VZ backend needs macOS 13+");
  return HM_E_UNSUPPORTED;
}

static int shim_clear_share(void *handle, unsigned index, char **errmsg) {
  if (@available(macOS 13, *)) {
    HMVZShim *shim = (__bridge HMVZShim *)handle;
    return on_queue(
        shim,
        ^int(char **msg) {
          VZVirtioFileSystemDevice *d = find_spare(shim.vm, index);
          if (!d) {
            *msg = no_spare(index);
            return HM_E_NOT_FOUND;
          }
          d.share = placeholder_share();
          return 0;
        },
        errmsg);
  }
  *errmsg = strdup("the VZ backend needs macOS 13+");
  return HM_E_UNSUPPORTED;
}

static void shim_close(void *handle) {
  if (handle)
    (void)(__bridge_transfer HMVZShim *)handle;
}

const hm_vz_shim_ops hm_vz_shim_real_ops = {
    .reserve = reserve,
    .open = shim_open,
    .set_share = shim_set_share,
    .clear_share = shim_clear_share,
    .close = shim_close,
};
