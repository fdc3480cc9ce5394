/*
 * Discovery: lookup one peer, list online peers (SPEC §3.1).
 *
 * The record comes from PostgreSQL, liveness from Redis: a peer whose
 * presence key has expired is not shown, even in the moment before the
 * reaper removes its row. An unknown peer and a silent one get the same
 * 404, so a lookup reveals nothing about peers that are not broadcasting.
 * The caller must be registered; that check rides in the same query.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "trk.h"

#define TRK_LIST_DEFAULT 100
#define TRK_LIST_MAX 500

/* Columns of a peer record, after the caller check in column 0. */
#define TRK_RECORD_COLUMNS                                                                                                         \
    "p.peer_id, p.email, p.display_name, b.port, b.candidates::text, "                                                             \
    "to_char(b.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static const char trk_sql_lookup_email[] =
    "SELECT EXISTS (SELECT 1 FROM peers WHERE peer_id = $1), " TRK_RECORD_COLUMNS " FROM (SELECT 1) one"
    " LEFT JOIN (peers p JOIN broadcasts b USING (peer_id)) ON p.email = $2";
static const char trk_sql_lookup_id[] =
    "SELECT EXISTS (SELECT 1 FROM peers WHERE peer_id = $1), " TRK_RECORD_COLUMNS " FROM (SELECT 1) one"
    " LEFT JOIN (peers p JOIN broadcasts b USING (peer_id)) ON p.peer_id = $2";
static const char trk_sql_list[] = "WITH me AS (SELECT EXISTS (SELECT 1 FROM peers WHERE peer_id = $1) AS ok) "
                                   "SELECT me.ok, x.* FROM me LEFT JOIN LATERAL ("
                                   " SELECT " TRK_RECORD_COLUMNS " FROM broadcasts b JOIN peers p USING (peer_id)"
                                   " WHERE b.peer_id > $2 ORDER BY b.peer_id LIMIT $3::int) x ON me.ok";

typedef struct trk_disc_op {
    mm_async_t async;
    trk_thread_t *t;
    PGresult *rows; /* kept from PostgreSQL until Redis has answered */
    int limit;
    int is_list;
} trk_disc_op_t;

static void trk_disc_op_free(trk_disc_op_t *op)
{
    PQclear(op->rows);
    mm_async_free(op);
}

static void trk_rfc3339_ms(char *buf, size_t size, long long ms)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The record of row `i`, given its presence value ("<ms> <observed>") and PTTL. */
static json_t *trk_record(PGresult *rows, int i, const char *presence, long long pttl)
{
    char last[32];
    json_t *candidates = json_loads(PQgetvalue(rows, i, 5), 0, NULL);

    trk_rfc3339_ms(last, sizeof(last), strtoll(presence, NULL, 10));
    return json_pack("{s:s,s:s,s:o,s:i,s:s,s:s,s:I,s:o}", "peer_id", PQgetvalue(rows, i, 1), "email", PQgetvalue(rows, i, 2),
                     "display_name", PQgetisnull(rows, i, 3) ? json_null() : json_string(PQgetvalue(rows, i, 3)), "port",
                     (int)strtol(PQgetvalue(rows, i, 4), NULL, 10), "online_since", PQgetvalue(rows, i, 6), "last_heartbeat", last,
                     "expires_in", (json_int_t)((pttl + 999) / 1000), "candidates", candidates != NULL ? candidates : json_array());
}

static void trk_disc_on_presence(redisReply *reply, void *data)
{
    trk_disc_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    int i, n = PQntuples(op->rows), last_scanned = -1;
    json_t *peers;

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 * (size_t)n) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("discovery: redis: %s", reply->str);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    peers = json_array();
    for (i = 0; i != n; ++i) {
        redisReply *v = reply->element[2 * i], *ttl = reply->element[2 * i + 1];
        last_scanned = i;
        if (v->type != REDIS_REPLY_STRING || ttl->type != REDIS_REPLY_INTEGER || ttl->integer < 0)
            continue; /* expired: invisible, whatever PostgreSQL still says */
        json_array_append_new(peers, trk_record(op->rows, i, v->str, ttl->integer));
    }
    if (!op->is_list) {
        if (json_array_size(peers) == 0)
            mm_reply_error(req, 404, "not_found", "no broadcasting peer by that name");
        else
            mm_reply_json(req, 200, json_incref(json_array_get(peers, 0)));
        json_decref(peers);
        goto out;
    }
    /* a full page may have more behind it; a short one was the end */
    mm_reply_json(
        req, 200,
        json_pack("{s:o,s:o}", "peers", peers, "next",
                  n == op->limit && last_scanned >= 0 ? json_string(PQgetvalue(op->rows, last_scanned, 1)) : json_null()));
out:
    trk_disc_op_free(op);
}

