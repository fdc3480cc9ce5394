/*
 * Unit tests of the STUN codec (common/src/stun.c): the RFC 5769 test
 * vectors (the sample request and both sample responses, with FINGERPRINT
 * and MESSAGE-INTEGRITY), round trips, the reply size bound, RFC 3489
 * classic requests, and malformed input of every kind we could think of.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>
#include "mm/base.h"
#include "mm/stun.h"

/* RFC 5769 §2.1-2.3. */
static const uint8_t rfc_request[] = {
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
    0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
    0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f,
    0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
    0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
    0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};
static const uint8_t rfc_response4[] = {
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08,
    0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
    0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
};
static const uint8_t rfc_response6[] = {
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf,
    0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20,
    0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe,
    0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c,
    0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
};
static const uint8_t rfc_txid[12] = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};
#define RFC_PASSWORD "VOkJxbRl1RmTxUk/WvJxBt"

static mm_addr_t addr_of(const char *text, uint16_t port)
{
    mm_addr_t a;

    assert_int_equal(mm_addr_parse(text, strlen(text), &a), 0);
    a.port = port;
    return a;
}

static void assert_addr(const mm_addr_t *got, const char *ip, uint16_t port)
{
    mm_addr_t want = addr_of(ip, port);

    assert_int_equal(got->family, want.family);
    assert_memory_equal(got->ip, want.ip, want.family == AF_INET ? 4 : 16);
    assert_int_equal(got->port, port);
}

static void assert_attr_bytes(const mm_stun_msg_t *m, uint16_t type, const void *value, size_t len)
{
    const mm_stun_attr_t *a = mm_stun_find(m, type);

    assert_non_null(a);
    assert_int_equal(a->len, len);
    assert_memory_equal(a->value, value, len);
}

static void crc32_check_value(void **state)
{
    (void)state;
    assert_int_equal(mm_stun_crc32((const uint8_t *)"123456789", 9), 0xcbf43926u);
    assert_int_equal(mm_stun_crc32((const uint8_t *)"", 0), 0);
    /* the slice-by-8 path and the byte path agree at every length */
    {
        uint8_t buf[64];
        size_t i, n;
        for (i = 0; i != sizeof(buf); ++i)
            buf[i] = (uint8_t)(i * 37 + 11);
        for (n = 0; n != sizeof(buf); ++n) {
            uint32_t c = 0xffffffffu;
            size_t k, b;
            for (k = 0; k != n; ++k) {
                c ^= buf[k];
                for (b = 0; b != 8; ++b)
                    c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            }
            assert_int_equal(mm_stun_crc32(buf, n), c ^ 0xffffffffu);
        }
    }
}

static void rfc5769_request(void **state)
{
    static const uint8_t priority[] = {0x6e, 0x00, 0x01, 0xff};
    static const uint8_t tiebreak[] = {0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36};
    mm_stun_msg_t m;
    mm_stun_request_t req;

    (void)state;
    assert_int_equal(mm_stun_parse(rfc_request, sizeof(rfc_request), &m), 0);
    assert_int_equal(m.type, MM_STUN_BINDING_REQUEST);
    assert_int_equal(m.len, 108);
    assert_false(m.classic);
    assert_int_equal(m.txid_len, 12);
    assert_memory_equal(m.txid, rfc_txid, 12);
    assert_int_equal(m.nattrs, 6);
    assert_attr_bytes(&m, MM_STUN_ATTR_SOFTWARE, "STUN test client", 16);
    assert_attr_bytes(&m, MM_STUN_ATTR_PRIORITY, priority, 4);
    assert_attr_bytes(&m, MM_STUN_ATTR_ICE_CONTROLLED, tiebreak, 8);
    assert_attr_bytes(&m, MM_STUN_ATTR_USERNAME, "evtj:h6vY", 9);
    assert_true(m.has_fingerprint);
    assert_int_equal(m.integrity_off, 76);
    assert_int_equal(m.attrs[5].type, MM_STUN_ATTR_FINGERPRINT);
    assert_int_equal(mm_stun_check_integrity(&m, (const uint8_t *)RFC_PASSWORD, strlen(RFC_PASSWORD)), 0);
    assert_int_equal(mm_stun_check_integrity(&m, (const uint8_t *)"VOkJxbRl1RmTxUk/WvJxBu", 22), -EBADMSG);
    assert_int_equal(mm_stun_check_integrity(&m, (const uint8_t *)"", 0), -EBADMSG);
    /* a responder answers it: PRIORITY, USERNAME and MESSAGE-INTEGRITY are understood and ignored */
    assert_int_equal(mm_stun_inspect(&m, &req), MM_STUN_ANSWER);
    assert_int_equal(req.change, 0);
}

