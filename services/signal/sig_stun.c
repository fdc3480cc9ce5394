/*
 * The STUN Binding responder of mm-signal (SPEC §3.3): UDP on
 * MM_STUN_PORT and MM_STUN_ALT_PORT, IPv4 and IPv6, answered on the
 * service's own loop threads.
 *
 * Each thread has its own socket per port, bound with SO_REUSEPORT, so the
 * kernel spreads clients over the threads and no socket is shared. A
 * readable socket is drained with recvmmsg() in batches of SIG_STUN_BATCH
 * and the replies leave with one sendmmsg() per batch; a wake-up handles
 * at most SIG_STUN_ROUNDS batches per socket, so one busy port cannot
 * starve the HTTP side (the loop is level-triggered and comes back).
 *
 * Per datagram: parse (mm/stun.h) → anything malformed, and anything but
 * a Binding request, is dropped silently → per-source-IP token bucket
 * (mm/ratelimit.h, shared by the threads; IPv6 sources count per /64) →
 * a Binding success response, or 420 for unknown comprehension-required
 * attributes. A reply never exceeds the request's size + 64 bytes.
 *
 * A socket bound to a wildcard address (the default ::) learns each
 * request's destination address (IP_PKTINFO / IPV6_PKTINFO) and sends the
 * reply from it: on a host with several addresses a reply from another one
 * would not pass the client's NAT.
 *
 * CHANGE-REQUEST (RFC 3489 / RFC 5780): "change port" is done when the
 * second port is on (the reply leaves from the other port); "change IP"
 * cannot be (one address), so an RFC 8489 request gets 420 naming
 * CHANGE-REQUEST and a classic one is dropped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "mm/log.h"
#include "mm/metrics.h"
#include "mm/ratelimit.h"
#include "mm/stun.h"
#include "sig.h"

#define SIG_STUN_BATCH 32
#define SIG_STUN_ROUNDS 8
#define SIG_STUN_DGRAM_MAX 2048            /* larger datagrams arrive truncated and are dropped as malformed */
#define SIG_STUN_RL_KEYS (256 * 1024)      /* source IPs tracked by the rate limiter (LRU beyond) */
#define SIG_STUN_SOCKBUF (4 * 1024 * 1024) /* asked-for socket buffers; the kernel caps them at rmem_max/wmem_max */
#define SIG_STUN_CTL 64                    /* room for one IP_PKTINFO or IPV6_PKTINFO control message */

/* What the threads share: the limiter and the counters. Created by the
 * first thread that starts, freed by the last that stops. */
static struct {
    pthread_mutex_t lock;
    int refs;
    mm_ratelimit_t *rl;
    mm_counter_t *requests, *responses;
    mm_counter_t *malformed, *not_binding, *rate_limited, *unsupported, *send_failed;
} sig__stun = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct sig_stun_thread sig_stun_thread_t;

/* Replies waiting to leave one socket. */
typedef struct sig_stun_out {
    unsigned n;
    struct mmsghdr msgs[SIG_STUN_BATCH];
    struct iovec iov[SIG_STUN_BATCH];
    struct sockaddr_storage addr[SIG_STUN_BATCH];
    uint8_t buf[SIG_STUN_BATCH][MM_STUN_REPLY_MAX];
    union {
        struct cmsghdr align;
        uint8_t bytes[SIG_STUN_CTL];
    } ctl[SIG_STUN_BATCH];
} sig_stun_out_t;

typedef struct sig_stun_listener {
    sig_stun_thread_t *owner;
    h2o_socket_t *sock;
    int fd;
    int pktinfo; /* bound to a wildcard: learn and reuse each request's destination */
    uint16_t port;
    struct sig_stun_listener *other; /* the other port's socket, for "change port"; NULL when off */
    sig_stun_out_t out;
} sig_stun_listener_t;

/* Counts of one wake-up, added to the shared counters at its end. */
typedef struct sig_stun_counts {
    uint64_t requests, responses, malformed, not_binding, rate_limited, unsupported, send_failed;
} sig_stun_counts_t;

