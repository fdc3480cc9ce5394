/*
 * mm stun: how this machine is seen from outside over UDP.
 * mm punch EMAIL: the offerer's side of a hole punch (SPEC §3.3 steps 1, 4
 * and 5): STUN, offer, wait for the answer, then probe from punch_at,
 * corrected for half the round trip to the server as libp2p's DCUtR does;
 * up to 3 more attempts (a new session each) while time is left, none
 * when a NAT that maps per destination makes a direct path impossible.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mm/log.h"
#include "agent_punch.h"

#define AGENT_PUNCH_ATTEMPTS 4          /* the first and up to 3 retries */
#define AGENT_PUNCH_DEADLINE_MS 28000   /* the whole command (--timeout), under the 30 s it promises */
#define AGENT_PUNCH_ANSWER_WAIT_MS 8000 /* an online peer's mm up answers in milliseconds */
#define AGENT_PUNCH_STUN_MS 3000
#define AGENT_PUNCH_CALL_MS 10000 /* one request to the server, at most (and never past the deadline) */
#define AGENT_PUNCH_LINGER_MS 300 /* after winning, answer the other side's probes so it wins too */

static const char AGENT_SYMMETRIC_OURS[] =
    "this machine's NAT maps per destination (symmetric): the peer cannot reach the address STUN saw; no direct path";
static const char AGENT_SYMMETRIC_PEER[] = "the peer's NAT maps per destination (symmetric); no direct path";

static uint64_t agent_min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Milliseconds left before `deadline`, at least 1. */
static long agent_left(uint64_t deadline)
{
    uint64_t now = mm_mono_ms();

    return now + 1 < deadline ? (long)(deadline - now) : 1;
}

static json_t *agent_mapping_json(const agent_mapping_t *m, const agent_stun_target_t *t)
{
    char l[64], a[64], b[64];

    return json_pack("{s:s,s:s,s:s?,s:s?,s:s,s:f}", "local", agent_addr_str(&m->local, l), "mapped", agent_addr_str(&m->mapped, a),
                     "mapped_alt", m->mapped_alt.family != 0 ? agent_addr_str(&m->mapped_alt, b) : NULL, "nat_mapping",
                     m->nat_mapping, "stun", t->text, "rtt_ms", m->rtt_ms);
}

int agent_cmd_stun(agent_args_t *args)
{
    agent_stun_target_t t;
    agent_mapping_t m;
    agent_conf_t conf;
    agent_err_t err;
    char a[64];
    int fd;

    if (agent_conf_load(&conf, args->server, &err) != 0 || agent_stun_target(&conf, args->stun, args->stun_alt, &t, &err) != 0 ||
        (fd = agent_udp_open(t.server.family, &err)) < 0)
        return agent_out_error(&err);
    if (agent_stun_map(fd, &t, mm_mono_ms() + AGENT_PUNCH_STUN_MS, &m, &err) != 0) {
        close(fd);
        return agent_out_error(&err);
    }
    close(fd);
    agent_out_line("Public address %s (seen by mm-signal's STUN at %s, %.1f ms)", agent_addr_str(&m.mapped, a), t.text, m.rtt_ms);
    if (m.nat_mapping == NULL)
        agent_out_line("NAT mapping: unknown (the second STUN port, %u, did not answer)", t.alt_port);
    else if (strcmp(m.nat_mapping, "endpoint-independent") == 0)
        agent_out_line("NAT mapping: endpoint-independent (the same public port toward both STUN ports): hole punching can work");
    else
        agent_out_line("NAT mapping: address-dependent (a new public port per destination, a \"symmetric\" NAT): "
                       "hole punching cannot work from here");
    return agent_out_ok(agent_mapping_json(&m, &t));
}

/* What one attempt learned, for the next one and for the report. */
typedef struct agent_punch_try {
    agent_mapping_t mapping;
    char session_id[64];
    char peer_id[MM_PEER_ID_LEN + 1];
    char peer_nat[32]; /* the peer's nat_mapping, "" when it did not say */
    /* monotonic ms: the attempt began, STUN answered, the offer was
     * accepted, the answer arrived, probing started */
    uint64_t begun, mapped_at, offered_at, answered_at, start;
    agent_punch_t punch;
} agent_punch_try_t;

