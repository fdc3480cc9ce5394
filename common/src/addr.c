/*
 * IP literals and scopes; see mm/addr.h. inet_pton does the parsing, these
 * functions only split off the port and classify.
 */
#include <errno.h>
#include <string.h>
#include "mm/addr.h"

/* "1".."65535" without sign, blanks or leading zeros. */
static int mm__parse_port(const char *s, size_t len, uint16_t *port)
{
    uint32_t v = 0;
    size_t i;

    if (len == 0 || len > 5 || s[0] == '0')
        return -EINVAL;
    for (i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

static int mm__pton(int family, const char *s, size_t len, mm_addr_t *out)
{
    char buf[INET6_ADDRSTRLEN];
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (len == 0 || len >= sizeof(buf) || memchr(s, '%', len) != NULL)
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out->ip, 0, sizeof(out->ip));
    if (inet_pton(family, buf, out->ip) != 1)
        return -EINVAL;
    out->family = family;
    if (family == AF_INET6 && memcmp(out->ip, v4mapped, sizeof(v4mapped)) == 0) {
        memmove(out->ip, out->ip + 12, 4);
        memset(out->ip + 4, 0, 12);
        out->family = AF_INET;
    }
    return 0;
}

int mm_addr_parse(const char *s, size_t len, mm_addr_t *out)
{
    const char *colon;

    out->port = 0;
    if (len != 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || mm__pton(AF_INET6, s + 1, (size_t)(close - s - 1), out) != 0)
            return -EINVAL;
        if (close == s + len - 1)
            return 0;
        if (close[1] != ':')
            return -EINVAL;
        return mm__parse_port(close + 2, (size_t)(s + len - close - 2), &out->port);
    }
    if (memchr(s, '.', len) != NULL && (colon = memchr(s, ':', len)) != NULL) {
        /* "a.b.c.d:port" (an IPv6 literal with an embedded IPv4 has several colons and no port) */
        if (memchr(colon + 1, ':', (size_t)(s + len - colon - 1)) == NULL) {
            if (mm__pton(AF_INET, s, (size_t)(colon - s), out) != 0)
                return -EINVAL;
            return mm__parse_port(colon + 1, (size_t)(s + len - colon - 1), &out->port);
        }
    }
    if (mm__pton(AF_INET, s, len, out) == 0)
        return 0;
    return mm__pton(AF_INET6, s, len, out);
}

int mm_addr_is_unspecified(const mm_addr_t *a)
{
    static const uint8_t zero[16];

    return memcmp(a->ip, zero, a->family == AF_INET ? 4 : 16) == 0;
}

int mm_addr_is_unusable(const mm_addr_t *a)
{
    const uint8_t *ip = a->ip;

    if (a->family == AF_INET) {
        if (ip[0] >= 224) /* multicast 224/4, reserved 240/4, broadcast 255.255.255.255 */
            return 1;
        return ip[0] == 0 && !mm_addr_is_unspecified(a);
    }
    return ip[0] == 0xff;
}

mm_scope_t mm_addr_scope(const mm_addr_t *a)
{
    const uint8_t *ip = a->ip;
    static const uint8_t v6loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

    if (a->family == AF_INET) {
        if (ip[0] == 127)
            return MM_SCOPE_LOOPBACK;
        if (ip[0] == 169 && ip[1] == 254)
            return MM_SCOPE_LINK_LOCAL;
        if (ip[0] == 10 || (ip[0] == 172 && (ip[1] & 0xf0) == 16) || (ip[0] == 192 && ip[1] == 168) ||
            (ip[0] == 100 && (ip[1] & 0xc0) == 64))
            return MM_SCOPE_PRIVATE;
        return MM_SCOPE_PUBLIC;
    }
    if (memcmp(ip, v6loop, 16) == 0)
        return MM_SCOPE_LOOPBACK;
    if (ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80)
        return MM_SCOPE_LINK_LOCAL;
    if ((ip[0] & 0xfe) == 0xfc)
        return MM_SCOPE_PRIVATE;
    return MM_SCOPE_PUBLIC;
}

const char *mm_scope_name(mm_scope_t scope)
{
    switch (scope) {
    case MM_SCOPE_LOOPBACK:
        return "loopback";
    case MM_SCOPE_LINK_LOCAL:
        return "link-local";
    case MM_SCOPE_PRIVATE:
        return "private";
    case MM_SCOPE_PUBLIC:
        break;
    }
    return "public";
}

const char *mm_addr_ip_string(const mm_addr_t *a, char *buf)
{
    if (inet_ntop(a->family, a->ip, buf, INET6_ADDRSTRLEN) == NULL)
        buf[0] = '\0';
    return buf;
}

int mm_addr_same_ip(const mm_addr_t *a, const mm_addr_t *b)
{
    return a->family == b->family && memcmp(a->ip, b->ip, a->family == AF_INET ? 4 : 16) == 0;
}

socklen_t mm_addr_to_sockaddr(const mm_addr_t *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(a->port);
        memcpy(&sin->sin_addr, a->ip, 4);
        return sizeof(*sin);
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(a->port);
    memcpy(&sin6->sin6_addr, a->ip, 16);
    return sizeof(*sin6);
}

int mm_addr_from_sockaddr(const struct sockaddr_storage *ss, mm_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        out->family = AF_INET;
        memcpy(out->ip, &sin->sin_addr, 4);
        out->port = ntohs(sin->sin_port);
        return 0;
    }
    if (ss->ss_family != AF_INET6)
        return -EAFNOSUPPORT;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
        out->family = AF_INET;
        memcpy(out->ip, &sin6->sin6_addr.s6_addr[12], 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->ip, &sin6->sin6_addr, 16);
    }
    out->port = ntohs(sin6->sin6_port);
    return 0;
}
