/*
 * Hole-punching packets; see mm/punch.h and proto/punch.md. The MAC is
 * HMAC-SHA256 with OpenSSL's one-shot HMAC(); the comparison is
 * CRYPTO_memcmp, so a forger learns nothing from timing.
 */
#include <errno.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "mm/punch.h"

static void mm__punch_put64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; --i, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t mm__punch_get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i != 8; ++i)
        v = (v << 8) | p[i];
    return v;
}

static int mm__punch_fields_valid(uint8_t type, uint8_t role, uint64_t seq, uint64_t echo)
{
    if (type != MM_PUNCH_PROBE && type != MM_PUNCH_ACK && type != MM_PUNCH_KEEPALIVE)
        return 0;
    if (role != MM_PUNCH_OFFERER && role != MM_PUNCH_ANSWERER)
        return 0;
    if (seq == 0)
        return 0;
    return type == MM_PUNCH_ACK ? echo != 0 : echo == 0;
}

static int mm__punch_mac(const uint8_t *secret, const uint8_t *signed_part, uint8_t mac[MM_PUNCH_MAC_LEN])
{
    unsigned int len = 0;

    if (HMAC(EVP_sha256(), secret, MM_PUNCH_SECRET_LEN, signed_part, MM_PUNCH_SIGNED_LEN, mac, &len) == NULL ||
        len != MM_PUNCH_MAC_LEN)
        return -EINVAL;
    return 0;
}

int mm_punch_encode(const mm_punch_t *p, const uint8_t *secret, size_t secret_len, uint8_t *out, size_t size)
{
    if (p == NULL || secret == NULL || secret_len != MM_PUNCH_SECRET_LEN || out == NULL ||
        !mm__punch_fields_valid(p->type, p->role, p->seq, p->echo))
        return -EINVAL;
    if (size < MM_PUNCH_LEN)
        return -ENOSPC;
    memcpy(out, MM_PUNCH_MAGIC, MM_PUNCH_MAGIC_LEN);
    out[4] = p->type;
    out[5] = p->role;
    out[6] = out[7] = 0;
    memcpy(out + 8, p->session_id, MM_PUNCH_SESSION_ID_LEN);
    mm__punch_put64(out + 24, p->seq);
    mm__punch_put64(out + 32, p->echo);
    if (mm__punch_mac(secret, out, out + MM_PUNCH_SIGNED_LEN) != 0)
        return -EINVAL;
    return MM_PUNCH_LEN;
}

int mm_punch_is_punch(const uint8_t *buf, size_t len)
{
    return buf != NULL && len == MM_PUNCH_LEN && memcmp(buf, MM_PUNCH_MAGIC, MM_PUNCH_MAGIC_LEN) == 0;
}

int mm_punch_peek_session(const uint8_t *buf, size_t len, uint8_t session_id[MM_PUNCH_SESSION_ID_LEN])
{
    if (!mm_punch_is_punch(buf, len))
        return -EINVAL;
    memcpy(session_id, buf + 8, MM_PUNCH_SESSION_ID_LEN);
    return 0;
}

int mm_punch_decode(const uint8_t *buf, size_t len, const uint8_t *secret, size_t secret_len, mm_punch_role_t peer_role,
                    mm_punch_t *out)
{
    uint8_t mac[MM_PUNCH_MAC_LEN];
    int ok;

    if (!mm_punch_is_punch(buf, len) || secret == NULL || secret_len != MM_PUNCH_SECRET_LEN || out == NULL)
        return -EINVAL;
    if (mm__punch_mac(secret, buf, mac) != 0)
        return -EINVAL;
    ok = CRYPTO_memcmp(mac, buf + MM_PUNCH_SIGNED_LEN, MM_PUNCH_MAC_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    if (!ok)
        return -EBADMSG;
    /* authentic from here on: the fields may be read */
    if (buf[6] != 0 || buf[7] != 0 || !mm__punch_fields_valid(buf[4], buf[5], mm__punch_get64(buf + 24), mm__punch_get64(buf + 32)))
        return -EINVAL;
    if (buf[5] != (uint8_t)peer_role)
        return -EBADMSG;
    out->type = buf[4];
    out->role = buf[5];
    memcpy(out->session_id, buf + 8, MM_PUNCH_SESSION_ID_LEN);
    out->seq = mm__punch_get64(buf + 24);
    out->echo = mm__punch_get64(buf + 32);
    return 0;
}

int mm_punch_session_id_parse(const char *hex, size_t len, uint8_t out[MM_PUNCH_SESSION_ID_LEN])
{
    size_t i;

    if (hex == NULL || len != 2 * MM_PUNCH_SESSION_ID_LEN)
        return -EINVAL;
    for (i = 0; i != len; ++i) {
        int c = hex[i], v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return -EINVAL;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

int mm_punch_secret_parse(const char *b64, size_t len, uint8_t out[MM_PUNCH_SECRET_LEN])
{
    /* 32 bytes: 43 characters and one '=' */
    unsigned char bytes[33], again[45];
    int n;

    if (b64 == NULL || len != 44 || b64[43] != '=' || b64[42] == '=')
        return -EINVAL;
    n = EVP_DecodeBlock(bytes, (const unsigned char *)b64, 44);
    if (n != 33) /* EVP_DecodeBlock counts the padding as a zero byte */
        goto bad;
    /* canonical only: the unused low bits of the last character are zero */
    if (EVP_EncodeBlock(again, bytes, MM_PUNCH_SECRET_LEN) != 44 || memcmp(again, b64, 44) != 0)
        goto bad;
    memcpy(out, bytes, MM_PUNCH_SECRET_LEN);
    OPENSSL_cleanse(bytes, sizeof(bytes));
    return 0;
bad:
    OPENSSL_cleanse(bytes, sizeof(bytes));
    return -EINVAL;
}

int mm_punch_window_accept(mm_punch_window_t *w, uint64_t seq)
{
    uint64_t behind;

    if (seq == 0)
        return 0;
    if (seq > w->top) {
        uint64_t shift = seq - w->top;
        w->bitmap = shift >= MM_PUNCH_WINDOW ? 1 : (w->bitmap << shift) | 1;
        w->top = seq;
        return 1;
    }
    behind = w->top - seq;
    if (behind >= MM_PUNCH_WINDOW || (w->bitmap & ((uint64_t)1 << behind)) != 0)
        return 0;
    w->bitmap |= (uint64_t)1 << behind;
    return 1;
}