struct sig_stun_thread {
    sig_stun_listener_t listeners[2];
    size_t nlisteners;
    uint64_t last_error_log_ms;
    /* the receive batch */
    struct mmsghdr in[SIG_STUN_BATCH];
    struct iovec in_iov[SIG_STUN_BATCH];
    struct sockaddr_storage in_addr[SIG_STUN_BATCH];
    uint8_t in_buf[SIG_STUN_BATCH][SIG_STUN_DGRAM_MAX];
    union {
        struct cmsghdr align;
        uint8_t bytes[SIG_STUN_CTL];
    } in_ctl[SIG_STUN_BATCH];
};

/* thread_dispose runs on the thread that ran thread_init. */
static _Thread_local sig_stun_thread_t *sig__stun_self;

/* ---- sockets ------------------------------------------------------------ */

/* MM_STUN_ADDR: an IP literal, IPv6 optionally in brackets. */
static int sig_stun_parse_addr(const char *text, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 2];
    size_t n = text != NULL ? strlen(text) : 0;
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
        ++text;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, n);
    host[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
        return 0;
    }
    return -EINVAL;
}

static int sig_stun_is_wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* One UDP socket on `ss`. With `reuseport` it joins the port's
 * SO_REUSEPORT group; without, binding fails when anyone holds the port
 * (how the first thread checks that no other process shares it). */
static int sig_stun_open(const struct sockaddr_storage *ss, socklen_t sslen, int reuseport, int pktinfo, mm_err_t *err)
{
    int fd, on = 1, off = 0, size = SIG_STUN_SOCKBUF;

    if ((fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto syserr;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
        goto syserr;
    if (ss->ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0)
        goto syserr;
    if (pktinfo && (ss->ss_family == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof(on))
                                              : setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on))) != 0)
        goto syserr;
    /* best effort: bursts of requests should not overflow a small default buffer */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0)
        goto syserr;
    return fd;
syserr:
    if (err != NULL) {
        char host[INET6_ADDRSTRLEN] = "?";
        const void *ip = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                                   : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
        inet_ntop(ss->ss_family, ip, host, sizeof(host));
        mm_err_set(err, "cannot bind UDP %s%s%s:%u: %s", ss->ss_family == AF_INET6 ? "[" : "", host,
                   ss->ss_family == AF_INET6 ? "]" : "", ntohs(((const struct sockaddr_in *)ss)->sin_port), strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

/* ---- one datagram ---------------------------------------------------------- */

/* The client's address as the codec wants it: IPv4-mapped IPv6 as IPv4. */
static int sig_stun_source(const struct sockaddr_storage *ss, mm_addr_t *out)
{
    if (mm_addr_from_sockaddr(ss, out) != 0)
        return -EAFNOSUPPORT;
    return out->port != 0 ? 0 : -EINVAL; /* nothing can be sent to port 0 */
}

/* Copies the request's destination (from IP_PKTINFO / IPV6_PKTINFO) into
 * the reply's control data, so that the reply leaves from that address.
 * Sets the reply's msg_control/msg_controllen (none when not found). */
static void sig_stun_reply_source(const struct msghdr *in, struct msghdr *out, void *ctlbuf)
{
    struct cmsghdr *c, *o;

    out->msg_control = NULL;
    out->msg_controllen = 0;
    for (c = CMSG_FIRSTHDR(in); c != NULL; c = CMSG_NXTHDR((struct msghdr *)in, c)) {
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            /* IPv4 through a dual-stack socket: the kernel routes it, an interface index would only constrain it */
            if (IN6_IS_ADDR_V4MAPPED(&pi.ipi6_addr))
                pi.ipi6_ifindex = 0;
            out->msg_control = ctlbuf;
            out->msg_controllen = CMSG_SPACE(sizeof(pi));
            o = CMSG_FIRSTHDR(out);
            o->cmsg_level = IPPROTO_IPV6;
            o->cmsg_type = IPV6_PKTINFO;
            o->cmsg_len = CMSG_LEN(sizeof(pi));
            memcpy(CMSG_DATA(o), &pi, sizeof(pi));
            return;
        }
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo pi, po = {0};
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            po.ipi_spec_dst = pi.ipi_spec_dst;
            out->msg_control = ctlbuf;
            out->msg_controllen = CMSG_SPACE(sizeof(po));
            o = CMSG_FIRSTHDR(out);
            o->cmsg_level = IPPROTO_IP;
            o->cmsg_type = IP_PKTINFO;
            o->cmsg_len = CMSG_LEN(sizeof(po));
            memcpy(CMSG_DATA(o), &po, sizeof(po));
            return;
        }
    }
}

