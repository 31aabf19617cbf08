/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotmount-agent: the guest side of libhotmount. Runs as root in the Linux
 * guest, reads newline-delimited JSON requests from the virtio-serial port
 * org.hotmount.agent.0 and performs mounts with mount(2) (see
 * docs/agent-protocol.md). Logs to stderr, which is the guest console.
 */
#include "agent/agent.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void log_stderr(int level, const char *message, void *user_data) {
  static const char *const names[] = {[HM_LOG_ERROR] = "error",
                                      [HM_LOG_WARNING] = "warning",
                                      [HM_LOG_INFO] = "info",
                                      [HM_LOG_DEBUG] = "debug"};
  const char *name = level >= 0 && level <= HM_LOG_DEBUG && names[level] ? names[level] : "log";
  int64_t t = hm_now_ms();
  /* One fprintf per line: stdio locks the stream, so threads do not interleave. */
  fprintf(stderr, "[%5lld.%03lld] hotmount-agent: %s: %s\n", (long long)(t / 1000),
          (long long)(t % 1000), name, message);
}

static void usage(FILE *f) {
  fprintf(f, "Usage: hotmount-agent [OPTION]...\n"
             "Guest agent of libhotmount: mounts host directories on request.\n\n"
             "  --port NAME        virtio-serial port name (default " HM_AGENT_PORT_NAME ")\n"
             "  --socket PATH      test mode: listen on a unix socket instead of the port\n"
             "  --log-level LEVEL  error, warning, info (default) or debug\n"
             "  --retry-interval MS  wait for devices by retrying every MS instead of on\n"
             "                     uevents (for comparison benchmarks only)\n"
             "  --relay-splice     9p relays splice to the port instead of copying\n"
             "                     (for comparison benchmarks only)\n"
             "  --delay-mount MS   wait MS before carrying out each valid mount request\n"
             "                     (for tests only: plays a slow guest)\n"
             "  --bind-test-fstype TYPE  also take TYPE mounts as shares a bind mount may\n"
             "                     come from (for tests only: e.g. tmpfs)\n"
             "  --version          print the version and exit\n"
             "  --help             print this help and exit\n");
}

static int parse_level(const char *s) {
  if (strcmp(s, "error") == 0)
    return HM_LOG_ERROR;
  if (strcmp(s, "warning") == 0)
    return HM_LOG_WARNING;
  if (strcmp(s, "info") == 0)
    return HM_LOG_INFO;
  if (strcmp(s, "debug") == 0)
    return HM_LOG_DEBUG;
  return -1;
}

int main(int argc, char **argv) {
  enum {
    OPT_PORT = 1,
    OPT_SOCKET,
    OPT_LOG_LEVEL,
    OPT_RETRY,
    OPT_DELAY_MOUNT,
    OPT_RELAY_SPLICE,
    OPT_BIND_TEST_FSTYPE,
    OPT_VERSION,
    OPT_HELP
  };
  static const struct option opts[] = {
      {"port", required_argument, NULL, OPT_PORT},
      {"socket", required_argument, NULL, OPT_SOCKET},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"retry-interval", required_argument, NULL, OPT_RETRY},
      {"delay-mount", required_argument, NULL, OPT_DELAY_MOUNT},
      {"relay-splice", no_argument, NULL, OPT_RELAY_SPLICE},
      {"bind-test-fstype", required_argument, NULL, OPT_BIND_TEST_FSTYPE},
      {"version", no_argument, NULL, OPT_VERSION},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  const char *port = HM_AGENT_PORT_NAME, *socket_path = NULL;
  int level = HM_LOG_INFO;
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    switch (c) {
    case OPT_PORT: port = optarg; break;
    case OPT_SOCKET: socket_path = optarg; break;
    case OPT_LOG_LEVEL:
      if ((level = parse_level(optarg)) < 0) {
        fprintf(stderr, "hotmount-agent: unknown log level '%s'\n", optarg);
        return 2;
      }
      break;
    case OPT_RETRY: {
      char *end;
      long ms = strtol(optarg, &end, 10);
      if (*end || end == optarg || ms < 1 || ms > 60000) {
        fprintf(stderr, "hotmount-agent: --retry-interval takes 1..60000 ms, not '%s'\n", optarg);
        return 2;
      }
      agent_retry_interval_ms = (int)ms;
      break;
    }
    case OPT_DELAY_MOUNT: {
      char *end;
      long ms = strtol(optarg, &end, 10);
      if (*end || end == optarg || ms < 0 || ms > 600000) {
        fprintf(stderr, "hotmount-agent: --delay-mount takes 0..600000 ms, not '%s'\n", optarg);
        return 2;
      }
      agent_delay_mount_ms = (int)ms;
      break;
    }
    case OPT_RELAY_SPLICE: agent_relay_splice = 1; break;
    case OPT_BIND_TEST_FSTYPE: agent_bind_test_fstype = optarg; break;
    case OPT_VERSION:
      printf("%s %s (protocol %d.%d)\n", HM_AGENT_NAME, HM_VERSION_STRING, HM_AGENT_PROTO_MAJOR,
             HM_AGENT_PROTO_MINOR);
      return 0;
    case OPT_HELP: usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "hotmount-agent: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }

  /* Before any thread exists, so every thread inherits the mask: SIGIO (port
   * open/close notices) is read from a signalfd, never delivered. Writes to a
   * gone peer must fail with EPIPE, not kill the agent. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGIO);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stderr, NULL, _IOLBF, 0);
  hm_set_log_callback(log_stderr, level, NULL, NULL);
  hm_info("%s %s starting (protocol %d.%d)", HM_AGENT_NAME, HM_VERSION_STRING, HM_AGENT_PROTO_MAJOR,
          HM_AGENT_PROTO_MINOR);

  return socket_path ? agent_run_socket(socket_path) : agent_run_port(port);
}
