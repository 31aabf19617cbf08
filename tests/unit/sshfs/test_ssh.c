/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The reverse-sshfs backend's SSH side, without a VM (see meson.build). */
#include "sshfs_internal.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/hm-test-ssh-XXXXXX";

static char *path_in(const char *name) {
  char *p = NULL;
  ck_assert_int_ge(asprintf(&p, "%s/%s", tmpdir, name), 0);
  return p;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static int run(const char *cmd) {
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_config_values) {
  hm_ssh_config *c = NULL;
  hm_error *err = NULL;
  ck_assert_int_eq(hm_ssh_config_new(&c, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_set(c, "host", "127.0.0.1", NULL), 0);
  ck_assert_str_eq(hm_ssh_config_get(c, "host"), "127.0.0.1");
  static const char *const bad[][3] = {
      {"port", "0", "number from 1 to 65535"},
      {"port", "65536", "number from 1 to 65535"},
      {"port", "22x", "number"},
      {"user", "ro ot", "letters, digits"},
      {"user", "a;b", "letters, digits"},
      {"identity", "relative/key", "absolute path"},
      {"knownHosts", "", "non-empty"},
      {"fingerprint", "MD5:aa:bb", "SHA256:"},
      {"host", "-oProxyCommand=x", "must not start with '-'"},
      {"host", "a\nb", "control characters"},
      {"keepaliveInterval", "10", "from 100"},
      {"nosuch", "x", "unknown ssh setting \"nosuch\""},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ck_assert_int_eq(hm_ssh_config_set(c, bad[i][0], bad[i][1], &err), HM_E_INVALID);
    ck_assert_msg(strstr(hm_error_message(err), bad[i][2]), "%s=%s: %s", bad[i][0], bad[i][1],
                  hm_error_message(err));
    hm_error_free(err);
    err = NULL;
  }
  /* A refused value leaves the old one. */
  ck_assert_str_eq(hm_ssh_config_get(c, "host"), "127.0.0.1");
  ck_assert_int_eq(hm_ssh_config_set(c, "host", NULL, NULL), 0);
  ck_assert_ptr_null(hm_ssh_config_get(c, "host"));
  hm_ssh_config_free(c);
}
END_TEST

START_TEST(test_config_validate_and_files) {
  hm_ssh_config *c = NULL, *back = NULL;
  hm_error *err = NULL;
  char *key = path_in("id"), *kh = path_in("known_hosts"), *json = path_in("ssh.json");
  write_file(key, "not really a key\n");
  write_file(kh, "");
  ck_assert_int_eq(hm_ssh_config_new(&c, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_validate(c, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "host is not set"));
  hm_error_free(err);
  err = NULL;
  hm_ssh_config_set(c, "host", "10.0.0.1", NULL);
  hm_ssh_config_set(c, "identity", "/nonexistent/key", NULL);
  ck_assert_int_eq(hm_ssh_config_validate(c, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "/nonexistent/key cannot be read"));
  hm_error_free(err);
  err = NULL;
  hm_ssh_config_set(c, "identity", key, NULL);
  ck_assert_int_eq(hm_ssh_config_validate(c, &err), HM_E_INVALID);
  ck_assert_ptr_nonnull(strstr(hm_error_message(err), "never accepts an unknown host key"));
  hm_error_free(err);
  err = NULL;
  hm_ssh_config_set(c, "knownHosts", kh, NULL);
  hm_ssh_config_set(c, "port", "2222", NULL);
  ck_assert_int_eq(hm_ssh_config_validate(c, NULL), 0);
  ck_assert_int_eq(hm_ssh_config_save(c, json, NULL), 0);
  struct stat st;
  ck_assert_int_eq(stat(json, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  ck_assert_int_eq(hm_ssh_config_load(&back, json, NULL), 0);
  ck_assert_str_eq(hm_ssh_config_get(back, "port"), "2222");
  ck_assert_str_eq(hm_ssh_config_get(back, "knownHosts"), kh);
  hm_ssh_config_free(back);
  back = NULL;
  /* Bad files: named, nothing half-loaded. */
  static const char *const files[][2] = {
      {"{\"host\": 5}", "must be a string"},         {"{\"port\": \"99999\"}", "number from 1"},
      {"{\"bogus\": \"1\"}", "unknown ssh setting"}, {"[1,2]", "not a JSON object"},
      {"{\"host\": ", "not a JSON object"},
  };
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    write_file(json, files[i][0]);
    ck_assert_int_eq(hm_ssh_config_load(&back, json, &err), HM_E_INVALID);
    ck_assert_ptr_null(back);
    ck_assert_msg(strstr(hm_error_message(err), files[i][1]) && strstr(hm_error_message(err), json),
                  "%s: %s", files[i][0], hm_error_message(err));
    hm_error_free(err);
    err = NULL;
  }
  unlink(json);
  ck_assert_int_eq(hm_ssh_config_load(&back, json, &err), HM_E_NOT_FOUND);
  hm_error_free(err);
  hm_ssh_config_free(c);
  unlink(key);
  unlink(kh);
  free(key);
  free(kh);
  free(json);
}
END_TEST

START_TEST(test_sh_quote) {
  /* Through a real shell: what it prints must be the string itself. */
  static const char *const words[] = {
      "plain",         "with space",        "it's", "'", "''", "a\"b$HOME`x`\\",
      "/mnt/odd, dir", "\xc3\xa9t\xc3\xa9", "-n"};
  char *out = path_in("quote.out");
  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
    char *q = hm_sh_quote(words[i]), *cmd = NULL;
    ck_assert_ptr_nonnull(q);
    ck_assert_int_ge(asprintf(&cmd, "printf %%s %s > %s", q, out), 0);
    ck_assert_int_eq(run(cmd), 0);
    FILE *f = fopen(out, "r");
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    ck_assert_str_eq(buf, words[i]);
    free(q);
    free(cmd);
  }
  unlink(out);
  free(out);
}
END_TEST

/* ---- host key verification against a real dropbear ------------------------------ */

static pid_t sshd_pid;
static int sshd_port;
static char host_pub[512], other_pub[512];

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof(a);
  bind(s, (struct sockaddr *)&a, sizeof(a));
  getsockname(s, (struct sockaddr *)&a, &l);
  close(s);
  return ntohs(a.sin_port);
}

/* "ssh-ed25519 AAAA..." of a dropbear key file. */
static void pub_line(const char *keyfile, char *out, size_t n) {
  char *cmd = NULL;
  ck_assert_int_ge(asprintf(&cmd, "dropbearkey -y -f %s | grep '^ssh-' | cut -d' ' -f1,2", keyfile),
                   0);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_nonnull(fgets(out, (int)n, p));
  pclose(p);
  out[strcspn(out, "\n")] = 0;
  free(cmd);
}

static int start_dropbear(void) {
  if (access("/usr/sbin/dropbear", X_OK) != 0)
    return 0;
  char *hk = path_in("host_key"), *ok = path_in("other_key"), *cmd = NULL;
  ck_assert_int_ge(asprintf(&cmd,
                            "dropbearkey -t ed25519 -f %s >/dev/null 2>&1 && "
                            "dropbearkey -t ed25519 -f %s >/dev/null 2>&1",
                            hk, ok),
                   0);
  ck_assert_int_eq(run(cmd), 0);
  free(cmd);
  pub_line(hk, host_pub, sizeof(host_pub));
  pub_line(ok, other_pub, sizeof(other_pub));
  sshd_port = free_port();
  char listen[64];
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", sshd_port);
  sshd_pid = fork();
  if (sshd_pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    execl("/usr/sbin/dropbear", "dropbear", "-F", "-E", "-s", "-p", listen, "-r", hk, NULL);
    _exit(127);
  }
  /* until it listens */
  for (int i = 0; i < 100; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)sshd_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = connect(s, (struct sockaddr *)&a, sizeof(a));
    close(s);
    if (c == 0)
      break;
    usleep(50000);
  }
  free(hk);
  free(ok);
  return 1;
}

static void stop_dropbear(void) {
  if (sshd_pid > 0) {
    kill(sshd_pid, SIGTERM);
    waitpid(sshd_pid, NULL, 0);
  }
  sshd_pid = 0;
}

/* hm_ssh_open against the dropbear with a client key it does not accept:
 * the outcome says how far it got (host key refused, or login refused). */
static int try_open(const char *known_hosts_line, const char *pin, char **msg) {
  hm_ssh_config *c = NULL;
  char *key = path_in("client"), *kh = path_in("kh"), *cmd = NULL, port[16];
  if (access(key, R_OK) != 0) {
    ck_assert_int_ge(asprintf(&cmd, "ssh-keygen -q -t ed25519 -N '' -f %s", key), 0);
    ck_assert_int_eq(run(cmd), 0);
    free(cmd);
  }
  snprintf(port, sizeof(port), "%d", sshd_port);
  char line[700];
  snprintf(line, sizeof(line), "[127.0.0.1]:%d %s\n", sshd_port,
           known_hosts_line ? known_hosts_line : "");
  write_file(kh, known_hosts_line ? line : "");
  hm_ssh_config_new(&c, NULL);
  hm_ssh_config_set(c, "host", "127.0.0.1", NULL);
  hm_ssh_config_set(c, "port", port, NULL);
  hm_ssh_config_set(c, "identity", key, NULL);
  hm_ssh_config_set(c, pin ? "fingerprint" : "knownHosts", pin ? pin : kh, NULL);
  ssh_session s = NULL;
  hm_error *err = NULL;
  int r = hm_ssh_open(&s, c, &err);
  *msg = strdup(err ? hm_error_message(err) : "");
  hm_error_free(err);
  hm_ssh_close(s);
  hm_ssh_config_free(c);
  free(key);
  free(kh);
  return r;
}

static char *fingerprint_of(const char *line) {
  char *b64 = strchr(line, ' ') + 1;
  ssh_key k = NULL;
  ck_assert_int_eq(ssh_pki_import_pubkey_base64(b64, SSH_KEYTYPE_ED25519, &k), SSH_OK);
  unsigned char *h = NULL;
  size_t hl = 0;
  ck_assert_int_eq(ssh_get_publickey_hash(k, SSH_PUBLICKEY_HASH_SHA256, &h, &hl), 0);
  char *f = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, h, hl);
  char *copy = strdup(f);
  ssh_string_free_char(f);
  ssh_clean_pubkey_hash(&h);
  ssh_key_free(k);
  return copy;
}

