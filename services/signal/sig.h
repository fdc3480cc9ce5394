/*
 * mm-signal's private header: signaling for UDP hole punching (offers,
 * inboxes, answers, sessions; state in Redis, wake-ups by Redis pub/sub)
 * and the STUN Binding responder (sig_stun.c).
 *
 * Key space (docs/architecture.md): mm:sig:session:<id> (hash, TTL
 * MM_SESSION_TTL), mm:sig:inbox:<peer_id> (sorted set of pending session ids
 * scored by their expiry, unix ms), channels mm:sig:wake:<peer_id> and
 * mm:sig:answered:<id>. Every change is one Lua script (sig_store.c).
 */
#ifndef SIG_H
#define SIG_H

#include "mm/config.h"
#include "mm/http.h"
#include "mm/pg.h"
#include "mm/redis.h"
#include "mm/timer.h"

typedef struct sig_config {
    const char *listen;
    const char *redis_url;
    const char *database_url; /* read-only: the caller's registered email, an offer target's peer_id */
    int64_t session_ttl;      /* seconds */
    int64_t punch_delay_ms;
    int64_t max_pending_offers;
    int64_t threads;
    const char *log_level;
    /* ---- STUN responder (sig_stun.c) — owned by the STUN part: add fields below ---- */
    int64_t stun_port;     /* UDP, 1..65535 */
    int64_t stun_alt_port; /* the second port (RFC 5780 style mapping checks); 0: off */
    const char *stun_addr; /* IP literal to bind; "::" = dual-stack IPv6 + IPv4 */
    int64_t stun_rate;     /* Binding requests per second per source IP (IPv6: per /64); 0: no limit */
    int64_t stun_burst;
    /* ---- end of STUN block ---- */
} sig_config_t;

extern const mm_cfg_entry_t sig_config_table[];
extern const size_t sig_config_table_len;

#define SIG_WAIT_MAX 30       /* seconds: the longest long-poll (SPEC §3.3) */
#define SIG_WAIT_BUCKETS 1024 /* per-thread hash of waiting long-polls by key */
#define SIG_MAX_CANDIDATES 16 /* per offer or answer */
#define SIG_SESSION_ID_LEN 32 /* hex characters (16 random bytes) */
#define SIG_SECRET_LEN 32     /* bytes; sent in base64 */
#define SIG_KEY_PREFIX "mm:sig:"

/* Per-thread state: each thread has its own store connections on its loop,
 * and its own subscriber, which wakes only this thread's long-polls. */
typedef struct sig_thread {
    const sig_config_t *conf;
    mm_thread_t *thread;
    mm_redis_t *redis; /* commands */
    mm_redis_t *sub;   /* PSUBSCRIBE mm:sig:* only */
    mm_pg_t *pg;       /* registered emails, email -> peer_id */
    /* long-polls waiting on this thread (sig_wait.c) */
    h2o_linklist_t waiters[SIG_WAIT_BUCKETS];
    h2o_timeout_t wait_timeouts[SIG_WAIT_MAX + 1]; /* index: whole seconds, one fixed period each */
    mm_timer_t resync_timer;                       /* re-checks every waiter after the subscriber reconnects */
    mm_timer_t stop_timer;                         /* answers every waiter when the server stops */
    size_t nwaiters;
} sig_thread_t;

/* sig_routes.c */
extern const mm_route_t sig_routes[];
extern const size_t sig_routes_len;

/* ---- sig_candidates.c: pure validation (tests/unit/test_sig_candidates.c) ---- */

/* Checks a `candidates` field (SPEC §3.3 anti-abuse rules) against the IP
 * the gateway saw the requester at (`observed_ip`, NULL or "" when unknown):
 * 1..16 objects {"ip": IP literal, "port": 1..65535, "type": "host"|"srflx"}.
 * A `host` IP must be private, link-local or loopback; a `srflx` IP must be
 * the observed IP itself, and public. Shape and type errors are 400 invalid_field, a
 * well-formed candidate that breaks a rule is 400 invalid_candidate (the
 * message names the entry). Returns 0 with a new array of canonical
 * {"ip","port","type"} (duplicates dropped) in *out, or -EINVAL with `p` set. */
int sig_candidates_check(json_t *candidates, const char *observed_ip, json_t **out, mm_problem_t *p);

/* The optional `nat_mapping` field of `body`: NULL when absent or null, else
 * "endpoint-independent" or "address-dependent". Returns 0 or -EINVAL (400
 * invalid_field) with `p` set. */
int sig_nat_mapping_check(json_t *body, const char **out, mm_problem_t *p);

/* 1 when `s` (`len` bytes) is a session id: 32 lowercase hex characters. */
int sig_session_id_valid(const char *s, size_t len);

/* Parses a `wait` query value: digits only, 0..SIG_WAIT_MAX. Returns the
 * seconds, or -EINVAL. */
int sig_wait_parse(const char *s, size_t len);

/* ---- sig_store.c: the Redis scripts and key names ---- */

extern const char sig_lua_offer[], sig_lua_take[], sig_lua_requeue[], sig_lua_answer[], sig_lua_read[];
/* "mm:sig:<kind>:<id>" into `buf` (at least 96 bytes). */
const char *sig_key(char *buf, const char *kind, const char *id);

