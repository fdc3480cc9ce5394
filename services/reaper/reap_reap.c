/*
 * The reaping pipeline, shared by events, deadlines and sweeps, and by
 * every kind of key (reap_kinds.c).
 *
 *  1. PostgreSQL: the version (xmin) of each candidate's row.
 *  2. Redis (one script): for each candidate whose key is gone, drop it
 *     from the kind's set and claim it with the deadline the index holds; a
 *     live one that is due only in the index gets its real deadline back. Nothing is
 *     claimed while Redis is waiting for the tracker to restore lost data.
 *     A claimed presence also ends the peer's bootstrap membership: its key
 *     goes, and its deadline falls due, so that its row follows even when
 *     the broadcast's own row survives step 3 (a ready came back).
 *  3. PostgreSQL (one statement): delete the claimed rows whose version is
 *     still the one read in 1, and write an event per deleted row.
 *  4. Redis: the index forgets the claimed entries, unless a ready moved
 *     them meanwhile. Until then a copy that died, or a failed delete,
 *     leaves them due, so they are retried with their deadlines.
 *
 * Why the version: the writers (the tracker's ready, the registry's
 * register) set the key first and update the row second. One that lands
 * after step 2 has changed the row's version by step 3 (or inserts a fresh
 * row after it), so a broadcast or membership that just came back is never
 * deleted. Why it is idempotent: a row is deleted, and its event written,
 * by one statement, at most once, whichever copy of the reaper or path gets
 * there first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "reap.h"

const char *const reap_reason_names[REAP_REASONS] = {"event", "deadline", "sweep"};

/* KEYS: deadlines, epoch marker[, the ended kind's deadlines]. ARGV: key
 * prefix, set ('' for none), the ended kind's prefix and set ('' for none),
 * "1" to claim ids missing from the index too (a sweep: an id whose entry
 * was lost is found only that way) or "0" (events and deadlines: only ids
 * still in the index), then peer ids. Returns {id, deadline ms, ...} for the
 * claimed ids, or nil when the marker is missing. A claimed id stays in the
 * index until its row is gone (reap_lua_forget): a copy that dies, or a
 * delete that fails, leaves it there to be retried with its deadline. */
static const char reap_lua_claim[] = "if redis.call('EXISTS', KEYS[2]) == 0 then return false end "
                                     "local t = redis.call('TIME') "
                                     "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
                                     "local out = {} "
                                     "for i = 6, #ARGV do "
                                     "  local id = ARGV[i] "
                                     "  local pttl = redis.call('PTTL', ARGV[1] .. id) "
                                     "  local s = redis.call('ZSCORE', KEYS[1], id) "
                                     "  if pttl == -2 then "
                                     "    if ARGV[2] ~= '' then redis.call('SREM', ARGV[2], id) end "
                                     "    if KEYS[3] and redis.call('DEL', ARGV[3] .. id) == 1 then "
                                     "      if ARGV[4] ~= '' then redis.call('SREM', ARGV[4], id) end "
                                     "      redis.call('ZADD', KEYS[3], string.format('%.0f', now), id) "
                                     "    end "
                                     "    if s or ARGV[5] == '1' then "
                                     "      out[#out + 1] = id "
                                     "      out[#out + 1] = s or '0' "
                                     "    end "
                                     "  elseif pttl >= 0 and s and tonumber(s) <= now then "
                                     "    redis.call('ZADD', KEYS[1], string.format('%.0f', now + pttl), id) "
                                     "  end "
                                     "end "
                                     "return out";

/* KEYS: deadlines. ARGV: id, score pairs. Drops each entry that still has
 * the score it was claimed with (a ready since has moved it: it stays). */
static const char reap_lua_forget[] = "for i = 1, #ARGV, 2 do "
                                      "  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then "
                                      "    redis.call('ZREM', KEYS[1], ARGV[i]) "
                                      "  end "
                                      "end "
                                      "return 0";

struct reap_batch {
    reap_t *rp;
    reap_lane_t *lane;
    reap_reason_t reason;
    char (*ids)[65];
    size_t n;
    char **versions; /* per id; NULL: no row */
    /* the claimed ids that have a row */
    size_t nclaimed;
    size_t *claimed; /* indexes into ids */
    long long *deadlines;
    char **forget; /* id, score pairs to drop from the index once reaped */
    size_t nforget;
    void (*done)(reap_t *, ssize_t, void *);
    void *data;
};

