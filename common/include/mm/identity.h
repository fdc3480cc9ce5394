/*
 * A peer's identity, read from its X.509 certificate (SPEC §2):
 *   peer_id     = lowercase hex SHA-256 of the DER SubjectPublicKeyInfo
 *   fingerprint = lowercase hex SHA-256 of the whole DER certificate
 *   email       = subjectAltName rfc822Name first, else the subject's
 *                 emailAddress; trimmed, lowercased, validated.
 * Used by the gateway (client certificates) and the agent (peer servers).
 * Pure functions over OpenSSL objects: no I/O, no globals, thread-safe.
 */
#ifndef MM_IDENTITY_H
#define MM_IDENTITY_H

#include <openssl/x509.h>
#include "mm/base.h"

#define MM_PEER_ID_LEN 64
#define MM_EMAIL_MAX 254
#define MM_EMAIL_LOCAL_MAX 64

typedef enum mm_identity_status {
    MM_IDENTITY_OK = 0,
    MM_IDENTITY_EXPIRED,     /* before notBefore or after notAfter */
    MM_IDENTITY_UNSUPPORTED, /* key type/size not accepted (EC P-256/P-384, Ed25519, RSA >= 2048) */
} mm_identity_status_t;

typedef struct mm_identity {
    char peer_id[MM_PEER_ID_LEN + 1];
    char fingerprint[MM_PEER_ID_LEN + 1];
    char email[MM_EMAIL_MAX + 1]; /* "" when the certificate carries no valid email */
    int has_email;
    int64_t not_after; /* Unix seconds */
} mm_identity_t;

/* Reads the identity of `cert` into `id` and checks key type and validity
 * at time `now` (Unix seconds). Returns the status; `id` is filled (peer_id,
 * fingerprint, email) whenever the certificate could be parsed, even when
 * the status is EXPIRED or UNSUPPORTED. Returns -1 when it could not be. */
int mm_identity_from_x509(X509 *cert, int64_t now, mm_identity_t *id);

/* peer_id (hex SHA-256 of the SPKI) alone; `out` holds 65 bytes. 0 or -1. */
int mm_identity_peer_id(X509 *cert, char *out);

/* Key policy: 1 when `pkey` is EC P-256/P-384, Ed25519 or RSA >= 2048 bits. */
int mm_identity_key_supported(EVP_PKEY *pkey);

/* Normalises `in` (`len` bytes, not NUL-terminated) per SPEC §2: trims ASCII
 * whitespace, lowercases, requires ASCII printable, at most 254 characters,
 * exactly one '@', a non-empty local part of at most 64 and a non-empty
 * domain. Writes the NUL-terminated result to `out` (MM_EMAIL_MAX + 1 bytes).
 * Returns 0 or -EINVAL. */
int mm_email_normalize(const char *in, size_t len, char *out);

/* 1 when `s` is 64 lowercase hex characters. */
int mm_peer_id_valid(const char *s, size_t len);

#endif
