/*
 * A peer's identity from its X.509 certificate (SPEC §2): peer_id from the
 * key, fingerprint from the certificate, email from the certificate's names,
 * and the key and validity policy. Pure functions over OpenSSL objects: no
 * I/O, no globals, safe from any thread.
 */
#include <errno.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include "mm/identity.h"

#define MM__SHA256_LEN 32

/* Hex SHA-256 of `len` DER bytes into `out` (MM_PEER_ID_LEN + 1 bytes). */
static int mm__sha256_hex(const unsigned char *der, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ret = -1;

    if (EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != MM__SHA256_LEN)
        goto out;
    mm_hex_encode(out, md, mdlen);
    ret = 0;
out:
    return ret;
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d (H. Hinnant's
 * days_from_civil). Done by hand rather than with timegm() so that every
 * date a certificate can carry (years 0..9999) maps to an exact int64_t
 * without time_t range questions or timegm's ambiguous -1. */
static int64_t mm__days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Converts a certificate time to Unix seconds. ASN1_TIME_to_tm validates
 * the UTCTime/GeneralizedTime syntax; a NULL time is refused here because
 * ASN1_TIME_to_tm would silently substitute the current time for it. */
static int mm__asn1_time_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    int ret = -EINVAL;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        goto out;
    *out = mm__days_from_civil((int64_t)tm.tm_year + 1900, (int64_t)tm.tm_mon + 1, tm.tm_mday) * 86400 +
           (int64_t)tm.tm_hour * 3600 + (int64_t)tm.tm_min * 60 + tm.tm_sec;
    ret = 0;
out:
    return ret;
}

/* Normalises one ASN.1 string from a certificate as an email. The string is
 * converted to UTF-8 first, whatever its declared type, so that a BMPString
 * or UniversalString cannot pass its raw bytes off as ASCII; anything
 * non-ASCII (or a NUL) is then refused by mm_email_normalize. */
static int mm__email_from_asn1(const ASN1_STRING *s, char *out)
{
    unsigned char *utf8 = NULL;
    int len, ret = -EINVAL;

    if (s == NULL)
        goto out;
    len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0)
        goto out;
    ret = mm_email_normalize((const char *)utf8, (size_t)len, out);
out:
    OPENSSL_free(utf8);
    return ret;
}

/* Finds the certificate's email per SPEC §2: the first subjectAltName
 * rfc822Name that normalises validly, else the first valid subject
 * emailAddress. A certificate with two subjectAltName extensions (malformed)
 * yields no SAN at all and falls back to the subject. Returns 0 or -ENOENT. */
static int mm__cert_email(X509 *cert, char *out)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    const X509_NAME *subject = X509_get_subject_name(cert);
    int i, ret = -ENOENT;

    for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); ++i) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);

        if (gn->type == GEN_EMAIL && mm__email_from_asn1(gn->d.rfc822Name, out) == 0) {
            ret = 0;
            goto out;
        }
    }
    for (i = -1; subject != NULL && (i = X509_NAME_get_index_by_NID(subject, NID_pkcs9_emailAddress, i)) >= 0;) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(subject, i);

        if (mm__email_from_asn1(X509_NAME_ENTRY_get_data(e), out) == 0) {
            ret = 0;
            goto out;
        }
    }
out:
    if (ret != 0)
        out[0] = '\0';
    GENERAL_NAMES_free(gens);
    return ret;
}

/* EC keys are accepted on P-256 and P-384 only, and only when the
 * certificate names the curve: explicit curve parameters are refused even
 * when they describe P-256, since they are the vehicle of curve-substitution
 * attacks (CVE-2020-0601) and no honest client sends them. */
static int mm__ec_key_supported(EVP_PKEY *pkey)
{
    char group[80], encoding[32];
    size_t glen = 0, elen = 0;
    int nid, supported = 0;

    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof(encoding), &elen) != 1 ||
        strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
        goto out;
    if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1)
        goto out;
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(group);
    supported = nid == NID_X9_62_prime256v1 || nid == NID_secp384r1;
out:
    return supported;
}

/* RSA-PSS keys (id-RSASSA-PSS) count as RSA: TLS 1.3 signs with them and
 * the size rule is the same. */