START_TEST(test_host_key_checks) {
  if (!start_dropbear()) {
    fprintf(stderr, "# no /usr/sbin/dropbear: host key checks not run\n");
    ck_abort_msg("dropbear-bin is not installed (tests/run.sh installs it)");
  }
  char *msg = NULL;
  /* Right key: verification passes; the login is what fails. */
  ck_assert_int_eq(try_open(host_pub, NULL, &msg), HM_E_AUTH);
  ck_assert_msg(strstr(msg, "login") && strstr(msg, "refused"), "%s", msg);
  free(msg);
  /* Another key for this host: CHANGED. */
  ck_assert_int_eq(try_open(other_pub, NULL, &msg), HM_E_AUTH);
  ck_assert_msg(strstr(msg, "CHANGED") && strstr(msg, "refusing"), "%s", msg);
  free(msg);
  /* Nothing known: unknown, with the key's fingerprint in the message. */
  char *fp = fingerprint_of(host_pub), *other_fp = fingerprint_of(other_pub);
  ck_assert_int_eq(try_open(NULL, NULL, &msg), HM_E_AUTH);
  ck_assert_msg(strstr(msg, "unknown host key") && strstr(msg, fp), "%s", msg);
  free(msg);
  /* Pinned fingerprint: right -> on to the login; wrong -> mismatch. */
  ck_assert_int_eq(try_open(NULL, fp, &msg), HM_E_AUTH);
  ck_assert_msg(strstr(msg, "login"), "%s", msg);
  free(msg);
  ck_assert_int_eq(try_open(NULL, other_fp, &msg), HM_E_AUTH);
  ck_assert_msg(strstr(msg, "mismatch") && strstr(msg, other_fp) && strstr(msg, fp), "%s", msg);
  free(msg);
  free(fp);
  free(other_fp);
  stop_dropbear();
  /* Nobody listening: not reachable, not an auth failure. */
  ck_assert_int_eq(try_open(host_pub, NULL, &msg), HM_E_NOT_READY);
  ck_assert_msg(strstr(msg, "cannot connect"), "%s", msg);
  free(msg);
}
END_TEST

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  Suite *s = suite_create("ssh");
  TCase *tc = tcase_create("ssh");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_config_values);
  tcase_add_test(tc, test_config_validate_and_files);
  tcase_add_test(tc, test_sh_quote);
  tcase_add_test(tc, test_host_key_checks);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  stop_dropbear();
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
  run(cmd);
  return failed ? 1 : 0;
}
