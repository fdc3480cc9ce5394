/*
 * Finding expired keys quickly: Redis's `expired` notifications, and each
 * kind's deadline index polled every MM_REAPER_POLL_MS. Each kind (lane)
 * has one batch in the pipeline at a time; events go first, and a full
 * batch of deadlines is followed at once by the next.
 */
#include <stdio.h>
#include <string.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "reap.h"

/* KEYS: deadlines. ARGV: batch size. The ids due by Redis's clock. */
static const char reap_lua_due[] = "local t = redis.call('TIME') "
                                   "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
                                   "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),"
                                   " 'LIMIT', 0, tonumber(ARGV[1]))";

static void reap_pump(reap_t *rp);

static void reap_kick(reap_t *rp)
{
    if (!mm_timer_is_active(&rp->kick_timer))
        mm_timer_start(&rp->kick_timer, 0);
}

/* `data`: the lane; `full` (a deadline batch that filled the batch size) in its busy flag's place. */
static void reap_on_batch_done(reap_t *rp, ssize_t result, void *data)
{
    reap_lane_t *lane = data;
    int full = lane->busy == 2 && result >= 0;

    lane->busy = 0;
    /* a full page of deadlines may have more behind it */
    if (lane->npending != 0 || full)
        reap_kick(rp);
}

static void reap_on_due(redisReply *reply, void *data)
{
    reap_lane_t *lane = data;
    reap_t *rp = lane->rp;
    char(*ids)[65];
    size_t i, n = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("deadline poll (%s): %s", lane->kind->name, reply->str);
        reap_on_batch_done(rp, 0, lane);
        return;
    }
    ids = mm_xcalloc(reply->elements, sizeof(*ids));
    for (i = 0; i != reply->elements; ++i)
        if (reply->element[i]->type == REDIS_REPLY_STRING && reply->element[i]->len == 64)
            memcpy(ids[n++], reply->element[i]->str, 65);
    if (reply->elements == (size_t)rp->conf->batch)
        lane->busy = 2;
    reap_ids(rp, lane, ids, n, REAP_DEADLINE, reap_on_batch_done, lane);
}

