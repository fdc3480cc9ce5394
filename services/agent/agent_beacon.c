/*
 * The broadcast of mm up, on a thread of its own with blocking libcurl
 * calls (the peer server's loops never wait for the server):
 *
 *   register -> ready -> heartbeat every heartbeat_interval ...
 *   - a heartbeat answered 404 not_broadcasting (expired, stopped, or the
 *     server lost it) sends ready again;
 *   - the machine's addresses are read every 5 s; a change sends ready;
 *   - while the server is unreachable (no answer, 429, 5xx) the step is
 *     retried after 1, 2, 4 ... 30 s, each delay drawn from its upper half
 *     (jitter: a crowd that lost the server together does not return together);
 *   - an answer that retrying cannot fix (email_taken, a refused
 *     certificate) ends mm up with exit status 1;
 *   - on the way out, stop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mm/log.h"
#include "agent_up.h"

#define AGENT_BACKOFF_MIN_MS 1000
#define AGENT_BACKOFF_MAX_MS 30000
#define AGENT_ADDR_CHECK_MS 5000
#define AGENT_BOOTSTRAP_RETRY_MS (5 * 60 * 1000)

typedef enum { AGENT_B_OK, AGENT_B_RETRY, AGENT_B_FATAL, AGENT_B_READY, AGENT_B_REGISTER, AGENT_B_STOP } agent_b_result_t;
typedef enum { AGENT_PHASE_REGISTER, AGENT_PHASE_READY, AGENT_PHASE_LIVE } agent_phase_t;

struct agent_beacon {
    agent_up_t *up;
    agent_api_t *api;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    int broadcasting; /* a ready was answered since the start */
    int unreachable;  /* in an outage */
    uint64_t retry_after_ms;
    uint64_t backoff_ms;
    uint64_t interval_ms, next_hb, next_addr, next_boot, boot_backoff_ms;
    int boot_live;
    char addrs[AGENT_MAX_ADDRS][64];
    size_t naddrs;
    agent_err_t err;
};

/* Waits `ms` or until stopped; returns 1 when stopping. */
static int agent_beacon_sleep(agent_beacon_t *b, uint64_t ms)
{
    struct timespec ts;
    int stopping;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->mu);
    while (!b->stopping && pthread_cond_timedwait(&b->cv, &b->mu, &ts) != ETIMEDOUT)
        ;
    stopping = b->stopping;
    pthread_mutex_unlock(&b->mu);
    return stopping;
}

static int agent_beacon_is_stopping(agent_beacon_t *b)
{
    int s;

    pthread_mutex_lock(&b->mu);
    s = b->stopping;
    pthread_mutex_unlock(&b->mu);
    return s;
}

static int agent_beacon_abort(void *data)
{
    return agent_beacon_is_stopping(data);
}

/* The addresses to announce: --advertise, else the interfaces'. Returns the count. */
static size_t agent_beacon_addrs(agent_beacon_t *b, char out[][64])
{
    agent_iface_t ifs[AGENT_MAX_ADDRS];
    char ip[INET6_ADDRSTRLEN];
    size_t i, n;
    int r;

    if (b->up->nadvertise != 0) {
        for (i = 0; i != b->up->nadvertise; ++i) {
            if (b->up->advertise[i].port != 0)
                agent_addr_str(&b->up->advertise[i], out[i]);
            else
                snprintf(out[i], 64, "%s", mm_addr_ip_string(&b->up->advertise[i], ip));
        }
        return b->up->nadvertise;
    }
    if ((r = agent_addrs_list(ifs, AGENT_MAX_ADDRS, 0)) < 0) {
        mm_warn("getifaddrs: %s", strerror(-r));
        return 0;
    }
    for (n = 0; n != (size_t)r; ++n)
        snprintf(out[n], 64, "%s", mm_addr_ip_string(&ifs[n].addr, ip));
    return n;
}

