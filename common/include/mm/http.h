/*
 * The HTTP service scaffold on libh2o (evloop flavour).
 *
 * An mm_server_t owns one h2o_globalconf_t, N threads each with its own
 * evloop and h2o_context_t, and listeners shared by all threads. A "routes
 * host" answers a table of mm_route_t plus /livez (alias /healthz), /readyz
 * and /metrics, with the SPEC's JSON 404/405/413/415. Every reply goes
 * through mm_reply_json() / mm_reply_error(), so the error shape is made in
 * one place. mm_server_run() blocks until SIGTERM or SIGINT, then stops the
 * threads and returns 0.
 *
 * Handlers run on their thread's loop and must not block. A handler that
 * answers later (after a PostgreSQL or Redis callback) allocates its state
 * with mm_async_new(): if the client resets the stream first, h2o frees the
 * request, and mm_async_req() then returns NULL instead of a dangling pointer.
 */
#ifndef MM_HTTP_H
#define MM_HTTP_H

#include <jansson.h>
#include <openssl/ssl.h>
#include "mm/base.h"
#include "mm/h2o.h"
#include "mm/json.h"

typedef struct mm_server mm_server_t;
typedef struct mm_thread mm_thread_t;

struct mm_thread {
    mm_server_t *server;
    size_t index;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    void *user; /* the service's per-thread state, set by thread_init */
};

typedef void (*mm_route_fn)(h2o_req_t *req, mm_thread_t *thread);

typedef struct mm_route {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* exact path, or a prefix when `prefix` is set (e.g. "/session/") */
    int prefix;
    mm_route_fn fn;
} mm_route_t;

typedef struct mm_server_conf {
    const char *name; /* service name, for logs and metrics */
    int threads;      /* >= 1 */
    /* Optional: called on each thread before it serves (create per-thread
     * store clients here); non-zero stops the server. */
    int (*thread_init)(mm_thread_t *t);
    void (*thread_dispose)(mm_thread_t *t);
    /* Optional /readyz check, run on the answering thread: 1 when ready,
     * else 0 with *why set to a static reason. */
    int (*ready)(mm_thread_t *t, const char **why);
    void *data;     /* the service's own, e.g. its config; mm_server_data() */
    int access_log; /* 1: one JSON access line per request at info level (else debug) */
} mm_server_conf_t;

/* Creates a server; `conf` is copied. Never NULL. */
mm_server_t *mm_server_new(const mm_server_conf_t *conf);
void mm_server_free(mm_server_t *s); /* NULL-safe; only after mm_server_run returned or never ran */

h2o_globalconf_t *mm_server_globalconf(mm_server_t *s);
void *mm_server_data(mm_server_t *s);
const mm_server_conf_t *mm_server_conf(mm_server_t *s);
/* The server of the thread a handler runs on. */
mm_thread_t *mm_thread_of(h2o_req_t *req);

/* Registers a host named `hostname` serving `routes` (kept by pointer: keep
 * the table static) and the built-in /livez, /healthz, /readyz, /metrics. */
h2o_hostconf_t *mm_server_routes_host(mm_server_t *s, const char *hostname, const mm_route_t *routes, size_t n);

/* Adds a JSON access logger (and request metrics) to a path of any host. */
void mm_server_log_path(mm_server_t *s, h2o_pathconf_t *pathconf);

/* Opens a listener on `addr` ("host:port", "[v6]:port", "*:port" or
 * "unix:/path"; a stale unix socket file is replaced) that all threads
 * accept on, serving `host` (with TLS when `ssl` is not NULL; expecting a
 * PROXY protocol line when `proxy_line`). Call before mm_server_run(). */
int mm_server_listen(mm_server_t *s, const char *addr, h2o_hostconf_t *host, SSL_CTX *ssl, int proxy_line, mm_err_t *err);
/* The TCP port listener `index` (in mm_server_listen order) is bound to,
 * e.g. after listening on port 0; -1 for a unix socket or a bad index. */
int mm_server_listen_port(mm_server_t *s, size_t index);

/* Runs until SIGTERM/SIGINT (or mm_server_stop). Returns 0, or -1 when a thread failed to start. */
int mm_server_run(mm_server_t *s);
/* Asks a running server to stop; thread-safe. */
void mm_server_stop(mm_server_t *s);
/* 1 once the server was asked to stop (SIGTERM, SIGINT, mm_server_stop):
 * the threads then stop accepting and give in-flight requests 200 ms, so a
 * service holding requests open (long-polls) answers them when it sees this. */
int mm_server_is_stopping(mm_server_t *s);

/* ---- replies (the one reply path) ---- */

/* Sends `body` (stolen; NULL sends `{}`) as application/json with `status`. */
void mm_reply_json(h2o_req_t *req, int status, json_t *body);
/* Sends {"error":{"code","message"}}. */
void mm_reply_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...) MM_PRINTF(4, 5);
void mm_reply_problem(h2o_req_t *req, const mm_problem_t *p);
/* 503 unavailable with Retry-After; `what` names the store ("PostgreSQL", "Redis"). */
void mm_reply_unavailable(h2o_req_t *req, const char *what);
/* 429 rate_limited with Retry-After in whole seconds (>= 1). */
void mm_reply_rate_limited(h2o_req_t *req, uint64_t retry_after_ms);
/* A raw body with a content type (for /metrics and HTML). `body` is copied. */
void mm_reply_raw(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);

/* ---- request helpers ---- */

/* Decodes the body as a JSON object (empty body = {}); 0, or -EINVAL after
 * having replied 400 invalid_json. */
int mm_req_json(h2o_req_t *req, json_t **out);

/* The identity the gateway passed on (SPEC §2). All strings NUL-terminated,
 * "" when absent. */
typedef struct mm_peer {
    char peer_id[65];
    char fingerprint[65];
    char email[255];
    char client_addr[64]; /* "ip:port" or "[v6]:port" */
    char client_ip[48];   /* the IP part of client_addr */
    char request_id[40];
} mm_peer_t;

/* Reads the X-MM-* identity headers. Returns 0, or -ENOENT after having
 * replied 401 client_certificate_required when there is no valid peer id. */
int mm_req_peer(h2o_req_t *req, mm_peer_t *peer);

/* Copies the URL-decoded value of query parameter `name` into `buf`.
 * Returns its length, -ENOENT when absent, -E2BIG when longer than size-1,
 * -EINVAL when badly encoded. */
int mm_req_query(h2o_req_t *req, const char *name, char *buf, size_t size);

/* An integer query parameter `name` within [min, max], in decimal digits
 * only (no sign, space or suffix); *out = `def` when it is absent. Returns
 * 0, or -EINVAL after having replied 400 invalid_field naming it. */
int mm_req_query_int(h2o_req_t *req, const char *name, long min, long max, long def, long *out);

/* A header's value, or an empty iovec. `name` in lowercase. */
h2o_iovec_t mm_req_header(h2o_req_t *req, const char *name);

/* ---- asynchronous replies ---- */

/* Every async op begins with this; allocate with mm_async_new(). */
typedef struct mm_async {
    h2o_req_t *req;
    void **guard;
} mm_async_t;

/* Allocates `size` zeroed bytes (>= sizeof(mm_async_t)) whose head is an
 * mm_async_t tracking `req`. Free with mm_async_free() when the op ends. */
void *mm_async_new(h2o_req_t *req, size_t size);
/* The request, or NULL when the client has gone and h2o freed it. */
h2o_req_t *mm_async_req(void *op);
void mm_async_free(void *op);

#endif