static void reap_poll_deadlines(reap_t *rp, reap_lane_t *lane)
{
    char batch[16];
    const char *argv[] = {"EVAL", reap_lua_due, "1", lane->kind->deadlines, batch};

    snprintf(batch, sizeof(batch), "%lld", (long long)rp->conf->batch);
    if (mm_redis_command(rp->redis, reap_on_due, lane, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
        lane->busy = 1;
}

static void reap_pump_events(reap_t *rp, reap_lane_t *lane)
{
    size_t n = lane->npending < (size_t)rp->conf->batch ? lane->npending : (size_t)rp->conf->batch;
    char(*ids)[65] = mm_xcalloc(n, sizeof(*ids));

    memcpy(ids, lane->pending, n * sizeof(*ids));
    memmove(lane->pending, lane->pending + n, (lane->npending - n) * sizeof(*ids));
    lane->npending -= n;
    lane->busy = 1;
    reap_ids(rp, lane, ids, n, REAP_EVENT, reap_on_batch_done, lane);
}

static void reap_pump(reap_t *rp)
{
    size_t i;

    if (rp->fatal || !rp->keyspace_ok || !mm_redis_is_up(rp->redis) || !mm_pg_is_up(rp->pg))
        return;
    for (i = 0; i != REAP_KINDS; ++i) {
        reap_lane_t *lane = &rp->lanes[i];
        if (lane->busy)
            continue;
        if (lane->npending != 0)
            reap_pump_events(rp, lane);
        else
            reap_poll_deadlines(rp, lane);
    }
}

static void reap_on_kick(mm_timer_t *t)
{
    reap_pump(t->data);
}

static void reap_on_poll(mm_timer_t *t)
{
    reap_t *rp = t->data;

    if (rp->sweep_wanted)
        reap_sweep_now(rp);
    reap_pump(rp);
    mm_timer_start(t, (uint64_t)rp->conf->poll_ms);
}

/* `expired` notifications: hints that go into the next event batch of
 * the kind whose prefix the key has. */
static void reap_on_event(const char *channel, size_t channel_len, const char *key, size_t len, void *data)
{
    reap_t *rp = data;
    reap_lane_t *lane;
    size_t i, plen;

    for (i = 0; i != REAP_KINDS; ++i) {
        plen = strlen(reap_kinds[i].prefix);
        if (len == plen + MM_PEER_ID_LEN && memcmp(key, reap_kinds[i].prefix, plen) == 0 &&
            mm_peer_id_valid(key + plen, MM_PEER_ID_LEN))
            break;
    }
    if (i == REAP_KINDS)
        return;
    lane = &rp->lanes[i];
    mm_counter_add(lane->events, 1);
    if (lane->npending == lane->cpending) {
        lane->cpending = lane->cpending != 0 ? lane->cpending * 2 : 256;
        lane->pending = mm_xrealloc(lane->pending, lane->cpending * sizeof(*lane->pending));
    }
    memcpy(lane->pending[lane->npending], key + plen, MM_PEER_ID_LEN);
    lane->pending[lane->npending++][MM_PEER_ID_LEN] = '\0';
    reap_kick(rp);
}

/* ---- keyspace notifications must be on ---- */

static void reap_fatal(reap_t *rp, const char *why)
{
    mm_error("%s", why);
    rp->fatal = 1;
    mm_server_stop(rp->server);
}

static void reap_on_config_set(redisReply *reply, void *data)
{
    reap_t *rp = data;

    if (reply == NULL)
        return; /* the link went down: checked again on reconnect */
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[512];
        snprintf(why, sizeof(why),
                 "Redis refused CONFIG SET notify-keyspace-events (%s): start redis-server with --notify-keyspace-events Ex",
                 reply->str);
        reap_fatal(rp, why);
        return;
    }
    mm_info("keyspace notifications for expired keys turned on");
    rp->keyspace_ok = 1;
    reap_sweep_now(rp);
}

static void reap_on_config_get(redisReply *reply, void *data)
{
    reap_t *rp = data;
    const char *flags;
    char want[64];

    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[1]->type != REDIS_REPLY_STRING) {
        reap_fatal(rp, "Redis refused CONFIG GET notify-keyspace-events: the reaper needs keyspace notifications for "
                       "expired keys; start redis-server with --notify-keyspace-events Ex");
        return;
    }
    flags = reply->element[1]->str;
    if (strchr(flags, 'E') != NULL && (strchr(flags, 'x') != NULL || strchr(flags, 'A') != NULL)) {
        rp->keyspace_ok = 1;
        reap_sweep_now(rp); /* events were lost while we were away: reconcile */
        return;
    }
    /* add what is missing, keep what others asked for */
    snprintf(want, sizeof(want), "%s%s%s", flags, strchr(flags, 'E') != NULL ? "" : "E", strchr(flags, 'x') != NULL ? "" : "x");
    {
        const char *argv[] = {"CONFIG", "SET", "notify-keyspace-events", want};
        mm_redis_command(rp->redis, reap_on_config_set, rp, 4, argv, NULL);
    }
}

static void reap_on_redis_connect(mm_redis_t *r, void *data)
{
    reap_t *rp = data;
    const char *argv[] = {"CONFIG", "GET", "notify-keyspace-events"};

    rp->keyspace_ok = 0;
    mm_redis_command(r, reap_on_config_get, rp, 3, argv, NULL);
}

void reap_watch_start(reap_t *rp)
{
    char pattern[64];
    int db = 0;
    char *host = NULL, *path = NULL;
    int port;

    mm_redis_parse_url(rp->conf->redis_url, &host, &port, &path, &db, NULL);
    free(host);
    free(path);
    snprintf(pattern, sizeof(pattern), "__keyevent@%d__:expired", db);
    mm_redis_on_connect(rp->redis, reap_on_redis_connect, rp);
    mm_redis_psubscribe(rp->sub, pattern, reap_on_event, rp);
    mm_timer_init(&rp->kick_timer, rp->loop, reap_on_kick, rp);
    mm_timer_init(&rp->poll_timer, rp->loop, reap_on_poll, rp);
    mm_timer_start(&rp->poll_timer, (uint64_t)rp->conf->poll_ms);
}

void reap_watch_stop(reap_t *rp)
{
    size_t i;

    mm_timer_dispose(&rp->kick_timer);
    mm_timer_dispose(&rp->poll_timer);
    for (i = 0; i != REAP_KINDS; ++i) {
        free(rp->lanes[i].pending);
        rp->lanes[i].pending = NULL;
    }
}
