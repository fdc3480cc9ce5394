/*
 * The STUN codec: parsing, inspection and encoding of RFC 8489 messages
 * (and RFC 3489 "classic" ones) over explicit lengths. See mm/stun.h.
 *
 * Every read is bounds-checked against the message length before it is
 * made: the parser walks the attributes once, checking that each one and
 * its padding lie inside the message, and later lookups only use what the
 * parser recorded. The codec is libFuzzer-tested (tests/fuzz/fuzz_stun.c).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include "mm/stun.h"

#define MM__STUN_MI_LEN 20 /* HMAC-SHA1 */
#define MM__STUN_UNKNOWN_REASON "Unknown Attribute"

static inline uint16_t mm__rd16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t mm__rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void mm__wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void mm__wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- CRC-32 ---------------------------------------------------------- */

/* Slice-by-8 tables for the reflected polynomial 0xEDB88320, built once.
 * FINGERPRINT runs on every datagram, and eight table lookups per eight
 * bytes keep it to a few cycles per byte. */
static uint32_t mm__crc_table[8][256];
static pthread_once_t mm__crc_once = PTHREAD_ONCE_INIT;

static void mm__crc_init(void)
{
    uint32_t i, j, c;

    for (i = 0; i != 256; ++i) {
        c = i;
        for (j = 0; j != 8; ++j)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        mm__crc_table[0][i] = c;
    }
    for (i = 0; i != 256; ++i)
        for (j = 1; j != 8; ++j)
            mm__crc_table[j][i] = (mm__crc_table[j - 1][i] >> 8) ^ mm__crc_table[0][mm__crc_table[j - 1][i] & 0xff];
}

uint32_t mm_stun_crc32(const uint8_t *p, size_t len)
{
    uint32_t c = 0xffffffffu, lo, hi;

    pthread_once(&mm__crc_once, mm__crc_init);
    while (len >= 8) {
        lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = mm__crc_table[7][lo & 0xff] ^ mm__crc_table[6][(lo >> 8) & 0xff] ^ mm__crc_table[5][(lo >> 16) & 0xff] ^
            mm__crc_table[4][lo >> 24] ^ mm__crc_table[3][hi & 0xff] ^ mm__crc_table[2][(hi >> 8) & 0xff] ^
            mm__crc_table[1][(hi >> 16) & 0xff] ^ mm__crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- != 0)
        c = mm__crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- HMAC-SHA1 --------------------------------------------------------- */

/* HMAC-SHA1 of a message prefix whose header carries `hdr_len` as its
 * length field (RFC 8489 §14.5: the length as if MESSAGE-INTEGRITY ended
 * the message), without copying the message. Returns 0 or -EIO. */
static int mm__hmac_sha1(const uint8_t *key, size_t keylen, const uint8_t *data, size_t n, uint16_t hdr_len,
                         uint8_t out[MM__STUN_MI_LEN])
{
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    uint8_t head[4];
    size_t outlen = 0;
    int rc = -EIO;

    mm__wr16(head, mm__rd16(data));
    mm__wr16(head + 2, hdr_len);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0);
    params[1] = OSSL_PARAM_construct_end();
    if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL || (ctx = EVP_MAC_CTX_new(mac)) == NULL)
        goto out;
    /* EVP_MAC_init refuses an empty key; a zero-length password gets one zero byte, which HMAC pads to the same block. */
    if (EVP_MAC_init(ctx, keylen != 0 ? key : (const uint8_t *)"", keylen != 0 ? keylen : 1, params) != 1)
        goto out;
    if (EVP_MAC_update(ctx, head, sizeof(head)) != 1 || EVP_MAC_update(ctx, data + 4, n - 4) != 1)
        goto out;
    if (EVP_MAC_final(ctx, out, &outlen, MM__STUN_MI_LEN) != 1 || outlen != MM__STUN_MI_LEN)
        goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

/* ---- parsing ------------------------------------------------------------ */

