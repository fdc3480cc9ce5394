/*
 * mm init: the agent's identity. An EC P-256 key and a self-signed X.509
 * certificate that carries the email in subjectAltName (SPEC §2). The key
 * is the identity (peer_id = SHA-256 of its SPKI), so the certificate is
 * made to last: ten years, renewable with the same key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "agent.h"

#define AGENT_CERT_DAYS (10 * 365)

static int agent_cert_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;

    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* subjectAltName = email:<email>, built as a GENERAL_NAME rather than from
 * configuration text, in which a ',' of the address would mean something. */
static int agent_cert_san_email(X509 *x, const char *email)
{
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    int ok = 0;

    if (names == NULL || gn == NULL || ia5 == NULL || ASN1_STRING_set(ia5, email, (int)strlen(email)) != 1) {
        ASN1_IA5STRING_free(ia5);
        GENERAL_NAME_free(gn);
        goto out;
    }
    GENERAL_NAME_set0_value(gn, GEN_EMAIL, ia5);
    if (sk_GENERAL_NAME_push(names, gn) == 0) {
        GENERAL_NAME_free(gn);
        goto out;
    }
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
out:
    GENERAL_NAMES_free(names);
    return ok ? 0 : -1;
}

static X509 *agent_cert_build(EVP_PKEY *pkey, const char *email, const char *cn)
{
    X509 *x = X509_new();
    X509_NAME *subject;
    X509V3_CTX v3;
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    int ok = 0;

    if (x == NULL)
        return NULL;
    mm_random_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f; /* positive */
    serial[0] |= 0x40; /* and of full length */
    if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto out;
    if (X509_set_version(x, 2) != 1 || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL || /* clock skew */
        X509_time_adj_ex(X509_getm_notAfter(x), AGENT_CERT_DAYS, 0, NULL) == NULL || X509_set_pubkey(x, pkey) != 1)
        goto out;
    subject = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, subject) != 1)
        goto out;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (agent_cert_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        agent_cert_ext(x, &v3, NID_key_usage, "critical,digitalSignature") != 0 ||
        agent_cert_ext(x, &v3, NID_ext_key_usage, "clientAuth,serverAuth") != 0 ||
        agent_cert_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 || agent_cert_san_email(x, email) != 0)
        goto out;
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        goto out;
    ok = 1;
out:
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

/* PEM of `pkey` (PKCS#8) or `x` into a malloc'ed buffer. */
static char *agent_cert_pem(EVP_PKEY *pkey, X509 *x, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    if (bio == NULL)
        return NULL;
    if ((pkey != NULL ? PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_X509(bio, x)) == 1 &&
        (n = BIO_get_mem_data(bio, &data)) > 0) {
        out = mm_xmalloc((size_t)n);
        memcpy(out, data, (size_t)n);
        *len = (size_t)n;
    }
    BIO_free(bio);
    return out;
}

int agent_cert_create(const char *email, const char *name, const char *key_path, const char *cert_path, mm_identity_t *id,
                      agent_err_t *err)
{
    EVP_PKEY *pkey = NULL;
    X509 *x = NULL;
    char *key_pem = NULL, *cert_pem = NULL;
    size_t key_len = 0, cert_len = 0;
    const char *cn = name != NULL && name[0] != '\0' && strlen(name) <= 64 ? name : email;
    int ret = -1;

    if (strlen(cn) > 64)
        cn = "Matchmaker peer";
    if ((pkey = EVP_EC_gen("P-256")) == NULL || (x = agent_cert_build(pkey, email, cn)) == NULL ||
        (key_pem = agent_cert_pem(pkey, NULL, &key_len)) == NULL || (cert_pem = agent_cert_pem(NULL, x, &cert_len)) == NULL) {
        agent_err_set(err, "crypto_error", "cannot make the key and certificate: %s", ERR_reason_error_string(ERR_get_error()));
        goto out;
    }
    if (mm_identity_from_x509(x, (int64_t)time(NULL), id) != MM_IDENTITY_OK || !id->has_email) {
        agent_err_set(err, "crypto_error", "the new certificate does not read back as %s", email);
        goto out;
    }
    if (agent_write_atomic(key_path, key_pem, key_len, 0600, err) != 0 ||
        agent_write_atomic(cert_path, cert_pem, cert_len, 0600, err) != 0)
        goto out;
    ret = 0;
out:
    ERR_clear_error();
    if (key_pem != NULL)
        OPENSSL_cleanse(key_pem, key_len);
    free(key_pem);
    free(cert_pem);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ret;
}

