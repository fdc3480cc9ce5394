/*
 * This machine's UDP mapping: Binding requests to mm-signal's two STUN
 * ports from the socket that will punch, and the NAT's kind from the two
 * answers (RFC 5780 §4.3 with the port as the changed part: a NAT that
 * maps per destination gives the second port another public port).
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mm/stun.h"
#include "agent_punch.h"

#define AGENT_STUN_ALT_GRACE_MS 1500 /* how long the alternate port may lag behind the primary (a lossy link) */
#define AGENT_STUN_RTO_MS 100        /* first retransmission; doubles as in RFC 8489 §6.2.1 (whose 500 ms suits the internet), */
#define AGENT_STUN_RTO_MAX_MS 250    /* up to this: a 20-byte request is cheap, and a lossy link needs many */

/* The host of an https:// URL ("[v6]" without brackets) into `host`. */
static int agent_stun_url_host(const char *url, char *host, size_t size)
{
    const char *p = strstr(url, "://"), *end;

    p = p != NULL ? p + 3 : url;
    if (*p == '[') {
        end = strchr(++p, ']');
    } else {
        end = p + strcspn(p, ":/");
    }
    if (end == NULL || end == p || (size_t)(end - p) >= size)
        return -EINVAL;
    memcpy(host, p, (size_t)(end - p));
    host[end - p] = '\0';
    return 0;
}

/* HOST[:PORT] ("[v6]:port" for IPv6 with a port) into host and port. */
static int agent_stun_split(const char *s, char *host, size_t size, uint16_t *port)
{
    const char *colon = strrchr(s, ':'), *close = strchr(s, ']');
    size_t n;
    char *end;

    if (s[0] == '[') {
        if (close == NULL)
            return -EINVAL;
        n = (size_t)(close - s - 1);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] != '\0' && colon == NULL)
            return -EINVAL;
        s++;
    } else if (colon != NULL && strchr(s, ':') != colon) {
        colon = NULL; /* a bare IPv6 address */
        n = strlen(s);
    } else {
        n = colon != NULL ? (size_t)(colon - s) : strlen(s);
    }
    if (n == 0 || n >= size)
        return -EINVAL;
    memcpy(host, s, n);
    host[n] = '\0';
    if (colon != NULL) {
        long v;
        errno = 0;
        v = strtol(colon + 1, &end, 10);
        if (errno != 0 || *end != '\0' || end == colon + 1 || v < 1 || v > 65535)
            return -EINVAL;
        *port = (uint16_t)v;
    }
    return 0;
}

int agent_stun_target(const agent_conf_t *conf, const char *flag, int64_t alt, agent_stun_target_t *t, agent_err_t *err)
{
    const char *env = getenv("MM_STUN"), *env_alt = getenv("MM_STUN_ALT"), *spec = NULL, *what = "the server URL";
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL, *ai, *pick = NULL;
    char host[256], ip[INET6_ADDRSTRLEN];
    uint16_t port = AGENT_STUN_DEFAULT_PORT;
    int rc;

    memset(t, 0, sizeof(*t));
    if (flag != NULL) {
        spec = flag, what = "--stun";
    } else if (env != NULL && env[0] != '\0') {
        spec = env, what = "MM_STUN";
    }
    if (spec != NULL ? agent_stun_split(spec, host, sizeof(host), &port) != 0
                     : agent_stun_url_host(conf->server, host, sizeof(host)) != 0) {
        agent_err_set(err, "bad_usage", "%s: expected HOST[:PORT] of mm-signal's STUN (e.g. stun.example.com:3478)",
                      spec != NULL ? spec : conf->server);
        return -1;
    }
    if ((rc = getaddrinfo(host, NULL, &hints, &res)) != 0) {
        agent_err_set(err, "stun_unreachable", "cannot resolve %s (from %s): %s", host, what, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET && (pick == NULL || pick->ai_family != AF_INET))
            pick = ai;
        else if (ai->ai_family == AF_INET6 && pick == NULL)
            pick = ai;
    }
    rc = pick != NULL ? mm_addr_from_sockaddr((const struct sockaddr_storage *)(const void *)pick->ai_addr, &t->server) : -1;
    freeaddrinfo(res);
    if (rc != 0) {
        agent_err_set(err, "stun_unreachable", "%s (from %s) has no IPv4 or IPv6 address", host, what);
        return -1;
    }
    t->server.port = port;
    if (alt < 0 && env_alt != NULL && env_alt[0] != '\0') {
        char *end;
        errno = 0;
        alt = strtoll(env_alt, &end, 10);
        if (errno != 0 || *end != '\0' || alt < 1 || alt > 65535) {
            agent_err_set(err, "bad_usage", "MM_STUN_ALT=%s: expected a port number", env_alt);
            return -1;
        }
    }
    t->alt_port = alt > 0 ? (uint16_t)alt : (uint16_t)(port == 65535 ? 65534 : port + 1);
    snprintf(t->text, sizeof(t->text), "%s", agent_addr_str(&t->server, ip));
    return 0;
}

