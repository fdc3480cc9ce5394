/*
 * The machine's own addresses, from getifaddrs(3): what mm up tells the
 * server, and what connect compares candidates with (same subnet).
 */
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include "agent.h"

static unsigned agent_addrs_prefix(const struct sockaddr *mask)
{
    const uint8_t *b;
    size_t i, n;
    unsigned bits = 0;

    if (mask == NULL)
        return 0;
    if (mask->sa_family == AF_INET) {
        b = (const uint8_t *)&((const struct sockaddr_in *)(const void *)mask)->sin_addr;
        n = 4;
    } else if (mask->sa_family == AF_INET6) {
        b = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)mask)->sin6_addr;
        n = 16;
    } else {
        return 0;
    }
    for (i = 0; i != n; ++i)
        bits += (unsigned)__builtin_popcount(b[i]);
    return bits;
}

static int agent_addrs_cmp(const void *a, const void *b)
{
    const agent_iface_t *x = a, *y = b;

    if (x->addr.family != y->addr.family)
        return x->addr.family == AF_INET ? -1 : 1;
    return memcmp(x->addr.ip, y->addr.ip, sizeof(x->addr.ip));
}

int agent_addrs_list(agent_iface_t *out, size_t max, int all)
{
    struct ifaddrs *ifa, *i;
    size_t n = 0, nloop = 0, k;
    agent_iface_t *loops = mm_xcalloc(max != 0 ? max : 1, sizeof(*loops));

    if (getifaddrs(&ifa) != 0) {
        free(loops);
        return -errno;
    }
    for (i = ifa; i != NULL; i = i->ifa_next) {
        agent_iface_t e = {0};
        mm_scope_t scope;
        int dup = 0;

        if (i->ifa_addr == NULL || (i->ifa_flags & IFF_UP) == 0)
            continue;
        if (i->ifa_addr->sa_family == AF_INET) {
            e.addr.family = AF_INET;
            memcpy(e.addr.ip, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, 4);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            e.addr.family = AF_INET6;
            memcpy(e.addr.ip, &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        if (mm_addr_is_unusable(&e.addr) || mm_addr_is_unspecified(&e.addr))
            continue;
        e.prefix = agent_addrs_prefix(i->ifa_netmask);
        snprintf(e.name, sizeof(e.name), "%s", i->ifa_name);
        scope = mm_addr_scope(&e.addr);
        if (!all && scope == MM_SCOPE_LINK_LOCAL && e.addr.family == AF_INET6)
            continue;
        for (k = 0; k != n; ++k)
            dup |= mm_addr_same_ip(&out[k].addr, &e.addr);
        if (dup)
            continue;
        if (!all && (scope == MM_SCOPE_LOOPBACK || (i->ifa_flags & IFF_LOOPBACK) != 0)) {
            if (nloop < max)
                loops[nloop++] = e;
            continue;
        }
        if (n < max)
            out[n++] = e;
    }
    freeifaddrs(ifa);
    if (n == 0) { /* loopback only when there is nothing else */
        memcpy(out, loops, nloop * sizeof(*loops));
        n = nloop;
    }
    free(loops);
    qsort(out, n, sizeof(*out), agent_addrs_cmp);
    return (int)n;
}
