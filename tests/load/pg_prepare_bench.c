/*
 * pg_prepare_bench: what mm_pg_query_static saves over mm_pg_query. Runs N
 * executions of one CTE the size of the tracker's discovery list (a join, a
 * lateral subquery, formatting) on one connection, first as a plain query
 * (parsed and planned every time), then as a static one (prepared once),
 * twice over, and prints each rate. Every result is checked.
 *
 *   MM_DATABASE_URL=postgresql:///matchmaker?host=/tmp/x pg_prepare_bench [N]
 *
 * Creates and fills the tables mm_bench_peers and mm_bench_broadcasts (1000
 * rows) in that database. Exits 0 when every query succeeded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mm/log.h"
#include "mm/pg.h"

#define WINDOW 32 /* queued at once, as on a busy server thread */
#define ROUNDS 2

static const char *const setup[] = {
    "CREATE TABLE IF NOT EXISTS mm_bench_peers (peer_id text PRIMARY KEY, email text NOT NULL, display_name text)",
    "CREATE TABLE IF NOT EXISTS mm_bench_broadcasts (peer_id text PRIMARY KEY REFERENCES mm_bench_peers,"
    " port int NOT NULL, candidates jsonb NOT NULL, started_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO mm_bench_peers SELECT md5(i::text), 'p' || i || '@example.com', 'peer ' || i"
    " FROM generate_series(1, 1000) i ON CONFLICT DO NOTHING",
    "INSERT INTO mm_bench_broadcasts (peer_id, port, candidates) SELECT peer_id, 40000,"
    " '[{\"ip\": \"192.0.2.1\", \"scope\": \"public\", \"source\": \"observed\"}]' FROM mm_bench_peers ON CONFLICT DO NOTHING",
    "ANALYZE mm_bench_peers, mm_bench_broadcasts",
};

/* The shape of trk_sql_list: caller check, then a page of records. */
static const char sql_list[] = "WITH me AS (SELECT EXISTS (SELECT 1 FROM mm_bench_peers WHERE peer_id = $1) AS ok) "
                               "SELECT me.ok, x.* FROM me LEFT JOIN LATERAL ("
                               " SELECT p.peer_id, p.email, p.display_name, b.port, b.candidates::text,"
                               " to_char(b.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                               " FROM mm_bench_broadcasts b JOIN mm_bench_peers p USING (peer_id)"
                               " WHERE b.peer_id > $2 ORDER BY b.peer_id LIMIT $3::int) x ON me.ok";

static struct {
    h2o_loop_t *loop;
    mm_pg_t *pg;
    int is_static;
    long sent, done, total;
    int busy; /* a setup query or a run is in progress */
    int failures;
} g;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_setup(mm_pg_status_t status, PGresult *res, void *data)
{
    if (status != MM_PG_OK) {
        fprintf(stderr, "setup failed: %s\n", res != NULL ? PQresultErrorMessage(res) : "unavailable");
        g.failures++;
    }
    g.busy = 0;
}

static void send_more(void);

static void on_row(mm_pg_status_t status, PGresult *res, void *data)
{
    g.done++;
    if (status != MM_PG_OK || PQntuples(res) != 10 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        if (g.failures++ < 5)
            fprintf(stderr, "query %ld failed: %s\n", g.done, res != NULL ? PQresultErrorMessage(res) : "unavailable");
    }
    if (g.done == g.total)
        g.busy = 0;
    else
        send_more();
}

static void send_more(void)
{
    char after[16];
    const char *params[3] = {"c4ca4238a0b923820dcc509a6f75849b", after, "10"}; /* md5('1'): registered */
    int ret;

    while (g.sent < g.total && g.sent - g.done < WINDOW) {
        snprintf(after, sizeof(after), "%02lx", (unsigned long)(g.sent % 240)); /* walk the key space */
        if (g.is_static)
            ret = mm_pg_query_static(g.pg, sql_list, 3, params, on_row, NULL);
        else
            ret = mm_pg_query(g.pg, sql_list, 3, params, on_row, NULL);
        if (ret != 0) {
            fprintf(stderr, "mm_pg_query: %s\n", strerror(-ret));
            g.failures++;
            g.done += g.total - g.sent; /* nothing more will come for these */
            g.sent = g.total;
            if (g.done == g.total)
                g.busy = 0;
            return;
        }
        g.sent++;
    }
}

static void wait_idle(void)
{
    while (g.busy)
        h2o_evloop_run(g.loop, INT32_MAX);
}

/* Returns queries per second. */
static double run(int is_static, long n)
{
    double t0 = now_s();

    g.is_static = is_static;
    g.sent = g.done = 0;
    g.total = n;
    g.busy = 1;
    send_more();
    wait_idle();
    return (double)n / (now_s() - t0);
}

int main(int argc, char **argv)
{
    const char *url = getenv("MM_DATABASE_URL");
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    double plain[ROUNDS], prepared[ROUNDS], t0;
    size_t i;
    int r;

    if (url == NULL || n <= 0) {
        fprintf(stderr, "usage: MM_DATABASE_URL=... %s [N]\n", argv[0]);
        return 2;
    }
    mm_log_init("pg_prepare_bench", "warn");
    g.loop = h2o_evloop_create();
    g.pg = mm_pg_new(g.loop, url);
    for (t0 = now_s(); !mm_pg_is_up(g.pg) && now_s() - t0 < 10;)
        h2o_evloop_run(g.loop, 100);
    for (i = 0; i != MM_ARRAY_SIZE(setup) && g.failures == 0; ++i) {
        g.busy = mm_pg_query(g.pg, setup[i], 0, NULL, on_setup, NULL) == 0;
        g.failures += !g.busy;
        wait_idle();
    }
    if (g.failures == 0) {
        run(0, n / 10 + 1); /* warm the server's caches */
        run(1, n / 10 + 1);
        for (r = 0; r != ROUNDS; ++r) {
            plain[r] = run(0, n);
            prepared[r] = run(1, n);
            printf("round %d: N=%ld  mm_pg_query %.0f q/s  mm_pg_query_static %.0f q/s  (x%.2f)\n", r + 1, n, plain[r], prepared[r],
                   prepared[r] / plain[r]);
        }
    }
    mm_pg_free(g.pg);
    for (r = 0; r != 3; ++r) /* lets h2o free the socket the client closed */
        h2o_evloop_run(g.loop, 0);
    h2o_evloop_destroy(g.loop);
    printf("%s (%d failures)\n", g.failures == 0 ? "PASS" : "FAIL", g.failures);
    return g.failures == 0 ? 0 : 1;
}
