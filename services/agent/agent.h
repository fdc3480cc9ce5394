/*
 * mm, the client agent (SPEC §5): a command line over the gateway's API
 * and a small daemon (`mm up`) with a peer server. Private header of
 * services/agent; one section per file.
 *
 * Conventions: functions return 0 or a negative errno and fill an
 * agent_err_t, whose code and message reach the user as they are ("what
 * happened; what to do"). Commands return the process exit code: 0, 1 (an
 * error the message explains) or 2 (bad usage).
 */
#ifndef AGENT_H
#define AGENT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include "mm/addr.h"
#include "mm/base.h"
#include "mm/identity.h"

#define AGENT_EXIT_OK 0
#define AGENT_EXIT_ERROR 1
#define AGENT_EXIT_USAGE 2

#define AGENT_DEFAULT_SERVER "https://localhost:8443"
#define AGENT_DEFAULT_PORT 7470
#define AGENT_MAX_ADDRS 16 /* the tracker takes at most 16 addresses (SPEC §3.1) */

/* ---- agent_cli.c: arguments, output, errors, help ----------------------- */

typedef struct agent_err {
    char code[48];  /* snake_case code for --json, e.g. "server_unreachable" */
    char msg[1024]; /* what happened, and what to do */
} agent_err_t;

void agent_err_set(agent_err_t *err, const char *code, const char *fmt, ...) MM_PRINTF(3, 4);

/* Everything any command accepts; each command lists the options it takes. */
typedef struct agent_args {
    const char *cmd;
    int json, help, force, public_, bootstrap, sequential;
    const char *email, *name, *server, *server_ca, *share, *output;
    const char *stun; /* --stun HOST[:PORT] */
    int64_t port;     /* -1: not given */
    int64_t stun_alt; /* --stun-alt PORT; -1: not given */
    double timeout_s;
    const char **allow, **advertise;
    size_t nallow, nadvertise;
    const char *pos[4]; /* positional arguments after the command */
    size_t npos;
} agent_args_t;

typedef struct agent_cmd {
    const char *name;
    int (*fn)(agent_args_t *args);
    const char *options; /* space-separated long option names it accepts, besides json/help/server */
    size_t min_pos, max_pos;
    const char *synopsis; /* one line */
    const char *help;     /* description and examples */
} agent_cmd_t;

/* Parses argv (after the command word) into `args`. Returns 0, or 2 after
 * printing a usage error. */
int agent_cli_parse(const agent_cmd_t *cmd, int argc, char **argv, agent_args_t *args);
void agent_cli_free(agent_args_t *args);
void agent_cli_usage(FILE *fp, const agent_cmd_t *cmds, size_t n);
void agent_cli_cmd_help(FILE *fp, const agent_cmd_t *cmd);
/* A usage error of `cmd` (NULL: of mm itself): prints it, returns 2. */
int agent_cli_usage_error(const agent_args_t *args, const char *fmt, ...) MM_PRINTF(2, 3);

/* Output. With --json every command prints one JSON object on stdout
 * (`mm up` one per event), with "ok": true or false first. */
void agent_out_init(int json);
int agent_out_json(void);
/* Prints `obj` (stolen) with "ok": true first; returns 0. */
int agent_out_ok(json_t *obj);
/* Prints the error (JSON on stdout, or "mm: message" on stderr); returns 1. */
int agent_out_error(const agent_err_t *err);
/* A human line on stdout (nothing with --json). Thread-safe. */
void agent_out_line(const char *fmt, ...) MM_PRINTF(1, 2);
/* An event of `mm up`: JSON line {"event": name, ...fields} with --json,
 * else `human` on stdout. Steals `fields` (may be NULL). Thread-safe. */
void agent_out_event(const char *name, json_t *fields, const char *human_fmt, ...) MM_PRINTF(3, 4);

/* ---- agent_config.c: XDG paths, config file, server resolution ----------- */

typedef struct agent_paths {
    char config_dir[PATH_MAX]; /* $XDG_CONFIG_HOME/matchmaker */
    char cache_dir[PATH_MAX];  /* $XDG_CACHE_HOME/matchmaker */
    char key[PATH_MAX], cert[PATH_MAX], config[PATH_MAX], server_ca[PATH_MAX];
    char winners[PATH_MAX], lock[PATH_MAX];
} agent_paths_t;