static void reap_batch_finish(reap_batch_t *b, ssize_t result)
{
    size_t i;

    b->done(b->rp, result, b->data);
    for (i = 0; i != b->n && b->versions != NULL; ++i)
        free(b->versions[i]);
    free(b->versions);
    for (i = 0; i != b->nforget; ++i)
        free(b->forget[i]);
    free(b->forget);
    free(b->claimed);
    free(b->deadlines);
    free(b->ids);
    free(b);
}

/* A text[] or bigint[] literal: "{a,b,c}". Values are hex ids, versions
 * and numbers: nothing to quote. */
typedef struct {
    char *buf;
    size_t len, cap;
} reap_str_t;

static void reap_str_add(reap_str_t *s, const char *v)
{
    size_t n = strlen(v);

    if (s->len + n + 3 > s->cap) {
        s->cap = (s->len + n + 3) * 2;
        s->buf = mm_xrealloc(s->buf, s->cap);
    }
    s->buf[s->len] = s->len == 0 ? '{' : ',';
    s->len++;
    memcpy(s->buf + s->len, v, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

static const char *reap_str_end(reap_str_t *s)
{
    if (s->len + 3 > s->cap) {
        s->cap = s->len + 3;
        s->buf = mm_xrealloc(s->buf, s->cap);
    }
    if (s->len == 0)
        s->buf[s->len++] = '{';
    s->buf[s->len++] = '}';
    s->buf[s->len] = '\0';
    return s->buf;
}

static int reap_id_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The index of `id` in the batch's sorted ids, or -1. */
static ssize_t reap_find(reap_batch_t *b, const char *id)
{
    char(*hit)[65] = bsearch(id, b->ids, b->n, sizeof(*b->ids), reap_id_cmp);

    return hit != NULL ? hit - b->ids : -1;
}

/* The index forgets the claimed entries once their rows are gone. */
static void reap_forget(reap_batch_t *b)
{
    const char **argv;
    size_t i;

    if (b->nforget == 0)
        return;
    argv = mm_xcalloc(b->nforget + 4, sizeof(*argv));
    argv[0] = "EVAL";
    argv[1] = reap_lua_forget;
    argv[2] = "1";
    argv[3] = b->lane->kind->deadlines;
    for (i = 0; i != b->nforget; ++i)
        argv[4 + i] = b->forget[i];
    mm_redis_command(b->rp->redis, NULL, NULL, (int)(b->nforget + 4), argv, NULL);
    free(argv);
}

static void reap_on_deleted(mm_pg_status_t status, PGresult *res, void *data)
{
    reap_batch_t *b = data;
    reap_lane_t *lane = b->lane;
    uint64_t now = mm_now_ms();
    int i, n;

    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("reap: %s", PQresultErrorMessage(res));
        reap_batch_finish(b, -1); /* the entries stay in the index: retried */
        return;
    }
    n = PQntuples(res);
    for (i = 0; i != n; ++i) {
        long long deadline = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        if (deadline > 0)
            mm_histogram_observe(lane->lag, deadline < (long long)now ? (double)(now - (uint64_t)deadline) / 1000.0 : 0);
    }
    mm_counter_add(lane->reaped[b->reason], (uint64_t)n);
    reap_forget(b);
    reap_batch_finish(b, n);
}

static void reap_on_claimed(redisReply *reply, void *data)
{
    reap_batch_t *b = data;
    reap_str_t ids = {0}, vers = {0}, deadlines = {0};
    size_t i;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply != NULL)
            mm_error("reap: claim: %s", reply->str);
        reap_batch_finish(b, -1);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY) { /* nil: Redis lost its data; the tracker restores it first */
        reap_batch_finish(b, 0);
        return;
    }
    b->claimed = mm_xcalloc(reply->elements / 2 + 1, sizeof(*b->claimed));
    b->deadlines = mm_xcalloc(reply->elements / 2 + 1, sizeof(*b->deadlines));
    b->forget = mm_xcalloc(reply->elements + 1, sizeof(*b->forget));
    for (i = 0; i + 1 < reply->elements; i += 2) {
        ssize_t j = reply->element[i]->type == REDIS_REPLY_STRING ? reap_find(b, reply->element[i]->str) : -1;
        if (j >= 0 && reply->element[i + 1]->type == REDIS_REPLY_STRING && strcmp(reply->element[i + 1]->str, "0") != 0) {
            b->forget[b->nforget++] = mm_xstrdup(b->ids[j]);
            b->forget[b->nforget++] = mm_xstrdup(reply->element[i + 1]->str);
        }
        if (j < 0 || b->versions[j] == NULL)
            continue; /* no row: nothing to reap; the index forgets it below */
        b->claimed[b->nclaimed] = (size_t)j;
        b->deadlines[b->nclaimed] = strtoll(reply->element[i + 1]->str, NULL, 10);
        ++b->nclaimed;
    }
    if (b->nclaimed == 0) {
        reap_forget(b);
        reap_batch_finish(b, 0);
        return;
    }
    for (i = 0; i != b->nclaimed; ++i) {
        char d[24];
        snprintf(d, sizeof(d), "%lld", b->deadlines[i]);
        reap_str_add(&ids, b->ids[b->claimed[i]]);
        reap_str_add(&vers, b->versions[b->claimed[i]]);
        reap_str_add(&deadlines, d);
    }
    {
        const char *params[] = {reap_str_end(&ids), reap_str_end(&vers), reap_str_end(&deadlines), reap_reason_names[b->reason]};
        if (mm_pg_query(b->rp->pg, b->lane->kind->sql_reap, 4, params, reap_on_deleted, b) != 0)
            reap_on_deleted(MM_PG_UNAVAILABLE, NULL, b);
    }
    free(ids.buf);
    free(vers.buf);
    free(deadlines.buf);
}

