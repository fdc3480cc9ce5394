/*
 * The probe engine (proto/punch.md "Exchange"): one session on one UDP
 * socket. Every authentic PROBE or KEEPALIVE is answered at once with an
 * ACK to its source (behind a NAT, the other side's mapping); an authentic
 * ACK that echoes a packet we sent, from the address we sent it to, is a
 * path. Nothing is believed before the MAC is checked, the role byte stops
 * reflections of our own packets, the seq window stops replays.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include "agent_punch.h"

int agent_punch_init(agent_punch_t *p, int fd, mm_punch_role_t role, const char *session_id, const char *secret_b64,
                     json_t *peer_cands, agent_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    mm_addr_t bound;
    size_t i, k;
    json_t *c;

    memset(p, 0, sizeof(*p));
    p->fd = fd;
    p->role = role;
    p->peer_role = role == MM_PUNCH_OFFERER ? MM_PUNCH_ANSWERER : MM_PUNCH_OFFERER;
    if (session_id == NULL || mm_punch_session_id_parse(session_id, strlen(session_id), p->session_id) != 0 || secret_b64 == NULL ||
        mm_punch_secret_parse(secret_b64, strlen(secret_b64), p->secret) != 0) {
        agent_err_set(err, "bad_answer", "mm-signal sent a session id or secret this agent cannot read");
        return -1;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0 || mm_addr_from_sockaddr(&ss, &bound) != 0) {
        agent_err_set(err, "internal", "cannot read the UDP socket's address: %s", strerror(errno));
        return -1;
    }
    json_array_foreach(peer_cands, i, c)
    {
        const char *ip = json_string_value(json_object_get(c, "ip"));
        json_int_t port = json_integer_value(json_object_get(c, "port"));
        mm_addr_t a;
        int dup = 0;

        if (ip == NULL || port < 1 || port > 65535 || mm_addr_parse(ip, strlen(ip), &a) != 0 || a.family != bound.family ||
            mm_addr_is_unspecified(&a) || mm_addr_is_unusable(&a))
            continue;
        a.port = (uint16_t)port;
        for (k = 0; k != p->ncands; ++k)
            dup |= mm_addr_same_ip(&a, &p->cands[k]) && a.port == p->cands[k].port;
        if (!dup && p->ncands != AGENT_PUNCH_MAX_CANDS)
            p->cands[p->ncands++] = a;
    }
    if (p->ncands == 0) {
        agent_err_set(err, "no_candidates", "the peer sent no address this agent can reach over %s",
                      bound.family == AF_INET ? "IPv4" : "IPv6");
        return -1;
    }
    return 0;
}

static void agent_punch_send(agent_punch_t *p, mm_punch_type_t type, uint64_t echo, const mm_addr_t *to, uint64_t now)
{
    mm_punch_t pkt = {.type = (uint8_t)type, .role = (uint8_t)p->role, .seq = ++p->seq, .echo = echo};
    uint8_t buf[MM_PUNCH_LEN];
    struct sockaddr_storage ss;
    socklen_t len = mm_addr_to_sockaddr(to, &ss);

    memcpy(pkt.session_id, p->session_id, sizeof(pkt.session_id));
    if (mm_punch_encode(&pkt, p->secret, sizeof(p->secret), buf, sizeof(buf)) != MM_PUNCH_LEN)
        return;
    if (type != MM_PUNCH_ACK) {
        agent_punch_sent_t *s = &p->sent[pkt.seq % AGENT_PUNCH_RING];
        s->seq = pkt.seq;
        s->at = now;
        s->to = *to;
        p->probes++;
    } else {
        p->acks++;
    }
    (void)sendto(p->fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, len); /* lost ones are sent again */
}

