/*
 * A peer's broadcast: ready, heartbeat and stop (SPEC §3.1).
 *
 * PostgreSQL holds what a broadcast says (port, candidates); Redis holds
 * whether it is alive (mm:presence:<peer_id> with a TTL). Lookups read
 * liveness from Redis, so a row without a presence key is offline, and is
 * reaped like any expired broadcast. Each write is idempotent, so a client
 * that retries after a 503 never duplicates anything.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "mm/addr.h"
#include "mm/log.h"
#include "trk.h"

#define TRK_MAX_ADDRESSES 16

typedef struct trk_bcast_op {
    mm_async_t async;
    trk_thread_t *t;
    char peer_id[65];
    char observed[48];
    char port[8];
    char *candidates; /* JSON text */
    char presence_key[80];
} trk_bcast_op_t;

static trk_bcast_op_t *trk_bcast_op_new(h2o_req_t *req, trk_thread_t *t, const mm_peer_t *peer)
{
    trk_bcast_op_t *op = mm_async_new(req, sizeof(*op));

    op->t = t;
    memcpy(op->peer_id, peer->peer_id, sizeof(op->peer_id));
    snprintf(op->observed, sizeof(op->observed), "%s", peer->client_ip);
    trk_presence_key(op->presence_key, op->peer_id);
    return op;
}

static void trk_bcast_op_free(trk_bcast_op_t *op)
{
    free(op->candidates);
    mm_async_free(op);
}

/* The interval a peer should heartbeat at: configured or TTL/2, minus up
 * to 10% so that peers that came online together drift apart. */
static int64_t trk_heartbeat_interval(const trk_config_t *conf)
{
    int64_t base = conf->heartbeat_interval != 0 ? conf->heartbeat_interval : conf->presence_ttl / 2;
    uint32_t r;

    if (base < 1)
        base = 1;
    mm_random_bytes(&r, sizeof(r));
    return base - (int64_t)((double)base * 0.1 * ((double)r / 4294967296.0));
}

/* ---- ready ----
 *
 * Presence first, then the row: a ready must know whether the peer was
 * still live (a replacement keeps online_since) or its presence had lapsed
 * (a new broadcast, even if the reaper has not yet removed the old row).
 * And the reaper, which deletes a row only if it is unchanged since it saw
 * the presence key gone, then never removes a row a ready just renewed.
 * Registration is checked before anything is written.
 */

static const char trk_sql_registered[] = "SELECT 1 FROM peers WHERE peer_id = $1";

/* $5: the peer was live. A lapsed broadcast that the reaper has not removed
 * yet is closed here (its `offline` event) before the new one starts. $6:
 * the start, from the clock presence runs on (Redis), so online_since is
 * never later than the last heartbeat. */
static const char trk_sql_ready[] =
    "WITH up AS ("
    " INSERT INTO broadcasts (peer_id, port, candidates, observed_address, started_at)"
    " VALUES ($1, $2::int, $3::jsonb, nullif($4, ''), to_timestamp($6::bigint / 1000.0))"
    " ON CONFLICT (peer_id) DO UPDATE SET port = EXCLUDED.port, candidates = EXCLUDED.candidates,"
    " observed_address = EXCLUDED.observed_address,"
    " started_at = CASE WHEN $5::boolean THEN broadcasts.started_at ELSE EXCLUDED.started_at END"
    " RETURNING (xmax = 0) AS inserted),"
    " ev AS (INSERT INTO peer_events (peer_id, kind, detail)"
    " SELECT $1, v.kind, v.detail FROM up, (VALUES (1, 'offline', '{\"reason\": \"expired\"}'::jsonb),"
    " (2, 'online', jsonb_build_object('port', $2::int, 'observed', nullif($4, '')))) v(ord, kind, detail)"
    " WHERE (v.ord = 1 AND NOT up.inserted AND NOT $5::boolean) OR (v.ord = 2 AND (up.inserted OR NOT $5::boolean))"
    " ORDER BY v.ord)"
    "SELECT inserted FROM up";

static void trk_ready_reply(h2o_req_t *req, trk_bcast_op_t *op)
{
    const trk_config_t *conf = op->t->conf;

    mm_reply_json(req, 200,
                  json_pack("{s:s,s:I,s:I,s:o}", "peer_id", op->peer_id, "expires_in", (json_int_t)conf->presence_ttl,
                            "heartbeat_interval", (json_int_t)trk_heartbeat_interval(conf), "observed_address",
                            op->observed[0] != '\0' ? json_string(op->observed) : json_null()));
}

