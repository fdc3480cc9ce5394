/*
 * mm up: the daemon, in the foreground. Wiring only: options, the lock
 * that keeps one daemon per identity, the share, the peer server (libh2o
 * on mm_server_t, threads of its own), the resolver and beacon threads;
 * then run until SIGINT/SIGTERM, stop the broadcast and exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mm/log.h"
#include "mm/tls.h"
#include "agent_up.h"

#define AGENT_UP_MAX_THREADS 4

static int agent_up_thread_init(mm_thread_t *t)
{
    agent_up_t *up = mm_server_data(t->server);
    agent_peer_thread_t *pt = mm_xcalloc(1, sizeof(*pt));

    t->user = pt;
    if (up->resolver != NULL && (pt->port = agent_resolver_attach(up->resolver, t->loop)) == NULL)
        return -1;
    return 0;
}

static void agent_up_thread_dispose(mm_thread_t *t)
{
    agent_peer_thread_t *pt = t->user;

    if (pt == NULL)
        return;
    agent_resolver_detach(pt->port);
    free(pt);
    t->user = NULL;
}

/* Options into `up`: 0, or the exit code after reporting a usage error. */
static int agent_up_options(agent_args_t *args, agent_up_t *up)
{
    size_t i;

    if (args->share == NULL)
        return agent_cli_usage_error(args, "--share DIR is required: the folder to serve, read-only");
    if (args->nallow == 0 && !args->public_)
        return agent_cli_usage_error(args, "say who may read the share: --allow EMAIL (repeatable), or --public for anyone");
    up->allow = mm_xcalloc(args->nallow + 1, sizeof(*up->allow));
    for (i = 0; i != args->nallow; ++i) {
        if (mm_email_normalize(args->allow[i], strlen(args->allow[i]), up->allow[i]) != 0)
            return agent_cli_usage_error(args, "--allow %s: not an email address", args->allow[i]);
    }
    up->nallow = args->nallow;
    if (args->nadvertise > AGENT_MAX_ADDRS)
        return agent_cli_usage_error(args, "--advertise: at most %d addresses", AGENT_MAX_ADDRS);
    for (i = 0; i != args->nadvertise; ++i) {
        mm_addr_t *a = &up->advertise[i];
        if (mm_addr_parse(args->advertise[i], strlen(args->advertise[i]), a) != 0 || mm_addr_is_unusable(a))
            return agent_cli_usage_error(
                args, "--advertise %s: expected an IP address with an optional port (1.2.3.4:5, [2001:db8::1]:5)",
                args->advertise[i]);
    }
    up->nadvertise = args->nadvertise;
    up->public_ = args->public_;
    up->bootstrap = args->bootstrap;
    up->port = args->port >= 0 ? (uint16_t)args->port : AGENT_DEFAULT_PORT;
    up->stun = args->stun;
    up->stun_alt = args->stun_alt;
    return 0;
}

static void agent_up_free(agent_up_t *up)
{
    mm_server_free(up->server);
    SSL_CTX_free(up->ssl);
    agent_share_close(&up->share);
    free(up->allow);
    free(up);
}

/* Listens on every address, IPv6 and IPv4 (one dual-stack socket, or IPv4 alone without IPv6). */
static int agent_up_listen(agent_up_t *up, h2o_hostconf_t *host, agent_err_t *err)
{
    char addr[32];
    mm_err_t merr;
    int port;

    snprintf(addr, sizeof(addr), "[::]:%u", up->port);
    if (mm_server_listen(up->server, addr, host, up->ssl, 0, &merr) != 0) {
        snprintf(addr, sizeof(addr), "0.0.0.0:%u", up->port);
        if (mm_server_listen(up->server, addr, host, up->ssl, 0, &merr) != 0) {
            agent_err_set(err, "cannot_listen", "%s: pick another port with --port N (0: any free port)", merr.msg);
            return -1;
        }
    }
    if ((port = mm_server_listen_port(up->server, 0)) <= 0) {
        agent_err_set(err, "cannot_listen", "cannot tell which port the peer server listens on");
        return -1;
    }
    up->port = (uint16_t)port;
    return 0;
}

int agent_cmd_up(agent_args_t *args)
{
    agent_up_t *up = mm_xcalloc(1, sizeof(*up));
    agent_beacon_t *beacon = NULL;
    h2o_hostconf_t *host;
    agent_err_t err;
    mm_err_t merr;
    sigset_t set;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pid_t holder;
    json_t *allow;
    size_t i;
    int rc, lock_fd = -1;

    if ((rc = agent_up_options(args, up)) != 0)
        goto out;
    rc = AGENT_EXIT_ERROR;
    if (agent_conf_load(&up->conf, args->server, &err) != 0 || (lock_fd = agent_lock_take(&up->conf.paths, &holder, &err)) < 0 ||
        agent_share_open(&up->share, args->share, &err) != 0)
        goto fail;
    up->ssl = mm_tls_server_new(
        &(mm_tls_server_conf_t){.cert_file = up->conf.paths.cert, .key_file = up->conf.paths.key, .sid_ctx = "mm-agent"}, &merr);
    if (up->ssl == NULL) {
        agent_err_set(&err, "bad_identity",
                      "cannot use the identity in %s for the peer server (%s): make a new one with mm init --force",
                      up->conf.paths.config_dir, merr.msg);
        goto fail;
    }
    /* Before any thread starts, so that they all inherit it: mm_server_run reads these from a signalfd. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    up->server = mm_server_new(&(mm_server_conf_t){.name = "mm",
                                                   .threads = ncpu < 1                      ? 1
                                                              : ncpu > AGENT_UP_MAX_THREADS ? AGENT_UP_MAX_THREADS
                                                                                            : (int)ncpu,
                                                   .thread_init = agent_up_thread_init,
                                                   .thread_dispose = agent_up_thread_dispose,
                                                   .data = up});
    host = h2o_config_register_host(mm_server_globalconf(up->server), h2o_iovec_init(H2O_STRLIT("default")), 65535);
    agent_peer_register(host, up);
    if (agent_up_listen(up, host, &err) != 0)
        goto fail;
    if (!up->public_ && (up->resolver = agent_resolver_new(&up->conf, &err)) == NULL)
        goto fail;
    allow = json_array();
    for (i = 0; i != up->nallow; ++i)
        json_array_append_new(allow, json_string(up->allow[i]));
    agent_out_event("listening",
                    json_pack("{s:s,s:s,s:i,s:s,s:o,s:b,s:i}", "email", up->conf.email, "peer_id", up->conf.peer_id, "port",
                              (int)up->port, "share", up->share.root, "allow", allow, "public", up->public_, "pid", (int)getpid()),
                    "Serving %s on port %u to %s (pid %ld); stop with Ctrl-C or mm down", up->share.root, up->port,
                    up->public_ ? "anyone" : "the --allow list", (long)getpid());
    if ((beacon = agent_beacon_start(up, &err)) == NULL)
        goto fail;
    rc = mm_server_run(up->server) == 0 ? AGENT_EXIT_OK : AGENT_EXIT_ERROR;
    agent_beacon_stop(beacon);
    agent_punch_up_stop(up);
    agent_resolver_free(up->resolver);
    if (atomic_load(&up->exit_code) != 0)
        rc = atomic_load(&up->exit_code);
    goto out;

fail:
    agent_out_error(&err);
    agent_resolver_free(up->resolver);
out:
    if (lock_fd >= 0)
        close(lock_fd);
    agent_up_free(up);
    return rc;
}
