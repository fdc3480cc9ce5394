/*
 * mm-tracker: wiring only. Per-thread PostgreSQL and Redis clients, the
 * route table, and readiness = both stores connected.
 */
#include <unistd.h>
#include "mm/log.h"
#include "mm/stores.h"
#include "trk.h"

static int trk_thread_init(mm_thread_t *thread)
{
    const trk_config_t *conf = mm_server_data(thread->server);
    trk_thread_t *t = mm_xcalloc(1, sizeof(*t));

    t->conf = conf;
    if (mm_stores_open(thread->loop, conf->database_url, conf->redis_url, &t->pg, &t->redis) != 0) {
        free(t);
        return -1;
    }
    thread->user = t;
    mm_timer_init(&t->epoch_timer, thread->loop, NULL, t);
    if (thread->index == 0)
        trk_presence_watch(t);
    return 0;
}

static void trk_thread_dispose(mm_thread_t *thread)
{
    trk_thread_t *t = thread->user;

    if (t == NULL)
        return;
    trk_presence_unwatch(t);
    mm_stores_close(&t->pg, &t->redis);
    free(t);
}

static int trk_is_ready(mm_thread_t *thread, const char **why)
{
    trk_thread_t *t = thread->user;

    return mm_stores_ready(t->pg, t->redis, why);
}

int main(int argc, char **argv)
{
    trk_config_t conf;
    mm_server_t *server;
    mm_err_t err;
    int rc;

    if ((rc = mm_config_main(argc, argv, "Matchmaker's tracker: registration, broadcasts and lookups (/api/relay).",
                             trk_config_table, trk_config_table_len, &conf)) >= 0)
        return rc;
    mm_log_init("mm-tracker", conf.log_level);
    if (conf.threads == 0)
        conf.threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    server = mm_server_new(&(mm_server_conf_t){.name = "mm-tracker",
                                               .threads = (int)conf.threads,
                                               .thread_init = trk_thread_init,
                                               .thread_dispose = trk_thread_dispose,
                                               .ready = trk_is_ready,
                                               .data = &conf});
    if (mm_server_listen(server, conf.listen, mm_server_routes_host(server, "tracker", trk_routes, trk_routes_len), NULL, 0,
                         &err) != 0) {
        mm_error("MM_TRACKER_LISTEN: %s", err.msg);
        mm_server_free(server);
        return 1;
    }
    rc = mm_server_run(server) == 0 ? 0 : 1;
    mm_server_free(server);
    return rc;
}