static void trk_ready_on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL)
        goto out;
    if (status == MM_PG_ERROR && strcmp(mm_pg_sqlstate(res), "23503") == 0) {
        mm_reply_error(req, 403, "not_registered", "register this certificate first: POST /api/relay/register");
    } else if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("ready: %s", PQresultErrorMessage(res));
        mm_reply_unavailable(req, "PostgreSQL");
    } else {
        trk_ready_reply(req, op);
    }
out:
    trk_bcast_op_free(op);
}

static void trk_ready_on_presence(redisReply *reply, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[1]->type != REDIS_REPLY_STRING) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("ready: redis: %s", reply->str);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    {
        const char *params[] = {
            op->peer_id,           op->port, op->candidates, op->observed, reply->element[0]->integer == 1 ? "true" : "false",
            reply->element[1]->str};
        if (mm_pg_query_static(op->t->pg, trk_sql_ready, 6, params, trk_ready_on_row, op) == 0)
            return;
    }
    mm_reply_unavailable(req, "PostgreSQL");
out:
    trk_bcast_op_free(op);
}

static void trk_ready_on_registered(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    char ttl[24];

    if (req == NULL)
        goto out;
    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("ready: %s", PQresultErrorMessage(res));
        mm_reply_unavailable(req, "PostgreSQL");
        goto out;
    }
    if (PQntuples(res) == 0) {
        mm_reply_error(req, 403, "not_registered", "register this certificate first: POST /api/relay/register");
        goto out;
    }
    snprintf(ttl, sizeof(ttl), "%lld", (long long)op->t->conf->presence_ttl);
    {
        const char *argv[] = {"EVAL",        trk_lua_ready, "3", op->presence_key, TRK_DEADLINES_KEY,
                              TRK_EPOCH_KEY, op->observed,  ttl, op->peer_id,      "0"};
        if (mm_redis_command(op->t->redis, trk_ready_on_presence, op, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
            return;
    }
    mm_reply_unavailable(req, "Redis");
out:
    trk_bcast_op_free(op);
}

void trk_ready(h2o_req_t *req, mm_thread_t *thread)
{
    trk_thread_t *t = thread->user;
    json_t *body = NULL, *addresses, *candidates = NULL, *empty = NULL;
    trk_bcast_op_t *op;
    mm_problem_t p;
    mm_peer_t peer;
    int64_t port;

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    if (mm_json_get_int(body, "port", MM_FIELD_REQUIRED, 1, 65535, 0, &port, &p) != 0 ||
        mm_json_get_array(body, "addresses", MM_FIELD_NULLABLE, TRK_MAX_ADDRESSES, &addresses, &p) != 0 ||
        trk_candidates_build(addresses != NULL ? addresses : (empty = json_array()), port, peer.client_ip, &candidates, &p) != 0) {
        mm_reply_problem(req, &p);
        goto out;
    }
    /* both stores are written: refuse before writing anything when one is known to be down */
    if (!mm_redis_is_up(t->redis)) {
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    op = trk_bcast_op_new(req, t, &peer);
    snprintf(op->port, sizeof(op->port), "%lld", (long long)port);
    op->candidates = json_dumps(candidates, JSON_COMPACT);
    {
        const char *params[] = {op->peer_id};
        if (mm_pg_query_static(t->pg, trk_sql_registered, 1, params, trk_ready_on_registered, op) != 0) {
            mm_reply_unavailable(req, "PostgreSQL");
            trk_bcast_op_free(op);
        }
    }
out:
    json_decref(candidates);
    json_decref(empty);
    json_decref(body);
}

/* ---- heartbeat ---- */

/* The observed candidates follow the new source address; reported ones stay. */
static const char trk_sql_observed[] =
    "UPDATE broadcasts SET observed_address = $2,"
    " candidates = (SELECT coalesce(jsonb_agg(CASE WHEN c->>'source' = 'observed'"
    "   THEN c || jsonb_build_object('ip', $2::text, 'scope', $3::text) ELSE c END), '[]'::jsonb)"
    "   FROM jsonb_array_elements(candidates) c)"
    " WHERE peer_id = $1";

static void trk_heartbeat_reply(h2o_req_t *req, trk_bcast_op_t *op)
{
    mm_reply_json(req, 200, json_pack("{s:I}", "expires_in", (json_int_t)op->t->conf->presence_ttl));
}

static void trk_heartbeat_on_observed(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (status == MM_PG_OK) {
        /* only now does presence remember the new address, so a failed update is retried next time */
        const char *argv[] = {"EVAL", trk_lua_observed, "1", op->presence_key, op->observed};
        mm_redis_command(op->t->redis, NULL, NULL, (int)MM_ARRAY_SIZE(argv), argv, NULL);
    } else if (status == MM_PG_ERROR) {
        mm_error("heartbeat: %s", PQresultErrorMessage(res));
    }
    /* the heartbeat itself has been recorded: the peer is alive either way */
    if (req != NULL)
        trk_heartbeat_reply(req, op);
    trk_bcast_op_free(op);
}

static void trk_heartbeat_on_presence(redisReply *reply, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    mm_addr_t a;
    char scope[16];

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply != NULL)
            mm_error("heartbeat: redis: %s", reply->str);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        mm_reply_error(req, 404, "not_broadcasting",
                       "this peer is not broadcasting (it expired or was stopped): send POST /api/relay/broadcast/ready");
        goto out;
    }
    if (op->observed[0] == '\0' || (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, op->observed) == 0) ||
        mm_addr_parse(op->observed, strlen(op->observed), &a) != 0) {
        trk_heartbeat_reply(req, op);
        goto out;
    }
    snprintf(scope, sizeof(scope), "%s", mm_scope_name(mm_addr_scope(&a)));
    {
        const char *params[] = {op->peer_id, op->observed, scope};
        if (mm_pg_query_static(op->t->pg, trk_sql_observed, 3, params, trk_heartbeat_on_observed, op) == 0)
            return;
    }
    trk_heartbeat_reply(req, op);
