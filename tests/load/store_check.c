/*
 * store_check: drives libmm's PostgreSQL and Redis clients against real
 * servers on one h2o evloop, checking the contracts in pg.h and redis.h:
 * results are right, callbacks run exactly once, never from inside the
 * call that queued them, PostgreSQL completions come back in FIFO order,
 * a client that is down refuses work with -ENOTCONN, work held when a
 * server goes away completes as unavailable (NULL for Redis), and the
 * clients come back by themselves. Stop and restart the servers while it
 * runs (pg_ctl stop -m fast / start, kill and restart redis-server) to
 * exercise the last three.
 *
 *   MM_DATABASE_URL=postgresql:///postgres?host=/tmp/x \
 *   MM_REDIS_URL=unix:/tmp/x/redis.sock store_check [-o] [seconds]
 *
 * Either variable may be unset to skip that store. -o: also require that
 * an outage was seen and recovered from (for the scripted restarts).
 * Prints one line of counts per second and PASS or FAIL; exits 0 on PASS.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/log.h"
#include "mm/pg.h"
#include "mm/redis.h"
#include "mm/timer.h"

#define TICK_MS 100
#define BURST 300      /* queued at once on the first connection */
#define PER_TICK 20    /* queries, and SET/GET pairs, per tick */
#define SLOW_EVERY 10  /* ticks: one slow query/command keeps a queue behind it */
#define FINAL_BATCH 50 /* queued at the end; the first callback frees the client */

typedef enum kind {
    PG_DOUBLE, /* SELECT $1::int * 2 */
    PG_DIV0,   /* an error the server reports: 22012 */
    PG_SLEEP,  /* pg_sleep: holds the queue */
    PG_FREE,   /* its callback frees the client */
    R_SET,
    R_GET,       /* follows its SET on the same link: must read it back */
    R_WRONGTYPE, /* a Redis error reply */
    R_BLPOP,     /* blocks the link for a while: commands queue behind it */
    R_FREE,      /* its callback frees the client */
    R_INFO       /* CLIENT INFO from on_connect: the SELECTed db */
} kind_t;

typedef struct token {
    kind_t kind;
    int done; /* callbacks received; must end at exactly 1 */
    long seq; /* PostgreSQL issue order */
    long expect;
} token_t;

typedef struct counts {
    long pg_sent, pg_ok, pg_err, pg_unavail, pg_enotconn;
    long r_sent, r_ok, r_err, r_null, r_enotconn;
} counts_t;

static struct {
    h2o_loop_t *loop;
    mm_pg_t *pg;
    mm_redis_t *redis;
    int pg_wanted, redis_wanted;
    int in_call; /* set while mm_pg_query / mm_redis_command run */
    token_t **tokens;
    size_t ntokens, captokens;
    long pg_seq, pg_last_done;
    long ticks;
    int burst_done;
    int final;
    int expect_db;
    int pg_was_up, pg_ups, redis_ups;
    long pg_ok_since_up, r_ok_since_up;
    int problems;
    counts_t cur, total;
    mm_timer_t tick;
} g;

static void problem(const char *what, const token_t *t)
{
    g.problems++;
    if (g.problems <= 20)
        printf("PROBLEM: %s (kind %d, seq %ld)\n", what, t != NULL ? (int)t->kind : -1, t != NULL ? t->seq : -1L);
}

static token_t *token_new(kind_t kind, long expect)
{
    token_t *t = mm_xcalloc(1, sizeof(*t));

    t->kind = kind;
    t->expect = expect;
    if (g.ntokens == g.captokens) {
        g.captokens = g.captokens != 0 ? g.captokens * 2 : 1024;
        g.tokens = mm_xrealloc(g.tokens, g.captokens * sizeof(*g.tokens));
    }
    g.tokens[g.ntokens++] = t;
    return t;
}

/* A callback's first duty: it must be the only call for this token, and
 * must not come from inside the call that queued it. */
static void token_arrive(token_t *t)
{
    if (g.in_call)
        problem("callback ran inside the queuing call", t);
    if (t->done++ != 0)
        problem("callback ran twice", t);
}

/* ---- PostgreSQL ---- */