int mm_stun_parse(const uint8_t *buf, size_t len, mm_stun_msg_t *msg)
{
    size_t off, padded;
    uint16_t at, alen;
    int after_mi = 0;

    memset(msg, 0, sizeof(*msg));
    if (buf == NULL || len < MM_STUN_HEADER_LEN || (buf[0] & 0xc0) != 0)
        return -EINVAL;
    if ((mm__rd16(buf + 2) & 3) != 0 || (size_t)mm__rd16(buf + 2) + MM_STUN_HEADER_LEN != len)
        return -EINVAL;
    msg->data = buf;
    msg->len = len;
    msg->type = mm__rd16(buf);
    msg->classic = mm__rd32(buf + 4) != MM_STUN_MAGIC_COOKIE;
    msg->txid = msg->classic ? buf + 4 : buf + 8;
    msg->txid_len = msg->classic ? MM_STUN_CLASSIC_TXID_LEN : MM_STUN_TXID_LEN;
    for (off = MM_STUN_HEADER_LEN; off < len; off += 4 + padded) {
        int keep = !after_mi;

        if (len - off < 4 || msg->has_fingerprint)
            return -EINVAL; /* a partial attribute header, or anything after FINGERPRINT */
        at = mm__rd16(buf + off);
        alen = mm__rd16(buf + off + 2);
        padded = ((size_t)alen + 3) & ~(size_t)3;
        if (padded > len - off - 4)
            return -EINVAL;
        switch (at) {
        case MM_STUN_ATTR_MESSAGE_INTEGRITY:
            if (alen != MM__STUN_MI_LEN)
                return -EINVAL;
            if (!after_mi) {
                msg->integrity_off = off;
                after_mi = 1;
            }
            break;
        case MM_STUN_ATTR_MESSAGE_INTEGRITY_SHA256:
            if (alen < 16 || alen > 32 || (alen & 3) != 0)
                return -EINVAL;
            keep = 1;
            after_mi = 1;
            break;
        case MM_STUN_ATTR_FINGERPRINT:
            if (alen != 4)
                return -EINVAL;
            if ((mm_stun_crc32(buf, off) ^ MM_STUN_FINGERPRINT_XOR) != mm__rd32(buf + off + 4))
                return -EBADMSG;
            msg->has_fingerprint = 1;
            keep = 1;
            break;
        default:
            break;
        }
        if (!keep)
            continue;
        if (msg->nattrs == MM_STUN_MAX_ATTRS)
            return -E2BIG;
        msg->attrs[msg->nattrs++] = (mm_stun_attr_t){.type = at, .len = alen, .value = buf + off + 4};
    }
    return 0;
}

const mm_stun_attr_t *mm_stun_find(const mm_stun_msg_t *msg, uint16_t type)
{
    size_t i;

    for (i = 0; i != msg->nattrs; ++i)
        if (msg->attrs[i].type == type)
            return &msg->attrs[i];
    return NULL;
}

int mm_stun_decode_address(const mm_stun_msg_t *msg, const mm_stun_attr_t *attr, mm_addr_t *out)
{
    int xored = attr->type == MM_STUN_ATTR_XOR_MAPPED_ADDRESS;
    uint8_t mask[16];
    size_t i, n;

    memset(out, 0, sizeof(*out));
    if (attr->len < 4)
        return -EINVAL;
    switch (attr->value[1]) {
    case 0x01:
        out->family = AF_INET;
        n = 4;
        break;
    case 0x02:
        out->family = AF_INET6;
        n = 16;
        break;
    default:
        return -EINVAL;
    }
    if (attr->len != 4 + n)
        return -EINVAL;
    /* The XOR key is the magic cookie followed by the transaction id: the
     * header's bytes 4..19 of an RFC 8489 message. */
    mm__wr32(mask, MM_STUN_MAGIC_COOKIE);
    memcpy(mask + 4, msg->data + 8, 12);
    out->port = mm__rd16(attr->value + 2);
    if (xored)
        out->port ^= (uint16_t)(MM_STUN_MAGIC_COOKIE >> 16);
    for (i = 0; i != n; ++i)
        out->ip[i] = (uint8_t)(attr->value[4 + i] ^ (xored ? mask[i] : 0));
    return 0;
}

int mm_stun_mapped_address(const mm_stun_msg_t *msg, mm_addr_t *out)
{
    const mm_stun_attr_t *a = mm_stun_find(msg, MM_STUN_ATTR_XOR_MAPPED_ADDRESS);

    if (a == NULL && (a = mm_stun_find(msg, MM_STUN_ATTR_MAPPED_ADDRESS)) == NULL)
        return -ENOENT;
    return mm_stun_decode_address(msg, a, out);
}

int mm_stun_error_code(const mm_stun_msg_t *msg)
{
    const mm_stun_attr_t *a = mm_stun_find(msg, MM_STUN_ATTR_ERROR_CODE);
    int code;

    if (a == NULL)
        return -ENOENT;
    if (a->len < 4)
        return -EINVAL;
    code = (a->value[2] & 0x07) * 100 + a->value[3];
    if (code < 300 || code > 699 || a->value[3] > 99)
        return -EINVAL;
    return code;
}

