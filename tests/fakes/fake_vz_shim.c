/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The fake shim: see fake_vz_shim.h. */
#include "fake_vz_shim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *msgf(const char *fmt, const char *a) {
  char buf[512];
  snprintf(buf, sizeof(buf), fmt, a);
  return strdup(buf);
}

static int fake_reserve(void *cfg_, unsigned spares, char **errmsg) {
  fake_vz_config *cfg = cfg_;
  for (unsigned i = 0; i < cfg->n; i++)
    if (strncmp(cfg->tags[i], HM_VZ_TAG_PREFIX, strlen(HM_VZ_TAG_PREFIX)) == 0) {
      *errmsg = msgf("the configuration already has device %s", cfg->tags[i]);
      return HM_E_EXISTS;
    }
  if (cfg->n + spares > FAKE_VZ_MAX_DEVICES) {
    *errmsg = strdup("too many devices");
    return HM_E_HELPER;
  }
  for (unsigned i = 0; i < spares; i++)
    snprintf(cfg->tags[cfg->n++], sizeof(cfg->tags[0]), HM_VZ_TAG_PREFIX "%u", i);
  return 0;
}

typedef struct fake_handle {
  fake_vz_vm *vm;
  unsigned spares;
} fake_handle;

static int fake_open(void **out, uint64_t *in_use, void *vm_, void *queue, unsigned spares,
                     char **errmsg) {
  fake_vz_vm *vm = vm_;
  pthread_mutex_lock(&vm->lock);
  int r = 0;
  if (vm->fail_open) {
    *errmsg = strdup(vm->fail_open);
    r = HM_E_HELPER;
  } else if (queue != vm->queue) {
    *errmsg = strdup("not the VM's queue");
    r = HM_E_INVALID;
  } else if (spares > vm->devices) {
    char tag[32];
    snprintf(tag, sizeof(tag), HM_VZ_TAG_PREFIX "%u", vm->devices);
    *errmsg = msgf("the VM has no spare device %s", tag);
    r = HM_E_NOT_FOUND;
  }
  if (r == 0) {
    fake_handle *h = calloc(1, sizeof(*h));
    h->vm = vm;
    h->spares = spares;
    *in_use = 0;
    for (unsigned i = 0; i < spares; i++)
      if (vm->spare[i].shared)
        *in_use |= (uint64_t)1 << i;
    vm->open_handles++;
    *out = h;
  }
  pthread_mutex_unlock(&vm->lock);
  return r;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int fake_set_share(void *shim, unsigned index, const char *path, bool read_only,
                          char **errmsg) {
  fake_handle *h = shim;
  fake_vz_vm *vm = h->vm;
  pthread_mutex_lock(&vm->lock);
  vm->set_calls++;
  if (++vm->in_flight > vm->max_in_flight)
    vm->max_in_flight = vm->in_flight;
  int delay = vm->set_delay_ms;
  pthread_mutex_unlock(&vm->lock);
  if (delay)
    sleep_ms(delay);
  pthread_mutex_lock(&vm->lock);
  int r = 0;
  vm->in_flight--;
  if (index >= h->spares) {
    *errmsg = strdup("no such spare");
    r = HM_E_NOT_FOUND;
  } else if (vm->fail_set) {
    *errmsg = strdup(vm->fail_set);
    vm->fail_set = NULL;
    r = HM_E_HELPER;
  } else if (vm->spare[index].shared) {
    /* The backend must never hand out a spare that shares something. */
    *errmsg = msgf("double booking: spare already shares %s", vm->spare[index].path);
    r = HM_E_INTERNAL;
  } else {
    vm->spare[index].shared = 1;
    snprintf(vm->spare[index].path, sizeof(vm->spare[index].path), "%s", path);
    vm->spare[index].read_only = read_only;
  }
  pthread_mutex_unlock(&vm->lock);
  return r;
}

static int fake_clear_share(void *shim, unsigned index, char **errmsg) {
  fake_handle *h = shim;
  fake_vz_vm *vm = h->vm;
  pthread_mutex_lock(&vm->lock);
  vm->clear_calls++;
  int r = 0;
  if (index >= h->spares) {
    *errmsg = strdup("no such spare");
    r = HM_E_NOT_FOUND;
  } else if (vm->fail_clear) {
    *errmsg = strdup(vm->fail_clear);
    vm->fail_clear = NULL;
    r = HM_E_HELPER;
  } else {
    memset(&vm->spare[index], 0, sizeof(vm->spare[index]));
  }
  pthread_mutex_unlock(&vm->lock);
  return r;
}

static void fake_close(void *shim) {
  fake_handle *h = shim;
  if (!h)
    return;
  pthread_mutex_lock(&h->vm->lock);
  h->vm->open_handles--;
  pthread_mutex_unlock(&h->vm->lock);
  free(h);
}

const hm_vz_shim_ops fake_vz_shim_ops = {
    .reserve = fake_reserve,
    .open = fake_open,
    .set_share = fake_set_share,
    .clear_share = fake_clear_share,
    .close = fake_close,
};

void fake_vz_vm_init(fake_vz_vm *vm, unsigned devices, void *queue) {
  memset(vm, 0, sizeof(*vm));
  pthread_mutex_init(&vm->lock, NULL);
  vm->devices = devices;
  vm->queue = queue;
}

void fake_vz_vm_destroy(fake_vz_vm *vm) {
  pthread_mutex_destroy(&vm->lock);
}