static void check_rfc_response(const uint8_t *vec, size_t len, const char *ip)
{
    mm_stun_msg_t m;
    mm_addr_t a;
    mm_stun_request_t req;
    int code = 0;

    assert_int_equal(mm_stun_parse(vec, len, &m), 0);
    assert_int_equal(m.type, MM_STUN_BINDING_SUCCESS);
    assert_memory_equal(m.txid, rfc_txid, 12);
    assert_int_equal(m.nattrs, 4);
    assert_attr_bytes(&m, MM_STUN_ATTR_SOFTWARE, "test vector", 11);
    assert_true(m.has_fingerprint);
    assert_int_equal(mm_stun_check_integrity(&m, (const uint8_t *)RFC_PASSWORD, strlen(RFC_PASSWORD)), 0);
    assert_int_equal(mm_stun_mapped_address(&m, &a), 0);
    assert_addr(&a, ip, 32853);
    assert_int_equal(mm_stun_parse_binding_response(vec, len, rfc_txid, &a, &code), 0);
    assert_addr(&a, ip, 32853);
    assert_int_equal(mm_stun_inspect(&m, &req), MM_STUN_NOT_BINDING);
    assert_int_equal(mm_stun_error_code(&m), -ENOENT);
}

/* The builder reproduces the vector byte for byte (SOFTWARE, XOR-MAPPED-
 * ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT, padding with spaces as RFC 5769
 * does): the XOR, HMAC and CRC code paths of the encoder are all right. */
static void rebuild_rfc_response(const uint8_t *vec, size_t len, const char *ip)
{
    uint8_t buf[128];
    mm_stun_builder_t b;
    mm_addr_t a = addr_of(ip, 32853);

    assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), MM_STUN_BINDING_SUCCESS, rfc_txid, 0), 0);
    b.pad = 0x20;
    assert_int_equal(mm_stun_builder_add(&b, MM_STUN_ATTR_SOFTWARE, "test vector", 11), 0);
    assert_int_equal(mm_stun_builder_add_address(&b, MM_STUN_ATTR_XOR_MAPPED_ADDRESS, &a), 0);
    assert_int_equal(mm_stun_builder_add_integrity(&b, (const uint8_t *)RFC_PASSWORD, strlen(RFC_PASSWORD)), 0);
    assert_int_equal(mm_stun_builder_add_fingerprint(&b), 0);
    assert_int_equal(b.len, len);
    assert_memory_equal(buf, vec, len);
}

static void rfc5769_ipv4_response(void **state)
{
    (void)state;
    check_rfc_response(rfc_response4, sizeof(rfc_response4), "192.0.2.1");
    rebuild_rfc_response(rfc_response4, sizeof(rfc_response4), "192.0.2.1");
}

static void rfc5769_ipv6_response(void **state)
{
    (void)state;
    check_rfc_response(rfc_response6, sizeof(rfc_response6), "2001:db8:1234:5678:11:2233:4455:6677");
    rebuild_rfc_response(rfc_response6, sizeof(rfc_response6), "2001:db8:1234:5678:11:2233:4455:6677");
}

/* A single-bit change of a vector never yields a message that still has
 * a FINGERPRINT: either the parser refuses it, or the change (to a length
 * or to FINGERPRINT's own type) leaves a message without one. */
