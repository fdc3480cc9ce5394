/*
 * mm-signal: wiring only. Per-thread Redis command client, per-thread Redis
 * subscriber (wakes that thread's long-polls), per-thread PostgreSQL client
 * (email -> peer_id, read only), the route table, and the STUN responder.
 * Readiness = both Redis clients connected (PostgreSQL serves offers only).
 */
#include <unistd.h>
#include "mm/log.h"
#include "sig.h"

static int sig_thread_init(mm_thread_t *thread)
{
    const sig_config_t *conf = mm_server_data(thread->server);
    sig_thread_t *t = mm_xcalloc(1, sizeof(*t));
    mm_err_t err;

    t->conf = conf;
    t->thread = thread;
    thread->user = t;
    t->pg = mm_pg_new(thread->loop, conf->database_url);
    if ((t->redis = mm_redis_new(thread->loop, conf->redis_url, &err)) == NULL ||
        (t->sub = mm_redis_new(thread->loop, conf->redis_url, &err)) == NULL) {
        mm_error("MM_REDIS_URL: %s", err.msg);
        return -1;
    }
    sig_wait_init(t);
    if (sig_stun_start(thread, conf, &err) != 0) {
        mm_error("STUN: %s", err.msg);
        return -1;
    }
    return 0;
}

static void sig_thread_dispose(mm_thread_t *thread)
{
    sig_thread_t *t = thread->user;

    if (t == NULL)
        return;
    sig_stun_stop(thread);
    sig_wait_dispose(t);
    mm_redis_free(t->sub);
    mm_redis_free(t->redis);
    mm_pg_free(t->pg);
    free(t);
    thread->user = NULL;
}

static int sig_is_ready(mm_thread_t *thread, const char **why)
{
    sig_thread_t *t = thread->user;

    /* PostgreSQL is left out on purpose: without it only offers fail (503),
     * and a copy that still delivers inboxes, answers and sessions must stay
     * in service */
    if (!mm_redis_is_up(t->redis) || !mm_redis_is_up(t->sub)) {
        *why = "Redis is not connected";
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    sig_config_t conf;
    mm_server_t *server;
    mm_err_t err;
    int rc;

    if ((rc = mm_config_main(argc, argv, "Matchmaker's signaling for UDP hole punching (/api/signal) and STUN responder.",
                             sig_config_table, sig_config_table_len, &conf)) >= 0)
        return rc;
    mm_log_init("mm-signal", conf.log_level);
    sig_metrics_init();
    if (conf.threads == 0)
        conf.threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    server = mm_server_new(&(mm_server_conf_t){.name = "mm-signal",
                                               .threads = (int)conf.threads,
                                               .thread_init = sig_thread_init,
                                               .thread_dispose = sig_thread_dispose,
                                               .ready = sig_is_ready,
                                               .data = &conf});
    if (mm_server_listen(server, conf.listen, mm_server_routes_host(server, "signal", sig_routes, sig_routes_len), NULL, 0, &err) !=
        0) {
        mm_error("MM_SIGNAL_LISTEN: %s", err.msg);
        mm_server_free(server);
        return 1;
    }
    rc = mm_server_run(server) == 0 ? 0 : 1;
    mm_server_free(server);
    return rc;
}
