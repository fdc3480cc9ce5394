/*
 * Asynchronous Redis client: hiredis 0.14.1 async with an adapter for the
 * h2o evloop. The loop watches a dup() of hiredis' socket through an h2o
 * socket made with H2O_SOCKET_FLAG_DONT_READ; hiredis does the I/O when
 * told the socket is ready (redisAsyncHandleRead/Write).
 *
 * States: DOWN (the retry timer runs) -> CONNECTING (connect(2) in progress,
 * under a connect timeout) -> SELECTING (SELECT db sent, when db != 0) ->
 * UP (commands accepted, on_connect has run) -> LOST (hiredis is failing
 * the commands in flight) -> DOWN.
 *
 * hiredis rules this file keeps:
 *  - after the disconnect callback, or a connect callback with an error,
 *    hiredis frees the context: `ac` is forgotten there and never touched;
 *  - redisAsyncFree is never called from inside a hiredis callback: a user
 *    callback that frees the client only marks it `closing`, and the
 *    outermost frame of this file (`depth`) finishes the job;
 *  - every command callback runs exactly once: hiredis calls it with the
 *    reply, or with NULL when the link dies or the client is freed, and our
 *    trampoline frees its record right after;
 *  - no user code runs in a timer callback (h2o keeps using the timer's
 *    h2o_timeout_t after the callback returns, so it must not be freed).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <hiredis/async.h>
#include "mm/log.h"
#include "mm/redis.h"
#include "mm/timer.h"

#define MM__REDIS_DEFAULT_PORT 6379
#define MM__REDIS_BACKOFF_MIN_MS 100
#define MM__REDIS_BACKOFF_MAX_MS 5000
/* hiredis 0.14 async has no connect timeout of its own. */
#define MM__REDIS_CONNECT_TIMEOUT_MS 10000

typedef enum mm__redis_state {
    MM__REDIS_DOWN,
    MM__REDIS_CONNECTING,
    MM__REDIS_SELECTING,
    MM__REDIS_UP,
    MM__REDIS_LOST
} mm__redis_state_t;

/* What a command's privdata points to; freed after its callback. */
typedef struct mm__redis_cmd {
    mm_redis_t *r;
    mm_redis_cb cb;
    void *data;
} mm__redis_cmd_t;

struct mm_redis {
    h2o_loop_t *loop;
    char *host; /* TCP, or */
    char *path; /* unix socket */
    int port;
    int db;
    char target[320]; /* for log lines */
    mm__redis_state_t state;
    redisAsyncContext *ac; /* NULL once hiredis freed it or is about to */
    h2o_socket_t *sock;    /* watches a dup of ac->c.fd */
    int reading;
    int write_armed; /* h2o_socket_notify_write is pending (h2o cannot cancel it) */
    int want_write;  /* ... and hiredis still wants it */
    int aborting;    /* we are freeing `ac` ourselves: its disconnect callback must not react */
    int depth;
    int closing;
    int logged_up;
    int logged_failure;
    uint64_t backoff_ms;
    mm_timer_t retry_timer;
    mm_timer_t connect_timer;
    mm_redis_connect_cb on_connect;
    void *on_connect_data;
    char *sub_pattern; /* a subscriber: PSUBSCRIBE this after every connect */
    mm_redis_message_cb on_message;
    void *on_message_data;
};

/* Exponential backoff with "equal jitter": half the step is fixed, half is
 * random, so clients restarted together do not reconnect in lockstep. */
static uint64_t mm__redis_next_backoff(mm_redis_t *r)
{
    uint64_t step = r->backoff_ms != 0 ? r->backoff_ms : MM__REDIS_BACKOFF_MIN_MS;
    uint32_t rnd;

    mm_random_bytes(&rnd, sizeof(rnd));
    r->backoff_ms = step * 2 < MM__REDIS_BACKOFF_MAX_MS ? step * 2 : MM__REDIS_BACKOFF_MAX_MS;
    return step / 2 + rnd % (step / 2 + 1);
}

/* ---- the evloop adapter: hiredis' ac->ev hooks, privdata = mm_redis_t ---- */

static void mm__redis_on_readable(h2o_socket_t *sock, const char *err);
static void mm__redis_on_writable(h2o_socket_t *sock, const char *err);

static void mm__redis_ev_add_read(void *privdata)
{
    mm_redis_t *r = privdata;

    if (r->sock != NULL && !r->reading) {
        r->reading = 1;
        h2o_socket_read_start(r->sock, mm__redis_on_readable);
    }
}

