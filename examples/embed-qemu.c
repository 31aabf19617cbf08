/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * embed-qemu: a minimal VM manager that embeds libhotmount, with no daemon.
 *
 * It starts QEMU with the library's readiness arguments, drives the QEMU
 * backend itself, and hot-mounts one host directory into the running guest
 * through the asynchronous API on a GLib main loop. Public API only.
 *
 *   embed-qemu [--memory SIZE] [--append CMDLINE] [--qemu BINARY] [--writable]
 *              INSTANCE_DIR KERNEL INITRD HOST_DIR:GUEST_DIR [-- QEMU_ARGS...]
 *
 * The guest must run hotmount-agent (see hotmount-agent(8)). QEMU_ARGS are
 * appended as they are, e.g. `-- -serial file:console.log`. On stdin:
 * "remove" unmounts the directory (QEMU keeps running); "quit", end of input,
 * SIGINT or SIGTERM remove it if it is still there, then stop QEMU.
 *
 * Build: cc embed-qemu.c $(pkg-config --cflags --libs hotmount glib-2.0)
 */
#include <hotmount/hotmount.h>

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct vmm {
  GMainLoop *loop;
  hm_instance *inst;
  GPid qemu;
  guint qemu_watch; /* GLib reaps QEMU if it dies under us */
  const char *guest_dir;
  int mounted;  /* the add completed and no remove has yet */
  int busy;     /* an add or remove is in flight */
  int quitting; /* stop QEMU once the mount is gone */
  int status;   /* exit status of this program */
} vmm;

/* ---- callbacks from the library; all run on the main loop's thread ---- */

static const char *state_name(int state) {
  return state == HM_STATE_REMOVED ? "(none)" : hm_mount_state_name(state);
}

/* Every state change of every mount, including the health monitor's
 * (a dead virtiofsd shows up here as "mounted -> broken"). */
static void on_event(hm_instance *inst, const hm_mount *m, int old_state, int new_state,
                     void *user_data) {
  if (!m) {
    printf("event: some events were lost; the list is authoritative\n");
    return;
  }
  printf("event: %s %s: %s -> %s%s%s\n", hm_mount_get_id(m), hm_mount_get_guest_path(m),
         state_name(old_state), state_name(new_state), hm_mount_get_reason(m) ? ": " : "",
         hm_mount_get_reason(m) ? hm_mount_get_reason(m) : "");
}

static void finish(vmm *v);

static void on_added(hm_instance *inst, int result, const hm_mount *m, const hm_error *err,
                     void *user_data) {
  vmm *v = user_data;
  v->busy = 0;
  if (result < 0) {
    fprintf(stderr, "embed-qemu: %s\n", hm_error_message(err));
    v->status = 1;
    v->quitting = 1;
  } else {
    v->mounted = 1;
    printf("mounted: %s at %s (%s, tag %s)\n", hm_mount_get_host_path(m),
           hm_mount_get_guest_path(m), hm_mount_get_id(m), hm_mount_get_tag(m));
    printf("ready: type \"remove\" to unmount, \"quit\" to stop the VM\n");
  }
  if (v->quitting)
    finish(v);
}

static void on_removed(hm_instance *inst, int result, const char *guest_path, const hm_error *err,
                       void *user_data) {
  vmm *v = user_data;
  v->busy = 0;
  if (result < 0) {
    fprintf(stderr, "embed-qemu: %s\n", hm_error_message(err));
    v->status = 1;
    if (v->quitting) { /* no retry loop on the way out: it stays listed */
      g_main_loop_quit(v->loop);
      return;
    }
  } else {
    v->mounted = 0;
    printf("removed: %s\n", guest_path);
  }
  if (v->quitting)
    finish(v);
}

/* ---- commands ---- */

static void start_remove(vmm *v) {
  hm_error *err = NULL;
  if (v->busy || !v->mounted)
    return;
  if (hm_instance_remove_async(v->inst, v->guest_dir, 0, on_removed, v, NULL, &err) < 0) {
    fprintf(stderr, "embed-qemu: %s\n", hm_error_message(err));
    hm_error_free(err);
    v->status = 1;
    return;
  }
  v->busy = 1;
}

/* Leaves the loop once nothing is mounted or in flight. A mount still
 * there is removed first: mounts outlive the library's objects, and a
 * guest whose device vanishes under a mounted file system is not happy. */
static void finish(vmm *v) {
  v->quitting = 1;
  if (v->busy)
    return; /* its completion calls us again */
  if (v->mounted) {
    start_remove(v);
    if (v->busy)
      return;
  }
  g_main_loop_quit(v->loop);
}

static gboolean on_stdin(gint fd, GIOCondition cond, gpointer user_data) {
  vmm *v = user_data;
  char line[256];
  ssize_t n = read(fd, line, sizeof(line) - 1);
  if (n <= 0) {
    finish(v); /* end of input */
    return G_SOURCE_REMOVE;
  }
  line[n] = 0;
  if (strncmp(line, "remove", 6) == 0)
    start_remove(v);
  else if (strncmp(line, "quit", 4) == 0)
    finish(v);
  else
    printf("commands: remove, quit\n");
  return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer user_data) {
  finish(user_data);
  return G_SOURCE_CONTINUE;
}

