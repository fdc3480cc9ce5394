/*
 * POST /offer and POST /answer (SPEC §3.3 steps 1 and 3).
 *
 * An offer needs two facts from the tracker's data: the caller's registered
 * email (what the target is shown as "from": only registration binds an
 * email to a key, a self-signed certificate could claim any) and, for
 * "to": "<email>", the target's peer_id. Both come from one read-only
 * PostgreSQL query. Then one Lua script checks that the target broadcasts,
 * that its inbox has room, creates the session and announces it
 * (sig_store.c). An answer touches Redis only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "sig.h"

/* $1: the caller; $2: the target. Column 0: the caller's email (NULL: not
 * registered); columns 1, 2: the target's peer_id and email (NULL: unknown). */
static const char sig_sql_by_id[] = "SELECT (SELECT email FROM peers WHERE peer_id = $1), p.peer_id, p.email"
                                    " FROM (SELECT 1) one LEFT JOIN peers p ON p.peer_id = $2";
static const char sig_sql_by_email[] = "SELECT (SELECT email FROM peers WHERE peer_id = $1), p.peer_id, p.email"
                                       " FROM (SELECT 1) one LEFT JOIN peers p ON p.email = $2";

typedef struct sig_offer_op {
    mm_async_t async;
    sig_thread_t *t;
    char from[65];
    char *offer; /* JSON text: {"candidates":[...], "nat_mapping"?} */
    char session_id[SIG_SESSION_ID_LEN + 1];
} sig_offer_op_t;

static void sig_offer_op_free(sig_offer_op_t *op)
{
    free(op->offer);
    mm_async_free(op);
}

/* The stored side of an offer or answer. Steals `candidates`. */
static char *sig_side_json(json_t *candidates, const char *nat_mapping)
{
    json_t *o = json_pack("{s:o}", "candidates", candidates);
    char *s;

    if (nat_mapping != NULL)
        json_object_set_new(o, "nat_mapping", json_string(nat_mapping));
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

/* Reads candidates and nat_mapping of a request body into stored JSON; NULL after a 400. */
static char *sig_side_read(h2o_req_t *req, json_t *body, const mm_peer_t *peer)
{
    const char *nat;
    json_t *cands;
    mm_problem_t p;

    if (sig_nat_mapping_check(body, &nat, &p) != 0 ||
        sig_candidates_check(json_object_get(body, "candidates"), peer->client_ip, &cands, &p) != 0) {
        mm_reply_problem(req, &p);
        return NULL;
    }
    return sig_side_json(cands, nat);
}

/* ---- offer ---- */

/* SPEC §3: a 429 is `rate_limited` with Retry-After; here, until the oldest
 * pending offer of the target expires and makes room. */
static void sig_reply_inbox_full(h2o_req_t *req, uint64_t ms, int64_t max)
{
    unsigned long long s = (ms + 999) / 1000 != 0 ? (ms + 999) / 1000 : 1;
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%llu", s);

    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, h2o_strdup(&req->pool, buf, (size_t)n).base,
                   (size_t)n);
    mm_reply_error(req, 429, "rate_limited", "this peer already has %lld pending offers; retry after %llu s, when one has expired",
                   (long long)max, s);
}

static void sig_offer_on_created(redisReply *reply, void *data)
{
    sig_offer_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    long long code;

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("offer: redis: %s", reply->str);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    code = reply->element[0]->integer;
    if (code == 1 && reply->elements == 2) {
        sig_metrics_offer("created");
        mm_reply_json(req, 201,
                      json_pack("{s:s,s:I}", "session_id", op->session_id, "expires_in",
                                (json_int_t)((reply->element[1]->integer + 999) / 1000)));
    } else if (code == 0) {
        sig_metrics_offer("not_found");
        mm_reply_error(req, 404, "not_found", "no broadcasting peer by that name");
    } else if (code == -1 && reply->elements == 2) {
        uint64_t ms = reply->element[1]->integer > 0 ? (uint64_t)reply->element[1]->integer : 1;
        sig_metrics_offer("inbox_full");
        sig_reply_inbox_full(req, ms, op->t->conf->max_pending_offers);
    } else {
        mm_reply_unavailable(req, "Redis");
    }
out:
    sig_offer_op_free(op);
}

