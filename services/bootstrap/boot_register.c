/*
 * Joining and leaving the bootstrap registry (SPEC §3.2).
 *
 * register: the caller must be broadcasting (its presence key in Redis and
 * its broadcasts row). A membership that is live and has already passed
 * the connect test on this gossip port is renewed without testing again;
 * otherwise the registry tests the port on the peer's addresses and, if
 * none answers, refuses with 422 and writes nothing. Then Redis (key, set
 * and deadline in one script) and then the row, the order the tracker's
 * ready uses: mm-reaper deletes a row only when it is unchanged since it saw
 * the membership key gone, so it never removes a row a register has just
 * renewed. Running it again is a renewal: a client may retry after any
 * failure.
 *
 * unregister: the key first (invisible from then on), then the row with its
 * `bootstrap_off` event.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/log.h"
#include "boot.h"

typedef struct boot_reg_op {
    mm_async_t async;
    boot_thread_t *t;
    char peer_id[65];
    int64_t gossip_port; /* 0 until known: the body's, else the broadcast's port */
    char *stored;        /* the live membership's value ("<port> <address>"), or NULL */
    char value[96];      /* the value to store */
    char reachable[64];
    char membership_key[80], presence_key[80];
} boot_reg_op_t;

static const char boot_sql_broadcast[] = "SELECT port, candidates::text FROM broadcasts WHERE peer_id = $1";

/* $4: the membership was live (a renewal). A membership that had lapsed but
 * whose row the reaper has not removed yet is closed here (its
 * `bootstrap_off`) before the new one begins. $5: the time, from Redis's
 * clock. */
static const char boot_sql_join[] =
    "WITH up AS ("
    " INSERT INTO bootstrap_nodes (peer_id, gossip_port, reachable_address, registered_at, renewed_at)"
    " VALUES ($1, $2::int, $3, to_timestamp($5::bigint / 1000.0), to_timestamp($5::bigint / 1000.0))"
    " ON CONFLICT (peer_id) DO UPDATE SET gossip_port = EXCLUDED.gossip_port,"
    " reachable_address = EXCLUDED.reachable_address, renewed_at = EXCLUDED.renewed_at,"
    " registered_at = CASE WHEN $4::boolean THEN bootstrap_nodes.registered_at ELSE EXCLUDED.registered_at END"
    " RETURNING (xmax = 0) AS inserted),"
    " ev AS (INSERT INTO peer_events (peer_id, kind, detail)"
    " SELECT $1, v.kind, v.detail FROM up, (VALUES (1, 'bootstrap_off', '{\"reason\": \"expired\"}'::jsonb),"
    " (2, 'bootstrap_on', jsonb_build_object('gossip_port', $2::int, 'address', $3::text))) v(ord, kind, detail)"
    " WHERE (v.ord = 1 AND NOT up.inserted AND NOT $4::boolean) OR (v.ord = 2 AND (up.inserted OR NOT $4::boolean))"
    " ORDER BY v.ord)"
    "SELECT inserted FROM up";

static const char boot_sql_leave[] = "WITH d AS (DELETE FROM bootstrap_nodes WHERE peer_id = $1 RETURNING peer_id)"
                                     " INSERT INTO peer_events (peer_id, kind, detail)"
                                     " SELECT peer_id, 'bootstrap_off', '{\"reason\": \"unregistered\"}' FROM d";

static boot_reg_op_t *boot_reg_op_new(h2o_req_t *req, boot_thread_t *t, const mm_peer_t *peer)
{
    boot_reg_op_t *op = mm_async_new(req, sizeof(*op));

    op->t = t;
    memcpy(op->peer_id, peer->peer_id, sizeof(op->peer_id));
    boot_membership_key(op->membership_key, op->peer_id);
    boot_presence_key(op->presence_key, op->peer_id);
    return op;
}

static void boot_reg_op_free(boot_reg_op_t *op)
{
    free(op->stored);
    mm_async_free(op);
}

/* ---- the steps' plumbing: each step sends one command and ends the op
 * when it cannot (503) ---- */

static void boot_reg_query(h2o_req_t *req, boot_reg_op_t *op, const char *sql, int n, const char *const *params, mm_pg_cb cb)
{
    if (mm_pg_query_static(op->t->pg, sql, n, params, cb, op) == 0)
        return;
    mm_reply_unavailable(req, "PostgreSQL");
    boot_reg_op_free(op);
}

static void boot_reg_eval(h2o_req_t *req, boot_reg_op_t *op, int argc, const char **argv, mm_redis_cb cb)
{
    if (mm_redis_command(op->t->redis, cb, op, argc, argv, NULL) == 0)
        return;
    mm_reply_unavailable(req, "Redis");
    boot_reg_op_free(op);
}
/* BOOT_REG_EVAL(req, op, cb, "EVAL", script, ...): the argument count from the list itself. */
#define BOOT_REG_EVAL(req, op, cb, ...)                                                                                            \
    boot_reg_eval(req, op, (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), (const char *[]){__VA_ARGS__}, cb)

