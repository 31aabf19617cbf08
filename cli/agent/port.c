/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The two transports: the virtio-serial port, and a unix socket for tests. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

/* While the host side is closed, how long to wait for SIGIO before looking
 * again anyway (in case the signal was missed, e.g. a driver without fasync). */
#define HOST_RECHECK_MS 5000

static int read_small(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n < 0)
    return -1;
  buf[n] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  return 0;
}

/*
 * No udev in the guest, so no /dev/virtio-ports/NAME symlink: find the port
 * whose sysfs "name" matches, and open /dev/vportNpM (devtmpfs). If the node
 * is missing (no devtmpfs), make it from the sysfs "dev" numbers.
 */
int agent_port_find(const char *name, char *dev, size_t size) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d)
    return -1;
  int found = -1;
  for (struct dirent *de; found < 0 && (de = readdir(d));) {
    if (de->d_name[0] == '.')
      continue;
    char path[PATH_MAX], value[256];
    snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
    if (read_small(path, value, sizeof(value)) < 0 || strcmp(value, name) != 0)
      continue;
    snprintf(dev, size, "/dev/%s", de->d_name);
    found = 0;
    struct stat st;
    if (stat(dev, &st) < 0 && errno == ENOENT) {
      unsigned maj, min;
      snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/dev", de->d_name);
      if (read_small(path, value, sizeof(value)) == 0 && sscanf(value, "%u:%u", &maj, &min) == 2 &&
          mknod(dev, S_IFCHR | 0600, makedev(maj, min)) == 0)
        hm_info("created %s (no devtmpfs node)", dev);
    }
  }
  closedir(d);
  return found;
}

int agent_port_has_indirect(const char *dev) {
  const char *base = strrchr(dev, '/');
  char path[PATH_MAX], value[256];
  snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/device/features", base ? base + 1 : dev);
  /* One '0'/'1' per feature bit; VIRTIO_RING_F_INDIRECT_DESC is bit 28. */
  if (read_small(path, value, sizeof(value)) < 0 || strlen(value) <= 28)
    return 0;
  return value[28] == '1';
}

static int open_port(const char *name) {
  char dev[PATH_MAX];
  int logged = 0;
  int devfd = agent_devwait_open();
  /* The port appears when virtio_console probes; wait for it event-driven. */
  while (agent_port_find(name, dev, sizeof(dev)) < 0) {
    if (!logged++)
      hm_info("waiting for virtio-serial port %s to appear", name);
    agent_devwait_wait(devfd, -1);
  }
  agent_devwait_close(devfd);
  int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    hm_log(HM_LOG_ERROR, "cannot open %s (port %s): %s%s", dev, name, strerror(errno),
           errno == EBUSY ? " (another process has it open)" : "");
    return -1;
  }
  /* SIGIO tells us when the host side opens or closes (and when data comes);
   * it arrives on sigfd because SIGIO is blocked in every thread. */
  if (fcntl(fd, F_SETOWN, getpid()) < 0 ||
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) < 0)
    hm_warn("cannot enable SIGIO on %s (%s); re-checking the host every %d ms", dev,
            strerror(errno), HOST_RECHECK_MS);
  hm_info("opened %s (port %s)", dev, name);
  return fd;
}

static void drain_signals(int sigfd) {
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
    ;
}

/* 1 when the host side of the port is open, judged from poll without waiting. */
static int host_connected(int fd) {
  struct pollfd pfd = {fd, POLLIN, 0};
  if (poll(&pfd, 1, 0) < 0)
    return 0;
  return !(pfd.revents & POLLHUP);
}

/*
 * 1 when the port behind fd was unplugged. poll says only POLLHUP then, as it
 * does for a closed host side, but virtio_console fails reads on an unplugged
 * port with ENODEV before looking at data; a zero-length read consumes
 * nothing when the port is still there.
 */
static int port_gone(int fd) {
  char c;
  return read(fd, &c, 0) < 0 && errno == ENODEV;
}

int agent_run_port(const char *name) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  int sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigfd < 0) {
    hm_log(HM_LOG_ERROR, "signalfd: %s", strerror(errno));
    return 1;
  }
  agent_reader reader = {0};
  for (;;) {
    int fd = open_port(name);
    if (fd < 0)
      return 1;
    agent_conn *conn = agent_conn_new(fd, 1);
    if (!conn) {
      close(fd);
      return 1;
    }
    int up = host_connected(fd);
    hm_info("host side %s", up ? "connected" : "not connected yet; waiting");
    int gone = 0;
    while (!gone) {
      if (!up) {
        /* Without this, an agent whose port was unplugged would wait on the
         * dead one forever and never open the port plugged in again. */
        if (port_gone(fd)) {
          hm_info("port %s was unplugged; waiting for it to come back", name);
          gone = 1;
          break;
        }
        /*
         * With the host side closed, the port polls readable+HUP forever and
         * read() returns 0: polling it would spin. Sleep on SIGIO instead.
         */
        struct pollfd pfd = {sigfd, POLLIN, 0};
        poll(&pfd, 1, HOST_RECHECK_MS);
        drain_signals(sigfd);
        if (host_connected(fd)) {
          up = 1;
          hm_info("host side connected");
        }
        if (!up)
          continue;
      }
      struct pollfd pfd[2] = {{fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
      if (poll(pfd, 2, -1) < 0) {
        if (errno == EINTR)
          continue;
        hm_log(HM_LOG_ERROR, "poll: %s", strerror(errno));
        gone = 1;
        break;
      }
      if (pfd[1].revents)
        drain_signals(sigfd);
      if (pfd[0].revents & (POLLERR | POLLNVAL)) {
        hm_warn("port %s reported an error; reopening", name);
        gone = 1;
        break;
      }
      if (pfd[0].revents & POLLIN) {
        char buf[65536];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
          agent_reader_feed(&reader, conn, buf, (size_t)n);
          continue;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
          continue;
        if (n < 0) {
          hm_warn("read on port %s: %s; reopening", name, strerror(errno));
          gone = 1;
          break;
        }
        /* n == 0: the host side closed. */
      } else if (!(pfd[0].revents & POLLHUP)) {
        continue;
      }
      up = 0;
      /* A line cut off by a disconnect must not be glued to the next host's. */
      agent_reader_reset(&reader);
      hm_info("host side disconnected; waiting for it to come back");
    }
    agent_reader_reset(&reader);
    agent_conn_set_dead(conn);
    agent_conn_unref(conn);
  }
}

int agent_run_socket(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path)) {
    hm_log(HM_LOG_ERROR, "socket path %s is too long", path);
    return 1;
  }
  strcpy(sa.sun_path, path);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(path);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
      listen(lfd, 4) < 0) {
    hm_log(HM_LOG_ERROR, "cannot listen on %s: %s", path, strerror(errno));
    return 1;
  }
  hm_info("listening on %s (test mode)", path);
  agent_reader reader = {0};
  for (;;) {
    /* One peer at a time, like the port: others wait in the backlog. */
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      hm_log(HM_LOG_ERROR, "accept: %s", strerror(errno));
      return 1;
    }
    agent_conn *conn = agent_conn_new(fd, 1);
    if (!conn) {
      close(fd);
      continue;
    }
    hm_info("host connected");
    for (;;) {
      struct pollfd pfd = {fd, POLLIN, 0};
      if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
        break;
      char buf[65536];
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n > 0) {
        agent_reader_feed(&reader, conn, buf, (size_t)n);
        continue;
      }
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      break;
    }
    hm_info("host disconnected");
    agent_reader_reset(&reader);
    agent_conn_set_dead(conn);
    agent_conn_unref(conn);
  }
}
