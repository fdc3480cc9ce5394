/*
 * The peer server of mm up: HTTPS with the agent's own certificate,
 * requiring the caller's. Read-only, GET only:
 *
 *   GET /api/health            any caller with a certificate: who this peer is
 *   GET /api/files?path=P      a folder of the share as JSON (agent_files_list)
 *   GET /api/files/P           a file, with Range (one range; 206/416)
 *
 * Files are for callers whose email (the one the tracker binds to their
 * key) is in --allow, or for anyone with --public. Errors have the SPEC's
 * shape {"error":{"code","message"}}.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "mm/log.h"
#include "mm/tls.h"
#include "agent_up.h"

#define AGENT_DL_CHUNK (1024 * 1024)

typedef struct agent_peer_handler {
    h2o_handler_t super;
    agent_up_t *up;
} agent_peer_handler_t;

typedef enum { AGENT_ROUTE_HEALTH, AGENT_ROUTE_LIST, AGENT_ROUTE_FILE } agent_route_t;

/* What a certificate says, cached on the connection's SSL. */
typedef struct agent_caller {
    int status; /* mm_identity_status_t, or -1 unreadable */
    mm_identity_t id;
} agent_caller_t;

/* A request waiting for the resolver. */
typedef struct agent_peer_op {
    mm_async_t async; /* first: mm_async_new */
    agent_up_t *up;
    agent_route_t route;
    char rel[PATH_MAX];
} agent_peer_op_t;

typedef struct agent_dl {
    h2o_generator_t super;
    int fd;
    uint64_t off, left;
    char *buf;
} agent_dl_t;

static int agent_caller_index = -1;
static pthread_once_t agent_caller_once = PTHREAD_ONCE_INIT;

static void agent_caller_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static void agent_caller_init(void)
{
    agent_caller_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, agent_caller_free);
}

/* The caller's identity, or NULL when it sent no certificate. Computed once per connection,
 * from the session's certificate (the verify callback does not run on resumption). */
static const agent_caller_t *agent_peer_caller(agent_up_t *up, h2o_req_t *req)
{
    SSL *ssl = mm_tls_ssl_of(up->ssl, req);
    agent_caller_t *c;
    X509 *cert;

    if (ssl == NULL)
        return NULL;
    pthread_once(&agent_caller_once, agent_caller_init);
    if ((c = SSL_get_ex_data(ssl, agent_caller_index)) != NULL)
        return c;
    if ((cert = SSL_get0_peer_certificate(ssl)) == NULL)
        return NULL;
    c = mm_xcalloc(1, sizeof(*c));
    c->status = mm_identity_from_x509(cert, (int64_t)time(NULL), &c->id);
    SSL_set_ex_data(ssl, agent_caller_index, c);
    return c;
}

/* ---- downloads ---- */

static void agent_dl_dispose(void *p)
{
    agent_dl_t *d = p;

    if (d->fd >= 0)
        close(d->fd);
    free(d->buf);
}

