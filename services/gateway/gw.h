/*
 * mm-gateway's private header: the one public listener. It terminates TLS,
 * reads the client certificate into an identity, rate limits per identity
 * and proxies /api/... and /admin to the services with the identity in
 * X-MM-* headers (SPEC §2).
 */
#ifndef GW_H
#define GW_H

#include <openssl/ssl.h>
#include "mm/config.h"
#include "mm/http.h"
#include "mm/identity.h"
#include "mm/metrics.h"
#include "mm/ratelimit.h"

typedef struct gw_config {
    const char *addr;
    int64_t port;
    const char *internal_listen;
    const char *cert_file, *key_file;
    const char *client_ca_file;
    int trust_proxy_protocol;
    int64_t rate_limit, rate_burst;
    const char *tracker_url, *bootstrap_url, *signal_url, *admin_url;
    const char *admin_peer_ids;
    int64_t threads;
    int64_t upstream_timeout;
    const char *log_level;
} gw_config_t;

extern const mm_cfg_entry_t gw_config_table[];
extern const size_t gw_config_table_len;

/* What the certificate of a connection says about its peer. */
typedef enum gw_ident_status {
    GW_IDENT_OK = 0,
    GW_IDENT_NONE,        /* no certificate sent */
    GW_IDENT_EXPIRED,     /* outside its validity */
    GW_IDENT_UNSUPPORTED, /* key type or size not accepted */
    GW_IDENT_UNTRUSTED,   /* CA mode: does not chain to MM_CLIENT_CA_FILE */
} gw_ident_status_t;

typedef struct gw_ident {
    gw_ident_status_t status;
    mm_identity_t id;
} gw_ident_t;

/* gw_tls.c */
/* Builds the server SSL_CTX: TLS >= 1.2, AEAD suites only, h2 + http/1.1
 * ALPN, client certificates requested but not required. */
SSL_CTX *gw_tls_new(const gw_config_t *conf, mm_err_t *err);
/* The identity of the TLS connection carrying `req`, computed once per
 * connection (cached in the SSL object) and kept across session resumption.
 * Never NULL; the result is owned by the connection. */
const gw_ident_t *gw_tls_identity(SSL_CTX *ctx, int ca_mode, h2o_req_t *req);

/* gw_front.c */
typedef struct gw gw_t;
/* Registers the public host: one path per service with the identity
 * handler in front of the reverse proxy, and a JSON 404 for the rest. */
gw_t *gw_front_new(mm_server_t *s, const gw_config_t *conf, SSL_CTX *ssl, mm_err_t *err);
h2o_hostconf_t *gw_front_host(gw_t *gw);
/* NULL-safe; after the server that used it has been freed. */
void gw_front_free(gw_t *gw);

#endif
