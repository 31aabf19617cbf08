/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vz-embed: the libhotmount part of a macOS VM manager built on
 * Virtualization.framework (macOS 13+; see docs/vz.md).
 *
 *   vz-embed KERNEL INSTANCE_DIR HOST_DIR GUEST_DIR
 *
 * 1. At configuration time, reserve spare virtio-fs devices.
 * 2. Create the VM on its own serial queue and start it.
 * 3. At run time, from a thread that is not the VM's queue, make the VZ
 *    backend and hot-mount HOST_DIR at GUEST_DIR through an hm_instance.
 *
 * The instance reaches the guest agent at INSTANCE_DIR/agent.sock: a real
 * manager bridges that socket to the guest's agent port (a virtio console
 * port named "org.hotmount.agent.0"); that part is left out here. The binary
 * must be signed with the com.apple.security.virtualization entitlement.
 */
#import <Foundation/Foundation.h>
#import <Virtualization/Virtualization.h>
#include <dispatch/dispatch.h>

#include <hotmount/hotmount.h>
#include <stdio.h>
#include <stdlib.h>

#define SPARES 8

static void die(const char *what, hm_error *err) {
  fprintf(stderr, "vz-embed: %s: %s\n", what, hm_error_message(err));
  exit(EXIT_FAILURE);
}

/* Runs off the VM's queue: hm_instance_add waits for the guest. */
static void hot_mount(VZVirtualMachine *vm, dispatch_queue_t queue, const char *instance_dir,
                      const char *host_dir, const char *guest_dir) {
  hm_error *err = NULL;
  hm_fs_hotplugger *hp = NULL;
  if (hm_vz_hotplugger_new(&hp, (__bridge void *)vm, (__bridge void *)queue, SPARES, &err) < 0)
    die("backend", err);
  hm_instance *inst = NULL;
  if (hm_instance_new(&inst, instance_dir, hp, &err) < 0) /* takes hp */
    die("instance", err);
  hm_mount_spec *spec = NULL;
  hm_mount *m = NULL;
  if (hm_mount_spec_new(&spec, &err) < 0 || hm_mount_spec_set_host_path(spec, host_dir, &err) < 0 ||
      hm_mount_spec_set_guest_path(spec, guest_dir, &err) < 0 ||
      hm_instance_add(inst, &m, spec, &err) < 0) /* read-only unless set writable */
    die("add", err);
  fprintf(stderr, "vz-embed: %s is at %s in the guest (virtio-fs tag %s)\n", host_dir, guest_dir,
          hm_mount_get_tag(m));
  hm_mount_free(m);
  hm_mount_spec_free(spec);
  hm_instance_free(inst);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: vz-embed KERNEL INSTANCE_DIR HOST_DIR GUEST_DIR\n");
    return 2;
  }
  if (@available(macOS 13, *)) {
    NSString *kernel = [NSString stringWithUTF8String:argv[1]];
    if (!kernel)
      return 2;
    VZVirtualMachineConfiguration *config = [[VZVirtualMachineConfiguration alloc] init];
    config.CPUCount = 2;
    config.memorySize = 1ull << 30;
    VZLinuxBootLoader *boot =
        [[VZLinuxBootLoader alloc] initWithKernelURL:[NSURL fileURLWithPath:kernel]];
    boot.commandLine = @"console=hvc0";
    config.bootLoader = boot;
    /* ... the manager's own disks, network, console, agent port ... */

    hm_error *err = NULL;
    if (hm_vz_config_reserve((__bridge void *)config, SPARES, &err) < 0)
      die("reserve", err);
    NSError *error = nil;
    if (![config validateWithError:&error]) {
      fprintf(stderr, "vz-embed: configuration: %s\n", error.localizedDescription.UTF8String);
      return 1;
    }

    dispatch_queue_t queue = dispatch_queue_create("vz-embed.vm", DISPATCH_QUEUE_SERIAL);
    VZVirtualMachine *vm = [[VZVirtualMachine alloc] initWithConfiguration:config queue:queue];
    const char *instance_dir = argv[2], *host_dir = argv[3], *guest_dir = argv[4];
    dispatch_async(queue, ^{
      [vm startWithCompletionHandler:^(NSError *_Nullable startError) {
        if (startError) {
          fprintf(stderr, "vz-embed: start: %s\n", startError.localizedDescription.UTF8String);
          exit(EXIT_FAILURE);
        }
        /* Leave the VM's queue before calling into the library. */
        dispatch_async(dispatch_queue_create("vz-embed.mounts", DISPATCH_QUEUE_SERIAL), ^{
          hot_mount(vm, queue, instance_dir, host_dir, guest_dir);
        });
      }];
    });
    dispatch_main();
  }
  fprintf(stderr, "vz-embed: needs macOS 13 or later\n");
  return 1;
}