static void every_bit_flip_is_caught(void **state)
{
    const struct {
        const uint8_t *v;
        size_t len;
    } vecs[] = {{rfc_request, sizeof(rfc_request)}, {rfc_response4, sizeof(rfc_response4)}, {rfc_response6, sizeof(rfc_response6)}};
    uint8_t buf[128];
    mm_stun_msg_t m;
    size_t v, bit;

    (void)state;
    for (v = 0; v != MM_ARRAY_SIZE(vecs); ++v) {
        for (bit = 0; bit != vecs[v].len * 8; ++bit) {
            memcpy(buf, vecs[v].v, vecs[v].len);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            if (mm_stun_parse(buf, vecs[v].len, &m) == 0 && m.has_fingerprint)
                fail_msg("vector %zu: flipping bit %zu went unnoticed", v, bit);
        }
    }
}

static void truncated_and_odd_lengths(void **state)
{
    uint8_t buf[256];
    mm_stun_msg_t m;
    size_t n;

    (void)state;
    for (n = 0; n < sizeof(rfc_request); ++n)
        assert_int_not_equal(mm_stun_parse(rfc_request, n, &m), 0);
    assert_int_equal(mm_stun_parse(NULL, 0, &m), -EINVAL);
    /* trailing bytes after the announced length */
    memcpy(buf, rfc_request, sizeof(rfc_request));
    memset(buf + sizeof(rfc_request), 0, 4);
    assert_int_equal(mm_stun_parse(buf, sizeof(rfc_request) + 4, &m), -EINVAL);
    /* a length field that is not a multiple of 4, or does not match */
    {
        uint8_t h[24] = {0x00, 0x01, 0x00, 0x02, 0x21, 0x12, 0xa4, 0x42};
        assert_int_equal(mm_stun_parse(h, 22, &m), -EINVAL);
        h[3] = 4;
        assert_int_equal(mm_stun_parse(h, 22, &m), -EINVAL);
        h[3] = 8;
        assert_int_equal(mm_stun_parse(h, 24, &m), -EINVAL);
        h[3] = 0;
        assert_int_equal(mm_stun_parse(h, 20, &m), 0); /* a bare header is a valid message */
        h[0] = 0x40;                                   /* the top two bits must be zero */
        assert_int_equal(mm_stun_parse(h, 20, &m), -EINVAL);
        h[0] = 0x80;
        assert_int_equal(mm_stun_parse(h, 20, &m), -EINVAL);
    }
}

/* A message of a header and the given attribute bytes (already padded). */
static size_t make_msg(uint8_t *buf, uint16_t type, const uint8_t *attrs, size_t alen)
{
    static const uint8_t head[8] = {0, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42};
    size_t i;

    memcpy(buf, head, 8);
    buf[0] = (uint8_t)(type >> 8);
    buf[1] = (uint8_t)type;
    buf[2] = (uint8_t)(alen >> 8);
    buf[3] = (uint8_t)alen;
    for (i = 0; i != 12; ++i)
        buf[8 + i] = (uint8_t)(0xa0 + i);
    if (alen != 0)
        memcpy(buf + 20, attrs, alen);
    return 20 + alen;
}

