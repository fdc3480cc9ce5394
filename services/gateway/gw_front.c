/*
 * The public host: for each service prefix, an identity handler in front of
 * h2o's reverse proxy, and a JSON 404 for every other path.
 *
 * The identity handler is the whole security boundary of the suite. It
 * removes every X-MM-* and X-Forwarded-For header the client sent, answers
 * 401/403/413/429/503 itself, and otherwise adds the verified identity as
 * X-MM-* headers and returns -1, which hands the request to the proxy
 * registered after it on the same path.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "mm/log.h"
#include "gw.h"

typedef struct gw_route {
    const char *prefix; /* "/api/relay" */
    const char *name;   /* "mm-tracker", for messages */
    size_t url_offset;  /* of the service's URL in gw_config_t */
    int admin;          /* only MM_ADMIN_PEER_IDS */
} gw_route_t;

static const gw_route_t gw_routes[] = {
    {"/api/relay", "mm-tracker", offsetof(gw_config_t, tracker_url), 0},
    {"/api/bootstrap", "mm-bootstrap", offsetof(gw_config_t, bootstrap_url), 0},
    {"/api/signal", "mm-signal", offsetof(gw_config_t, signal_url), 0},
    {"/admin", "mm-admin", offsetof(gw_config_t, admin_url), 1},
};

struct gw {
    mm_server_t *server;
    const gw_config_t *conf;
    SSL_CTX *ssl;
    int ca_mode;
    h2o_hostconf_t *host;
    mm_ratelimit_t *ratelimit;
    char **admin_ids;
    size_t nadmin_ids;
    char *upstream_urls[4]; /* what the proxies' h2o_url_t point into */
    char *unavailable_body; /* 503 for an unreachable service, in the SPEC's error shape */
    mm_counter_t *rate_limited, *denied[5];
};

typedef struct gw_front_handler {
    h2o_handler_t super;
    gw_t *gw;
    const gw_route_t *route;
    int has_upstream;
} gw_front_handler_t;

/* Turns h2o's plain-text 502 (upstream unreachable) into the SPEC's 503. */
typedef struct gw_502_filter {
    h2o_filter_t super;
    const char *body; /* the SPEC's 503 body, made once by gw_front_new */
    size_t len;
} gw_502_filter_t;

typedef struct gw_502_ostream {
    h2o_ostream_t super;
    const gw_502_filter_t *filter;
    int sent;
} gw_502_ostream_t;

h2o_hostconf_t *gw_front_host(gw_t *gw)
{
    return gw->host;
}

static int gw_is_admin(gw_t *gw, const char *peer_id)
{
    size_t i;

    for (i = 0; i != gw->nadmin_ids; ++i)
        if (strcmp(gw->admin_ids[i], peer_id) == 0)
            return 1;
    return 0;
}

/* Removes every header the client must not choose: X-MM-* and X-Forwarded-For. */
static void gw_strip_headers(h2o_req_t *req)
{
    size_t i = 0;

    while (i < req->headers.size) {
        h2o_iovec_t n = *req->headers.entries[i].name;
        if ((n.len >= 5 && strncasecmp(n.base, "x-mm-", 5) == 0) ||
            (n.len == 15 && strncasecmp(n.base, "x-forwarded-for", 15) == 0))
            h2o_delete_header(&req->headers, (ssize_t)i);
        else
            ++i;
    }
}

/* "ip:port" of the client (from the PROXY header when trusted; h2o already
 * applied it), IPv4-mapped IPv6 shown as IPv4. */
static size_t gw_client_addr(h2o_req_t *req, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (void *)&ss);
    char ip[INET6_ADDRSTRLEN];
    int n;

    if (len == 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (void *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        n = snprintf(buf, size, "%s:%u", ip, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (void *)&ss;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], ip, sizeof(ip));
            n = snprintf(buf, size, "%s:%u", ip, ntohs(sin6->sin6_port));
        } else {
            inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
            n = snprintf(buf, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
        }
    } else {
        return 0;
    }
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static void gw_add(h2o_req_t *req, const char *name, const char *value, size_t len)
{
    h2o_add_header_by_str(&req->pool, &req->headers, name, strlen(name), 0, NULL, h2o_strdup(&req->pool, value, len).base, len);
}

