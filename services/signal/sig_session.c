/*
 * GET /session/{id}?wait=N: a session as one of its two parties sees it
 * (SPEC §3.3 step 4).
 *
 * The offerer long-polls for the answer: {"state":"pending"} until the
 * target answers, then {"state":"answered","punch_at","secret","peer"} with
 * the target's candidates (the target reading its own session sees the
 * offerer's). Anyone else, and everyone once the session has expired, gets
 * 404 not_found: a session id reveals nothing to a third party. A waiting
 * read wakes on mm:sig:answered:<id> and ends no later than the session.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/log.h"
#include "sig.h"

#define SIG_SESSION_PATH "/session/"

/* Fields of sig_lua_read's reply. */
enum { SR_FROM, SR_FROM_EMAIL, SR_TO, SR_TO_EMAIL, SR_STATE, SR_OFFER, SR_ANSWER, SR_SECRET, SR_PUNCH_AT, SR_LEFT, SR_NOW, SR_N };

typedef struct sig_session_op {
    sig_waiter_t w; /* first */
    char peer_id[65];
    char session_id[SIG_SESSION_ID_LEN + 1];
    char session_key[96];
} sig_session_op_t;

static void sig_session_on_read(redisReply *reply, void *data);

static int sig_session_check(sig_waiter_t *w)
{
    sig_session_op_t *op = (sig_session_op_t *)w;
    const char *argv[] = {"EVAL", sig_lua_read, "1", op->session_key};

    return mm_redis_command(w->t->redis, sig_session_on_read, op, (int)MM_ARRAY_SIZE(argv), argv, NULL);
}

/* {"peer_id","email","candidates"[,"nat_mapping"]} of one party, from its stored offer or answer JSON. */
json_t *sig_party(const char *peer_id, const char *email, const char *stored)
{
    json_t *s = json_loads(stored, 0, NULL), *c = json_object_get(s, "candidates"), *nat = json_object_get(s, "nat_mapping");
    json_t *o = json_pack("{s:s,s:o,s:o}", "peer_id", peer_id, "email", email[0] != '\0' ? json_string(email) : json_null(),
                          "candidates", json_is_array(c) ? json_incref(c) : json_array());

    if (json_is_string(nat))
        json_object_set(o, "nat_mapping", nat);
    json_decref(s);
    return o;
}

static int sig_read_valid(const redisReply *reply)
{
    size_t i;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements != SR_N))
        return 0;
    for (i = 0; i != reply->elements; ++i)
        if (reply->element[i]->type != (i >= SR_LEFT ? REDIS_REPLY_INTEGER : REDIS_REPLY_STRING))
            return 0;
    return 1;
}

static json_t *sig_session_answered(sig_session_op_t *op, redisReply **f)
{
    int is_from = strcmp(op->peer_id, f[SR_FROM]->str) == 0;
    long long punch_at = strtoll(f[SR_PUNCH_AT]->str, NULL, 10), now = f[SR_NOW]->integer;
    json_t *peer = is_from ? sig_party(f[SR_TO]->str, f[SR_TO_EMAIL]->str, f[SR_ANSWER]->str)
                           : sig_party(f[SR_FROM]->str, f[SR_FROM_EMAIL]->str, f[SR_OFFER]->str);

    return json_pack("{s:s,s:s,s:I,s:I,s:s,s:I,s:o}", "session_id", op->session_id, "state", "answered", "punch_at",
                     (json_int_t)punch_at, "punch_in_ms", (json_int_t)(punch_at > now ? punch_at - now : 0), "secret",
                     f[SR_SECRET]->str, "expires_in", (json_int_t)((f[SR_LEFT]->integer + 999) / 1000), "peer", peer);
}

static void sig_session_on_read(redisReply *reply, void *data)
{
    sig_session_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);
    int next = sig_wait_checked(&op->w);
    redisReply **f;

    if (req == NULL)
        goto end;
    if (!sig_read_valid(reply)) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("session: redis: %s", reply->str);
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        goto end;
    }
    f = reply->element;
    /* expired, never existed, or not the caller's: one answer for all three */
    if (reply->elements == 0 || (strcmp(op->peer_id, f[SR_FROM]->str) != 0 && strcmp(op->peer_id, f[SR_TO]->str) != 0)) {
        mm_reply_error(sig_wait_end(&op->w), 404, "not_found", "no such session: it expired, or it is not yours");
        goto end;
    }
    if (strcmp(f[SR_STATE]->str, "answered") == 0) {
        mm_reply_json(sig_wait_end(&op->w), 200, sig_session_answered(op, f));
        goto end;
    }
    switch (next) {
    case SIG_WAIT_AGAIN:
        if (sig_wait_recheck(&op->w) == 0)
            return;
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        goto end;
    case SIG_WAIT_REPLY:
        mm_reply_json(sig_wait_end(&op->w), 200,
                      json_pack("{s:s,s:s,s:I}", "session_id", op->session_id, "state", "pending", "expires_in",
                                (json_int_t)((f[SR_LEFT]->integer + 999) / 1000)));
        goto end;
    default:
        /* keep waiting, but not past the session's end: then the last read says 404 */
        sig_wait_shorten(&op->w, (uint64_t)f[SR_LEFT]->integer);
        return;
    }
end:
    sig_wait_end(&op->w);
    sig_wait_free(&op->w);
}

void sig_session(h2o_req_t *req, mm_thread_t *thread)
{
    sig_thread_t *t = thread->user;
    const char *id = req->path_normalized.base + strlen(SIG_SESSION_PATH);
    size_t idlen = req->path_normalized.len - strlen(SIG_SESSION_PATH);
    char channel[96];
    int wait;
    sig_session_op_t *op;
    mm_peer_t peer;

    if (mm_req_peer(req, &peer) != 0)
        return;
    if (!sig_session_id_valid(id, idlen)) {
        mm_reply_error(req, 404, "not_found", "no such session: a session id is 32 lowercase hex characters");
        return;
    }
    if (sig_wait_arg(req, t, &wait) != 0)
        return;
    {
        char sid[SIG_SESSION_ID_LEN + 1];
        memcpy(sid, id, SIG_SESSION_ID_LEN);
        sid[SIG_SESSION_ID_LEN] = '\0';
        op = sig_wait_new(req, t, sizeof(*op), sig_key(channel, "answered", sid), sig_session_check);
        memcpy(op->session_id, sid, sizeof(sid));
    }
    memcpy(op->peer_id, peer.peer_id, sizeof(op->peer_id));
    sig_key(op->session_key, "session", op->session_id);
    if (sig_wait_start(&op->w, (unsigned)wait) != 0) {
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        sig_wait_free(&op->w);
    }
}
