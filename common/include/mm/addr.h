/*
 * IP address literals with optional ports, and their scope (SPEC §3.1).
 * Pure functions over inet_pton: no DNS, no regexes, no allocation.
 */
#ifndef MM_ADDR_H
#define MM_ADDR_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef enum mm_scope {
    MM_SCOPE_LOOPBACK,   /* 127.0.0.0/8, ::1 */
    MM_SCOPE_LINK_LOCAL, /* 169.254.0.0/16, fe80::/10 */
    MM_SCOPE_PRIVATE,    /* RFC 1918, RFC 6598 (100.64.0.0/10), RFC 4193 (fc00::/7) */
    MM_SCOPE_PUBLIC,
} mm_scope_t;

typedef struct mm_addr {
    int family;     /* AF_INET or AF_INET6 */
    uint8_t ip[16]; /* network order; IPv4 in the first 4 bytes */
    uint16_t port;  /* 0: none given */
} mm_addr_t;

/* Parses "192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]" or
 * "[2001:db8::1]:80" (`len` bytes, no NUL needed). IPv4-mapped IPv6
 * (::ffff:a.b.c.d) becomes IPv4. Refuses a zone index, a port outside
 * 1..65535, leading zeros in the port, and any other text. Returns 0 or -EINVAL. */
int mm_addr_parse(const char *s, size_t len, mm_addr_t *out);

/* 1 for addresses a peer can never be reached at: multicast (224.0.0.0/4,
 * ff00::/8), the limited broadcast 255.255.255.255, 240.0.0.0/4, and
 * 0.0.0.0/8 other than 0.0.0.0 itself. */
int mm_addr_is_unusable(const mm_addr_t *a);
/* 1 for 0.0.0.0 and ::, which a peer sends to mean "my observed address". */
int mm_addr_is_unspecified(const mm_addr_t *a);

mm_scope_t mm_addr_scope(const mm_addr_t *a);
const char *mm_scope_name(mm_scope_t scope);

/* The IP alone, in canonical text form; `buf` holds INET6_ADDRSTRLEN bytes. */
const char *mm_addr_ip_string(const mm_addr_t *a, char *buf);

/* 1 when both have the same family and IP (ports ignored). */
int mm_addr_same_ip(const mm_addr_t *a, const mm_addr_t *b);

/* `a` (with its port) as a socket address in `ss`; returns its length. */
socklen_t mm_addr_to_sockaddr(const mm_addr_t *a, struct sockaddr_storage *ss);
/* A socket address as an mm_addr_t (IPv4-mapped IPv6 becomes IPv4).
 * Returns 0, or -EAFNOSUPPORT for a family other than AF_INET/AF_INET6. */
int mm_addr_from_sockaddr(const struct sockaddr_storage *ss, mm_addr_t *out);

#endif