/* Step 1: the offer. 0 with the session id, or -1 with err. */
static int agent_punch_offer(agent_api_t *api, const char *email, agent_punch_try_t *t, uint64_t deadline, agent_err_t *err)
{
    json_t *body = json_pack("{s:s,s:o}", "to", email, "candidates", agent_punch_candidates(&t->mapping));
    agent_reply_t r;
    int rc = -1;

    if (t->mapping.nat_mapping != NULL)
        json_object_set_new(body, "nat_mapping", json_string(t->mapping.nat_mapping));
    agent_api_set_timeout(api, (long)agent_min_u64((uint64_t)agent_left(deadline), AGENT_PUNCH_CALL_MS));
    if (agent_api_call(api, "POST", "/api/signal/offer", body, &r, err) != 0) {
        json_decref(body);
        return -1;
    }
    json_decref(body);
    if (r.status == 201 && json_is_string(json_object_get(r.body, "session_id"))) {
        snprintf(t->session_id, sizeof(t->session_id), "%s", json_string_value(json_object_get(r.body, "session_id")));
        rc = 0;
    } else if (r.status == 404) {
        agent_err_set(err, "not_found", "%s is not online (unknown, or not broadcasting): ask them to run mm up", email);
    } else if (r.status == 429 && r.error != NULL && strcmp(r.error, "rate_limited") != 0) {
        agent_err_set(err, r.error, "%s has too many hole punches waiting: retry in %ld s", email,
                      r.retry_after > 0 ? r.retry_after : 1);
    } else {
        agent_api_error(&r, err);
    }
    agent_reply_clear(&r);
    return rc;
}

/* Step 4: waits for the answer until `until`; 0 with the answer (a new
 * reference) and the time it arrived, or -1 with err. */
static int agent_punch_wait_answer(agent_api_t *api, const char *email, agent_punch_try_t *t, uint64_t until, json_t **answer,
                                   uint64_t *at, agent_err_t *err)
{
    char path[160];
    uint64_t now;
    agent_reply_t r;

    while ((now = mm_mono_ms()) < until) {
        uint64_t wait_s = (until - now) / 1000;
        snprintf(path, sizeof(path), "/api/signal/session/%s?wait=%u", t->session_id, (unsigned)(wait_s > 25 ? 25 : wait_s));
        agent_api_set_timeout(api, agent_left(until) + 2000); /* the server answers "pending" when the wait runs out */
        if (agent_api_call(api, "GET", path, NULL, &r, err) != 0)
            return -1;
        if (r.status == 200 && json_is_object(r.body)) {
            const char *state = json_string_value(json_object_get(r.body, "state"));
            if (state != NULL && strcmp(state, "answered") == 0) {
                *answer = json_incref(r.body);
                *at = mm_mono_ms();
                agent_reply_clear(&r);
                return 0;
            }
            agent_reply_clear(&r);
            if (wait_s == 0)
                break;
            continue;
        }
        if (r.status == 404)
            agent_err_set(err, "no_answer", "the session expired before %s answered", email);
        else
            agent_api_error(&r, err);
        agent_reply_clear(&r);
        return -1;
    }
    agent_err_set(err, "no_answer",
                  "%s did not answer the hole punch within %d s: its mm up may be an older version, or you may not be in "
                  "its --allow list",
                  email, AGENT_PUNCH_ANSWER_WAIT_MS / 1000);
    return -1;
}

/* When to start: the time the answer arrived, plus how far ahead punch_at
 * was when the server sent it, minus the half round trip it travelled
 * (DCUtR). Never in the past. */
static uint64_t agent_punch_start(json_t *answer, uint64_t received, double rtt_ms)
{
    json_int_t in = json_integer_value(json_object_get(answer, "punch_in_ms"));
    double start = (double)received + (double)(in > 0 ? in : 0) - rtt_ms / 2;
    uint64_t now = mm_mono_ms();

    return start > (double)now ? (uint64_t)start : now;
}

/* STUN on its own thread, while the command's thread sets up the HTTPS
 * connection: on a lossy link both take a while, and neither needs the
 * other. */
typedef struct agent_stun_job {
    int fd;
    const agent_stun_target_t *st;
    uint64_t deadline;
    agent_mapping_t *m;
    agent_err_t err;
    int rc;
    uint64_t done_at;
} agent_stun_job_t;

