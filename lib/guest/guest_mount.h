/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pure helpers that turn an agent mount request into the arguments of
 * mount(2), and parse /proc/self/mountinfo. No system calls here, so the
 * host can validate a request exactly as the agent will, and tests need no
 * guest.
 */
#ifndef HM_GUEST_MOUNT_H
#define HM_GUEST_MOUNT_H

#include "core/agent_proto.h"

/* The mount(2) call for one request. */
typedef struct hm_guest_mount_call {
  char *source; /* virtiofs: the tag; 9p: the port name */
  char *fstype; /* "virtiofs" or "9p" */
  unsigned long flags;
  char *data;     /* fs data, NULL for none; 9p: the checked options without the transport
                     (hm_guest_9p_data adds it once the descriptor exists) */
  unsigned msize; /* 9p: the msize that data asks for */
} hm_guest_mount_call;

/* Longest virtio-serial port name a 9p mount may use. */
#define HM_GUEST_PORT_MAX 127

/* hm_guest_tag_validate: [A-Za-z0-9._-]{1,36}; HM_E_INVALID naming the tag. */
HM_PRIVATE int hm_guest_tag_validate(const char *tag, hm_error **err);

/* hm_guest_port_validate: [A-Za-z0-9._-]{1,127}; HM_E_INVALID naming the port. */
HM_PRIVATE int hm_guest_port_validate(const char *port, hm_error **err);

/*
 * hm_guest_9p_options: checks a 9p option string (NULL or "" for none) against
 * the allowlist: version=9p2000.L|9p2000.u|9p2000, msize=4096..16777216,
 * cache=none|loose|fscache|mmap, access=user|any|client, posixacl, noxattr,
 * locktimeout=1..3600, aname=/PATH (the server's export, e.g. diod's -e path;
 * no control characters), uname=NAME (the first attach's user name, 1..32 of
 * [A-Za-z0-9._-]), each at most once. Everything else is refused (HM_E_INVALID
 * naming the option): the transport (trans, rfdno, wfdno, port), client-side
 * identities (afid, dfltuid, dfltgid) and the generic flags.
 * *out = the options with version=9p2000.L and msize=262144 put in front when
 * absent; *msize (may be NULL) = the msize asked for.
 */
HM_PRIVATE int hm_guest_9p_options(char **out, unsigned *msize, const char *options,
                                   hm_error **err);

/*
 * hm_guest_9p_data: *out = "trans=fd,rfdno=FD,wfdno=FD," + c->data, the fs
 * data of a 9p call built by hm_guest_mount_build; with fd < 0,
 * "trans=virtio," + c->data (the source is a virtio-9p mount_tag). -1
 * (ENOMEM) on failure.
 */
HM_PRIVATE int hm_guest_9p_data(char **out, const hm_guest_mount_call *c, int fd);

/*
 * hm_guest_mount_build: the call for type (HM_TYPE_*) with tag, read-only
 * flag and fs options. virtiofs: source = tag, fstype "virtiofs", flags
 * MS_NOSUID|MS_NODEV (|MS_RDONLY). Options are a comma-separated list from a
 * per-transport allowlist (virtiofs: dax, dax=always|never|inode,
 * default_permissions, allow_other); generic ones such as "rw" or "suid"
 * are refused because they would undo the flags above. 9p: tag = the
 * virtio-serial port name (hm_guest_port_validate), the mount's source;
 * fstype "9p", the same flags, data from hm_guest_9p_options. HM_E_INVALID
 * for a bad tag, port or option. Clear out with hm_guest_mount_call_clear.
 */
HM_PRIVATE int hm_guest_mount_build(hm_guest_mount_call *out, int type, const char *tag,
                                    int readonly, const char *options, hm_error **err);
HM_PRIVATE void hm_guest_mount_call_clear(hm_guest_mount_call *c);

/* Filesystem types hotmount creates (and so may list and unmount): the share
 * types below (a bind mount of a share has its type) and fuse.sshfs. */
HM_PRIVATE int hm_guest_fstype_is_ours(const char *fstype);
/* Filesystem types a bind mount may take its source from: a share the host
 * gave the guest (virtiofs, 9p, and WSL's drvfs, which WSL2 shows as 9p). */
HM_PRIVATE int hm_guest_fstype_is_share(const char *fstype);

/*
 * hm_guest_mountinfo_parse: the entries of a /proc/PID/mountinfo text, octal
 * escapes decoded. ours_only: only fstypes hm_guest_fstype_is_ours accepts.
 * options = the per-mount options followed by the superblock options other
 * than "ro"/"rw" (those belong to the mount). HM_E_PROTOCOL on a malformed line.
 */
HM_PRIVATE int hm_guest_mountinfo_parse(hm_agent_mount_info **out, size_t *n, const char *text,
                                        int ours_only, hm_error **err);

#endif
