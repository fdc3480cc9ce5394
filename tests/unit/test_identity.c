/*
 * Unit tests for mm/identity.h: certificates are generated here with the
 * OpenSSL 3 API, round-tripped through DER as the gateway would receive
 * them, and every expected value is computed independently of identity.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include "mm/identity.h"

/* A fixed "now", so that validity tests do not depend on the clock. */
#define NOW ((int64_t)1700000000)
#define HOUR 3600
#define DAY 86400

/* Which names a generated certificate carries; NULL leaves one out. */
typedef struct cert_spec {
    const char *subject_email;
    const char *san_emails[3]; /* rfc822Name entries, in order */
    size_t san_email_lens[3];  /* 0: strlen; else exact bytes (embedded NUL) */
    const char *san_dns;       /* a dNSName before the emails */
    int64_t not_before, not_after;
    long serial;
} cert_spec_t;

static EVP_PKEY *key_rsa(size_t bits)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", bits);

    assert_non_null(k);
    return k;
}

static EVP_PKEY *key_ec(const char *curve)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);

    assert_non_null(k);
    return k;
}

static EVP_PKEY *key_named(const char *type)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, type);

    assert_non_null(k);
    return k;
}

/* A P-256 key whose encoding carries the explicit curve parameters instead
 * of the curve's name. */
static EVP_PKEY *key_ec_explicit(void)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    OSSL_PARAM params[3];
    EVP_PKEY *k = NULL;

    assert_non_null(ctx);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, (char *)OSSL_PKEY_EC_ENCODING_EXPLICIT, 0);
    params[2] = OSSL_PARAM_construct_end();
    assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
    assert_int_equal(EVP_PKEY_CTX_set_params(ctx, params), 1);
    assert_int_equal(EVP_PKEY_generate(ctx, &k), 1);
    EVP_PKEY_CTX_free(ctx);
    return k;
}

static void add_san(X509 *x, const cert_spec_t *spec)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    size_t i;

    assert_non_null(gens);
    if (spec->san_dns != NULL) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();

        assert_int_equal(ASN1_STRING_set(s, spec->san_dns, -1), 1);
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
        assert_true(sk_GENERAL_NAME_push(gens, gn) > 0);
    }
    for (i = 0; i != 3 && spec->san_emails[i] != NULL; ++i) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        size_t len = spec->san_email_lens[i] != 0 ? spec->san_email_lens[i] : strlen(spec->san_emails[i]);

        assert_int_equal(ASN1_STRING_set(s, spec->san_emails[i], (int)len), 1);
        GENERAL_NAME_set0_value(gn, GEN_EMAIL, s);
        assert_true(sk_GENERAL_NAME_push(gens, gn) > 0);
    }
    if (sk_GENERAL_NAME_num(gens) > 0)
        assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT), 1);
    GENERAL_NAMES_free(gens);
}

/* Builds and self-signs a certificate for `key`, then returns it re-parsed
 * from DER, the form in which a TLS peer's certificate arrives. */
static X509 *make_cert(EVP_PKEY *key, const cert_spec_t *spec)
{
    X509 *x = X509_new(), *parsed;
    X509_NAME *name;
    unsigned char *der = NULL;
    const unsigned char *p;
    const EVP_MD *md = EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448") ? NULL : EVP_sha256();
    int len;

    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), spec->serial != 0 ? spec->serial : 1), 1);
    assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(spec->not_before != 0 ? spec->not_before : NOW - HOUR)));
    assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(spec->not_after != 0 ? spec->not_after : NOW + DAY)));
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"peer", -1, -1, 0), 1);
    if (spec->subject_email != NULL)
        assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_pkcs9_emailAddress, MBSTRING_ASC,
                                                    (const unsigned char *)spec->subject_email, -1, -1, 0),
                         1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_int_equal(X509_set_pubkey(x, key), 1);
    add_san(x, spec);
    assert_true(X509_sign(x, key, md) > 0);

    len = i2d_X509(x, &der);
    assert_true(len > 0);
    p = der;
    parsed = d2i_X509(NULL, &p, len);
    assert_non_null(parsed);
    OPENSSL_free(der);
    X509_free(x);
    return parsed;
}

static void sha256_hex(const unsigned char *in, size_t len, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    size_t i;

    assert_int_equal(EVP_Digest(in, len, md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    for (i = 0; i != 32; ++i) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 0xf];
    }
    out[64] = '\0';
}