static void *agent_stun_job_run(void *arg)
{
    agent_stun_job_t *j = arg;

    j->rc = agent_stun_map(j->fd, j->st, j->deadline, j->m, &j->err);
    j->done_at = mm_mono_ms();
    return NULL;
}

/* The mapping of `fd`, and meanwhile (first attempt only) a lookup of
 * `email`, which opens the connection the offer then uses and says at once
 * when the peer is offline. 0, or -1 with err. */
static int agent_punch_map(agent_api_t *api, int fd, const agent_stun_target_t *st, const char *email, int lookup,
                           uint64_t deadline, agent_punch_try_t *t, agent_err_t *err)
{
    agent_stun_job_t job = {
        .fd = fd, .st = st, .deadline = agent_min_u64(mm_mono_ms() + AGENT_PUNCH_STUN_MS, deadline), .m = &t->mapping};
    json_t *peer = NULL;
    pthread_t th;
    int rc = 0;

    if (!lookup || pthread_create(&th, NULL, agent_stun_job_run, &job) != 0) {
        agent_stun_job_run(&job);
    } else {
        agent_api_set_timeout(api, (long)agent_min_u64((uint64_t)agent_left(deadline), AGENT_PUNCH_CALL_MS));
        rc = agent_api_lookup(api, "email", email, &peer, err);
        json_decref(peer);
        pthread_join(th, NULL);
        if (rc != 0)
            return -1;
    }
    t->mapped_at = job.done_at;
    if (job.rc != 0) {
        *err = job.err;
        return -1;
    }
    return 0;
}

/* One attempt: 1 path, 0 no path (retry may help), -1 err set (do not retry). */
static int agent_punch_attempt(agent_api_t *api, const agent_stun_target_t *st, const char *email, int first, uint64_t deadline,
                               agent_punch_try_t *t, agent_err_t *err)
{
    json_t *answer = NULL, *peer;
    uint64_t received, start;
    double rtt;
    int fd, rc = -1;
    const char *nat;

    t->begun = mm_mono_ms();
    if ((fd = agent_udp_open(st->server.family, err)) < 0)
        return -1;
    if (agent_punch_map(api, fd, st, email, first, deadline, t, err) != 0)
        goto out;
    if (agent_punch_offer(api, email, t, deadline, err) != 0)
        goto out;
    t->offered_at = mm_mono_ms();
    rtt = agent_api_last_rtt_ms(api);
    if (agent_punch_wait_answer(api, email, t, agent_min_u64(mm_mono_ms() + AGENT_PUNCH_ANSWER_WAIT_MS, deadline), &answer,
                                &received, err) != 0)
        goto out;
    peer = json_object_get(answer, "peer");
    nat = json_string_value(json_object_get(peer, "nat_mapping"));
    snprintf(t->peer_nat, sizeof(t->peer_nat), "%s", nat != NULL ? nat : "");
    nat = json_string_value(json_object_get(peer, "peer_id"));
    snprintf(t->peer_id, sizeof(t->peer_id), "%s", nat != NULL ? nat : "");
    if (agent_punch_init(&t->punch, fd, MM_PUNCH_OFFERER, t->session_id, json_string_value(json_object_get(answer, "secret")),
                         json_object_get(peer, "candidates"), err) != 0)
        goto out;
    t->answered_at = received;
    t->start = start = agent_punch_start(answer, received, rtt);
    rc = agent_punch_probe(&t->punch, start, agent_min_u64(start + AGENT_PUNCH_PROBE_MS, deadline), NULL, NULL);
    if (rc == 1)
        agent_punch_answer_until(&t->punch, mm_mono_ms() + AGENT_PUNCH_LINGER_MS, NULL, NULL);
out:
    json_decref(answer);
    if (rc != 1)
        close(fd);
    else
        t->punch.fd = fd; /* the caller closes it once the result is out */
    return rc;
}

/* Failures a new attempt may not meet: a lost packet, a connection broken by a lossy link. */
static int agent_punch_retryable(const agent_err_t *err)
{
    return strcmp(err->code, "server_unreachable") == 0 || strcmp(err->code, "stun_unreachable") == 0 ||
           strcmp(err->code, "unavailable") == 0;
}

static int agent_is_symmetric(const char *nat)
{
    return nat != NULL && strcmp(nat, "address-dependent") == 0;
}

