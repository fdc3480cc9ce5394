/*
 * mm up's side of hole punching (SPEC §3.3 steps 2, 3 and 5): a thread
 * long-polls the inbox once the broadcast is live; each offer from a
 * caller the share admits (--allow, or anyone with --public) gets a thread
 * of its own that learns this machine's mapping, answers, probes from
 * punch_at (corrected by half the answer's round trip), then keeps the
 * path until it goes quiet. Offers from others are left unanswered: they
 * expire at mm-signal, as if this peer did not punch at all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mm/log.h"
#include "agent_punch.h"
#include "agent_up.h"

#define AGENT_PUNCH_UP_SESSIONS 8 /* at once; mm-signal queues at most 8 offers per target */
#define AGENT_PUNCH_UP_WAIT_S 25
#define AGENT_PUNCH_UP_STUN_MS 3000

typedef struct agent_punch_job {
    struct agent_punch_up *owner;
    pthread_t thread;
    _Atomic int done;
    _Atomic int superseded; /* the same peer punched again: this session's path is abandoned */
    int used;
    char from[MM_PEER_ID_LEN + 1];
    json_t *offer; /* {"session_id","from":{"peer_id","email"},"candidates",...} */
} agent_punch_job_t;

struct agent_punch_up {
    agent_up_t *up;
    agent_stun_target_t stun;
    pthread_t thread;
    _Atomic int stop;
    agent_punch_job_t jobs[AGENT_PUNCH_UP_SESSIONS];
};

static int agent_punch_up_stopping(void *data)
{
    struct agent_punch_up *pu = data;

    return atomic_load(&pu->stop);
}

/* A session ends when mm up stops, or when its peer starts another one. */
static int agent_punch_job_stopping(void *data)
{
    agent_punch_job_t *job = data;

    return atomic_load(&job->owner->stop) || atomic_load(&job->superseded);
}

static const char *agent_offer_from(json_t *offer, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(offer, "from"), key));

    return s != NULL ? s : "?";
}

/* 1 when the share admits `email`. */
static int agent_punch_up_allowed(const agent_up_t *up, const char *email)
{
    char norm[MM_EMAIL_MAX + 1];
    size_t i;

    if (up->public_)
        return 1;
    if (mm_email_normalize(email, strlen(email), norm) != 0)
        return 0;
    for (i = 0; i != up->nallow; ++i)
        if (strcmp(up->allow[i], norm) == 0)
            return 1;
    return 0;
}

static void agent_punch_up_failed(json_t *offer, const char *why, const agent_err_t *err)
{
    const char *sid = json_string_value(json_object_get(offer, "session_id"));

    agent_out_event("punch_failed",
                    json_pack("{s:s?,s:s,s:s,s:s}", "session_id", sid, "from", agent_offer_from(offer, "email"), "reason", why,
                              "message", err != NULL ? err->msg : ""),
                    "Hole punch with %s failed: %s%s%s", agent_offer_from(offer, "email"), why, err != NULL ? ": " : "",
                    err != NULL ? err->msg : "");
}

/* Step 3: the answer. 0 with the reply's body (a new reference), -1 with err. */
static int agent_punch_up_answer(agent_api_t *api, const char *sid, const agent_mapping_t *m, json_t **out, agent_err_t *err)
{
    json_t *body = json_pack("{s:s,s:o}", "session_id", sid, "candidates", agent_punch_candidates(m));
    agent_reply_t r;
    int rc = -1;

    if (m->nat_mapping != NULL)
        json_object_set_new(body, "nat_mapping", json_string(m->nat_mapping));
    if (agent_api_call(api, "POST", "/api/signal/answer", body, &r, err) == 0) {
        if (r.status == 200 && json_is_object(r.body)) {
            *out = json_incref(r.body);
            rc = 0;
        } else {
            agent_api_error(&r, err);
        }
        agent_reply_clear(&r);
    }
    json_decref(body);
    return rc;
}

