/*
 * libFuzzer harness for the STUN codec (common/src/stun.c).
 *
 * Build and run from the repository root (clang from Debian's clang
 * package; libFuzzer comes with libclang-rt-dev):
 *
 *   mkdir -p build/fuzz
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -std=c17 -D_GNU_SOURCE -Icommon/include \
 *       tests/fuzz/fuzz_stun.c common/src/stun.c -lcrypto -o build/fuzz/fuzz_stun
 *   build/fuzz/fuzz_stun -max_total_time=120 -max_len=2048 build/fuzz/corpus_stun tests/fuzz/seeds_stun
 *
 * (build/fuzz/corpus_stun must exist; tests/fuzz/seeds_stun holds the RFC
 * 5769 vectors, a classic RFC 3489 request and a minimal request.)
 *
 * Each input is one datagram as the responder would receive it; its bytes
 * also make up the client address the reply is made for. Checked
 * beyond "no crash, no undefined behaviour": whatever parses and would be
 * answered gets a reply that is itself well-formed, echoes the transaction
 * id, carries the client's address back, and is no larger than the
 * request + 64 bytes (SPEC §3.3).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "mm/stun.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t input_size);

/* Most mutations of a message that ends in FINGERPRINT only exercise the
 * CRC check. When the transaction id's last byte is even, the harness
 * recomputes such a trailing FINGERPRINT (in a copy) so that the fuzzer
 * gets past it; odd keeps the input as sent, so wrong ones stay covered. */
static size_t fix_fingerprint(const uint8_t *in, size_t size, uint8_t *out, size_t cap)
{
    uint32_t crc;

    if (size > cap)
        return 0;
    memcpy(out, in, size);
    if (size >= 28 && (out[19] & 1) == 0 && out[size - 8] == 0x80 && out[size - 7] == 0x28 && out[size - 6] == 0 &&
        out[size - 5] == 4) {
        crc = mm_stun_crc32(out, size - 8) ^ MM_STUN_FINGERPRINT_XOR;
        out[size - 4] = (uint8_t)(crc >> 24);
        out[size - 3] = (uint8_t)(crc >> 16);
        out[size - 2] = (uint8_t)(crc >> 8);
        out[size - 1] = (uint8_t)crc;
    }
    return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t input_size)
{
    static uint8_t copy[65536 + 64];
    const uint8_t *data = copy;
    size_t size = fix_fingerprint(input, input_size, copy, sizeof(copy));
    static const uint8_t key[] = "VOkJxbRl1RmTxUk/WvJxBt";
    uint8_t reply[MM_STUN_REPLY_MAX];
    mm_stun_msg_t msg, r;
    mm_stun_request_t req;
    mm_stun_verdict_t verdict;
    mm_addr_t src = {0}, got;
    ssize_t n;
    int code = 0;
    size_t i;

    if (mm_stun_parse(data, size, &msg) != 0)
        return 0;
    check(msg.len == size && msg.nattrs <= MM_STUN_MAX_ATTRS);
    for (i = 0; i != msg.nattrs; ++i)
        check(msg.attrs[i].value >= data + MM_STUN_HEADER_LEN && msg.attrs[i].value + msg.attrs[i].len <= data + size);
    (void)mm_stun_check_integrity(&msg, key, sizeof(key) - 1);
    (void)mm_stun_mapped_address(&msg, &got);
    (void)mm_stun_error_code(&msg);
    if (!msg.classic)
        (void)mm_stun_parse_binding_response(data, size, msg.txid, &got, &code);

    /* a client address derived from the input */
    src.family = (data[size - 1] & 1) ? AF_INET6 : AF_INET;
    for (i = 0; i != 16; ++i)
        src.ip[i] = data[(i * 7) % size];
    src.port = (uint16_t)(data[size / 2] << 8 | data[size - 1]);

    verdict = mm_stun_inspect(&msg, &req);
    if (verdict == MM_STUN_NOT_BINDING)
        return 0;
    if (verdict == MM_STUN_ANSWER)
        n = mm_stun_encode_binding_success(&msg, &src, reply, sizeof(reply));
    else
        n = mm_stun_encode_unknown_attributes(&msg, req.unknown, req.nunknown, reply, sizeof(reply));
    if (verdict == MM_STUN_UNKNOWN_ATTR && msg.classic) {
        check(n == -EINVAL);
        return 0;
    }
    check(n > 0 && (size_t)n <= size + MM_STUN_REPLY_SLACK);
    check(mm_stun_parse(reply, (size_t)n, &r) == 0);
    check(r.classic == msg.classic && memcmp(r.txid, msg.txid, msg.txid_len) == 0);
    if (verdict == MM_STUN_ANSWER) {
        check(r.type == MM_STUN_BINDING_SUCCESS);
        check(mm_stun_mapped_address(&r, &got) == 0);
        check(got.family == src.family && got.port == src.port && memcmp(got.ip, src.ip, src.family == AF_INET ? 4 : 16) == 0);
        if (!msg.classic) {
            check(r.has_fingerprint);
            check(mm_stun_parse_binding_response(reply, (size_t)n, msg.txid, &got, &code) == 0);
        }
    } else {
        check(r.type == MM_STUN_BINDING_ERROR && mm_stun_error_code(&r) == 420 && r.has_fingerprint);
    }
    return 0;
}
