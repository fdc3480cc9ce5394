/*
 * GET /inbox?wait=N: the caller's pending offers (SPEC §3.3 step 2).
 *
 * One Lua script takes every pending offer at once and empties the inbox, so
 * an offer is delivered exactly once however many pollers (on however many
 * copies) ask at the same time. With nothing pending and N > 0 the request
 * waits (sig_wait.c) for a message on mm:sig:wake:<caller> and takes again;
 * when N seconds have passed, a last take decides: the offers, or
 * {"offers":[]}. Offers taken for a client that went away before it could get
 * them are put back (and announced), not lost.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/log.h"
#include "sig.h"

#define SIG_TAKE_FIELDS 7 /* session id, expiry, from, from email, offer JSON, age ms, ms left */

typedef struct sig_inbox_op {
    sig_waiter_t w; /* first */
    char inbox_key[96];
} sig_inbox_op_t;

static void sig_inbox_on_take(redisReply *reply, void *data);

static int sig_inbox_check(sig_waiter_t *w)
{
    sig_inbox_op_t *op = (sig_inbox_op_t *)w;
    const char *argv[] = {"EVAL", sig_lua_take, "1", op->inbox_key, SIG_KEY_PREFIX "session:"};

    return mm_redis_command(w->t->redis, sig_inbox_on_take, op, (int)MM_ARRAY_SIZE(argv), argv, NULL);
}

static int sig_take_valid(const redisReply *reply)
{
    size_t i;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements % SIG_TAKE_FIELDS != 0)
        return 0;
    for (i = 0; i != reply->elements; ++i)
        if (reply->element[i]->type != REDIS_REPLY_STRING)
            return 0;
    return 1;
}

/* Puts taken offers back into the inbox: their client is gone. */
static void sig_inbox_requeue(sig_inbox_op_t *op, const redisReply *reply)
{
    size_t n = reply->elements / SIG_TAKE_FIELDS, i, argc = 0;
    const char **argv = mm_xcalloc(6 + 2 * n, sizeof(*argv));
    char channel[96];

    argv[argc++] = "EVAL";
    argv[argc++] = sig_lua_requeue;
    argv[argc++] = "1";
    argv[argc++] = op->inbox_key;
    argv[argc++] = SIG_KEY_PREFIX "session:";
    /* mm:sig:inbox:<peer_id> -> mm:sig:wake:<peer_id> */
    argv[argc++] = sig_key(channel, "wake", op->inbox_key + strlen(SIG_KEY_PREFIX "inbox:"));
    for (i = 0; i != n; ++i) {
        argv[argc++] = reply->element[i * SIG_TAKE_FIELDS]->str;
        argv[argc++] = reply->element[i * SIG_TAKE_FIELDS + 1]->str;
    }
    if (mm_redis_command(op->w.t->redis, NULL, NULL, (int)argc, argv, NULL) != 0)
        mm_warn("inbox: %zu offers taken for a client that went away could not be put back", n);
    else
        mm_debug("inbox: %zu offers put back: their client went away", n);
    free(argv);
}

static json_t *sig_inbox_offers(const redisReply *reply)
{
    json_t *offers = json_array();
    size_t i;

    for (i = 0; i + SIG_TAKE_FIELDS <= reply->elements; i += SIG_TAKE_FIELDS) {
        redisReply **f = reply->element + i;
        json_t *offer = json_loads(f[4]->str, 0, NULL), *cands = json_object_get(offer, "candidates"), *o;
        long long left = strtoll(f[6]->str, NULL, 10);

        cands = json_is_array(cands) ? json_incref(cands) : json_array();
        o = json_pack("{s:s,s:{s:s,s:s},s:o,s:I}", "session_id", f[0]->str, "from", "peer_id", f[2]->str, "email", f[3]->str,
                      "candidates", cands, "expires_in", (json_int_t)((left + 999) / 1000));
        if (offer != NULL && json_is_string(json_object_get(offer, "nat_mapping")))
            json_object_set(o, "nat_mapping", json_object_get(offer, "nat_mapping"));
        json_array_append_new(offers, o);
        json_decref(offer);
        sig_metrics_delivered((uint64_t)strtoull(f[5]->str, NULL, 10));
    }
    return offers;
}

static void sig_inbox_on_take(redisReply *reply, void *data)
{
    sig_inbox_op_t *op = data;
    int next = sig_wait_checked(&op->w), valid = sig_take_valid(reply);

    if (sig_wait_client_gone(&op->w)) {
        if (valid && reply->elements != 0)
            sig_inbox_requeue(op, reply);
        goto end;
    }
    if (!valid) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("inbox: redis: %s", reply->str);
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        goto end;
    }
    if (reply->elements != 0) {
        json_t *offers = sig_inbox_offers(reply);
        mm_reply_json(sig_wait_end(&op->w), 200, json_pack("{s:o}", "offers", offers));
        goto end;
    }
    switch (next) {
    case SIG_WAIT_AGAIN:
        if (sig_wait_recheck(&op->w) == 0)
            return;
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        goto end;
    case SIG_WAIT_REPLY:
        mm_reply_json(sig_wait_end(&op->w), 200, json_pack("{s:[]}", "offers"));
        goto end;
    default:
        return; /* keep waiting */
    }
end:
    sig_wait_end(&op->w);
    sig_wait_free(&op->w);
}

void sig_inbox(h2o_req_t *req, mm_thread_t *thread)
{
    sig_thread_t *t = thread->user;
    char channel[96];
    int wait;
    sig_inbox_op_t *op;
    mm_peer_t peer;

    if (mm_req_peer(req, &peer) != 0)
        return;
    if (sig_wait_arg(req, t, &wait) != 0)
        return;
    op = sig_wait_new(req, t, sizeof(*op), sig_key(channel, "wake", peer.peer_id), sig_inbox_check);
    sig_key(op->inbox_key, "inbox", peer.peer_id);
    if (sig_wait_start(&op->w, (unsigned)wait) != 0) {
        mm_reply_unavailable(sig_wait_end(&op->w), "Redis");
        sig_wait_free(&op->w);
    }
}