static int gw_deny(gw_t *gw, h2o_req_t *req, gw_ident_status_t status)
{
    static const struct {
        const char *code, *message;
    } why[] = {
        [GW_IDENT_NONE] = {"client_certificate_required",
                           "send a client certificate (curl --cert cert.pem --key key.pem); any self-signed certificate "
                           "with your email will do"},
        [GW_IDENT_EXPIRED] = {"client_certificate_expired",
                              "the client certificate is expired or not yet valid; renew it (mm init --force keeps no key, "
                              "renewing with the same key keeps your identity)"},
        [GW_IDENT_UNSUPPORTED] = {"client_certificate_unsupported",
                                  "the client certificate's key is not accepted: use EC P-256/P-384, Ed25519 or RSA >= 2048"},
        [GW_IDENT_UNTRUSTED] = {"client_certificate_untrusted", "the client certificate does not chain to a CA this server trusts"},
    };

    mm_counter_add(gw->denied[status], 1);
    mm_reply_error(req, 401, why[status].code, "%s", why[status].message);
    return 0;
}

/* A request id: 64 random bits per thread, then a counter. Unique without a
 * call into the CSPRNG per request; nothing relies on it being unguessable. */
static void gw_request_id(char *out)
{
    static __thread uint64_t seed, counter;
    uint8_t raw[16];
    size_t i;

    if (seed == 0)
        mm_random_bytes(&seed, sizeof(seed));
    ++counter;
    for (i = 0; i != 8; ++i) {
        raw[i] = (uint8_t)(seed >> (56 - 8 * i));
        raw[8 + i] = (uint8_t)(counter >> (56 - 8 * i));
    }
    mm_hex_encode(out, raw, sizeof(raw));
}

/* The services' health and metrics endpoints are for operators and probes
 * on the internal network, never for the Internet. */
static int gw_is_internal_path(h2o_req_t *req, const gw_route_t *route)
{
    static const char *const internal[] = {"/livez", "/healthz", "/readyz", "/metrics"};
    size_t plen = strlen(route->prefix), i;
    h2o_iovec_t rest;

    if (req->path_normalized.len < plen)
        return 0;
    rest = h2o_iovec_init(req->path_normalized.base + plen, req->path_normalized.len - plen);
    for (i = 0; i != MM_ARRAY_SIZE(internal); ++i)
        if (h2o_memis(rest.base, rest.len, internal[i], strlen(internal[i])))
            return 1;
    return 0;
}

static int gw_front_on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    gw_front_handler_t *self = (void *)_self;
    gw_t *gw = self->gw;
    const gw_ident_t *ident;
    gw_ident_status_t status;
    char addr[64], rid[33];
    uint64_t wait_ms;
    size_t n;

    if (gw_is_internal_path(req, self->route)) {
        mm_reply_error(req, 404, "not_found", "no such endpoint: %.*s", (int)req->path_normalized.len, req->path_normalized.base);
        return 0;
    }
    gw_strip_headers(req);
    ident = gw_tls_identity(gw->ssl, gw->ca_mode, req);
    status = ident->status;
    if (status == GW_IDENT_OK && ident->id.not_after != 0 && (int64_t)time(NULL) > ident->id.not_after)
        status = GW_IDENT_EXPIRED; /* the certificate expired during a long-lived connection */
    if (status != GW_IDENT_OK)
        return gw_deny(gw, req, status);
    if (self->route->admin && !gw_is_admin(gw, ident->id.peer_id)) {
        mm_reply_error(req, 403, "forbidden", "this certificate is not an administrator's (MM_ADMIN_PEER_IDS)");
        return 0;
    }
    if ((wait_ms = mm_ratelimit_take(gw->ratelimit, ident->id.peer_id, MM_PEER_ID_LEN, mm_mono_ms())) != 0) {
        mm_counter_add(gw->rate_limited, 1);
        mm_reply_rate_limited(req, wait_ms);
        return 0;
    }
    if (req->entity.len > MM_BODY_MAX) {
        mm_reply_error(req, 413, "body_too_large", "the body is %zu bytes; the limit is %d", req->entity.len, MM_BODY_MAX);
        return 0;
    }
    if (!self->has_upstream) {
        mm_reply_unavailable(req, self->route->name);
        return 0;
    }
    gw_add(req, "x-mm-peer-id", ident->id.peer_id, MM_PEER_ID_LEN);
    gw_add(req, "x-mm-cert-fingerprint", ident->id.fingerprint, MM_PEER_ID_LEN);
    if (ident->id.has_email)
        gw_add(req, "x-mm-peer-email", ident->id.email, strlen(ident->id.email));
    if ((n = gw_client_addr(req, addr, sizeof(addr))) != 0)
        gw_add(req, "x-mm-client-addr", addr, n);
    gw_request_id(rid);
    gw_add(req, "x-mm-request-id", rid, 32);
    return -1; /* on to the proxy */
}