out:
    trk_bcast_op_free(op);
}

void trk_heartbeat(h2o_req_t *req, mm_thread_t *thread)
{
    trk_thread_t *t = thread->user;
    json_t *body = NULL;
    trk_bcast_op_t *op;
    mm_peer_t peer;
    char ttl[24];

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    json_decref(body);
    op = trk_bcast_op_new(req, t, &peer);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)t->conf->presence_ttl);
    {
        const char *argv[] = {"EVAL", trk_lua_heartbeat, "2", op->presence_key, TRK_DEADLINES_KEY, ttl, op->peer_id};
        if (mm_redis_command(t->redis, trk_heartbeat_on_presence, op, (int)MM_ARRAY_SIZE(argv), argv, NULL) != 0) {
            mm_reply_unavailable(req, "Redis");
            trk_bcast_op_free(op);
        }
    }
}

/* ---- stop ---- */

/* The bootstrap membership ends with the broadcast: its row goes in the same
 * statement, with its event (the foreign key's cascade would delete it silently). */
static const char trk_sql_stop[] =
    "WITH d AS (DELETE FROM broadcasts WHERE peer_id = $1 RETURNING peer_id),"
    " n AS (DELETE FROM bootstrap_nodes n USING d WHERE n.peer_id = d.peer_id RETURNING n.peer_id),"
    " ev AS (INSERT INTO peer_events (peer_id, kind, detail) SELECT peer_id, 'stopped', NULL::jsonb FROM d"
    " UNION ALL SELECT peer_id, 'bootstrap_off', '{\"reason\": \"stopped\"}' FROM n)"
    "SELECT count(*) FROM d";

static void trk_stop_on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL)
        goto out;
    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("stop: %s", PQresultErrorMessage(res));
        mm_reply_unavailable(req, "PostgreSQL");
        goto out;
    }
    mm_reply_json(req, 200, json_object());
out:
    trk_bcast_op_free(op);
}

static void trk_stop_on_presence(redisReply *reply, void *data)
{
    trk_bcast_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    const char *params[1];

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    /* invisible from here on; the row and the event follow */
    params[0] = op->peer_id;
    if (mm_pg_query_static(op->t->pg, trk_sql_stop, 1, params, trk_stop_on_row, op) == 0)
        return;
    mm_reply_unavailable(req, "PostgreSQL");
out:
    trk_bcast_op_free(op);
}

void trk_stop(h2o_req_t *req, mm_thread_t *thread)
{
    trk_thread_t *t = thread->user;
    json_t *body = NULL;
    trk_bcast_op_t *op;
    mm_peer_t peer;
    char membership[80];

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    json_decref(body);
    /* PostgreSQL down now would leave presence gone but the row and its event unwritten */
    if (!mm_pg_is_up(t->pg)) {
        mm_reply_unavailable(req, "PostgreSQL");
        return;
    }
    op = trk_bcast_op_new(req, t, &peer);
    snprintf(membership, sizeof(membership), "%s%s", TRK_BOOTSTRAP_PREFIX, op->peer_id);
    {
        const char *argv[] = {"EVAL",
                              trk_lua_stop,
                              "5",
                              op->presence_key,
                              TRK_DEADLINES_KEY,
                              membership,
                              TRK_BOOTSTRAP_NODES_KEY,
                              TRK_BOOTSTRAP_DEADLINES_KEY,
                              op->peer_id};
        if (mm_redis_command(t->redis, trk_stop_on_presence, op, (int)MM_ARRAY_SIZE(argv), argv, NULL) != 0) {
            mm_reply_unavailable(req, "Redis");
            trk_bcast_op_free(op);
        }
    }
}
