/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotmount doctor: is this running VM hot-mount ready, and if not, exactly
 * what to add to its QEMU command line. The facts come from the daemon when
 * it runs; otherwise from QEMU directly (hm_qemu_probe), never both: QMP
 * serves one client at a time.
 */
#include "cli.h"
#include "safe_print.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The guest agent's virtio-serial port (qemu-args names it so). */
#define AGENT_PORT "org.hotmount.agent.0"

enum { CHECK_OK, CHECK_WARN, CHECK_FAIL, CHECK_SKIP };
static const char *const status_names[] = {"ok", "warn", "fail", "skip"};

#define MAX_CHECKS 20
#define MAX_FIX 8

typedef struct check {
  const char *name;  /* stable, for --json */
  const char *title; /* for people */
  int status;
  char *detail;
  char *fix[MAX_FIX]; /* lines to add or commands to run */
  size_t n_fix;
} check;

typedef struct doctor {
  check checks[MAX_CHECKS];
  size_t n;
  char **args; /* what qemu-args would print, for the fixes */
  const char *instance;
} doctor;

static check *add_check(doctor *d, const char *name, const char *title, int status, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));
static check *add_check(doctor *d, const char *name, const char *title, int status, const char *fmt,
                        ...) {
  check *c = &d->checks[d->n++];
  c->name = name;
  c->title = title;
  c->status = status;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&c->detail, fmt, ap) < 0)
    c->detail = NULL;
  va_end(ap);
  return c;
}

static void add_fix(check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_fix(check *c, const char *fmt, ...) {
  if (c->n_fix >= MAX_FIX)
    return;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&c->fix[c->n_fix], fmt, ap) >= 0)
    c->n_fix++;
  va_end(ap);
}

/* The qemu-args pairs ("-device VALUE") whose value contains one of the
 * needles, as fix lines: the exact text qemu-args prints, so the two can
 * never disagree. At most `limit` pairs. */
static size_t fix_from_args(check *c, char **args, const char *needle, size_t limit) {
  size_t found = 0;
  for (size_t i = 0; args && args[i] && args[i + 1]; i += 2) {
    if (!strstr(args[i + 1], needle))
      continue;
    if (found++ < limit)
      add_fix(c, "%s %s", args[i], args[i + 1]);
  }
  return found;
}

static const char *get(const hm_status *st, const char *key) {
  const char *v = hm_status_get(st, key);
  return v ? v : "";
}

static int is(const hm_status *st, const char *key, const char *value) {
  return strcmp(get(st, key), value) == 0;
}

