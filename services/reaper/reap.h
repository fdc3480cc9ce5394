/*
 * mm-reaper's private header. A broadcast ends when its Redis presence key
 * expires; the reaper turns that into PostgreSQL: it deletes the broadcast
 * row and writes one `offline` event (SPEC §4).
 *
 * Three ways find expired peers, fastest first:
 *   event    — Redis's `expired` keyspace notifications (a hint: Redis sends
 *              them only when it notices an expiry, and drops them while
 *              nobody listens);
 *   deadline — the tracker's index mm:presence:deadlines (member peer_id,
 *              score = expiry in unix ms), polled every MM_REAPER_POLL_MS;
 *   sweep    — every MM_SWEEP_INTERVAL s and on every reconnect, all of
 *              `broadcasts` against Redis, by whichever copy holds the lock.
 * All three feed one pipeline (reap_ids), which is idempotent: copies may
 * race, a peer is reaped once and gets one event.
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
    /* event ids waiting for the next batch */
    char (*pending)[65];
    size_t npending, cpending;
    int busy; /* a deadline/event batch is in the pipeline */
    int sweeping;
    int sweep_wanted; /* a reconcile is due as soon as both stores are up */
    mm_timer_t poll_timer, sweep_timer, kick_timer;
    char instance[33]; /* this copy's id, for the sweep lock */
    /* metrics */
    mm_counter_t *reaped[REAP_REASONS], *sweeps, *events;
    mm_histogram_t *lag, *sweep_duration;
} reap_t;

/* reap_reap.c — the pipeline */
/* Reaps those of `ids` whose presence is gone: reads each row's version,
 * claims the ids in Redis (only if presence is still absent; this also
 * drops them from the deadline index, and re-scores live ones), then
 * deletes the unchanged rows with their `offline` events. `done` runs once
 * when finished (with the number reaped, or -1 when a store failed; claimed
 * ids then go back into the index to be retried). Takes `ids` (malloc'ed). */
void reap_ids(reap_t *rp, char (*ids)[65], size_t n, reap_reason_t reason, void (*done)(reap_t *, ssize_t, void *), void *data);
extern const char *const reap_reason_names[REAP_REASONS];

/* reap_watch.c — events and deadlines */
void reap_watch_start(reap_t *rp);
void reap_watch_stop(reap_t *rp);

/* reap_sweep.c */
void reap_sweep_start(reap_t *rp);
void reap_sweep_stop(reap_t *rp);
/* Runs a sweep now if this copy gets the lock (on reconnect). */
void reap_sweep_now(reap_t *rp);

#define REAP_PRESENCE_PREFIX "mm:presence:"
#define REAP_DEADLINES_KEY "mm:presence:deadlines"
#define REAP_EPOCH_KEY "mm:epoch"
#define REAP_SWEEP_LOCK_KEY "mm:reaper:sweep"

#endif