/* 1 (having answered 503) when a statement failed. */
static int boot_pg_failed(h2o_req_t *req, mm_pg_status_t status, PGresult *res, const char *step)
{
    if (status == MM_PG_OK)
        return 0;
    if (status == MM_PG_ERROR)
        mm_error("%s: %s", step, PQresultErrorMessage(res));
    mm_reply_unavailable(req, "PostgreSQL");
    return 1;
}

/* 1 (having answered 503) when a script failed or answered other than an
 * array of `n` elements (n < 0: any answer but an error). */
static int boot_redis_failed(h2o_req_t *req, redisReply *reply, int n, const char *step)
{
    if (reply != NULL && reply->type != REDIS_REPLY_ERROR &&
        (n < 0 || (reply->type == REDIS_REPLY_ARRAY && reply->elements == (size_t)n)))
        return 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        mm_error("%s: redis: %s", step, reply->str);
    mm_reply_unavailable(req, "Redis");
    return 1;
}

static void boot_not_broadcasting(h2o_req_t *req)
{
    mm_reply_error(req, 403, "not_broadcasting",
                   "only a broadcasting peer can be a bootstrap node: send POST /api/relay/broadcast/ready first");
}

/* ---- register, last steps: the row, then the answer ---- */

static void boot_reg_on_sample(int status, json_t *nodes, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    /* the membership is stored: a failed sample only leaves the list empty */
    if (status != 0)
        mm_warn("register: no nodes to return (a store failed)");
    if (req != NULL)
        mm_reply_json(
            req, 200,
            json_pack("{s:I,s:o}", "expires_in", (json_int_t)op->t->conf->ttl, "nodes", nodes != NULL ? nodes : json_array()));
    else
        json_decref(nodes);
    boot_reg_op_free(op);
}

static void boot_reg_on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req != NULL && status == MM_PG_ERROR && strcmp(mm_pg_sqlstate(res), "23503") == 0) {
        /* the broadcast ended between our checks and this row: take the membership back */
        const char *argv[] = {"EVAL", boot_lua_leave, "3", op->membership_key, BOOT_NODES_KEY, BOOT_DEADLINES_KEY, op->peer_id};
        mm_redis_command(op->t->redis, NULL, NULL, (int)MM_ARRAY_SIZE(argv), argv, NULL);
        boot_not_broadcasting(req);
    } else if (req != NULL && !boot_pg_failed(req, status, res, "register")) {
        if (boot_sample(op->t, op->peer_id, BOOT_DISCOVER_DEFAULT, 0, boot_reg_on_sample, op) != 0)
            boot_reg_on_sample(-ENOTCONN, NULL, op);
        return;
    }
    boot_reg_op_free(op);
}

static void boot_reg_on_joined(redisReply *reply, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    char port[8];

    if (req != NULL && reply != NULL && reply->type == REDIS_REPLY_NIL) {
        boot_not_broadcasting(req); /* it stopped or expired meanwhile */
    } else if (req != NULL && !boot_redis_failed(req, reply, 2, "register")) {
        /* {1 when the membership was live, the time set (ms, Redis's clock)} */
        const char *live = reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer == 1 ? "true" : "false";
        const char *ms = reply->element[1]->type == REDIS_REPLY_STRING ? reply->element[1]->str : "0";
        snprintf(port, sizeof(port), "%lld", (long long)op->gossip_port);
        boot_reg_query(req, op, boot_sql_join, 5, (const char *const[]){op->peer_id, port, op->reachable, live, ms},
                       boot_reg_on_row);
        return;
    }
    boot_reg_op_free(op);
}

/* Stores the membership with the address that passed the test. */
static void boot_reg_join(h2o_req_t *req, boot_reg_op_t *op)
{
    char ttl[24];

    snprintf(ttl, sizeof(ttl), "%lld", (long long)op->t->conf->ttl);
    snprintf(op->value, sizeof(op->value), "%lld %s", (long long)op->gossip_port, op->reachable);
    BOOT_REG_EVAL(req, op, boot_reg_on_joined, "EVAL", boot_lua_join, "4", op->membership_key, op->presence_key, BOOT_NODES_KEY,
                  BOOT_DEADLINES_KEY, ttl, op->peer_id, op->value);
}

/* ---- register, middle steps: the connect test ---- */

