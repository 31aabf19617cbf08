/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * OpenSSH's sftp-server, confined to one directory.
 *
 * sftp-server serves whatever path it is asked for; -d only sets where it
 * starts. A guest that speaks SFTP itself (its root can) would reach the
 * whole host. So the server runs in its own mount namespace, chrooted into
 * a fresh tmpfs that holds only:
 *   /usr            read-only bind (the program and its libraries; /lib,
 *                   /lib64, /bin, /sbin as merged-/usr symlinks or binds)
 *   /etc            passwd, group, nsswitch.conf naming the server's user
 *   /dev/null
 *   /share          the shared directory, opened once by the daemon and bound
 *                   from that fd (nosuid, nodev; read-only when the mount is)
 * and it runs with a bounding set of only the file capabilities it needs
 * (no CAP_SYS_CHROOT, CAP_SYS_ADMIN, CAP_MKNOD, CAP_FSETID, CAP_SETFCAP),
 * no new privileges and jail.h's filter: a guest cannot plant a setuid
 * file or a device node on the host through SETSTAT or OPEN modes.
 *
 * Without root the same jail is made inside a user namespace with the
 * user's subordinate ids (userns.h): sftp-server is uid 0 there, which is
 * the host user outside, so whatever the guest writes belongs to the host
 * user, and the host user's files are root's in the guest (sshfs shows the
 * server's ids; mapUid/mapGid make sshfs show a guest user instead).
 */
#include "sshfs_internal.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARE "/share"

/* Everything the child needs, made before fork. */
typedef struct jail {
  const char *root; /* the empty directory the tmpfs goes on */
  int share_fd;     /* the shared directory (hm_share) */
  int writable;
  char path[8][4096]; /* scratch: root + suffix, made in the parent */
  char passwd[512], group[512];
  int usr_links; /* /lib etc. are symlinks into /usr on this host */
} jail;

enum { P_USR, P_SHARE, P_ETC, P_DEV, P_NULL, P_PASSWD, P_GROUP, P_NSS };

static int put(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -1;
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n;
  close(fd);
  return ok ? 0 : -1;
}

/* In the child: async-signal-safe calls only. */
static int jail_setup(void *arg) {
  jail *j = arg;
  static const char *const links[][2] = {
      {"lib", "usr/lib"}, {"lib64", "usr/lib64"}, {"bin", "usr/bin"}, {"sbin", "usr/sbin"}};
  /* The cwd carries into the new namespace: the share is bound from it
   * (the fd opened in the parent), not from a path resolved again. */
  if (fchdir(j->share_fd) < 0 || unshare(CLONE_NEWNS) < 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
      mount("hotmount-sftp", j->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0 ||
      mkdir(j->path[P_USR], 0755) < 0 || mkdir(j->path[P_SHARE], 0755) < 0 ||
      mkdir(j->path[P_ETC], 0755) < 0 || mkdir(j->path[P_DEV], 0755) < 0 ||
      put(j->path[P_NULL], "") < 0 || put(j->path[P_PASSWD], j->passwd) < 0 ||
      put(j->path[P_GROUP], j->group) < 0 ||
      put(j->path[P_NSS], "passwd: files\ngroup: files\n") < 0 ||
      mount(".", j->path[P_SHARE], NULL, MS_BIND | MS_REC, NULL) < 0 ||
      hm_mount_lock(j->path[P_SHARE], !j->writable) < 0 ||
      mount("/usr", j->path[P_USR], NULL, MS_BIND | MS_REC, NULL) < 0 ||
      hm_mount_lock(j->path[P_USR], 1) < 0 ||
      mount("/dev/null", j->path[P_NULL], NULL, MS_BIND, NULL) < 0 || chdir(j->root) < 0)
    return -1;
  if (j->usr_links)
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
      if (symlink(links[i][1], links[i][0]) < 0)
        return -1;
  if (chroot(".") < 0 || chdir(SHARE) < 0)
    return -1;
  return 0;
}

/* sftp-server acts as root on the share and nothing else. */
static const hm_confine sftp_confine = {
    .drop_caps = 1,
    .keep_caps = HM_CAP(CAP_CHOWN) | HM_CAP(CAP_DAC_OVERRIDE) | HM_CAP(CAP_DAC_READ_SEARCH) |
                 HM_CAP(CAP_FOWNER),
    .filter = 1,
};

const char *hm_sftp_server_find(const hm_ssh_config *cfg) {
  static const char *const where[] = {"/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                                      "/usr/libexec/openssh/sftp-server",
                                      "/usr/lib/ssh/sftp-server", NULL};
  const char *c = hm_ssh_config_get(cfg, "sftpServer");
  if (c)
    return access(c, X_OK) == 0 ? c : NULL;
  for (const char *const *w = where; *w; w++)
    if (access(*w, X_OK) == 0)
      return *w;
  return NULL;
}

int hm_sftp_spawn(pid_t *out, const char *sftp_server, const char *host_dir, int writable, int sock,
                  const char *jail_dir, char *const *extra_env, hm_error **err) {
  /* Without root: the same jail, made inside a user namespace of our own
   * (userns.h) where sftp-server is root over the share only, acting on the
   * host as this user (its inner uid 0). */
  hm_userns userns;
  int rootless = geteuid() != 0;
  if (rootless) {
    int r = hm_userns_prepare(&userns, "sftp-server", -1, -1, err);
    if (r < 0)
      return hm_error_prefix(err, r, __func__, "reverse-sshfs cannot confine sftp-server to %s",
                             host_dir);
  }
  if (strncmp(sftp_server, "/usr/", 5) != 0)
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "sftp-server %s is outside /usr, which is all its confinement provides",
                  sftp_server);
  jail *j = calloc(1, sizeof(*j));
  if (!j)
    return HM_ERR_NOMEM(err);
  static const char *const suffix[] = {"usr",      "share",      "etc",       "dev",
                                       "dev/null", "etc/passwd", "etc/group", "etc/nsswitch.conf"};
  for (size_t i = 0; i < 8; i++)
    if ((size_t)snprintf(j->path[i], sizeof(j->path[i]), "%s/%s", jail_dir, suffix[i]) >=
        sizeof(j->path[i])) {
      free(j);
      return HM_ERR(err, HM_E_INVALID, "jail directory %s is too long", jail_dir);
    }
  hm_share share;
  int r = hm_share_open(&share, host_dir, !writable, err);
  if (r < 0) {
    free(j);
    return hm_error_prefix(err, r, __func__, "cannot start sftp-server for %s", host_dir);
  }
  j->root = jail_dir;
  j->share_fd = share.fd;
  j->writable = writable;
  struct stat st;
  j->usr_links = lstat("/lib", &st) == 0 && S_ISLNK(st.st_mode);
  if (!j->usr_links) {
    hm_share_close(&share);
    free(j);
    return HM_ERR(err, HM_E_UNSUPPORTED,
                  "this host's /lib is not a merged-/usr symlink; the sftp-server confinement "
                  "supports merged /usr only");
  }
  /* sftp-server looks its own user up; the jail's /etc names only it (uid
   * and gid 0 inside a user namespace). */
  struct passwd *pw = getpwuid(geteuid());
  struct group *gr = getgrgid(getegid());
  unsigned uid = rootless ? 0 : (unsigned)geteuid(), gid = rootless ? 0 : (unsigned)getegid();
  snprintf(j->passwd, sizeof(j->passwd), "%s:x:%u:%u::" SHARE ":/nonexistent\n",
           pw ? pw->pw_name : "hotmount", uid, gid);
  snprintf(j->group, sizeof(j->group), "%s:x:%u:\n", gr ? gr->gr_name : "hotmount", gid);
  char *argv[] = {(char *)sftp_server,    "-d", SHARE, "-e", "-l", "ERROR",
                  writable ? NULL : "-R", NULL};
  hm_spawn_opts o = {.argv = argv,
                     .extra_env = extra_env,
                     .pass_fd = -1,
                     .as_fd = -1,
                     .stdio_fd = sock,
                     .new_session = 1,
                     .setup = jail_setup,
                     .setup_arg = j,
                     .confine = &sftp_confine,
                     .userns = rootless ? &userns : NULL};
  r = hm_spawn(out, &o, err);
  hm_share_close(&share);
  free(j);
  if (r < 0)
    return hm_error_prefix(err, r, __func__, "cannot start sftp-server for %s", host_dir);
  return 0;
}
