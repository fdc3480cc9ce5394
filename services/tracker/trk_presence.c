/*
 * The Redis side of broadcasts: presence keys, the deadline index the
 * reaper polls, and recovery when Redis has lost its data.
 *
 * Each change is one Lua script, so a presence key and its deadline never
 * disagree, and times come from Redis's own clock (TIME), the clock its TTLs
 * run on. A presence value is "<last heartbeat, unix ms> <observed ip>".
 */
#include <stdio.h>
#include <string.h>
#include "mm/log.h"
#include "trk.h"

/* KEYS: presence, deadlines, epoch marker. ARGV: observed ip, ttl s, peer_id, mode.
 * Mode "0" (ready): sets presence, returns {1 when the peer was already
 * live or 0 when this starts a new broadcast, the time set in unix ms}. While the epoch marker is
 * missing, Redis has lost its data and presence is about to be restored:
 * an absent key then says nothing, and the peer counts as live.
 * Mode "1" (restore): sets it only when absent, returns 1 when it did. */
const char trk_lua_ready[] = "local existed = redis.call('EXISTS', KEYS[1]) "
                             "if ARGV[4] == '0' and redis.call('EXISTS', KEYS[3]) == 0 then existed = 1 end "
                             "if ARGV[4] == '1' and existed == 1 then return 0 end "
                             "local t = redis.call('TIME') "
                             "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
                             "redis.call('SET', KEYS[1], string.format('%.0f', ms) .. ' ' .. ARGV[1], 'EX', ARGV[2]) "
                             "redis.call('ZADD', KEYS[2], string.format('%.0f', ms + tonumber(ARGV[2]) * 1000), ARGV[3]) "
                             "if ARGV[4] == '1' then return 1 end "
                             "return {existed, string.format('%.0f', ms)}";

/* KEYS: presence, deadlines. ARGV: ttl s, peer_id. Extends a live presence;
 * returns the observed ip it holds, or nil when the peer is not broadcasting. */
const char trk_lua_heartbeat[] = "local v = redis.call('GET', KEYS[1]) "
                                 "if not v then return false end "
                                 "local obs = string.match(v, '^%d+ (.*)$') or '' "
                                 "local t = redis.call('TIME') "
                                 "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
                                 "redis.call('SET', KEYS[1], string.format('%.0f', ms) .. ' ' .. obs, 'EX', ARGV[1]) "
                                 "redis.call('ZADD', KEYS[2], string.format('%.0f', ms + tonumber(ARGV[1]) * 1000), ARGV[2]) "
                                 "return obs";

/* KEYS: presence. ARGV: new observed ip. Keeps the heartbeat time and TTL. */
const char trk_lua_observed[] = "local v = redis.call('GET', KEYS[1]) "
                                "if not v then return 0 end "
                                "redis.call('SET', KEYS[1], (string.match(v, '^(%d+) ') or '0') .. ' ' .. ARGV[1], 'KEEPTTL') "
                                "return 1";

/* KEYS: presence, deadlines, bootstrap membership, bootstrap nodes,
 * bootstrap deadlines. ARGV: peer_id. Ends the broadcast and any bootstrap
 * membership with it. */
const char trk_lua_stop[] = "redis.call('ZREM', KEYS[2], ARGV[1]) "
                            "redis.call('DEL', KEYS[3]) "
                            "redis.call('SREM', KEYS[4], ARGV[1]) "
                            "redis.call('ZREM', KEYS[5], ARGV[1]) "
                            "return redis.call('DEL', KEYS[1])";

/* KEYS: presence keys. Returns value, pttl pairs (nil, -2 for an absent key). */
const char trk_lua_read[] = "local out = {} "
                            "for i, k in ipairs(KEYS) do "
                            "  local v = redis.call('GET', k) "
                            "  out[2 * i - 1] = v "
                            "  out[2 * i] = v and redis.call('PTTL', k) or -2 "
                            "end "
                            "return out";

const char *trk_presence_key(char *buf, const char *peer_id)
{
    snprintf(buf, 80, "%s%s", TRK_PRESENCE_PREFIX, peer_id);
    return buf;
}

/* ---- recovery of a Redis that lost its data ---- */

/* KEYS: epoch marker, restore lock. ARGV: now. Returns 1 when the marker is
 * missing and this caller took the lock: it must restore, then set the
 * marker (trk_lua_epoch_done). The lock expires, so a tracker that dies
 * while restoring leaves the work to another. */
static const char trk_lua_epoch_check[] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end "
                                          "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', 120) then return 1 end "
                                          "return 0";
