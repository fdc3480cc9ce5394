/*
 * mm-tracker's private header: registration now; broadcast and discovery
 * build on the same per-thread stores.
 */
#ifndef TRK_H
#define TRK_H

#include "mm/config.h"
#include "mm/http.h"
#include "mm/pg.h"
#include "mm/redis.h"

typedef struct trk_config {
    const char *listen;
    const char *database_url;
    const char *redis_url;
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
} trk_thread_t;

/* trk_routes.c */
extern const mm_route_t trk_routes[];
extern const size_t trk_routes_len;

/* trk_register.c */
void trk_register(h2o_req_t *req, mm_thread_t *thread);

#endif