static void run_checks(doctor *d, const hm_status *st, const char *dir, int from_daemon,
                       const hm_error *agent_err) {
  check *c;
  const char *name = d->instance;
  int qmp_ok = is(st, "qmp", "connected");
  if (qmp_ok) {
    add_check(d, "qmp", "QMP socket", CHECK_OK, "QEMU%s%s answers on %s/qmp.sock",
              *get(st, "qemuVersion") ? " " : "", get(st, "qemuVersion"), dir);
  } else {
    c = add_check(d, "qmp", "QMP socket", CHECK_FAIL, "nothing answers on %s/qmp.sock%s%s", dir,
                  *get(st, "qmpError") ? ": " : "", get(st, "qmpError"));
    add_fix(c, "start the VM with QMP on the instance's socket:");
    fix_from_args(c, d->args, "hm-qmp", 2);
  }

  const char *machine = get(st, "machineType");
  if (!qmp_ok)
    add_check(d, "machine", "machine type", CHECK_SKIP, "needs QMP");
  else if (*machine && !strstr(machine, "q35"))
    add_fix(add_check(d, "machine", "machine type", CHECK_FAIL,
                      "%s has no PCI Express root ports to hot-plug on", machine),
            "-M q35");
  else if (*machine)
    add_check(d, "machine", "machine type", CHECK_OK, "%s", machine);

  if (!qmp_ok) {
    add_check(d, "memory", "shared memory", CHECK_SKIP, "needs QMP");
  } else if (!hm_status_get(st, "memoryShared")) {
    add_check(d, "memory", "shared memory", CHECK_WARN, "QEMU did not say");
  } else if (is(st, "memoryShared", "true")) {
    add_check(d, "memory", "shared memory", CHECK_OK,
              "guest RAM%s%s%s is shared (vhost-user can map it)",
              *get(st, "memoryBackend") ? " (" : "", get(st, "memoryBackend"),
              *get(st, "memoryBackend") ? ")" : "");
  } else {
    c = add_check(d, "memory", "shared memory", CHECK_FAIL,
                  "guest RAM%s%s%s is not shared: virtiofsd cannot map it",
                  *get(st, "memoryBackend") ? " (" : "", get(st, "memoryBackend"),
                  *get(st, "memoryBackend") ? ")" : "");
    fix_from_args(c, d->args, "memory-backend", 2);
    if (!*get(st, "memorySize"))
      add_fix(c, "(size= must equal the VM's -m)");
  }

  long total = atol(get(st, "slotsTotal"));
  if (!qmp_ok) {
    add_check(d, "slots", "hot-plug slots", CHECK_SKIP, "needs QMP");
  } else if (total <= 0) {
    c = add_check(d, "slots", "hot-plug slots", CHECK_FAIL,
                  "no reserved root ports (hm-rp-N): nowhere to hot-plug a device");
    size_t n = fix_from_args(c, d->args, "pcie-root-port", 2);
    if (n > 2)
      add_fix(c, "... %zu lines in all; all of them: hotmount qemu-args %s --slots N", n, name);
  } else if (hm_status_get(st, "slotsFree") && atol(get(st, "slotsFree")) == 0) {
    c = add_check(d, "slots", "hot-plug slots", CHECK_WARN, "all %ld reserved root ports in use",
                  total);
    add_fix(c, "remove a mount, or restart the VM with more: hotmount qemu-args %s --slots N",
            name);
  } else if (hm_status_get(st, "slotsFree")) {
    add_check(d, "slots", "hot-plug slots", CHECK_OK, "%s free of %ld", get(st, "slotsFree"),
              total);
  } else {
    add_check(d, "slots", "hot-plug slots", CHECK_OK, "%ld reserved root ports", total);
  }

  /* The shared virtiofs device (-o device=shared), when this backend has one. */
  if (qmp_ok && hm_status_get(st, "sharedDevice")) {
    const char *sd = get(st, "sharedDevice");
    if (strcmp(sd, "orphaned") == 0) {
      c = add_check(d, "shared-device", "shared virtiofs device", CHECK_WARN,
                    "plugged, but its virtiofsd is gone: its %s mounts are dead and -o "
                    "device=shared is refused until the VM restarts",
                    get(st, "sharedEntries"));
      add_fix(c, "remove the shared mounts, use -o device=dedicated, and restart the VM when "
                 "convenient");
    } else if (strcmp(sd, "plugged") == 0) {
      add_check(d, "shared-device", "shared virtiofs device", CHECK_OK, "plugged, %s mounts on it",
                get(st, "sharedEntries"));
    } else {
      add_check(d, "shared-device", "shared virtiofs device", CHECK_OK,
                "not plugged (the first -o device=shared add plugs it, on one root port)");
    }
  }

  if (qmp_ok && hm_status_get(st, "ninepSlotsReadOnly")) {
    long ro = atol(get(st, "ninepSlotsReadOnly")), rw = atol(get(st, "ninepSlotsWritable"));
    if (ro + rw == 0) {
      c = add_check(d, "9p-slots", "reserved 9p slots", CHECK_WARN,
                    "none: 9p mounts go over virtio-serial, far slower than a boot-time 9p share");
      add_fix(c, "restart the VM with the arguments of: hotmount qemu-args %s --9p-slots N", name);
    } else if (hm_status_get(st, "ninepSlotsReadOnlyFree")) {
      add_check(d, "9p-slots", "reserved 9p slots", CHECK_OK,
                "read-only %s free of %ld, writable %s free of %ld (security model %s)",
                get(st, "ninepSlotsReadOnlyFree"), ro, get(st, "ninepSlotsWritableFree"), rw,
                get(st, "ninepSlotsModel"));
    } else {
      add_check(d, "9p-slots", "reserved 9p slots", CHECK_OK,
                "%ld read-only, %ld writable (security model %s)", ro, rw,
                get(st, "ninepSlotsModel"));
    }
  }

  int channel_ok = 0;
  if (!qmp_ok) {
    add_check(d, "agent-channel", "agent channel", CHECK_SKIP, "needs QMP");
  } else if (!is(st, "agentChannel", "true")) {
    c = add_check(d, "agent-channel", "agent channel", CHECK_FAIL,
                  "no chardev hm-agent%s: the host cannot reach a guest agent",
                  is(st, "virtioSerial", "false") ? " and no virtio-serial controller hm-serial"
                                                  : "");
    fix_from_args(c, d->args, "virtio-serial-pci", 1);
    fix_from_args(c, d->args, "id=hm-agent", 1);
    fix_from_args(c, d->args, "virtserialport", 1);
  } else if (*get(st, "agentChannelPath")) {
    c = add_check(d, "agent-channel", "agent channel", CHECK_FAIL,
                  "chardev hm-agent is %s, but the daemon looks for %s/agent.sock",
                  get(st, "agentChannelPath"), dir);
    fix_from_args(c, d->args, "id=hm-agent", 1);
  } else {
    channel_ok = 1;
    add_check(d, "agent-channel", "agent channel", CHECK_OK, "port " AGENT_PORT " on %s/agent.sock",
              dir);
  }

  if (!channel_ok) {
    add_check(d, "agent", "guest agent", CHECK_SKIP, "needs the agent channel");
  } else if (is(st, "agent", "connected")) {
    add_check(d, "agent", "guest agent", CHECK_OK, "answers%s%s",
              *get(st, "agentVersion") ? ": " : "", get(st, "agentVersion"));
  } else {
    const char *why = agent_err                        ? hm_error_message(agent_err)
                      : is(st, "agent", "not running") ? "nothing in the guest has opened its port"
                                                       : get(st, "agentError");
    c = add_check(d, "agent", "guest agent", CHECK_FAIL, "does not answer: %s", why);
    add_fix(c, "in the guest, as root: hotmount-agent &");
    add_fix(c, "or install and enable it: systemctl enable --now hotmount-agent.service");
    add_fix(c, "the guest kernel needs virtio_console (ls /dev/virtio-ports/" AGENT_PORT ")");
  }

  const char *who = from_daemon ? "hotmountd" : "this user (hotmountd's user decides)";
  if (*get(st, "virtiofsd")) {
    add_check(d, "virtiofsd", "virtiofsd", CHECK_OK, "%s virtiofsd at %s",
              is(st, "virtiofsdFlavor", "rust") ? "Rust" : "QEMU's C", get(st, "virtiofsd"));
    if (is(st, "virtiofsdReadonly", "option") || is(st, "virtiofsdReadonly", "bind") ||
        is(st, "virtiofsdReadonly", "userns")) {
      add_check(d, "readonly", "read-only", CHECK_OK, "enforced on the host (%s)",
                is(st, "virtiofsdReadonly", "option") ? "virtiofsd --readonly"
                : is(st, "virtiofsdReadonly", "bind")
                    ? "read-only bind mount, as root"
                    : "read-only bind mount in virtiofsd's user namespace");
    } else {
      c = add_check(d, "readonly", "read-only", CHECK_FAIL,
                    "cannot be enforced on the host for %s: this virtiofsd has no --readonly and "
                    "a read-only bind mount needs root or a user namespace (see the checks below)",
                    who);
      add_fix(c, "fix the user-namespace checks below (rootless virtiofsd)");
      add_fix(c, "or install the Rust virtiofsd >= 1.13 and: hotmountd %s --virtiofsd PATH", name);
    }
  } else {
    c = add_check(d, "virtiofsd", "virtiofsd", CHECK_FAIL, "not found for %s%s%s", who,
                  *get(st, "virtiofsdError") ? ": " : "", get(st, "virtiofsdError"));
    add_fix(c, "install it (Debian 12: apt install qemu-system-common; elsewhere: the "
               "virtiofsd package)");
    add_fix(c, "or name it: hotmountd %s --virtiofsd PATH (or HOTMOUNT_VIRTIOFSD=PATH)", name);
    add_check(d, "readonly", "read-only", CHECK_SKIP, "needs virtiofsd");
  }

  /* Without root, virtiofsd and sftp-server run in a user namespace with
   * the user's subordinate ids: each thing that needs, a check. */
  static const char *const userns_checks[][2] = {{"userns", "user namespaces"},
                                                 {"newuidmap", "newuidmap"},
                                                 {"subuid", "subuid range"},
                                                 {"subgid", "subgid range"}};
  if (!is(st, "rootless", "true")) {
    add_check(d, "userns", "user namespaces", CHECK_SKIP,
              "not needed: %s runs as root (helpers are confined by root's namespaces)",
              from_daemon ? "hotmountd" : "this user");
  } else {
    for (size_t i = 0; i < sizeof(userns_checks) / sizeof(userns_checks[0]); i++) {
      const char *v = get(st, userns_checks[i][0]);
      if (strncmp(v, "ok", 2) == 0)
        add_check(d, userns_checks[i][0], userns_checks[i][1], CHECK_OK, "%s",
                  v[2] ? v + 3 : "available");
      else
        add_check(d, userns_checks[i][0], userns_checks[i][1], CHECK_FAIL,
                  "%s (virtiofs and reverse-sshfs without root need it)", *v ? v : "not reported");
    }
  }

  /* bind: the boot-time shares hotmountd was told about. */
  if (!hm_status_get(st, "bootShares")) {
    add_check(d, "bind", "bind mounts", CHECK_SKIP,
              "%s (the boot-time shares are its --boot-share options)",
              from_daemon ? "this hotmountd has no bind backend" : "needs hotmountd");
  } else if (is(st, "bootShares", "0")) {
    add_check(d, "bind", "bind mounts", CHECK_SKIP,
              "no boot-time share declared (hotmountd %s --boot-share HOSTDIR=GUESTDIR enables "
              "--type bind)",
              name);
  } else {
    char list[1024] = "";
    for (long i = 0; i < atol(get(st, "bootShares")); i++) {
      char key[48];
      size_t l = strlen(list);
      snprintf(key, sizeof(key), "bootShare.%ld", i);
      snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "", get(st, key));
    }
    add_check(d, "bind", "bind mounts", CHECK_OK, "boot-time shares (HOST=GUEST): %s", list);
  }

  /* reverse-sshfs: only when the instance has SSH settings. */
  char *sshcfg = NULL;
  hm_ssh_config *cfg = NULL;
  hm_error *err = NULL;
  if (asprintf(&sshcfg, "%s/ssh.json", dir) < 0)
    return;
  int r = hm_ssh_config_load(&cfg, sshcfg, &err);
  if (r == HM_E_NOT_FOUND) {
    add_check(d, "sshfs", "reverse-sshfs", CHECK_SKIP,
              "no SSH settings (hotmountd %s --ssh-host ... enables it)", name);
  } else if (r < 0) {
    add_fix(add_check(d, "sshfs", "reverse-sshfs", CHECK_FAIL, "%s", hm_error_message(err)),
            "give the settings again: hotmountd %s --ssh-host ... (rewrites %s)", name, sshcfg);
  } else if ((r = hm_ssh_config_check(cfg, &err)) < 0) {
    c = add_check(d, "sshfs", "reverse-sshfs", CHECK_FAIL, "%s", hm_error_message(err));
    if (r == HM_E_AUTH)
      add_fix(c,
              "check the guest's host key and the login key: hotmountd %s --ssh-known-hosts "
              "FILE | --ssh-fingerprint SHA256:... --ssh-identity KEY",
              name);
    else if (r == HM_E_UNSUPPORTED)
      add_fix(c, "install sshfs and FUSE in the guest (Debian: apt install sshfs fuse3)");
    else
      add_fix(c,
              "is sshd running in the guest, and does %s:%s reach it (a hostfwd for QEMU "
              "user networking)?",
              hm_ssh_config_get(cfg, "host"), hm_ssh_config_get(cfg, "port") ?: "22");
  } else {
    add_check(d, "sshfs", "reverse-sshfs", CHECK_OK,
              "%s@%s:%s: host key trusted, login works, the guest has sshfs and FUSE",
              hm_ssh_config_get(cfg, "user") ?: "root", hm_ssh_config_get(cfg, "host"),
              hm_ssh_config_get(cfg, "port") ?: "22");
  }
  hm_error_free(err);
  hm_ssh_config_free(cfg);
  free(sshcfg);
}