/* peer_id as SPEC §2 defines it, from the key rather than the certificate. */
static void expected_peer_id(EVP_PKEY *key, char out[65])
{
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);

    assert_true(len > 0);
    sha256_hex(der, (size_t)len, out);
    OPENSSL_free(der);
}

static void expected_fingerprint(X509 *cert, char out[65])
{
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);

    assert_true(len > 0);
    sha256_hex(der, (size_t)len, out);
    OPENSSL_free(der);
}

/* Reads the identity of a fresh certificate for `key` with no names. */
static int status_for_key(EVP_PKEY *key, mm_identity_t *id)
{
    cert_spec_t spec = {0};
    X509 *cert = make_cert(key, &spec);
    int st = mm_identity_from_x509(cert, NOW, id);

    X509_free(cert);
    return st;
}

/* One P-256 key for the email tests, made by the group setup. */
static EVP_PKEY *email_key;

/* Reads the email of a fresh certificate for email_key built from `spec`. */
static int email_for(const cert_spec_t *spec, mm_identity_t *id)
{
    X509 *cert;
    int st;

    cert = make_cert(email_key, spec);
    st = mm_identity_from_x509(cert, NOW, id);
    X509_free(cert);
    return st;
}

static void test_peer_id_is_sha256_of_spki(void **state)
{
    static const struct {
        const char *type, *param;
        size_t bits;
    } keys[] = {{"EC", "P-256", 0}, {"EC", "P-384", 0}, {"ED25519", NULL, 0}, {"RSA", NULL, 2048}};
    size_t i;

    (void)state;
    for (i = 0; i != sizeof(keys) / sizeof(keys[0]); ++i) {
        EVP_PKEY *key = keys[i].bits != 0       ? key_rsa(keys[i].bits)
                        : keys[i].param != NULL ? key_ec(keys[i].param)
                                                : key_named(keys[i].type);
        cert_spec_t spec = {0};
        X509 *cert = make_cert(key, &spec);
        char want_id[65], want_fp[65], peer_id[MM_PEER_ID_LEN + 1];
        mm_identity_t id;

        expected_peer_id(key, want_id);
        expected_fingerprint(cert, want_fp);
        assert_int_equal(mm_identity_from_x509(cert, NOW, &id), MM_IDENTITY_OK);
        assert_string_equal(id.peer_id, want_id);
        assert_string_equal(id.fingerprint, want_fp);
        assert_true(mm_peer_id_valid(id.peer_id, strlen(id.peer_id)));
        assert_true(mm_peer_id_valid(id.fingerprint, strlen(id.fingerprint)));
        assert_int_equal(mm_identity_peer_id(cert, peer_id), 0);
        assert_string_equal(peer_id, want_id);
        assert_int_equal(id.not_after, NOW + DAY);
        assert_int_equal(id.has_email, 0);
        assert_string_equal(id.email, "");
        X509_free(cert);
        EVP_PKEY_free(key);
    }
}

