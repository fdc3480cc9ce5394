/*
 * GET /discover?limit=N — a uniformly random sample of live bootstrap
 * nodes, never the caller (SPEC §3.2); the same sample answers a
 * register's "nodes".
 *
 * Redis draws the sample: SRANDMEMBER on the set of node ids, keeping the
 * members whose membership and presence keys both exist (boot_lua_sample),
 * with their membership values (gossip port, tested address), so the work
 * is O(limit) whatever the number of nodes and an expired node or one whose
 * broadcast ended is never shown. PostgreSQL then gives those few their
 * email and current candidates by primary key, and says in the same query
 * whether the caller is registered: like lookups, discovery costs a
 * registration.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/identity.h"
#include "mm/log.h"
#include "boot.h"

/* Column 0: the caller is registered; then (peer_id, email, candidates),
 * one node per row (or one row of NULLs when there is none). */
static const char boot_sql_nodes[] = "SELECT EXISTS (SELECT 1 FROM peers WHERE peer_id = $1), x.* FROM (SELECT 1) one LEFT JOIN ("
                                     " SELECT b.peer_id, p.email, b.candidates::text FROM broadcasts b JOIN peers p USING (peer_id)"
                                     " WHERE b.peer_id = ANY ($2::text[])) x ON true";

typedef struct boot_sample_op {
    boot_thread_t *t;
    char caller[65];
    int check_caller;
    size_t limit;
    boot_drawn_t *drawn; /* the sample, shuffled */
    size_t n;
    boot_sample_cb done;
    void *data;
} boot_sample_op_t;

static void boot_sample_finish(boot_sample_op_t *op, int status, json_t *nodes)
{
    op->done(status, nodes, op->data);
    free(op->drawn);
    free(op);
}

int boot_membership_parse(const char *value, size_t len, int *gossip_port, char *reachable, size_t size)
{
    const char *sp = memchr(value, ' ', len);
    char *end;
    long port;

    if (sp == NULL || sp == value || (size_t)(value + len - sp - 1) >= size || sp + 1 == value + len)
        return -EINVAL;
    port = strtol(value, &end, 10);
    if (end != sp || port < 1 || port > 65535)
        return -EINVAL;
    *gossip_port = (int)port;
    memcpy(reachable, sp + 1, (size_t)(value + len - sp - 1));
    reachable[value + len - sp - 1] = '\0';
    return 0;
}

json_t *boot_node_candidates(const char *candidates, int gossip_port, const char *reachable)
{
    json_t *in = json_loads(candidates, 0, NULL), *out = json_array(), *c;
    mm_addr_t *seen = NULL, best, a;
    size_t i, nseen = 0, k;
    int have_best = reachable != NULL && mm_addr_parse(reachable, strlen(reachable), &best) == 0;

    if (!json_is_array(in))
        goto done;
    seen = mm_xcalloc(json_array_size(in) + 1, sizeof(*seen));
    json_array_foreach(in, i, c)
    {
        const char *ip = json_string_value(json_object_get(c, "ip"));
        json_t *rec;
        if (ip == NULL || mm_addr_parse(ip, strlen(ip), &a) != 0)
            continue;
        for (k = 0; k != nseen && !mm_addr_same_ip(&seen[k], &a); ++k)
            ;
        if (k != nseen)
            continue; /* one entry per IP: they all carry the same port now */
        seen[nseen++] = a;
        rec = json_pack("{s:s,s:i,s:O,s:O}", "ip", ip, "port", gossip_port, "scope", json_object_get(c, "scope"), "source",
                        json_object_get(c, "source"));
        if (rec == NULL)
            continue;
        /* the address that passed the connect test goes first: the one known to answer */
        if (have_best && mm_addr_same_ip(&a, &best))
            json_array_insert_new(out, 0, rec);
        else
            json_array_append_new(out, rec);
    }
done:
    free(seen);
    json_decref(in);
    return out;
}

static void boot_sample_on_rows(mm_pg_status_t status, PGresult *res, void *data)
{
    boot_sample_op_t *op = data;
    json_t *nodes;
    size_t i;
    int r, n;

    if (status != MM_PG_OK) {
        if (status == MM_PG_ERROR)
            mm_error("discover: %s", PQresultErrorMessage(res));
        boot_sample_finish(op, -EIO, NULL);
        return;
    }
    if (op->check_caller && (PQntuples(res) < 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)) {
        boot_sample_finish(op, -EACCES, NULL);
        return;
    }
    /* in the sample's order, which is random: PostgreSQL returns rows in its own */
    nodes = json_array();
    n = PQntuples(res);
    for (i = 0; i != op->n; ++i) {
        const boot_drawn_t *d = &op->drawn[i];
        for (r = 0; r != n; ++r) {
            if (PQgetisnull(res, r, 1) || strcmp(PQgetvalue(res, r, 1), d->peer_id) != 0)
                continue;
            json_array_append_new(nodes, json_pack("{s:s,s:s,s:i,s:o}", "peer_id", d->peer_id, "email", PQgetvalue(res, r, 2),
                                                   "gossip_port", d->gossip_port, "candidates",
                                                   boot_node_candidates(PQgetvalue(res, r, 3), d->gossip_port, d->reachable)));
            break;
        }
    }
    boot_sample_finish(op, 0, nodes);
}

