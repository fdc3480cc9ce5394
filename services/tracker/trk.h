/*
 * mm-tracker's private header: registration, broadcasts (ready, heartbeat,
 * stop) and discovery (lookup, list) on per-thread PostgreSQL and Redis
 * clients.
 */
#ifndef TRK_H
#define TRK_H

#include "mm/config.h"
#include "mm/http.h"
#include "mm/pg.h"
#include "mm/redis.h"
#include "mm/timer.h"

typedef struct trk_config {
    const char *listen;
    const char *database_url;
    const char *redis_url;
    int64_t presence_ttl;       /* seconds */
    int64_t heartbeat_interval; /* seconds; 0 = presence_ttl / 2 */
    int64_t threads;
    const char *log_level;
} trk_config_t;

extern const mm_cfg_entry_t trk_config_table[];
extern const size_t trk_config_table_len;

/* Per-thread state: each thread has its own store connections on its loop. */
typedef struct trk_thread {
    const trk_config_t *conf;
    mm_pg_t *pg;
    mm_redis_t *redis;
    mm_timer_t epoch_timer; /* thread 0 only: notices a Redis that lost its data */
    int restoring;
} trk_thread_t;

/* trk_routes.c */
extern const mm_route_t trk_routes[];
extern const size_t trk_routes_len;

/* trk_register.c */
void trk_register(h2o_req_t *req, mm_thread_t *thread);

/* trk_candidates.c */
/* Builds the candidate list of a broadcast from the peer's `addresses`
 * (a JSON array, already checked to be one, of at most 16 entries), its
 * `port` and the IP the gateway observed (NULL or "" when none). Returns 0
 * with a new array in *out, or -EINVAL with `p` saying which entry is wrong. */
int trk_candidates_build(json_t *addresses, int64_t port, const char *observed_ip, json_t **out, mm_problem_t *p);

/* trk_broadcast.c */
void trk_ready(h2o_req_t *req, mm_thread_t *thread);
void trk_heartbeat(h2o_req_t *req, mm_thread_t *thread);
void trk_stop(h2o_req_t *req, mm_thread_t *thread);

/* trk_lookup.c */
void trk_lookup(h2o_req_t *req, mm_thread_t *thread);
void trk_list(h2o_req_t *req, mm_thread_t *thread);

/* trk_presence.c — the Redis side of broadcasts (key space in docs/architecture.md) */
#define TRK_PRESENCE_PREFIX "mm:presence:"
#define TRK_DEADLINES_KEY "mm:presence:deadlines"
#define TRK_EPOCH_KEY "mm:epoch"
#define TRK_EPOCH_LOCK_KEY "mm:epoch:restoring"
/* mm-bootstrap's keys: a broadcast that stops ends the peer's bootstrap membership too. */
#define TRK_BOOTSTRAP_PREFIX "mm:bootstrap:"
#define TRK_BOOTSTRAP_NODES_KEY "mm:bootstrap:nodes"
#define TRK_BOOTSTRAP_DEADLINES_KEY "mm:bootstrap:deadlines"
/* "mm:presence:<peer_id>" into `buf` (at least 80 bytes). */
const char *trk_presence_key(char *buf, const char *peer_id);
/* Starts watching for a Redis that lost its data (call on thread 0): on
 * every connect and every second, a missing marker key (mm:epoch) tells
 * that this Redis is new; the tracker that takes the restore lock restores
 * presence, with a full TTL, for every broadcast PostgreSQL holds, and then
 * sets the marker. */
void trk_presence_watch(trk_thread_t *t);
void trk_presence_unwatch(trk_thread_t *t);
/* The Lua scripts (EVAL) used by the handlers. */
extern const char trk_lua_ready[], trk_lua_heartbeat[], trk_lua_observed[], trk_lua_stop[], trk_lua_read[];

#endif
