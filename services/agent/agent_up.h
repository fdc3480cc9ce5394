/*
 * The daemon's private pieces (mm up): the peer server (agent_peer.c),
 * the caller resolver (agent_resolver.c), the broadcast keeper
 * (agent_beacon.c) and the hole-punch answerer (agent_punch_up.c), wired
 * by agent_up.c.
 *
 * Threads: the peer server's loops (libh2o evloop, mm_server_t) never
 * block; the control plane (register, ready, heartbeats, stop, bootstrap)
 * runs on the beacon thread with blocking libcurl calls, and callers'
 * lookups on the resolver thread, each with its own connection.
 */
#ifndef AGENT_UP_H
#define AGENT_UP_H

#include <stdatomic.h>
#include "mm/http.h"
#include "agent.h"

/* ---- agent_resolver.c ---- */

typedef struct agent_resolver agent_resolver_t;
typedef struct agent_resolver_port agent_resolver_port_t;
/* result: 1 found (email set), 0 unknown or not online, -1 the tracker did
 * not answer, -2 cancelled (the loop is shutting down). Runs on the loop of
 * the port that asked. */
typedef void (*agent_resolve_cb)(void *data, int result, const char *email);

/* Starts the resolver thread with its own connection to the server. */
agent_resolver_t *agent_resolver_new(const agent_conf_t *conf, agent_err_t *err);
/* Stops the thread; every port must have been detached. NULL-safe. */
void agent_resolver_free(agent_resolver_t *r);
/* A loop's door for answers (call on that loop's thread). NULL on failure. */
agent_resolver_port_t *agent_resolver_attach(agent_resolver_t *r, h2o_loop_t *loop);
/* Closes the door: questions still queued from it, and the one in flight,
 * are answered (cancelled) right here, on the loop's thread. NULL-safe. */
void agent_resolver_detach(agent_resolver_port_t *p);
/* From the cache, any thread: 1 found (email: MM_EMAIL_MAX + 1 bytes), 0 known unknown, -1 ask. */
int agent_resolver_cached(agent_resolver_t *r, const char *peer_id, char *email);
/* Queues a question; `cb` runs later on the port's loop, exactly once. */
void agent_resolver_ask(agent_resolver_port_t *p, const char *peer_id, agent_resolve_cb cb, void *data);

/* ---- agent_up.c: the daemon's state, shared by its threads (read-only once running) ---- */

typedef struct agent_up {
    agent_conf_t conf;
    agent_share_t share;
    SSL_CTX *ssl;
    char (*allow)[MM_EMAIL_MAX + 1];
    size_t nallow;
    int public_;
    int bootstrap;
    uint16_t port;
    mm_addr_t advertise[AGENT_MAX_ADDRS];
    size_t nadvertise;
    const char *stun;             /* --stun, or NULL */
    int64_t stun_alt;             /* --stun-alt, or -1 */
    agent_resolver_t *resolver;   /* NULL with --public */
    struct agent_punch_up *punch; /* the answerer, once the broadcast is live (agent_punch_up.c) */
    mm_server_t *server;
    _Atomic int exit_code; /* 1 after a fatal error of the beacon */
} agent_up_t;

/* ---- agent_peer.c: the peer server ---- */

/* Per loop thread (mm_thread_t.user). */
typedef struct agent_peer_thread {
    agent_resolver_port_t *port;
} agent_peer_thread_t;

/* Registers the peer server's handler on `host` ("/"). */
void agent_peer_register(h2o_hostconf_t *host, agent_up_t *up);

/* ---- agent_beacon.c: the broadcast ---- */

typedef struct agent_beacon agent_beacon_t;

/* Starts the thread that registers, broadcasts (ready), heartbeats,
 * re-sends ready after a 404 or when the addresses change, backs off with
 * jitter while the server is unreachable, and keeps a bootstrap membership
 * with --bootstrap. On a fatal answer (e.g. email_taken) it reports, sets
 * up->exit_code to 1 and stops the server. */
agent_beacon_t *agent_beacon_start(agent_up_t *up, agent_err_t *err);
/* Ends the broadcast (stop, at most ~3 s when the server is unreachable)
 * and joins the thread. NULL-safe. */
void agent_beacon_stop(agent_beacon_t *b);

/* ---- agent_punch_up.c: answering hole punches ---- */

/* Called by the beacon thread once the broadcast is live, and again on
 * every change of the broadcast: the first call starts the thread that
 * long-polls the inbox and answers offers from the callers the share
 * admits (a thread per session). */
void agent_punch_hook_broadcast_live(agent_up_t *up);
/* Stops answering and joins every thread (call after agent_beacon_stop). */
void agent_punch_up_stop(agent_up_t *up);

#endif
