/*
 * Who is calling: a caller's peer_id (from its TLS certificate) resolved to
 * the email the tracker binds to it, off the peer server's loops.
 *
 * The tracker is the authority: anyone can put any email in a self-signed
 * certificate, but only the key that registered an email is bound to it.
 * The tracker answers lookups only for peers that broadcast (SPEC §3.1), so
 * a caller is recognised while it is online (runs mm up).
 *
 * One thread with its own API connection works through a FIFO of
 * questions; each answer goes back to the loop that asked, through an
 * eventfd that loop watches, and runs there. Answers are cached: found for
 * 5 minutes, not found for 2 seconds (a caller that just came online waits
 * little; one that never will cannot make us ask the tracker at its pace).
 * A tracker that did not answer is not cached.
 */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "mm/log.h"
#include "agent_up.h"

#define AGENT_RESOLVE_HIT_MS (5 * 60 * 1000)
#define AGENT_RESOLVE_MISS_MS (2 * 1000)
#define AGENT_RESOLVE_CACHE 256

typedef struct agent_resolve_job {
    struct agent_resolve_job *next;
    agent_resolver_port_t *port;
    char peer_id[MM_PEER_ID_LEN + 1];
    int result;
    char email[MM_EMAIL_MAX + 1];
    agent_resolve_cb cb;
    void *data;
} agent_resolve_job_t;

typedef struct agent_resolve_entry {
    char peer_id[MM_PEER_ID_LEN + 1];
    char email[MM_EMAIL_MAX + 1]; /* "" when not found */
    uint64_t until;               /* monotonic ms */
} agent_resolve_entry_t;

struct agent_resolver_port {
    agent_resolver_t *res;
    h2o_socket_t *sock; /* the eventfd, on the port's loop */
    int efd;
    int closed;
    agent_resolve_job_t *done, **done_tail; /* answered, waiting for the loop */
};

struct agent_resolver {
    agent_api_t *api;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work to do, or stop */
    pthread_cond_t idle_cv; /* the job in flight is over */
    int stopping;
    agent_resolve_job_t *queue, **queue_tail;
    agent_resolve_job_t *inflight;
    agent_resolve_entry_t cache[AGENT_RESOLVE_CACHE];
};

/* Under mu. */
static agent_resolve_entry_t *agent_resolver_find(agent_resolver_t *r, const char *peer_id)
{
    size_t i;

    for (i = 0; i != AGENT_RESOLVE_CACHE; ++i)
        if (r->cache[i].until > mm_mono_ms() && strcmp(r->cache[i].peer_id, peer_id) == 0)
            return &r->cache[i];
    return NULL;
}

/* Under mu: replaces the entry that expires first. */
static void agent_resolver_store(agent_resolver_t *r, const char *peer_id, const char *email, uint64_t ttl)
{
    agent_resolve_entry_t *e = agent_resolver_find(r, peer_id), *oldest = &r->cache[0];
    size_t i;

    if (e == NULL) {
        for (i = 1; i != AGENT_RESOLVE_CACHE; ++i)
            if (r->cache[i].until < oldest->until)
                oldest = &r->cache[i];
        e = oldest;
    }
    snprintf(e->peer_id, sizeof(e->peer_id), "%s", peer_id);
    snprintf(e->email, sizeof(e->email), "%s", email);
    e->until = mm_mono_ms() + ttl;
}

int agent_resolver_cached(agent_resolver_t *r, const char *peer_id, char *email)
{
    agent_resolve_entry_t *e;
    int ret = -1;

    pthread_mutex_lock(&r->mu);
    if ((e = agent_resolver_find(r, peer_id)) != NULL) {
        memcpy(email, e->email, sizeof(e->email));
        ret = e->email[0] != '\0';
    }
    pthread_mutex_unlock(&r->mu);
    return ret;
}

/* Asks the tracker; the job's result: 1 found, 0 not found, -1 no answer. */
static void agent_resolver_lookup(agent_resolver_t *r, agent_resolve_job_t *job)
{
    agent_err_t err;
    json_t *peer = NULL;
    const char *email, *pid;

    job->result = -1;
    if (agent_api_lookup(r->api, "peer_id", job->peer_id, &peer, &err) == 0) {
        email = json_string_value(json_object_get(peer, "email"));
        pid = json_string_value(json_object_get(peer, "peer_id"));
        if (email != NULL && pid != NULL && strcmp(pid, job->peer_id) == 0) {
            snprintf(job->email, sizeof(job->email), "%s", email);
            job->result = 1;
        } else {
            job->result = 0;
        }
    } else if (strcmp(err.code, "not_found") == 0) {
        job->result = 0;
    } else {
        mm_warn("cannot resolve caller %.12s: %s", job->peer_id, err.msg);
    }
    json_decref(peer);
}

