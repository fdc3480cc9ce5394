/*
 * The agents' hole-punching packets (proto/punch.md): probes, their
 * acknowledgements and keepalives, authenticated with HMAC-SHA256 under the
 * session secret mm-signal hands to both sides. Pure functions over byte
 * buffers with explicit lengths (no I/O, no allocation, nothing kept),
 * thread-safe.
 *
 * Every packet is MM_PUNCH_LEN bytes:
 *
 *   0  4  magic "MMP1"
 *   4  1  type (mm_punch_type_t)
 *   5  1  role of the sender (mm_punch_role_t)
 *   6  2  reserved, zero
 *   8 16  session id (the 32 hex characters of mm-signal's session_id, as bytes)
 *  24  8  seq: the sender's packet number in this session, big-endian, from 1
 *  32  8  echo: in an ACK, the seq of the packet it answers; else 0
 *  40 32  HMAC-SHA256(secret, bytes 0..39)
 *
 * A receiver verifies the MAC (in constant time) before it believes any
 * field, rejects packets that claim its own role (a reflected packet), and
 * drops repeated or stale seq numbers with an mm_punch_window_t.
 */
#ifndef MM_PUNCH_H
#define MM_PUNCH_H

#include <stddef.h>
#include <stdint.h>

#define MM_PUNCH_MAGIC "MMP1"
#define MM_PUNCH_MAGIC_LEN 4
#define MM_PUNCH_LEN 72
#define MM_PUNCH_SIGNED_LEN 40 /* the bytes the MAC covers */
#define MM_PUNCH_MAC_LEN 32
#define MM_PUNCH_SESSION_ID_LEN 16
#define MM_PUNCH_SECRET_LEN 32
#define MM_PUNCH_WINDOW 64 /* seq numbers remembered behind the highest one seen */

typedef enum mm_punch_type {
    MM_PUNCH_PROBE = 1,     /* "can you hear me?": answered with an ACK */
    MM_PUNCH_ACK = 2,       /* answers a PROBE or a KEEPALIVE; echo = its seq */
    MM_PUNCH_KEEPALIVE = 3, /* keeps the NAT mappings of a chosen path; answered with an ACK */
} mm_punch_type_t;

typedef enum mm_punch_role {
    MM_PUNCH_OFFERER = 1,  /* the peer that sent the offer (A) */
    MM_PUNCH_ANSWERER = 2, /* the peer that answered it (B) */
} mm_punch_role_t;

typedef struct mm_punch {
    uint8_t type; /* mm_punch_type_t */
    uint8_t role; /* mm_punch_role_t of the sender */
    uint8_t session_id[MM_PUNCH_SESSION_ID_LEN];
    uint64_t seq;  /* >= 1 */
    uint64_t echo; /* ACK: >= 1; otherwise 0 */
} mm_punch_t;

/* Writes `p` signed with `secret` (`secret_len` must be MM_PUNCH_SECRET_LEN)
 * into `out` (`size` >= MM_PUNCH_LEN). Returns MM_PUNCH_LEN, -EINVAL for an
 * unknown type or role, seq 0, an echo that does not fit the type, or a bad
 * secret, or -ENOSPC. */
int mm_punch_encode(const mm_punch_t *p, const uint8_t *secret, size_t secret_len, uint8_t *out, size_t size);

/* 1 when `buf` has the size and magic of a punch packet (a cheap test to
 * tell it from STUN on the same socket: a STUN message starts with 0x00 or
 * 0x01, a punch packet with 'M'). Says nothing about its authenticity. */
int mm_punch_is_punch(const uint8_t *buf, size_t len);

/* The session id of a packet, to find its secret (unauthenticated until
 * mm_punch_decode succeeds). Returns 0 or -EINVAL (not a punch packet). */
int mm_punch_peek_session(const uint8_t *buf, size_t len, uint8_t session_id[MM_PUNCH_SESSION_ID_LEN]);

/* Verifies and reads a packet. `peer_role` is the role the other side
 * plays: a packet carrying any other role is refused (a reflection of our
 * own packets). Returns 0 with `out` filled, -EINVAL when it is not a
 * well-formed punch packet (size, magic, reserved bits, type, seq/echo),
 * or -EBADMSG when the MAC does not match or the role is wrong. Nothing in
 * `out` is meaningful unless 0 is returned. */
int mm_punch_decode(const uint8_t *buf, size_t len, const uint8_t *secret, size_t secret_len, mm_punch_role_t peer_role,
                    mm_punch_t *out);

/* mm-signal's session_id (32 lowercase hex characters) as the 16 bytes a
 * packet carries. Returns 0 or -EINVAL. */
int mm_punch_session_id_parse(const char *hex, size_t len, uint8_t out[MM_PUNCH_SESSION_ID_LEN]);
/* mm-signal's `secret` (base64 of 32 bytes, 44 characters with padding)
 * as bytes. Returns 0 or -EINVAL (anything else, including non-canonical
 * base64). */
int mm_punch_secret_parse(const char *b64, size_t len, uint8_t out[MM_PUNCH_SECRET_LEN]);

/* Anti-replay window over the peer's seq numbers (one per peer and
 * session), as in IPsec/DTLS: remembers the highest seq seen and which of
 * the MM_PUNCH_WINDOW before it arrived. Zero-initialise it. Call only for
 * packets that mm_punch_decode accepted. */
typedef struct mm_punch_window {
    uint64_t top;    /* highest seq accepted; 0: none yet */
    uint64_t bitmap; /* bit i: seq top - i was accepted */
} mm_punch_window_t;

/* Returns 1 and records `seq` when it is new, 0 when it is a repeat or too
 * old (more than MM_PUNCH_WINDOW - 1 behind the highest). */
int mm_punch_window_accept(mm_punch_window_t *w, uint64_t seq);

#endif