typedef struct agent_conf {
    agent_paths_t paths;
    char email[MM_EMAIL_MAX + 1];
    char name[129];
    char peer_id[MM_PEER_ID_LEN + 1];
    char server[1024];      /* resolved: --server, MM_SERVER, the config file, the default */
    char ca_file[PATH_MAX]; /* resolved: MM_CA_FILE, the pinned CA, "" for the system store */
} agent_conf_t;

int agent_paths_init(agent_paths_t *p, agent_err_t *err);
/* Loads an initialised identity (mm init) and resolves server and CA.
 * `server_flag` is --server or NULL. */
int agent_conf_load(agent_conf_t *c, const char *server_flag, agent_err_t *err);
/* Writes config.json ({"email","name","server"}); 0600. */
int agent_conf_save(const agent_paths_t *p, const char *email, const char *name, const char *server, agent_err_t *err);
/* mkdir -p with mode 0700 for what it creates. */
int agent_mkdirs(const char *path, agent_err_t *err);
/* Writes `len` bytes to `path` through a temporary file and rename(2), mode
 * `mode` from creation on (never world-readable in between). */
int agent_write_atomic(const char *path, const void *data, size_t len, mode_t mode, agent_err_t *err);
/* The cached last winner for `peer_id` ("ip:port") into `out` (64 bytes): 0 or -ENOENT. */
int agent_cache_winner_get(const agent_paths_t *p, const char *peer_id, char *out);
int agent_cache_winner_put(const agent_paths_t *p, const char *peer_id, const char *addr, agent_err_t *err);

/* mm up's single-instance lock (an fcntl lock on paths.lock, which holds
 * the pid). Take: the fd to keep open while running, or -EBUSY with
 * *holder set. Holder: the pid of a running mm up, or 0. */
int agent_lock_take(const agent_paths_t *p, pid_t *holder, agent_err_t *err);
pid_t agent_lock_holder(const agent_paths_t *p);

/* ---- agent_cert.c: mm init ----------------------------------------------- */

/* Makes an EC P-256 key and a self-signed certificate carrying `email` in
 * subjectAltName; writes them to key_path (0600) and cert_path (0600). */
int agent_cert_create(const char *email, const char *name, const char *key_path, const char *cert_path, mm_identity_t *id,
                      agent_err_t *err);
int agent_cmd_init(agent_args_t *args);

/* ---- agent_api.c: the libcurl client to the gateway ---------------------- */

typedef struct agent_api agent_api_t;

typedef struct agent_reply {
    long status;       /* HTTP status, 0 when no answer */
    json_t *body;      /* the parsed body, or NULL when it was not JSON */
    long retry_after;  /* seconds from Retry-After, or 0 */
    const char *error; /* the error code of an error answer, or NULL (points into body) */
    const char *message;
} agent_reply_t;

/* One reusable connection (HTTP/2 when the server offers it) with the
 * agent's certificate. Not thread-safe: one per thread. */
agent_api_t *agent_api_new(const agent_conf_t *conf, agent_err_t *err);
void agent_api_free(agent_api_t *api); /* NULL-safe */
/* `fn(data)` is polled during requests; non-zero cancels the one in progress (error code "cancelled"). */
void agent_api_set_abort(agent_api_t *api, int (*fn)(void *data), void *data);
/* Limits the whole of each request to `ms` milliseconds (default 15 s). */
void agent_api_set_timeout(agent_api_t *api, long ms);
/* Sends `method` `path` with `body` (borrowed; NULL: none). Returns 0 when
 * an HTTP answer came (any status; release it with agent_reply_clear), or
 * -1 when none did, with err set (server_unreachable, server_untrusted). */
int agent_api_call(agent_api_t *api, const char *method, const char *path, json_t *body, agent_reply_t *reply, agent_err_t *err);
void agent_reply_clear(agent_reply_t *reply);
/* How long the last request took from the moment it was sent (after any
 * connect and TLS handshake) to its answer, in ms: one round trip plus the
 * server's time. */
