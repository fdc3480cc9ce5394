/*
 * Server TLS for mutual authentication by self-signed certificates, and
 * the SSL object of a request. See mm/tls.h.
 *
 * There is no CA by default: a self-signed certificate is proof enough,
 * because the handshake proves possession of its key. So the handshake
 * accepts every certificate (and none), and the request path decides.
 */
#include <string.h>
#include <openssl/err.h>
#include "mm/tls.h"

/* In this build (libh2o 2.2.5) the opaque `struct st_h2o_socket_ssl_t`
 * begins with these two members; mm_tls_ssl_of() checks at run time that
 * what it reads is an SSL of the caller's own context before trusting it. */
struct mm__h2o_socket_ssl_head {
    SSL_CTX *ssl_ctx;
    SSL *ossl;
};

/* Accepts any certificate at handshake time; the verdict of the chain
 * check (CA mode) stays in SSL_get_verify_result(), which OpenSSL also
 * stores in the session, so it survives resumption. */
static int mm__tls_verify_cb(int ok, X509_STORE_CTX *store)
{
    return 1;
}

/* "NAME=path" when the file has a name for messages, else the path. */
static void mm__tls_file_err(mm_err_t *err, const char *name, const char *path, const char *what)
{
    if (name != NULL)
        mm_err_set(err, "%s=%s: %s", name, path, what);
    else
        mm_err_set(err, "%s: %s", path, what);
}

SSL_CTX *mm_tls_server_new(const mm_tls_server_conf_t *conf, mm_err_t *err)
{
    const char *sid = conf->sid_ctx != NULL ? conf->sid_ctx : "matchmaker";
    SSL_CTX *ctx;
    unsigned long e;

    if (conf->cert_file == NULL || conf->key_file == NULL) {
        mm_err_set(err, "%s and %s are required", conf->cert_name != NULL ? conf->cert_name : "a certificate",
                   conf->key_name != NULL ? conf->key_name : "a key");
        return NULL;
    }
    ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* TLS 1.2: forward-secret AEAD suites only (no CBC); TLS 1.3 suites are all AEAD */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1)
        goto ossl_err;
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->cert_file) != 1) {
        mm__tls_file_err(err, conf->cert_name, conf->cert_file, "cannot load the certificate chain");
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, conf->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        mm__tls_file_err(err, conf->key_name, conf->key_file, "cannot load the key, or it does not match the certificate");
        goto fail;
    }
    /* Required: without a session id context every resuming client that sent a certificate is dropped. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid, (unsigned)strlen(sid));
    /* One ticket per handshake, not OpenSSL's default two: each costs an encryption and a MAC. */
    SSL_CTX_set_num_tickets(ctx, 1);
    /* Not FAIL_IF_NO_PEER_CERT: h2o would close without an alert and the client see a bare EOF. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, mm__tls_verify_cb);
    if (conf->client_ca_file != NULL && conf->client_ca_file[0] != '\0') {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(conf->client_ca_file);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, conf->client_ca_file, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            mm__tls_file_err(err, conf->client_ca_name, conf->client_ca_file, "cannot load CA certificates");
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

SSL *mm_tls_ssl_of(SSL_CTX *ctx, h2o_req_t *req)
{
    h2o_socket_t *sock;
    const struct mm__h2o_socket_ssl_head *head;

    if (req->conn->callbacks->get_socket == NULL || (sock = req->conn->callbacks->get_socket(req->conn)) == NULL)
        return NULL;
    if ((head = (const void *)sock->ssl) == NULL || head->ossl == NULL)
        return NULL;
    if (SSL_get_SSL_CTX(head->ossl) != ctx)
        return NULL;
    return head->ossl;
}