static void mm__redis_ev_del_read(void *privdata)
{
    mm_redis_t *r = privdata;

    if (r->sock != NULL && r->reading) {
        r->reading = 0;
        h2o_socket_read_stop(r->sock);
    }
}

/* h2o cannot cancel a write notification: `want_write` says whether the
 * next one is still for hiredis. */
static void mm__redis_ev_add_write(void *privdata)
{
    mm_redis_t *r = privdata;

    if (r->sock == NULL)
        return;
    r->want_write = 1;
    if (!r->write_armed) {
        r->write_armed = 1;
        h2o_socket_notify_write(r->sock, mm__redis_on_writable);
    }
}

static void mm__redis_ev_del_write(void *privdata)
{
    mm_redis_t *r = privdata;

    r->want_write = 0;
}

/* hiredis calls this while freeing the context, before it closes its fd. */
static void mm__redis_ev_cleanup(void *privdata)
{
    mm_redis_t *r = privdata;

    if (r->sock != NULL) {
        h2o_socket_close(r->sock); /* closes our dup; h2o frees the struct later */
        r->sock = NULL;
    }
    r->reading = 0;
    r->write_armed = 0;
    r->want_write = 0;
}

/* ---- connection life cycle ---- */

static void mm__redis_release(mm_redis_t *r)
{
    redisAsyncContext *ac = r->ac;

    if (ac != NULL) {
        /* commands in flight get NULL; the disconnect callback sees `closing` */
        r->depth++;
        redisAsyncFree(ac);
        r->depth--;
        r->ac = NULL;
    }
    mm__redis_ev_cleanup(r);
    free(r->host);
    free(r->path);
    free(r->sub_pattern);
    free(r);
}

static void mm__redis_leave(mm_redis_t *r)
{
    if (--r->depth == 0 && r->closing)
        mm__redis_release(r);
}

/* The connection (or the attempt) is over and hiredis has freed, or is about
 * to free, the context. A loss is logged once; the failed attempts that
 * follow it are not. */
static void mm__redis_down(mm_redis_t *r, const char *why)
{
    r->ac = NULL;
    r->state = MM__REDIS_DOWN;
    mm_timer_stop(&r->connect_timer);
    if (r->closing)
        return;
    if (r->logged_up) {
        mm_warn("redis: connection to %s lost: %s", r->target, why);
        r->logged_up = 0;
        r->logged_failure = 1;
    } else if (!r->logged_failure) {
        mm_warn("redis: cannot connect to %s (retrying in the background): %s", r->target, why);
        r->logged_failure = 1;
    } else {
        mm_debug("redis: connection attempt to %s failed: %s", r->target, why);
    }
    mm_timer_start(&r->retry_timer, mm__redis_next_backoff(r));
}

/* Messages of a subscriber's PSUBSCRIBE. hiredis keeps this callback for
 * the pattern and calls it for the confirmation, for every message, and
 * with NULL when the context goes: only messages reach the user. */
static void mm__redis_on_push(redisAsyncContext *ac, void *reply_, void *privdata)
{
    mm_redis_t *r = privdata;
    redisReply *reply = reply_;

    if (reply == NULL || r->closing || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 ||
        reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "pmessage") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING || reply->element[3]->type != REDIS_REPLY_STRING)
        return;
    r->depth++;
    r->on_message(reply->element[2]->str, reply->element[2]->len, reply->element[3]->str, reply->element[3]->len,
                  r->on_message_data);
    r->depth--;
}

static void mm__redis_up(mm_redis_t *r)
{
    mm_timer_stop(&r->connect_timer);
    r->state = MM__REDIS_UP;
    r->backoff_ms = 0;
    r->logged_failure = 0;
    r->logged_up = 1;
    mm_info("redis: connected to %s", r->target);
    if (r->sub_pattern != NULL && redisAsyncCommand(r->ac, mm__redis_on_push, r, "PSUBSCRIBE %s", r->sub_pattern) != REDIS_OK)
        mm_warn("redis: cannot subscribe to %s on %s", r->sub_pattern, r->target);
    if (r->on_connect != NULL) {
        r->depth++;
        r->on_connect(r, r->on_connect_data);
        r->depth--;
    }
}

static void mm__redis_on_select(redisAsyncContext *ac, void *reply_, void *privdata)
{
    mm_redis_t *r = privdata;
    redisReply *reply = reply_;

    if (reply == NULL || r->closing)
        return; /* the link is going down: the disconnect path takes over */
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!r->logged_failure)
            mm_warn("redis: SELECT %d on %s failed (retrying in the background): %s", r->db, r->target, reply->str);
        r->logged_failure = 1;
        r->state = MM__REDIS_LOST;
        redisAsyncDisconnect(ac); /* inside a reply callback hiredis defers it */
        return;
    }
    mm__redis_up(r);
}

