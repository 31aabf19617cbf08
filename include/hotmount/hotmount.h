/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef HOTMOUNT_HOTMOUNT_H
#define HOTMOUNT_HOTMOUNT_H

/* Umbrella header: hot-mount host directories into running VMs. */
#include <hotmount/common.h>
#include <hotmount/version.h>
#include <hotmount/error.h>
#include <hotmount/log.h>
#include <hotmount/mount.h>
#include <hotmount/driver.h>
#include <hotmount/status.h>
#include <hotmount/qemu.h>
#include <hotmount/vz.h>
#include <hotmount/sshfs.h>
#include <hotmount/bind.h>
#include <hotmount/instance.h>
#include <hotmount/loop.h>
#include <hotmount/server.h>
#include <hotmount/client.h>

#endif