static void reap_on_versions(mm_pg_status_t status, PGresult *res, void *data)
{
    reap_batch_t *b = data;
    const reap_kind_t *kind = b->lane->kind, *ended = kind->ends >= 0 ? &reap_kinds[kind->ends] : NULL;
    const char **argv;
    size_t i, k = 0;
    int r, n;

    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("reap: %s", PQresultErrorMessage(res));
        reap_batch_finish(b, -1);
        return;
    }
    b->versions = mm_xcalloc(b->n, sizeof(*b->versions));
    n = PQntuples(res);
    for (r = 0; r != n; ++r) {
        ssize_t j = reap_find(b, PQgetvalue(res, r, 0));
        if (j >= 0 && b->versions[j] == NULL)
            b->versions[j] = mm_xstrdup(PQgetvalue(res, r, 1));
    }
    /* every candidate goes to Redis, with a row or not: the index forgets the dead ones either way */
    argv = mm_xcalloc(b->n + 12, sizeof(*argv));
    argv[k++] = "EVAL";
    argv[k++] = reap_lua_claim;
    argv[k++] = ended != NULL ? "3" : "2";
    argv[k++] = kind->deadlines;
    argv[k++] = REAP_EPOCH_KEY;
    if (ended != NULL)
        argv[k++] = ended->deadlines;
    argv[k++] = kind->prefix;
    argv[k++] = kind->set != NULL ? kind->set : "";
    argv[k++] = ended != NULL ? ended->prefix : "";
    argv[k++] = ended != NULL && ended->set != NULL ? ended->set : "";
    argv[k++] = b->reason == REAP_SWEEP ? "1" : "0";
    for (i = 0; i != b->n; ++i)
        argv[k++] = b->ids[i];
    r = mm_redis_command(b->rp->redis, reap_on_claimed, b, (int)k, argv, NULL);
    free(argv);
    if (r != 0)
        reap_batch_finish(b, -1);
}

void reap_ids(reap_t *rp, reap_lane_t *lane, char (*ids)[65], size_t n, reap_reason_t reason,
              void (*done)(reap_t *, ssize_t, void *), void *data)
{
    reap_batch_t *b = mm_xcalloc(1, sizeof(*b));
    reap_str_t list = {0};
    size_t i, k = 0;

    b->rp = rp;
    b->lane = lane;
    b->reason = reason;
    b->done = done;
    b->data = data;
    /* keep only well-formed ids: they come from Redis keys and members */
    for (i = 0; i != n; ++i)
        if (mm_peer_id_valid(ids[i], strlen(ids[i])))
            memmove(ids[k++], ids[i], 65);
    /* sorted, without repeats: the later steps look ids up by bsearch */
    qsort(ids, k, sizeof(*ids), reap_id_cmp);
    for (i = 0, n = k, k = 0; i != n; ++i)
        if (k == 0 || strcmp(ids[k - 1], ids[i]) != 0)
            memmove(ids[k++], ids[i], 65);
    b->ids = ids;
    b->n = k;
    if (k == 0) {
        reap_batch_finish(b, 0);
        return;
    }
    for (i = 0; i != k; ++i)
        reap_str_add(&list, ids[i]);
    {
        const char *params[] = {reap_str_end(&list)};
        if (mm_pg_query(rp->pg, lane->kind->sql_versions, 1, params, reap_on_versions, b) != 0)
            reap_on_versions(MM_PG_UNAVAILABLE, NULL, b);
    }
    free(list.buf);
}
