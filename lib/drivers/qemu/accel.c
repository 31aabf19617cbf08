/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Which accelerator QEMU should use on this host, chosen by proof.
 *
 * A writable /dev/kvm says nothing about whether KVM can run a guest: in
 * nested cloud VMs (Firecracker here) KVM accepts the VM, SeaBIOS and the
 * kernel's real-mode setup run, and then the kernel never prints, because
 * the CPU model asks for features KVM cannot give ("host doesn't support
 * requested feature: CPUID.01H:ECX.pni"). So KVM is used only when it booted
 * the caller's own kernel far enough to print its banner on the serial
 * console; anything else (no kernel to try, no /dev/kvm, a QEMU error, no
 * banner before the deadline) means TCG, decided in seconds.
 *
 * The probe QEMU is our own short-lived child, started by hm_spawn and
 * reaped through its pidfd only: an embedder's SIGCHLD handling (ignored,
 * or a GLib child watch) is not disturbed, and does not disturb us.
 */
#include "private.h"
#include "spawn.h"
#include "status_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define ACCEL_DEFAULT_TIMEOUT_MS 8000
#define ACCEL_MAX_TIMEOUT_MS 600000
/* What a Linux kernel prints first on its console ("Linux version 6.1...");
 * the decompressor's "Decompressing Linux..." comes earlier but only with
 * earlyprintk on some configs, so wait for the banner. */
#define ACCEL_BANNER "Linux version "
/* How much of QEMU's stderr we keep for the reason. */
#define ACCEL_ERR_KEEP 512

static int result(hm_status **out, const char *accel, const char *source, const char *reason) {
  hm_status *st = NULL;
  if (hm_status_new(&st) < 0 || hm_status_setf(st, "accel", "%s", accel) < 0 ||
      hm_status_setf(st, "source", "%s", source) < 0 ||
      hm_status_setf(st, "reason", "%s", reason) < 0) {
    hm_status_free(st);
    return HM_E_NOMEM;
  }
  *out = st;
  return 0;
}

/* 0 when /dev/kvm opens read-write and speaks the stable API; else -1 with
 * why (static text or strerror) in *why. */
static int kvm_usable(const char **why) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = strerror(errno);
    return -1;
  }
  int v = ioctl(fd, KVM_GET_API_VERSION, 0);
  close(fd);
  if (v != KVM_API_VERSION) {
    *why = "unexpected KVM API version";
    return -1;
  }
  return 0;
}

/* Appends what is printable of buf[0..n) to the kept stderr text, one line
 * at a time joined by "; ". */
static void keep_err(char *kept, size_t *used, const char *buf, size_t n) {
  for (size_t i = 0; i < n && *used + 3 < ACCEL_ERR_KEEP; i++) {
    unsigned char c = (unsigned char)buf[i];
    if (c == '\n') {
      if (*used && kept[*used - 1] != ' ') {
        kept[(*used)++] = ';';
        kept[(*used)++] = ' ';
      }
    } else if (c >= 0x20 && c < 0x7f) {
      kept[(*used)++] = (char)c;
    }
  }
  kept[*used] = '\0';
}

/* Keeps the last len(banner)-1 bytes of the serial stream so a banner split
 * across reads is still found. */
static int scan_serial(char *tail, size_t *tlen, const char *buf, size_t n) {
  const size_t keep = sizeof(ACCEL_BANNER) - 2;
  char win[sizeof(ACCEL_BANNER) - 2 + 4096];
  for (size_t off = 0; off < n;) {
    size_t chunk = n - off < 4096 ? n - off : 4096;
    memcpy(win, tail, *tlen);
    memcpy(win + *tlen, buf + off, chunk);
    size_t wlen = *tlen + chunk;
    if (memmem(win, wlen, ACCEL_BANNER, sizeof(ACCEL_BANNER) - 1))
      return 1;
    *tlen = wlen < keep ? wlen : keep;
    memcpy(tail, win + wlen - *tlen, *tlen);
    off += chunk;
  }
  return 0;
}

/* Boots kernel under `qemu -accel kvm` until its banner shows on the serial
 * console, or the deadline, or QEMU exits. 1: booted; 0: not (reason in
 * why, of size whylen); < 0: an error of ours (fork, pipes, memory). */