static void test_renewal_keeps_peer_id(void **state)
{
    EVP_PKEY *key = key_ec("P-256"), *other = key_ec("P-256");
    cert_spec_t a = {.serial = 1}, b = {.serial = 2, .not_after = NOW + 30 * DAY};
    X509 *ca = make_cert(key, &a), *cb = make_cert(key, &b), *cc = make_cert(other, &a);
    mm_identity_t ia, ib, ic;

    (void)state;
    assert_int_equal(mm_identity_from_x509(ca, NOW, &ia), MM_IDENTITY_OK);
    assert_int_equal(mm_identity_from_x509(cb, NOW, &ib), MM_IDENTITY_OK);
    assert_int_equal(mm_identity_from_x509(cc, NOW, &ic), MM_IDENTITY_OK);
    assert_string_equal(ia.peer_id, ib.peer_id);
    assert_string_not_equal(ia.fingerprint, ib.fingerprint);
    assert_string_not_equal(ia.peer_id, ic.peer_id);
    assert_int_equal(ib.not_after, NOW + 30 * DAY);
    X509_free(ca);
    X509_free(cb);
    X509_free(cc);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

static void test_san_email_wins(void **state)
{
    cert_spec_t spec = {.subject_email = "subject@example.com", .san_emails = {"San@Example.org"}};
    mm_identity_t id;

    (void)state;
    assert_int_equal(email_for(&spec, &id), MM_IDENTITY_OK);
    assert_int_equal(id.has_email, 1);
    assert_string_equal(id.email, "san@example.org");
}

static void test_subject_email_when_no_san_email(void **state)
{
    cert_spec_t only_subject = {.subject_email = "subject@example.com"};
    cert_spec_t dns_san = {.subject_email = "subject@example.com", .san_dns = "peer.example.com"};
    mm_identity_t id;

    (void)state;
    assert_int_equal(email_for(&only_subject, &id), MM_IDENTITY_OK);
    assert_int_equal(id.has_email, 1);
    assert_string_equal(id.email, "subject@example.com");
    assert_int_equal(email_for(&dns_san, &id), MM_IDENTITY_OK);
    assert_int_equal(id.has_email, 1);
    assert_string_equal(id.email, "subject@example.com");
}

static void test_first_valid_email_is_used(void **state)
{
    cert_spec_t second_san = {.subject_email = "subject@example.com",
                              .san_emails = {"not-an-email", "Second@Example.org", "third@example.org"}};
    cert_spec_t fallback = {.subject_email = "Subject@Example.com", .san_emails = {"two@@example.org"}};
    mm_identity_t id;

    (void)state;
    assert_int_equal(email_for(&second_san, &id), MM_IDENTITY_OK);
    assert_string_equal(id.email, "second@example.org");
    assert_int_equal(email_for(&fallback, &id), MM_IDENTITY_OK);
    assert_int_equal(id.has_email, 1);
    assert_string_equal(id.email, "subject@example.com");
}

static void test_email_normalised_from_cert(void **state)
{
    cert_spec_t san = {.san_emails = {"  Alice@Example.COM "}};
    cert_spec_t subject = {.subject_email = "  Alice@Example.COM "};
    mm_identity_t id;

    (void)state;
    assert_int_equal(email_for(&san, &id), MM_IDENTITY_OK);
    assert_string_equal(id.email, "alice@example.com");
    assert_int_equal(email_for(&subject, &id), MM_IDENTITY_OK);
    assert_string_equal(id.email, "alice@example.com");
}

static void test_invalid_emails_in_cert(void **state)
{
    char local65[128], long255[300];
    const char *bad[] = {"alice.example.com",
                         "alice@@example.com",
                         "a@b@example.com",
                         "@example.com",
                         "alice@",
                         local65,
                         long255,
                         "al\xc3\xa9@example.com",
                         "ali ce@example.com",
                         "alice@exa\tmple.com",
                         "",
                         "   "};
    mm_identity_t id;
    size_t i;

    (void)state;
    memset(local65, 'a', 65);
    memcpy(local65 + 65, "@example.com", sizeof("@example.com"));
    memset(long255, 'b', 255);
    memcpy(long255, "alice@", 6);
    long255[255] = '\0';
    for (i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        cert_spec_t spec = {.san_emails = {bad[i]}};

        assert_int_equal(email_for(&spec, &id), MM_IDENTITY_OK);
        assert_int_equal(id.has_email, 0);
        assert_string_equal(id.email, "");
        assert_true(mm_peer_id_valid(id.peer_id, strlen(id.peer_id)));
    }
    /* A NUL inside the SAN must not truncate it into a valid address. */
    {
        static const char nul[] = "alice@example.com\0.evil.org";
        cert_spec_t spec = {.san_emails = {nul}, .san_email_lens = {sizeof(nul) - 1}};

        assert_int_equal(email_for(&spec, &id), MM_IDENTITY_OK);
        assert_int_equal(id.has_email, 0);
    }
}

static void test_validity(void **state)
{
    EVP_PKEY *key = key_ec("P-256");
    cert_spec_t expired = {.not_before = NOW - 10 * DAY, .not_after = NOW - 1};
    cert_spec_t future = {.not_before = NOW + 1, .not_after = NOW + DAY};
    cert_spec_t edges = {.not_before = NOW, .not_after = NOW + DAY};
    cert_spec_t far = {.not_before = NOW - DAY, .not_after = 4102444800}; /* 2100-01-01, GeneralizedTime */
    X509 *c;
    mm_identity_t id;
    char want[65];

    (void)state;
    expected_peer_id(key, want);
    c = make_cert(key, &expired);
    assert_int_equal(mm_identity_from_x509(c, NOW, &id), MM_IDENTITY_EXPIRED);
    assert_string_equal(id.peer_id, want); /* filled even when expired */
    assert_int_equal(id.not_after, NOW - 1);
    assert_int_equal(mm_identity_from_x509(c, NOW - 1, &id), MM_IDENTITY_OK);
    X509_free(c);

    c = make_cert(key, &future);
    assert_int_equal(mm_identity_from_x509(c, NOW, &id), MM_IDENTITY_EXPIRED);
    assert_string_equal(id.peer_id, want);
    assert_int_equal(mm_identity_from_x509(c, NOW + 1, &id), MM_IDENTITY_OK);
    X509_free(c);

    c = make_cert(key, &edges);
    assert_int_equal(mm_identity_from_x509(c, NOW, &id), MM_IDENTITY_OK);
    assert_int_equal(mm_identity_from_x509(c, NOW + DAY, &id), MM_IDENTITY_OK);
    assert_int_equal(mm_identity_from_x509(c, NOW + DAY + 1, &id), MM_IDENTITY_EXPIRED);
    X509_free(c);

    c = make_cert(key, &far);
    assert_int_equal(mm_identity_from_x509(c, NOW, &id), MM_IDENTITY_OK);
    assert_int_equal(id.not_after, 4102444800);
    X509_free(c);
    EVP_PKEY_free(key);
}

static void test_key_policy(void **state)
{
    mm_identity_t id;
    char want[65];
    EVP_PKEY *k;

    (void)state;
    k = key_rsa(1024);
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_UNSUPPORTED);
    expected_peer_id(k, want);
    assert_string_equal(id.peer_id, want); /* filled even when unsupported */
    assert_int_equal(mm_identity_key_supported(k), 0);
    EVP_PKEY_free(k);

    k = key_ec("P-521");
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_UNSUPPORTED);
    EVP_PKEY_free(k);
    k = key_ec("secp256k1");
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_UNSUPPORTED);
    EVP_PKEY_free(k);
    k = key_named("ED448");
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_UNSUPPORTED);
    EVP_PKEY_free(k);
    k = key_ec_explicit();
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_UNSUPPORTED);
    EVP_PKEY_free(k);

    k = key_rsa(2048);
    assert_int_equal(mm_identity_key_supported(k), 1);
    assert_int_equal(status_for_key(k, &id), MM_IDENTITY_OK);
    EVP_PKEY_free(k);
    k = key_ec("P-256");
    assert_int_equal(mm_identity_key_supported(k), 1);
    EVP_PKEY_free(k);
    k = key_ec("P-384");
    assert_int_equal(mm_identity_key_supported(k), 1);
    EVP_PKEY_free(k);
    k = key_named("ED25519");
    assert_int_equal(mm_identity_key_supported(k), 1);
    EVP_PKEY_free(k);
    assert_int_equal(mm_identity_key_supported(NULL), 0);
}