/* Under mu: hands a finished job to its port's loop. */
static void agent_resolver_deliver(agent_resolve_job_t *job)
{
    agent_resolver_port_t *p = job->port;
    uint64_t one = 1;

    job->next = NULL;
    *p->done_tail = job;
    p->done_tail = &job->next;
    if (!p->closed)
        while (write(p->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
}

static void *agent_resolver_main(void *arg)
{
    agent_resolver_t *r = arg;
    agent_resolve_job_t *job;
    agent_resolve_entry_t *e;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->queue == NULL && !r->stopping)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stopping)
            break;
        job = r->queue;
        if ((r->queue = job->next) == NULL)
            r->queue_tail = &r->queue;
        if ((e = agent_resolver_find(r, job->peer_id)) != NULL) { /* answered while it waited */
            job->result = e->email[0] != '\0';
            memcpy(job->email, e->email, sizeof(e->email));
            agent_resolver_deliver(job);
            continue;
        }
        r->inflight = job;
        pthread_mutex_unlock(&r->mu);
        agent_resolver_lookup(r, job);
        pthread_mutex_lock(&r->mu);
        if (job->result >= 0)
            agent_resolver_store(r, job->peer_id, job->result ? job->email : "",
                                 job->result ? AGENT_RESOLVE_HIT_MS : AGENT_RESOLVE_MISS_MS);
        r->inflight = NULL;
        agent_resolver_deliver(job);
        pthread_cond_broadcast(&r->idle_cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

agent_resolver_t *agent_resolver_new(const agent_conf_t *conf, agent_err_t *err)
{
    agent_resolver_t *r = mm_xcalloc(1, sizeof(*r));

    if ((r->api = agent_api_new(conf, err)) == NULL) {
        free(r);
        return NULL;
    }
    agent_api_set_timeout(r->api, 5000);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_cond_init(&r->idle_cv, NULL);
    r->queue_tail = &r->queue;
    if (pthread_create(&r->tid, NULL, agent_resolver_main, r) != 0) {
        agent_err_set(err, "internal", "cannot start a thread");
        agent_api_free(r->api);
        free(r);
        return NULL;
    }
    return r;
}

void agent_resolver_free(agent_resolver_t *r)
{
    agent_resolve_job_t *job;

    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->tid, NULL);
    while ((job = r->queue) != NULL) { /* none: ports detach first, which empties the queue of their jobs */
        r->queue = job->next;
        free(job);
    }
    agent_api_free(r->api);
    pthread_cond_destroy(&r->idle_cv);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Runs the answered jobs of `p` on its loop. */
static void agent_resolver_run_done(agent_resolver_port_t *p)
{
    agent_resolve_job_t *list, *job;

    pthread_mutex_lock(&p->res->mu);
    list = p->done;
    p->done = NULL;
    p->done_tail = &p->done;
    pthread_mutex_unlock(&p->res->mu);
    while ((job = list) != NULL) {
        list = job->next;
        job->cb(job->data, job->result, job->email);
        free(job);
    }
}

static void agent_resolver_on_event(h2o_socket_t *sock, const char *err)
{
    agent_resolver_port_t *p = sock->data;
    uint64_t n;

    while (read(p->efd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    agent_resolver_run_done(p);
}

agent_resolver_port_t *agent_resolver_attach(agent_resolver_t *r, h2o_loop_t *loop)
{
    agent_resolver_port_t *p = mm_xcalloc(1, sizeof(*p));

    p->res = r;
    p->done_tail = &p->done;
    if ((p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        mm_error("eventfd: %s", strerror(errno));
        free(p);
        return NULL;
    }
    /* DONT_READ: the handler reads the eventfd itself; the socket owns (and closes) the fd */
    p->sock = h2o_evloop_socket_create(loop, p->efd, H2O_SOCKET_FLAG_DONT_READ);
    p->sock->data = p;
    h2o_socket_read_start(p->sock, agent_resolver_on_event);
    return p;
}

void agent_resolver_detach(agent_resolver_port_t *p)
{
    agent_resolver_t *r;
    agent_resolve_job_t **pp, *job;

    if (p == NULL)
        return;
    r = p->res;
    pthread_mutex_lock(&r->mu);
    p->closed = 1;
    for (pp = &r->queue; (job = *pp) != NULL;) {
        if (job->port == p) {
            *pp = job->next;
            job->result = -2;
            agent_resolver_deliver(job);
        } else {
            pp = &job->next;
        }
    }
    r->queue_tail = &r->queue;
    for (job = r->queue; job != NULL; job = job->next)
        r->queue_tail = &job->next;
    while (r->inflight != NULL && r->inflight->port == p)
        pthread_cond_wait(&r->idle_cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    agent_resolver_run_done(p); /* nothing is delivered to p any more */
    h2o_socket_read_stop(p->sock);
    h2o_socket_close(p->sock);
    free(p);
}

void agent_resolver_ask(agent_resolver_port_t *p, const char *peer_id, agent_resolve_cb cb, void *data)
{
    agent_resolver_t *r = p->res;
    agent_resolve_job_t *job = mm_xcalloc(1, sizeof(*job));

    job->port = p;
    job->cb = cb;
    job->data = data;
    snprintf(job->peer_id, sizeof(job->peer_id), "%s", peer_id);
    pthread_mutex_lock(&r->mu);
    *r->queue_tail = job;
    r->queue_tail = &job->next;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}