/* One datagram from `from`. */
static void agent_punch_handle(agent_punch_t *p, const uint8_t *buf, size_t len, const mm_addr_t *from, uint64_t now)
{
    uint8_t sid[MM_PUNCH_SESSION_ID_LEN];
    const agent_punch_sent_t *s;
    mm_punch_t pkt;

    if (mm_punch_peek_session(buf, len, sid) != 0 || memcmp(sid, p->session_id, sizeof(sid)) != 0 ||
        mm_punch_decode(buf, len, p->secret, sizeof(p->secret), p->peer_role, &pkt) != 0 ||
        !mm_punch_window_accept(&p->window, pkt.seq)) {
        p->dropped++;
        return;
    }
    p->heard_at = now;
    if (pkt.type != MM_PUNCH_ACK) {
        agent_punch_send(p, MM_PUNCH_ACK, pkt.seq, from, now);
        return;
    }
    s = &p->sent[pkt.echo % AGENT_PUNCH_RING];
    if (s->seq != pkt.echo || now - s->at > AGENT_PUNCH_PROBE_MS || !mm_addr_same_ip(&s->to, from) || s->to.port != from->port) {
        p->dropped++; /* answers nothing outstanding, or came from elsewhere */
        return;
    }
    p->ack_at = now;
    p->rtt_ms = (double)(now - s->at);
    if (!p->have_path) {
        p->have_path = 1;
        p->remote = *from;
        p->path_at = now;
    }
}

/* Waits up to `ms` for datagrams and handles every one that arrived. */
static void agent_punch_pump(agent_punch_t *p, uint64_t ms)
{
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    uint8_t buf[1500];
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    mm_addr_t from;
    ssize_t len;

    if (poll(&pfd, 1, (int)ms) <= 0)
        return;
    while ((len = recvfrom(p->fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &sslen)) >= 0) {
        sslen = sizeof(ss);
        if (mm_addr_from_sockaddr(&ss, &from) == 0)
            agent_punch_handle(p, buf, (size_t)len, &from, mm_mono_ms());
    }
}

static uint64_t agent_punch_min(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

int agent_punch_probe(agent_punch_t *p, uint64_t start, uint64_t end, agent_punch_stop_fn stop, void *data)
{
    uint64_t now, next = start;
    size_t i;

    while (!p->have_path && (now = mm_mono_ms()) < end) {
        if (stop != NULL && stop(data))
            return -1;
        if (now >= next) {
            for (i = 0; i != p->ncands; ++i)
                agent_punch_send(p, MM_PUNCH_PROBE, 0, &p->cands[i], now);
            next += AGENT_PUNCH_INTERVAL_MS;
            if (next <= now)
                next = now + AGENT_PUNCH_INTERVAL_MS; /* we were late: no burst to catch up */
        }
        agent_punch_pump(p, agent_punch_min(next, end) - now);
    }
    return p->have_path;
}

void agent_punch_answer_until(agent_punch_t *p, uint64_t until, agent_punch_stop_fn stop, void *data)
{
    uint64_t now;

    while ((now = mm_mono_ms()) < until && !(stop != NULL && stop(data)))
        agent_punch_pump(p, agent_punch_min(until - now, AGENT_PUNCH_INTERVAL_MS));
}

int agent_punch_keep(agent_punch_t *p, uint64_t until, agent_punch_stop_fn stop, void *data)
{
    const uint64_t life = (uint64_t)AGENT_PUNCH_KEEPALIVE_MS * AGENT_PUNCH_KEEPALIVE_MISSES;
    uint64_t now = mm_mono_ms(), next = now + AGENT_PUNCH_KEEPALIVE_MS;

    if (p->ack_at == 0)
        p->ack_at = now;
    if (p->heard_at == 0)
        p->heard_at = now;
    for (;;) {
        now = mm_mono_ms();
        if (stop != NULL && stop(data))
            return -1;
        if (until != 0 && now >= until)
            return 1;
        /* With a path, our keepalives must be answered; without one, the other side's must keep coming. */
        if (p->have_path ? now - p->ack_at >= life + AGENT_PUNCH_INTERVAL_MS : now - p->heard_at >= life)
            return 0;
        if (p->have_path && now >= next) {
            agent_punch_send(p, MM_PUNCH_KEEPALIVE, 0, &p->remote, now);
            next = now + AGENT_PUNCH_KEEPALIVE_MS;
        }
        agent_punch_pump(p, 200);
    }
}
