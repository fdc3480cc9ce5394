/*
 * The STUN codec (RFC 8489, with RFC 3489 "classic" requests understood):
 * pure functions over byte buffers with explicit lengths, no I/O, no
 * allocation, no NUL-terminated strings. Used by mm-signal's UDP responder
 * (services/signal/sig_stun.c), by the agent to learn its mapping, and by
 * the load generator (tests/load/stun_load.c).
 *
 * A parsed message (mm_stun_msg_t) points into the caller's buffer, which
 * must outlive it and must not change while it is used. Nothing here keeps
 * a pointer after returning.
 *
 * Wire format (RFC 8489 §5, §14): a 20-byte header (type, length of what
 * follows, magic cookie 0x2112A442, 96-bit transaction id), then
 * attributes (type, length, value padded to a multiple of 4). A message
 * whose cookie field is not the magic cookie is an RFC 3489 message: its
 * transaction id is the whole 128 bits after the length.
 */
#ifndef MM_STUN_H
#define MM_STUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "mm/addr.h"

#define MM_STUN_HEADER_LEN 20
#define MM_STUN_MAGIC_COOKIE 0x2112a442u
#define MM_STUN_FINGERPRINT_XOR 0x5354554eu
#define MM_STUN_TXID_LEN 12         /* RFC 8489 */
#define MM_STUN_CLASSIC_TXID_LEN 16 /* RFC 3489: the cookie field is part of the id */
#define MM_STUN_REPLY_SLACK 64      /* a reply is never larger than its request + this (SPEC §3.3) */
#define MM_STUN_MAX_ATTRS 32        /* more attributes than this: refused as malformed */
#define MM_STUN_MAX_UNKNOWN 8       /* unknown comprehension-required attributes listed in a 420 */
#define MM_STUN_SOFTWARE "matchmaker"
#define MM_STUN_REPLY_MAX 96 /* the largest reply this codec makes */

/* Message types: method 0x001 (Binding) in the four classes. */
#define MM_STUN_BINDING_REQUEST 0x0001
#define MM_STUN_BINDING_INDICATION 0x0011
#define MM_STUN_BINDING_SUCCESS 0x0101
#define MM_STUN_BINDING_ERROR 0x0111

/* Attribute types. 0x0000-0x7fff are comprehension-required, 0x8000-0xffff optional. */
enum {
    MM_STUN_ATTR_MAPPED_ADDRESS = 0x0001,
    MM_STUN_ATTR_RESPONSE_ADDRESS = 0x0002, /* RFC 3489 only; never honoured */
    MM_STUN_ATTR_CHANGE_REQUEST = 0x0003,   /* RFC 3489 / RFC 5780 */
    MM_STUN_ATTR_SOURCE_ADDRESS = 0x0004,   /* RFC 3489 */
    MM_STUN_ATTR_CHANGED_ADDRESS = 0x0005,  /* RFC 3489 */
    MM_STUN_ATTR_USERNAME = 0x0006,
    MM_STUN_ATTR_MESSAGE_INTEGRITY = 0x0008,
    MM_STUN_ATTR_ERROR_CODE = 0x0009,
    MM_STUN_ATTR_UNKNOWN_ATTRIBUTES = 0x000a,
    MM_STUN_ATTR_REALM = 0x0014,
    MM_STUN_ATTR_NONCE = 0x0015,
    MM_STUN_ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001c,
    MM_STUN_ATTR_USERHASH = 0x001e,
    MM_STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020,
    MM_STUN_ATTR_PRIORITY = 0x0024,      /* ICE (RFC 8445) */
    MM_STUN_ATTR_USE_CANDIDATE = 0x0025, /* ICE */
    MM_STUN_ATTR_PADDING = 0x0026,       /* RFC 5780 */
    MM_STUN_ATTR_RESPONSE_PORT = 0x0027, /* RFC 5780; never honoured */
    MM_STUN_ATTR_SOFTWARE = 0x8022,
    MM_STUN_ATTR_FINGERPRINT = 0x8028,
    MM_STUN_ATTR_ICE_CONTROLLED = 0x8029,
    MM_STUN_ATTR_ICE_CONTROLLING = 0x802a,
    MM_STUN_ATTR_OTHER_ADDRESS = 0x802c, /* RFC 5780 */
};

/* CHANGE-REQUEST flags (RFC 5780 §7.2). */
#define MM_STUN_CHANGE_IP 0x4
#define MM_STUN_CHANGE_PORT 0x2

