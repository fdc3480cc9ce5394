/*
 * The per-thread store pair of stateful services; see mm/stores.h.
 */
#include "mm/log.h"
#include "mm/stores.h"

int mm_stores_open(h2o_loop_t *loop, const char *database_url, const char *redis_url, mm_pg_t **pg, mm_redis_t **redis)
{
    mm_err_t err;

    if ((*redis = mm_redis_new(loop, redis_url, &err)) == NULL) {
        mm_error("MM_REDIS_URL: %s", err.msg);
        *pg = NULL;
        return -1;
    }
    *pg = mm_pg_new(loop, database_url);
    return 0;
}

void mm_stores_close(mm_pg_t **pg, mm_redis_t **redis)
{
    mm_pg_free(*pg);
    mm_redis_free(*redis);
    *pg = NULL;
    *redis = NULL;
}

int mm_stores_ready(mm_pg_t *pg, mm_redis_t *redis, const char **why)
{
    if (!mm_pg_is_up(pg)) {
        *why = "PostgreSQL is not connected";
        return 0;
    }
    if (!mm_redis_is_up(redis)) {
        *why = "Redis is not connected";
        return 0;
    }
    return 1;
}