static void print_json(const doctor *d, const char *dir, int from_daemon, int ready,
                       const char *facts) {
  char *s = cli_json_string(dir);
  printf("{\"instance\":%s,\"daemon\":\"%s\",\"source\":\"%s\",\"ready\":%s,\"checks\":[", s,
         from_daemon ? "running" : "not running", from_daemon ? "daemon" : "qmp",
         ready ? "true" : "false");
  free(s);
  for (size_t i = 0; i < d->n; i++) {
    const check *c = &d->checks[i];
    s = cli_json_string(c->detail ? c->detail : "");
    printf("%s{\"name\":\"%s\",\"status\":\"%s\",\"detail\":%s,\"fix\":[", i ? "," : "", c->name,
           status_names[c->status], s);
    free(s);
    for (size_t j = 0; j < c->n_fix; j++) {
      s = cli_json_string(c->fix[j]);
      printf("%s%s", j ? "," : "", s);
      free(s);
    }
    printf("]}");
  }
  char *safe_facts = facts ? cli_json_safe(facts) : NULL;
  printf("],\"facts\":%s}\n", safe_facts ? safe_facts : "{}");
  free(safe_facts);
}

static void print_human(const doctor *d, const char *dir, int from_daemon, int failed) {
  printf("hotmount doctor: %s\n", dir);
  if (from_daemon)
    printf("hotmountd is running: facts from the daemon.\n\n");
  else
    printf("hotmountd is not running: asked QEMU directly on %s/qmp.sock\n"
           "(QMP serves one client at a time, so doctor only does this while no daemon runs).\n\n",
           dir);
  static const char *const marks[] = {"ok", "warn", "FAIL", "skip"};
  for (size_t i = 0; i < d->n; i++) {
    const check *c = &d->checks[i];
    /* details quote the agent and sshd of the guest: no escapes to the terminal */
    printf("  %-5s %-15s %s\n", marks[c->status], c->title, cli_safe(c->detail));
    for (size_t j = 0; j < c->n_fix; j++)
      printf("  %-5s %-15s %s %s\n", "", "", j ? "    " : "fix:", cli_safe(c->fix[j]));
  }
  if (!failed)
    printf("\nReady: this VM can take hot-mounts (hotmount add %s HOST_PATH GUEST_PATH).\n",
           d->instance);
  else
    printf("\nNot ready: %d check%s failed. QEMU options cannot be added to a running VM: add "
           "the lines above\n(or all of 'hotmount qemu-args %s --memory SIZE', SIZE as its -m) to "
           "its command line and restart it.\n",
           failed, failed == 1 ? "" : "s", d->instance);
}