double agent_api_last_rtt_ms(agent_api_t *api);
/* Turns an error answer into err, with advice for the codes a user meets. */
void agent_api_error(const agent_reply_t *reply, agent_err_t *err);
/* GET lookup?email= (or peer_id=); 0 with *peer (new reference), or -1 with err (code not_found when offline). */
int agent_api_lookup(agent_api_t *api, const char *param, const char *value, json_t **peer, agent_err_t *err);
/* The URL-encoded form of `s` (malloc'ed). */
char *agent_api_escape(const char *s);

/* ---- agent_server_cmds.c: commands that only talk to the server ---------- */

int agent_cmd_register(agent_args_t *args);
int agent_cmd_lookup(agent_args_t *args);
int agent_cmd_peers(agent_args_t *args);
int agent_cmd_down(agent_args_t *args);

/* ---- agent_punch_cmd.c: UDP hole punching (more in agent_punch.h) ------- */

int agent_cmd_stun(agent_args_t *args);
int agent_cmd_punch(agent_args_t *args);

/* ---- agent_addrs.c: the machine's addresses ------------------------------ */

typedef struct agent_iface {
    mm_addr_t addr;  /* port 0 */
    unsigned prefix; /* netmask length */
    char name[32];
} agent_iface_t;

/* The unicast IPv4 and IPv6 addresses of every interface that is up: no
 * loopback unless there is nothing else, no IPv6 link-local (useless without
 * a zone index, which the tracker refuses), sorted, at most `max`. With
 * `all`, loopback and link-local are kept (for subnet matching). Returns
 * the count, or a negative errno. */
int agent_addrs_list(agent_iface_t *out, size_t max, int all);

/* ---- agent_order.c: candidate ordering (pure) ---------------------------- */

typedef enum agent_cand_class {
    AGENT_CLASS_CACHED = 0,  /* the cached last winner */
    AGENT_CLASS_SAME_SUBNET, /* on a subnet of one of our interfaces (loopback included) */
    AGENT_CLASS_PRIVATE,     /* other private or link-local addresses */
    AGENT_CLASS_PUBLIC6,
    AGENT_CLASS_PUBLIC4,
    AGENT_CLASS_SKIP, /* IPv6 link-local: unreachable without a zone index */
} agent_cand_class_t;

typedef struct agent_cand {
    mm_addr_t addr; /* with port */
    int observed;   /* source "observed" */
    agent_cand_class_t cls;
    size_t rank; /* position in the tracker's list, for stable order */
} agent_cand_t;

/* 1 when `a` lies in the subnet of `iface`. */
int agent_order_same_subnet(const mm_addr_t *a, const agent_iface_t *iface);
/* Classifies and sorts `c` in place: cached winner (`cached`, "ip:port",
 * may be NULL; an IP match counts when no ip:port matches), same subnet,
 * other private, public IPv6, public IPv4, each in the tracker's order;
 * drops AGENT_CLASS_SKIP entries and duplicates. Returns the new count. */
size_t agent_order(agent_cand_t *c, size_t n, const agent_iface_t *ifaces, size_t nifaces, const char *cached);
/* Reads a peer record's "candidates" into `out` (at most `max`); returns the count. */
size_t agent_order_from_json(json_t *record, agent_cand_t *out, size_t max);
/* "ip:port" or "[v6]:port" into buf (64 bytes). */
const char *agent_addr_str(const mm_addr_t *a, char *buf);
const char *agent_class_name(agent_cand_class_t c);

/* ---- agent_connect.c: Happy Eyeballs to a peer (RFC 8305) --------------- */

typedef struct agent_he_opts {
    uint64_t stagger_ms;         /* 250: delay between attempt starts */
    uint64_t timeout_ms;         /* the whole connect */
    int sequential;              /* one attempt at a time (for comparison) */
    uint64_t attempt_timeout_ms; /* sequential mode: per attempt */
} agent_he_opts_t;

typedef struct agent_attempt {
    char addr[64];
    const char *result; /* "verified", "refused", "timeout", "tls_failed", "wrong_peer", "not_started", ... */
    char detail[160];
    uint64_t start_ms, end_ms; /* from the start of the connect */
} agent_attempt_t;

