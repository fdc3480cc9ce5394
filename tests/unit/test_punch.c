/* Unit tests of the hole-punching packets (common/src/punch.c, proto/punch.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <cmocka.h>
#include "mm/base.h"
#include "../../common/src/punch.c"

/* The vectors of proto/punch.md: secret 00 01 .. 1f, session 00112233445566778899aabbccddeeff. */
static const char vector_probe[] = "4d4d50310101000000112233445566778899aabbccddeeff0000000000000001"
                                   "0000000000000000abafb24795e83c831c38bb89c9f5208691a044cee0412da2"
                                   "5194aace96ef41dd";
static const char vector_ack[] = "4d4d50310202000000112233445566778899aabbccddeeff0000000000000007"
                                 "000000000000000154fa7eb631207bc463d1438875da5656d30124328057c7ff"
                                 "bcc945ca75d015ef";
static const char vector_secret_b64[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
static const char vector_session[] = "00112233445566778899aabbccddeeff";

static uint8_t secret[MM_PUNCH_SECRET_LEN];

static void unhex(const char *hex, uint8_t *out, size_t n)
{
    size_t i;

    assert_int_equal(strlen(hex), 2 * n);
    for (i = 0; i != n; ++i) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static int setup(void **state)
{
    size_t i;

    for (i = 0; i != sizeof(secret); ++i)
        secret[i] = (uint8_t)i;
    return 0;
}

static mm_punch_t probe(void)
{
    mm_punch_t p = {.type = MM_PUNCH_PROBE, .role = MM_PUNCH_OFFERER, .seq = 1, .echo = 0};

    assert_int_equal(mm_punch_session_id_parse(vector_session, strlen(vector_session), p.session_id), 0);
    return p;
}

static void encodes_the_vectors(void **state)
{
    uint8_t out[MM_PUNCH_LEN], want[MM_PUNCH_LEN];
    mm_punch_t p = probe();

    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), out, sizeof(out)), MM_PUNCH_LEN);
    unhex(vector_probe, want, sizeof(want));
    assert_memory_equal(out, want, MM_PUNCH_LEN);

    p.type = MM_PUNCH_ACK;
    p.role = MM_PUNCH_ANSWERER;
    p.seq = 7;
    p.echo = 1;
    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), out, sizeof(out)), MM_PUNCH_LEN);
    unhex(vector_ack, want, sizeof(want));
    assert_memory_equal(out, want, MM_PUNCH_LEN);
}

static void decodes_what_it_encodes(void **state)
{
    uint8_t buf[MM_PUNCH_LEN + 8], sid[MM_PUNCH_SESSION_ID_LEN];
    mm_punch_t p = probe(), q;

    p.type = MM_PUNCH_KEEPALIVE;
    p.role = MM_PUNCH_ANSWERER;
    p.seq = UINT64_MAX;
    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), MM_PUNCH_LEN);
    assert_true(mm_punch_is_punch(buf, MM_PUNCH_LEN));
    assert_int_equal(mm_punch_peek_session(buf, MM_PUNCH_LEN, sid), 0);
    assert_memory_equal(sid, p.session_id, sizeof(sid));
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN, secret, sizeof(secret), MM_PUNCH_ANSWERER, &q), 0);
    assert_int_equal(q.type, MM_PUNCH_KEEPALIVE);
    assert_int_equal(q.role, MM_PUNCH_ANSWERER);
    assert_true(q.seq == UINT64_MAX);
    assert_true(q.echo == 0);
    assert_memory_equal(q.session_id, p.session_id, MM_PUNCH_SESSION_ID_LEN);
}

static void every_flipped_bit_is_refused(void **state)
{
    uint8_t buf[MM_PUNCH_LEN];
    mm_punch_t p = probe(), q;
    size_t i;
    int bit;

    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), MM_PUNCH_LEN);
    for (i = 0; i != MM_PUNCH_LEN; ++i) {
        for (bit = 0; bit != 8; ++bit) {
            int rc;
            buf[i] ^= (uint8_t)(1u << bit);
            rc = mm_punch_decode(buf, MM_PUNCH_LEN, secret, sizeof(secret), MM_PUNCH_OFFERER, &q);
            /* the magic is checked first (not a punch packet); anything else breaks the MAC */
            assert_int_equal(rc, i < MM_PUNCH_MAGIC_LEN ? -EINVAL : -EBADMSG);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN, secret, sizeof(secret), MM_PUNCH_OFFERER, &q), 0);
}