static void bad_attribute_lengths(void **state)
{
    uint8_t buf[256];
    mm_stun_msg_t m;

    (void)state;
    {
        /* value runs past the end */
        static const uint8_t a[] = {0x80, 0x22, 0x00, 0x08, 'a', 'b', 'c', 'd'};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, sizeof(a)), &m), -EINVAL);
    }
    {
        /* padding runs past the end: length 5 needs 8 bytes */
        static const uint8_t a[] = {0x80, 0x22, 0x00, 0x05, 'a', 'b', 'c', 'd'};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, sizeof(a)), &m), -EINVAL);
    }
    {
        /* a lone partial attribute header cannot happen with a length that is a multiple of 4; zero-length is fine */
        static const uint8_t a[] = {0x80, 0x22, 0x00, 0x00};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, sizeof(a)), &m), 0);
        assert_int_equal(m.nattrs, 1);
        assert_int_equal(m.attrs[0].len, 0);
    }
    {
        /* MESSAGE-INTEGRITY of 16 bytes */
        uint8_t a[20] = {0x00, 0x08, 0x00, 0x10};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, sizeof(a)), &m), -EINVAL);
    }
    {
        /* MESSAGE-INTEGRITY-SHA256 of 12 and of 36 bytes */
        uint8_t a[40] = {0x00, 0x1c, 0x00, 0x0c};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, 16), &m), -EINVAL);
        a[3] = 36;
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, 40), &m), -EINVAL);
        a[3] = 32;
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, 36), &m), 0);
    }
    {
        /* FINGERPRINT of 8 bytes, and FINGERPRINT not last */
        uint8_t a[16] = {0x80, 0x28, 0x00, 0x08};
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, a, 12), &m), -EINVAL);
    }
    {
        mm_stun_builder_t b;
        uint8_t txid[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), 1, txid, 0), 0);
        uint32_t crc;
        assert_int_equal(mm_stun_builder_add_fingerprint(&b), 0);
        assert_int_equal(mm_stun_builder_add(&b, MM_STUN_ATTR_SOFTWARE, "x", 1), 0);
        assert_int_equal(mm_stun_parse(buf, b.len, &m), -EBADMSG); /* the length changed under it */
        /* a correct FINGERPRINT that is not last */
        crc = mm_stun_crc32(buf, 20) ^ MM_STUN_FINGERPRINT_XOR;
        buf[24] = (uint8_t)(crc >> 24);
        buf[25] = (uint8_t)(crc >> 16);
        buf[26] = (uint8_t)(crc >> 8);
        buf[27] = (uint8_t)crc;
        assert_int_equal(mm_stun_parse(buf, 28, &m), -EINVAL); /* (length field says 16: mismatch) */
        assert_int_equal(mm_stun_parse(buf, b.len, &m), -EINVAL);
    }
}

static void too_many_attributes(void **state)
{
    uint8_t attrs[4 * (MM_STUN_MAX_ATTRS + 1)], buf[20 + sizeof(attrs)];
    mm_stun_msg_t m;
    size_t i;

    (void)state;
    for (i = 0; i != MM_STUN_MAX_ATTRS + 1; ++i) {
        attrs[4 * i] = 0x80;
        attrs[4 * i + 1] = 0x30;
        attrs[4 * i + 2] = attrs[4 * i + 3] = 0;
    }
    assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, attrs, 4 * MM_STUN_MAX_ATTRS), &m), 0);
    assert_int_equal(m.nattrs, MM_STUN_MAX_ATTRS);
    assert_int_equal(mm_stun_parse(buf, make_msg(buf, 1, attrs, sizeof(attrs)), &m), -E2BIG);
}

/* After MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
 * count; what else follows is ignored, not "unknown". */
static void attributes_after_integrity_are_ignored(void **state)
{
    uint8_t buf[256], txid[12] = {0};
    mm_stun_builder_t b;
    mm_stun_msg_t m;
    mm_stun_request_t req;

    (void)state;
    assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), MM_STUN_BINDING_REQUEST, txid, 0), 0);
    assert_int_equal(mm_stun_builder_add_integrity(&b, (const uint8_t *)"k", 1), 0);
    assert_int_equal(mm_stun_builder_add(&b, 0x7777, "zz", 2), 0);
    assert_int_equal(mm_stun_builder_add_fingerprint(&b), 0);
    assert_int_equal(mm_stun_parse(buf, b.len, &m), 0);
    assert_int_equal(m.nattrs, 2);
    assert_null(mm_stun_find(&m, 0x7777));
    assert_int_equal(mm_stun_inspect(&m, &req), MM_STUN_ANSWER);
    /* the integrity covers what precedes it only */
    assert_int_equal(mm_stun_check_integrity(&m, (const uint8_t *)"k", 1), 0);
}

