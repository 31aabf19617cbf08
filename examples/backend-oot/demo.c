/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Drives the link backend through a libhotmount instance, as a VM manager
 * would drive its own backend, and prints TAP. tests/compile/backend-oot.sh
 * builds this directory against an installed libhotmount and runs it.
 *
 *   oot-demo ROOT INSTANCE_DIR SHARE
 */
#define _GNU_SOURCE
#include "link_backend.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failed, n;

static void ok(int cond, const char *what, const hm_error *err) {
  printf("%s %d - %s\n", cond ? "ok" : "not ok", ++n, what);
  if (!cond && err)
    printf("#   error: %s (code %d, class %s)\n", hm_error_message(err), hm_error_code(err),
           hm_error_class_name(hm_error_class(err)));
  failed |= !cond;
}

static int backend_lines;
static void on_log(int level, const char *msg, void *ud) {
  (void)ud;
  fprintf(stderr, "log %d: %s\n", level, msg);
  backend_lines += strncmp(msg, "link backend: ", 14) == 0;
}

/* hm_instance_add of SHARE at guest with one option (key NULL: none). */
static int add(hm_instance *inst, const char *share, const char *guest, int writable,
               const char *key, const char *value, hm_error **err) {
  hm_mount_spec *s = NULL;
  int r = hm_mount_spec_new(&s, err);
  if (r == 0)
    r = hm_mount_spec_set_host_path(s, share, err);
  if (r == 0)
    r = hm_mount_spec_set_guest_path(s, guest, err);
  if (r == 0)
    r = hm_mount_spec_set_writable(s, writable, err);
  if (r == 0 && key)
    r = hm_mount_spec_set_option(s, key, value, err);
  if (r == 0)
    r = hm_instance_add(inst, NULL, s, err);
  hm_mount_spec_free(s);
  return r;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: oot-demo ROOT INSTANCE_DIR SHARE\n");
    return 2;
  }
  const char *root = argv[1], *dir = argv[2], *share = argv[3];
  char link[PATH_MAX], target[PATH_MAX] = "";
  hm_set_log_callback(on_log, HM_LOG_DEBUG, NULL, NULL);

  hm_fs_hotplugger *hp = NULL;
  hm_instance *inst = NULL;
  hm_error *err = NULL;
  int r = link_backend_new(&hp, root, &err);
  if (r == 0)
    r = hm_instance_new(&inst, dir, hp, &err); /* takes hp over */
  ok(r == 0, "an instance on the out-of-tree backend", err);
  if (r < 0)
    return 1;
  hm_error_free(err);
  err = NULL;

  r = add(inst, share, "/mnt/share", 0, "label", "demo", &err);
  ok(r == 0, "add /mnt/share (label=demo)", err);
  hm_error_free(err);
  err = NULL;
  snprintf(link, sizeof(link), "%s/mnt/share", root);
  ssize_t len = readlink(link, target, sizeof(target) - 1);
  target[len > 0 ? len : 0] = '\0';
  ok(strcmp(target, share) == 0, "the backend linked ROOT/mnt/share to the share", NULL);

  /* The backend's validate op owns its options. */
  r = add(inst, share, "/mnt/b", 0, "color", "red", &err);
  ok(r == HM_E_INVALID && strstr(hm_error_message(err), "unknown option \"color\"") &&
         hm_error_class(err) == HM_ECLASS_INPUT,
     "an option the backend does not know is refused by its validate op", err);
  hm_error_free(err);
  err = NULL;
  r = add(inst, share, "/mnt/b", 1, NULL, NULL, &err);
  ok(r == HM_E_UNSUPPORTED && hm_error_class(err) == HM_ECLASS_BACKEND,
     "writable is refused with the backend's own error (class backend)", err);
  hm_error_free(err);
  err = NULL;

  /* A failing attach: its class and detail reach the caller. */
  snprintf(link, sizeof(link), "%s/mnt/file", root);
  FILE *f = fopen(link, "w");
  if (f)
    fclose(f);
  r = add(inst, share, "/mnt/file/sub", 0, NULL, NULL, &err);
  ok(r == HM_E_IO && hm_error_class(err) == HM_ECLASS_OS && hm_error_detail(err) &&
         strcmp(hm_error_detail(err), "ENOTDIR") == 0,
     "a failed attach keeps the backend's class (os) and detail (ENOTDIR)", err);
  hm_error_free(err);
  err = NULL;

  hm_mount_list *l = NULL;
  r = hm_instance_list(inst, &l, &err);
  ok(r == 0 && hm_mount_list_count(l) == 1 &&
         hm_mount_get_state(hm_mount_list_get(l, 0)) == HM_STATE_MOUNTED &&
         strcmp(hm_mount_get_tag(hm_mount_list_get(l, 0)), "link:hm-1") == 0,
     "list: one mount, mounted, with the backend's tag", err);
  hm_mount_list_free(l);
  hm_error_free(err);
  err = NULL;

  hm_status *st = NULL;
  r = hm_instance_status(inst, &st, &err);
  ok(r == 0 && hm_status_get(st, "linkRoot") && strcmp(hm_status_get(st, "linkRoot"), root) == 0,
     "status carries the backend's describe", err);
  hm_status_free(st);
  hm_error_free(err);
  err = NULL;

  r = hm_instance_remove(inst, "/mnt/share", 0, &err);
  struct stat sb;
  snprintf(link, sizeof(link), "%s/mnt/share", root);
  ok(r == 0 && lstat(link, &sb) < 0, "remove takes the link away", err);
  hm_error_free(err);
  hm_instance_free(inst);
  ok(backend_lines > 0, "the backend's hm_log lines reach the embedder's log callback", NULL);
  hm_set_log_callback(NULL, 0, NULL, NULL);
  printf("1..%d\n", n);
  return failed;
}
