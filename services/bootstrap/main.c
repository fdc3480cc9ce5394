/*
 * mm-bootstrap: wiring only. Per-thread PostgreSQL and Redis clients, the
 * route table, and readiness = both stores connected.
 */
#include <unistd.h>
#include "mm/log.h"
#include "mm/stores.h"
#include "boot.h"

static int boot_thread_init(mm_thread_t *thread)
{
    const boot_config_t *conf = mm_server_data(thread->server);
    boot_thread_t *t = mm_xcalloc(1, sizeof(*t));

    t->conf = conf;
    t->loop = thread->loop;
    boot_probe_init(t);
    if (mm_stores_open(thread->loop, conf->database_url, conf->redis_url, &t->pg, &t->redis) != 0) {
        boot_probe_dispose(t);
        free(t);
        return -1;
    }
    thread->user = t;
    return 0;
}

static void boot_thread_dispose(mm_thread_t *thread)
{
    boot_thread_t *t = thread->user;

    if (t == NULL)
        return;
    boot_probe_dispose(t);
    mm_stores_close(&t->pg, &t->redis);
    free(t);
}

static int boot_is_ready(mm_thread_t *thread, const char **why)
{
    boot_thread_t *t = thread->user;

    return mm_stores_ready(t->pg, t->redis, why);
}

int main(int argc, char **argv)
{
    boot_config_t conf;
    mm_server_t *server;
    mm_err_t err;
    int rc;

    if ((rc = mm_config_main(argc, argv,
                             "Matchmaker's bootstrap registry: broadcasting peers volunteer as entry points of the gossip "
                             "network, newcomers discover a random few (/api/bootstrap).",
                             boot_config_table, boot_config_table_len, &conf)) >= 0)
        return rc;
    mm_log_init("mm-bootstrap", conf.log_level);
    if (conf.threads == 0)
        conf.threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    server = mm_server_new(&(mm_server_conf_t){.name = "mm-bootstrap",
                                               .threads = (int)conf.threads,
                                               .thread_init = boot_thread_init,
                                               .thread_dispose = boot_thread_dispose,
                                               .ready = boot_is_ready,
                                               .data = &conf});
    if (mm_server_listen(server, conf.listen, mm_server_routes_host(server, "bootstrap", boot_routes, boot_routes_len), NULL, 0,
                         &err) != 0) {
        mm_error("MM_BOOTSTRAP_LISTEN: %s", err.msg);
        mm_server_free(server);
        return 1;
    }
    rc = mm_server_run(server) == 0 ? 0 : 1;
    mm_server_free(server);
    return rc;
}