/* Copies the CA file to the config dir after checking that it holds at least one certificate. */
static int agent_cert_pin_ca(const char *src, const char *dst, agent_err_t *err)
{
    BIO *in = BIO_new_file(src, "r");
    X509 *x;
    char *pem = NULL;
    size_t len = 0, count = 0;
    BIO *out = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int ret = -1;

    if (in == NULL || out == NULL) {
        agent_err_set(err, "bad_server_ca", "cannot read the CA file %s: %s", src, strerror(errno));
        goto out;
    }
    while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
        PEM_write_bio_X509(out, x);
        X509_free(x);
        ++count;
    }
    if (count == 0 || (n = BIO_get_mem_data(out, &data)) <= 0) {
        agent_err_set(err, "bad_server_ca", "%s holds no PEM certificate: give the CA that signed the server's certificate", src);
        goto out;
    }
    pem = data;
    len = (size_t)n;
    ret = agent_write_atomic(dst, pem, len, 0600, err);
out:
    ERR_clear_error();
    BIO_free(in);
    BIO_free(out);
    return ret;
}

static int agent_cert_name_ok(const char *name)
{
    const unsigned char *p;

    if (strlen(name) > 128)
        return 0;
    for (p = (const unsigned char *)name; *p != '\0'; ++p)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

int agent_cmd_init(agent_args_t *args)
{
    agent_paths_t paths;
    agent_err_t err;
    mm_identity_t id;
    char email[MM_EMAIL_MAX + 1];

    if (args->email == NULL)
        return agent_cli_usage_error(args, "--email is required");
    if (mm_email_normalize(args->email, strlen(args->email), email) != 0)
        return agent_cli_usage_error(args, "--email %s: not an email address (ASCII, one @, at most 254 characters)", args->email);
    if (args->name != NULL && !agent_cert_name_ok(args->name))
        return agent_cli_usage_error(args, "--name: at most 128 characters, no control characters");
    if (args->server != NULL && strncmp(args->server, "https://", 8) != 0)
        return agent_cli_usage_error(args, "--server %s: the URL must start with https://", args->server);
    if (agent_paths_init(&paths, &err) != 0)
        return agent_out_error(&err);
    if (!args->force && (access(paths.config, F_OK) == 0 || access(paths.key, F_OK) == 0)) {
        agent_err_set(&err, "already_initialised",
                      "an identity already exists in %s: keep it, or replace it with mm init --force "
                      "(the old key is then gone, and with it your peer_id and your claim to its email)",
                      paths.config_dir);
        return agent_out_error(&err);
    }
    if (agent_mkdirs(paths.config_dir, &err) != 0)
        return agent_out_error(&err);
    chmod(paths.config_dir, 0700); /* an existing directory too: it holds the key */
    if (args->server_ca != NULL && agent_cert_pin_ca(args->server_ca, paths.server_ca, &err) != 0)
        return agent_out_error(&err);
    if (agent_cert_create(email, args->name, paths.key, paths.cert, &id, &err) != 0 ||
        agent_conf_save(&paths, email, args->name, args->server, &err) != 0)
        return agent_out_error(&err);
    agent_out_line("Created the identity of %s in %s\n  peer_id     %s\n  fingerprint %s\nNext: mm register", email,
                   paths.config_dir, id.peer_id, id.fingerprint);
    return agent_out_ok(json_pack("{s:s,s:s?,s:s,s:s,s:s,s:s,s:s,s:s?}", "email", email, "name", args->name, "peer_id", id.peer_id,
                                  "fingerprint", id.fingerprint, "config_dir", paths.config_dir, "cert", paths.cert, "key",
                                  paths.key, "server_ca", args->server_ca != NULL ? paths.server_ca : NULL));
}
