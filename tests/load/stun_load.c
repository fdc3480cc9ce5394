/*
 * stun_load: a UDP load generator for STUN Binding responders (any of
 * them: mm-signal, coturn, ...), built by `make` into build/tests/stun_load.
 *
 *   stun_load [options] HOST PORT
 *     -c N     client sockets (default 16), each with its own source port
 *     -d SECS  how long to send (default 5; replies are awaited 0.3 s more)
 *     -r RATE  requests per second over all sockets (default 0 = as fast as
 *              the window allows)
 *     -w N     outstanding requests per socket (default 64)
 *     -b N     requests per sendmmsg() (default 32)
 *     -m       minimal 20-byte requests (default: 28 bytes, with FINGERPRINT)
 *     -p SECS  probe: send one request every 100 ms until one valid answer
 *              comes (exit 0) or SECS pass (exit 1); for readiness checks
 *
 * One thread, N connected UDP sockets (so the kernel filters strangers
 * out), requests out with sendmmsg() and answers in with recvmmsg(). A
 * response counts as valid only when it parses as a well-formed STUN
 * message (FINGERPRINT checked when present), is a Binding success, carries
 * the transaction id of a request of this run that is still outstanding on
 * that socket (each is counted once), and maps exactly to the socket's own
 * address and port. Requests unanswered after 200 ms count as lost and free
 * their window slot.
 *
 * Prints one line: `stun_load: sent=N valid=N invalid=N lost=N secs=S rps=R`
 * (rps = valid responses per second of sending time).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "mm/base.h"
#include "mm/stun.h"

#define LOAD_MAX_SOCKETS 256
#define LOAD_MAX_WINDOW 4096
#define LOAD_MAX_BATCH 64
#define LOAD_TIMEOUT_NS 200000000LL
#define LOAD_DRAIN_NS 300000000LL

typedef struct load_slot {
    uint64_t seq;
    int64_t sent_ns;
    int answered;
} load_slot_t;

typedef struct load_sock {
    int fd;
    mm_addr_t local;
    uint64_t head, tail; /* sequence numbers: [tail, head) are outstanding */
    load_slot_t *ring;   /* window entries, indexed by seq % window */
} load_sock_t;

static struct {
    int nsocks, window, batch, minimal;
    double secs, rate, probe;
    uint8_t nonce[4];
    uint64_t sent, valid, invalid, lost;
} g = {.nsocks = 16, .window = 64, .batch = 32, .secs = 5};

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr, "usage: stun_load [-c sockets] [-d secs] [-r rate] [-w window] [-b batch] [-m] [-p secs] HOST PORT\n");
    exit(2);
}

static void txid_of(uint64_t seq, uint8_t txid[12])
{
    memcpy(txid, &seq, 8);
    memcpy(txid + 8, g.nonce, 4);
}

static size_t make_request(uint64_t seq, uint8_t *buf, size_t size)
{
    uint8_t txid[12];
    mm_stun_builder_t b;
    ssize_t n;

    txid_of(seq, txid);
    if (g.minimal) {
        if (mm_stun_builder_init(&b, buf, size, MM_STUN_BINDING_REQUEST, txid, 0) != 0)
            abort();
        return b.len;
    }
    if ((n = mm_stun_encode_binding_request(txid, NULL, 0, buf, size)) < 0)
        abort();
    return (size_t)n;
}

