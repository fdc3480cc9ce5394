/*
 * Routes hosts: dispatch over a route table with the SPEC's JSON 404, 405,
 * 413 and 415, the built-in health and metrics endpoints, and the access
 * logger that also feeds the request metrics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netdb.h>
#include <sys/time.h>
#include "mm/http.h"
#include "mm/log.h"
#include "http_internal.h"

typedef struct mm__dispatch {
    h2o_handler_t super;
    mm_server_t *server;
    const mm_route_t *routes;
    size_t n;
} mm__dispatch_t;

typedef struct mm__logger {
    h2o_logger_t super;
    mm_server_t *server;
    const mm_route_t *routes; /* NULL: one label, the path's */
    size_t n;
    mm__route_stats_t *stats; /* n + 1 (unmatched) or 1 */
    int quiet;                /* a routes host: access lines only at debug level */
} mm__logger_t;

static const char mm__builtin_paths[][9] = {"/livez", "/healthz", "/readyz", "/metrics"};

void mm__route_stats_init(mm__route_stats_t *st, const char *service, const char *route)
{
    char labels[256];
    size_t i;

    for (i = 1; i != 6; ++i) {
        snprintf(labels, sizeof(labels), "service=\"%s\",route=\"%s\",code=\"%zuxx\"", service, route, i);
        st->by_class[i] = mm_metrics_counter("mm_http_requests_total", "HTTP requests answered, by route and status class", labels);
    }
    st->by_class[0] = st->by_class[5];
    snprintf(labels, sizeof(labels), "service=\"%s\",route=\"%s\"", service, route);
    st->latency = mm_metrics_histogram("mm_http_request_duration_seconds",
                                       "Time from the request's first byte to the end of the response", labels, NULL, 0);
}

static int mm__route_matches(const mm_route_t *r, h2o_iovec_t path)
{
    size_t len = strlen(r->path);

    if (r->prefix)
        return path.len >= len && memcmp(path.base, r->path, len) == 0;
    return path.len == len && memcmp(path.base, r->path, len) == 0;
}

/* Index of the route answering `path`, or n when none does (any method). */
static size_t mm__route_index(const mm_route_t *routes, size_t n, h2o_req_t *req)
{
    size_t i;

    for (i = 0; i != n; ++i)
        if (mm__route_matches(&routes[i], req->path_normalized) &&
            h2o_memis(req->method.base, req->method.len, routes[i].method, strlen(routes[i].method)))
            return i;
    return n;
}

static int mm__is_json_type(h2o_iovec_t ct)
{
    static const char json[] = "application/json";
    size_t n = sizeof(json) - 1;

    if (ct.len < n || strncasecmp(ct.base, json, n) != 0)
        return 0;
    return ct.len == n || ct.base[n] == ';' || ct.base[n] == ' ';
}

static void mm__builtin(h2o_req_t *req, mm_server_t *s, size_t which)
{
    const mm_server_conf_t *conf = mm_server_conf(s);
    const char *why = "not ready";
    char *text;
    size_t len;

    switch (which) {
    case 0: /* /livez */
    case 1: /* /healthz */
        mm_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    case 2: /* /readyz */
        if (conf->ready == NULL || conf->ready(mm_thread_of(req), &why))
            mm_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
        else
            mm_reply_error(req, 503, "unavailable", "%s", why);
        return;
    default: /* /metrics */
        text = mm_metrics_render(&len);
        mm_reply_raw(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
        return;
    }
}

/* "GET" or "GET, POST": the methods of the routes answering `path`. */
static const char *mm__allowed(mm__dispatch_t *self, h2o_iovec_t path)
{
    static __thread char buf[64];
    size_t i, len = 0;

    buf[0] = '\0';
    for (i = 0; i != self->n; ++i) {
        if (!mm__route_matches(&self->routes[i], path))
            continue;
        int n = snprintf(buf + len, sizeof(buf) - len, "%s%s", len != 0 ? ", " : "", self->routes[i].method);
        if (n < 0 || (size_t)n >= sizeof(buf) - len)
            break;
        len += (size_t)n;
    }
    return buf;
}

static int mm__dispatch_on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    mm__dispatch_t *self = (void *)_self;
    h2o_iovec_t path = req->path_normalized;
    size_t i, path_known = 0;
    const mm_route_t *route = NULL;

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        for (i = 0; i != MM_ARRAY_SIZE(mm__builtin_paths); ++i) {
            if (h2o_memis(path.base, path.len, mm__builtin_paths[i], strlen(mm__builtin_paths[i]))) {
                mm__builtin(req, self->server, i);
                return 0;
            }
        }
    }
    for (i = 0; i != self->n; ++i) {
        if (!mm__route_matches(&self->routes[i], path))
            continue;
        path_known = 1;
        if (h2o_memis(req->method.base, req->method.len, self->routes[i].method, strlen(self->routes[i].method))) {
            route = &self->routes[i];
            break;
        }
    }
    /* Behind the gateway the path has lost its prefix: messages name methods, not paths. */
    if (route == NULL) {
        if (path_known) {
            const char *allowed = mm__allowed(self, path);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, h2o_strdup(&req->pool, allowed, SIZE_MAX).base,
                           strlen(allowed));
            mm_reply_error(req, 405, "method_not_allowed", "%.*s is not allowed on this endpoint; it accepts %s",
                           (int)req->method.len, req->method.base, allowed);
        } else {
            mm_reply_error(req, 404, "not_found", "no such endpoint");
        }
        return 0;
    }
    if (req->entity.len > MM_BODY_MAX) {
        mm_reply_error(req, 413, "body_too_large", "the body is %zu bytes; the limit is %d", req->entity.len, MM_BODY_MAX);
        return 0;
    }
    if (req->entity.len != 0) {
        ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
        if (ct == -1 || !mm__is_json_type(req->headers.entries[ct].value)) {
            mm_reply_error(req, 415, "unsupported_media_type", "send the body as application/json");
            return 0;
        }
    }
    route->fn(req, mm_thread_of(req));
    return 0;
}