static const char trk_lua_epoch_done[] = "redis.call('SET', KEYS[1], ARGV[1]) "
                                         "return redis.call('DEL', KEYS[2])";

typedef struct trk_restore {
    trk_thread_t *t;
    size_t pending, restored, rows;
    char now[24];
} trk_restore_t;

static void trk_restore_done_one(redisReply *reply, void *data)
{
    trk_restore_t *r = data;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        ++r->restored;
    if (--r->pending != 0)
        return;
    {
        /* only now may readies and the reaper trust an absent presence key again */
        const char *argv[] = {"EVAL", trk_lua_epoch_done, "2", TRK_EPOCH_KEY, TRK_EPOCH_LOCK_KEY, r->now};
        mm_redis_command(r->t->redis, NULL, NULL, (int)MM_ARRAY_SIZE(argv), argv, NULL);
    }
    mm_info("presence restored for %zu of %zu broadcasts (Redis had lost its data)", r->restored, r->rows);
    r->t->restoring = 0;
    free(r);
}

static void trk_restore_on_rows(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_restore_t *r = data;
    trk_thread_t *t = r->t;
    char key[80], ttl[24];
    int i, n;

    if (status != MM_PG_OK) {
        /* try again: the lock goes, so the next check restores */
        const char *del[] = {"DEL", TRK_EPOCH_LOCK_KEY};
        mm_warn("presence restore: PostgreSQL unavailable; will retry");
        mm_redis_command(t->redis, NULL, NULL, 2, del, NULL);
        t->restoring = 0;
        free(r);
        return;
    }
    n = PQntuples(res);
    r->rows = (size_t)n;
    r->pending = 1; /* held until every command is sent */
    snprintf(ttl, sizeof(ttl), "%lld", (long long)t->conf->presence_ttl);
    for (i = 0; i != n; ++i) {
        const char *argv[] = {"EVAL",
                              trk_lua_ready,
                              "3",
                              trk_presence_key(key, PQgetvalue(res, i, 0)),
                              TRK_DEADLINES_KEY,
                              TRK_EPOCH_KEY,
                              PQgetvalue(res, i, 1),
                              ttl,
                              PQgetvalue(res, i, 0),
                              "1"};
        if (mm_redis_command(t->redis, trk_restore_done_one, r, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
            ++r->pending;
    }
    trk_restore_done_one(NULL, r);
}

static void trk_epoch_on_check(redisReply *reply, void *data)
{
    trk_thread_t *t = data;
    trk_restore_t *r;

    /* 1: the marker was absent, so this Redis is new or was flushed, and the restore is ours */
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
        t->restoring = 0;
        return;
    }
    r = mm_xcalloc(1, sizeof(*r));
    r->t = t;
    snprintf(r->now, sizeof(r->now), "%llu", (unsigned long long)mm_now_ms());
    if (mm_pg_query_static(t->pg, "SELECT peer_id, coalesce(observed_address, '') FROM broadcasts", 0, NULL, trk_restore_on_rows,
                           r) != 0)
        trk_restore_on_rows(MM_PG_UNAVAILABLE, NULL, r);
}

static void trk_epoch_check(trk_thread_t *t)
{
    char now[24];
    const char *argv[] = {"EVAL", trk_lua_epoch_check, "2", TRK_EPOCH_KEY, TRK_EPOCH_LOCK_KEY, now};

    /* restoring needs both stores: wait for PostgreSQL rather than set the marker and fail */
    if (t->restoring || !mm_redis_is_up(t->redis) || !mm_pg_is_up(t->pg))
        return;
    snprintf(now, sizeof(now), "%llu", (unsigned long long)mm_now_ms());
    if (mm_redis_command(t->redis, trk_epoch_on_check, t, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
        t->restoring = 1;
}

static void trk_epoch_on_timer(mm_timer_t *timer)
{
    trk_thread_t *t = timer->data;

    trk_epoch_check(t);
    mm_timer_start(timer, 1000);
}

static void trk_epoch_on_connect(mm_redis_t *r, void *data)
{
    trk_epoch_check(data);
}

void trk_presence_watch(trk_thread_t *t)
{
    t->epoch_timer.cb = trk_epoch_on_timer;
    mm_redis_on_connect(t->redis, trk_epoch_on_connect, t);
    mm_timer_start(&t->epoch_timer, 1000);
}

void trk_presence_unwatch(trk_thread_t *t)
{
    mm_timer_dispose(&t->epoch_timer);
}