static void round_trip(void **state)
{
    static const char *ips[] = {"198.51.100.7", "2001:db8::42", "127.0.0.1", "::1"};
    uint8_t txid[12], req[64], rsp[MM_STUN_REPLY_MAX];
    mm_stun_msg_t m;
    mm_stun_request_t r;
    mm_addr_t got;
    ssize_t n, k;
    size_t i;
    int code = 0;

    (void)state;
    for (i = 0; i != MM_ARRAY_SIZE(ips); ++i) {
        mm_addr_t src = addr_of(ips[i], (uint16_t)(40000 + i));

        memset(txid, (int)(0x11 * (i + 1)), sizeof(txid));
        n = mm_stun_encode_binding_request(txid, i % 2 ? "agent" : NULL, 5, req, sizeof(req));
        assert_int_equal(n, i % 2 ? 40 : 28);
        assert_int_equal(mm_stun_parse(req, (size_t)n, &m), 0);
        assert_true(m.has_fingerprint);
        assert_int_equal(mm_stun_inspect(&m, &r), MM_STUN_ANSWER);
        k = mm_stun_encode_binding_success(&m, &src, rsp, sizeof(rsp));
        assert_true(k > 0 && k <= n + MM_STUN_REPLY_SLACK);
        assert_int_equal(mm_stun_parse_binding_response(rsp, (size_t)k, txid, &got, &code), 0);
        assert_addr(&got, ips[i], (uint16_t)(40000 + i));
        assert_int_equal(mm_stun_parse(rsp, (size_t)k, &m), 0);
        assert_true(m.has_fingerprint);
        assert_non_null(mm_stun_find(&m, MM_STUN_ATTR_XOR_MAPPED_ADDRESS));
        assert_attr_bytes(&m, MM_STUN_ATTR_SOFTWARE, MM_STUN_SOFTWARE, strlen(MM_STUN_SOFTWARE));
        /* MAPPED-ADDRESS too (the requests here are at least 28 bytes) */
        assert_non_null(mm_stun_find(&m, MM_STUN_ATTR_MAPPED_ADDRESS));
        assert_int_equal(mm_stun_decode_address(&m, mm_stun_find(&m, MM_STUN_ATTR_MAPPED_ADDRESS), &got), 0);
        assert_addr(&got, ips[i], (uint16_t)(40000 + i));
        assert_int_equal(m.attrs[m.nattrs - 1].type, MM_STUN_ATTR_FINGERPRINT);
        /* another transaction's reply is recognised as such */
        txid[0] ^= 1;
        assert_int_equal(mm_stun_parse_binding_response(rsp, (size_t)k, txid, &got, &code), -ESRCH);
        /* a request is no response */
        assert_int_equal(mm_stun_parse_binding_response(req, (size_t)n, m.txid, &got, &code), -EINVAL);
    }
}

/* SPEC §3.3: never more than the request + 64 bytes. A bare 20-byte
 * request is the tight case: IPv4 gets everything (68 bytes); IPv6 would
 * need 92, so MAPPED-ADDRESS is left out (68); from 28 bytes on, IPv6
 * gets MAPPED-ADDRESS as well. */