static void on_pg(mm_pg_status_t status, PGresult *res, void *data)
{
    token_t *t = data;

    token_arrive(t);
    if (t->seq <= g.pg_last_done)
        problem("postgres completion out of FIFO order", t);
    g.pg_last_done = t->seq;
    switch (status) {
    case MM_PG_OK:
        g.cur.pg_ok++;
        g.pg_ok_since_up++;
        if (t->kind == PG_DIV0)
            problem("1/0 succeeded", t);
        if (t->kind == PG_DOUBLE && (PQntuples(res) != 1 || strtol(PQgetvalue(res, 0, 0), NULL, 10) != t->expect))
            problem("wrong result", t);
        break;
    case MM_PG_ERROR:
        g.cur.pg_err++;
        if (res == NULL || t->kind != PG_DIV0 || strcmp(mm_pg_sqlstate(res), "22012") != 0)
            problem("unexpected postgres error", t);
        break;
    case MM_PG_UNAVAILABLE:
        g.cur.pg_unavail++;
        if (res != NULL)
            problem("unavailable with a result", t);
        break;
    }
    if (t->kind == PG_FREE && g.pg != NULL) {
        mm_pg_t *pg = g.pg;
        size_t i;

        g.pg = NULL;
        mm_pg_free(pg); /* from inside its own callback */
        for (i = 0; i != g.ntokens; ++i)
            if (g.tokens[i]->kind <= PG_FREE && g.tokens[i]->done != 1)
                problem("query still pending after mm_pg_free", g.tokens[i]);
    }
}

static void pg_send(kind_t kind, const char *sql, int nparams, const char *const *params, long expect)
{
    token_t *t = token_new(kind, expect);
    int ret;

    t->seq = ++g.pg_seq;
    g.in_call = 1;
    ret = mm_pg_query(g.pg, sql, nparams, params, on_pg, t);
    g.in_call = 0;
    if (ret == 0) {
        g.cur.pg_sent++;
    } else {
        t->done = 1; /* no callback will come */
        if (ret == -ENOTCONN)
            g.cur.pg_enotconn++;
        else
            problem("mm_pg_query failed", t);
    }
}

static void pg_double(void)
{
    char buf[24];
    const char *params[1] = {buf};
    long v = g.pg_seq % 100000;

    snprintf(buf, sizeof(buf), "%ld", v);
    pg_send(PG_DOUBLE, "SELECT $1::int * 2", 1, params, v * 2);
}

static void pg_tick(void)
{
    int i, up = mm_pg_is_up(g.pg);

    if (up && !g.pg_was_up) {
        g.pg_ups++;
        g.pg_ok_since_up = 0;
    }
    g.pg_was_up = up;
    if (!up) {
        pg_send(PG_DOUBLE, "SELECT 1", 0, NULL, 1); /* counted as ENOTCONN */
        return;
    }
    if (!g.burst_done) {
        g.burst_done = 1;
        for (i = 0; i != BURST; ++i)
            pg_double();
        return;
    }
    if (g.ticks % SLOW_EVERY == 0)
        pg_send(PG_SLEEP, "SELECT pg_sleep(0.5)", 0, NULL, 0);
    for (i = 0; i != PER_TICK; ++i)
        pg_double();
    pg_send(PG_DIV0, "SELECT 1/0", 0, NULL, 0);
}

/* ---- Redis ---- */

static void on_redis(redisReply *reply, void *data)
{
    token_t *t = data;

    token_arrive(t);
    if (reply == NULL) {
        g.cur.r_null++;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        g.cur.r_err++;
        if (t->kind != R_WRONGTYPE || strncmp(reply->str, "WRONGTYPE", 9) != 0)
            problem("unexpected redis error", t);
    } else {
        g.cur.r_ok++;
        g.r_ok_since_up++;
        if (t->kind == R_WRONGTYPE)
            problem("LPUSH on a string succeeded", t);
        if (t->kind == R_GET && (reply->type != REDIS_REPLY_STRING || strtol(reply->str, NULL, 10) != t->expect))
            problem("GET did not read back its SET", t);
        if (t->kind == R_INFO) {
            char want[32];

            snprintf(want, sizeof(want), " db=%d ", g.expect_db);
            if (reply->type != REDIS_REPLY_STRING || strstr(reply->str, want) == NULL)
                problem("on_connect: the connection is not on the URL's db", t);
        }
    }
    if (t->kind == R_FREE && g.redis != NULL) {
        mm_redis_t *r = g.redis;

        g.redis = NULL;
        mm_redis_free(r); /* from inside its own callback; the rest get NULL before the loop resumes */
    }
}

static void redis_send(kind_t kind, long expect, int argc, const char **argv)
{
    token_t *t = token_new(kind, expect);
    int ret;

    g.in_call = 1;
    ret = mm_redis_command(g.redis, on_redis, t, argc, argv, NULL);
    g.in_call = 0;
    if (ret == 0) {
        g.cur.r_sent++;
    } else {
        t->done = 1;
        if (ret == -ENOTCONN)
            g.cur.r_enotconn++;
        else
            problem("mm_redis_command failed", t);
    }
}