static double mm__elapsed_s(h2o_req_t *req)
{
    struct timeval now;

    gettimeofday(&now, NULL);
    return (double)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) +
           (double)(now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1e6;
}

static void mm__log_access(h2o_logger_t *_self, h2o_req_t *req)
{
    mm__logger_t *self = (void *)_self;
    const mm_server_conf_t *conf = mm_server_conf(self->server);
    mm__route_stats_t *st = &self->stats[self->quiet ? mm__route_index(self->routes, self->n, req) : 0];
    int status = req->res.status, cls = status / 100;
    double elapsed = mm__elapsed_s(req);
    h2o_iovec_t rid = mm_req_header(req, "x-mm-request-id"), pid = mm_req_header(req, "x-mm-peer-id");
    char peer[NI_MAXHOST + 8] = "";
    struct sockaddr_storage ss;
    socklen_t sslen;
    json_t *line;

    mm_counter_add(st->by_class[cls >= 1 && cls <= 5 ? cls : 0], 1);
    mm_histogram_observe(st->latency, elapsed);
    if (!conf->access_log || self->quiet)
        return; /* routes hosts are internal: probes and the gateway's own access log say enough */
    if ((sslen = req->conn->callbacks->get_peername(req->conn, (void *)&ss)) != 0)
        h2o_socket_getnumerichost((void *)&ss, sslen, peer);
    line = json_object();
    json_object_set_new(line, "level", json_string("info"));
    json_object_set_new(line, "msg", json_string("access"));
    json_object_set_new(line, "client", json_string(peer));
    json_object_set_new(line, "method", json_stringn(req->method.base, req->method.len));
    json_object_set_new(line, "path", json_stringn(req->input.path.base, req->input.path.len));
    json_object_set_new(line, "proto", json_integer(req->version >= 0x200 ? 2 : 1));
    json_object_set_new(line, "status", json_integer(status));
    json_object_set_new(line, "bytes", json_integer((json_int_t)req->bytes_sent));
    json_object_set_new(line, "duration_ms", json_real(elapsed * 1000));
    if (rid.len != 0)
        json_object_set_new(line, "request_id", json_stringn(rid.base, rid.len));
    if (pid.len != 0)
        json_object_set_new(line, "peer_id", json_stringn(pid.base, pid.len));
    mm_log_json(line);
}

static void mm__logger_dispose(h2o_logger_t *_self)
{
    mm__logger_t *self = (void *)_self;

    free(self->stats);
}

static mm__logger_t *mm__logger_new(mm_server_t *s, h2o_pathconf_t *pathconf, const mm_route_t *routes, size_t n, int routes_host)
{
    mm__logger_t *lg = (void *)h2o_create_logger(pathconf, sizeof(*lg));
    const char *service = mm_server_conf(s)->name;
    size_t i;

    /* h2o would print request errors as plain text on stderr; ours are JSON lines */
    pathconf->error_log.emit_request_errors = 0;
    lg->super.log_access = mm__log_access;
    lg->super.dispose = mm__logger_dispose;
    lg->server = s;
    lg->routes = routes;
    lg->n = n;
    lg->quiet = routes_host;
    lg->stats = mm_xcalloc(routes != NULL ? n + 1 : 1, sizeof(*lg->stats));
    if (!routes_host) {
        mm__route_stats_init(&lg->stats[0], service, pathconf->path.base);
        return lg;
    }
    for (i = 0; i != n; ++i) {
        char label[128];
        snprintf(label, sizeof(label), "%s %s%s", routes[i].method, routes[i].path, routes[i].prefix ? "*" : "");
        mm__route_stats_init(&lg->stats[i], service, label);
    }
    mm__route_stats_init(&lg->stats[n], service, "other");
    return lg;
}

void mm_server_log_path(mm_server_t *s, h2o_pathconf_t *pathconf)
{
    mm__logger_new(s, pathconf, NULL, 0, 0);
}

h2o_hostconf_t *mm_server_routes_host(mm_server_t *s, const char *hostname, const mm_route_t *routes, size_t n)
{
    h2o_hostconf_t *host = h2o_config_register_host(mm_server_globalconf(s), h2o_iovec_init(hostname, strlen(hostname)), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    mm__dispatch_t *d = (void *)h2o_create_handler(pathconf, sizeof(*d));

    d->super.on_req = mm__dispatch_on_req;
    d->server = s;
    d->routes = routes;
    d->n = n;
    mm__logger_new(s, pathconf, routes, n, 1);
    return host;
}