int mm_stun_check_integrity(const mm_stun_msg_t *msg, const uint8_t *key, size_t keylen)
{
    uint8_t mac[MM__STUN_MI_LEN];
    size_t off = msg->integrity_off;

    if (off == 0)
        return -ENOENT;
    if (mm__hmac_sha1(key, keylen, msg->data, off, (uint16_t)(off + 4 + MM__STUN_MI_LEN - MM_STUN_HEADER_LEN), mac) != 0)
        return -EBADMSG;
    /* not secret-dependent timing-wise in a way that matters here, but cheap to do right */
    return CRYPTO_memcmp(mac, msg->data + off + 4, sizeof(mac)) == 0 ? 0 : -EBADMSG;
}

/* ---- inspection ------------------------------------------------------------ */

static void mm__add_unknown(mm_stun_request_t *req, uint16_t type)
{
    size_t i;

    for (i = 0; i != req->nunknown; ++i)
        if (req->unknown[i] == type)
            return;
    if (req->nunknown != MM_STUN_MAX_UNKNOWN)
        req->unknown[req->nunknown++] = type;
}

mm_stun_verdict_t mm_stun_inspect(const mm_stun_msg_t *msg, mm_stun_request_t *req)
{
    int seen_change = 0;
    size_t i;

    memset(req, 0, sizeof(*req));
    if (msg->type != MM_STUN_BINDING_REQUEST)
        return MM_STUN_NOT_BINDING;
    for (i = 0; i != msg->nattrs; ++i) {
        const mm_stun_attr_t *a = &msg->attrs[i];

        if (a->type >= 0x8000)
            continue;
        switch (a->type) {
        case MM_STUN_ATTR_USERNAME:
        case MM_STUN_ATTR_MESSAGE_INTEGRITY:
        case MM_STUN_ATTR_MESSAGE_INTEGRITY_SHA256:
        case MM_STUN_ATTR_REALM:
        case MM_STUN_ATTR_NONCE:
        case MM_STUN_ATTR_USERHASH:
        case MM_STUN_ATTR_PRIORITY:
        case MM_STUN_ATTR_USE_CANDIDATE:
        case MM_STUN_ATTR_PADDING:
        /* defined by the base protocol for responses: understood, and meaningless here */
        case MM_STUN_ATTR_MAPPED_ADDRESS:
        case MM_STUN_ATTR_XOR_MAPPED_ADDRESS:
        case MM_STUN_ATTR_SOURCE_ADDRESS:
        case MM_STUN_ATTR_CHANGED_ADDRESS:
        case MM_STUN_ATTR_ERROR_CODE:
        case MM_STUN_ATTR_UNKNOWN_ATTRIBUTES:
            break;
        case MM_STUN_ATTR_CHANGE_REQUEST:
            if (a->len != 4) {
                mm__add_unknown(req, a->type);
            } else if (!seen_change) {
                req->change = a->value[3] & (MM_STUN_CHANGE_IP | MM_STUN_CHANGE_PORT);
                seen_change = 1;
            }
            break;
        default: /* RESPONSE-ADDRESS, RESPONSE-PORT and anything we do not know */
            mm__add_unknown(req, a->type);
            break;
        }
    }
    return req->nunknown != 0 ? MM_STUN_UNKNOWN_ATTR : MM_STUN_ANSWER;
}

/* ---- encoding ---------------------------------------------------------------- */

static void mm__set_length(mm_stun_builder_t *b, size_t total)
{
    mm__wr16(b->buf + 2, (uint16_t)(total - MM_STUN_HEADER_LEN));
}

int mm_stun_builder_init(mm_stun_builder_t *b, uint8_t *buf, size_t size, uint16_t type, const uint8_t *txid, int classic)
{
    *b = (mm_stun_builder_t){.buf = buf, .size = size > 0xffff + MM_STUN_HEADER_LEN ? 0xffff + MM_STUN_HEADER_LEN : size};
    if (b->size < MM_STUN_HEADER_LEN || (type & 0xc000) != 0)
        return b->size < MM_STUN_HEADER_LEN ? -ENOSPC : -EINVAL;
    mm__wr16(buf, type);
    if (classic) {
        memcpy(buf + 4, txid, MM_STUN_CLASSIC_TXID_LEN);
    } else {
        mm__wr32(buf + 4, MM_STUN_MAGIC_COOKIE);
        memcpy(buf + 8, txid, MM_STUN_TXID_LEN);
    }
    b->len = MM_STUN_HEADER_LEN;
    mm__set_length(b, b->len);
    return 0;
}

/* Reserves an attribute of `len` value bytes: writes its header and
 * padding, returns where the value goes (NULL when it does not fit). */