static void wrong_secret_role_or_size(void **state)
{
    uint8_t buf[MM_PUNCH_LEN + 1], other[MM_PUNCH_SECRET_LEN];
    mm_punch_t p = probe(), q;

    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), MM_PUNCH_LEN);
    memcpy(other, secret, sizeof(other));
    other[31] ^= 1;
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN, other, sizeof(other), MM_PUNCH_OFFERER, &q), -EBADMSG);
    /* a packet of our own role is a reflection of what we sent */
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN, secret, sizeof(secret), MM_PUNCH_ANSWERER, &q), -EBADMSG);
    /* the length is carried, not guessed: one byte more or less is not a packet */
    buf[MM_PUNCH_LEN] = 0;
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN + 1, secret, sizeof(secret), MM_PUNCH_OFFERER, &q), -EINVAL);
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN - 1, secret, sizeof(secret), MM_PUNCH_OFFERER, &q), -EINVAL);
    assert_int_equal(mm_punch_decode(buf, 0, secret, sizeof(secret), MM_PUNCH_OFFERER, &q), -EINVAL);
    assert_int_equal(mm_punch_decode(NULL, MM_PUNCH_LEN, secret, sizeof(secret), MM_PUNCH_OFFERER, &q), -EINVAL);
    assert_int_equal(mm_punch_decode(buf, MM_PUNCH_LEN, secret, 16, MM_PUNCH_OFFERER, &q), -EINVAL);
    assert_false(mm_punch_is_punch(buf, MM_PUNCH_LEN - 1));
    /* a STUN Binding request is not a punch packet */
    {
        uint8_t stun[MM_PUNCH_LEN] = {0x00, 0x01, 0x00, 0x34, 0x21, 0x12, 0xa4, 0x42};
        assert_false(mm_punch_is_punch(stun, sizeof(stun)));
    }
}

/* A correctly signed packet whose fields make no sense is still refused. */
static void signed_nonsense_is_refused(void **state)
{
    uint8_t buf[MM_PUNCH_LEN];
    mm_punch_t q;
    unsigned int len;

    struct {
        uint8_t type, role, r6;
        uint64_t seq, echo;
    } cases[] = {
        {0, MM_PUNCH_OFFERER, 0, 1, 0},              /* unknown type */
        {4, MM_PUNCH_OFFERER, 0, 1, 0},              /* unknown type */
        {MM_PUNCH_PROBE, 0, 0, 1, 0},                /* unknown role */
        {MM_PUNCH_PROBE, MM_PUNCH_OFFERER, 1, 1, 0}, /* reserved bits set */
        {MM_PUNCH_PROBE, MM_PUNCH_OFFERER, 0, 0, 0}, /* seq 0 */
        {MM_PUNCH_PROBE, MM_PUNCH_OFFERER, 0, 1, 5}, /* echo on a probe */
        {MM_PUNCH_ACK, MM_PUNCH_OFFERER, 0, 1, 0},   /* an ack of nothing */
    };
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(cases); ++i) {
        memset(buf, 0, sizeof(buf));
        memcpy(buf, MM_PUNCH_MAGIC, 4);
        buf[4] = cases[i].type;
        buf[5] = cases[i].role;
        buf[6] = cases[i].r6;
        mm__punch_put64(buf + 24, cases[i].seq);
        mm__punch_put64(buf + 32, cases[i].echo);
        HMAC(EVP_sha256(), secret, sizeof(secret), buf, MM_PUNCH_SIGNED_LEN, buf + MM_PUNCH_SIGNED_LEN, &len);
        assert_int_equal(mm_punch_decode(buf, sizeof(buf), secret, sizeof(secret), MM_PUNCH_OFFERER, &q), -EINVAL);
    }
}