/* Sorts out an answer that is not the expected success. */
static agent_b_result_t agent_beacon_failed(agent_beacon_t *b, const agent_reply_t *r, const char *what)
{
    if (r->status == 429 || r->status >= 500) {
        b->retry_after_ms = (uint64_t)(r->retry_after > 0 ? r->retry_after : 0) * 1000;
        agent_err_set(&b->err, "server_unavailable", "%s: the server answered %ld %s", what, r->status, r->error);
        return AGENT_B_RETRY;
    }
    if (r->error != NULL && strcmp(r->error, "not_registered") == 0)
        return AGENT_B_REGISTER;
    agent_api_error(r, &b->err);
    return AGENT_B_FATAL;
}

/* A request; RETRY when no answer came (except an untrusted server: that needs the user). */
static agent_b_result_t agent_beacon_call(agent_beacon_t *b, const char *path, json_t *body, agent_reply_t *r)
{
    if (agent_api_call(b->api, "POST", path, body, r, &b->err) != 0) {
        if (strcmp(b->err.code, "cancelled") == 0)
            return AGENT_B_STOP;
        return strcmp(b->err.code, "server_unreachable") == 0 ? AGENT_B_RETRY : AGENT_B_FATAL;
    }
    return AGENT_B_OK;
}

static agent_b_result_t agent_beacon_register(agent_beacon_t *b)
{
    agent_conf_t *c = &b->up->conf;
    json_t *body = json_pack("{s:s}", "email", c->email);
    agent_reply_t r;
    agent_b_result_t res;

    if (c->name[0] != '\0')
        json_object_set_new(body, "display_name", json_string(c->name));
    if ((res = agent_beacon_call(b, "/api/relay/register", body, &r)) == AGENT_B_OK) {
        if (r.status == 200 || r.status == 201)
            mm_info("registered %s (%s)", c->email, r.status == 201 ? "new" : "known");
        else
            res = agent_beacon_failed(b, &r, "register");
        agent_reply_clear(&r);
    }
    json_decref(body);
    return res == AGENT_B_REGISTER ? AGENT_B_FATAL : res;
}

static agent_b_result_t agent_beacon_ready(agent_beacon_t *b)
{
    char addrs[AGENT_MAX_ADDRS][64];
    size_t n = agent_beacon_addrs(b, addrs), i;
    json_t *list = json_array(), *body;
    agent_reply_t r;
    agent_b_result_t res;
    double interval;

    for (i = 0; i != n; ++i)
        json_array_append_new(list, json_string(addrs[i]));
    body = json_pack("{s:i,s:O}", "port", (int)b->up->port, "addresses", list);
    if ((res = agent_beacon_call(b, "/api/relay/broadcast/ready", body, &r)) == AGENT_B_OK) {
        if (r.status == 200 && json_is_object(r.body)) {
            const char *observed = json_string_value(json_object_get(r.body, "observed_address"));
            interval = json_number_value(json_object_get(r.body, "heartbeat_interval"));
            b->interval_ms = interval >= 0.2 ? (uint64_t)(interval * 1000) : 1000; /* 0 or absent: 1 s */
            b->next_hb = mm_mono_ms() + b->interval_ms;
            memcpy(b->addrs, addrs, sizeof(addrs));
            b->naddrs = n;
            agent_out_event("online",
                            json_pack("{s:O,s:s?,s:f,s:O?,s:i}", "addresses", list, "observed_address", observed,
                                      "heartbeat_interval", interval, "expires_in", json_object_get(r.body, "expires_in"), "port",
                                      (int)b->up->port),
                            "Online as %s on port %u (%zu address%s, seen from %s); heartbeat every %.0f s", b->up->conf.email,
                            b->up->port, n, n == 1 ? "" : "es", observed != NULL ? observed : "?", interval);
            b->broadcasting = 1;
            agent_punch_hook_broadcast_live(b->up);
        } else {
            res = agent_beacon_failed(b, &r, "ready");
        }
        agent_reply_clear(&r);
    }
    json_decref(body);
    json_decref(list);
    return res;
}

static agent_b_result_t agent_beacon_heartbeat(agent_beacon_t *b)
{
    agent_reply_t r;
    agent_b_result_t res;

    if ((res = agent_beacon_call(b, "/api/relay/broadcast/heartbeat", NULL, &r)) != AGENT_B_OK)
        return res;
    if (r.status == 200) {
        mm_debug("heartbeat: expires in %lld s", (long long)json_integer_value(json_object_get(r.body, "expires_in")));
        b->next_hb = mm_mono_ms() + b->interval_ms;
    } else if (r.status == 404) {
        agent_out_event("rebroadcast", json_pack("{s:s}", "reason", "not_broadcasting"),
                        "The server no longer had this broadcast (expired or lost): sending ready again");
        res = AGENT_B_READY;
    } else {
        res = agent_beacon_failed(b, &r, "heartbeat");
    }
    agent_reply_clear(&r);
    return res;
}