static uint8_t *mm__reserve(mm_stun_builder_t *b, uint16_t type, size_t len)
{
    size_t need = mm_stun_attr_size(len);
    uint8_t *p;

    if (len > 0xfffc || b->len > b->size || need > b->size - b->len)
        return NULL;
    p = b->buf + b->len;
    mm__wr16(p, type);
    mm__wr16(p + 2, (uint16_t)len);
    memset(p + 4 + len, b->pad, need - 4 - len);
    b->len += need;
    mm__set_length(b, b->len);
    return p + 4;
}

int mm_stun_builder_add(mm_stun_builder_t *b, uint16_t type, const void *value, size_t len)
{
    uint8_t *p = mm__reserve(b, type, len);

    if (p == NULL)
        return -ENOSPC;
    if (len != 0)
        memcpy(p, value, len);
    return 0;
}

int mm_stun_builder_add_address(mm_stun_builder_t *b, uint16_t type, const mm_addr_t *addr)
{
    size_t n = addr->family == AF_INET6 ? 16 : 4, i;
    uint8_t v[20], mask[16];
    int xored = type == MM_STUN_ATTR_XOR_MAPPED_ADDRESS;

    if (addr->family != AF_INET && addr->family != AF_INET6)
        return -EINVAL;
    mm__wr32(mask, MM_STUN_MAGIC_COOKIE);
    memcpy(mask + 4, b->buf + 8, 12);
    v[0] = 0;
    v[1] = n == 4 ? 0x01 : 0x02;
    mm__wr16(v + 2, xored ? (uint16_t)(addr->port ^ (MM_STUN_MAGIC_COOKIE >> 16)) : addr->port);
    for (i = 0; i != n; ++i)
        v[4 + i] = (uint8_t)(addr->ip[i] ^ (xored ? mask[i] : 0));
    return mm_stun_builder_add(b, type, v, 4 + n);
}

int mm_stun_builder_add_error(mm_stun_builder_t *b, int code, const char *reason, size_t reason_len)
{
    uint8_t *p;

    if (code < 300 || code > 699 || reason_len > 763)
        return -EINVAL;
    if ((p = mm__reserve(b, MM_STUN_ATTR_ERROR_CODE, 4 + reason_len)) == NULL)
        return -ENOSPC;
    p[0] = p[1] = 0;
    p[2] = (uint8_t)(code / 100);
    p[3] = (uint8_t)(code % 100);
    if (reason_len != 0)
        memcpy(p + 4, reason, reason_len);
    return 0;
}

int mm_stun_builder_add_integrity(mm_stun_builder_t *b, const uint8_t *key, size_t keylen)
{
    size_t at = b->len;
    uint8_t mac[MM__STUN_MI_LEN];
    uint8_t *p;

    if (b->len > b->size || mm_stun_attr_size(MM__STUN_MI_LEN) > b->size - b->len)
        return -ENOSPC;
    if (mm__hmac_sha1(key, keylen, b->buf, at, (uint16_t)(at + 4 + MM__STUN_MI_LEN - MM_STUN_HEADER_LEN), mac) != 0)
        return -EIO;
    p = mm__reserve(b, MM_STUN_ATTR_MESSAGE_INTEGRITY, MM__STUN_MI_LEN);
    memcpy(p, mac, sizeof(mac));
    return 0;
}

int mm_stun_builder_add_fingerprint(mm_stun_builder_t *b)
{
    size_t at = b->len;
    uint8_t *p = mm__reserve(b, MM_STUN_ATTR_FINGERPRINT, 4);

    if (p == NULL)
        return -ENOSPC;
    /* the length field already counts the FINGERPRINT attribute, as the CRC must see it */
    mm__wr32(p, mm_stun_crc32(b->buf, at) ^ MM_STUN_FINGERPRINT_XOR);
    return 0;
}

/* A reply may not exceed the request's size plus MM_STUN_REPLY_SLACK. */
static size_t mm__reply_budget(const mm_stun_msg_t *req, size_t size)
{
    size_t budget = req->len + MM_STUN_REPLY_SLACK;

    return budget < size ? budget : size;
}

static size_t mm__address_attr_size(const mm_addr_t *a)
{
    return mm_stun_attr_size(a->family == AF_INET6 ? 20 : 8);
}