int agent_udp_open(int family, agent_err_t *err)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        agent_err_set(err, "internal", "cannot open a UDP socket: %s", strerror(errno));
    return fd;
}

int agent_local_ip_toward(const mm_addr_t *to, mm_addr_t *out)
{
    struct sockaddr_storage ss;
    socklen_t len = mm_addr_to_sockaddr(to, &ss);
    int fd = socket(to->family, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = -1;

    if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) == 0) {
        len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
            rc = mm_addr_from_sockaddr(&ss, out);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

typedef struct agent_stun_query {
    mm_addr_t to;
    uint8_t txid[MM_STUN_TXID_LEN];
    uint8_t req[MM_STUN_HEADER_LEN + 8];
    size_t reqlen;
    uint64_t first_sent, done_at;
    int done;
    mm_addr_t mapped;
    double rtt_ms;
} agent_stun_query_t;

static void agent_stun_query_init(agent_stun_query_t *q, const mm_addr_t *to)
{
    mm_stun_builder_t b;

    memset(q, 0, sizeof(*q));
    q->to = *to;
    mm_random_bytes(q->txid, sizeof(q->txid));
    mm_stun_builder_init(&b, q->req, sizeof(q->req), MM_STUN_BINDING_REQUEST, q->txid, 0);
    mm_stun_builder_add_fingerprint(&b);
    q->reqlen = b.len;
}

static void agent_stun_send(int fd, agent_stun_query_t *q, uint64_t now)
{
    struct sockaddr_storage ss;
    socklen_t len = mm_addr_to_sockaddr(&q->to, &ss);

    if (q->first_sent == 0)
        q->first_sent = now;
    (void)sendto(fd, q->req, q->reqlen, 0, (struct sockaddr *)&ss, len); /* a lost request is sent again */
}

/* Reads what arrived; marks the queries it answers. */
static void agent_stun_read(int fd, agent_stun_query_t *q, size_t n, uint64_t now)
{
    uint8_t buf[1500];
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    mm_stun_msg_t msg;
    mm_addr_t from, mapped;
    ssize_t len;
    size_t i;

    while ((len = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &sslen)) >= 0) {
        sslen = sizeof(ss);
        if (mm_addr_from_sockaddr(&ss, &from) != 0 || mm_stun_parse(buf, (size_t)len, &msg) != 0 ||
            msg.type != MM_STUN_BINDING_SUCCESS || msg.classic || mm_stun_mapped_address(&msg, &mapped) != 0)
            continue;
        for (i = 0; i != n; ++i) {
            if (q[i].done || memcmp(msg.txid, q[i].txid, MM_STUN_TXID_LEN) != 0 || !mm_addr_same_ip(&from, &q[i].to) ||
                from.port != q[i].to.port)
                continue;
            q[i].done = 1;
            q[i].done_at = now;
            q[i].mapped = mapped;
            q[i].rtt_ms = (double)(now - q[i].first_sent);
        }
    }
}

