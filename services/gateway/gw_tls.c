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
#include "gw.h"

/* In this build (libh2o 2.2.5) the opaque `struct st_h2o_socket_ssl_t`
 * begins with these two members; gw_tls_ssl_of() checks at run time that
 * what it reads is an SSL of our own context before trusting it. */
struct gw_h2o_socket_ssl_head {
    SSL_CTX *ssl_ctx;
    SSL *ossl;
};

static int gw_ident_index = -1;

static void gw_ident_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

/* Accepts any certificate at handshake time; the verdict of the chain
 * check (CA mode) stays in SSL_get_verify_result(), which OpenSSL also
 * stores in the session, so it survives resumption. */
static int gw_verify_cb(int ok, X509_STORE_CTX *store)
{
    return 1;
}

SSL_CTX *gw_tls_new(const gw_config_t *conf, mm_err_t *err)
{
    static const unsigned char sid_ctx[] = "mm-gateway";
    SSL_CTX *ctx;
    unsigned long e;

    if (conf->cert_file == NULL || conf->key_file == NULL) {
        mm_err_set(err, "MM_TLS_CERT_FILE and MM_TLS_KEY_FILE are required");
        return NULL;
    }
    if (gw_ident_index < 0)
        gw_ident_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, gw_ident_free);
    ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* TLS 1.2: forward-secret AEAD suites only (no CBC); TLS 1.3 suites are all AEAD */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1)
        goto ossl_err;
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert_file) != 1) {
        mm_err_set(err, "MM_TLS_CERT_FILE=%s: cannot load the certificate chain", conf->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, conf->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        mm_err_set(err, "MM_TLS_KEY_FILE=%s: cannot load the key, or it does not match the certificate", conf->key_file);
        goto fail;
    }
    /* Required: without a session id context every resuming client that sent a certificate is dropped. */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    /* One ticket per handshake, not OpenSSL's default two: each costs an encryption and a MAC. */
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, gw_verify_cb);
    if (conf->client_ca_file != NULL && conf->client_ca_file[0] != '\0') {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(conf->client_ca_file);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, conf->client_ca_file, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            mm_err_set(err, "MM_CLIENT_CA_FILE=%s: cannot load CA certificates", conf->client_ca_file);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify_depth(ctx, 4);
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;

ossl_err:
    e = ERR_get_error();
    mm_err_set(err, "OpenSSL: %s", ERR_reason_error_string(e));
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* The one place that looks inside h2o's socket: returns the connection's
 * SSL, or NULL when it is not a TLS connection of `ctx`. */
static SSL *gw_tls_ssl_of(SSL_CTX *ctx, h2o_req_t *req)
{
    h2o_socket_t *sock;
    const struct gw_h2o_socket_ssl_head *head;

    if (req->conn->callbacks->get_socket == NULL || (sock = req->conn->callbacks->get_socket(req->conn)) == NULL)
        return NULL;
    if ((head = (const void *)sock->ssl) == NULL || head->ossl == NULL)
        return NULL;
    if (SSL_get_SSL_CTX(head->ossl) != ctx)
        return NULL;
    return head->ossl;
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
    SSL *ssl = gw_tls_ssl_of(ctx, req);
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