static void on_qemu_exit(GPid pid, gint wstatus, gpointer user_data) {
  vmm *v = user_data;
  fprintf(stderr, "embed-qemu: QEMU exited unexpectedly (status %d)\n", wstatus);
  g_spawn_close_pid(pid);
  v->qemu = 0;
  v->qemu_watch = 0;
  v->status = 1;
  g_main_loop_quit(v->loop);
}

static void on_log(int level, const char *message, void *user_data) {
  fprintf(stderr, "libhotmount: %s\n", message);
}

/* ---- QEMU ---- */

/* QEMU's command line: the machine, the kernel, the library's readiness
 * arguments (shared memory, reserved PCIe root ports, agent channel, QMP),
 * then the caller's own. */
static char **qemu_argv(const char *qemu, const char *accel, const char *memory, const char *kernel,
                        const char *initrd, const char *append, char **hm_args, char **extra,
                        int n_extra) {
  size_t n_hm = 0;
  while (hm_args[n_hm])
    n_hm++;
  char **argv = calloc(20 + n_hm + (size_t)n_extra, sizeof(*argv));
  if (!argv)
    return NULL;
  size_t i = 0;
  argv[i++] = (char *)qemu;
  argv[i++] = "-machine";
  argv[i++] = "q35";
  argv[i++] = "-accel";
  argv[i++] = (char *)accel;
  argv[i++] = "-m";
  argv[i++] = (char *)memory; /* must equal hm_qemu_config_set_memory's */
  argv[i++] = "-nodefaults";
  argv[i++] = "-display";
  argv[i++] = "none";
  argv[i++] = "-kernel";
  argv[i++] = (char *)kernel;
  argv[i++] = "-initrd";
  argv[i++] = (char *)initrd;
  argv[i++] = "-append";
  argv[i++] = (char *)append;
  for (size_t k = 0; k < n_hm; k++)
    argv[i++] = hm_args[k];
  for (int k = 0; k < n_extra; k++)
    argv[i++] = extra[k];
  return argv;
}

static int start_qemu(GPid *pid, char **argv) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  /* QEMU must not read our commands. */
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  /* Its own process group: a Ctrl-C meant for us must not kill the VM
   * before we have taken the mount out. */
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t p;
  int e = posix_spawnp(&p, argv[0], &fa, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) {
    fprintf(stderr, "embed-qemu: cannot run %s: %s\n", argv[0], strerror(e));
    return -1;
  }
  *pid = p;
  return 0;
}

static void stop_qemu(GPid pid) {
  /* QEMU shuts down cleanly on SIGTERM; give it 10 s. */
  kill(pid, SIGTERM);
  for (int i = 0; i < 100; i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      printf("qemu: exited (status %d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      return;
    }
    g_usleep(100 * 1000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  printf("qemu: killed\n");
}

/* QEMU creates qmp.sock a moment after it starts: retry the connection. */
static int connect_backend(hm_fs_hotplugger **hp, const hm_qemu_config *cfg, GPid qemu,
                           hm_error **err) {
  for (int i = 0; i < 300; i++) {
    hm_error_free(*err);
    *err = NULL;
    if (hm_qemu_hotplugger_new(hp, cfg, err) == 0)
      return 0;
    if (waitpid(qemu, NULL, WNOHANG) == qemu)
      return -1;
    g_usleep(100 * 1000);
  }
  return -1;
}

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--memory SIZE] [--append CMDLINE] [--qemu BINARY] [--writable]\n"
          "          INSTANCE_DIR KERNEL INITRD HOST_DIR:GUEST_DIR [-- QEMU_ARGS...]\n",
          argv0);
  return 2;
}