/* Decides what to do with datagram `i` of the batch that arrived on `l`,
 * and queues the reply, if any, on the socket it must leave from. */
static void sig_stun_handle(sig_stun_listener_t *l, unsigned i, uint64_t now_ms, sig_stun_counts_t *counts)
{
    sig_stun_thread_t *t = l->owner;
    struct mmsghdr *in = &t->in[i];
    sig_stun_listener_t *from = l;
    sig_stun_out_t *out;
    mm_stun_msg_t msg;
    mm_stun_request_t req;
    mm_stun_verdict_t verdict;
    mm_addr_t src;
    ssize_t n;
    unsigned k;

    if ((in->msg_hdr.msg_flags & MSG_TRUNC) != 0 || sig_stun_source(&t->in_addr[i], &src) != 0 ||
        mm_stun_parse(t->in_buf[i], in->msg_len, &msg) != 0) {
        ++counts->malformed;
        return;
    }
    if ((verdict = mm_stun_inspect(&msg, &req)) == MM_STUN_NOT_BINDING) {
        ++counts->not_binding;
        return;
    }
    /* The key is the source IP, or its /64 for IPv6, where one host usually holds the whole prefix. */
    if (mm_ratelimit_take(sig__stun.rl, src.ip, src.family == AF_INET ? 4 : 8, now_ms) != 0) {
        ++counts->rate_limited;
        return;
    }
    if (verdict == MM_STUN_ANSWER && req.change != 0) {
        if ((req.change & MM_STUN_CHANGE_IP) == 0 && l->other != NULL) {
            from = l->other; /* "change port": the reply leaves from the other port */
        } else {
            /* cannot be done here: answered as a server without RFC 5780 would */
            verdict = MM_STUN_UNKNOWN_ATTR;
            req.unknown[req.nunknown++] = MM_STUN_ATTR_CHANGE_REQUEST;
        }
    }
    if (verdict == MM_STUN_UNKNOWN_ATTR && msg.classic) {
        ++counts->unsupported;
        return;
    }

    out = &from->out;
    k = out->n;
    if (verdict == MM_STUN_ANSWER)
        n = mm_stun_encode_binding_success(&msg, &src, out->buf[k], sizeof(out->buf[k]));
    else
        n = mm_stun_encode_unknown_attributes(&msg, req.unknown, req.nunknown, out->buf[k], sizeof(out->buf[k]));
    if (n <= 0) {
        ++counts->unsupported;
        return;
    }
    out->iov[k] = (struct iovec){.iov_base = out->buf[k], .iov_len = (size_t)n};
    memcpy(&out->addr[k], &t->in_addr[i], in->msg_hdr.msg_namelen);
    out->msgs[k].msg_hdr = (struct msghdr){
        .msg_name = &out->addr[k], .msg_namelen = in->msg_hdr.msg_namelen, .msg_iov = &out->iov[k], .msg_iovlen = 1};
    if (from->pktinfo)
        sig_stun_reply_source(&in->msg_hdr, &out->msgs[k].msg_hdr, out->ctl[k].bytes);
    out->n = k + 1;
}

/* Sends what is queued on `l`. A reply the kernel refuses (a full buffer,
 * an unreachable network) is dropped: UDP, and the client will retransmit. */
static void sig_stun_flush(sig_stun_listener_t *l, sig_stun_counts_t *counts)
{
    sig_stun_out_t *out = &l->out;
    unsigned done = 0;
    int r;

    while (done < out->n) {
        r = sendmmsg(l->fd, out->msgs + done, out->n - done, MSG_DONTWAIT);
        if (r > 0) {
            done += (unsigned)r;
            counts->responses += (unsigned)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            counts->send_failed += out->n - done;
            break;
        }
        ++counts->send_failed; /* this one failed on its own (e.g. EPERM, ENETUNREACH): skip it */
        ++done;
    }
    out->n = 0;
}

