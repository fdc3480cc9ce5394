/*
 * The PostgreSQL + Redis pair a stateful service opens on each of its
 * threads, and the readiness rule they share (both connected).
 */
#ifndef MM_STORES_H
#define MM_STORES_H

#include "mm/pg.h"
#include "mm/redis.h"

/* Opens both clients on `loop` (they connect in the background). Returns 0,
 * or -1 with the error logged, naming MM_REDIS_URL, when the Redis URL is
 * invalid (then neither client exists). */
int mm_stores_open(h2o_loop_t *loop, const char *database_url, const char *redis_url, mm_pg_t **pg, mm_redis_t **redis);
/* NULL-safe; sets both to NULL. */
void mm_stores_close(mm_pg_t **pg, mm_redis_t **redis);
/* 1 when both are connected, else 0 with *why set to a static reason. */
int mm_stores_ready(mm_pg_t *pg, mm_redis_t *redis, const char **why);

#endif