static void *agent_punch_up_session(void *arg)
{
    agent_punch_job_t *job = arg;
    struct agent_punch_up *pu = job->owner;
    const char *sid = json_string_value(json_object_get(job->offer, "session_id")), *email = agent_offer_from(job->offer, "email");
    agent_punch_t *p = mm_xcalloc(1, sizeof(*p));
    json_t *answer = NULL;
    agent_api_t *api = NULL;
    agent_mapping_t m;
    agent_err_t err;
    uint64_t received, start;
    double rtt, in;
    char remote[64];
    int fd, rc;

    if ((fd = agent_udp_open(pu->stun.server.family, &err)) < 0) {
        agent_punch_up_failed(job->offer, "internal", &err);
        goto out;
    }
    if (agent_stun_map(fd, &pu->stun, mm_mono_ms() + AGENT_PUNCH_UP_STUN_MS, &m, &err) != 0) {
        agent_punch_up_failed(job->offer, "stun_unreachable", &err);
        goto out;
    }
    if ((api = agent_api_new(&pu->up->conf, &err)) == NULL) {
        agent_punch_up_failed(job->offer, "internal", &err);
        goto out;
    }
    agent_api_set_timeout(api, 5000);
    /* once more on a new connection when the first never got an answer (a lossy link) */
    if (agent_punch_up_answer(api, sid, &m, &answer, &err) != 0 &&
        (strcmp(err.code, "server_unreachable") != 0 || agent_punch_up_answer(api, sid, &m, &answer, &err) != 0)) {
        agent_punch_up_failed(job->offer, "answer_refused", &err);
        goto out;
    }
    received = mm_mono_ms();
    rtt = agent_api_last_rtt_ms(api);
    agent_api_free(api);
    api = NULL;
    if (agent_punch_init(p, fd, MM_PUNCH_ANSWERER, sid, json_string_value(json_object_get(answer, "secret")),
                         json_object_get(job->offer, "candidates"), &err) != 0) {
        agent_punch_up_failed(job->offer, "bad_offer", &err);
        goto out;
    }
    in = (double)json_integer_value(json_object_get(answer, "punch_in_ms"));
    start = (double)received + in - rtt / 2 > (double)received ? (uint64_t)((double)received + in - rtt / 2) : received;
    if ((rc = agent_punch_probe(p, start, start + AGENT_PUNCH_PROBE_MS, agent_punch_job_stopping, job)) < 0)
        goto out;
    if (rc == 0) {
        /* no ACK of ours came back; the other side may still have won with our ACKs */
        if (p->heard_at == 0) {
            agent_err_set(&err, "punch_failed", "no authenticated packet from %s in %d s (nat_mapping %s here, %s there)", email,
                          AGENT_PUNCH_PROBE_MS / 1000, m.nat_mapping != NULL ? m.nat_mapping : "unknown",
                          json_string_value(json_object_get(job->offer, "nat_mapping")) != NULL
                              ? json_string_value(json_object_get(job->offer, "nat_mapping"))
                              : "unknown");
            agent_punch_up_failed(job->offer, "punch_failed", &err);
            goto out;
        }
    } else {
        agent_out_event("punched",
                        json_pack("{s:s,s:s,s:s,s:f}", "session_id", sid, "from", email, "remote",
                                  agent_addr_str(&p->remote, remote), "rtt_ms", p->rtt_ms),
                        "Direct UDP path with %s: %s, round trip %.1f ms", email, remote, p->rtt_ms);
    }
    if (agent_punch_keep(p, 0, agent_punch_job_stopping, job) == 0)
        agent_out_event("path_closed", json_pack("{s:s,s:s}", "session_id", sid, "from", email),
                        "The UDP path with %s went quiet; closed", email);
out:
    if (fd >= 0)
        close(fd);
    agent_api_free(api);
    json_decref(answer);
    free(p);
    atomic_store(&job->done, 1);
    return NULL;
}

/* Joins finished sessions; returns a free slot or NULL. With `all`, waits for every session. */
static agent_punch_job_t *agent_punch_up_reap(struct agent_punch_up *pu, int all)
{
    agent_punch_job_t *free_job = NULL;
    size_t i;

    for (i = 0; i != AGENT_PUNCH_UP_SESSIONS; ++i) {
        agent_punch_job_t *j = &pu->jobs[i];
        if (j->used && (all || atomic_load(&j->done))) {
            pthread_join(j->thread, NULL);
            json_decref(j->offer);
            memset(j, 0, sizeof(*j));
        }
        if (!j->used && free_job == NULL)
            free_job = j;
    }
    return free_job;
}