static void sig_offer_on_peers(mm_pg_status_t status, PGresult *res, void *data)
{
    sig_offer_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    const sig_config_t *conf = op->t->conf;
    char presence[96], inbox[96], session[96], channel[96], ttl[24], max[24];
    uint8_t rnd[SIG_SESSION_ID_LEN / 2];
    const char *to;

    if (req == NULL)
        goto out;
    if (status != MM_PG_OK || PQntuples(res) != 1) {
        if (status == MM_PG_ERROR)
            mm_error("offer: %s", PQresultErrorMessage(res));
        mm_reply_unavailable(req, "PostgreSQL");
        goto out;
    }
    if (PQgetisnull(res, 0, 0)) {
        mm_reply_error(req, 403, "not_registered", "register this certificate first: POST /api/relay/register");
        goto out;
    }
    if (PQgetisnull(res, 0, 1)) {
        sig_metrics_offer("not_found");
        mm_reply_error(req, 404, "not_found", "no broadcasting peer by that name");
        goto out;
    }
    to = PQgetvalue(res, 0, 1);
    if (strcmp(to, op->from) == 0) {
        mm_reply_error(req, 400, "invalid_field", "to: an offer goes to another peer, not to yourself");
        goto out;
    }
    mm_random_bytes(rnd, sizeof(rnd));
    mm_hex_encode(op->session_id, rnd, sizeof(rnd));
    snprintf(presence, sizeof(presence), "mm:presence:%s", to);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)conf->session_ttl * 1000);
    snprintf(max, sizeof(max), "%lld", (long long)conf->max_pending_offers);
    {
        const char *argv[] = {"EVAL",
                              sig_lua_offer,
                              "3",
                              presence,
                              sig_key(inbox, "inbox", to),
                              sig_key(session, "session", op->session_id),
                              op->session_id,
                              ttl,
                              max,
                              op->from,
                              PQgetvalue(res, 0, 0),
                              to,
                              PQgetvalue(res, 0, 2),
                              op->offer,
                              sig_key(channel, "wake", to)};
        if (mm_redis_command(op->t->redis, sig_offer_on_created, op, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
            return;
    }
    mm_reply_unavailable(req, "Redis");
out:
    sig_offer_op_free(op);
}

void sig_offer(h2o_req_t *req, mm_thread_t *thread)
{
    sig_thread_t *t = thread->user;
    char target[MM_EMAIL_MAX + 1];
    const char *to, *sql;
    size_t tolen;
    sig_offer_op_t *op;
    mm_problem_t p;
    mm_peer_t peer;
    json_t *body;
    char *offer;

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    if (mm_json_get_string(body, "to", MM_FIELD_REQUIRED, 512, &to, &tolen, &p) != 0) {
        mm_reply_problem(req, &p);
        goto out;
    }
    if (mm_peer_id_valid(to, tolen)) {
        sql = sig_sql_by_id;
        snprintf(target, sizeof(target), "%s", to);
    } else if (memchr(to, '@', tolen) != NULL && mm_email_normalize(to, tolen, target) == 0) {
        sql = sig_sql_by_email;
    } else {
        mm_reply_error(req, 400, "invalid_field", "to must be an email address or a peer_id (64 lowercase hex characters)");
        goto out;
    }
    if ((offer = sig_side_read(req, body, &peer)) == NULL)
        goto out;
    /* both stores answer every offer: refuse early rather than half-way */
    if (!mm_redis_is_up(t->redis)) {
        free(offer);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    op = mm_async_new(req, sizeof(*op));
    op->t = t;
    op->offer = offer;
    memcpy(op->from, peer.peer_id, sizeof(op->from));
    if (mm_pg_query_static(t->pg, sql, 2, (const char *const[]){peer.peer_id, target}, sig_offer_on_peers, op) != 0) {
        mm_reply_unavailable(req, "PostgreSQL");
        sig_offer_op_free(op);
    }
out:
    json_decref(body);
}

/* ---- answer ---- */

typedef struct sig_answer_op {
    mm_async_t async;
    char session_id[SIG_SESSION_ID_LEN + 1];
} sig_answer_op_t;

static void sig_answer_on_done(redisReply *reply, void *data)
{
    sig_answer_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    redisReply **f;
    size_t i;
    long long punch_at, now;

    if (req == NULL)
        goto out;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("answer: redis: %s", reply->str);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    f = reply->element;
    if (f[0]->integer == 0) {
        mm_reply_error(req, 404, "not_found", "no such session: it expired, or it is not yours to answer");
        goto out;
    }
    /* {1|2, from, from email, offer, secret, punch_at, ms left, now} */
    if (reply->elements != 8 || f[6]->type != REDIS_REPLY_INTEGER || f[7]->type != REDIS_REPLY_INTEGER) {
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    for (i = 1; i != 6; ++i) {
        if (f[i]->type != REDIS_REPLY_STRING) {
            mm_reply_unavailable(req, "Redis");
            goto out;
        }
    }
    if (f[0]->integer == 1)
        sig_metrics_answered();
    punch_at = strtoll(f[5]->str, NULL, 10);
    now = f[7]->integer;
    mm_reply_json(req, 200,
                  json_pack("{s:s,s:I,s:I,s:s,s:I,s:o}", "session_id", op->session_id, "punch_at", (json_int_t)punch_at,
                            "punch_in_ms", (json_int_t)(punch_at > now ? punch_at - now : 0), "secret", f[4]->str, "expires_in",
                            (json_int_t)((f[6]->integer + 999) / 1000), "peer", sig_party(f[1]->str, f[2]->str, f[3]->str)));
out:
    mm_async_free(op);
}

void sig_answer(h2o_req_t *req, mm_thread_t *thread)
{
    sig_thread_t *t = thread->user;
    char session[96], inbox[96], channel[96], delay[24], *answer;
    unsigned char secret[SIG_SECRET_LEN], secret64[4 * ((SIG_SECRET_LEN + 2) / 3) + 1];
    const char *sid;
    size_t sidlen;
    sig_answer_op_t *op;
    mm_problem_t p;
    mm_peer_t peer;
    json_t *body;

    if (mm_req_peer(req, &peer) != 0 || mm_req_json(req, &body) != 0)
        return;
    if (mm_json_get_string(body, "session_id", MM_FIELD_REQUIRED, 64, &sid, &sidlen, &p) != 0) {
        mm_reply_problem(req, &p);
        goto out;
    }
    if (!sig_session_id_valid(sid, sidlen)) {
        mm_reply_error(req, 400, "invalid_field", "session_id must be a session id from an offer (32 lowercase hex characters)");
        goto out;
    }
    if ((answer = sig_side_read(req, body, &peer)) == NULL)
        goto out;
    if (!mm_redis_is_up(t->redis)) {
        free(answer);
        mm_reply_unavailable(req, "Redis");
        goto out;
    }
    op = mm_async_new(req, sizeof(*op));
    memcpy(op->session_id, sid, SIG_SESSION_ID_LEN);
    /* a fresh secret per session; the first answer's stands (sig_lua_answer) */
    mm_random_bytes(secret, sizeof(secret));
    EVP_EncodeBlock(secret64, secret, sizeof(secret));
    snprintf(delay, sizeof(delay), "%lld", (long long)t->conf->punch_delay_ms);
    {
        const char *argv[] = {"EVAL",
                              sig_lua_answer,
                              "2",
                              sig_key(session, "session", op->session_id),
                              sig_key(inbox, "inbox", peer.peer_id),
                              peer.peer_id,
                              answer,
                              (const char *)secret64,
                              delay,
                              op->session_id,
                              sig_key(channel, "answered", op->session_id)};
        int rc = mm_redis_command(t->redis, sig_answer_on_done, op, (int)MM_ARRAY_SIZE(argv), argv, NULL);
        OPENSSL_cleanse(secret, sizeof(secret));
        OPENSSL_cleanse(secret64, sizeof(secret64));
        free(answer);
        if (rc != 0) {
            mm_reply_unavailable(req, "Redis");
            mm_async_free(op);
        }
    }
out:
    json_decref(body);
}