int agent_stun_map(int fd, const agent_stun_target_t *t, uint64_t deadline, agent_mapping_t *m, agent_err_t *err)
{
    agent_stun_query_t q[2];
    mm_addr_t alt = t->server;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    uint64_t now = mm_mono_ms(), next = now, rto = AGENT_STUN_RTO_MS;
    size_t i;

    memset(m, 0, sizeof(*m));
    alt.port = t->alt_port;
    agent_stun_query_init(&q[0], &t->server);
    agent_stun_query_init(&q[1], &alt);
    while (!(q[0].done && q[1].done) && (now = mm_mono_ms()) < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (q[0].done && now >= q[0].done_at + AGENT_STUN_ALT_GRACE_MS)
            break; /* the alternate port is silent: no nat_mapping, but the mapping is known */
        if (now >= next) {
            for (i = 0; i != 2; ++i)
                if (!q[i].done)
                    agent_stun_send(fd, &q[i], now);
            next = now + rto;
            rto = rto * 2 > AGENT_STUN_RTO_MAX_MS ? AGENT_STUN_RTO_MAX_MS : rto * 2;
        }
        if (poll(&pfd, 1, (int)((next < deadline ? next : deadline) - now)) > 0)
            agent_stun_read(fd, q, 2, mm_mono_ms());
    }
    if (!q[0].done) {
        agent_err_set(err, "stun_unreachable",
                      "no answer from mm-signal's STUN at %s (UDP): UDP to it may be blocked, or it listens elsewhere "
                      "(--stun HOST:PORT, MM_STUN)",
                      t->text);
        return -1;
    }
    m->mapped = q[0].mapped;
    m->rtt_ms = q[0].rtt_ms;
    if (q[1].done) {
        m->mapped_alt = q[1].mapped;
        if (q[1].rtt_ms < m->rtt_ms)
            m->rtt_ms = q[1].rtt_ms;
        m->nat_mapping = mm_addr_same_ip(&m->mapped, &m->mapped_alt) && m->mapped.port == m->mapped_alt.port
                             ? "endpoint-independent"
                             : "address-dependent";
    }
    if (agent_local_ip_toward(&t->server, &m->local) != 0)
        m->local.family = t->server.family;
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        mm_addr_t bound;
        if (mm_addr_from_sockaddr(&ss, &bound) == 0)
            m->local.port = bound.port;
    }
    return 0;
}

static void agent_cand_push(json_t *list, const mm_addr_t *a, uint16_t port, const char *type)
{
    char ip[INET6_ADDRSTRLEN];
    size_t i;
    json_t *c;

    mm_addr_ip_string(a, ip);
    json_array_foreach(list, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "ip")), ip) == 0 && json_integer_value(json_object_get(c, "port")) == port)
            return;
    }
    json_array_append_new(list, json_pack("{s:s,s:i,s:s}", "ip", ip, "port", (int)port, "type", type));
}

json_t *agent_punch_candidates(const agent_mapping_t *m)
{
    agent_iface_t ifs[AGENT_MAX_ADDRS];
    json_t *list = json_array();
    int n = agent_addrs_list(ifs, MM_ARRAY_SIZE(ifs), 0), i;

    for (i = 0; i < n; ++i) {
        if (ifs[i].addr.family != m->local.family || mm_addr_scope(&ifs[i].addr) == MM_SCOPE_PUBLIC)
            continue;
        agent_cand_push(list, &ifs[i].addr, m->local.port, "host");
    }
    agent_cand_push(list, &m->mapped, m->mapped.port, mm_addr_scope(&m->mapped) == MM_SCOPE_PUBLIC ? "srflx" : "host");
    return list;
}
