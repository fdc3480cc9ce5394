/*
 * mm-gateway: wiring only. Configuration, TLS, the public host, the
 * internal health/metrics listener, then run until SIGTERM.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "mm/config.h"
#include "mm/log.h"
#include "gw.h"

int main(int argc, char **argv)
{
    gw_config_t conf;
    mm_server_t *server = NULL;
    SSL_CTX *ssl = NULL;
    gw_t *gw = NULL;
    mm_err_t err;
    char public_addr[300];
    int rc;

    if ((rc = mm_config_main(argc, argv,
                             "The public front of Matchmaker: mutual TLS (the client certificate is the identity), rate "
                             "limits, and routing of /api/relay, /api/bootstrap, /api/signal and /admin to the services.",
                             gw_config_table, gw_config_table_len, &conf)) >= 0)
        return rc;
    mm_log_init("mm-gateway", conf.log_level);
    if (conf.threads == 0)
        conf.threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;

    if ((ssl = gw_tls_new(&conf, &err)) == NULL)
        goto fail;
    server = mm_server_new(&(mm_server_conf_t){.name = "mm-gateway", .threads = (int)conf.threads, .access_log = 1});
    if ((gw = gw_front_new(server, &conf, ssl, &err)) == NULL)
        goto fail;
    /* an IPv6 literal needs brackets before the port */
    snprintf(public_addr, sizeof(public_addr), strchr(conf.addr, ':') != NULL ? "[%s]:%lld" : "%s:%lld", conf.addr,
             (long long)conf.port);
    if (mm_server_listen(server, public_addr, gw_front_host(gw), ssl, conf.trust_proxy_protocol, &err) != 0) {
        mm_error("MM_GATEWAY_ADDR/MM_GATEWAY_PORT: %s", err.msg);
        rc = 1;
        goto out;
    }
    if (mm_server_listen(server, conf.internal_listen, mm_server_routes_host(server, "internal", NULL, 0), NULL, 0, &err) != 0) {
        mm_error("MM_GATEWAY_INTERNAL_LISTEN: %s", err.msg);
        rc = 1;
        goto out;
    }
    rc = mm_server_run(server) == 0 ? 0 : 1;
    goto out;

fail:
    mm_error("%s", err.msg);
    rc = 1;
out:
    mm_server_free(server);
    gw_front_free(gw);
    SSL_CTX_free(ssl);
    return rc;
}