/* An expired certificate with a bad key reports the key: renewing the
 * certificate alone would not make it acceptable. */
static void test_unsupported_outranks_expired(void **state)
{
    EVP_PKEY *k = key_rsa(1024);
    cert_spec_t expired = {.not_before = NOW - 10 * DAY, .not_after = NOW - DAY};
    X509 *c = make_cert(k, &expired);
    mm_identity_t id;

    (void)state;
    assert_int_equal(mm_identity_from_x509(c, NOW, &id), MM_IDENTITY_UNSUPPORTED);
    X509_free(c);
    EVP_PKEY_free(k);
}

static void test_null_arguments(void **state)
{
    mm_identity_t id;
    char out[MM_PEER_ID_LEN + 1];

    (void)state;
    memset(&id, 'x', sizeof(id));
    assert_int_equal(mm_identity_from_x509(NULL, NOW, &id), -1);
    assert_string_equal(id.peer_id, "");
    assert_int_equal(mm_identity_peer_id(NULL, out), -1);
}

static void test_email_normalize(void **state)
{
    static const struct {
        const char *in, *out;
    } good[] = {
        {"alice@example.com", "alice@example.com"},
        {"  Alice@Example.COM ", "alice@example.com"},
        {"\t\r\n BOB.Smith+tag@Sub.Example.ORG\n", "bob.smith+tag@sub.example.org"},
        {"a@b", "a@b"},
        {"x!#$%&'*/=?^_`{|}~-@example.com", "x!#$%&'*/=?^_`{|}~-@example.com"},
    };
    static const char *const bad[] = {
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "a@@b.com",
        "a@b@c.com",
        "ali ce@example.com",
        "alice@exa mple.com",
        "al\xc3\xa9@example.com",
        "alice@example.com\x7f",
        "ali\001ce@example.com",
    };
    char out[MM_EMAIL_MAX + 1], in[400];
    size_t i;

    (void)state;
    for (i = 0; i != sizeof(good) / sizeof(good[0]); ++i) {
        assert_int_equal(mm_email_normalize(good[i].in, strlen(good[i].in), out), 0);
        assert_string_equal(out, good[i].out);
    }
    for (i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        memcpy(out, "junk", 5);
        assert_int_equal(mm_email_normalize(bad[i], strlen(bad[i]), out), -EINVAL);
        assert_string_equal(out, "");
    }

    /* The length is what counts, not a NUL. */
    assert_int_equal(mm_email_normalize("a@b.c\0d", 7, out), -EINVAL);
    assert_int_equal(mm_email_normalize("a@b.cXYZ", 5, out), 0);
    assert_string_equal(out, "a@b.c");
    assert_int_equal(mm_email_normalize(NULL, 0, out), -EINVAL);

    /* Local part: 64 accepted, 65 refused. */
    memset(in, 'L', 64);
    memcpy(in + 64, "@x.org", 6);
    assert_int_equal(mm_email_normalize(in, 70, out), 0);
    assert_int_equal(strlen(out), 70);
    assert_int_equal(out[0], 'l');
    memset(in, 'l', 65);
    memcpy(in + 65, "@x.org", 6);
    assert_int_equal(mm_email_normalize(in, 71, out), -EINVAL);

    /* Total: 254 accepted, 255 refused; surrounding spaces do not count. */
    memset(in, 'd', sizeof(in));
    memcpy(in, "alice@", 6);
    assert_int_equal(mm_email_normalize(in, 254, out), 0);
    assert_int_equal(strlen(out), 254);
    assert_int_equal(mm_email_normalize(in, 255, out), -EINVAL);
    memset(in, ' ', 20);
    memcpy(in + 20, "alice@", 6);
    memset(in + 26, 'd', 248);
    memset(in + 274, ' ', 20);
    assert_int_equal(mm_email_normalize(in, 294, out), 0);
    assert_int_equal(strlen(out), 254);

    /* In place. */
    memcpy(in, "  Carol@Example.com", 20);
    assert_int_equal(mm_email_normalize(in, 19, in), 0);
    assert_string_equal(in, "carol@example.com");
}

