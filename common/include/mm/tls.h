/*
 * TLS for libh2o servers that use client certificates as identities
 * (SPEC §2): the server SSL_CTX for mutual TLS that accepts self-signed
 * client certificates, and the one accessor that finds the SSL object of a
 * request inside libh2o 2.2.5, which has no public accessor for it. Used by
 * the gateway (public listener) and the agent (its peer server).
 */
#ifndef MM_TLS_H
#define MM_TLS_H

#include <openssl/ssl.h>
#include "mm/base.h"
#include "mm/h2o.h"

typedef struct mm_tls_server_conf {
    const char *cert_file;      /* PEM certificate chain, leaf first */
    const char *key_file;       /* PEM private key of the leaf */
    const char *client_ca_file; /* NULL or "": any client certificate (or none) passes the handshake */
    const char *sid_ctx;        /* session id context, e.g. the service name (required for resumption) */
    /* What error messages call the three files (e.g. "MM_TLS_CERT_FILE"); NULL: the path alone. */
    const char *cert_name, *key_name, *client_ca_name;
} mm_tls_server_conf_t;

/* Builds a server SSL_CTX: TLS >= 1.2, forward-secret AEAD suites on 1.2,
 * ALPN h2 and http/1.1, one session ticket per handshake, and client
 * certificates requested but not required. Any client certificate passes
 * the handshake, self-signed or expired: the caller gives its verdict at
 * HTTP level (a JSON 401 beats a TLS alert that clients report as EOF).
 * With a client CA, the chain verdict stays in SSL_get_verify_result().
 * Returns a new SSL_CTX (caller frees), or NULL with `err` set. */
SSL_CTX *mm_tls_server_new(const mm_tls_server_conf_t *conf, mm_err_t *err);

/* The SSL object of the TLS connection carrying `req`, or NULL when the
 * connection is not TLS or its SSL does not belong to `ctx`. This is the one
 * place that reads libh2o's opaque socket state (see tls.c); the check
 * against `ctx` guards it at run time. The SSL is owned by the connection. */
SSL *mm_tls_ssl_of(SSL_CTX *ctx, h2o_req_t *req);

#endif