/* The bootstrap membership: its own slow retries, never in the way of the broadcast. */
static agent_b_result_t agent_beacon_bootstrap(agent_beacon_t *b)
{
    json_t *body = json_pack("{s:i}", "gossip_port", (int)b->up->port);
    agent_reply_t r;
    agent_b_result_t res = agent_beacon_call(b, "/api/bootstrap/register", body, &r);
    int64_t expires;

    json_decref(body);
    if (res != AGENT_B_OK) {
        b->next_boot = mm_mono_ms() + b->boot_backoff_ms;
        return res;
    }
    if (r.status == 200) {
        expires = json_integer_value(json_object_get(r.body, "expires_in"));
        b->next_boot = mm_mono_ms() + (uint64_t)(expires >= 20 ? expires / 2 : 10) * 1000;
        if (!b->boot_live)
            agent_out_event("bootstrap",
                            json_pack("{s:I,s:I}", "expires_in", (json_int_t)expires, "nodes",
                                      (json_int_t)json_array_size(json_object_get(r.body, "nodes"))),
                            "Listed as a bootstrap node (%zu other nodes known)",
                            json_array_size(json_object_get(r.body, "nodes")));
        b->boot_live = 1;
        b->boot_backoff_ms = AGENT_BACKOFF_MIN_MS;
    } else if (r.status == 403 && r.error != NULL && strcmp(r.error, "not_broadcasting") == 0) {
        res = AGENT_B_READY;
    } else {
        agent_api_error(&r, &b->err);
        agent_out_event("bootstrap_failed", json_pack("{s:s,s:s}", "code", b->err.code, "message", b->err.msg),
                        "Not listed as a bootstrap node: %s", b->err.msg);
        b->boot_live = 0;
        b->next_boot = mm_mono_ms() + (r.status == 422 ? AGENT_BOOTSTRAP_RETRY_MS : b->boot_backoff_ms);
        if (b->boot_backoff_ms < AGENT_BOOTSTRAP_RETRY_MS)
            b->boot_backoff_ms *= 2;
    }
    agent_reply_clear(&r);
    return res;
}

/* One step of the live phase: addresses, heartbeat, bootstrap, or a wait. */
static agent_b_result_t agent_beacon_live(agent_beacon_t *b)
{
    uint64_t now = mm_mono_ms(), wake;
    char addrs[AGENT_MAX_ADDRS][64];
    size_t n;

    if (now >= b->next_addr) {
        b->next_addr = now + AGENT_ADDR_CHECK_MS;
        n = agent_beacon_addrs(b, addrs);
        if (n != b->naddrs || memcmp(addrs, b->addrs, n * sizeof(addrs[0])) != 0) {
            agent_out_event("addresses_changed", NULL, "The machine's addresses changed: sending ready again");
            return AGENT_B_READY;
        }
    }
    if (now >= b->next_hb)
        return agent_beacon_heartbeat(b);
    if (b->up->bootstrap && now >= b->next_boot)
        return agent_beacon_bootstrap(b) == AGENT_B_READY ? AGENT_B_READY : AGENT_B_OK;
    wake = b->next_hb < b->next_addr ? b->next_hb : b->next_addr;
    if (b->up->bootstrap && b->next_boot < wake)
        wake = b->next_boot;
    agent_beacon_sleep(b, wake > now ? wake - now : 0);
    return AGENT_B_OK;
}

