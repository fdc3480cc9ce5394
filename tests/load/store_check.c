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
 * Static (prepared) PostgreSQL queries run interleaved with plain ones:
 * their results must be right on every connection, one with a syntax error
 * must fail with 42601 every time, pg_prepared_statements must only ever
 * hold our statements under stable names, and once per run a second client
 * holds a lock that a statement's prepare step waits for and kills the
 * waiting backend: that query must complete as unavailable and the
 * statements must work again on the next connection. This creates the table
 * mm_check_lock and the function mm_check_kill_waiters in the database.
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
    PG_DOUBLE,   /* SELECT $1::int * 2 */
    PG_DIV0,     /* an error the server reports: 22012 */
    PG_SLEEP,    /* pg_sleep: holds the queue */
    PG_SETUP,    /* creates what the lock test needs */
    PG_STMTS,    /* reads pg_prepared_statements */
    PG_S_DOUBLE, /* static: $1::int * 2 */
    PG_S_CONCAT, /* static: two text parameters, the second NULL at times */
    PG_S_DIV0,   /* static: 1 / $1, an error at execution when $1 is 0 */
    PG_S_SYNTAX, /* static that cannot be prepared: 42601 each time */
    PG_S_LOCK,   /* static on mm_check_lock: its prepare waits for the lock test */
    PG_FREE,     /* its callback frees the client: the last kind on `g.pg` */
    PG_KILL,     /* on the second client: holds the lock, kills the waiting backend */
    R_SET,
    R_GET,       /* follows its SET on the same link: must read it back */
    R_WRONGTYPE, /* a Redis error reply */
    R_BLPOP,     /* blocks the link for a while: commands queue behind it */
    R_FREE,      /* its callback frees the client */
    R_INFO       /* CLIENT INFO from on_connect: the SELECTed db */
} kind_t;

typedef struct token {
    kind_t kind;
    int done;   /* callbacks received; must end at exactly 1 */
    int status; /* PostgreSQL: what the callback said */
    long seq;   /* PostgreSQL issue order */
    long expect;
} token_t;

typedef struct counts {
    long pg_sent, pg_ok, pg_err, pg_unavail, pg_enotconn, pg_static;
    long r_sent, r_ok, r_err, r_null, r_enotconn;
} counts_t;

/* The static statements: each array is its own statement. */
static const char sql_s_double[] = "SELECT $1::int * 2";
static const char sql_s_concat[] = "SELECT $1::text || '-' || $2::text";
static const char sql_s_div0[] = "SELECT 1 / $1::int";
static const char sql_s_syntax[] = "SELEC $1::int";
static const char sql_s_lock[] = "SELECT count(*) FROM mm_check_lock";
static const char *const static_ok[] = {sql_s_double, sql_s_concat, sql_s_div0, sql_s_lock}; /* preparable */

/* Holds an exclusive lock on mm_check_lock for `hold` seconds, then kills
 * the backends waiting for it to run `q` and says how many there were. */
static const char sql_setup_fn[] =
    "CREATE OR REPLACE FUNCTION mm_check_kill_waiters(q text, hold float8) RETURNS int LANGUAGE plpgsql AS $$"
    " DECLARE n int;"
    " BEGIN"
    "  LOCK TABLE mm_check_lock IN ACCESS EXCLUSIVE MODE;"
    "  PERFORM pg_sleep(hold);"
    "  SELECT count(pg_terminate_backend(pid)) INTO n FROM pg_stat_activity"
    "   WHERE datname = current_database() AND query = q AND wait_event_type = 'Lock' AND pid <> pg_backend_pid();"
    "  RETURN n;"
    " END $$";

typedef enum kill_state {
    KILL_IDLE,    /* not run yet, or to run again */
    KILL_LOCKING, /* the second client holds the lock */
    KILL_WAITING, /* ... and the main client's prepare waits for it */
    KILL_DONE     /* one waiter was killed: judged at the end */
} kill_state_t;