/* hiredis' connect callback: on error it frees `ac` right after we return. */
static void mm__redis_on_connected(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac; /* hiredis' API gives const, its commands want mutable */
    mm_redis_t *r = ac->data;
    const char *argv[2];
    char db[16];

    if (status != REDIS_OK) {
        mm__redis_down(r, ac->c.errstr);
        return;
    }
    if (r->db == 0) {
        mm__redis_up(r);
        return;
    }
    snprintf(db, sizeof(db), "%d", r->db);
    argv[0] = "SELECT";
    argv[1] = db;
    r->state = MM__REDIS_SELECTING;
    /* on failure the connect timeout ends the attempt: freeing here is not allowed */
    if (redisAsyncCommandArgv(ac, mm__redis_on_select, r, 2, argv, NULL) != REDIS_OK)
        mm_warn("redis: cannot queue SELECT %d on %s", r->db, r->target);
}

static void mm__redis_on_disconnected(const redisAsyncContext *ac, int status)
{
    mm_redis_t *r = ac->data;

    r->ac = NULL;
    if (r->aborting || r->closing)
        return;
    mm__redis_down(r, status == REDIS_OK ? "connection closed" : ac->c.errstr);
}

/* Starts an attempt. Name resolution inside redisAsyncConnect blocks: use
 * an address or a unix socket in production URLs. */