static void agent_punch_up_take(struct agent_punch_up *pu, json_t *offer)
{
    const char *email = agent_offer_from(offer, "email"), *from = agent_offer_from(offer, "peer_id");
    agent_punch_job_t *job;
    int superseded = 0, tries;
    size_t i;

    if (!json_is_string(json_object_get(offer, "session_id")) || !agent_punch_up_allowed(pu->up, email)) {
        agent_out_event("punch_ignored", json_pack("{s:s,s:s}", "from", email, "reason", "not_allowed"),
                        "Ignored a hole punch from %s: not in --allow", email);
        return;
    }
    for (i = 0; i != AGENT_PUNCH_UP_SESSIONS; ++i) {
        if (pu->jobs[i].used && strcmp(pu->jobs[i].from, from) == 0) {
            atomic_store(&pu->jobs[i].superseded, 1);
            superseded = 1;
        }
    }
    /* superseded sessions notice within one poll (at most 200 ms) */
    for (tries = 0; (job = agent_punch_up_reap(pu, 0)) == NULL && superseded && tries != 25; ++tries)
        usleep(20 * 1000);
    if (job == NULL) {
        agent_out_event("punch_ignored", json_pack("{s:s,s:s}", "from", email, "reason", "busy"),
                        "Ignored a hole punch from %s: %d sessions already running", email, AGENT_PUNCH_UP_SESSIONS);
        return;
    }
    agent_out_event("punch_offer", json_pack("{s:O,s:s}", "session_id", json_object_get(offer, "session_id"), "from", email),
                    "Hole punch requested by %s", email);
    job->owner = pu;
    snprintf(job->from, sizeof(job->from), "%s", from);
    job->offer = json_incref(offer);
    job->used = 1;
    atomic_store(&job->done, 0);
    if (pthread_create(&job->thread, NULL, agent_punch_up_session, job) != 0) {
        json_decref(job->offer);
        memset(job, 0, sizeof(*job));
        mm_error("cannot start a thread for a hole punch: %s", strerror(errno));
    }
}

/* Sleeps `ms`, waking early when stopping. */
static void agent_punch_up_nap(struct agent_punch_up *pu, uint64_t ms)
{
    uint64_t end = mm_mono_ms() + ms;

    while (!atomic_load(&pu->stop) && mm_mono_ms() < end)
        usleep(50 * 1000);
}

static void *agent_punch_up_main(void *arg)
{
    struct agent_punch_up *pu = arg;
    uint64_t backoff = 500;
    agent_api_t *api;
    agent_err_t err;
    char path[64];

    if ((api = agent_api_new(&pu->up->conf, &err)) == NULL) {
        mm_error("hole punching disabled: %s", err.msg);
        return NULL;
    }
    agent_api_set_abort(api, agent_punch_up_stopping, pu);
    agent_api_set_timeout(api, (AGENT_PUNCH_UP_WAIT_S + 10) * 1000L);
    snprintf(path, sizeof(path), "/api/signal/inbox?wait=%d", AGENT_PUNCH_UP_WAIT_S);
    while (!atomic_load(&pu->stop)) {
        agent_reply_t r;
        json_t *offer;
        size_t i;

        agent_punch_up_reap(pu, 0);
        if (agent_api_call(api, "GET", path, NULL, &r, &err) != 0 || r.status != 200) {
            if (r.status != 0)
                agent_api_error(&r, &err);
            agent_reply_clear(&r);
            if (atomic_load(&pu->stop))
                break;
            mm_warn("hole punching: the inbox did not answer (%s); again in %llu ms", err.msg, (unsigned long long)backoff);
            agent_punch_up_nap(pu, backoff + (uint64_t)(rand() % 250));
            backoff = backoff * 2 > 15000 ? 15000 : backoff * 2;
            continue;
        }
        backoff = 500;
        json_array_foreach(json_object_get(r.body, "offers"), i, offer)
        {
            agent_punch_up_take(pu, offer);
        }
        agent_reply_clear(&r);
    }
    agent_api_free(api);
    agent_punch_up_reap(pu, 1);
    return NULL;
}

void agent_punch_hook_broadcast_live(agent_up_t *up)
{
    struct agent_punch_up *pu;
    agent_err_t err;

    if (up->punch != NULL)
        return; /* already answering; the beacon calls this again on every new broadcast */
    pu = mm_xcalloc(1, sizeof(*pu));
    pu->up = up;
    if (agent_stun_target(&up->conf, up->stun, up->stun_alt, &pu->stun, &err) != 0) {
        mm_error("hole punching disabled: %s", err.msg);
        free(pu);
        return;
    }
    if (pthread_create(&pu->thread, NULL, agent_punch_up_main, pu) != 0) {
        mm_error("hole punching disabled: cannot start its thread: %s", strerror(errno));
        free(pu);
        return;
    }
    up->punch = pu;
}

void agent_punch_up_stop(agent_up_t *up)
{
    if (up->punch == NULL)
        return;
    atomic_store(&up->punch->stop, 1);
    pthread_join(up->punch->thread, NULL);
    free(up->punch);
    up->punch = NULL;
}
