/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the files the daemon reads back from the instance
 * directory: state.json (hm_state_load) and ssh.json (hm_ssh_config_load).
 * Byte 0 picks the file; the rest is its content, written to a private
 * temporary directory each run. A corrupt state.json is renamed aside by
 * design: the directory is emptied after each run.
 */
#include "instance_internal.h"
#include "state.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void empty_dir(void) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    unlink(p);
  }
  closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  if (!dir[0]) {
    strcpy(dir, "/tmp/hm-fuzz-files-XXXXXX");
    if (!mkdtemp(dir))
      abort();
  }
  int which = data[0] % 2;
  char path[128];
  snprintf(path, sizeof path, "%s/%s", dir, which ? "ssh.json" : "state.json");
  FILE *f = fopen(path, "w");
  if (!f)
    abort();
  fwrite(data + 1, 1, size - 1, f);
  fclose(f);
  if (which) {
    hm_ssh_config *cfg = NULL;
    hm_error *err = NULL;
    if (hm_ssh_config_load(&cfg, path, &err) == 0) {
      hm_error *e2 = NULL;
      hm_ssh_config_validate(cfg, &e2);
      hm_error_free(e2);
    }
    hm_ssh_config_free(cfg);
    hm_error_free(err);
  } else {
    unsigned next_id = 0;
    char *boot_id = NULL;
    hm_entry **entries = NULL;
    size_t n = 0;
    hm_error *err = NULL;
    if (hm_state_load(path, &next_id, &boot_id, &entries, &n, &err) == 0) {
      for (size_t i = 0; i < n; i++)
        hm_inst_entry_free(entries[i]);
    }
    free(entries);
    free(boot_id);
    hm_error_free(err);
  }
  empty_dir();
  return 0;
}