static void reply_size_bound(void **state)
{
    uint8_t req[512], rsp[MM_STUN_REPLY_MAX];
    mm_addr_t v4 = addr_of("203.0.113.9", 1234), v6 = addr_of("2001:db8:ffff::1", 1234);
    mm_stun_msg_t m, r;
    size_t len;
    ssize_t k;

    (void)state;
    for (len = 20; len <= sizeof(req); len += 4) {
        size_t fam;
        memset(req, 0, sizeof(req));
        make_msg(req, MM_STUN_BINDING_REQUEST, req + 20, 0);
        if (len > 20) { /* one PADDING attribute of the rest */
            req[2] = (uint8_t)((len - 20) >> 8);
            req[3] = (uint8_t)(len - 20);
            req[20] = 0x00;
            req[21] = 0x26;
            req[22] = (uint8_t)((len - 24) >> 8);
            req[23] = (uint8_t)(len - 24);
        }
        assert_int_equal(mm_stun_parse(req, len, &m), 0);
        for (fam = 0; fam != 2; ++fam) {
            k = mm_stun_encode_binding_success(&m, fam ? &v6 : &v4, rsp, sizeof(rsp));
            assert_true(k > 0);
            assert_true((size_t)k <= len + MM_STUN_REPLY_SLACK);
            assert_int_equal(mm_stun_parse(rsp, (size_t)k, &r), 0);
            assert_non_null(mm_stun_find(&r, MM_STUN_ATTR_XOR_MAPPED_ADDRESS));
            assert_non_null(mm_stun_find(&r, MM_STUN_ATTR_SOFTWARE));
            assert_true(r.has_fingerprint);
            if (fam == 1 && len < 28) {
                assert_int_equal(k, 68);
                assert_null(mm_stun_find(&r, MM_STUN_ATTR_MAPPED_ADDRESS));
            } else {
                assert_int_equal(k, fam ? 92 : 68);
                assert_non_null(mm_stun_find(&r, MM_STUN_ATTR_MAPPED_ADDRESS));
            }
            {
                static const uint16_t unknown[MM_STUN_MAX_UNKNOWN] = {2, 0x27, 0x7000, 0x7001, 0x7002, 0x7003, 0x7004, 0x7005};
                k = mm_stun_encode_unknown_attributes(&m, unknown, MM_STUN_MAX_UNKNOWN, rsp, sizeof(rsp));
                assert_true(k > 0 && (size_t)k <= len + MM_STUN_REPLY_SLACK);
            }
        }
    }
    /* a buffer too small is refused, not overrun */
    assert_int_equal(mm_stun_parse(req, 20, &m), -EINVAL); /* (req now holds a long message: length mismatch) */
    make_msg(req, MM_STUN_BINDING_REQUEST, NULL, 0);
    assert_int_equal(mm_stun_parse(req, 20, &m), 0);
    /* a small buffer gets the required attributes only, a smaller one nothing */
    assert_int_equal(mm_stun_encode_binding_success(&m, &v4, rsp, 40), 40);
    assert_int_equal(mm_stun_encode_binding_success(&m, &v4, rsp, 39), -ENOSPC);
    assert_int_equal(mm_stun_encode_binding_success(&m, &v4, rsp, 19), -ENOSPC);
}

/* RFC 3489: no magic cookie, a 128-bit transaction id, MAPPED-ADDRESS only. */
static void classic_request(void **state)
{
    uint8_t req[28] = {0x00, 0x01, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef, 1,    2,    3,    4,    5,    6,
                       7,    8,    9,    10,   11,   12,   0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00};
    uint8_t rsp[MM_STUN_REPLY_MAX];
    mm_addr_t src = addr_of("192.0.2.77", 5555), got;
    mm_stun_msg_t m, r;
    mm_stun_request_t rq;
    ssize_t k;

    (void)state;
    assert_int_equal(mm_stun_parse(req, sizeof(req), &m), 0);
    assert_true(m.classic);
    assert_int_equal(m.txid_len, 16);
    assert_ptr_equal(m.txid, req + 4);
    assert_int_equal(mm_stun_inspect(&m, &rq), MM_STUN_ANSWER);
    assert_int_equal(rq.change, 0);
    k = mm_stun_encode_binding_success(&m, &src, rsp, sizeof(rsp));
    assert_int_equal(k, 32);
    assert_memory_equal(rsp + 4, req + 4, 16); /* the whole 128-bit id echoed */
    assert_int_equal(mm_stun_parse(rsp, (size_t)k, &r), 0);
    assert_true(r.classic);
    assert_int_equal(r.type, MM_STUN_BINDING_SUCCESS);
    assert_int_equal(r.nattrs, 1);
    assert_int_equal(r.attrs[0].type, MM_STUN_ATTR_MAPPED_ADDRESS);
    assert_int_equal(mm_stun_mapped_address(&r, &got), 0);
    assert_addr(&got, "192.0.2.77", 5555);
    /* no 420 for classic clients */
    assert_int_equal(mm_stun_encode_unknown_attributes(&m, (const uint16_t[]){2}, 1, rsp, sizeof(rsp)), -EINVAL);
    /* CHANGE-REQUEST flags are reported to the caller */
    req[27] = MM_STUN_CHANGE_IP | MM_STUN_CHANGE_PORT;
    assert_int_equal(mm_stun_parse(req, sizeof(req), &m), 0);
    assert_int_equal(mm_stun_inspect(&m, &rq), MM_STUN_ANSWER);
    assert_int_equal(rq.change, MM_STUN_CHANGE_IP | MM_STUN_CHANGE_PORT);
}