static void encode_refuses_nonsense(void **state)
{
    uint8_t buf[MM_PUNCH_LEN];
    mm_punch_t p = probe();

    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, MM_PUNCH_LEN - 1), -ENOSPC);
    assert_int_equal(mm_punch_encode(&p, secret, 31, buf, sizeof(buf)), -EINVAL);
    p.seq = 0;
    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), -EINVAL);
    p = probe();
    p.type = MM_PUNCH_ACK; /* without echo */
    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), -EINVAL);
    p = probe();
    p.role = 3;
    assert_int_equal(mm_punch_encode(&p, secret, sizeof(secret), buf, sizeof(buf)), -EINVAL);
}

static void parses_session_ids_and_secrets(void **state)
{
    uint8_t sid[MM_PUNCH_SESSION_ID_LEN], s[MM_PUNCH_SECRET_LEN];

    assert_int_equal(mm_punch_secret_parse(vector_secret_b64, strlen(vector_secret_b64), s), 0);
    assert_memory_equal(s, secret, sizeof(s));
    /* not 44 characters, not padded, padded twice, not canonical, not base64 */
    assert_int_equal(mm_punch_secret_parse(vector_secret_b64, 43, s), -EINVAL);
    assert_int_equal(mm_punch_secret_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A", 44, s), -EINVAL);
    assert_int_equal(mm_punch_secret_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", 44, s), -EINVAL);
    assert_int_equal(mm_punch_secret_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=", 44, s), -EINVAL);
    assert_int_equal(mm_punch_secret_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH*8=", 44, s), -EINVAL);

    assert_int_equal(mm_punch_session_id_parse(vector_session, 32, sid), 0);
    assert_int_equal(sid[0], 0x00);
    assert_int_equal(sid[15], 0xff);
    assert_int_equal(mm_punch_session_id_parse("00112233445566778899AABBCCDDEEFF", 32, sid), -EINVAL);
    assert_int_equal(mm_punch_session_id_parse(vector_session, 31, sid), -EINVAL);
    assert_int_equal(mm_punch_session_id_parse("0011223344556677889 aabbccddeeff", 32, sid), -EINVAL);
}

static void window_drops_replays(void **state)
{
    mm_punch_window_t w = {0};

    assert_false(mm_punch_window_accept(&w, 0));
    assert_true(mm_punch_window_accept(&w, 1));
    assert_false(mm_punch_window_accept(&w, 1));
    assert_true(mm_punch_window_accept(&w, 5));
    assert_true(mm_punch_window_accept(&w, 3)); /* late but new */
    assert_false(mm_punch_window_accept(&w, 3));
    assert_true(mm_punch_window_accept(&w, 2));
    assert_true(mm_punch_window_accept(&w, 5 + MM_PUNCH_WINDOW - 1));
    assert_false(mm_punch_window_accept(&w, 5)); /* 63 behind: still remembered as seen */
    assert_true(mm_punch_window_accept(&w, 6));  /* 62 behind, never seen */
    assert_false(mm_punch_window_accept(&w, 4)); /* 64 behind: too old */
    assert_true(mm_punch_window_accept(&w, 1000));
    assert_false(mm_punch_window_accept(&w, 1000 - MM_PUNCH_WINDOW));
    assert_true(mm_punch_window_accept(&w, 1000 - MM_PUNCH_WINDOW + 1));
    assert_true(mm_punch_window_accept(&w, UINT64_MAX));
    assert_false(mm_punch_window_accept(&w, UINT64_MAX));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encodes_the_vectors),
        cmocka_unit_test(decodes_what_it_encodes),
        cmocka_unit_test(every_flipped_bit_is_refused),
        cmocka_unit_test(wrong_secret_role_or_size),
        cmocka_unit_test(signed_nonsense_is_refused),
        cmocka_unit_test(encode_refuses_nonsense),
        cmocka_unit_test(parses_session_ids_and_secrets),
        cmocka_unit_test(window_drops_replays),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