/* One attribute: `value` points into the message, `len` is the length
 * without padding. */
typedef struct mm_stun_attr {
    uint16_t type;
    uint16_t len;
    const uint8_t *value;
} mm_stun_attr_t;

typedef struct mm_stun_msg {
    const uint8_t *data; /* the message (the caller's buffer) */
    size_t len;          /* MM_STUN_HEADER_LEN + the header's length field */
    uint16_t type;       /* method and class, e.g. MM_STUN_BINDING_REQUEST */
    int classic;         /* 1: RFC 3489 (no magic cookie) */
    const uint8_t *txid; /* into data: 12 bytes, or 16 when classic */
    size_t txid_len;
    /* The attributes in order, up to and including FINGERPRINT. Those
     * after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
     * FINGERPRINT are left out (RFC 8489 §14.5: they must be ignored). */
    mm_stun_attr_t attrs[MM_STUN_MAX_ATTRS];
    size_t nattrs;
    size_t integrity_off; /* offset in data of MESSAGE-INTEGRITY's header; 0: none */
    int has_fingerprint;  /* 1: FINGERPRINT was present (and is then correct) */
} mm_stun_msg_t;

/* Parses one datagram of `len` bytes. Checks: at least 20 bytes; the two
 * top bits of the type clear; the length field a multiple of 4 and equal
 * to len - 20 (no trailing bytes); every attribute inside the message with
 * its padding; at most MM_STUN_MAX_ATTRS attributes; MESSAGE-INTEGRITY 20
 * bytes, MESSAGE-INTEGRITY-SHA256 16..32 in steps of 4, FINGERPRINT 4
 * bytes, last, and matching its CRC-32. Returns 0, or -EINVAL (malformed),
 * -EBADMSG (FINGERPRINT does not match), -E2BIG (too many attributes). */
int mm_stun_parse(const uint8_t *buf, size_t len, mm_stun_msg_t *msg);

/* The first attribute of `type`, or NULL. */
const mm_stun_attr_t *mm_stun_find(const mm_stun_msg_t *msg, uint16_t type);

/* Decodes a (XOR-)MAPPED-ADDRESS-shaped attribute (also SOURCE-, CHANGED-,
 * OTHER-ADDRESS) of `msg` into `out`; XOR-MAPPED-ADDRESS is un-xored with
 * the cookie and transaction id. Returns 0 or -EINVAL. */
int mm_stun_decode_address(const mm_stun_msg_t *msg, const mm_stun_attr_t *attr, mm_addr_t *out);

/* The mapped address of a Binding success response: XOR-MAPPED-ADDRESS,
 * else MAPPED-ADDRESS. Returns 0, -ENOENT (neither) or -EINVAL. */
int mm_stun_mapped_address(const mm_stun_msg_t *msg, mm_addr_t *out);

/* The error code (300..699) of an error response, or -ENOENT / -EINVAL. */
int mm_stun_error_code(const mm_stun_msg_t *msg);

/* Verifies MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`: the
 * short-term password itself, or the long-term key the caller derived.
 * Returns 0 when it matches, -ENOENT when absent, -EBADMSG otherwise. */
int mm_stun_check_integrity(const mm_stun_msg_t *msg, const uint8_t *key, size_t keylen);

/* CRC-32 (ISO 3309, as zlib's crc32) of `len` bytes. */
uint32_t mm_stun_crc32(const uint8_t *p, size_t len);

/* ---- what a responder makes of a request ---- */

typedef enum mm_stun_verdict {
    MM_STUN_ANSWER,       /* a Binding request to answer */
    MM_STUN_NOT_BINDING,  /* a response, an indication, or another method: drop */
    MM_STUN_UNKNOWN_ATTR, /* comprehension-required attributes we do not understand: 420 (or drop when classic) */
} mm_stun_verdict_t;

typedef struct mm_stun_request {
    unsigned change;                       /* CHANGE-REQUEST flags asked for (MM_STUN_CHANGE_*), 0: none */
    uint16_t unknown[MM_STUN_MAX_UNKNOWN]; /* MM_STUN_UNKNOWN_ATTR: the first unknown types */
    size_t nunknown;
} mm_stun_request_t;

/* Classifies a parsed message as a responder sees it. Understood in a
 * Binding request: every comprehension-optional attribute, and USERNAME,
 * MESSAGE-INTEGRITY(-SHA256), REALM, NONCE, USERHASH, PRIORITY,
 * USE-CANDIDATE, PADDING (all ignored: this server authenticates nobody)
 * and CHANGE-REQUEST (4 bytes; its flags go to `req->change`, the caller
 * decides). RESPONSE-ADDRESS and RESPONSE-PORT, which would aim the reply
 * elsewhere, count as unknown, as does any other type below 0x8000. */