int cmd_doctor(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int json = 0, c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
    switch (c) {
    case 'j': json = 1; break;
    case 'h': cli_usage("doctor", 1); return EXIT_OK;
    default: cli_usage("doctor", 0); return EXIT_USAGE;
    }
  }
  if (argc - optind != 1)
    return cli_usage_error("doctor", "doctor takes exactly one INSTANCE");
  doctor d = {.instance = argv[optind]};
  hm_client *client = NULL;
  hm_status *st = NULL;
  hm_qemu_config *cfg = NULL;
  hm_error *err = NULL, *agent_err = NULL;
  char *dir = NULL, *facts = NULL;
  int from_daemon = 0;
  if ((rc = cli_instance_dir(&dir, argv[optind])) || (rc = cli_connect(&client, argv[optind])))
    goto out;
  hm_client_set_timeout(client, 15000, NULL);
  if (hm_client_status(client, &st, &err) == 0) {
    from_daemon = 1;
    /* The daemon connects to the agent on demand; ask it to try now, so
     * "agent answers" is a fact and not a guess. */
    if (hm_client_connect_agent(client, 3000, &agent_err) == 0) {
      hm_status_free(st);
      st = NULL;
      hm_error_free(err);
      err = NULL;
      if (hm_client_status(client, &st, &err) < 0) {
        rc = cli_fail(err);
        goto out;
      }
    }
  } else if (hm_error_code(err) == HM_E_NOT_READY) {
    hm_error_free(err);
    err = NULL;
    if (hm_qemu_config_new(&cfg, dir, &err) < 0 || hm_qemu_probe(&st, cfg, &err) < 0) {
      rc = cli_fail(err);
      goto out;
    }
  } else {
    rc = cli_fail(err);
    goto out;
  }

  /* The fixes quote qemu-args itself, sized like the running VM when known. */
  if (!cfg && hm_qemu_config_new(&cfg, dir, &err) < 0) {
    rc = cli_fail(err);
    goto out;
  }
  long long bytes = atoll(hm_status_get(st, "memorySize") ? hm_status_get(st, "memorySize") : "0");
  if (bytes > 0) {
    char size[32];
    snprintf(size, sizeof(size), "%lldM", bytes / (1024 * 1024));
    hm_qemu_config_set_memory(cfg, size, NULL);
  }
  hm_qemu_config_build_args(&d.args, cfg, NULL);

  run_checks(&d, st, dir, from_daemon, agent_err);
  int failed = 0;
  for (size_t i = 0; i < d.n; i++)
    failed += d.checks[i].status == CHECK_FAIL;
  if (json) {
    hm_status_to_json(&facts, st, NULL);
    print_json(&d, dir, from_daemon, !failed, facts);
  } else {
    print_human(&d, dir, from_daemon, failed);
  }
  rc = failed ? EXIT_CHECK : EXIT_OK;
out:
  for (size_t i = 0; i < d.n; i++) {
    free(d.checks[i].detail);
    for (size_t j = 0; j < d.checks[i].n_fix; j++)
      free(d.checks[i].fix[j]);
  }
  hm_strv_free(d.args);
  free(facts);
  free(dir);
  hm_status_free(st);
  hm_qemu_config_free(cfg);
  hm_error_free(err);
  hm_error_free(agent_err);
  hm_client_free(client);
  return rc;
}
