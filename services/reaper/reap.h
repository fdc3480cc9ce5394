/*
 * mm-reaper's private header. Presence and bootstrap membership are Redis
 * keys with TTLs (SPEC §4); the reaper turns their expiry into PostgreSQL:
 * when a presence key expires it deletes the broadcast row (and the peer's
 * bootstrap membership) and writes one `offline` event; when a membership
 * key expires it deletes the bootstrap_nodes row and writes one
 * `bootstrap_off` event.
 *
 * Three ways find expired keys, fastest first:
 *   event    — Redis's `expired` keyspace notifications (a hint: Redis sends
 *              them only when it notices an expiry, and drops them while
 *              nobody listens);
 *   deadline — each kind's index of deadlines (mm:presence:deadlines,
 *              mm:bootstrap:deadlines: member peer_id, score = expiry in unix
 *              ms), kept by the writers, polled every MM_REAPER_POLL_MS;
 *   sweep    — every MM_SWEEP_INTERVAL s and on every reconnect, every row
 *              of each kind's table against Redis, by whichever copy holds
 *              the lock.
 * All three feed one pipeline (reap_ids), the same for every kind (a row
 * of reap_kinds[]), which is idempotent: copies may race, a key is reaped
 * once and gets one event.
 */
#ifndef REAP_H
#define REAP_H

#include "mm/config.h"
#include "mm/http.h"
#include "mm/metrics.h"
#include "mm/pg.h"
#include "mm/redis.h"
#include "mm/timer.h"

typedef struct reap_config {
    const char *listen;
    const char *database_url;
    const char *redis_url;
    int64_t sweep_interval; /* s */
    int64_t poll_ms;
    int64_t batch;
    const char *log_level;
} reap_config_t;

extern const mm_cfg_entry_t reap_config_table[];
extern const size_t reap_config_table_len;

typedef enum reap_reason { REAP_EVENT, REAP_DEADLINE, REAP_SWEEP, REAP_REASONS } reap_reason_t;

/* What is reaped: a per-peer Redis key with a TTL, the deadline index its
 * writers keep beside it, and the PostgreSQL rows that mirror it. */
typedef enum reap_kind_id { REAP_PRESENCE, REAP_BOOTSTRAP, REAP_KINDS } reap_kind_id_t;

typedef struct reap_kind {
    const char *name;      /* "presence", "bootstrap": for log lines */
    const char *metric;    /* infix of its metric names: "" (mm_reaper_reaped_total), "bootstrap_" */
    const char *what;      /* "broadcasts", "bootstrap memberships": for help texts and log lines */
    const char *prefix;    /* the key is prefix + peer_id */
    const char *deadlines; /* its deadline index */
    const char *set;       /* a set of ids that a reaped id leaves too, or NULL */
    int ends;              /* a kind that ends with this one (its key goes, its deadline falls due), or -1 */
    /* $1: peer ids (text[]) -> (peer_id, version) of their rows */
    const char *sql_versions;
    /* $1 ids, $2 versions, $3 deadlines (ms, 0: unknown), $4 reason: deletes the
     * rows still at that version with their events; returns their deadlines */
    const char *sql_reap;
    /* $1 after, $2 limit: a page of peer ids with a row, in order (the sweep) */
    const char *sql_page;
} reap_kind_t;

extern const reap_kind_t reap_kinds[REAP_KINDS];

/* One kind's work in progress and its metrics. */
typedef struct reap_lane {
    struct reap *rp;
    const reap_kind_t *kind;
    /* event ids waiting for the next batch */
    char (*pending)[65];
    size_t npending, cpending;
    int busy; /* a deadline/event batch is in the pipeline (2: a full batch of deadlines) */
    mm_counter_t *reaped[REAP_REASONS], *events;
    mm_histogram_t *lag;
} reap_lane_t;

/* A batch of peer ids going through the pipeline. */
typedef struct reap_batch reap_batch_t;

typedef struct reap {
    const reap_config_t *conf;
    mm_server_t *server;
    h2o_loop_t *loop;
    mm_pg_t *pg;
    mm_redis_t *redis; /* commands */
    mm_redis_t *sub;   /* keyspace notifications */
    int keyspace_ok;   /* notify-keyspace-events has E and x */
    int fatal;         /* set when the reaper cannot work: the process stops */
    reap_lane_t lanes[REAP_KINDS];
    int sweeping;
    int sweep_wanted; /* a reconcile is due as soon as both stores are up */
    mm_timer_t poll_timer, sweep_timer, kick_timer;
    char instance[33]; /* this copy's id, for the sweep lock */
    /* metrics */
    mm_counter_t *sweeps;
    mm_histogram_t *sweep_duration;
} reap_t;

/* reap_kinds.c — the table of kinds, with their SQL */

/* reap_reap.c — the pipeline */
/* Reaps those of `ids` whose key of `lane`'s kind is gone: reads each
 * row's version, claims the ids in Redis (only if the key is still absent;
 * this also drops them from the deadline index, and re-scores live ones),
 * then deletes the unchanged rows with their events. `done` runs once when
 * finished (with the number reaped, or -1 when a store failed; claimed ids
 * then go back into the index to be retried). Takes `ids` (malloc'ed). */
void reap_ids(reap_t *rp, reap_lane_t *lane, char (*ids)[65], size_t n, reap_reason_t reason,
              void (*done)(reap_t *, ssize_t, void *), void *data);
extern const char *const reap_reason_names[REAP_REASONS];

/* reap_watch.c — events and deadlines */
void reap_watch_start(reap_t *rp);
void reap_watch_stop(reap_t *rp);

/* reap_sweep.c */
void reap_sweep_start(reap_t *rp);
void reap_sweep_stop(reap_t *rp);
/* Runs a sweep now if this copy gets the lock (on reconnect). */
void reap_sweep_now(reap_t *rp);

#define REAP_EPOCH_KEY "mm:epoch"
#define REAP_SWEEP_LOCK_KEY "mm:reaper:sweep"

#endif