static void mm__redis_connect(mm_redis_t *r)
{
    redisAsyncContext *ac;
    char msg[160];
    int fd;

    ac = r->path != NULL ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (ac == NULL) {
        mm__redis_down(r, "out of memory");
        return;
    }
    if (ac->err != 0 || (fd = fcntl(ac->c.fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        snprintf(msg, sizeof(msg), "%s", ac->err != 0 ? ac->c.errstr : strerror(errno));
        redisAsyncFree(ac); /* never attached: no callbacks */
        mm__redis_down(r, msg);
        return;
    }
    if (r->path == NULL)
        redisEnableKeepAlive(&ac->c);
    r->sock = h2o_evloop_socket_create(r->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    r->sock->data = r;
    r->ac = ac;
    r->state = MM__REDIS_CONNECTING;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = mm__redis_ev_add_read;
    ac->ev.delRead = mm__redis_ev_del_read;
    ac->ev.addWrite = mm__redis_ev_add_write;
    ac->ev.delWrite = mm__redis_ev_del_write;
    ac->ev.cleanup = mm__redis_ev_cleanup;
    redisAsyncSetDisconnectCallback(ac, mm__redis_on_disconnected);
    /* arms the first write notification: hiredis completes the connect there */
    redisAsyncSetConnectCallback(ac, mm__redis_on_connected);
    mm_timer_start(&r->connect_timer, MM__REDIS_CONNECT_TIMEOUT_MS);
}

static void mm__redis_on_retry(mm_timer_t *t)
{
    mm__redis_connect(t->data);
}

/* Also covers a SELECT that never answers. Only our SELECT callback can be
 * pending here (commands are refused until UP), so no user code runs. */
static void mm__redis_on_connect_timeout(mm_timer_t *t)
{
    mm_redis_t *r = t->data;
    redisAsyncContext *ac = r->ac;

    if (ac == NULL || r->state == MM__REDIS_UP)
        return;
    r->aborting = 1;
    redisAsyncFree(ac);
    r->aborting = 0;
    mm__redis_down(r, "connection attempt timed out");
}

static void mm__redis_on_readable(h2o_socket_t *sock, const char *err)
{
    mm_redis_t *r = sock->data;

    if (r->ac == NULL)
        return;
    r->depth++;
    redisAsyncHandleRead(r->ac);
    mm__redis_leave(r);
}

static void mm__redis_on_writable(h2o_socket_t *sock, const char *err)
{
    mm_redis_t *r = sock->data;

    r->write_armed = 0;
    if (!r->want_write || r->ac == NULL)
        return;
    r->depth++;
    redisAsyncHandleWrite(r->ac);
    mm__redis_leave(r);
}

/* The callback hiredis sees for every user command. A NULL reply means the
 * link is dying: is_up turns false before the user hears of it, so a retry
 * from the callback is refused instead of queued on a dead context. */
static void mm__redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    mm__redis_cmd_t *cmd = privdata;
    mm_redis_t *r = cmd->r;

    if (reply == NULL && r->state == MM__REDIS_UP)
        r->state = MM__REDIS_LOST;
    r->depth++;
    cmd->cb(r->closing ? NULL : reply, cmd->data);
    r->depth--;
    free(cmd);
}

/* hiredis 0.14 calls the callback of these again for every message (or keeps
 * it in a dictionary without telling us when it is dropped): that breaks the
 * exactly-once contract, so they are refused. */
static int mm__redis_is_push_command(const char *name, size_t len)
{
    static const char *const names[] = {"subscribe",    "psubscribe",   "ssubscribe", "unsubscribe",
                                        "punsubscribe", "sunsubscribe", "monitor"};
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(names); ++i)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

/* hiredis writes with write(2), not send(MSG_NOSIGNAL): writing to a link
 * Redis just closed raises SIGPIPE, whose default action kills the process.
 * Ignore it unless the program already chose a disposition. */
static void mm__redis_ignore_sigpipe(void)
{
    struct sigaction sa;

    if (sigaction(SIGPIPE, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) != 0 || sa.sa_handler != SIG_DFL)
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

mm_redis_t *mm_redis_new(h2o_loop_t *loop, const char *url, mm_err_t *err)
{
    mm_redis_t *r = mm_xcalloc(1, sizeof(*r));

    if (mm_redis_parse_url(url, &r->host, &r->port, &r->path, &r->db, err) != 0) {
        free(r);
        return NULL;
    }
    if (r->path != NULL)
        snprintf(r->target, sizeof(r->target), "unix:%s (db %d)", r->path, r->db);
    else if (strchr(r->host, ':') != NULL)
        snprintf(r->target, sizeof(r->target), "[%s]:%d (db %d)", r->host, r->port, r->db);
    else
        snprintf(r->target, sizeof(r->target), "%s:%d (db %d)", r->host, r->port, r->db);
    r->loop = loop;
    mm_timer_init(&r->retry_timer, loop, mm__redis_on_retry, r);
    mm_timer_init(&r->connect_timer, loop, mm__redis_on_connect_timeout, r);
    mm__redis_ignore_sigpipe();
    mm__redis_connect(r);
    return r;
}

void mm_redis_free(mm_redis_t *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    r->state = MM__REDIS_DOWN;
    mm_timer_dispose(&r->retry_timer);
    mm_timer_dispose(&r->connect_timer);
    if (r->logged_up)
        mm_info("redis: connection to %s closed", r->target);
    if (r->depth == 0)
        mm__redis_release(r);
}

void mm_redis_on_connect(mm_redis_t *r, mm_redis_connect_cb cb, void *data)
{
    r->on_connect = cb;
    r->on_connect_data = data;
}

int mm_redis_psubscribe(mm_redis_t *r, const char *pattern, mm_redis_message_cb cb, void *data)
{
    if (r->sub_pattern != NULL || pattern == NULL || cb == NULL)
        return -EINVAL;
    r->sub_pattern = mm_xstrdup(pattern);
    r->on_message = cb;
    r->on_message_data = data;
    if (mm_redis_is_up(r) && redisAsyncCommand(r->ac, mm__redis_on_push, r, "PSUBSCRIBE %s", r->sub_pattern) != REDIS_OK)
        mm_warn("redis: cannot subscribe to %s on %s", r->sub_pattern, r->target);
    return 0;
}

int mm_redis_is_up(mm_redis_t *r)
{
    return r != NULL && !r->closing && r->state == MM__REDIS_UP && r->ac != NULL;
}

int mm_redis_command(mm_redis_t *r, mm_redis_cb cb, void *data, int argc, const char **argv, const size_t *argvlen)
{
    mm__redis_cmd_t *cmd = NULL;
    int i;

    if (r == NULL || argc < 1 || argv == NULL)
        return -EINVAL;
    for (i = 0; i != argc; ++i)
        if (argv[i] == NULL)
            return -EINVAL;
    if (mm__redis_is_push_command(argv[0], argvlen != NULL ? argvlen[0] : strlen(argv[0])))
        return -EINVAL;
    if (!mm_redis_is_up(r))
        return -ENOTCONN;
    if (r->sub_pattern != NULL)
        return -EINVAL; /* a connection in subscriber mode takes no other commands */
    if (cb != NULL) {
        cmd = mm_xmalloc(sizeof(*cmd));
        *cmd = (mm__redis_cmd_t){.r = r, .cb = cb, .data = data};
    }
    if (redisAsyncCommandArgv(r->ac, cmd != NULL ? mm__redis_on_reply : NULL, cmd, argc, argv, argvlen) != REDIS_OK) {
        free(cmd);
        return (r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) != 0 ? -ENOTCONN : -ENOMEM;
    }
    return 0;
}

/* ---- URL parsing ---- */

/* Decimal digits only (no sign, no spaces), at most `max`. */
static int mm__redis_parse_uint(const char *s, size_t len, long max, long *out)
{
    long v = 0;
    size_t i;

    if (len == 0 || len > 10)
        return -EINVAL;
    for (i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int mm__redis_valid_host(const char *s, size_t len, int bracketed)
{
    size_t i;

    if (len == 0 || len > 255)
        return 0;
    for (i = 0; i != len; ++i) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
        if (!ok && !(bracketed ? (c == ':' || c == '%') : c == '_'))
            return 0;
    }
    return 1;
}

static int mm__redis_parse_unix(const char *s, char **path, mm_err_t *err)
{
    if (strncmp(s, "//", 2) == 0) {
        s += 2;
        if (*s != '/') {
            mm_err_set(err, "redis URL: unix:// must be followed by an absolute path (unix:///path/to/redis.sock)");
            return -EINVAL;
        }
    }
    if (s[0] != '/' || s[1] == '\0') {
        mm_err_set(err, "redis URL: a unix socket needs an absolute path (unix:/path/to/redis.sock)");
        return -EINVAL;
    }
    if (strlen(s) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        mm_err_set(err, "redis URL: unix socket path longer than %zu bytes", sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        return -EINVAL;
    }
    *path = mm_xstrdup(s);
    return 0;
}

/* redis://host[:port][/db] with host a name, an IPv4 address or [IPv6]. */
static int mm__redis_parse_tcp(const char *s, char **host, int *port, int *db, mm_err_t *err)
{
    const char *end = s + strcspn(s, "/?#"), *hend, *after;
    long v;

    if (memchr(s, '@', (size_t)(end - s)) != NULL) {
        mm_err_set(err, "redis URL: credentials are not supported");
        return -EINVAL;
    }
    if (*s == '[') {
        if ((hend = memchr(s, ']', (size_t)(end - s))) == NULL || !mm__redis_valid_host(s + 1, (size_t)(hend - s - 1), 1)) {
            mm_err_set(err, "redis URL: bad IPv6 address (expected [address])");
            return -EINVAL;
        }
        after = hend + 1;
        ++s;
    } else {
        if ((hend = memchr(s, ':', (size_t)(end - s))) == NULL)
            hend = end;
        if (!mm__redis_valid_host(s, (size_t)(hend - s), 0)) {
            mm_err_set(err, "redis URL: missing or bad host name");
            return -EINVAL;
        }
        after = hend;
    }
    *port = MM__REDIS_DEFAULT_PORT;
    if (after != end) {
        if (*after != ':' || mm__redis_parse_uint(after + 1, (size_t)(end - after - 1), 65535, &v) != 0 || v == 0) {
            mm_err_set(err, "redis URL: bad port (expected 1-65535)");
            return -EINVAL;
        }
        *port = (int)v;
    }
    *db = 0;
    if (*end == '?' || *end == '#') {
        mm_err_set(err, "redis URL: query strings and fragments are not supported");
        return -EINVAL;
    }
    if (*end == '/' && end[1] != '\0') {
        if (mm__redis_parse_uint(end + 1, strlen(end + 1), 2147483647L, &v) != 0) {
            mm_err_set(err, "redis URL: bad database number after the slash (expected 0, 1, ...)");
            return -EINVAL;
        }
        *db = (int)v;
    }
    *host = mm_xstrndup(s, (size_t)(hend - s));
    return 0;
}

int mm_redis_parse_url(const char *url, char **host, int *port, char **path, int *db, mm_err_t *err)
{
    char *h = NULL, *p = NULL;
    int prt = 0, d = 0, ret;

    if (url == NULL) {
        mm_err_set(err, "redis URL: missing");
        ret = -EINVAL;
    } else if (strncasecmp(url, "unix:", 5) == 0) {
        ret = mm__redis_parse_unix(url + 5, &p, err);
    } else if (strncasecmp(url, "redis://", 8) == 0) {
        ret = mm__redis_parse_tcp(url + 8, &h, &prt, &d, err);
    } else {
        mm_err_set(err, "redis URL: unsupported form (expected redis://host:port[/db] or unix:/path)");
        ret = -EINVAL;
    }
    if (ret != 0) {
        free(h);
        free(p);
        h = p = NULL;
        prt = d = 0;
    }
    if (host != NULL)
        *host = h;
    else
        free(h);
    if (path != NULL)
        *path = p;
    else
        free(p);
    if (port != NULL)
        *port = prt;
    if (db != NULL)
        *db = d;
    return ret;
}
