/*
 * mm connect: reaching a peer directly, Happy Eyeballs style (RFC 8305).
 *
 * The candidates (ordered by agent_order.c) are tried with nonblocking
 * connects and TLS handshakes driven by poll(2): a new attempt starts every
 * 250 ms without waiting for the earlier ones, or at once when one fails.
 * The first handshake whose certificate's SPKI hashes to the peer_id the
 * tracker gave wins; the others are dropped. A black hole (an address that
 * never answers, or a listener that accepts and stays silent) thus costs
 * 250 ms, not a timeout.
 *
 * The server's certificate is self-signed, so no CA judges it: the peer_id
 * is the check, and it is the whole identity (SPEC §2).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/err.h>
#include "agent.h"

#define AGENT_MAX_CANDS 64

enum { AGENT_ATT_IDLE, AGENT_ATT_CONNECTING, AGENT_ATT_HANDSHAKE, AGENT_ATT_DONE };

typedef struct agent_he_state {
    int fd;
    SSL *ssl;
    int phase;
    short events;
    uint64_t deadline; /* sequential mode */
} agent_he_state_t;

SSL_CTX *agent_tls_client_ctx(const agent_conf_t *conf, agent_err_t *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->paths.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, conf->paths.key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the SPKI hash is checked instead */
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    return ctx;
fail:
    agent_err_set(err, "bad_identity", "cannot use the identity in %s: %s; make a new one with mm init --force",
                  conf->paths.config_dir, ERR_reason_error_string(ERR_get_error()));
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

static void agent_he_fail(agent_attempt_t *a, agent_he_state_t *s, uint64_t now, const char *result, const char *detail)
{
    a->result = result;
    snprintf(a->detail, sizeof(a->detail), "%s", detail);
    a->end_ms = now;
    if (s->ssl != NULL)
        SSL_free(s->ssl);
    if (s->fd >= 0)
        close(s->fd);
    s->ssl = NULL;
    s->fd = -1;
    s->phase = AGENT_ATT_DONE;
}

/* Drives the handshake one step; 1 when it won. */
static int agent_he_handshake(SSL_CTX *ctx, const char *peer_id, agent_attempt_t *a, agent_he_state_t *s, uint64_t now)
{
    char got[MM_PEER_ID_LEN + 1], detail[160];
    X509 *cert;
    int r, e;

    if (s->ssl == NULL) {
        if ((s->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
            agent_he_fail(a, s, now, "tls_failed", "cannot set up TLS");
            return 0;
        }
        SSL_set_connect_state(s->ssl);
        s->phase = AGENT_ATT_HANDSHAKE;
    }
    ERR_clear_error();
    if ((r = SSL_do_handshake(s->ssl)) != 1) {
        e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            s->events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            return 0;
        }
        snprintf(detail, sizeof(detail), "TLS handshake failed: %s",
                 ERR_peek_error() != 0    ? ERR_reason_error_string(ERR_peek_error())
                 : e == SSL_ERROR_SYSCALL ? "connection closed"
                                          : "error");
        ERR_clear_error();
        agent_he_fail(a, s, now, "tls_failed", detail);
        return 0;
    }
    cert = SSL_get0_peer_certificate(s->ssl);
    if (cert == NULL || mm_identity_peer_id(cert, got) != 0) {
        agent_he_fail(a, s, now, "wrong_peer", "no usable certificate");
        return 0;
    }
    if (strcmp(got, peer_id) != 0) {
        snprintf(detail, sizeof(detail), "another key answered (peer_id %.16s...)", got);
        agent_he_fail(a, s, now, "wrong_peer", detail);
        return 0;
    }
    a->result = "verified";
    a->end_ms = now;
    return 1;
}

/* Starts attempt `a`; it may fail at once (no route). */
static void agent_he_start(const agent_cand_t *c, agent_attempt_t *a, agent_he_state_t *s, uint64_t now, const agent_he_opts_t *o)
{
    struct sockaddr_storage ss;
    socklen_t len = mm_addr_to_sockaddr(&c->addr, &ss);

    a->start_ms = now;
    a->result = "pending";
    s->deadline = now + (o->sequential ? o->attempt_timeout_ms : o->timeout_ms);
    if ((s->fd = socket(c->addr.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
        agent_he_fail(a, s, now, "failed", strerror(errno));
        return;
    }
    s->phase = AGENT_ATT_CONNECTING;
    s->events = POLLOUT;
    if (connect(s->fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS)
        agent_he_fail(a, s, now, errno == ECONNREFUSED ? "refused" : "failed", strerror(errno));
}

/* One event (or a timeout) on attempt `i`; 1 when it won. */
static int agent_he_step(SSL_CTX *ctx, const char *peer_id, agent_attempt_t *a, agent_he_state_t *s, uint64_t now)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);

    if (s->phase == AGENT_ATT_CONNECTING) {
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            soerr = errno;
        if (soerr != 0) {
            agent_he_fail(a, s, now, soerr == ECONNREFUSED ? "refused" : "failed", strerror(soerr));
            return 0;
        }
    }
    return agent_he_handshake(ctx, peer_id, a, s, now);
}

int agent_he_connect(SSL_CTX *ctx, const char *peer_id, const agent_cand_t *c, size_t n, const agent_he_opts_t *o,
                     agent_attempt_t *att, agent_err_t *err)
{
    agent_he_state_t st[AGENT_MAX_CANDS];
    struct pollfd pfd[AGENT_MAX_CANDS];
    size_t map[AGENT_MAX_CANDS], i, np, next = 0, active = 0;
    uint64_t t0 = mm_mono_ms(), now, next_start = 0, wait;
    int winner = -1;

    err->code[0] = '\0';
    if (n > AGENT_MAX_CANDS)
        n = AGENT_MAX_CANDS;
    for (i = 0; i != n; ++i) {
        st[i] = (agent_he_state_t){.fd = -1, .phase = AGENT_ATT_IDLE};
        memset(&att[i], 0, sizeof(att[i]));
        agent_addr_str(&c[i].addr, att[i].addr);
        att[i].result = "not_started";
    }
    while (winner < 0) {
        now = mm_mono_ms() - t0;
        if (now >= o->timeout_ms)
            break;
        if (next < n && (active == 0 || (!o->sequential && now >= next_start))) {
            agent_he_start(&c[next], &att[next], &st[next], now, o);
            if (st[next].phase != AGENT_ATT_DONE)
                ++active;
            ++next;
            /* on the 250 ms grid, unless a failure started this one early */
            next_start = (next_start != 0 && now - next_start < o->stagger_ms ? next_start : now) + o->stagger_ms;
            continue;
        }
        if (active == 0)
            break; /* every candidate failed */
        wait = o->timeout_ms - now;
        if (!o->sequential && next < n && next_start - now < wait)
            wait = next_start > now ? next_start - now : 0;
        for (i = 0, np = 0; i != next; ++i) {
            if (st[i].phase == AGENT_ATT_DONE || st[i].phase == AGENT_ATT_IDLE)
                continue;
            if (st[i].deadline <= now) {
                agent_he_fail(&att[i], &st[i], now, "timeout", "no answer in time");
                --active;
                next_start = now;
                continue;
            }
            if (st[i].deadline - now < wait)
                wait = st[i].deadline - now;
            pfd[np] = (struct pollfd){.fd = st[i].fd, .events = st[i].events};
            map[np++] = i;
        }
        if (np == 0)
            continue;
        if (poll(pfd, np, (int)wait) < 0 && errno != EINTR) {
            agent_err_set(err, "internal", "poll: %s", strerror(errno));
            break;
        }
        now = mm_mono_ms() - t0;
        for (i = 0; i != np && winner < 0; ++i) {
            size_t k = map[i];
            if (pfd[i].revents == 0)
                continue;
            if (agent_he_step(ctx, peer_id, &att[k], &st[k], now))
                winner = (int)k;
            else if (st[k].phase == AGENT_ATT_DONE) {
                --active;
                next_start = now; /* a failure starts the next attempt at once */
            }
        }
    }
    now = mm_mono_ms() - t0;
    for (i = 0; i != n; ++i) {
        if ((int)i == winner) {
            SSL_shutdown(st[i].ssl); /* best effort, nonblocking */
            SSL_free(st[i].ssl);
            close(st[i].fd);
        } else if (st[i].phase == AGENT_ATT_CONNECTING || st[i].phase == AGENT_ATT_HANDSHAKE) {
            agent_he_fail(&att[i], &st[i], now, winner >= 0 ? "cancelled" : "timeout",
                          winner >= 0 ? "another address won" : "no answer in time");
        }
    }
    if (winner < 0 && err->code[0] == '\0')
        agent_err_set(err, now >= o->timeout_ms ? "timeout" : "unreachable", "%s", "");
    return winner;
}

/* ---- connect to a peer by email ---- */

void agent_peer_conn_clear(agent_peer_conn_t *pc)
{
    json_decref(pc->attempts);
    pc->attempts = NULL;
}

static json_t *agent_attempts_json(const agent_cand_t *c, const agent_attempt_t *att, size_t n)
{
    json_t *arr = json_array();
    size_t i;

    for (i = 0; i != n; ++i) {
        json_t *a =
            json_pack("{s:s,s:s,s:s}", "address", att[i].addr, "class", agent_class_name(c[i].cls), "result", att[i].result);
        if (strcmp(att[i].result, "not_started") != 0)
            json_object_set_new(a, "start_ms", json_integer((json_int_t)att[i].start_ms));
        if (att[i].end_ms != 0 || strcmp(att[i].result, "verified") == 0)
            json_object_set_new(a, "end_ms", json_integer((json_int_t)att[i].end_ms));
        if (att[i].detail[0] != '\0')
            json_object_set_new(a, "detail", json_string(att[i].detail));
        json_array_append_new(arr, a);
    }
    return arr;
}

int agent_connect_peer(agent_conf_t *conf, const char *email, const agent_he_opts_t *o, agent_peer_conn_t *pc, agent_err_t *err)
{
    agent_cand_t c[AGENT_MAX_CANDS];
    agent_attempt_t att[AGENT_MAX_CANDS];
    agent_iface_t ifs[64];
    agent_api_t *api = NULL;
    json_t *rec = NULL;
    SSL_CTX *ctx = NULL;
    const char *pid;
    char cached[64] = "", summary[512];
    uint64_t t0 = mm_mono_ms(), t1;
    size_t n, i, len;
    int nifs, w, ret = -1;

    memset(pc, 0, sizeof(*pc));
    snprintf(pc->email, sizeof(pc->email), "%s", email);
    if ((ctx = agent_tls_client_ctx(conf, err)) == NULL || (api = agent_api_new(conf, err)) == NULL ||
        agent_api_lookup(api, "email", email, &rec, err) != 0)
        goto out;
    pc->lookup_ms = mm_mono_ms() - t0;
    pid = json_string_value(json_object_get(rec, "peer_id"));
    if (pid == NULL || !mm_peer_id_valid(pid, strlen(pid))) {
        agent_err_set(err, "bad_answer", "the server's record of %s has no valid peer_id", email);
        goto out;
    }
    snprintf(pc->peer_id, sizeof(pc->peer_id), "%s", pid);
    n = agent_order_from_json(rec, c, AGENT_MAX_CANDS);
    nifs = agent_addrs_list(ifs, MM_ARRAY_SIZE(ifs), 1);
    agent_cache_winner_get(&conf->paths, pc->peer_id, cached);
    n = agent_order(c, n, ifs, nifs > 0 ? (size_t)nifs : 0, cached[0] != '\0' ? cached : NULL);
    if (n == 0) {
        agent_err_set(err, "no_address", "the server knows no address of %s that this machine can try", email);
        goto out;
    }
    t1 = mm_mono_ms();
    w = agent_he_connect(ctx, pc->peer_id, c, n, o, att, err);
    pc->connect_ms = mm_mono_ms() - t1;
    pc->attempts = agent_attempts_json(c, att, n);
    if (w < 0) {
        for (i = 0, len = 0; i != n && len < sizeof(summary) - 1; ++i) {
            int k = snprintf(summary + len, sizeof(summary) - len, "%s%s %s", i != 0 ? ", " : "", att[i].addr, att[i].result);
            len += k > 0 ? (size_t)k : 0;
        }
        agent_err_set(err, strcmp(err->code, "timeout") == 0 ? "timeout" : "unreachable",
                      "no address of %s answered with its key within %.1f s (%s): check that mm up runs there and that "
                      "its port is reachable from here",
                      email, (double)pc->connect_ms / 1000, summary);
        goto out;
    }
    snprintf(pc->addr, sizeof(pc->addr), "%s", att[w].addr);
    pc->from_cache = c[w].cls == AGENT_CLASS_CACHED;
    if (agent_cache_winner_put(&conf->paths, pc->peer_id, pc->addr, err) != 0)
        goto out;
    ret = 0;
out:
    json_decref(rec);
    agent_api_free(api);
    SSL_CTX_free(ctx);
    return ret;
}

void agent_he_defaults(agent_he_opts_t *o, const agent_args_t *args)
{
    o->stagger_ms = 250;
    o->timeout_ms = args->timeout_s > 0 ? (uint64_t)(args->timeout_s * 1000) : 10000;
    o->sequential = args->sequential;
    o->attempt_timeout_ms = 2000;
}

int agent_cmd_connect(agent_args_t *args)
{
    agent_conf_t conf;
    agent_peer_conn_t pc;
    agent_he_opts_t o;
    agent_err_t err;
    char email[MM_EMAIL_MAX + 1];
    int rc;

    if (mm_email_normalize(args->pos[0], strlen(args->pos[0]), email) != 0)
        return agent_cli_usage_error(args, "'%s' is not an email address", args->pos[0]);
    if (agent_conf_load(&conf, args->server, &err) != 0)
        return agent_out_error(&err);
    agent_he_defaults(&o, args);
    if (agent_connect_peer(&conf, email, &o, &pc, &err) != 0) {
        rc = agent_out_error(&err);
        agent_peer_conn_clear(&pc);
        return rc;
    }
    agent_out_line("Connected to %s at %s in %llu ms (%s; lookup %llu ms)", email, pc.addr, (unsigned long long)pc.connect_ms,
                   pc.from_cache ? "the cached address" : "Happy Eyeballs", (unsigned long long)pc.lookup_ms);
    rc = agent_out_ok(json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:b,s:s,s:O}", "email", email, "peer_id", pc.peer_id, "address", pc.addr,
                                "ms", (json_int_t)pc.connect_ms, "lookup_ms", (json_int_t)pc.lookup_ms, "total_ms",
                                (json_int_t)(pc.lookup_ms + pc.connect_ms), "from_cache", pc.from_cache, "mode",
                                o.sequential ? "sequential" : "happy_eyeballs", "attempts", pc.attempts));
    agent_peer_conn_clear(&pc);
    return rc;
}
