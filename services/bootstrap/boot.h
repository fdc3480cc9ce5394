/*
 * mm-bootstrap's private header: the bootstrap registry (SPEC §3.2).
 * Broadcasting peers volunteer as entry points of the peers' gossip network
 * (register, unregister); newcomers ask for a random few (discover).
 *
 * A membership lives in both stores. PostgreSQL (bootstrap_nodes) holds
 * what it says (gossip port, the address the connect test reached); Redis
 * holds whether it is alive: mm:bootstrap:<peer_id> with a TTL, a member of
 * the set mm:bootstrap:nodes (for O(limit) sampling) and of the deadline
 * index mm:bootstrap:deadlines (for mm-reaper). A node is live while its
 * membership key AND its presence key exist, so it disappears the moment
 * either expires, before any cleanup has run.
 */
#ifndef BOOT_H
#define BOOT_H

#include "mm/addr.h"
#include "mm/config.h"
#include "mm/http.h"
#include "mm/pg.h"
#include "mm/redis.h"

typedef struct boot_config {
    const char *listen;
    const char *database_url;
    const char *redis_url;
    int64_t ttl;              /* s: MM_BOOTSTRAP_TTL */
    int64_t probe_timeout_ms; /* the connect test's whole budget */
    int64_t threads;
    const char *log_level;
} boot_config_t;

extern const mm_cfg_entry_t boot_config_table[];
extern const size_t boot_config_table_len;

/* Per-thread state: each thread has its own store connections on its loop,
 * and the connect tests it runs (cancelled when the thread stops) with the
 * loop timeouts they share: h2o 2.2 keeps a list of fixed-period timeouts
 * per loop, so a test links entries into these rather than owning a
 * timeout it could not free from its own callback. */
typedef struct boot_thread {
    const boot_config_t *conf;
    h2o_loop_t *loop;
    mm_pg_t *pg;
    mm_redis_t *redis;
    h2o_linklist_t probes;
    size_t nprobes;
    h2o_timeout_t probe_budget;  /* MM_BOOTSTRAP_PROBE_TIMEOUT_MS */
    h2o_timeout_t probe_stagger; /* BOOT_PROBE_STAGGER_MS */
    h2o_timeout_t probe_soon;    /* 0: the next loop iteration */
} boot_thread_t;

/* boot_routes.c */
extern const mm_route_t boot_routes[];
extern const size_t boot_routes_len;

/* boot_register.c */
void boot_register(h2o_req_t *req, mm_thread_t *thread);
void boot_unregister(h2o_req_t *req, mm_thread_t *thread);

/* boot_discover.c */
#define BOOT_DISCOVER_DEFAULT 8
#define BOOT_DISCOVER_MAX 50
void boot_discover(h2o_req_t *req, mm_thread_t *thread);
/* Draws a uniformly random sample of up to `limit` live nodes other than
 * `caller` (Redis, O(limit)), then their records (PostgreSQL), and calls
 * `done` once, from the loop, never inside this call: status 0 with a new
 * JSON array of node records; -EACCES when `caller` is not registered
 * (with `check_caller`); -ENOTCONN when a store failed. Returns 0, or
 * -ENOTCONN when a store is down (done will not run). `caller` is copied. */
typedef void (*boot_sample_cb)(int status, json_t *nodes, void *data);
int boot_sample(boot_thread_t *t, const char *caller, int limit, int check_caller, boot_sample_cb done, void *data);

/* boot_probe.c — the connect test */
#define BOOT_PROBE_MAX 17 /* a broadcast's 16 addresses and its observed one */
/* Connect tests a thread runs at once, at most (each holds up to
 * BOOT_PROBE_MAX sockets for up to the timeout): beyond, register answers
 * 503 and the client retries later, rather than the process running out of
 * file descriptors. */
#define BOOT_PROBES_INFLIGHT_MAX 256
/* `result` 0 with the address that answered ("ip:port", "[v6]:port"), or
 * -ETIMEDOUT when none did in time, -ECONNREFUSED when every one refused
 * sooner, -ECANCELED when the thread stops first. */
typedef void (*boot_probe_cb)(int result, const char *address, void *data);
/* Opens TCP connections to `port` on `targets` (in order of preference:
 * each starts BOOT_PROBE_STAGGER_MS after the previous one, or as soon as
 * it fails) and reports the first that connects; the whole test takes at
 * most the configured timeout and never blocks the loop. Every connection
 * is closed without sending anything. `cb` runs exactly once, from the
 * loop, never inside this call. Returns 0, -EINVAL when `n` is 0 or above
 * BOOT_PROBE_MAX, or -EAGAIN when the thread already runs
 * BOOT_PROBES_INFLIGHT_MAX tests (cb will not run). */
#define BOOT_PROBE_STAGGER_MS 250
int boot_probe_start(boot_thread_t *t, const mm_addr_t *targets, size_t n, uint16_t port, boot_probe_cb cb, void *data);
/* The addresses of a broadcast to test, from its candidates (JSON text as
 * stored in broadcasts.candidates), in order: the observed ones first, then
 * the reported public ones, one per IP; reported private, loopback and
 * link-local ones are left out (see docs/architecture.md). Fills `out`
 * (BOOT_PROBE_MAX entries) and returns how many. */
size_t boot_probe_targets(const char *candidates, mm_addr_t *out);
/* Sets up the thread's probe timeouts (before the first test). */
void boot_probe_init(boot_thread_t *t);
/* Cancels every test of the thread (each cb gets -ECANCELED) and releases
 * the timeouts. */
void boot_probe_dispose(boot_thread_t *t);

/* boot_membership.c — the Redis side (key space in docs/architecture.md) */
#define BOOT_MEMBERSHIP_PREFIX "mm:bootstrap:"
#define BOOT_NODES_KEY "mm:bootstrap:nodes"
#define BOOT_DEADLINES_KEY "mm:bootstrap:deadlines"
#define BOOT_PRESENCE_PREFIX "mm:presence:"
/* "mm:bootstrap:<peer_id>" / "mm:presence:<peer_id>" into `buf` (at least 80 bytes). */
const char *boot_membership_key(char *buf, const char *peer_id);
const char *boot_presence_key(char *buf, const char *peer_id);
extern const char boot_lua_status[], boot_lua_join[], boot_lua_leave[], boot_lua_sample[];

/* A node drawn by the sample, from its membership value. */
typedef struct boot_drawn {
    char peer_id[65];
    int gossip_port;
    char reachable[64];
} boot_drawn_t;
/* Parses a membership value "<gossip port> <tested address>" (`len` bytes)
 * into the port and the address (NUL-terminated, `size` bytes at most).
 * Returns 0 or -EINVAL. */
int boot_membership_parse(const char *value, size_t len, int *gossip_port, char *reachable, size_t size);
/* Puts `drawn` in a uniformly random order (Fisher-Yates). Redis gives a
 * random set in its hash order; the answer takes the first `limit`. */
void boot_shuffle(boot_drawn_t *drawn, size_t n);

/* A node's candidates as discover shows them: the broadcast's candidates
 * (JSON text from PostgreSQL) with the gossip port, one per IP, the address
 * that passed the connect test first. Returns a new array (empty when
 * `candidates` is not a JSON array). */
json_t *boot_node_candidates(const char *candidates, int gossip_port, const char *reachable);

#endif