int agent_cmd_punch(agent_args_t *args)
{
    const char *email = args->pos[0];
    uint64_t t0 = mm_mono_ms(),
             deadline = t0 + (args->timeout_s > 0 ? (uint64_t)(args->timeout_s * 1000) : AGENT_PUNCH_DEADLINE_MS);
    agent_stun_target_t st;
    agent_punch_try_t *t = mm_xcalloc(1, sizeof(*t));
    agent_api_t *api = NULL;
    agent_conf_t conf;
    agent_err_t err;
    char local[64], remote[64], mapped[64];
    mm_addr_t via;
    json_t *out;
    int attempt, rc = -1;

    if (agent_conf_load(&conf, args->server, &err) != 0 || agent_stun_target(&conf, args->stun, args->stun_alt, &st, &err) != 0 ||
        (api = agent_api_new(&conf, &err)) == NULL)
        goto fail;
    for (attempt = 1; attempt <= AGENT_PUNCH_ATTEMPTS; ++attempt) {
        memset(t, 0, sizeof(*t));
        if ((rc = agent_punch_attempt(api, &st, email, attempt == 1, deadline, t, &err)) == 1)
            break;
        if (rc < 0 && !agent_punch_retryable(&err))
            break;
        if (rc == 0)
            mm_info("punch attempt %d to %s: no authenticated reply from %zu address(es)", attempt, email, t->punch.ncands);
        else
            mm_info("punch attempt %d to %s: %s", attempt, email, err.msg);
        if (agent_is_symmetric(t->mapping.nat_mapping) || agent_is_symmetric(t->peer_nat) ||
            agent_left(deadline) < AGENT_PUNCH_PROBE_MS + 1500)
            break;
    }
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        if (agent_is_symmetric(t->mapping.nat_mapping))
            agent_err_set(&err, "symmetric_nat", "%s", AGENT_SYMMETRIC_OURS);
        else if (agent_is_symmetric(t->peer_nat))
            agent_err_set(&err, "peer_symmetric_nat", "%s", AGENT_SYMMETRIC_PEER);
        else
            agent_err_set(&err, "punch_failed",
                          "no authenticated reply from any of %s's %zu address(es) in %d attempt(s): a firewall on either side "
                          "may drop UDP; try mm connect",
                          email, t->punch.ncands, attempt > AGENT_PUNCH_ATTEMPTS ? AGENT_PUNCH_ATTEMPTS : attempt);
        goto fail;
    }
    /* the local end of the path: the interface address toward the peer, the socket's port */
    via = t->mapping.local;
    if (agent_local_ip_toward(&t->punch.remote, &via) == 0)
        via.port = t->mapping.local.port;
    agent_addr_str(&via, local);
    agent_addr_str(&t->punch.remote, remote);
    agent_addr_str(&t->mapping.mapped, mapped);
    agent_out_line("Direct UDP path to %s: %s -> %s, round trip %.1f ms (found in %llu ms, attempt %d)", email, local, remote,
                   t->punch.rtt_ms, (unsigned long long)(t->punch.path_at - t0), attempt);
    out = json_pack("{s:s,s:s,s:s,s:s,s:s,s:f,s:I,s:i,s:s?,s:s?,s:s}", "email", email, "peer_id", t->peer_id, "local", local,
                    "remote", remote, "mapped", mapped, "rtt_ms", t->punch.rtt_ms, "time_ms", (json_int_t)(t->punch.path_at - t0),
                    "attempts", attempt, "nat_mapping", t->mapping.nat_mapping, "peer_nat_mapping",
                    t->peer_nat[0] != '\0' ? t->peer_nat : NULL, "session_id", t->session_id);
    /* where the time went in the attempt that won: each step's end, from the command's start */
    json_object_set_new(out, "steps_ms",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "attempt", (json_int_t)(t->begun - t0), "stun",
                                  (json_int_t)(t->mapped_at - t0), "offer", (json_int_t)(t->offered_at - t0), "answer",
                                  (json_int_t)(t->answered_at - t0), "probe_start", (json_int_t)(t->start - t0), "path",
                                  (json_int_t)(t->punch.path_at - t0)));
    agent_out_ok(out);
    close(t->punch.fd);
    agent_api_free(api);
    free(t);
    return AGENT_EXIT_OK;

fail:
    agent_api_free(api);
    free(t);
    return agent_out_error(&err);
}