static void agent_dl_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    agent_dl_t *d = (void *)g;
    size_t want = d->left < AGENT_DL_CHUNK ? (size_t)d->left : AGENT_DL_CHUNK, got = 0;
    h2o_iovec_t vec;
    ssize_t r;

    while (got < want) {
        r = pread(d->fd, d->buf + got, want - got, (off_t)(d->off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < want) { /* a read error, or the file shrank: the length was promised, so cut the response */
        mm_warn("download cut short at byte %llu: %s", (unsigned long long)(d->off + got), got == 0 ? strerror(errno) : "EOF");
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    d->off += got;
    d->left -= got;
    vec = h2o_iovec_init(d->buf, got);
    h2o_send(req, &vec, 1, d->left == 0 ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void agent_dl_stop(h2o_generator_t *g, h2o_req_t *req)
{
}

static void agent_peer_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    size_t n = strlen(value);

    h2o_add_header(&req->pool, &req->res.headers, token, NULL, h2o_strdup(&req->pool, value, n).base, n);
}

static void agent_peer_send_file(h2o_req_t *req, int fd)
{
    ssize_t hi = h2o_find_header(&req->headers, H2O_TOKEN_RANGE, -1), ir = h2o_find_header(&req->headers, H2O_TOKEN_IF_RANGE, -1);
    char etag[64], buf[128];
    agent_range_t range = {0, 0};
    struct stat st;
    agent_dl_t *d;
    int partial = 0;

    if (fstat(fd, &st) != 0) {
        close(fd);
        mm_reply_error(req, 500, "internal", "cannot read the file: %s", strerror(errno));
        return;
    }
    agent_files_etag(&st, etag);
    if (hi != -1) {
        h2o_iovec_t v = req->headers.entries[hi].value;
        /* If-Range with another ETag (the file changed): the whole file, not a piece of the new one */
        int same =
            ir == -1 || h2o_memis(req->headers.entries[ir].value.base, req->headers.entries[ir].value.len, etag, strlen(etag));
        int rr = same ? agent_files_range(v.base, v.len, (uint64_t)st.st_size, &range) : 1;
        if (rr < 0) {
            close(fd);
            snprintf(buf, sizeof(buf), "bytes */%llu", (unsigned long long)st.st_size);
            agent_peer_header(req, H2O_TOKEN_CONTENT_RANGE, buf);
            mm_reply_error(req, 416, "range_not_satisfiable", "the file has %llu bytes", (unsigned long long)st.st_size);
            return;
        }
        partial = rr == 0;
    }
    d = h2o_mem_alloc_shared(&req->pool, sizeof(*d), agent_dl_dispose);
    d->super = (h2o_generator_t){agent_dl_proceed, agent_dl_stop};
    d->fd = fd;
    d->off = partial ? range.first : 0;
    d->left = partial ? range.last - range.first + 1 : (uint64_t)st.st_size;
    d->buf = d->left != 0 ? mm_xmalloc(d->left < AGENT_DL_CHUNK ? (size_t)d->left : AGENT_DL_CHUNK) : NULL;
    req->res.status = partial ? 206 : 200;
    req->res.reason = partial ? "Partial Content" : "OK";
    req->res.content_length = d->left;
    agent_peer_header(req, H2O_TOKEN_CONTENT_TYPE, "application/octet-stream");
    agent_peer_header(req, H2O_TOKEN_ACCEPT_RANGES, "bytes");
    agent_peer_header(req, H2O_TOKEN_ETAG, etag);
    agent_peer_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    if (partial) {
        snprintf(buf, sizeof(buf), "bytes %llu-%llu/%llu", (unsigned long long)range.first, (unsigned long long)range.last,
                 (unsigned long long)st.st_size);
        agent_peer_header(req, H2O_TOKEN_CONTENT_RANGE, buf);
    }
    h2o_start_response(req, &d->super);
    if (d->left == 0)
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        agent_dl_proceed(&d->super, req);
}

/* ---- files and folders ---- */

static void agent_peer_open_error(h2o_req_t *req, int err, const char *rel)
{
    switch (err) {
    case -EPERM:
        mm_reply_error(req, 403, "outside_share", "/%s leads outside the shared folder", rel);
        return;
    case -EACCES:
        mm_reply_error(req, 403, "forbidden", "/%s cannot be read", rel);
        return;
    default:
        mm_reply_error(req, 404, "not_found", "no such %s in the shared folder: /%s", err == -ENOTDIR ? "folder" : "file", rel);
        return;
    }
}

static void agent_peer_serve(agent_up_t *up, h2o_req_t *req, agent_route_t route, const char *rel)
{
    int fd = agent_files_open(&up->share, rel, route == AGENT_ROUTE_LIST);
    json_t *list;

    if (fd < 0) {
        agent_peer_open_error(req, fd == -ENOENT && route == AGENT_ROUTE_LIST ? -ENOTDIR : fd, rel);
        return;
    }
    if (route == AGENT_ROUTE_FILE) {
        agent_peer_send_file(req, fd);
        return;
    }
    if ((list = agent_files_list(&up->share, fd, rel)) == NULL) {
        mm_reply_error(req, 403, "forbidden", "/%s cannot be read", rel);
        return;
    }
    mm_reply_json(req, 200, list);
}

/* ---- who may ---- */

static int agent_peer_allowed(agent_up_t *up, const char *email)
{
    size_t i;

    for (i = 0; i != up->nallow; ++i)
        if (strcmp(up->allow[i], email) == 0)
            return 1;
    return 0;
}

/* Answers a caller whose email the tracker gave (result as agent_resolve_cb's). */
static void agent_peer_decide(agent_up_t *up, h2o_req_t *req, agent_route_t route, const char *rel, int result, const char *email)
{
    static const h2o_iovec_t retry = {H2O_STRLIT("5")};

    switch (result) {
    case 1:
        if (agent_peer_allowed(up, email)) {
            agent_peer_serve(up, req, route, rel);
        } else {
            mm_info("refused %s: not in --allow", email);
            mm_reply_error(req, 403, "not_allowed", "%s does not share with %s", up->conf.email, email);
        }
        return;
    case 0:
        mm_reply_error(req, 403, "unknown_caller",
                       "the server does not show your key as online, so this peer cannot tell who you are: run mm up");
        return;
    default:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, retry.base, retry.len);
        mm_reply_error(req, 503, "unavailable", "this peer cannot reach the server to check who you are; retry shortly");
        return;
    }
}

static void agent_peer_on_resolved(void *data, int result, const char *email)
{
    agent_peer_op_t *op = data;
    h2o_req_t *req = mm_async_req(op);

    if (req != NULL && result != -2)
        agent_peer_decide(op->up, req, op->route, op->rel, result, email);
    mm_async_free(op);
}

static int agent_peer_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX in `in` (len bytes) into `out`; refuses %00 and bad escapes. 0 or -EINVAL. */
static int agent_peer_unescape(const char *in, size_t len, char *out, size_t size)
{
    size_t i, o = 0;

    for (i = 0; i != len; ++i) {
        int c = (unsigned char)in[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = agent_peer_hex(in[i + 1])) < 0 || (lo = agent_peer_hex(in[i + 2])) < 0)
                return -EINVAL;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= size)
            return -EINVAL;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static int agent_peer_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    agent_up_t *up = ((agent_peer_handler_t *)self)->up;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *p = req->path.base;
    char raw[PATH_MAX], rel[PATH_MAX], email[MM_EMAIL_MAX + 1];
    const agent_caller_t *caller;
    agent_route_t route;
    int r;

    if (h2o_memis(p, plen, H2O_STRLIT("/api/health")))
        route = AGENT_ROUTE_HEALTH;
    else if (h2o_memis(p, plen, H2O_STRLIT("/api/files")) || h2o_memis(p, plen, H2O_STRLIT("/api/files/")))
        route = AGENT_ROUTE_LIST;
    else if (plen > 11 && memcmp(p, "/api/files/", 11) == 0)
        route = AGENT_ROUTE_FILE;
    else {
        mm_reply_error(req, 404, "not_found", "no such endpoint: this peer serves /api/health and /api/files");
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET"));
        mm_reply_error(req, 405, "method_not_allowed", "this peer is read-only: use GET");
        return 0;
    }
    if ((caller = agent_peer_caller(up, req)) == NULL) {
        mm_reply_error(req, 401, "client_certificate_required", "send your certificate: mm ls and mm get do");
        return 0;
    }
    if (caller->status != MM_IDENTITY_OK) {
        mm_reply_error(req, 401,
                       caller->status == MM_IDENTITY_EXPIRED ? "client_certificate_expired" : "client_certificate_unsupported",
                       "your certificate is %s: make a new identity with mm init --force",
                       caller->status == MM_IDENTITY_EXPIRED ? "outside its validity period" : "not usable (key type or format)");
        return 0;
    }
    if (route == AGENT_ROUTE_HEALTH) {
        mm_reply_json(req, 200,
                      json_pack("{s:s,s:s,s:s,s:s}", "status", "ok", "email", up->conf.email, "peer_id", up->conf.peer_id,
                                "version", MM_VERSION));
        return 0;
    }
    /* the path, from the query (listing) or the URL (file), percent-decoded, then cleaned */
    if (route == AGENT_ROUTE_LIST) {
        r = mm_req_query(req, "path", raw, sizeof(raw));
        if (r == -ENOENT) {
            raw[0] = '\0';
            r = 0;
        }
    } else {
        r = agent_peer_unescape(p + 11, plen - 11, raw, sizeof(raw));
    }
    if (r < 0 || agent_files_clean(raw, strlen(raw), rel, sizeof(rel)) != 0) {
        mm_reply_error(req, 400, "invalid_path", "the path must be relative to the shared folder, without . or .. components");
        return 0;
    }
    if (up->public_) {
        agent_peer_serve(up, req, route, rel);
        return 0;
    }
    if ((r = agent_resolver_cached(up->resolver, caller->id.peer_id, email)) >= 0) {
        agent_peer_decide(up, req, route, rel, r, email);
    } else {
        agent_peer_thread_t *t = mm_thread_of(req)->user;
        agent_peer_op_t *op = mm_async_new(req, sizeof(*op));
        op->up = up;
        op->route = route;
        memcpy(op->rel, rel, strlen(rel) + 1);
        agent_resolver_ask(t->port, caller->id.peer_id, agent_peer_on_resolved, op);
    }
    return 0;
}

void agent_peer_register(h2o_hostconf_t *host, agent_up_t *up)
{
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    agent_peer_handler_t *h = (void *)h2o_create_handler(pathconf, sizeof(*h));

    h->super.on_req = agent_peer_on_req;
    h->up = up;
    pathconf->error_log.emit_request_errors = 0;
}