static int gw_not_found_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    mm_reply_error(req, 404, "not_found", "no such endpoint: %.*s (the API lives under /api/)", (int)req->path_normalized.len,
                   req->path_normalized.base);
    return 0;
}

static void gw_502_do_send(h2o_ostream_t *_self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    gw_502_ostream_t *self = (void *)_self;
    h2o_iovec_t out = h2o_iovec_init(self->filter->body, self->filter->len);

    if (self->sent) {
        h2o_ostream_send_next(&self->super, req, NULL, 0, state);
        return;
    }
    self->sent = 1;
    h2o_ostream_send_next(&self->super, req, &out, 1, state);
}

static void gw_502_on_setup_ostream(h2o_filter_t *_self, h2o_req_t *req, h2o_ostream_t **slot)
{
    gw_502_filter_t *self = (void *)_self;
    gw_502_ostream_t *os;
    ssize_t i;

    /* Our services never answer 502: a 502 here is h2o's "cannot reach upstream". */
    if (req->res.status == 502) {
        req->res.status = 503;
        req->res.reason = "Service Unavailable";
        while ((i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1)) != -1)
            h2o_delete_header(&req->res.headers, i);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        req->res.content_length = SIZE_MAX; /* our body has another length; let h2o frame it */
        os = (void *)h2o_add_ostream(req, sizeof(*os), slot);
        os->super.do_send = gw_502_do_send;
        os->filter = self;
        os->sent = 0;
        slot = &os->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

/* "unix:/path" -> "http://[unix:/path]/"; "http://h:p" -> "http://h:p/".
 * The parsed URL points into a string that lives as long as the process,
 * like the rest of the h2o configuration. */
static int gw_upstream_url(const char *in, h2o_url_t *url, char **keep)
{
    char buf[512];
    int n;

    if (strncmp(in, "unix:", 5) == 0)
        n = snprintf(buf, sizeof(buf), "http://[unix:%s]/", in + 5);
    else
        n = snprintf(buf, sizeof(buf), "%s%s", in, in[strlen(in) - 1] == '/' ? "" : "/");
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    *keep = mm_xstrndup(buf, (size_t)n);
    return h2o_url_parse(*keep, (size_t)n, url);
}

static void gw_parse_admin_ids(gw_t *gw, const char *list)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        size_t len = strcspn(p, ", ");
        if (len != 0) {
            gw->admin_ids = mm_xrealloc(gw->admin_ids, (gw->nadmin_ids + 1) * sizeof(char *));
            gw->admin_ids[gw->nadmin_ids++] = mm_xstrndup(p, len);
            if (!mm_peer_id_valid(p, len))
                mm_warn("MM_ADMIN_PEER_IDS: \"%.*s\" is not a peer_id (64 lowercase hex characters)", (int)len, p);
        }
        p += len;
        p += strspn(p, ", ");
    }
}