static void trk_disc_on_rows(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_disc_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    const char **argv = NULL;
    char(*keys)[80] = NULL, nkeys[16];
    int i, n;

    if (req == NULL)
        goto out;
    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("discovery: %s", PQresultErrorMessage(res));
        mm_reply_unavailable(req, "PostgreSQL");
        goto out;
    }
    if (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        mm_reply_error(req, 403, "not_registered", "register this certificate first: POST /api/relay/register");
        goto out;
    }
    /* take the result over: PGresults are freed by the client after this callback */
    op->rows = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    /* the left join yields one all-NULL row when there is no match */
    n = PQntuples(op->rows) == 1 && PQgetisnull(op->rows, 0, 1) ? 0 : PQntuples(op->rows);
    if (n == 0) {
        if (op->is_list)
            mm_reply_json(req, 200, json_pack("{s:[],s:n}", "peers", "next"));
        else
            mm_reply_error(req, 404, "not_found", "no broadcasting peer by that name");
        goto out;
    }
    argv = mm_xcalloc((size_t)n + 3, sizeof(*argv));
    keys = mm_xcalloc((size_t)n, sizeof(*keys));
    snprintf(nkeys, sizeof(nkeys), "%d", n);
    argv[0] = "EVAL";
    argv[1] = trk_lua_read;
    argv[2] = nkeys;
    for (i = 0; i != n; ++i)
        argv[3 + i] = trk_presence_key(keys[i], PQgetvalue(op->rows, i, 1));
    i = mm_redis_command(op->t->redis, trk_disc_on_presence, op, n + 3, argv, NULL);
    free(argv);
    free(keys);
    if (i == 0)
        return;
    mm_reply_unavailable(req, "Redis");
out:
    trk_disc_op_free(op);
}

/* Starts a discovery query, one of the static statements above (`sql` is
 * prepared once per connection); the Redis check follows in trk_disc_on_rows. */
static void trk_disc_start(h2o_req_t *req, trk_thread_t *t, const char *sql, const char *const *params, int nparams, int is_list,
                           int limit)
{
    trk_disc_op_t *op;

    /* both stores answer every discovery request: refuse early rather than half-way */
    if (!mm_redis_is_up(t->redis)) {
        mm_reply_unavailable(req, "Redis");
        return;
    }
    op = mm_async_new(req, sizeof(*op));
    op->t = t;
    op->is_list = is_list;
    op->limit = limit;
    if (mm_pg_query_static(t->pg, sql, nparams, params, trk_disc_on_rows, op) != 0) {
        mm_reply_unavailable(req, "PostgreSQL");
        trk_disc_op_free(op);
    }
}

void trk_lookup(h2o_req_t *req, mm_thread_t *thread)
{
    char email[MM_EMAIL_MAX + 65], normalized[MM_EMAIL_MAX + 1], peer_id[80];
    int elen = mm_req_query(req, "email", email, sizeof(email)), plen = mm_req_query(req, "peer_id", peer_id, sizeof(peer_id));
    mm_peer_t peer;

    if (mm_req_peer(req, &peer) != 0)
        return;
    if ((elen == -ENOENT) == (plen == -ENOENT)) {
        mm_reply_error(req, 400, "invalid_field", "give exactly one of the query parameters 'email' and 'peer_id'");
        return;
    }
    if (elen != -ENOENT) {
        if (elen < 0 || mm_email_normalize(email, (size_t)elen, normalized) != 0) {
            mm_reply_error(req, 400, "invalid_field", "query parameter 'email' is not an email address");
            return;
        }
        trk_disc_start(req, thread->user, trk_sql_lookup_email, (const char *const[]){peer.peer_id, normalized}, 2, 0, 1);
        return;
    }
    if (plen < 0 || !mm_peer_id_valid(peer_id, (size_t)plen)) {
        mm_reply_error(req, 400, "invalid_field", "query parameter 'peer_id' must be 64 lowercase hex characters");
        return;
    }
    trk_disc_start(req, thread->user, trk_sql_lookup_id, (const char *const[]){peer.peer_id, peer_id}, 2, 0, 1);
}

void trk_list(h2o_req_t *req, mm_thread_t *thread)
{
    char limit_s[16], after[80] = "";
    int alen = mm_req_query(req, "after", after, sizeof(after));
    long limit;
    mm_peer_t peer;

    if (mm_req_peer(req, &peer) != 0 || mm_req_query_int(req, "limit", 1, TRK_LIST_MAX, TRK_LIST_DEFAULT, &limit) != 0)
        return;
    if (alen != -ENOENT && (alen < 0 || !mm_peer_id_valid(after, (size_t)alen))) {
        mm_reply_error(req, 400, "invalid_field", "query parameter 'after' must be a 'next' cursor from a previous page");
        return;
    }
    snprintf(limit_s, sizeof(limit_s), "%ld", limit);
    trk_disc_start(req, thread->user, trk_sql_list, (const char *const[]){peer.peer_id, after, limit_s}, 3, 1, (int)limit);
}