static void sig_stun_count(const sig_stun_counts_t *c)
{
    if (c->requests != 0)
        mm_counter_add(sig__stun.requests, c->requests);
    if (c->responses != 0)
        mm_counter_add(sig__stun.responses, c->responses);
    if (c->malformed != 0)
        mm_counter_add(sig__stun.malformed, c->malformed);
    if (c->not_binding != 0)
        mm_counter_add(sig__stun.not_binding, c->not_binding);
    if (c->rate_limited != 0)
        mm_counter_add(sig__stun.rate_limited, c->rate_limited);
    if (c->unsupported != 0)
        mm_counter_add(sig__stun.unsupported, c->unsupported);
    if (c->send_failed != 0)
        mm_counter_add(sig__stun.send_failed, c->send_failed);
}

static void sig_stun_on_readable(h2o_socket_t *sock, const char *errstr)
{
    sig_stun_listener_t *l = sock->data;
    sig_stun_thread_t *t = l->owner;
    sig_stun_counts_t counts = {0};
    uint64_t now_ms = mm_mono_ms();
    size_t j;
    int round, n, i;

    for (round = 0; round != SIG_STUN_ROUNDS; ++round) {
        for (i = 0; i != SIG_STUN_BATCH; ++i) {
            t->in_iov[i] = (struct iovec){.iov_base = t->in_buf[i], .iov_len = sizeof(t->in_buf[i])};
            t->in[i].msg_hdr = (struct msghdr){.msg_name = &t->in_addr[i],
                                               .msg_namelen = sizeof(t->in_addr[i]),
                                               .msg_iov = &t->in_iov[i],
                                               .msg_iovlen = 1,
                                               .msg_control = l->pktinfo ? t->in_ctl[i].bytes : NULL,
                                               .msg_controllen = l->pktinfo ? sizeof(t->in_ctl[i].bytes) : 0};
        }
        n = recvmmsg(l->fd, t->in, SIG_STUN_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && now_ms - t->last_error_log_ms >= 60000) {
                t->last_error_log_ms = now_ms;
                mm_warn("STUN: recvmmsg on port %u: %s", l->port, strerror(errno));
            }
            break;
        }
        counts.requests += (unsigned)n;
        for (i = 0; i != n; ++i)
            sig_stun_handle(l, (unsigned)i, now_ms, &counts);
        for (j = 0; j != t->nlisteners; ++j)
            if (t->listeners[j].out.n != 0)
                sig_stun_flush(&t->listeners[j], &counts);
        if (n < SIG_STUN_BATCH)
            break;
    }
    sig_stun_count(&counts);
}

/* ---- start and stop ------------------------------------------------------------ */

/* The shared state, on the first start (with the lock held). The ports
 * are probed without SO_REUSEPORT first: a port that another process
 * already holds, even with SO_REUSEPORT, makes the start fail instead of
 * silently sharing its traffic. */
static int sig_stun_first(const sig_config_t *conf, const struct sockaddr_storage *ss, socklen_t sslen, const uint16_t *ports,
                          size_t nports, mm_err_t *err)
{
    struct sockaddr_storage probe = *ss;
    size_t i;
    int fd;

    for (i = 0; i != nports; ++i) {
        ((struct sockaddr_in *)&probe)->sin_port = htons(ports[i]); /* same offset in sockaddr_in6 */
        if ((fd = sig_stun_open(&probe, sslen, 0, 0, err)) < 0)
            return -1;
        close(fd);
    }
    if (conf->stun_rate > 0)
        sig__stun.rl = mm_ratelimit_new((double)conf->stun_rate, (double)conf->stun_burst, SIG_STUN_RL_KEYS);
    sig__stun.requests = mm_metrics_counter("mm_stun_requests_total", "STUN datagrams received", NULL);
    sig__stun.responses =
        mm_metrics_counter("mm_stun_responses_total", "STUN responses sent (Binding success and 420 errors)", NULL);
#define SIG_DROPPED(field, reason)                                                                                                 \
    sig__stun.field = mm_metrics_counter("mm_stun_dropped_total", "STUN datagrams dropped without an answer, by reason",           \
                                         "reason=\"" reason "\"")
    SIG_DROPPED(malformed, "malformed");
    SIG_DROPPED(not_binding, "not_binding");
    SIG_DROPPED(rate_limited, "rate_limited");
    SIG_DROPPED(unsupported, "unsupported");
    SIG_DROPPED(send_failed, "send_failed");
#undef SIG_DROPPED
    if (nports > 1)
        mm_info("STUN responder on UDP %s ports %u and %u, %lld threads, %s", conf->stun_addr, ports[0], ports[1],
                (long long)conf->threads, conf->stun_rate > 0 ? "rate-limited per source IP" : "no rate limit");
    else
        mm_info("STUN responder on UDP %s port %u, %lld threads, %s", conf->stun_addr, ports[0], (long long)conf->threads,
                conf->stun_rate > 0 ? "rate-limited per source IP" : "no rate limit");
    return 0;
}

