/*
 * mm-reaper: wiring only. One thread: its loop runs the store clients, the
 * keyspace subscriber, the deadline poll and the sweep; /readyz says whether
 * all of them are working.
 */
#include <stdio.h>
#include "mm/log.h"
#include "reap.h"

static int reap_thread_init(mm_thread_t *thread)
{
    reap_t *rp = mm_server_data(thread->server);
    mm_err_t err;
    uint8_t rnd[16];
    char labels[32], name[96], help[160];
    size_t i, k;

    rp->server = thread->server;
    rp->loop = thread->loop;
    mm_random_bytes(rnd, sizeof(rnd));
    mm_hex_encode(rp->instance, rnd, sizeof(rnd));
    /* per kind: mm_reaper_reaped_total, mm_reaper_bootstrap_reaped_total, ... */
    for (k = 0; k != REAP_KINDS; ++k) {
        reap_lane_t *lane = &rp->lanes[k];
        lane->rp = rp;
        lane->kind = &reap_kinds[k];
        snprintf(name, sizeof(name), "mm_reaper_%sreaped_total", lane->kind->metric);
        snprintf(help, sizeof(help), "Rows of %s reaped, by how their expiry was found", lane->kind->what);
        for (i = 0; i != REAP_REASONS; ++i) {
            snprintf(labels, sizeof(labels), "reason=\"%s\"", reap_reason_names[i]);
            lane->reaped[i] = mm_metrics_counter(name, help, labels);
        }
        snprintf(name, sizeof(name), "mm_reaper_%sexpired_events_total", lane->kind->metric);
        snprintf(help, sizeof(help), "Expired-key notifications received for the keys of %s", lane->kind->what);
        lane->events = mm_metrics_counter(name, help, NULL);
        snprintf(name, sizeof(name), "mm_reaper_%slag_seconds", lane->kind->metric);
        snprintf(help, sizeof(help), "From a key's expiry to its row of %s leaving PostgreSQL", lane->kind->what);
        lane->lag = mm_metrics_histogram(name, help, NULL, NULL, 0);
    }
    rp->sweeps =
        mm_metrics_counter("mm_reaper_sweeps_total", "Sweeps of every broadcast and bootstrap membership against Redis", NULL);
    rp->sweep_duration = mm_metrics_histogram("mm_reaper_sweep_duration_seconds", "Duration of a sweep", NULL, NULL, 0);
    rp->pg = mm_pg_new(thread->loop, rp->conf->database_url);
    if ((rp->redis = mm_redis_new(thread->loop, rp->conf->redis_url, &err)) == NULL ||
        (rp->sub = mm_redis_new(thread->loop, rp->conf->redis_url, &err)) == NULL) {
        mm_error("MM_REDIS_URL: %s", err.msg);
        return -1;
    }
    reap_watch_start(rp);
    reap_sweep_start(rp);
    thread->user = rp;
    return 0;
}

static void reap_thread_dispose(mm_thread_t *thread)
{
    reap_t *rp = mm_server_data(thread->server);

    if (thread->user != NULL) {
        reap_watch_stop(rp);
        reap_sweep_stop(rp);
    }
    mm_redis_free(rp->sub);
    mm_redis_free(rp->redis);
    mm_pg_free(rp->pg);
}

static int reap_is_ready(mm_thread_t *thread, const char **why)
{
    reap_t *rp = thread->user;

    if (!mm_pg_is_up(rp->pg))
        *why = "PostgreSQL is not connected";
    else if (!mm_redis_is_up(rp->redis) || !mm_redis_is_up(rp->sub))
        *why = "Redis is not connected";
    else if (!rp->keyspace_ok)
        *why = "keyspace notifications are not confirmed on yet";
    else
        return 1;
    return 0;
}

int main(int argc, char **argv)
{
    reap_config_t conf;
    reap_t rp = {.conf = &conf};
    mm_server_t *server;
    mm_err_t err;
    int rc;

    if ((rc = mm_config_main(argc, argv,
                             "Matchmaker's reaper: turns expired presence and bootstrap memberships in Redis into PostgreSQL "
                             "(offline broadcasts, ended memberships), from expiry events, deadline indexes and periodic sweeps.",
                             reap_config_table, reap_config_table_len, &conf)) >= 0)
        return rc;
    mm_log_init("mm-reaper", conf.log_level);
    server = mm_server_new(&(mm_server_conf_t){.name = "mm-reaper",
                                               .threads = 1,
                                               .thread_init = reap_thread_init,
                                               .thread_dispose = reap_thread_dispose,
                                               .ready = reap_is_ready,
                                               .data = &rp});
    if (mm_server_listen(server, conf.listen, mm_server_routes_host(server, "reaper", NULL, 0), NULL, 0, &err) != 0) {
        mm_error("MM_REAPER_LISTEN: %s", err.msg);
        mm_server_free(server);
        return 1;
    }
    rc = mm_server_run(server) == 0 && !rp.fatal ? 0 : 1;
    mm_server_free(server);
    return rc;
}
