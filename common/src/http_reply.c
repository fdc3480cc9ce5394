/*
 * The one reply path, request helpers (identity headers, query, JSON body)
 * and the guard that lets asynchronous handlers outlive a reset stream.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/http.h"
#include "mm/identity.h"
#include "mm/log.h"

void mm_reply_raw(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t buf = h2o_strdup(&req->pool, body, len);

    req->res.status = status;
    req->res.reason = "";
    req->res.content_length = len; /* h2o_send_inline leaves it unset: HTTP/1.0 keep-alive needs it */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_start_response(req, &generator);
    h2o_send(req, &buf, 1, 1);
}

void mm_reply_json(h2o_req_t *req, int status, json_t *body)
{
    char *text;

    if (body == NULL)
        body = json_object();
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    if (text == NULL) {
        /* jansson fails to serialize only when out of memory, which is fatal here (STYLE.md) */
        mm_error("json_dumps failed: out of memory");
        abort();
    }
    mm_reply_raw(req, status, "application/json", text, strlen(text));
    free(text);
}

void mm_reply_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    mm_reply_json(req, status, mm_error_body(code, message));
}

void mm_reply_problem(h2o_req_t *req, const mm_problem_t *p)
{
    mm_reply_error(req, p->status, p->code, "%s", p->message);
}

static void mm__retry_after(h2o_req_t *req, uint64_t seconds)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)seconds);

    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, h2o_strdup(&req->pool, buf, (size_t)n).base,
                   (size_t)n);
}

void mm_reply_unavailable(h2o_req_t *req, const char *what)
{
    mm__retry_after(req, 1);
    mm_reply_error(req, 503, "unavailable", "%s is unavailable; nothing was changed, retry shortly", what);
}

void mm_reply_rate_limited(h2o_req_t *req, uint64_t retry_after_ms)
{
    uint64_t s = (retry_after_ms + 999) / 1000;

    mm__retry_after(req, s != 0 ? s : 1);
    mm_reply_error(req, 429, "rate_limited", "too many requests from this identity; retry after %llu s",
                   (unsigned long long)(s != 0 ? s : 1));
}

int mm_req_json(h2o_req_t *req, json_t **out)
{
    mm_problem_t p;

    if (mm_json_decode_object(req->entity.base, req->entity.len, out, &p) != 0) {
        mm_reply_problem(req, &p);
        return -EINVAL;
    }
    return 0;
}

h2o_iovec_t mm_req_header(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);

    return i == -1 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

static void mm__copy_header(h2o_req_t *req, const char *name, char *dst, size_t size)
{
    h2o_iovec_t v = mm_req_header(req, name);
    size_t n = v.len < size - 1 ? v.len : size - 1;

    if (n != 0) /* an absent header has no base: memcpy(dst, NULL, 0) is undefined */
        memcpy(dst, v.base, n);
    dst[n] = '\0';
}

int mm_req_peer(h2o_req_t *req, mm_peer_t *peer)
{
    char *p;

    mm__copy_header(req, "x-mm-peer-id", peer->peer_id, sizeof(peer->peer_id));
    mm__copy_header(req, "x-mm-cert-fingerprint", peer->fingerprint, sizeof(peer->fingerprint));
    mm__copy_header(req, "x-mm-peer-email", peer->email, sizeof(peer->email));
    mm__copy_header(req, "x-mm-client-addr", peer->client_addr, sizeof(peer->client_addr));
    mm__copy_header(req, "x-mm-request-id", peer->request_id, sizeof(peer->request_id));
    /* "1.2.3.4:5" -> "1.2.3.4"; "[2001:db8::1]:5" -> "2001:db8::1" */
    if (peer->client_addr[0] == '[') {
        size_t n = strcspn(peer->client_addr + 1, "]");
        if (n >= sizeof(peer->client_ip))
            n = 0;
        memcpy(peer->client_ip, peer->client_addr + 1, n);
        peer->client_ip[n] = '\0';
    } else {
        size_t n = (p = strrchr(peer->client_addr, ':')) != NULL ? (size_t)(p - peer->client_addr) : strlen(peer->client_addr);
        if (n >= sizeof(peer->client_ip))
            n = 0;
        memcpy(peer->client_ip, peer->client_addr, n);
        peer->client_ip[n] = '\0';
    }
    if (!mm_peer_id_valid(peer->peer_id, strlen(peer->peer_id))) {
        mm_reply_error(req, 401, "client_certificate_required",
                       "this endpoint needs a client certificate: call it through the gateway with --cert/--key");
        return -ENOENT;
    }
    return 0;
}

static int mm__unhex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int mm_req_query(h2o_req_t *req, const char *name, char *buf, size_t size)
{
    const char *q, *end, *amp, *eq;
    size_t nlen = strlen(name), i, o;

    if (req->query_at == SIZE_MAX)
        return -ENOENT;
    q = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    for (; q < end; q = amp + 1) {
        if ((amp = memchr(q, '&', (size_t)(end - q))) == NULL)
            amp = end;
        eq = memchr(q, '=', (size_t)(amp - q));
        if (eq == NULL || (size_t)(eq - q) != nlen || memcmp(q, name, nlen) != 0)
            continue;
        for (i = 0, o = 0, ++eq; eq + i < amp; ++i) {
            int c = eq[i];
            if (c == '+') {
                c = ' ';
            } else if (c == '%') {
                int hi, lo;
                if (eq + i + 2 >= amp || (hi = mm__unhex(eq[i + 1])) < 0 || (lo = mm__unhex(eq[i + 2])) < 0)
                    return -EINVAL;
                c = hi << 4 | lo;
                i += 2;
            }
            if (c == '\0')
                return -EINVAL;
            if (o + 1 >= size)
                return -E2BIG;
            buf[o++] = (char)c;
        }
        buf[o] = '\0';
        return (int)o;
    }
    return -ENOENT;
}

int mm_req_query_int(h2o_req_t *req, const char *name, long min, long max, long def, long *out)
{
    char buf[24], *end = buf;
    int len = mm_req_query(req, name, buf, sizeof(buf));
    long v = 0;

    if (len == -ENOENT) {
        *out = def;
        return 0;
    }
    /* digits only: strtol alone would take " 5", "+5" and "5abc" */
    if (len > 0 && isdigit((unsigned char)buf[0]))
        v = strtol(buf, &end, 10);
    if (len <= 0 || end == buf || *end != '\0' || v < min || v > max) {
        mm_reply_error(req, 400, "invalid_field", "query parameter '%s' must be an integer from %ld to %ld", name, min, max);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static void mm__async_guard_dispose(void *p)
{
    mm_async_t **guard = p;

    if (*guard != NULL)
        (*guard)->req = NULL;
}

void *mm_async_new(h2o_req_t *req, size_t size)
{
    mm_async_t *op = mm_xcalloc(1, size);
    mm_async_t **guard = h2o_mem_alloc_shared(&req->pool, sizeof(*guard), mm__async_guard_dispose);

    *guard = op;
    op->req = req;
    op->guard = (void **)guard;
    return op;
}

h2o_req_t *mm_async_req(void *_op)
{
    return ((mm_async_t *)_op)->req;
}

void mm_async_free(void *_op)
{
    mm_async_t *op = _op;

    if (op == NULL)
        return;
    if (op->req != NULL)
        *op->guard = NULL; /* the pool may outlive us: make its dispose a no-op */
    free(op);
}
