/*
 * TLS for the public listener, and the peer identity of a connection.
 *
 * There is no CA by default: a self-signed certificate is proof enough,
 * because the handshake proves possession of its key. So the handshake
 * accepts every certificate (and none), and the request path decides:
 * a clear 401 in JSON beats a TLS alert that curl reports as EOF.
 */
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "mm/log.h"
#include "mm/tls.h"
#include "gw.h"

static int gw_ident_index = -1;

static void gw_ident_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

SSL_CTX *gw_tls_new(const gw_config_t *conf, mm_err_t *err)
{
    mm_tls_server_conf_t tls = {
        .cert_file = conf->cert_file,
        .key_file = conf->key_file,
        .client_ca_file = conf->client_ca_file,
        .sid_ctx = "mm-gateway",
        .cert_name = "MM_TLS_CERT_FILE",
        .key_name = "MM_TLS_KEY_FILE",
        .client_ca_name = "MM_CLIENT_CA_FILE",
    };

    if (gw_ident_index < 0)
        gw_ident_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, gw_ident_free);
    return mm_tls_server_new(&tls, err);
}

static gw_ident_status_t gw_tls_verdict(SSL *ssl, X509 *cert, int ca_mode, mm_identity_t *id)
{
    long vr;

    switch (mm_identity_from_x509(cert, (int64_t)time(NULL), id)) {
    case MM_IDENTITY_OK:
        break;
    case MM_IDENTITY_EXPIRED:
        return GW_IDENT_EXPIRED;
    default:
        return GW_IDENT_UNSUPPORTED;
    }
    if (ca_mode && (vr = SSL_get_verify_result(ssl)) != X509_V_OK) {
        /* a chain that is fine but for an expired leaf reports that, not "untrusted" */
        if (vr == X509_V_ERR_CERT_HAS_EXPIRED || vr == X509_V_ERR_CERT_NOT_YET_VALID)
            return GW_IDENT_EXPIRED;
        return GW_IDENT_UNTRUSTED;
    }
    return GW_IDENT_OK;
}

const gw_ident_t *gw_tls_identity(SSL_CTX *ctx, int ca_mode, h2o_req_t *req)
{
    static const gw_ident_t none = {.status = GW_IDENT_NONE};
    SSL *ssl = mm_tls_ssl_of(ctx, req);
    gw_ident_t *ident;
    X509 *cert;

    if (ssl == NULL)
        return &none;
    if ((ident = SSL_get_ex_data(ssl, gw_ident_index)) != NULL)
        return ident;
    /* From the session, not the verify callback: the callback does not run on resumption. */
    if ((cert = SSL_get0_peer_certificate(ssl)) == NULL)
        return &none;
    ident = mm_xcalloc(1, sizeof(*ident));
    ident->status = gw_tls_verdict(ssl, cert, ca_mode, &ident->id);
    SSL_set_ex_data(ssl, gw_ident_index, ident);
    return ident;
}
