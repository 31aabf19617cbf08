/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest agent protocol codec (see docs/agent-protocol.md): one JSON object
 * per line. Shared by the host client and the agent, so both sides agree on
 * what is valid. Decoding is strict: an unknown op, a missing or wrongly typed
 * field, or a field the op does not define is an error naming it, because a
 * silently ignored field (say, "readonly" misspelt) would change behaviour.
 */
#ifndef HM_CORE_AGENT_PROTO_H
#define HM_CORE_AGENT_PROTO_H

#include "core/private.h"
#include "notify/notify.h"

#define HM_AGENT_PROTO_MAJOR 1
#define HM_AGENT_PROTO_MINOR 1 /* 1.1: boot_id in hello and list answers */
#define HM_AGENT_PORT_NAME "org.hotmount.agent.0"
#define HM_AGENT_NAME "hotmount-agent"
/* Longest request line the agent accepts, newline excluded. */
#define HM_AGENT_MAX_LINE (1024 * 1024)
/*
 * What the host accepts from the guest, which it does not trust (see
 * docs/security.md, "Guest input limits" for why these values). A longer answer line is
 * dropped without being buffered whole; a longer field fails the answer.
 * The largest honest answer is a list: 256 mounts at about 1 KiB each.
 */
#define HM_AGENT_MAX_ANSWER (256 * 1024)
/* Nesting of a JSON value: our deepest message is list -> mounts -> entry. */
#define HM_AGENT_MAX_DEPTH 4
#define HM_AGENT_MAX_MOUNTS 256
#define HM_AGENT_MAX_PATH 4096  /* target, source, options (PATH_MAX) */
#define HM_AGENT_MAX_ERROR 8192 /* an error text: a message plus a path or two */
#define HM_AGENT_MAX_NAME 64    /* agent name, version, capability, fstype */
#define HM_AGENT_MAX_CAPS 64    /* capabilities in a hello answer */
#define HM_AGENT_MAX_BOOT_ID 64 /* a boot id: a UUID is 36 */
/* Ids are integers 0..2^53 (exact in every JSON implementation). */
#define HM_AGENT_MAX_ID (INT64_C(1) << 53)
/* Longest mount wait a request may ask for. */
#define HM_AGENT_MAX_TIMEOUT_MS (10 * 60 * 1000)

#define HM_AGENT_OP_HELLO 1
#define HM_AGENT_OP_MOUNT 2
#define HM_AGENT_OP_UMOUNT 3
#define HM_AGENT_OP_LIST 4
#define HM_AGENT_OP_NOTIFY 5 /* capability "notify" */

typedef struct hm_agent_request {
  int64_t id;
  int op; /* HM_AGENT_OP_* */
  /* hello */
  int major, minor;
  /* mount */
  int type;      /* HM_TYPE_VIRTIOFS, HM_TYPE_9P or HM_TYPE_BIND */
  char *tag;     /* virtiofs: required; 9p: the mount's source name (the virtio-9p
                    mount_tag when there is no port) */
  char *port;    /* 9p only: the virtio-serial port of a trans=fd relay; absent: the
                    9p device is a virtio-9p-pci whose mount_tag is tag (trans=virtio) */
  char *source;  /* bind only (required there): the guest directory to bind-mount, inside a
                    boot-time virtiofs, 9p or drvfs share */
  char *target;  /* mount, umount */
  int readonly;  /* mount */
  char *options; /* mount; NULL when absent */
  int timeout_ms;
  /* umount */
  int lazy, force;
  /* notify (target: the mount point): at most HM_NOTIFY_MAX_BATCH events,
   * each path checked with hm_notify_path_check */
  hm_notify_event *events;
  size_t n_events;
} hm_agent_request;

/* One entry of a list answer. */
typedef struct hm_agent_mount_info {
  char *target;
  char *fstype;
  char *source;
  char *options;
} hm_agent_mount_info;

HM_PRIVATE void hm_agent_mount_info_free(hm_agent_mount_info *v, size_t n);

typedef struct hm_agent_response {
  int64_t id;
  int ok;
  /* ok == 0 */
  int err_no;  /* a Linux errno, > 0 */
  char *error; /* the agent's message */
  /* hello */
  int major, minor;
  char *agent_name, *agent_version;
  char **capabilities; /* NULL-terminated */
  /* list */
  hm_agent_mount_info *mounts;
  size_t n_mounts;
  /* hello and list, optional (since 1.1): the guest kernel's boot id, so the
   * host can tell a guest reboot from a guest-side unmount. */
  char *boot_id;
} hm_agent_response;

/* "hello", "mount", ...; NULL when unknown. */
HM_PRIVATE const char *hm_agent_op_name(int op);

/*
 * hm_agent_request_encode: *out = one malloc'd line ending in '\n'. Checks
 * that the fields the op needs are present (HM_E_INVALID otherwise).
 */
HM_PRIVATE int hm_agent_request_encode(char **out, const hm_agent_request *req, hm_error **err);

/*
 * hm_agent_request_decode: parses one line (without its newline; len bytes,
 * which must hold no NUL). On error returns HM_E_PROTOCOL (malformed) or
 * HM_E_UNSUPPORTED (unknown op) and, when the line had a usable integer id,
 * leaves it in out->id (else 0) so the agent can still answer it. Clear out
 * with hm_agent_request_clear in both cases.
 */
HM_PRIVATE int hm_agent_request_decode(hm_agent_request *out, const char *line, size_t len,
                                       hm_error **err);
HM_PRIVATE void hm_agent_request_clear(hm_agent_request *req);

/*
 * hm_agent_response_encode: *out = one line ending in '\n'. resp->ok selects
 * the success shape for op (hello: version, name, capabilities; list: mounts;
 * others: nothing) or the error shape {id, ok:false, errno, error}.
 */
HM_PRIVATE int hm_agent_response_encode(char **out, int op, const hm_agent_response *resp,
                                        hm_error **err);

/*
 * A response line parsed once: the reader thread parses it to learn the id
 * (who is waiting), and the waiter decodes the same parse for its op, so no
 * line is parsed twice. Lines over HM_AGENT_MAX_ANSWER or nested deeper
 * than HM_AGENT_MAX_DEPTH are refused.
 */
typedef struct hm_agent_msg hm_agent_msg;

/* hm_agent_msg_parse: *out = the parsed line, *id = its id. HM_E_PROTOCOL
 * for malformed lines and lines without a usable id (*out stays NULL). */
HM_PRIVATE int hm_agent_msg_parse(hm_agent_msg **out, int64_t *id, const char *line, size_t len,
                                  hm_error **err);
HM_PRIVATE void hm_agent_msg_free(hm_agent_msg *msg);

/* hm_agent_response_from_msg: strict decode of msg as a response to op,
 * with the size caps above. HM_E_PROTOCOL on any deviation. Clear out with
 * hm_agent_response_clear in all cases. */
HM_PRIVATE int hm_agent_response_from_msg(hm_agent_response *out, int op, const hm_agent_msg *msg,
                                          hm_error **err);

/* hm_agent_response_decode: hm_agent_msg_parse then hm_agent_response_from_msg. */
HM_PRIVATE int hm_agent_response_decode(hm_agent_response *out, int op, const char *line,
                                        size_t len, hm_error **err);
HM_PRIVATE void hm_agent_response_clear(hm_agent_response *resp);

#endif