static void on_redis_connect(mm_redis_t *r, void *data)
{
    const char *argv[] = {"CLIENT", "INFO"};
    const char *setv[] = {"SET", "mm:check:str", "x"};

    g.redis_ups++;
    g.r_ok_since_up = 0;
    if (!mm_redis_is_up(r))
        problem("on_connect while not up", NULL);
    redis_send(R_INFO, 0, 2, argv);
    redis_send(R_SET, 0, 3, setv);
}

static void redis_tick(void)
{
    char key[32], val[24];
    const char *setv[] = {"SET", key, val}, *getv[] = {"GET", key};
    const char *lpush[] = {"LPUSH", "mm:check:str", "y"};
    const char *blpop[] = {"BLPOP", "mm:check:nothing", "0.5"};
    int i;

    if (!mm_redis_is_up(g.redis)) {
        redis_send(R_SET, 0, 2, getv); /* counted as ENOTCONN */
        return;
    }
    if (g.ticks % SLOW_EVERY == 5)
        redis_send(R_BLPOP, 0, 3, blpop);
    for (i = 0; i != PER_TICK; ++i) {
        long v = g.ticks * 1000 + i;

        snprintf(key, sizeof(key), "mm:check:%d", i);
        snprintf(val, sizeof(val), "%ld", v);
        redis_send(R_SET, 0, 3, setv);
        redis_send(R_GET, v, 2, getv);
    }
    redis_send(R_WRONGTYPE, 0, 3, lpush);
}

/* ---- the clock ---- */

static void print_line(void)
{
    counts_t *c = &g.cur;

    printf("t=%5.1fs pg[up=%d sent=%ld ok=%ld err=%ld unavail=%ld enotconn=%ld] "
           "redis[up=%d sent=%ld ok=%ld err=%ld null=%ld enotconn=%ld connects=%d]\n",
           g.ticks * TICK_MS / 1000.0, mm_pg_is_up(g.pg), c->pg_sent, c->pg_ok, c->pg_err, c->pg_unavail, c->pg_enotconn,
           mm_redis_is_up(g.redis), c->r_sent, c->r_ok, c->r_err, c->r_null, c->r_enotconn, g.redis_ups);
    fflush(stdout);
    g.total.pg_sent += c->pg_sent;
    g.total.pg_ok += c->pg_ok;
    g.total.pg_err += c->pg_err;
    g.total.pg_unavail += c->pg_unavail;
    g.total.pg_enotconn += c->pg_enotconn;
    g.total.r_sent += c->r_sent;
    g.total.r_ok += c->r_ok;
    g.total.r_err += c->r_err;
    g.total.r_null += c->r_null;
    g.total.r_enotconn += c->r_enotconn;
    memset(c, 0, sizeof(*c));
}

/* The end: queue a batch whose first callback frees the client, so the
 * rest must be completed by the free; a client that is down is freed here. */
static void start_final(void)
{
    const char *getv[] = {"GET", "mm:check:0"};
    int i;

    g.final = 1;
    if (g.pg != NULL) {
        if (mm_pg_is_up(g.pg)) {
            pg_send(PG_FREE, "SELECT 1", 0, NULL, 1);
            for (i = 1; i != FINAL_BATCH; ++i)
                pg_double();
        } else {
            mm_pg_free(g.pg);
            g.pg = NULL;
        }
    }
    if (g.redis != NULL) {
        if (mm_redis_is_up(g.redis)) {
            redis_send(R_FREE, 0, 2, getv);
            for (i = 1; i != FINAL_BATCH; ++i)
                redis_send(R_SET, 0, 2, getv);
        } else {
            mm_redis_free(g.redis);
            g.redis = NULL;
        }
    }
}

static void on_tick(mm_timer_t *timer)
{
    long *end_ticks = timer->data;

    if (g.final) {
        if (g.pg == NULL && g.redis == NULL)
            return; /* done: the main loop stops */
        mm_timer_start(timer, TICK_MS);
        return;
    }
    ++g.ticks;
    if (g.pg != NULL)
        pg_tick();
    if (g.redis != NULL)
        redis_tick();
    if (g.ticks % (1000 / TICK_MS) == 0)
        print_line();
    if (g.ticks >= *end_ticks)
        start_final();
    mm_timer_start(timer, TICK_MS);
}