static void not_binding_requests(void **state)
{
    static const uint16_t types[] = {MM_STUN_BINDING_INDICATION, MM_STUN_BINDING_SUCCESS,       MM_STUN_BINDING_ERROR,
                                     0x0003 /* Allocate */,      0x0008 /* CreatePermission */, 0x0002 /* SharedSecret */};
    uint8_t buf[32];
    mm_stun_msg_t m;
    mm_stun_request_t r;
    size_t i;

    (void)state;
    for (i = 0; i != MM_ARRAY_SIZE(types); ++i) {
        assert_int_equal(mm_stun_parse(buf, make_msg(buf, types[i], NULL, 0), &m), 0);
        assert_int_equal(mm_stun_inspect(&m, &r), MM_STUN_NOT_BINDING);
    }
}

static void unknown_attributes(void **state)
{
    uint8_t buf[128], rsp[MM_STUN_REPLY_MAX], txid[12] = {9, 9, 9};
    mm_stun_builder_t b;
    mm_stun_msg_t m, r;
    mm_stun_request_t rq;
    mm_addr_t got;
    const mm_stun_attr_t *ua;
    ssize_t k;
    int code = 0;

    (void)state;
    assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), MM_STUN_BINDING_REQUEST, txid, 0), 0);
    assert_int_equal(mm_stun_builder_add(&b, 0x8fff, "ok", 2), 0); /* optional: ignored */
    assert_int_equal(mm_stun_builder_add(&b, MM_STUN_ATTR_RESPONSE_ADDRESS, "\0\1\0\1\1\2\3\4", 8), 0);
    assert_int_equal(mm_stun_builder_add(&b, 0x7fff, "x", 1), 0);
    assert_int_equal(mm_stun_builder_add(&b, 0x7fff, "y", 1), 0); /* listed once */
    assert_int_equal(mm_stun_builder_add(&b, MM_STUN_ATTR_RESPONSE_PORT, "\0\1\0\0", 4), 0);
    assert_int_equal(mm_stun_builder_add_fingerprint(&b), 0);
    assert_int_equal(mm_stun_parse(buf, b.len, &m), 0);
    assert_int_equal(mm_stun_inspect(&m, &rq), MM_STUN_UNKNOWN_ATTR);
    assert_int_equal(rq.nunknown, 3);
    assert_int_equal(rq.unknown[0], MM_STUN_ATTR_RESPONSE_ADDRESS);
    assert_int_equal(rq.unknown[1], 0x7fff);
    assert_int_equal(rq.unknown[2], MM_STUN_ATTR_RESPONSE_PORT);
    k = mm_stun_encode_unknown_attributes(&m, rq.unknown, rq.nunknown, rsp, sizeof(rsp));
    assert_true(k > 0 && (size_t)k <= b.len + MM_STUN_REPLY_SLACK);
    assert_int_equal(mm_stun_parse_binding_response(rsp, (size_t)k, txid, &got, &code), -EPROTO);
    assert_int_equal(code, 420);
    assert_int_equal(mm_stun_parse(rsp, (size_t)k, &r), 0);
    assert_true(r.has_fingerprint);
    assert_int_equal(mm_stun_error_code(&r), 420);
    ua = mm_stun_find(&r, MM_STUN_ATTR_UNKNOWN_ATTRIBUTES);
    assert_non_null(ua);
    assert_int_equal(ua->len, 6);
    assert_memory_equal(ua->value, "\x00\x02\x7f\xff\x00\x27", 6);
    /* a CHANGE-REQUEST of the wrong size is not understood either */
    assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), MM_STUN_BINDING_REQUEST, txid, 0), 0);
    assert_int_equal(mm_stun_builder_add(&b, MM_STUN_ATTR_CHANGE_REQUEST, "\0\0", 2), 0);
    assert_int_equal(mm_stun_parse(buf, b.len, &m), 0);
    assert_int_equal(mm_stun_inspect(&m, &rq), MM_STUN_UNKNOWN_ATTR);
    assert_int_equal(rq.unknown[0], MM_STUN_ATTR_CHANGE_REQUEST);
}