/* A client SSL_CTX presenting the agent's certificate; the server's
 * certificate is checked by its SPKI hash (peer_id), not by a CA. */
SSL_CTX *agent_tls_client_ctx(const agent_conf_t *conf, agent_err_t *err);
/* Tries `c[0..n)` in order, a new attempt every stagger_ms (or at once when
 * one fails), and keeps the first whose TLS certificate's SPKI hashes to
 * `peer_id`. Blocks up to timeout_ms. Returns the winner's index, or -1 with
 * err set; `att` (n entries) records each attempt. */
int agent_he_connect(SSL_CTX *ctx, const char *peer_id, const agent_cand_t *c, size_t n, const agent_he_opts_t *o,
                     agent_attempt_t *att, agent_err_t *err);

/* What connect found: used by connect, ls and get. */
typedef struct agent_peer_conn {
    char email[MM_EMAIL_MAX + 1];
    char peer_id[MM_PEER_ID_LEN + 1];
    char addr[64]; /* the winner, "ip:port" / "[v6]:port" */
    uint64_t lookup_ms, connect_ms;
    int from_cache; /* the winner was the cached one */
    json_t *attempts;
} agent_peer_conn_t;

/* The options of connect, ls and get: 250 ms stagger, --timeout (10 s), --sequential (2 s per attempt). */
void agent_he_defaults(agent_he_opts_t *o, const agent_args_t *args);
/* Looks `email` up, orders its candidates, races them, caches the winner. */
int agent_connect_peer(agent_conf_t *conf, const char *email, const agent_he_opts_t *o, agent_peer_conn_t *pc, agent_err_t *err);
void agent_peer_conn_clear(agent_peer_conn_t *pc);
int agent_cmd_connect(agent_args_t *args);

/* ---- agent_fetch.c: mm ls and mm get -------------------------------------- */

int agent_cmd_ls(agent_args_t *args);
int agent_cmd_get(agent_args_t *args);

/* ---- agent_files.c: the shared folder (pure, no HTTP) --------------------- */

typedef struct agent_share {
    int root_fd;         /* O_PATH|O_DIRECTORY of the resolved root */
    char root[PATH_MAX]; /* realpath of DIR */
} agent_share_t;

int agent_share_open(agent_share_t *s, const char *dir, agent_err_t *err);
void agent_share_close(agent_share_t *s);
/* Checks a relative path from a request: '/'-separated, empty components
 * ignored, no "." or ".." component, no NUL; writes the clean form ("" for
 * the root, else "a/b") to `out`. 0 or -EINVAL. */
int agent_files_clean(const char *in, size_t len, char *out, size_t size);
/* Opens `rel` (clean) inside the share: every symlink is resolved, and the
 * result must lie inside the root; then the resolved path is opened
 * component by component with O_NOFOLLOW, so a symlink swapped in between
 * fails closed. `want_dir`: 1 directory, 0 regular file. Returns an fd, or
 * -ENOENT (absent, or not of the wanted type), -EACCES (leads outside the share). */
int agent_files_open(const agent_share_t *s, const char *rel, int want_dir);
/* Lists the directory `fd` (consumed) as {"path", "entries": [{"name","type","size","mtime"}]}.
 * Symlinks are shown as their target when it lies inside the share, else left out. */
json_t *agent_files_list(const agent_share_t *s, int fd, const char *rel);

typedef struct agent_range {
    uint64_t first, last; /* inclusive */
} agent_range_t;
/* Parses a Range header against `size`: 0 with *r (one satisfiable range),
 * 1 to ignore it (absent, several ranges, another unit: send all), -1
 * unsatisfiable (416). */
int agent_files_range(const char *hdr, size_t len, uint64_t size, agent_range_t *r);
/* A strong ETag for the file described by `st` into buf (64 bytes). */
struct stat;
const char *agent_files_etag(const struct stat *st, char *buf);

/* ---- agent_up.c / agent_peer.c / agent_beacon.c / agent_resolver.c ------ */

typedef struct agent_up agent_up_t;
int agent_cmd_up(agent_args_t *args);

#endif