/* Argument checks answer at once and never call back. */
static void check_einval(void)
{
    const char *sub[] = {"subscribe", "ch"}, *mon[] = {"MONITOR"}, *nul[] = {"GET", NULL};
    token_t *t = token_new(PG_DOUBLE, 0);

    t->done = 1;
    g.in_call = 1;
    if (g.pg != NULL &&
        (mm_pg_query(g.pg, "SELECT 1", -1, NULL, on_pg, t) != -EINVAL || mm_pg_query(g.pg, NULL, 0, NULL, on_pg, t) != -EINVAL ||
         mm_pg_query(g.pg, "SELECT $1", 1, NULL, on_pg, t) != -EINVAL))
        problem("mm_pg_query accepted bad arguments", t);
    if (g.redis != NULL && (mm_redis_command(g.redis, on_redis, t, 2, sub, NULL) != -EINVAL ||
                            mm_redis_command(g.redis, on_redis, t, 1, mon, NULL) != -EINVAL ||
                            mm_redis_command(g.redis, on_redis, t, 0, sub, NULL) != -EINVAL ||
                            mm_redis_command(g.redis, on_redis, t, 2, nul, NULL) != -EINVAL))
        problem("mm_redis_command accepted bad arguments", t);
    g.in_call = 0;
}

int main(int argc, char **argv)
{
    const char *db_url = getenv("MM_DATABASE_URL"), *redis_url = getenv("MM_REDIS_URL");
    const char *level = getenv("MM_LOG_LEVEL");
    long seconds = 20, end_ticks;
    int expect_outage = 0, argi = 1, i;
    size_t k;
    mm_err_t err = {{0}};

    if (argi < argc && strcmp(argv[argi], "-o") == 0) {
        expect_outage = 1;
        ++argi;
    }
    if (argi < argc && (seconds = strtol(argv[argi], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: %s [-o] [seconds]\n", argv[0]);
        return 2;
    }
    if (db_url == NULL && redis_url == NULL) {
        fprintf(stderr, "%s: set MM_DATABASE_URL and/or MM_REDIS_URL\n", argv[0]);
        return 2;
    }
    mm_log_init("store_check", level != NULL ? level : "info");
    g.loop = h2o_evloop_create();
    if (db_url != NULL) {
        g.pg_wanted = 1;
        g.pg = mm_pg_new(g.loop, db_url);
    }
    if (redis_url != NULL) {
        g.redis_wanted = 1;
        if (mm_redis_parse_url(redis_url, NULL, NULL, NULL, &g.expect_db, &err) != 0 ||
            (g.redis = mm_redis_new(g.loop, redis_url, &err)) == NULL) {
            fprintf(stderr, "%s: %s\n", argv[0], err.msg);
            return 2;
        }
        mm_redis_on_connect(g.redis, on_redis_connect, NULL);
    }
    check_einval();
    end_ticks = seconds * 1000 / TICK_MS;
    mm_timer_init(&g.tick, g.loop, on_tick, &end_ticks);
    mm_timer_start(&g.tick, TICK_MS);
    while (g.pg != NULL || g.redis != NULL || mm_timer_is_active(&g.tick))
        h2o_evloop_run(g.loop, INT32_MAX);
    mm_timer_dispose(&g.tick);
    for (i = 0; i != 3; ++i) /* lets h2o free the sockets the clients closed */
        h2o_evloop_run(g.loop, 0);
    h2o_evloop_destroy(g.loop);
    print_line();

    for (k = 0; k != g.ntokens; ++k) {
        if (g.tokens[k]->done != 1)
            problem("callback count is not exactly one", g.tokens[k]);
        free(g.tokens[k]);
    }
    free(g.tokens);
    if (g.pg_wanted && (g.pg_ups == 0 || g.total.pg_ok == 0))
        problem("postgres never worked", NULL);
    if (g.redis_wanted && (g.redis_ups == 0 || g.total.r_ok == 0))
        problem("redis never worked", NULL);
    if (expect_outage && g.pg_wanted &&
        (g.pg_ups < 2 || g.total.pg_unavail == 0 || g.total.pg_enotconn == 0 || g.pg_ok_since_up == 0))
        problem("postgres: no outage with unavailable, ENOTCONN and recovery seen", NULL);
    if (expect_outage && g.redis_wanted &&
        (g.redis_ups < 2 || g.total.r_null == 0 || g.total.r_enotconn == 0 || g.r_ok_since_up == 0))
        problem("redis: no outage with NULL replies, ENOTCONN and recovery seen", NULL);
    printf("TOTAL pg[sent=%ld ok=%ld err=%ld unavail=%ld enotconn=%ld ups=%d] "
           "redis[sent=%ld ok=%ld err=%ld null=%ld enotconn=%ld connects=%d] callbacks=%zu\n",
           g.total.pg_sent, g.total.pg_ok, g.total.pg_err, g.total.pg_unavail, g.total.pg_enotconn, g.pg_ups, g.total.r_sent,
           g.total.r_ok, g.total.r_err, g.total.r_null, g.total.r_enotconn, g.redis_ups, g.ntokens);
    printf("%s (%d problems)\n", g.problems == 0 ? "PASS" : "FAIL", g.problems);
    return g.problems == 0 ? 0 : 1;
}