/* Waits out an outage: 1, 2, 4 ... 30 s, each drawn from [delay/2, delay), at least Retry-After. */
static void agent_beacon_backoff(agent_beacon_t *b)
{
    uint32_t rnd;
    uint64_t wait;

    mm_random_bytes(&rnd, sizeof(rnd));
    wait = b->backoff_ms / 2 + rnd % (b->backoff_ms / 2 + 1);
    if (wait < b->retry_after_ms)
        wait = b->retry_after_ms;
    agent_out_event("server_unreachable", json_pack("{s:s,s:I}", "message", b->err.msg, "retry_in_ms", (json_int_t)wait),
                    "%s; retrying in %.1f s", b->err.msg, (double)wait / 1000);
    b->unreachable = 1;
    b->retry_after_ms = 0;
    if (b->backoff_ms < AGENT_BACKOFF_MAX_MS)
        b->backoff_ms = b->backoff_ms * 2 < AGENT_BACKOFF_MAX_MS ? b->backoff_ms * 2 : AGENT_BACKOFF_MAX_MS;
    agent_beacon_sleep(b, wait);
}

static void agent_beacon_send_stop(agent_beacon_t *b)
{
    agent_reply_t r;
    int told;

    agent_api_set_abort(b->api, NULL, NULL);
    agent_api_set_timeout(b->api, 3000);
    told = agent_api_call(b->api, "POST", "/api/relay/broadcast/stop", NULL, &r, &b->err) == 0 && r.status == 200;
    if (!told)
        mm_warn("could not tell the server to stop the broadcast (%s); it expires with its TTL",
                r.status != 0 ? (r.error != NULL ? r.error : "error") : b->err.msg);
    agent_reply_clear(&r);
    agent_out_event("stopped", json_pack("{s:b}", "server_told", told), "Stopped%s",
                    told ? ": no longer broadcasting" : " (the server could not be told; the broadcast expires with its TTL)");
}

static void *agent_beacon_main(void *arg)
{
    agent_beacon_t *b = arg;
    agent_phase_t phase = AGENT_PHASE_REGISTER;
    agent_b_result_t res;

    while (!agent_beacon_is_stopping(b)) {
        switch (phase) {
        case AGENT_PHASE_REGISTER:
            res = agent_beacon_register(b);
            break;
        case AGENT_PHASE_READY:
            res = agent_beacon_ready(b);
            break;
        default:
            res = agent_beacon_live(b);
            break;
        }
        switch (res) {
        case AGENT_B_OK:
            if (b->unreachable && phase == AGENT_PHASE_LIVE)
                agent_out_event("server_reachable", NULL, "The server answers again");
            b->unreachable = 0;
            b->backoff_ms = AGENT_BACKOFF_MIN_MS;
            if (phase != AGENT_PHASE_LIVE) {
                b->next_addr = mm_mono_ms() + AGENT_ADDR_CHECK_MS;
                phase = phase == AGENT_PHASE_REGISTER ? AGENT_PHASE_READY : AGENT_PHASE_LIVE;
            }
            break;
        case AGENT_B_READY:
            phase = AGENT_PHASE_READY;
            break;
        case AGENT_B_REGISTER:
            phase = AGENT_PHASE_REGISTER;
            break;
        case AGENT_B_RETRY:
            agent_beacon_backoff(b);
            break;
        case AGENT_B_STOP:
            goto out;
        case AGENT_B_FATAL:
            agent_out_error(&b->err);
            atomic_store(&b->up->exit_code, AGENT_EXIT_ERROR);
            mm_server_stop(b->up->server);
            goto out;
        }
    }
out:
    if (b->broadcasting)
        agent_beacon_send_stop(b);
    return NULL;
}

agent_beacon_t *agent_beacon_start(agent_up_t *up, agent_err_t *err)
{
    agent_beacon_t *b = mm_xcalloc(1, sizeof(*b));
    pthread_condattr_t ca;

    b->up = up;
    b->backoff_ms = AGENT_BACKOFF_MIN_MS;
    b->boot_backoff_ms = AGENT_BACKOFF_MIN_MS;
    if ((b->api = agent_api_new(&up->conf, err)) == NULL) {
        free(b);
        return NULL;
    }
    agent_api_set_timeout(b->api, 10000);
    agent_api_set_abort(b->api, agent_beacon_abort, b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->tid, NULL, agent_beacon_main, b) != 0) {
        agent_err_set(err, "internal", "cannot start a thread");
        agent_api_free(b->api);
        free(b);
        return NULL;
    }
    return b;
}

void agent_beacon_stop(agent_beacon_t *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->tid, NULL);
    agent_api_free(b->api);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