mm_stun_verdict_t mm_stun_inspect(const mm_stun_msg_t *msg, mm_stun_request_t *req);

/* ---- encoding ---- */

/* Appends attributes to a message under construction in a caller's buffer,
 * keeping the header's length field current. A call that does not fit
 * changes nothing and returns -ENOSPC. */
typedef struct mm_stun_builder {
    uint8_t *buf;
    size_t size; /* capacity of buf */
    size_t len;  /* bytes written so far */
    uint8_t pad; /* the padding byte (0; RFC 5769's vectors use 0x20) */
} mm_stun_builder_t;

/* Writes the header: `txid` is 12 bytes after the magic cookie, or with
 * `classic` 16 bytes replacing it. -ENOSPC when `size` < 20. */
int mm_stun_builder_init(mm_stun_builder_t *b, uint8_t *buf, size_t size, uint16_t type, const uint8_t *txid, int classic);
int mm_stun_builder_add(mm_stun_builder_t *b, uint16_t type, const void *value, size_t len);
/* MAPPED-ADDRESS-shaped (`type` any address attribute), XOR-ed with the
 * cookie and transaction id when `type` is XOR-MAPPED-ADDRESS. */
int mm_stun_builder_add_address(mm_stun_builder_t *b, uint16_t type, const mm_addr_t *addr);
/* ERROR-CODE with `code` (300..699) and `reason` (`reason_len` bytes). */
int mm_stun_builder_add_error(mm_stun_builder_t *b, int code, const char *reason, size_t reason_len);
/* MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) over everything so far. */
int mm_stun_builder_add_integrity(mm_stun_builder_t *b, const uint8_t *key, size_t keylen);
/* FINGERPRINT over everything so far; add it last. */
int mm_stun_builder_add_fingerprint(mm_stun_builder_t *b);

/* Size on the wire of an attribute whose value is `len` bytes. */
static inline size_t mm_stun_attr_size(size_t len)
{
    return 4 + ((len + 3) & ~(size_t)3);
}

/* The Binding success response to `req` (an MM_STUN_ANSWER) from a client
 * seen at `mapped`, into `out` (`size` bytes; MM_STUN_REPLY_MAX always
 * suffice). An RFC 8489 request gets XOR-MAPPED-ADDRESS, SOFTWARE,
 * MAPPED-ADDRESS and FINGERPRINT, except that SOFTWARE and then
 * MAPPED-ADDRESS are left out when the reply would exceed the request's
 * size + MM_STUN_REPLY_SLACK (only a bare 20-byte IPv6 request loses
 * MAPPED-ADDRESS). A classic RFC 3489 request gets MAPPED-ADDRESS only.
 * Returns the length, or -ENOSPC. */
ssize_t mm_stun_encode_binding_success(const mm_stun_msg_t *req, const mm_addr_t *mapped, uint8_t *out, size_t size);

/* The 420 (Unknown Attribute) error response to an RFC 8489 request, with
 * UNKNOWN-ATTRIBUTES listing `unknown` and FINGERPRINT; within the same
 * size bound (MM_STUN_REPLY_MAX bytes always suffice). Returns the length, or -ENOSPC,
 * or -EINVAL for a classic request (those are not answered). */
ssize_t mm_stun_encode_unknown_attributes(const mm_stun_msg_t *req, const uint16_t *unknown, size_t n, uint8_t *out, size_t size);

/* A Binding request with `txid` (12 bytes), SOFTWARE when `software` (the
 * name; NULL: none) and FINGERPRINT: what the agent and the load generator
 * send. Returns the length (28 without SOFTWARE), or -ENOSPC. */
ssize_t mm_stun_encode_binding_request(const uint8_t *txid, const char *software, size_t software_len, uint8_t *out, size_t size);

/* Parses a reply to the Binding request with transaction id `txid` (12
 * bytes): 0 with `mapped` set for a success response; -EPROTO for an error
 * response (its code in *error_code when not NULL); -ESRCH when the
 * transaction id differs; -EINVAL (or the codes of mm_stun_parse) when it
 * is not a well-formed Binding response. */
int mm_stun_parse_binding_response(const uint8_t *buf, size_t len, const uint8_t *txid, mm_addr_t *mapped, int *error_code);

#endif