ssize_t mm_stun_encode_binding_success(const mm_stun_msg_t *req, const mm_addr_t *mapped, uint8_t *out, size_t size)
{
    static const size_t fp = 8, software = 4 + ((sizeof(MM_STUN_SOFTWARE) - 1 + 3) & ~(size_t)3);
    mm_stun_builder_t b;
    size_t budget = mm__reply_budget(req, size);
    int rc;

    if ((rc = mm_stun_builder_init(&b, out, budget, MM_STUN_BINDING_SUCCESS, req->txid, req->classic)) != 0)
        return rc;
    if (req->classic) {
        rc = mm_stun_builder_add_address(&b, MM_STUN_ATTR_MAPPED_ADDRESS, mapped);
        return rc != 0 ? rc : (ssize_t)b.len;
    }
    if ((rc = mm_stun_builder_add_address(&b, MM_STUN_ATTR_XOR_MAPPED_ADDRESS, mapped)) != 0)
        return rc;
    if (b.len + software + fp <= budget &&
        (rc = mm_stun_builder_add(&b, MM_STUN_ATTR_SOFTWARE, MM_STUN_SOFTWARE, sizeof(MM_STUN_SOFTWARE) - 1)) != 0)
        return rc;
    if (b.len + mm__address_attr_size(mapped) + fp <= budget &&
        (rc = mm_stun_builder_add_address(&b, MM_STUN_ATTR_MAPPED_ADDRESS, mapped)) != 0)
        return rc;
    if ((rc = mm_stun_builder_add_fingerprint(&b)) != 0)
        return rc;
    return (ssize_t)b.len;
}

ssize_t mm_stun_encode_unknown_attributes(const mm_stun_msg_t *req, const uint16_t *unknown, size_t n, uint8_t *out, size_t size)
{
    static const size_t fp = 8, software = 4 + ((sizeof(MM_STUN_SOFTWARE) - 1 + 3) & ~(size_t)3);
    uint8_t list[2 * MM_STUN_MAX_UNKNOWN];
    mm_stun_builder_t b;
    size_t budget = mm__reply_budget(req, size), i;
    int rc;

    if (req->classic || n == 0)
        return -EINVAL;
    if (n > MM_STUN_MAX_UNKNOWN)
        n = MM_STUN_MAX_UNKNOWN;
    for (i = 0; i != n; ++i)
        mm__wr16(list + 2 * i, unknown[i]);
    if ((rc = mm_stun_builder_init(&b, out, budget, MM_STUN_BINDING_ERROR, req->txid, 0)) != 0 ||
        (rc = mm_stun_builder_add_error(&b, 420, MM__STUN_UNKNOWN_REASON, sizeof(MM__STUN_UNKNOWN_REASON) - 1)) != 0 ||
        (rc = mm_stun_builder_add(&b, MM_STUN_ATTR_UNKNOWN_ATTRIBUTES, list, 2 * n)) != 0)
        return rc;
    if (b.len + software + fp <= budget &&
        (rc = mm_stun_builder_add(&b, MM_STUN_ATTR_SOFTWARE, MM_STUN_SOFTWARE, sizeof(MM_STUN_SOFTWARE) - 1)) != 0)
        return rc;
    if ((rc = mm_stun_builder_add_fingerprint(&b)) != 0)
        return rc;
    return (ssize_t)b.len;
}

ssize_t mm_stun_encode_binding_request(const uint8_t *txid, const char *software, size_t software_len, uint8_t *out, size_t size)
{
    mm_stun_builder_t b;
    int rc;

    if ((rc = mm_stun_builder_init(&b, out, size, MM_STUN_BINDING_REQUEST, txid, 0)) != 0)
        return rc;
    if (software != NULL && (rc = mm_stun_builder_add(&b, MM_STUN_ATTR_SOFTWARE, software, software_len)) != 0)
        return rc;
    if ((rc = mm_stun_builder_add_fingerprint(&b)) != 0)
        return rc;
    return (ssize_t)b.len;
}

int mm_stun_parse_binding_response(const uint8_t *buf, size_t len, const uint8_t *txid, mm_addr_t *mapped, int *error_code)
{
    mm_stun_msg_t msg;
    int rc;

    if ((rc = mm_stun_parse(buf, len, &msg)) != 0)
        return rc;
    if (msg.classic || (msg.type != MM_STUN_BINDING_SUCCESS && msg.type != MM_STUN_BINDING_ERROR))
        return -EINVAL;
    if (memcmp(msg.txid, txid, MM_STUN_TXID_LEN) != 0)
        return -ESRCH;
    if (msg.type == MM_STUN_BINDING_ERROR) {
        if ((rc = mm_stun_error_code(&msg)) < 0)
            return -EINVAL;
        if (error_code != NULL)
            *error_code = rc;
        return -EPROTO;
    }
    return mm_stun_mapped_address(&msg, mapped) == 0 ? 0 : -EINVAL;
}