int mm_identity_key_supported(EVP_PKEY *pkey)
{
    int supported = 0;

    if (pkey == NULL)
        supported = 0;
    else if (EVP_PKEY_is_a(pkey, "ED25519"))
        supported = 1;
    else if (EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_is_a(pkey, "RSA-PSS"))
        supported = EVP_PKEY_get_bits(pkey) >= 2048;
    else if (EVP_PKEY_is_a(pkey, "EC"))
        supported = mm__ec_key_supported(pkey);
    return supported;
}

/* The SPKI is re-encoded from the parsed certificate, so the hash is over
 * canonical DER and equals i2d_PUBKEY() of the same key: a renewed
 * certificate for the same key keeps its peer_id. Keys OpenSSL cannot load
 * (unknown algorithms) still get a peer_id, as the SPKI is kept as bytes. */
int mm_identity_peer_id(X509 *cert, char *out)
{
    unsigned char *der = NULL;
    X509_PUBKEY *spki;
    int len, ret = -1;

    if (cert == NULL || out == NULL)
        goto out;
    spki = X509_get_X509_PUBKEY(cert);
    if (spki == NULL)
        goto out;
    len = i2d_X509_PUBKEY(spki, &der);
    if (len <= 0)
        goto out;
    ret = mm__sha256_hex(der, (size_t)len, out);
out:
    OPENSSL_free(der);
    return ret;
}

/* Fills everything first, then decides: an unsupported key outranks an
 * expired certificate, because renewing the certificate would not fix it.
 * Validity is inclusive at both ends (RFC 5280 §4.1.2.5) and compared on
 * the same parsed seconds that are reported in not_after. On failure `id`
 * is zeroed so that no half-read identity is ever used. */
int mm_identity_from_x509(X509 *cert, int64_t now, mm_identity_t *id)
{
    unsigned char *der = NULL;
    int64_t not_before = 0;
    int len, ret = -1;

    if (id == NULL)
        goto out;
    memset(id, 0, sizeof(*id));
    if (cert == NULL || mm_identity_peer_id(cert, id->peer_id) != 0)
        goto out;
    len = i2d_X509(cert, &der);
    if (len <= 0 || mm__sha256_hex(der, (size_t)len, id->fingerprint) != 0)
        goto out;
    if (mm__asn1_time_unix(X509_get0_notBefore(cert), &not_before) != 0 ||
        mm__asn1_time_unix(X509_get0_notAfter(cert), &id->not_after) != 0)
        goto out;
    id->has_email = mm__cert_email(cert, id->email) == 0;
    if (!mm_identity_key_supported(X509_get0_pubkey(cert)))
        ret = MM_IDENTITY_UNSUPPORTED;
    else if (now < not_before || now > id->not_after)
        ret = MM_IDENTITY_EXPIRED;
    else
        ret = MM_IDENTITY_OK;
out:
    if (ret < 0 && id != NULL)
        memset(id, 0, sizeof(*id));
    OPENSSL_free(der);
    return ret;
}

static int mm__is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Trims, then checks and lowercases in one pass. Only printable ASCII
 * without spaces (0x21..0x7e) is kept: control characters, NULs and
 * anything non-ASCII would otherwise reach headers, logs and database keys.
 * `out` is written only up to the checked length, and is "" on failure;
 * `in` and `out` may be the same buffer. */
int mm_email_normalize(const char *in, size_t len, char *out)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i, at = 0, ats = 0;
    int ret = -EINVAL;

    if (out == NULL)
        goto out;
    if (in == NULL)
        len = 0;
    while (len != 0 && mm__is_space(s[0])) {
        ++s;
        --len;
    }
    while (len != 0 && mm__is_space(s[len - 1]))
        --len;
    if (len == 0 || len > MM_EMAIL_MAX)
        goto out;
    for (i = 0; i != len; ++i) {
        unsigned char c = s[i];

        if (c < 0x21 || c > 0x7e)
            goto out;
        if (c == '@') {
            at = i;
            ++ats;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    if (ats != 1 || at == 0 || at > MM_EMAIL_LOCAL_MAX || at == len - 1)
        goto out;
    ret = 0;
out:
    if (ret != 0 && out != NULL)
        out[0] = '\0';
    return ret;
}

int mm_peer_id_valid(const char *s, size_t len)
{
    size_t i;
    int valid = s != NULL && len == MM_PEER_ID_LEN;

    for (i = 0; valid && i != len; ++i)
        valid = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    return valid;
}
