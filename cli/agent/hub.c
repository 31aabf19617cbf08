/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest side of the shared virtiofs device (mount.virtiofs.hub): the
 * hub tag is mounted once at AGENT_HUB_DIR (root-only, nosuid, nodev); each
 * share is a submount there (hm-N, announced by virtiofsd, its own st_dev),
 * bind-mounted onto the guest path. Here: what the mount table says about
 * those, read from /proc/self/mountinfo text.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

int agent_hub_entry_ok(const char *name) {
  if (!name || strncmp(name, "hm-", 3) != 0 || !name[3] || strlen(name) > 24)
    return 0;
  for (const char *p = name + 3; *p; p++)
    if (*p < '0' || *p > '9')
      return 0;
  return 1;
}

/* One mountinfo line's fields: major:minor, mount point (escapes decoded
 * into mp), fstype. 0, or -1 when malformed. */
static int fields(const char *line, size_t len, char dev[32], char *mp, size_t mpsize,
                  char fstype[64]) {
  char *copy = strndup(line, len), *save = NULL;
  if (!copy)
    return -1;
  char *f[6] = {0};
  char *t = strtok_r(copy, " ", &save);
  for (int i = 0; i < 6 && t; i++, t = strtok_r(NULL, " ", &save))
    f[i] = t;
  /* after the optional fields: "-", fstype, source */
  while (t && strcmp(t, "-") != 0)
    t = strtok_r(NULL, " ", &save);
  char *fs = t ? strtok_r(NULL, " ", &save) : NULL;
  int r = -1;
  if (f[2] && f[4] && fs) {
    snprintf(dev, 32, "%s", f[2]);
    snprintf(fstype, 64, "%s", fs);
    size_t o = 0;
    for (const char *s = f[4]; *s && o + 1 < mpsize; s++) {
      if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
          s[3] <= '7') {
        mp[o++] = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
        s += 3;
      } else {
        mp[o++] = *s;
      }
    }
    mp[o] = '\0';
    r = 0;
  }
  free(copy);
  return r;
}

typedef struct hub_dev {
  char dev[32];
  char name[32];
} hub_dev;

/* The hub's submounts (AGENT_HUB_DIR/hm-N) and their major:minor. */
static size_t hub_devs(const char *text, hub_dev *out, size_t max) {
  size_t n = 0, plen = strlen(AGENT_HUB_DIR "/");
  char mp[4096], dev[32], fstype[64];
  for (const char *l = text; l && *l && n < max;) {
    const char *e = strchr(l, '\n');
    size_t len = e ? (size_t)(e - l) : strlen(l);
    if (fields(l, len, dev, mp, sizeof(mp), fstype) == 0 && strcmp(fstype, "virtiofs") == 0 &&
        strncmp(mp, AGENT_HUB_DIR "/", plen) == 0 && agent_hub_entry_ok(mp + plen)) {
      snprintf(out[n].dev, sizeof(out[n].dev), "%s", dev);
      snprintf(out[n].name, sizeof(out[n].name), "%.24s", mp + plen);
      n++;
    }
    l = e ? e + 1 : NULL;
  }
  return n;
}

#define MAX_HUB 4096

void agent_hub_fix_list(hm_agent_mount_info *v, size_t *n, const char *text) {
  hub_dev *hd = calloc(MAX_HUB, sizeof(*hd));
  size_t nh = hd ? hub_devs(text, hd, MAX_HUB) : 0;
  char mp[4096], dev[32], fstype[64];
  /* A bind of a hub entry is listed with its entry's name as the source
   * ("hm-hub/hm-N"), which is how the host knows it. */
  for (const char *l = text; nh && l && *l;) {
    const char *e = strchr(l, '\n');
    size_t len = e ? (size_t)(e - l) : strlen(l);
    if (fields(l, len, dev, mp, sizeof(mp), fstype) == 0 && strcmp(fstype, "virtiofs") == 0 &&
        strncmp(mp, AGENT_HUB_DIR, strlen(AGENT_HUB_DIR)) != 0) {
      for (size_t k = 0; k < nh; k++) {
        if (strcmp(hd[k].dev, dev) != 0)
          continue;
        for (size_t i = 0; i < *n; i++) {
          char *src = NULL;
          if (v[i].target && strcmp(v[i].target, mp) == 0 &&
              asprintf(&src, AGENT_HUB_TAG "/%s", hd[k].name) >= 0) {
            free(v[i].source);
            v[i].source = src;
          }
        }
      }
    }
    l = e ? e + 1 : NULL;
  }
  free(hd);
  /* The hub and its submounts are the agent's own, not the host's mounts. */
  size_t o = 0, plen = strlen(AGENT_HUB_DIR);
  for (size_t i = 0; i < *n; i++) {
    const char *t = v[i].target;
    if (t && strncmp(t, AGENT_HUB_DIR, plen) == 0 && (t[plen] == '\0' || t[plen] == '/')) {
      free(v[i].target);
      free(v[i].fstype);
      free(v[i].source);
      free(v[i].options);
      continue;
    }
    if (o != i)
      v[o] = v[i];
    o++;
  }
  *n = o;
}

void agent_hub_release(const char *text, const char *dev) {
  hub_dev *hd = calloc(MAX_HUB, sizeof(*hd));
  size_t nh = hd ? hub_devs(text, hd, MAX_HUB) : 0;
  for (size_t k = 0; k < nh; k++) {
    if (strcmp(hd[k].dev, dev) != 0)
      continue;
    char p[128];
    snprintf(p, sizeof(p), AGENT_HUB_DIR "/%s", hd[k].name);
    if (umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
      hm_warn("hub: unmounting %s: %s", p, strerror(errno));
  }
  free(hd);
}