static int open_socket(const struct addrinfo *ai, load_sock_t *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int size = 4 * 1024 * 1024;

    memset(s, 0, sizeof(*s));
    if ((s->fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    (void)setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    (void)setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    if (connect(s->fd, ai->ai_addr, ai->ai_addrlen) != 0 || getsockname(s->fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    s->local.family = ss.ss_family;
    if (ss.ss_family == AF_INET) {
        memcpy(s->local.ip, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        s->local.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
        memcpy(s->local.ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        s->local.port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    s->ring = mm_xcalloc((size_t)g.window, sizeof(*s->ring));
    return 0;
}

/* Sends up to `n` new requests on `s`; returns how many left. */
static int send_some(load_sock_t *s, int n, int64_t now)
{
    static uint8_t bufs[LOAD_MAX_BATCH][64];
    struct mmsghdr msgs[LOAD_MAX_BATCH];
    struct iovec iov[LOAD_MAX_BATCH];
    int i, r;

    if (n > g.batch)
        n = g.batch;
    if (n > (int)((uint64_t)g.window - (s->head - s->tail)))
        n = (int)((uint64_t)g.window - (s->head - s->tail));
    for (i = 0; i < n; ++i) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = make_request(s->head + (uint64_t)i, bufs[i], sizeof(bufs[i]));
        memset(&msgs[i], 0, sizeof(msgs[i]));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (n <= 0)
        return 0;
    r = sendmmsg(s->fd, msgs, (unsigned)n, MSG_DONTWAIT);
    if (r < 0) {
        if (errno == EAGAIN || errno == ENOBUFS || errno == ECONNREFUSED || errno == EINTR)
            return 0;
        perror("stun_load: sendmmsg");
        exit(1);
    }
    for (i = 0; i < r; ++i) {
        load_slot_t *slot = &s->ring[(s->head + (uint64_t)i) % (uint64_t)g.window];
        *slot = (load_slot_t){.seq = s->head + (uint64_t)i, .sent_ns = now};
    }
    s->head += (uint64_t)r;
    g.sent += (uint64_t)r;
    return r;
}

static void check_response(load_sock_t *s, const uint8_t *buf, size_t len)
{
    mm_stun_msg_t m;
    mm_addr_t mapped;
    load_slot_t *slot;
    uint64_t seq;

    if (mm_stun_parse(buf, len, &m) != 0 || m.classic || m.type != MM_STUN_BINDING_SUCCESS || memcmp(m.txid + 8, g.nonce, 4) != 0)
        goto bad;
    memcpy(&seq, m.txid, 8);
    if (seq < s->tail || seq >= s->head)
        goto bad; /* not outstanding (late, duplicated or made up) */
    slot = &s->ring[seq % (uint64_t)g.window];
    if (slot->seq != seq || slot->answered)
        goto bad;
    if (mm_stun_mapped_address(&m, &mapped) != 0 || mapped.family != s->local.family || mapped.port != s->local.port ||
        memcmp(mapped.ip, s->local.ip, mapped.family == AF_INET ? 4 : 16) != 0)
        goto bad;
    slot->answered = 1;
    ++g.valid;
    return;
bad:
    ++g.invalid;
}

static void receive_all(load_sock_t *s)
{
    static uint8_t bufs[LOAD_MAX_BATCH][1500];
    struct mmsghdr msgs[LOAD_MAX_BATCH];
    struct iovec iov[LOAD_MAX_BATCH];
    int i, r;

    for (;;) {
        for (i = 0; i != LOAD_MAX_BATCH; ++i) {
            iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof(bufs[i])};
            memset(&msgs[i], 0, sizeof(msgs[i]));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        r = recvmmsg(s->fd, msgs, LOAD_MAX_BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0)
            return; /* EAGAIN, or ECONNREFUSED from an ICMP port unreachable: nothing to count */
        for (i = 0; i != r; ++i) {
            if ((msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0)
                ++g.invalid;
            else
                check_response(s, bufs[i], msgs[i].msg_len);
        }
        if (r < LOAD_MAX_BATCH)
            return;
    }
}

/* Frees the window from the oldest end: answered requests, and those
 * unanswered after the timeout (counted as lost). */
static void advance(load_sock_t *s, int64_t now, int all)
{
    while (s->tail < s->head) {
        load_slot_t *slot = &s->ring[s->tail % (uint64_t)g.window];
        if (!slot->answered) {
            if (!all && now - slot->sent_ns < LOAD_TIMEOUT_NS)
                break;
            ++g.lost;
        }
        ++s->tail;
    }
}

int main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai = NULL;
    load_sock_t *socks;
    struct pollfd *pfds;
    int64_t start, end, now, next_probe = 0;
    int c, i, rc;

    while ((c = getopt(argc, argv, "c:d:r:w:b:mp:")) != -1) {
        switch (c) {
        case 'c':
            g.nsocks = (int)strtol(optarg, NULL, 10);
            break;
        case 'd':
            g.secs = strtod(optarg, NULL);
            break;
        case 'r':
            g.rate = strtod(optarg, NULL);
            break;
        case 'w':
            g.window = (int)strtol(optarg, NULL, 10);
            break;
        case 'b':
            g.batch = (int)strtol(optarg, NULL, 10);
            break;
        case 'm':
            g.minimal = 1;
            break;
        case 'p':
            g.probe = strtod(optarg, NULL);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 2 || g.nsocks < 1 || g.nsocks > LOAD_MAX_SOCKETS || g.window < 1 || g.window > LOAD_MAX_WINDOW ||
        g.batch < 1 || g.batch > LOAD_MAX_BATCH || !(g.secs > 0) || g.rate < 0)
        usage();
    if ((rc = getaddrinfo(argv[optind], argv[optind + 1], &hints, &ai)) != 0) {
        fprintf(stderr, "stun_load: %s %s: %s\n", argv[optind], argv[optind + 1], gai_strerror(rc));
        return 2;
    }
    mm_random_bytes(g.nonce, sizeof(g.nonce));
    if (g.probe > 0) {
        g.nsocks = 1;
        g.window = 64;
    }
    socks = mm_xcalloc((size_t)g.nsocks, sizeof(*socks));
    pfds = mm_xcalloc((size_t)g.nsocks, sizeof(*pfds));
    for (i = 0; i != g.nsocks; ++i) {
        if (open_socket(ai, &socks[i]) != 0) {
            perror("stun_load: socket");
            return 2;
        }
        pfds[i] = (struct pollfd){.fd = socks[i].fd, .events = POLLIN};
    }
    freeaddrinfo(ai);

    if (g.probe > 0) {
        end = now_ns() + (int64_t)(g.probe * 1e9);
        while ((now = now_ns()) < end && g.valid == 0) {
            if (now >= next_probe) {
                advance(&socks[0], now, 0);
                send_some(&socks[0], 1, now);
                next_probe = now + 100000000LL;
            }
            if (poll(pfds, 1, 20) > 0)
                receive_all(&socks[0]);
        }
        return g.valid > 0 ? 0 : 1;
    }

    start = now_ns();
    end = start + (int64_t)(g.secs * 1e9);
    for (;;) {
        int64_t budget = -1;

        now = now_ns();
        if (now >= end)
            break;
        if (g.rate > 0)
            budget = (int64_t)((double)(now - start) * g.rate / 1e9) - (int64_t)g.sent;
        for (i = 0; i != g.nsocks && budget != 0; ++i) {
            int want = budget < 0 || budget > g.batch ? g.batch : (int)budget;
            int r = send_some(&socks[i], want, now);
            if (budget > 0)
                budget -= r;
        }
        if (poll(pfds, (nfds_t)g.nsocks, g.rate > 0 ? 1 : 5) > 0)
            for (i = 0; i != g.nsocks; ++i)
                if (pfds[i].revents != 0)
                    receive_all(&socks[i]);
        now = now_ns();
        for (i = 0; i != g.nsocks; ++i)
            advance(&socks[i], now, 0);
    }
    /* late answers to requests still in their 200 ms still count */
    end = now_ns() + LOAD_DRAIN_NS;
    while ((now = now_ns()) < end) {
        if (poll(pfds, (nfds_t)g.nsocks, 10) > 0)
            for (i = 0; i != g.nsocks; ++i)
                if (pfds[i].revents != 0)
                    receive_all(&socks[i]);
    }
    for (i = 0; i != g.nsocks; ++i) {
        advance(&socks[i], now, 1);
        close(socks[i].fd);
        free(socks[i].ring);
    }
    printf("stun_load: sent=%llu valid=%llu invalid=%llu lost=%llu secs=%.2f rps=%.0f\n", (unsigned long long)g.sent,
           (unsigned long long)g.valid, (unsigned long long)g.invalid, (unsigned long long)g.lost, g.secs,
           (double)g.valid / g.secs);
    free(socks);
    free(pfds);
    return 0;
}
