/*
 * The order in which connect tries a peer's candidates (SPEC §5): the
 * cached last winner, then addresses on a subnet of one of our interfaces,
 * other private ones, public IPv6, public IPv4; within a class, the
 * tracker's order (reported first, then observed). Pure functions: the
 * interfaces and the cached winner are parameters, so the unit test
 * (tests/unit/test_agent_order.c) feeds them directly.
 *
 * Loopback candidates count as "same subnet" (this very machine); IPv6
 * link-local ones are dropped, since without a zone index (which the
 * tracker does not carry) no socket can reach them.
 */
#include <stdlib.h>
#include <string.h>
#include "agent.h"

const char *agent_addr_str(const mm_addr_t *a, char *buf)
{
    char ip[INET6_ADDRSTRLEN];

    mm_addr_ip_string(a, ip);
    snprintf(buf, 64, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, a->port);
    return buf;
}

const char *agent_class_name(agent_cand_class_t c)
{
    static const char *const names[] = {"cached", "same-subnet", "private", "public-ipv6", "public-ipv4", "skipped"};

    return (size_t)c < MM_ARRAY_SIZE(names) ? names[c] : "?";
}

int agent_order_same_subnet(const mm_addr_t *a, const agent_iface_t *iface)
{
    unsigned bits = iface->prefix, full = bits / 8, rest = bits % 8;
    unsigned max = a->family == AF_INET ? 32 : 128;

    if (a->family != iface->addr.family || bits == 0 || bits > max)
        return 0;
    if (memcmp(a->ip, iface->addr.ip, full) != 0)
        return 0;
    if (rest != 0) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((a->ip[full] & mask) != (iface->addr.ip[full] & mask))
            return 0;
    }
    return 1;
}

static agent_cand_class_t agent_order_class(const mm_addr_t *a, const agent_iface_t *ifaces, size_t nifaces)
{
    mm_scope_t scope = mm_addr_scope(a);
    size_t i;

    if (scope == MM_SCOPE_LINK_LOCAL && a->family == AF_INET6)
        return AGENT_CLASS_SKIP;
    if (scope == MM_SCOPE_LOOPBACK)
        return AGENT_CLASS_SAME_SUBNET;
    for (i = 0; i != nifaces; ++i)
        if (agent_order_same_subnet(a, &ifaces[i]))
            return AGENT_CLASS_SAME_SUBNET;
    if (scope == MM_SCOPE_PRIVATE || scope == MM_SCOPE_LINK_LOCAL)
        return AGENT_CLASS_PRIVATE;
    return a->family == AF_INET6 ? AGENT_CLASS_PUBLIC6 : AGENT_CLASS_PUBLIC4;
}

static int agent_order_cmp(const void *x, const void *y)
{
    const agent_cand_t *a = x, *b = y;

    if (a->cls != b->cls)
        return a->cls < b->cls ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static int agent_order_same(const mm_addr_t *a, const mm_addr_t *b)
{
    return mm_addr_same_ip(a, b) && a->port == b->port;
}

size_t agent_order(agent_cand_t *c, size_t n, const agent_iface_t *ifaces, size_t nifaces, const char *cached)
{
    mm_addr_t win;
    int have_win = cached != NULL && mm_addr_parse(cached, strlen(cached), &win) == 0, exact = 0;
    size_t i, j, out = 0;

    for (i = 0; i != n; ++i) {
        int dup = 0;
        for (j = 0; j != out; ++j)
            dup |= agent_order_same(&c[j].addr, &c[i].addr);
        c[i].cls = agent_order_class(&c[i].addr, ifaces, nifaces);
        if (dup || c[i].cls == AGENT_CLASS_SKIP)
            continue;
        c[out++] = c[i];
    }
    if (have_win) {
        for (i = 0; i != out && !exact; ++i)
            if (agent_order_same(&c[i].addr, &win)) {
                c[i].cls = AGENT_CLASS_CACHED;
                exact = 1;
            }
        /* the peer restarted on another port: the address that worked is still the best bet */
        for (i = 0; i != out && !exact; ++i)
            if (mm_addr_same_ip(&c[i].addr, &win)) {
                c[i].cls = AGENT_CLASS_CACHED;
                exact = 1;
            }
    }
    qsort(c, out, sizeof(*c), agent_order_cmp);
    return out;
}

size_t agent_order_from_json(json_t *record, agent_cand_t *out, size_t max)
{
    json_t *cands = json_object_get(record, "candidates"), *c;
    size_t i, n = 0;

    json_array_foreach(cands, i, c)
    {
        const char *ip = json_string_value(json_object_get(c, "ip")), *src = json_string_value(json_object_get(c, "source"));
        json_int_t port = json_integer_value(json_object_get(c, "port"));
        agent_cand_t e = {0};

        if (n == max)
            break;
        if (ip == NULL || port < 1 || port > 65535 || mm_addr_parse(ip, strlen(ip), &e.addr) != 0 || e.addr.port != 0)
            continue;
        e.addr.port = (uint16_t)port;
        e.observed = src != NULL && strcmp(src, "observed") == 0;
        e.rank = i;
        out[n++] = e;
    }
    return n;
}