int sig_stun_start(mm_thread_t *thread, const sig_config_t *conf, mm_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    uint16_t ports[2];
    size_t nports = 1, i;
    sig_stun_thread_t *t = NULL;
    int rc = -1, wildcard;

    ports[0] = (uint16_t)conf->stun_port;
    if (conf->stun_alt_port != 0) {
        if (conf->stun_alt_port == conf->stun_port) {
            mm_err_set(err, "MM_STUN_ALT_PORT must differ from MM_STUN_PORT (or be 0 to turn it off)");
            return -1;
        }
        ports[nports++] = (uint16_t)conf->stun_alt_port;
    }
    if (sig_stun_parse_addr(conf->stun_addr, ports[0], &ss, &sslen) != 0) {
        mm_err_set(err, "MM_STUN_ADDR \"%s\" is not an IP address", conf->stun_addr != NULL ? conf->stun_addr : "");
        return -1;
    }
    wildcard = sig_stun_is_wildcard(&ss);
    if (wildcard && ss.ss_family == AF_INET6) {
        /* a host (or container) without IPv6: the default :: becomes 0.0.0.0 */
        int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            close(fd);
        } else if (errno == EAFNOSUPPORT) {
            if (thread->index == 0)
                mm_warn("STUN: no IPv6 on this host, answering IPv4 only");
            sig_stun_parse_addr("0.0.0.0", ports[0], &ss, &sslen);
        }
    }

    pthread_mutex_lock(&sig__stun.lock);
    if (sig__stun.refs == 0 && sig_stun_first(conf, &ss, sslen, ports, nports, err) != 0)
        goto out;
    t = mm_xcalloc(1, sizeof(*t));
    for (i = 0; i != nports; ++i) {
        sig_stun_listener_t *l = &t->listeners[i];

        ((struct sockaddr_in *)&ss)->sin_port = htons(ports[i]);
        if ((l->fd = sig_stun_open(&ss, sslen, 1, wildcard, err)) < 0)
            goto out;
        l->owner = t;
        l->pktinfo = wildcard;
        l->port = ports[i];
        t->nlisteners = i + 1;
    }
    if (nports == 2) {
        t->listeners[0].other = &t->listeners[1];
        t->listeners[1].other = &t->listeners[0];
    }
    for (i = 0; i != t->nlisteners; ++i) {
        sig_stun_listener_t *l = &t->listeners[i];

        l->sock = h2o_evloop_socket_create(thread->loop, l->fd, H2O_SOCKET_FLAG_DONT_READ); /* owns the fd from now on */
        l->sock->data = l;
        h2o_socket_read_start(l->sock, sig_stun_on_readable);
    }
    ++sig__stun.refs;
    sig__stun_self = t;
    rc = 0;
out:
    if (rc != 0 && t != NULL) {
        for (i = 0; i != t->nlisteners; ++i)
            close(t->listeners[i].fd);
        free(t);
    }
    if (rc != 0 && sig__stun.refs == 0) {
        mm_ratelimit_free(sig__stun.rl);
        sig__stun.rl = NULL;
    }
    pthread_mutex_unlock(&sig__stun.lock);
    return rc;
}

void sig_stun_stop(mm_thread_t *thread)
{
    sig_stun_thread_t *t = sig__stun_self;
    size_t i;

    if (t == NULL)
        return;
    for (i = 0; i != t->nlisteners; ++i)
        h2o_socket_close(t->listeners[i].sock); /* closes the fd; h2o frees the struct later */
    free(t);
    sig__stun_self = NULL;
    pthread_mutex_lock(&sig__stun.lock);
    if (--sig__stun.refs == 0) {
        mm_ratelimit_free(sig__stun.rl);
        sig__stun.rl = NULL;
    }
    pthread_mutex_unlock(&sig__stun.lock);
}
