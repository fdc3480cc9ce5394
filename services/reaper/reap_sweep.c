/*
 * The sweep: every MM_SWEEP_INTERVAL seconds and on every reconnect to
 * Redis, every row of each kind's table (`broadcasts`, then
 * `bootstrap_nodes`) goes through the pipeline page by page, so a key whose
 * event was lost and whose deadline entry is gone (a reaper killed
 * mid-batch, an index written by an older writer) is still reaped.
 * A Redis lock picks the copy that sweeps; it expires, so a copy that dies
 * while sweeping leaves the next sweep to another.
 */
#include <stdio.h>
#include <string.h>
#include "mm/log.h"
#include "reap.h"

#define REAP_SWEEP_PAGE 2000

/* KEYS: lock, epoch marker. ARGV: owner, ttl ms. 1 when this copy sweeps, 0
 * when another does, -1 while Redis waits for the tracker to restore lost
 * data (every broadcast would look expired: ask again later). */
static const char reap_lua_sweep_lock[] = "if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end "
                                          "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
                                          "return 0";

typedef struct reap_sweep {
    reap_t *rp;
    size_t kind; /* the kind being swept: all of them, in turn */
    char after[65];
    uint64_t started_ms;
    size_t checked[REAP_KINDS], reaped[REAP_KINDS];
} reap_sweep_t;

static void reap_sweep_page(reap_sweep_t *sw);

static void reap_sweep_end(reap_sweep_t *sw, int ok)
{
    reap_t *rp = sw->rp;
    uint64_t ms = mm_mono_ms() - sw->started_ms;

    mm_counter_add(rp->sweeps, 1);
    mm_histogram_observe(rp->sweep_duration, (double)ms / 1000.0);
    if (ok)
        mm_info("sweep: checked %zu broadcasts against Redis, reaped %zu; %zu bootstrap memberships, reaped %zu; in %llu ms",
                sw->checked[REAP_PRESENCE], sw->reaped[REAP_PRESENCE], sw->checked[REAP_BOOTSTRAP], sw->reaped[REAP_BOOTSTRAP],
                (unsigned long long)ms);
    else
        mm_warn("sweep: stopped in %s after %zu rows (a store is unavailable); the next one starts over", reap_kinds[sw->kind].what,
                sw->checked[sw->kind]);
    rp->sweeping = 0;
    free(sw);
}

static void reap_sweep_on_reaped(reap_t *rp, ssize_t result, void *data)
{
    reap_sweep_t *sw = data;

    if (result < 0) {
        reap_sweep_end(sw, 0);
        return;
    }
    sw->reaped[sw->kind] += (size_t)result;
    reap_sweep_page(sw);
}

static void reap_sweep_on_page(mm_pg_status_t status, PGresult *res, void *data)
{
    reap_sweep_t *sw = data;
    char(*ids)[65];
    int i, n;

    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("sweep: %s", PQresultErrorMessage(res));
        reap_sweep_end(sw, 0);
        return;
    }
    if ((n = PQntuples(res)) == 0) {
        /* this kind is done: the next one from its start, or the end */
        if (++sw->kind == REAP_KINDS) {
            reap_sweep_end(sw, 1);
            return;
        }
        sw->after[0] = '\0';
        reap_sweep_page(sw);
        return;
    }
    ids = mm_xcalloc((size_t)n, sizeof(*ids));
    for (i = 0; i != n; ++i)
        snprintf(ids[i], sizeof(ids[i]), "%s", PQgetvalue(res, i, 0));
    snprintf(sw->after, sizeof(sw->after), "%s", ids[n - 1]);
    sw->checked[sw->kind] += (size_t)n;
    reap_ids(sw->rp, &sw->rp->lanes[sw->kind], ids, (size_t)n, REAP_SWEEP, reap_sweep_on_reaped, sw);
}

static void reap_sweep_page(reap_sweep_t *sw)
{
    char limit[16];
    const char *params[] = {sw->after, limit};

    snprintf(limit, sizeof(limit), "%d", REAP_SWEEP_PAGE);
    if (mm_pg_query(sw->rp->pg, reap_kinds[sw->kind].sql_page, 2, params, reap_sweep_on_page, sw) != 0)
        reap_sweep_end(sw, 0);
}

static void reap_sweep_on_lock(redisReply *reply, void *data)
{
    reap_t *rp = data;
    reap_sweep_t *sw;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
        rp->sweeping = 0;
        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer < 0)
            rp->sweep_wanted = 1; /* not done: retried from the poll timer */
        return;
    }
    sw = mm_xcalloc(1, sizeof(*sw));
    sw->rp = rp;
    sw->started_ms = mm_mono_ms();
    reap_sweep_page(sw);
}

void reap_sweep_now(reap_t *rp)
{
    char ttl[24];
    const char *argv[] = {"EVAL", reap_lua_sweep_lock, "2", REAP_SWEEP_LOCK_KEY, REAP_EPOCH_KEY, rp->instance, ttl};
    int64_t ms = rp->conf->sweep_interval * 1000 - 500;

    if (rp->sweeping || rp->fatal)
        return;
    /* not now (a store is down): the poll timer asks again */
    rp->sweep_wanted = 1;
    if (!mm_pg_is_up(rp->pg) || !rp->keyspace_ok)
        return;
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(ms > 500 ? ms : 500));
    if (mm_redis_command(rp->redis, reap_sweep_on_lock, rp, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0) {
        rp->sweeping = 1;
        rp->sweep_wanted = 0;
    }
}

static void reap_on_sweep_timer(mm_timer_t *t)
{
    reap_t *rp = t->data;

    reap_sweep_now(rp);
    mm_timer_start(t, (uint64_t)rp->conf->sweep_interval * 1000);
}

void reap_sweep_start(reap_t *rp)
{
    mm_timer_init(&rp->sweep_timer, rp->loop, reap_on_sweep_timer, rp);
    mm_timer_start(&rp->sweep_timer, (uint64_t)rp->conf->sweep_interval * 1000);
}

void reap_sweep_stop(reap_t *rp)
{
    mm_timer_dispose(&rp->sweep_timer);
}