static struct {
    h2o_loop_t *loop;
    mm_pg_t *pg;
    mm_pg_t *aux; /* the second PostgreSQL client, for the lock test */
    mm_redis_t *redis;
    int pg_wanted, redis_wanted;
    int in_call; /* set while mm_pg_query(_static) / mm_redis_command run */
    token_t **tokens;
    size_t ntokens, captokens;
    long pg_seq, pg_last_done;
    long ticks;
    int burst_done;
    int final;
    int expect_db;
    int pg_was_up, pg_ups, redis_ups;
    long pg_ok_since_up, static_ok_since_up, r_ok_since_up;
    int setup_sent, setup_done;
    kill_state_t kill_state;
    long kill_tick;
    token_t *kill_query; /* the main client's query whose prepare waited */
    int kills;           /* lock tests that ran; one is wanted */
    long static_ok_after_kill;
    const char *stmt_names[16]; /* pg_prepared_statements: name "mm<i>" -> our text */
    int stmts_max;              /* most statements seen prepared at once */
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

static int is_static_kind(kind_t kind)
{
    return kind >= PG_S_DOUBLE && kind <= PG_S_LOCK;
}

/* Is `res` the error that `t` was sent to provoke? */
static int expected_error(const token_t *t, const PGresult *res)
{
    const char *state = mm_pg_sqlstate(res);

    switch (t->kind) {
    case PG_DIV0:
        return strcmp(state, "22012") == 0;
    case PG_S_DIV0:
        return t->expect < 0 && strcmp(state, "22012") == 0;
    case PG_S_SYNTAX:
        return strcmp(state, "42601") == 0;
    default:
        return 0;
    }
}

/* pg_prepared_statements of the main client's session: only our preparable
 * texts, each name always naming the same one, and never a failed one. */
static void check_stmts(const token_t *t, const PGresult *res)
{
    int i, j, n = PQntuples(res);

    if (n > g.stmts_max)
        g.stmts_max = n;
    for (i = 0; i != n; ++i) {
        const char *name = PQgetvalue(res, i, 0), *text = PQgetvalue(res, i, 1), *ours = NULL;
        long k = strncmp(name, "mm", 2) == 0 ? strtol(name + 2, NULL, 10) : 0;

        for (j = 0; j != (int)MM_ARRAY_SIZE(static_ok); ++j)
            if (strcmp(text, static_ok[j]) == 0)
                ours = static_ok[j];
        if (ours == NULL || k < 1 || k >= (long)MM_ARRAY_SIZE(g.stmt_names)) {
            problem("pg_prepared_statements holds a statement that is not ours", t);
            continue;
        }
        if (g.stmt_names[k] == NULL)
            g.stmt_names[k] = ours;
        else if (g.stmt_names[k] != ours)
            problem("a statement name changed its text", t);
    }
}

static void check_result(const token_t *t, const PGresult *res)
{
    char want[48];

    switch (t->kind) {
    case PG_DIV0:
        problem("1/0 succeeded", t);
        break;
    case PG_S_SYNTAX:
        problem("a statement with a syntax error succeeded", t);
        break;
    case PG_DOUBLE:
    case PG_S_DOUBLE:
    case PG_S_DIV0:
    case PG_S_LOCK:
        if (PQntuples(res) != 1 || strtol(PQgetvalue(res, 0, 0), NULL, 10) != t->expect)
            problem("wrong result", t);
        break;
    case PG_S_CONCAT:
        snprintf(want, sizeof(want), "%ld-x", t->expect);
        if (PQntuples(res) != 1 || (t->expect % 2 != 0 ? !PQgetisnull(res, 0, 0) : strcmp(PQgetvalue(res, 0, 0), want) != 0))
            problem("wrong result", t);
        break;
    case PG_STMTS:
        check_stmts(t, res);
        break;
    default:
        break;
    }
}

static void on_pg(mm_pg_status_t status, PGresult *res, void *data)
{
    token_t *t = data;

    token_arrive(t);
    t->status = status;
    if (t->seq <= g.pg_last_done)
        problem("postgres completion out of FIFO order", t);
    g.pg_last_done = t->seq;
    switch (status) {
    case MM_PG_OK:
        g.cur.pg_ok++;
        g.pg_ok_since_up++;
        if (is_static_kind(t->kind))
            g.static_ok_since_up++;
        check_result(t, res);
        if (t->kind == PG_SETUP && t->expect == 1)
            g.setup_done = 1;
        if (is_static_kind(t->kind) && g.kill_state == KILL_DONE && t->seq > g.kill_query->seq)
            g.static_ok_after_kill++; /* FIFO: on a connection made after the kill */
        break;
    case MM_PG_ERROR:
        g.cur.pg_err++;
        if (res == NULL || !expected_error(t, res)) {
            problem("unexpected postgres error", t);
            printf("  (%s: %s)\n", mm_pg_sqlstate(res), res != NULL ? PQresultErrorMessage(res) : "");
        }
        break;
    case MM_PG_UNAVAILABLE:
        g.cur.pg_unavail++;
        if (res != NULL)
            problem("unavailable with a result", t);
        if (t->kind == PG_SETUP)
            g.setup_sent = 0; /* again on the next connection */
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

static token_t *pg_send(kind_t kind, const char *sql, int nparams, const char *const *params, long expect)
{
    token_t *t = token_new(kind, expect);
    int ret;

    t->seq = ++g.pg_seq;
    g.in_call = 1;
    if (is_static_kind(kind))
        ret = mm_pg_query_static(g.pg, sql, nparams, params, on_pg, t);
    else
        ret = mm_pg_query(g.pg, sql, nparams, params, on_pg, t);
    g.in_call = 0;
    if (ret == 0) {
        g.cur.pg_sent++;
        g.cur.pg_static += is_static_kind(kind);
    } else {
        t->done = 1; /* no callback will come */
        if (ret == -ENOTCONN)
            g.cur.pg_enotconn++;
        else
            problem("mm_pg_query failed", t);
    }
    return t;
}

/* Plain and static in turn, so each kind queues behind the other. */
static void pg_double(void)
{
    char buf[24];
    const char *params[1] = {buf};
    long v = g.pg_seq % 100000;

    snprintf(buf, sizeof(buf), "%ld", v);
    if (v % 2 == 0)
        pg_send(PG_DOUBLE, "SELECT $1::int * 2", 1, params, v * 2);
    else
        pg_send(PG_S_DOUBLE, sql_s_double, 1, params, v * 2);
}

static void pg_statics(void)
{
    char a[24], b[24];
    const char *params[2] = {a, "x"};
    long v = g.pg_seq + 1;

    snprintf(a, sizeof(a), "%ld", v);
    if (v % 2 != 0)
        params[1] = NULL; /* NULL || text is NULL */
    pg_send(PG_S_CONCAT, sql_s_concat, 2, params, v);
    v = g.pg_seq % 3; /* 0: division by zero at execution */
    snprintf(b, sizeof(b), "%ld", v);
    params[0] = b;
    pg_send(PG_S_DIV0, sql_s_div0, 1, params, v != 0 ? 1 / v : -1);
    pg_send(PG_S_SYNTAX, sql_s_syntax, 1, params, 0);
}

static void on_aux(mm_pg_status_t status, PGresult *res, void *data)
{
    token_t *t = data;
    long n = status == MM_PG_OK && PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;

    token_arrive(t);
    if (status == MM_PG_OK && g.kill_state == KILL_WAITING && n == 1) {
        g.kill_state = KILL_DONE;
        g.kills++;
        return;
    }
    if (status == MM_PG_OK && g.kill_state == KILL_WAITING) {
        printf("lock test: %ld prepares were waiting for the lock\n", n);
        problem("lock test: not exactly one prepare was waiting for the lock", t);
    } else if (status == MM_PG_ERROR) {
        problem("lock test: the second client's query failed", t);
    }
    g.kill_state = KILL_IDLE; /* a store went away meanwhile: try again */
    g.kill_query = NULL;
}

/* The lock test: the second client takes the lock at tick K (after the
 * slow query of K - 5 is over), the main client sends the statement at
 * K + 1, for the first time on its connection, so its prepare is what
 * waits; at K + 10 the second client kills the waiting backend. */
static void pg_kill_test(void)
{
    const char *params[2] = {sql_s_lock, "1.0"};
    token_t *t;

    if (g.kill_state == KILL_IDLE && g.setup_done && g.ticks % SLOW_EVERY == 5 && mm_pg_is_up(g.aux)) {
        t = token_new(PG_KILL, 0);
        if (mm_pg_query(g.aux, "SELECT mm_check_kill_waiters($1, $2::float8)", 2, params, on_aux, t) != 0) {
            t->done = 1;
            return;
        }
        g.kill_state = KILL_LOCKING;
        g.kill_tick = g.ticks;
    } else if (g.kill_state == KILL_LOCKING && g.ticks == g.kill_tick + 1) {
        g.kill_query = pg_send(PG_S_LOCK, sql_s_lock, 0, NULL, 0);
        g.kill_state = KILL_WAITING;
    }
}

static void pg_tick(void)
{
    int i, up = mm_pg_is_up(g.pg);

    if (up && !g.pg_was_up) {
        g.pg_ups++;
        g.pg_ok_since_up = 0;
        g.static_ok_since_up = 0;
    }
    g.pg_was_up = up;
    if (!up) {
        pg_send(PG_DOUBLE, "SELECT 1", 0, NULL, 1); /* counted as ENOTCONN */
        return;
    }
    if (!g.setup_sent) {
        g.setup_sent = 1;
        pg_send(PG_SETUP, "CREATE TABLE IF NOT EXISTS mm_check_lock (v int)", 0, NULL, 0);
        pg_send(PG_SETUP, sql_setup_fn, 0, NULL, 1);
    }
    if (!g.burst_done) {
        g.burst_done = 1;
        for (i = 0; i != BURST; ++i)
            pg_double();
        return;
    }
    pg_kill_test();
    if (g.ticks % SLOW_EVERY == 0)
        pg_send(PG_SLEEP, "SELECT pg_sleep(0.5)", 0, NULL, 0);
    if (g.ticks % SLOW_EVERY == 7)
        pg_send(PG_STMTS, "SELECT name, statement FROM pg_prepared_statements", 0, NULL, 0);
    if (g.ticks % SLOW_EVERY == 9 && g.kill_state == KILL_DONE)
        pg_send(PG_S_LOCK, sql_s_lock, 0, NULL, 0); /* prepared again on the new connection */
    for (i = 0; i != PER_TICK; ++i)
        pg_double();
    pg_statics();
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

    printf("t=%5.1fs pg[up=%d sent=%ld static=%ld ok=%ld err=%ld unavail=%ld enotconn=%ld] "
           "redis[up=%d sent=%ld ok=%ld err=%ld null=%ld enotconn=%ld connects=%d]\n",
           g.ticks * TICK_MS / 1000.0, mm_pg_is_up(g.pg), c->pg_sent, c->pg_static, c->pg_ok, c->pg_err, c->pg_unavail,
           c->pg_enotconn, mm_redis_is_up(g.redis), c->r_sent, c->r_ok, c->r_err, c->r_null, c->r_enotconn, g.redis_ups);
    fflush(stdout);
    g.total.pg_sent += c->pg_sent;
    g.total.pg_static += c->pg_static;
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
    mm_pg_free(g.aux); /* completes its query, if any, as unavailable */
    g.aux = NULL;
    if (g.pg != NULL) {
        if (mm_pg_is_up(g.pg)) {
            pg_send(PG_FREE, "SELECT 1", 0, NULL, 1);
            for (i = 1; i != FINAL_BATCH; ++i)
                pg_double();
            pg_statics();
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
    if (g.pg != NULL && (mm_pg_query_static(g.pg, sql_s_double, -1, NULL, on_pg, t) != -EINVAL ||
                         mm_pg_query_static(g.pg, NULL, 0, NULL, on_pg, t) != -EINVAL ||
                         mm_pg_query_static(g.pg, sql_s_double, 1, NULL, on_pg, t) != -EINVAL ||
                         mm_pg_query_static(g.pg, sql_s_double, 0, NULL, NULL, t) != -EINVAL))
        problem("mm_pg_query_static accepted bad arguments", t);
    /* not connected yet: refused at once, and no statement is sent later */
    if (g.pg != NULL && !mm_pg_is_up(g.pg) &&
        mm_pg_query_static(g.pg, sql_s_double, 1, (const char *[]){"1"}, on_pg, t) != -ENOTCONN)
        problem("mm_pg_query_static accepted a query while down", t);
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
        g.aux = mm_pg_new(g.loop, db_url);
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

    if (g.kills != 0 && (g.kill_query == NULL || g.kill_query->status != MM_PG_UNAVAILABLE))
        problem("lock test: the query whose prepare was killed did not complete as unavailable", g.kill_query);
    for (k = 0; k != g.ntokens; ++k) {
        if (g.tokens[k]->done != 1)
            problem("callback count is not exactly one", g.tokens[k]);
        free(g.tokens[k]);
    }
    free(g.tokens);
    if (g.pg_wanted && (g.pg_ups == 0 || g.total.pg_ok == 0))
        problem("postgres never worked", NULL);
    if (g.pg_wanted && g.kills == 0)
        problem("lock test: never ran (no prepare was killed while it waited)", NULL);
    if (g.kills != 0 && g.static_ok_after_kill == 0)
        problem("static statements never worked again after the lock test's reconnect", NULL);
    if (g.pg_wanted && g.stmts_max < 3)
        problem("pg_prepared_statements never showed our statements prepared", NULL);
    if (g.redis_wanted && (g.redis_ups == 0 || g.total.r_ok == 0))
        problem("redis never worked", NULL);
    if (expect_outage && g.pg_wanted &&
        (g.pg_ups < 2 || g.total.pg_unavail == 0 || g.total.pg_enotconn == 0 || g.pg_ok_since_up == 0 || g.static_ok_since_up == 0))
        problem("postgres: no outage with unavailable, ENOTCONN and recovery seen", NULL);
    if (expect_outage && g.redis_wanted &&
        (g.redis_ups < 2 || g.total.r_null == 0 || g.total.r_enotconn == 0 || g.r_ok_since_up == 0))
        problem("redis: no outage with NULL replies, ENOTCONN and recovery seen", NULL);
    printf("TOTAL pg[sent=%ld static=%ld ok=%ld err=%ld unavail=%ld enotconn=%ld ups=%d kills=%d stmts=%d] "
           "redis[sent=%ld ok=%ld err=%ld null=%ld enotconn=%ld connects=%d] callbacks=%zu\n",
           g.total.pg_sent, g.total.pg_static, g.total.pg_ok, g.total.pg_err, g.total.pg_unavail, g.total.pg_enotconn, g.pg_ups,
           g.kills, g.stmts_max, g.total.r_sent, g.total.r_ok, g.total.r_err, g.total.r_null, g.total.r_enotconn, g.redis_ups,
           g.ntokens);
    printf("%s (%d problems)\n", g.problems == 0 ? "PASS" : "FAIL", g.problems);
    return g.problems == 0 ? 0 : 1;
}