static int kvm_boots(const char *qemu, const char *kernel, int timeout_ms, char *why, size_t whylen,
                     hm_error **err) {
  int outp[2] = {-1, -1}, errp[2] = {-1, -1};
  if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    int e = errno;
    for (int i = 0; i < 2; i++) {
      if (outp[i] >= 0)
        close(outp[i]);
      if (errp[i] >= 0)
        close(errp[i]);
    }
    return HM_ERR(err, -e, "pipe: %s", strerror(e));
  }
  /* The guest's command line: the console on the first UART, which is our
   * pipe; panic=-1 and -no-reboot end QEMU once the kernel gives up on
   * finding a root, should the deadline not come first. */
  char *const argv[] = {(char *)qemu,
                        "-machine",
                        "q35,accel=kvm",
                        "-m",
                        "256",
                        "-nodefaults",
                        "-display",
                        "none",
                        "-monitor",
                        "none",
                        "-serial",
                        "stdio",
                        "-no-reboot",
                        "-kernel",
                        (char *)kernel,
                        "-append",
                        "console=ttyS0 earlyprintk=ttyS0 panic=-1",
                        NULL};
  /* stdin /dev/null, stdout the serial console, stderr for the reason;
   * nothing else of the embedder's (its sockets, its QMP connections) stays
   * open in QEMU. */
  hm_spawn_opts o = {.argv = (char **)argv,
                     .pass_fd = -1,
                     .as_fd = -1,
                     .stdio_fd = -1,
                     .stdout_fd = outp[1],
                     .stderr_fd = errp[1]};
  pid_t pid = -1;
  hm_error *serr = NULL;
  int sr = hm_spawn(&pid, &o, &serr);
  close(outp[1]);
  close(errp[1]);
  if (sr < 0) {
    close(outp[0]);
    close(errp[0]);
    if (sr != HM_E_HELPER) {
      if (err)
        *err = serr;
      else
        hm_error_free(serr);
      return sr;
    }
    snprintf(why, whylen, "%s", hm_error_message(serr));
    hm_error_free(serr);
    return 0;
  }

  char kept[ACCEL_ERR_KEEP] = "", tail[sizeof(ACCEL_BANNER)] = "";
  size_t kused = 0, tlen = 0;
  int booted = 0, open_fds = 2, exited = 0;
  int64_t deadline = hm_now_ms() + timeout_ms;
  struct pollfd p[2] = {{.fd = outp[0], .events = POLLIN}, {.fd = errp[0], .events = POLLIN}};
  while (!booted && open_fds > 0) {
    int64_t left = deadline - hm_now_ms();
    if (left <= 0)
      break;
    int n = poll(p, 2, (int)left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    for (int i = 0; i < 2; i++) {
      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      char buf[4096];
      ssize_t r = read(p[i].fd, buf, sizeof buf);
      if (r < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (r <= 0) {
        close(p[i].fd);
        p[i].fd = -1;
        open_fds--;
        continue;
      }
      if (i == 0)
        booted = scan_serial(tail, &tlen, buf, (size_t)r);
      else
        keep_err(kept, &kused, buf, (size_t)r);
    }
  }
  int status = -1;
  /* QEMU may have exited on its own (an error, or -no-reboot after a panic;
   * both pipes at EOF: it is exiting, give it a moment to finish); else
   * stop it now: the probe is done either way. */
  exited = hm_child_exited(pid, open_fds == 0 ? 1000 : 0, &status);
  if (!exited) {
    hm_child_signal(pid, SIGKILL);
    hm_child_exited(pid, -1, &status);
  }
  for (int i = 0; i < 2; i++)
    if (p[i].fd >= 0) {
      /* collect what QEMU said on stderr before it went, for the reason */
      if (i == 1 && !booted) {
        char buf[1024];
        ssize_t r;
        while ((r = read(p[i].fd, buf, sizeof buf)) > 0)
          keep_err(kept, &kused, buf, (size_t)r);
      }
      close(p[i].fd);
    }
  while (kused > 0 && (kept[kused - 1] == ' ' || kept[kused - 1] == ';'))
    kept[--kused] = '\0';

  if (booted)
    snprintf(why, whylen, "KVM booted %s to its banner", kernel);
  else if (exited)
    snprintf(why, whylen, "QEMU with KVM exited before the kernel printed%s%s", kused ? ": " : "",
             kept);
  else
    snprintf(why, whylen, "KVM did not boot %s to its banner within %d ms%s%s", kernel, timeout_ms,
             kused ? " (QEMU: " : "", kused ? kept : "");
  if (!booted && !exited && kused)
    strncat(why, ")", whylen - strlen(why) - 1);
  return booted;
}

int hm_qemu_accel_choose(hm_status **out, const char *qemu, const char *kernel, unsigned timeout_ms,
                         hm_error **err) {
  if (!out)
    return HM_ERR(err, HM_E_INVALID, "out is NULL");
  *out = NULL;
  if (timeout_ms > ACCEL_MAX_TIMEOUT_MS)
    return HM_ERR(err, HM_E_INVALID, "timeout %u ms is over the %d ms limit", timeout_ms,
                  ACCEL_MAX_TIMEOUT_MS);
  if (!qemu || !*qemu)
    qemu = "qemu-system-x86_64";

  const char *env = getenv("HOTMOUNT_ACCEL");
  if (env && *env && strcmp(env, "auto") != 0) {
    if (strcmp(env, "kvm") != 0 && strcmp(env, "tcg") != 0)
      return HM_ERR(err, HM_E_INVALID, "HOTMOUNT_ACCEL=\"%.64s\": use kvm, tcg or auto", env);
    int r = result(out, env, "HOTMOUNT_ACCEL", "set by HOTMOUNT_ACCEL");
    return r < 0 ? HM_ERR_NOMEM(err) : 0;
  }

  const char *why = NULL;
  char reason[ACCEL_ERR_KEEP + 256];
  int booted = 0;
  if (kvm_usable(&why) < 0) {
    snprintf(reason, sizeof reason, "/dev/kvm: %s", why);
  } else if (!kernel || !*kernel) {
    snprintf(reason, sizeof reason, "KVM not proven: no guest kernel to boot");
  } else if (access(kernel, R_OK) < 0) {
    return HM_ERR(err, HM_E_INVALID, "kernel %s: %s", kernel, strerror(errno));
  } else {
    booted = kvm_boots(qemu, kernel, timeout_ms ? (int)timeout_ms : ACCEL_DEFAULT_TIMEOUT_MS,
                       reason, sizeof reason, err);
    if (booted < 0)
      return booted;
  }
  int r = result(out, booted ? "kvm" : "tcg", "probe", reason);
  return r < 0 ? HM_ERR_NOMEM(err) : 0;
}