void gw_front_free(gw_t *gw)
{
    size_t i;

    if (gw == NULL)
        return;
    for (i = 0; i != gw->nadmin_ids; ++i)
        free(gw->admin_ids[i]);
    free(gw->admin_ids);
    for (i = 0; i != MM_ARRAY_SIZE(gw->upstream_urls); ++i)
        free(gw->upstream_urls[i]);
    free(gw->unavailable_body);
    mm_ratelimit_free(gw->ratelimit);
    free(gw);
}

gw_t *gw_front_new(mm_server_t *s, const gw_config_t *conf, SSL_CTX *ssl, mm_err_t *err)
{
    static const char *const denied_codes[] = {"", "required", "expired", "unsupported", "untrusted"};
    h2o_globalconf_t *gc = mm_server_globalconf(s);
    gw_t *gw = mm_xcalloc(1, sizeof(*gw));
    h2o_pathconf_t *pathconf;
    json_t *body;
    size_t i;
    char labels[64];

    gw->server = s;
    gw->conf = conf;
    gw->ssl = ssl;
    gw->ca_mode = conf->client_ca_file != NULL && conf->client_ca_file[0] != '\0';
    gw->ratelimit = mm_ratelimit_new((double)conf->rate_limit, (double)conf->rate_burst, 1000000);
    body = mm_error_body("unavailable", "the service behind this path is unavailable; nothing was changed, retry shortly");
    gw->unavailable_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    gw->rate_limited = mm_metrics_counter("mm_gateway_rate_limited_total", "Requests refused with 429", NULL);
    for (i = 1; i != MM_ARRAY_SIZE(denied_codes); ++i) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", denied_codes[i]);
        gw->denied[i] = mm_metrics_counter("mm_gateway_identity_denied_total", "Requests refused for their certificate", labels);
    }
    gw_parse_admin_ids(gw, conf->admin_peer_ids);

    gc->proxy.emit_x_forwarded_headers = 0; /* the identity headers carry the client address */
    gc->proxy.emit_via_header = 0;
    gc->proxy.io_timeout = (uint64_t)conf->upstream_timeout;
    gw->host = h2o_config_register_host(gc, h2o_iovec_init(H2O_STRLIT("public")), 65535);
    for (i = 0; i != MM_ARRAY_SIZE(gw_routes); ++i) {
        const char *upstream = *(const char *const *)((const char *)conf + gw_routes[i].url_offset);
        gw_front_handler_t *h;
        h2o_url_t url;
        gw_502_filter_t *f;

        pathconf = h2o_config_register_path(gw->host, gw_routes[i].prefix, 0);
        h = (void *)h2o_create_handler(pathconf, sizeof(*h));
        h->super.on_req = gw_front_on_req;
        h->gw = gw;
        h->route = &gw_routes[i];
        if (upstream != NULL && upstream[0] != '\0') {
            h2o_proxy_config_vars_t pc = {.io_timeout = (uint64_t)conf->upstream_timeout, .keepalive_timeout = 2000};
            if (gw_upstream_url(upstream, &url, &gw->upstream_urls[i]) != 0) {
                mm_err_set(err, "the URL of %s (\"%s\") is invalid: expected http://host:port or unix:/path", gw_routes[i].name,
                           upstream);
                gw_front_free(gw);
                return NULL;
            }
            h2o_proxy_register_reverse_proxy(pathconf, &url, &pc);
            h->has_upstream = 1;
        }
        f = (void *)h2o_create_filter(pathconf, sizeof(*f));
        f->super.on_setup_ostream = gw_502_on_setup_ostream;
        f->body = gw->unavailable_body;
        f->len = strlen(gw->unavailable_body);
        mm_server_log_path(s, pathconf);
    }
    pathconf = h2o_config_register_path(gw->host, "/", 0);
    h2o_create_handler(pathconf, sizeof(h2o_handler_t))->on_req = gw_not_found_on_req;
    mm_server_log_path(s, pathconf);
    return gw;
}
