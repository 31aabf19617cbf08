/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The shared virtiofs device (-o device=shared): one vhost-user-fs-pci
 * device per VM, tag "hm-hub", on a reserved root port, served by ONE
 * virtiofsd (-o announce_submounts) whose shared directory is INSTANCE/hub.
 * Each shared mount is a bind of its host directory at hub/hm-N made inside
 * that virtiofsd's mount namespace, so no slot, process or PCI enumeration
 * is spent per mount; the guest agent mounts the hub once (at its private
 * place) and bind-mounts hub/hm-N onto the guest path.
 *
 * How a bind reaches the running virtiofsd: C virtiofsd (QEMU 7.2) calls
 * unshare(CLONE_NEWNS|...) in its first process, then forks its sandbox
 * process, which pivots that one namespace into the shared directory; both
 * processes live in it, its root is the hub. A forked single-threaded child
 * of ours clones the host directory (open_tree OPEN_TREE_CLONE, recursive;
 * nosuid, nodev and read-only when asked are set on the detached tree with
 * mount_setattr, before anyone can see it), setns()es into virtiofsd's mount
 * namespace and move_mount()s the clone onto /hm-N there. Removal: setns,
 * umount2(/hm-N, MNT_DETACH). (Propagation from a namespace of ours would
 * not do: virtiofsd's first process does not stay in the namespace it was
 * started in.) Root only for now: rootless would setns into virtiofsd's
 * user namespace first and re-open the host directory there.
 *
 * The device and its virtiofsd stay while the VM lives (the first shared
 * add plugs it; later adds cost a bind and a guest bind). On disk: the
 * marker link INSTANCE/hm-N-hub-ro|rw -> HOST_PATH (made before the bind),
 * from which a daemon that lost state.json learns what an entry serves.
 */
#ifndef HM_QEMU_HUB_H
#define HM_QEMU_HUB_H

#include "ninep.h"
#include "virtiofsd.h"

#include <pthread.h>

#define HM_HUB_ID "hm-hub"
#define HM_HUB_TAG "hm-hub"
#define HM_HUB_DEV "hm-hub-dev"
#define HM_HUB_CHR "hm-hub-chr"
#define HM_HUB_DIR "hub"

typedef struct hm_hub {
  const hm_ninep_host *h; /* QMP and root ports of the QEMU backend */
  void *ud;
  int (*vfs_get)(void *ud, hm_virtiofsd_info *out, hm_error **err);
  /* The running virtiofsd with mount marker id that is ours, or -1. */
  pid_t (*vfs_find)(void *ud, const char *id);
  pthread_mutex_t lock; /* serializes starting the hub; guards pid */
  pid_t pid;            /* the hub virtiofsd (its first process), or -1 */
} hm_hub;

/* Non-zero when att is a shared-device mount. */
HM_PRIVATE int hm_hub_is(const hm_attachment *att);

/* The mount spec asks for the shared device. */
HM_PRIVATE int hm_hub_wanted(const hm_mount_spec *spec);

HM_PRIVATE int hm_hub_attach(hm_hub *hub, const hm_mount_spec *spec, hm_attachment *att,
                             hm_error **err);
HM_PRIVATE int hm_hub_detach(hm_hub *hub, hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_hub_check(hm_hub *hub, hm_attachment *att, char **reason, hm_error **err);
HM_PRIVATE int hm_hub_watch_fd(hm_hub *hub, hm_attachment *att);
/* Every entry found on disk (marker links, hub/hm-N directories), through
 * get (the scan's accumulator). */
HM_PRIVATE void hm_hub_scan(hm_hub *hub, const char *dir,
                            hm_attachment *(*get)(void *ud, const char *id), void *ud);
/* "sharedDevice" (absent|plugged|orphaned) and "sharedEntries" for status. */
HM_PRIVATE void hm_hub_describe(hm_hub *hub, const char *dir, hm_status *st);

/* qemu_driver.c: chardev-add arguments for a vhost-user client socket, and
 * device_add arguments for a vhost-user-fs-pci on a root port. */
HM_PRIVATE json_object *hm_qemu_socket_chardev_args(const char *id, const char *path);
HM_PRIVATE json_object *hm_qemu_vfs_device_args(const char *dev, const char *chr, const char *tag,
                                                const char *port);

#endif
