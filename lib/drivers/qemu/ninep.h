/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * 9p hot-mount on stock QEMU (no fsdev can be created at run time): one
 * virtserialport per mount on the hm-serial controller, its chardev fed by
 * one end of a socketpair (QMP getfd + chardev-add with an fd socket), the
 * other end served by diod (9P2000.L, -r FD -w FD). The guest agent opens the
 * port and relays between it and a trans=fd 9p mount. No PCI slot is used.
 *
 * Names follow from the mount id ("hm-7"): device hm-7-dev, chardev hm-7-chr,
 * fd hm-7-fd, port org.hotmount.9p.hm-7, marker link INSTANCE/hm-7-9p. So
 * detach works from the id alone and is idempotent.
 */
#ifndef HM_NINEP_H
#define HM_NINEP_H

#include "driver_internal.h"
#include "private.h"
#include "qmp.h"

#include <pthread.h>
#include <sys/types.h>

#define HM_NINEP_PORT_PREFIX "org.hotmount.9p."
/* diod 1.0.24 answers Tversion with at most this msize. */
#define HM_NINEP_MAX_MSIZE 65536

/* Reserved 9p slots in flight in this process (between the pick and the
 * device_add that makes the fsdev visibly used), as for root ports. */
typedef struct hm_ninep_slots {
  pthread_mutex_t lock;
  unsigned char reserved[2][64]; /* [0]: read-only fsdevs, [1]: writable */
} hm_ninep_slots;

/* What the 9p code needs of the QEMU backend that owns it. */
typedef struct hm_ninep_host {
  void *ud;
  const char *dir; /* the instance directory */
  /* A connected QMP client, held (read lock) until qmp_put. */
  int (*qmp_get)(void *ud, hm_qmp **out, hm_error **err);
  void (*qmp_put)(void *ud);
  /* Root ports (qemu_driver.c), for reserved-slot mounts: reserve one (its
   * index, or a negative code), release the reservation once the device is
   * plugged or the plug failed, and note one just emptied (cool-down). */
  int (*port_reserve)(void *ud, hm_error **err);
  void (*port_release)(void *ud, int port);
  void (*port_freed)(void *ud, int port);
  hm_ninep_slots *slots;
} hm_ninep_host;

/* A QMP command on the backend's connection (fd: passed with it, or -1). */
HM_PRIVATE int hm_ninep_exec(const hm_ninep_host *h, const char *cmd, json_object *args, int fd,
                             json_object **ret, hm_error **err);
/* device_del of dev and the wait for DEVICE_DELETED; gone already is done. */
HM_PRIVATE int hm_ninep_unplug(const hm_ninep_host *h, const char *dev, hm_error **err);

/* The diod to run: $HOTMOUNT_DIOD, else diod in PATH or /usr/sbin. */
HM_PRIVATE int hm_ninep_diod_path(char **out, hm_error **err);

/* "version=9p2000.L,msize=N,cache=C,aname=EXPORT" from spec's options. */
HM_PRIVATE int hm_ninep_guest_options(char **out, const hm_mount_spec *spec, const char *aname,
                                      hm_error **err);

/* diod's argv serving export on fd (read-only with -o ro). */
HM_PRIVATE int hm_ninep_diod_argv(char ***out, const char *diod, const char *export, int readonly,
                                  int fd, hm_error **err);

HM_PRIVATE int hm_ninep_attach(const hm_ninep_host *h, const hm_mount_spec *spec,
                               hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_ninep_detach(const hm_ninep_host *h, hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_ninep_check(const hm_ninep_host *h, hm_attachment *att, char **reason,
                              hm_error **err);
HM_PRIVATE int hm_ninep_watch_fd(const hm_ninep_host *h, hm_attachment *att);

/* 1 when att is a 9p attachment (by its data, its tag, its diod or the type
 * of its device in QEMU), else 0. */
HM_PRIVATE int hm_ninep_is(const hm_ninep_host *h, hm_attachment *att);

/* Ports left on the hm-serial controller. */
HM_PRIVATE int hm_ninep_free_ports(const hm_ninep_host *h, hm_error **err);

/* For scan: calls get(ud, id) for each diod of this instance (found by its
 * markers) and fills the attachment it returns (may be NULL) with what the
 * markers say: transport, tag, pid, hostPath, writable. */
HM_PRIVATE void hm_ninep_scan(const hm_ninep_host *h,
                              hm_attachment *(*get)(void *ud, const char *id), void *ud);

/* Marks att as 9p (transport, tag) for a device found in QEMU: a
 * virtserialport (hm_ninep_mark; leaves a slot mount as it is) or a
 * virtio-9p-pci (hm_ninep_mark_slot). */
HM_PRIVATE int hm_ninep_mark(hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_ninep_mark_slot(hm_attachment *att, hm_error **err);

/*
 * Reserved 9p slots (ninep_slot.c): the device is a virtio-9p-pci on a root
 * port, using a boot-time fsdev whose path link is pointed at the share only
 * while the device is realized. Names: device hm-N-dev, tag hm-N, marker
 * link INSTANCE/hm-N-9p as for the serial path; data via=pci, fsdev, port.
 */

/* What the VM reserved: counts of read-only and writable fsdevs (0 when it
 * was booted without them) and their security model. */
typedef struct hm_ninep_slot_info {
  unsigned ro, rw;
  char model[32];
  int qemu_root; /* QEMU runs as root */
} hm_ninep_slot_info;

HM_PRIVATE int hm_ninep_slot_info_get(const hm_ninep_host *h, hm_ninep_slot_info *out,
                                      hm_error **err);
/* Free fsdevs of a kind (writable 0/1), or a negative code. */
HM_PRIVATE int hm_ninep_slot_free(const hm_ninep_host *h, int writable, hm_error **err);
/*
 * Which path a new 9p mount takes: 1 reserved slot, 0 virtio-serial, or a
 * negative code (via= asks for what cannot be had). *why: a static phrase
 * saying why the serial path was chosen, or NULL.
 */
HM_PRIVATE int hm_ninep_choose_slot(const hm_ninep_host *h, const hm_mount_spec *spec,
                                    const char **why, hm_error **err);
HM_PRIVATE int hm_ninep_slot_attach(const hm_ninep_host *h, const hm_mount_spec *spec,
                                    hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_ninep_slot_detach(const hm_ninep_host *h, hm_attachment *att, hm_error **err);
HM_PRIVATE int hm_ninep_slot_check(const hm_ninep_host *h, hm_attachment *att, char **reason,
                                   hm_error **err);
/* 1 when mount id has a virtio-9p-pci device in QEMU, 0 no, negative: error. */
HM_PRIVATE int hm_ninep_slot_has_device(const hm_ninep_host *h, const char *id, hm_error **err);
/* 1 when mount id's slot device uses a writable fsdev, 0 read-only, -1 not
 * known (no such device). */
HM_PRIVATE int hm_ninep_slot_writable(const hm_ninep_host *h, const char *id);
/* Points every reserved fsdev link no device uses (and no attach in flight
 * holds) back at the empty placeholder. */
HM_PRIVATE void hm_ninep_slot_sweep(const hm_ninep_host *h);

/* Non-zero when pid is alive and is a diod. */
HM_PRIVATE int hm_ninep_diod_alive(pid_t pid);

#endif
