/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Event-driven device waiting. A hot-plugged virtiofs device (or the agent's
 * own virtio port) shows up as kernel uevents: "add" when the device is
 * created, "bind" once its driver has probed it (which is when a virtiofs tag
 * becomes mountable). The guest has no udev, so we listen to the kernel's
 * uevent multicast group directly and re-check on every event.
 */
#include "agent.h"

#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Upper bound on one wait even when no event comes: uevents can be lost
 * (ENOBUFS when the socket buffer overflows, or a network namespace that
 * receives none, as in containers). This is a safety net, not the mechanism:
 * a device that appears is normally seen within one event.
 */
#define SAFETY_MS 2000

int agent_devwait_open(void) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (fd < 0) {
    hm_warn("no uevent socket (%s); waiting for devices by re-checking every %d ms",
            strerror(errno), SAFETY_MS);
    return -1;
  }
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1 /* kernel events */};
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    hm_warn("cannot subscribe to uevents (%s); waiting for devices by re-checking every %d ms",
            strerror(errno), SAFETY_MS);
    close(fd);
    return -1;
  }
  /* Bursts (a PCI hot-plug emits a dozen events) must not overflow. */
  int size = 1 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
  return fd;
}

void agent_devwait_close(int fd) {
  if (fd >= 0)
    close(fd);
}

int agent_devwait_wait(int fd, int64_t deadline) {
  int64_t left = deadline < 0 ? SAFETY_MS : deadline - hm_now_ms();
  if (left <= 0)
    return 0;
  if (left > SAFETY_MS)
    left = SAFETY_MS;
  struct pollfd pfd = {fd, POLLIN, 0};
  int n = poll(fd >= 0 ? &pfd : NULL, fd >= 0 ? 1 : 0, (int)left);
  if (n <= 0)
    return deadline < 0 || hm_now_ms() < deadline; /* safety re-check */
  /* Drain everything queued: one re-check covers the whole burst. */
  char buf[8192];
  for (;;) {
    ssize_t r = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ENOBUFS) {
        hm_debug("uevents lost (ENOBUFS); re-checking");
        continue;
      }
      break;
    }
    buf[r] = '\0';
    /* First string: "ACTION@DEVPATH". */
    hm_debug("uevent %s", buf);
  }
  return 1;
}