static void test_peer_id_valid(void **state)
{
    const char *good = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char s[MM_PEER_ID_LEN + 2];

    (void)state;
    assert_int_equal(mm_peer_id_valid(good, 64), 1);
    assert_int_equal(mm_peer_id_valid(good, 63), 0);
    assert_int_equal(mm_peer_id_valid(NULL, 64), 0);
    assert_int_equal(mm_peer_id_valid("", 0), 0);
    memcpy(s, good, 65);
    s[10] = 'A';
    assert_int_equal(mm_peer_id_valid(s, 64), 0);
    s[10] = 'g';
    assert_int_equal(mm_peer_id_valid(s, 64), 0);
    s[10] = '\0';
    assert_int_equal(mm_peer_id_valid(s, 64), 0);
    memcpy(s, good, 64);
    s[64] = '0';
    s[65] = '\0';
    assert_int_equal(mm_peer_id_valid(s, 65), 0);
}

static int group_setup(void **state)
{
    (void)state;
    email_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return email_key != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(email_key);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_id_is_sha256_of_spki),
        cmocka_unit_test(test_renewal_keeps_peer_id),
        cmocka_unit_test(test_san_email_wins),
        cmocka_unit_test(test_subject_email_when_no_san_email),
        cmocka_unit_test(test_first_valid_email_is_used),
        cmocka_unit_test(test_email_normalised_from_cert),
        cmocka_unit_test(test_invalid_emails_in_cert),
        cmocka_unit_test(test_validity),
        cmocka_unit_test(test_key_policy),
        cmocka_unit_test(test_unsupported_outranks_expired),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_email_normalize),
        cmocka_unit_test(test_peer_id_valid),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