static void addresses_and_error_codes(void **state)
{
    uint8_t buf[128], txid[12] = {0};
    mm_stun_builder_t b;
    mm_stun_msg_t m;
    mm_addr_t a;
    mm_stun_attr_t bad;

    (void)state;
    assert_int_equal(mm_stun_builder_init(&b, buf, sizeof(buf), MM_STUN_BINDING_ERROR, txid, 0), 0);
    assert_int_equal(mm_stun_builder_add_error(&b, 438, "Stale Nonce", 11), 0);
    assert_int_equal(mm_stun_builder_add_error(&b, 299, "x", 1), -EINVAL);
    assert_int_equal(mm_stun_parse(buf, b.len, &m), 0);
    assert_int_equal(mm_stun_error_code(&m), 438);
    assert_int_equal(mm_stun_mapped_address(&m, &a), -ENOENT);
    /* address attributes of a wrong family or size */
    bad = (mm_stun_attr_t){.type = MM_STUN_ATTR_MAPPED_ADDRESS, .len = 8, .value = (const uint8_t *)"\0\3\0\1\1\2\3\4"};
    assert_int_equal(mm_stun_decode_address(&m, &bad, &a), -EINVAL);
    bad.value = (const uint8_t *)"\0\2\0\1\1\2\3\4"; /* IPv6 in 8 bytes */
    assert_int_equal(mm_stun_decode_address(&m, &bad, &a), -EINVAL);
    bad.len = 3;
    assert_int_equal(mm_stun_decode_address(&m, &bad, &a), -EINVAL);
    bad = (mm_stun_attr_t){.type = MM_STUN_ATTR_ERROR_CODE, .len = 2, .value = (const uint8_t *)"\0\0"};
    m.attrs[0] = bad;
    assert_int_equal(mm_stun_error_code(&m), -EINVAL);
}

/* Deterministic garbage: must never crash (ASan/UBSan in the sanitizer
 * build) and almost never parse. The libFuzzer harness goes further. */
static void garbage(void **state)
{
    uint8_t buf[256];
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    mm_stun_msg_t m;
    mm_stun_request_t r;
    mm_addr_t a;
    int i, parsed = 0;
    size_t k, len;

    (void)state;
    for (i = 0; i != 200000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        len = (size_t)(x % sizeof(buf));
        for (k = 0; k != len; ++k) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[k] = (uint8_t)x;
        }
        if (len >= 4 && (i & 1)) { /* half of them with a plausible header */
            buf[0] &= 0x01;
            buf[2] = (uint8_t)((len - 20) >> 8);
            buf[3] = (uint8_t)((len - 20) & 0xfc);
        }
        if (mm_stun_parse(buf, len, &m) == 0) {
            ++parsed;
            (void)mm_stun_inspect(&m, &r);
            (void)mm_stun_mapped_address(&m, &a);
            (void)mm_stun_error_code(&m);
        }
    }
    assert_true(parsed < 200000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32_check_value),
        cmocka_unit_test(rfc5769_request),
        cmocka_unit_test(rfc5769_ipv4_response),
        cmocka_unit_test(rfc5769_ipv6_response),
        cmocka_unit_test(every_bit_flip_is_caught),
        cmocka_unit_test(truncated_and_odd_lengths),
        cmocka_unit_test(bad_attribute_lengths),
        cmocka_unit_test(too_many_attributes),
        cmocka_unit_test(attributes_after_integrity_are_ignored),
        cmocka_unit_test(round_trip),
        cmocka_unit_test(reply_size_bound),
        cmocka_unit_test(classic_request),
        cmocka_unit_test(not_binding_requests),
        cmocka_unit_test(unknown_attributes),
        cmocka_unit_test(addresses_and_error_codes),
        cmocka_unit_test(garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