static void boot_reg_on_probe(int result, const char *address, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req != NULL && result == 0) {
        snprintf(op->reachable, sizeof(op->reachable), "%s", address);
        boot_reg_join(req, op);
        return;
    }
    if (req != NULL && result == -ECANCELED)
        mm_reply_unavailable(req, "the connect test (the registry is stopping)");
    else if (req != NULL)
        mm_reply_error(req, 422, "not_reachable",
                       "no TCP connection could be made to gossip port %lld on this peer's addresses within %lld ms: "
                       "open the port (firewall, NAT port forwarding) and register again",
                       (long long)op->gossip_port, (long long)op->t->conf->probe_timeout_ms);
    boot_reg_op_free(op);
}

/* A live membership that passed the test on this port is renewed as it is. */
static int boot_reg_remembered(boot_reg_op_t *op)
{
    int port;

    return op->stored != NULL &&
           boot_membership_parse(op->stored, strlen(op->stored), &port, op->reachable, sizeof(op->reachable)) == 0 &&
           port == op->gossip_port;
}

static void boot_reg_on_broadcast(mm_pg_status_t status, PGresult *res, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    mm_addr_t targets[BOOT_PROBE_MAX];
    size_t n;

    if (req == NULL || boot_pg_failed(req, status, res, "register"))
        goto out;
    if (PQntuples(res) != 1) {
        boot_not_broadcasting(req);
        goto out;
    }
    if (op->gossip_port == 0)
        op->gossip_port = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    if (boot_reg_remembered(op)) {
        boot_reg_join(req, op);
        return;
    }
    if ((n = boot_probe_targets(PQgetvalue(res, 0, 1), targets)) == 0) {
        mm_reply_error(req, 422, "not_reachable",
                       "this broadcast has no address the registry can test (only private or loopback ones were reported, "
                       "and none was observed): broadcast a public address");
        goto out;
    }
    if (boot_probe_start(op->t, targets, n, (uint16_t)op->gossip_port, boot_reg_on_probe, op) == 0)
        return;
    mm_reply_unavailable(req, "the connect test (too many at once)");
out:
    boot_reg_op_free(op);
}

/* ---- register, first step: is the peer broadcasting, is it a member? ---- */

static void boot_reg_on_status(redisReply *reply, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL || boot_redis_failed(req, reply, 2, "register")) {
        boot_reg_op_free(op);
        return;
    }
    if (reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[0]->integer != 1) {
        boot_not_broadcasting(req);
        boot_reg_op_free(op);
        return;
    }
    if (reply->element[1]->type == REDIS_REPLY_STRING)
        op->stored = mm_xstrndup(reply->element[1]->str, reply->element[1]->len);
    boot_reg_query(req, op, boot_sql_broadcast, 1, (const char *const[]){op->peer_id}, boot_reg_on_broadcast);
}

void boot_register(h2o_req_t *req, mm_thread_t *thread)
{
    boot_thread_t *t = thread->user;
    json_t *body = NULL;
    boot_reg_op_t *op;
    mm_problem_t p;
    mm_peer_t peer;
    int64_t port;

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    if (mm_json_get_int(body, "gossip_port", MM_FIELD_NULLABLE, 1, 65535, 0, &port, &p) != 0) {
        mm_reply_problem(req, &p);
    } else if (!mm_pg_is_up(t->pg)) {
        /* both stores are written: refuse before anything when one is known to be down */
        mm_reply_unavailable(req, "PostgreSQL");
    } else {
        op = boot_reg_op_new(req, t, &peer);
        op->gossip_port = port;
        BOOT_REG_EVAL(req, op, boot_reg_on_status, "EVAL", boot_lua_status, "2", op->presence_key, op->membership_key);
    }
    json_decref(body);
}

/* ---- unregister: the key, then the row with its event ---- */

static void boot_unreg_on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    h2o_req_t *req = mm_async_req(data);

    if (req != NULL && !boot_pg_failed(req, status, res, "unregister"))
        mm_reply_json(req, 200, json_object());
    boot_reg_op_free(data);
}

static void boot_unreg_on_key(redisReply *reply, void *data)
{
    boot_reg_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req == NULL || boot_redis_failed(req, reply, -1, "unregister")) {
        boot_reg_op_free(op);
        return;
    }
    /* invisible from here on */
    boot_reg_query(req, op, boot_sql_leave, 1, (const char *const[]){op->peer_id}, boot_unreg_on_row);
}

void boot_unregister(h2o_req_t *req, mm_thread_t *thread)
{
    boot_thread_t *t = thread->user;
    json_t *body = NULL;
    boot_reg_op_t *op;
    mm_peer_t peer;

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    json_decref(body);
    /* PostgreSQL down now would leave the key gone but the row and its event unwritten */
    if (!mm_pg_is_up(t->pg)) {
        mm_reply_unavailable(req, "PostgreSQL");
        return;
    }
    op = boot_reg_op_new(req, t, &peer);
    BOOT_REG_EVAL(req, op, boot_unreg_on_key, "EVAL", boot_lua_leave, "3", op->membership_key, BOOT_NODES_KEY, BOOT_DEADLINES_KEY,
                  op->peer_id);
}