/* ---- sig_wait.c: long-polls and their wake-ups ----
 *
 * A waiter is one long-poll: it is filed under the channel that wakes it
 * (mm:sig:wake:<peer_id> or mm:sig:answered:<id>), checks Redis once, then again whenever a message on the
 * matching channel arrives on this thread's subscriber, and a last time when
 * its wait runs out. The handler's `check` sends one Redis command and, from
 * its callback, calls sig_wait_checked(); whatever it decides to answer, it
 * ends the waiter with sig_wait_end() and frees it with sig_wait_free(). */
typedef struct sig_waiter sig_waiter_t;
/* Sends the waiter's Redis command; 0, or a negative errno when it was not sent. */
typedef int (*sig_check_fn)(sig_waiter_t *w);

struct sig_waiter {
    mm_async_t async; /* first: allocated with mm_async_new() */
    sig_thread_t *t;
    sig_check_fn check;
    h2o_linklist_t link; /* in t->waiters[] while waiting */
    h2o_timeout_entry_t deadline;
    uint64_t deadline_at;          /* h2o_now() of the loop */
    struct sig_waiter **gone_hook; /* in the request's pool: tells us when the client went away */
    char key[96];
    uint64_t wait_ms;
    unsigned refs;
    unsigned checking : 1, dirty : 1, timed_out : 1, ended : 1, freed : 1;
};

void sig_wait_init(sig_thread_t *t);
void sig_wait_dispose(sig_thread_t *t);
/* Allocates a waiter of `size` bytes (>= sizeof(sig_waiter_t)) for `req`. */
void *sig_wait_new(h2o_req_t *req, sig_thread_t *t, size_t size, const char *key, sig_check_fn check);
/* Files the waiter, starts its deadline (`wait_s` seconds) and sends the
 * first check. Returns 0, or -ENOTCONN when that check could not be sent
 * (nothing is filed then: reply 503 and free the waiter). */
int sig_wait_start(sig_waiter_t *w, unsigned wait_s);
/* Reads the `wait` query parameter (0..SIG_WAIT_MAX, default 0) of a
 * long-poll and checks that Redis can answer and wake it. Returns 0, or -1
 * after having replied 400 invalid_field or 503 unavailable. */
int sig_wait_arg(h2o_req_t *req, sig_thread_t *t, int *wait);
/* From a check's callback (before looking at the reply): the check is over.
 * Returns what to do when the reply holds nothing final:
 *   SIG_WAIT_AGAIN: a wake-up came in the meantime: the caller checks again (sig_wait_recheck);
 *   SIG_WAIT_REPLY: the wait is over (or was 0): answer "nothing yet";
 *   SIG_WAIT_KEEP: keep waiting (return without answering). */
enum { SIG_WAIT_KEEP, SIG_WAIT_AGAIN, SIG_WAIT_REPLY };
int sig_wait_checked(sig_waiter_t *w);
/* Sends the check again; 0 or -ENOTCONN. */
int sig_wait_recheck(sig_waiter_t *w);
/* 1 when the waiter's client has gone: its request was freed, or its
 * connection has reached EOF (h2o does not notice that for HTTP/1 while a
 * request is in progress). Nothing should be taken for it then. */
int sig_wait_client_gone(sig_waiter_t *w);
/* Brings the deadline forward to at most `ms` from now (e.g. when the
 * session waited on expires first). */
void sig_wait_shorten(sig_waiter_t *w, uint64_t ms);
/* Unfiles the waiter and stops its deadline; returns its request (NULL when
 * the client has gone). Answer on that request, then call sig_wait_free(). */
h2o_req_t *sig_wait_end(sig_waiter_t *w);
void sig_wait_free(sig_waiter_t *w);
/* The subscriber's message: wakes this thread's waiters on that channel. */
void sig_wait_on_message(const char *channel, size_t channel_len, const char *msg, size_t msg_len, void *data);

/* ---- handlers ---- */

/* sig_offer.c: POST /offer, POST /answer */
void sig_offer(h2o_req_t *req, mm_thread_t *thread);
void sig_answer(h2o_req_t *req, mm_thread_t *thread);
/* sig_inbox.c: GET /inbox?wait=N */
void sig_inbox(h2o_req_t *req, mm_thread_t *thread);
/* sig_session.c: GET /session/{id}?wait=N */
void sig_session(h2o_req_t *req, mm_thread_t *thread);

/* sig_session.c: {"peer_id","email","candidates"[,"nat_mapping"]} of one
 * party, from its stored offer or answer JSON (`email` "" reads as null). */
json_t *sig_party(const char *peer_id, const char *email, const char *stored);

/* sig_metrics.c: Prometheus counters (registered once per process) */
void sig_metrics_init(void);
void sig_metrics_offer(const char *result);  /* "created", "not_found", "inbox_full" */
void sig_metrics_delivered(uint64_t age_ms); /* an offer reached its target, `age_ms` after it was made */
void sig_metrics_answered(void);
void sig_metrics_wakeup(void);
void sig_metrics_waiters(long delta); /* long-polls waiting now, all threads */

/* ---- STUN responder (sig_stun.c) — owned by the STUN part ---- */
/* Starts the UDP responder on `thread`'s loop (called from thread_init on
 * every thread); 0, or -1 with `err` set. */
int sig_stun_start(mm_thread_t *thread, const sig_config_t *conf, mm_err_t *err);
/* Stops it (called from thread_dispose); safe when never started. */
void sig_stun_stop(mm_thread_t *thread);
/* ---- end of STUN block ---- */

#endif