void boot_shuffle(boot_drawn_t *drawn, size_t n)
{
    boot_drawn_t tmp;
    uint32_t r[64];
    size_t i, j;

    for (i = n; i > 1; --i) {
        /* one call to the generator per 64 swaps */
        if ((n - i) % MM_ARRAY_SIZE(r) == 0)
            mm_random_bytes(r, sizeof(r));
        j = (size_t)(((uint64_t)r[(n - i) % MM_ARRAY_SIZE(r)] * i) >> 32);
        tmp = drawn[i - 1];
        drawn[i - 1] = drawn[j];
        drawn[j] = tmp;
    }
}

static void boot_sample_on_ids(redisReply *reply, void *data)
{
    boot_sample_op_t *op = data;
    char *list;
    size_t i, len = 3;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            mm_error("discover: redis: %s", reply->str);
        boot_sample_finish(op, -ENOTCONN, NULL);
        return;
    }
    /* {id, membership value, ...} */
    op->drawn = mm_xcalloc(reply->elements / 2 + 1, sizeof(*op->drawn));
    for (i = 0; i + 1 < reply->elements; i += 2) {
        redisReply *id = reply->element[i], *v = reply->element[i + 1];
        boot_drawn_t *d = &op->drawn[op->n];
        /* members are written by the registry alone; still, only ids go into the array literal */
        if (id->type != REDIS_REPLY_STRING || !mm_peer_id_valid(id->str, id->len) || v->type != REDIS_REPLY_STRING ||
            boot_membership_parse(v->str, v->len, &d->gossip_port, d->reachable, sizeof(d->reachable)) != 0)
            continue;
        memcpy(d->peer_id, id->str, 65);
        ++op->n;
    }
    boot_shuffle(op->drawn, op->n);
    if (op->n > op->limit)
        op->n = op->limit;
    if (op->n == 0 && !op->check_caller) {
        boot_sample_finish(op, 0, json_array());
        return;
    }
    /* "{id,id,...}": ids are hex, nothing to quote */
    list = mm_xmalloc(len + op->n * 65);
    list[0] = '{';
    for (i = len = 1; i <= op->n; ++i) {
        memcpy(list + len, op->drawn[i - 1].peer_id, 64);
        len += 64;
        list[len++] = i == op->n ? '}' : ',';
    }
    if (op->n == 0)
        list[len++] = '}';
    list[len] = '\0';
    {
        const char *params[] = {op->caller, list};
        i = (size_t)mm_pg_query_static(op->t->pg, boot_sql_nodes, 2, params, boot_sample_on_rows, op);
    }
    free(list);
    if (i != 0)
        boot_sample_finish(op, -EIO, NULL);
}

int boot_sample(boot_thread_t *t, const char *caller, int limit, int check_caller, boot_sample_cb done, void *data)
{
    boot_sample_op_t *op;
    char want[16];

    if (!mm_pg_is_up(t->pg))
        return -ENOTCONN;
    op = mm_xcalloc(1, sizeof(*op));
    op->t = t;
    snprintf(op->caller, sizeof(op->caller), "%s", caller);
    op->check_caller = check_caller;
    op->limit = (size_t)limit;
    op->done = done;
    op->data = data;
    snprintf(want, sizeof(want), "%d", limit);
    {
        const char *argv[] = {
            "EVAL", boot_lua_sample, "1", BOOT_NODES_KEY, want, op->caller, BOOT_MEMBERSHIP_PREFIX, BOOT_PRESENCE_PREFIX};
        if (mm_redis_command(t->redis, boot_sample_on_ids, op, (int)MM_ARRAY_SIZE(argv), argv, NULL) == 0)
            return 0;
    }
    free(op);
    return -ENOTCONN;
}

/* ---- the handler ---- */

static void boot_discover_done(int status, json_t *nodes, void *data)
{
    h2o_req_t *req = mm_async_req(data);

    if (req == NULL)
        json_decref(nodes);
    else if (status == 0)
        mm_reply_json(req, 200, json_pack("{s:o}", "nodes", nodes));
    else if (status == -EACCES)
        mm_reply_error(req, 403, "not_registered", "register this certificate first: POST /api/relay/register");
    else
        mm_reply_unavailable(req, status == -ENOTCONN ? "Redis" : "PostgreSQL");
    mm_async_free(data);
}

void boot_discover(h2o_req_t *req, mm_thread_t *thread)
{
    boot_thread_t *t = thread->user;
    mm_peer_t peer;
    long limit;
    void *op;

    if (mm_req_peer(req, &peer) != 0 || mm_req_query_int(req, "limit", 1, BOOT_DISCOVER_MAX, BOOT_DISCOVER_DEFAULT, &limit) != 0)
        return;
    op = mm_async_new(req, sizeof(mm_async_t));
    if (boot_sample(t, peer.peer_id, (int)limit, 1, boot_discover_done, op) != 0) {
        mm_reply_unavailable(req, mm_pg_is_up(t->pg) ? "Redis" : "PostgreSQL");
        mm_async_free(op);
    }
}