int main(int argc, char **argv) {
  const char *memory = "1G", *append = "console=ttyS0", *qemu = "qemu-system-x86_64";
  int writable = 0, i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2]; i++) {
    if (!strcmp(argv[i], "--writable"))
      writable = 1;
    else if (i + 1 < argc && !strcmp(argv[i], "--memory"))
      memory = argv[++i];
    else if (i + 1 < argc && !strcmp(argv[i], "--append"))
      append = argv[++i];
    else if (i + 1 < argc && !strcmp(argv[i], "--qemu"))
      qemu = argv[++i];
    else
      return usage(argv[0]);
  }
  if (argc - i < 4)
    return usage(argv[0]);
  const char *dir = argv[i], *kernel = argv[i + 1], *initrd = argv[i + 2];
  char *host_dir = strdup(argv[i + 3]);
  char *colon = host_dir ? strrchr(host_dir, ':') : NULL;
  if (!colon)
    return usage(argv[0]);
  *colon = 0;
  i += 4;
  char **extra = argv + i;
  int n_extra = 0;
  if (i < argc) {
    if (strcmp(argv[i], "--") != 0)
      return usage(argv[0]);
    extra = argv + i + 1;
    n_extra = argc - i - 1;
  }

  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  hm_set_log_callback(on_log, getenv("EMBED_QEMU_DEBUG") ? HM_LOG_DEBUG : HM_LOG_WARNING, NULL,
                      NULL);

  vmm v = {.guest_dir = colon + 1};
  hm_error *err = NULL;
  hm_qemu_config *cfg = NULL;
  hm_fs_hotplugger *hp = NULL;
  hm_mount_spec *spec = NULL;
  char **hm_args = NULL, **qargv = NULL;
  hm_status *accel = NULL;
  int rc = 1;

  /* 1. The instance directory holds qmp.sock, agent.sock and state.json. */
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
    fprintf(stderr, "embed-qemu: cannot create %s: %s\n", dir, strerror(errno));
    goto out;
  }
  /* 2. QEMU with the library's arguments. */
  if (hm_qemu_config_new(&cfg, dir, &err) < 0 || hm_qemu_config_set_memory(cfg, memory, &err) < 0 ||
      hm_qemu_config_build_args(&hm_args, cfg, &err) < 0)
    goto out;
  /* KVM only where it was seen to boot this kernel: a /dev/kvm that opens
   * may still not run a guest (nested VMs), and a guest that never boots is
   * worse than a slow one. */
  if (hm_qemu_accel_choose(&accel, qemu, kernel, 0, &err) < 0)
    goto out;
  fprintf(stderr, "embed-qemu: accelerator %s (%s: %s)\n", hm_status_get(accel, "accel"),
          hm_status_get(accel, "source"), hm_status_get(accel, "reason"));
  if (!(qargv = qemu_argv(qemu, hm_status_get(accel, "accel"), memory, kernel, initrd, append,
                          hm_args, extra, n_extra)) ||
      start_qemu(&v.qemu, qargv) < 0)
    goto out;
  printf("qemu: started, pid %d\n", (int)v.qemu);

  /* 3. The backend (QMP) and the instance (registry + guest agent). */
  if (connect_backend(&hp, cfg, v.qemu, &err) < 0)
    goto out;
  if (hm_instance_new(&v.inst, dir, hp, &err) < 0) /* takes hp */
    goto out;
  /* Settle what an earlier run of ours may have left (a crash mid-add). */
  if (hm_instance_reconcile(v.inst, &err) < 0)
    goto out;

  /* 4. Callbacks run on this thread, from the default main context. */
  v.loop = g_main_loop_new(NULL, FALSE);
  if (hm_instance_set_event_callback(v.inst, on_event, &v, NULL, &err) < 0 ||
      hm_instance_attach_gmain(v.inst, NULL, &err) < 0)
    goto out;
  g_unix_signal_add(SIGTERM, on_signal, &v);
  g_unix_signal_add(SIGINT, on_signal, &v);
  v.qemu_watch = g_child_watch_add(v.qemu, on_qemu_exit, &v);

  /* 5. Wait for the guest's agent (a synchronous call: the loop is not
   * running yet, and there is nothing else to do while the guest boots). */
  printf("agent: waiting for the guest\n");
  if (hm_instance_connect_agent(v.inst, 300000, &err) < 0)
    goto out;
  printf("agent: connected\n");

  /* 6. Hot-mount, asynchronously: on_added reports through the loop. */
  if (hm_mount_spec_new(&spec, &err) < 0 || hm_mount_spec_set_host_path(spec, host_dir, &err) < 0 ||
      hm_mount_spec_set_guest_path(spec, v.guest_dir, &err) < 0 ||
      hm_mount_spec_set_writable(spec, writable, &err) < 0 ||
      hm_instance_add_async(v.inst, spec, on_added, &v, NULL, &err) < 0)
    goto out;
  v.busy = 1;
  g_unix_fd_add(0, G_IO_IN | G_IO_HUP, on_stdin, &v);

  g_main_loop_run(v.loop);
  rc = v.status;

out:
  if (err) {
    fprintf(stderr, "embed-qemu: %s\n", hm_error_message(err));
    rc = 1;
  }
  hm_error_free(err);
  hm_mount_spec_free(spec);
  /* 7. The instance first (it waits for async work, closes QMP), then QEMU. */
  hm_instance_free(v.inst);
  if (v.qemu_watch)
    g_source_remove(v.qemu_watch); /* from here on we reap QEMU ourselves */
  if (v.qemu > 0 && waitpid(v.qemu, NULL, WNOHANG) == 0)
    stop_qemu(v.qemu);
  if (v.loop)
    g_main_loop_unref(v.loop);
  free(qargv);
  hm_status_free(accel);
  hm_strv_free(hm_args);
  hm_qemu_config_free(cfg);
  free(host_dir);
  return rc;
}
