/*
 * Asynchronous PostgreSQL client on an h2o evloop. libpq speaks the protocol
 * in nonblocking mode; this file waits for its socket on the loop and keeps
 * the queue. The loop watches a dup() of libpq's socket through an h2o
 * socket made with H2O_SOCKET_FLAG_DONT_READ, so h2o only reports readiness
 * and libpq does every read and write itself.
 *
 * States: DOWN (the retry timer runs) -> CONNECTING (PQconnectPoll, driven
 * by the socket, under a connect timeout) -> UP (queries accepted) -> DOWN
 * on any failure, which completes every held query with MM_PG_UNAVAILABLE.
 *
 * A static query (mm_pg_query_static) is one request in two steps while it
 * is in flight: PQsendPrepare when its statement is not yet prepared on this
 * connection, then PQsendQueryPrepared. Still one command at a time, so the
 * FIFO, the error and the unavailable paths are those of a plain query; a
 * failed prepare is that query's error. Statements are numbered once for
 * the client's life; `conn_id` tells which connection each was prepared on,
 * so a reconnect forgets them all without touching the table.
 *
 * Re-entrancy rules this file keeps:
 *  - user callbacks run only from the socket callbacks or from mm_pg_free:
 *    never from mm_pg_query or mm_pg_query_static (their failures are
 *    handed to the loop through a write notification) and never from a
 *    timer callback (queries exist only while UP, and the timers run only
 *    while DOWN or CONNECTING). That matters because h2o keeps using an
 *    h2o_timeout_t after its callback returns, so a timer must not be
 *    disposed, nor its owner freed, inside it;
 *  - a callback may call mm_pg_query or mm_pg_free: `depth` counts this
 *    file's frames on the stack and the outermost one releases the memory.
 *    After any user callback, code re-checks `state` and `closing`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "mm/log.h"
#include "mm/pg.h"
#include "mm/timer.h"

#define MM__PG_BACKOFF_MIN_MS 100
#define MM__PG_BACKOFF_MAX_MS 5000
/* PQconnectPoll ignores connect_timeout: the caller has to keep time. */
#define MM__PG_CONNECT_TIMEOUT_MS 10000
/* The protocol carries the parameter count in 16 bits. */
#define MM__PG_MAX_PARAMS 65535
/* Static statements per client: a program has a handful. Past this (a
 * caller passing buffers, not constants) queries run unprepared. */
#define MM__PG_MAX_STMTS 256

typedef enum mm__pg_state { MM__PG_DOWN, MM__PG_CONNECTING, MM__PG_UP } mm__pg_state_t;

/* A statement of mm_pg_query_static, known by its text's address. */
typedef struct mm__pg_stmt {
    const char *sql;  /* the caller's constant; never freed */
    uint64_t conn_id; /* the connection it is prepared on; 0: none */
    char name[16];    /* "mm<n>", n = its index + 1 */
} mm__pg_stmt_t;

typedef struct mm__pg_req {
    h2o_linklist_t link; /* in mm_pg_t.queue until sent */
    mm_pg_cb cb;
    void *data;
    char *sql;     /* a copy; NULL for a static query, whose text is in pg->stmts[stmt] */
    int stmt;      /* index in pg->stmts, or -1 for a plain query */
    int preparing; /* in flight with its PQsendPrepare step */
    int nparams;
    char **params; /* copies; NULL entries are SQL NULLs */
} mm__pg_req_t;

struct mm_pg {
    h2o_loop_t *loop;
    char *conninfo;
    mm__pg_state_t state;
    PGconn *conn;
    uint64_t conn_id;               /* counts connection attempts: names `conn` */
    PostgresPollingStatusType poll; /* CONNECTING: what PQconnectPoll waits for */
    h2o_socket_t *sock;             /* watches a dup of PQsocket(conn) */
    dev_t sock_dev;                 /* identity of the socket `sock` watches */
    ino_t sock_ino;
    int write_armed; /* h2o_socket_notify_write is pending (h2o cannot cancel it) */
    int want_write;  /* ... and we still care when it fires */
    int flushing;    /* PQflush returned 1 (or failed): call it again from the loop */
    h2o_linklist_t queue;
    mm__pg_req_t *inflight;
    PGresult *inflight_res; /* what PQgetResult gave so far for `inflight` */
    size_t err_skip;        /* PQerrorMessage still starts with this much of the last query's error */
    int pumping;
    int depth;
    int closing;
    int logged_up;      /* "connected" was logged: the next loss is logged once */
    int logged_failure; /* a failure was logged since the last success: stay quiet */
    int logged_stmts;   /* the statement table filled up and that was logged */
    mm__pg_stmt_t *stmts;
    size_t nstmts, capstmts;
    uint64_t backoff_ms;
    mm_timer_t retry_timer;
    mm_timer_t connect_timer;
};

static void mm__pg_on_readable(h2o_socket_t *sock, const char *err);
static void mm__pg_on_writable(h2o_socket_t *sock, const char *err);
static void mm__pg_pump(mm_pg_t *pg);

/* libpq messages end with a newline and may span lines ("...failed: ...\n
 * \tIs the server running..."): fold them into one log-friendly line. */
static void mm__pg_oneline(char *out, size_t size, const char *msg)
{
    size_t n = 0;

    for (; msg != NULL && *msg != '\0' && n + 1 < size; ++msg) {
        char c = (*msg == '\n' || *msg == '\r' || *msg == '\t') ? ' ' : *msg;
        if (c == ' ' && (n == 0 || out[n - 1] == ' '))
            continue;
        out[n++] = c;
    }
    while (n > 0 && out[n - 1] == ' ')
        --n;
    out[n] = '\0';
}

/* libpq resets PQerrorMessage only when the next query starts, so a link
 * that dies while idle would be reported with the last query's error in
 * front ("ERROR: division by zero server closed the connection..."). */
static const char *mm__pg_conn_error(mm_pg_t *pg)
{
    const char *msg = PQerrorMessage(pg->conn);

    return pg->err_skip <= strlen(msg) ? msg + pg->err_skip : msg;
}

/* Exponential backoff with "equal jitter": half the step is fixed, half is
 * random, so clients restarted together do not reconnect in lockstep. */
static uint64_t mm__pg_next_backoff(mm_pg_t *pg)
{
    uint64_t step = pg->backoff_ms != 0 ? pg->backoff_ms : MM__PG_BACKOFF_MIN_MS;
    uint32_t rnd;

    mm_random_bytes(&rnd, sizeof(rnd));
    pg->backoff_ms = step * 2 < MM__PG_BACKOFF_MAX_MS ? step * 2 : MM__PG_BACKOFF_MAX_MS;
    return step / 2 + rnd % (step / 2 + 1);
}

static void mm__pg_req_free(mm__pg_req_t *req)
{
    int i;

    for (i = 0; i != req->nparams; ++i)
        free(req->params[i]);
    free(req->params);
    free(req->sql);
    free(req);
}

/* Runs the user's callback, then owns the cleanup: `res` is cleared and the
 * request freed once the callback returns, as pg.h promises. */
static void mm__pg_complete(mm_pg_t *pg, mm__pg_req_t *req, mm_pg_status_t status, PGresult *res)
{
    pg->depth++;
    req->cb(status, res, req->data);
    pg->depth--;
    PQclear(res);
    mm__pg_req_free(req);
}

static void mm__pg_fail_all(mm_pg_t *pg)
{
    mm__pg_req_t *req;

    if ((req = pg->inflight) != NULL) {
        pg->inflight = NULL;
        mm__pg_complete(pg, req, MM_PG_UNAVAILABLE, NULL);
    }
    while (!h2o_linklist_is_empty(&pg->queue)) {
        req = H2O_STRUCT_FROM_MEMBER(mm__pg_req_t, link, pg->queue.next);
        h2o_linklist_unlink(&req->link);
        mm__pg_complete(pg, req, MM_PG_UNAVAILABLE, NULL);
    }
}

static void mm__pg_close_socket(mm_pg_t *pg)
{
    if (pg->sock != NULL) {
        h2o_socket_close(pg->sock); /* closes our dup; h2o frees the struct later */
        pg->sock = NULL;
    }
    pg->write_armed = 0;
    pg->want_write = 0;
}

/* Drops the connection without calling anyone back. */
static void mm__pg_close(mm_pg_t *pg)
{
    mm__pg_close_socket(pg);
    PQclear(pg->inflight_res);
    pg->inflight_res = NULL;
    if (pg->conn != NULL) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    pg->flushing = 0;
    pg->err_skip = 0;
    pg->state = MM__PG_DOWN;
    mm_timer_stop(&pg->connect_timer); /* a no-op once disposed */
}

/* The one way out of CONNECTING and UP: drop the connection, schedule the
 * next attempt, then complete every query held with MM_PG_UNAVAILABLE (last,
 * because those callbacks may free the client). A loss is logged once; the
 * failed attempts that follow it are not. */
static void mm__pg_down(mm_pg_t *pg, const char *why)
{
    char msg[512];

    mm__pg_oneline(msg, sizeof(msg), why); /* `why` may live in the PGconn we free */
    if (pg->state == MM__PG_UP) {
        mm_warn("postgres: connection lost: %s", msg);
        pg->logged_up = 0;
        pg->logged_failure = 1;
    } else if (!pg->logged_failure) {
        mm_warn("postgres: cannot connect (retrying in the background): %s", msg);
        pg->logged_failure = 1;
    } else {
        mm_debug("postgres: connection attempt failed: %s", msg);
    }
    mm__pg_close(pg);
    if (!pg->closing)
        mm_timer_start(&pg->retry_timer, mm__pg_next_backoff(pg));
    mm__pg_fail_all(pg);
}

/* Makes `sock` watch libpq's current socket. libpq may replace its socket
 * during PQconnectPoll (next host or address, SSL/GSS fallback) and the new
 * one can get the same descriptor number, so the socket is recognised by
 * its inode (which our dup keeps from being reused), not by its number. */
static int mm__pg_watch_socket(mm_pg_t *pg)
{
    struct stat st;
    int fd = PQsocket(pg->conn), dupfd;

    if (fd < 0 || fstat(fd, &st) != 0)
        return -EBADF;
    if (pg->sock != NULL && st.st_dev == pg->sock_dev && st.st_ino == pg->sock_ino)
        return 0;
    mm__pg_close_socket(pg);
    if ((dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return -errno;
    pg->sock = h2o_evloop_socket_create(pg->loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
    pg->sock->data = pg;
    pg->sock_dev = st.st_dev;
    pg->sock_ino = st.st_ino;
    return 0;
}

/* h2o cannot cancel a write notification, so `want_write` says whether the
 * next one still matters. */
static void mm__pg_arm_write(mm_pg_t *pg)
{
    pg->want_write = 1;
    if (!pg->write_armed) {
        pg->write_armed = 1;
        h2o_socket_notify_write(pg->sock, mm__pg_on_writable);
    }
}

static void mm__pg_connect_wait(mm_pg_t *pg)
{
    if (mm__pg_watch_socket(pg) != 0) {
        mm__pg_down(pg, "libpq has no usable socket");
        return;
    }
    if (pg->poll == PGRES_POLLING_READING) {
        pg->want_write = 0;
        h2o_socket_read_start(pg->sock, mm__pg_on_readable);
    } else {
        /* level-triggered: an unwanted readable socket would spin the loop */
        h2o_socket_read_stop(pg->sock);
        mm__pg_arm_write(pg);
    }
}

static void mm__pg_connected(mm_pg_t *pg)
{
    if (PQsetnonblocking(pg->conn, 1) != 0 || mm__pg_watch_socket(pg) != 0) {
        mm__pg_down(pg, mm__pg_conn_error(pg));
        return;
    }
    mm_timer_stop(&pg->connect_timer);
    pg->state = MM__PG_UP;
    pg->backoff_ms = 0;
    pg->logged_failure = 0;
    pg->logged_up = 1;
    pg->want_write = 0;
    mm_info("postgres: connected (host %s, database %s, server %d)", PQhost(pg->conn), PQdb(pg->conn), PQserverVersion(pg->conn));
    h2o_socket_read_start(pg->sock, mm__pg_on_readable);
}

static void mm__pg_connect_step(mm_pg_t *pg)
{
    pg->poll = PQconnectPoll(pg->conn);
    switch (pg->poll) {
    case PGRES_POLLING_OK:
        mm__pg_connected(pg);
        break;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        mm__pg_connect_wait(pg);
        break;
    default:
        mm__pg_down(pg, mm__pg_conn_error(pg));
        break;
    }
}

/* Server messages outside a query (a FATAL before the server closes an idle
 * connection, WARNINGs, NOTICEs): into our JSON log, not libpq's stderr. */
static void mm__pg_on_notice(void *arg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    mm_log_level_t level = MM_LOG_DEBUG;

    if (sev == NULL)
        sev = "NOTICE";
    if (strcmp(sev, "WARNING") == 0)
        level = MM_LOG_WARN;
    else if (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0 || strcmp(sev, "ERROR") == 0)
        level = MM_LOG_INFO;
    mm_log(level, "postgres %s: %s (SQLSTATE %s)", sev, msg != NULL ? msg : "", mm_pg_sqlstate(res));
}

/* Starts an attempt. Name resolution inside PQconnectStart blocks: use an
 * address, a unix socket directory or hostaddr= in production conninfo. */
static void mm__pg_connect(mm_pg_t *pg)
{
    pg->conn_id++; /* a new server session: no statement is prepared on it */
    pg->conn = PQconnectStart(pg->conninfo);
    if (pg->conn == NULL) {
        mm__pg_down(pg, "out of memory");
        return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        mm__pg_down(pg, mm__pg_conn_error(pg));
        return;
    }
    PQsetNoticeReceiver(pg->conn, mm__pg_on_notice, pg);
    pg->state = MM__PG_CONNECTING;
    pg->poll = PGRES_POLLING_WRITING; /* what PQconnectStart implies */
    mm_timer_start(&pg->connect_timer, MM__PG_CONNECT_TIMEOUT_MS);
    mm__pg_connect_wait(pg);
}

static void mm__pg_on_retry(mm_timer_t *t)
{
    mm__pg_connect(t->data);
}

static void mm__pg_on_connect_timeout(mm_timer_t *t)
{
    mm_pg_t *pg = t->data;

    if (pg->state == MM__PG_CONNECTING)
        mm__pg_down(pg, "connection attempt timed out");
}

static int mm__pg_is_error(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);

    return st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK;
}

/* What pg.h and DESIGN.md call "unavailable": the connection is gone, or the
 * server says it is going away or not ready. PQstatus is checked first: an
 * error with no SQLSTATE on a dead connection is libpq's own. */
static int mm__pg_is_unavailable(PGconn *conn, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (PQstatus(conn) == CONNECTION_BAD)
        return 1;
    if (state == NULL)
        return 0;
    return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
           strcmp(state, "57P03") == 0;
}

/* Sends the next step of `req`: the query itself, or for a static query
 * the prepare its connection still lacks, else the execution. Never calls
 * back. A failed flush is left for the loop: the write notification calls
 * PQflush again and handles the error there. */
static int mm__pg_issue(mm_pg_t *pg, mm__pg_req_t *req)
{
    const char *const *params = (const char *const *)req->params;
    mm__pg_stmt_t *stmt = req->stmt >= 0 ? &pg->stmts[req->stmt] : NULL;
    int ok;

    req->preparing = stmt != NULL && stmt->conn_id != pg->conn_id;
    if (stmt == NULL)
        ok = PQsendQueryParams(pg->conn, req->sql, req->nparams, NULL, params, NULL, NULL, 0);
    else if (req->preparing)
        ok = PQsendPrepare(pg->conn, stmt->name, stmt->sql, req->nparams, NULL);
    else
        ok = PQsendQueryPrepared(pg->conn, stmt->name, req->nparams, params, NULL, NULL, 0);
    if (!ok)
        return -EIO;
    pg->err_skip = 0;
    if (PQflush(pg->conn) != 0) {
        pg->flushing = 1;
        mm__pg_arm_write(pg);
    }
    return 0;
}

/* Sends the head of the queue; never calls back (mm_pg_query uses it). */
static int mm__pg_send(mm_pg_t *pg)
{
    mm__pg_req_t *req = H2O_STRUCT_FROM_MEMBER(mm__pg_req_t, link, pg->queue.next);

    if (mm__pg_issue(pg, req) != 0)
        return -EIO;
    h2o_linklist_unlink(&req->link);
    pg->inflight = req;
    return 0;
}

/* Returns 0 when libpq's output is flushed or waits for the socket, or
 * -EIO after the connection was dropped. */
static int mm__pg_flush(mm_pg_t *pg)
{
    int ret = PQflush(pg->conn);

    if (ret < 0) {
        mm__pg_down(pg, mm__pg_conn_error(pg));
        return -EIO;
    }
    pg->flushing = ret;
    if (ret == 1)
        mm__pg_arm_write(pg);
    return 0;
}

/* PQgetResult said NULL: the query in flight is over, or for a static
 * query its prepare step is, and the execution follows as the same request.
 * A refused prepare completes the query with the server's error; the
 * statement stays unprepared, so its next use tries again. */
static void mm__pg_finish(mm_pg_t *pg)
{
    mm__pg_req_t *req = pg->inflight;
    PGresult *res = pg->inflight_res;
    char msg[512];

    pg->inflight_res = NULL;
    pg->err_skip = strlen(PQerrorMessage(pg->conn));
    if (res == NULL || (mm__pg_is_error(res) && mm__pg_is_unavailable(pg->conn, res))) {
        /* the server is going away: the query stays in flight and is
         * completed as unavailable with the rest of the queue */
        mm__pg_oneline(msg, sizeof(msg), res != NULL ? PQresultErrorMessage(res) : mm__pg_conn_error(pg));
        PQclear(res);
        mm__pg_down(pg, msg);
        return;
    }
    if (req->preparing && !mm__pg_is_error(res)) {
        PQclear(res);
        pg->stmts[req->stmt].conn_id = pg->conn_id;
        if (mm__pg_issue(pg, req) == 0)
            return;
        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            mm__pg_down(pg, mm__pg_conn_error(pg)); /* completes `req` as unavailable */
            return;
        }
        res = PQmakeEmptyPGresult(pg->conn, PGRES_FATAL_ERROR); /* libpq refused it: as in mm__pg_pump */
    }
    pg->inflight = NULL;
    mm__pg_complete(pg, req, mm__pg_is_error(res) ? MM_PG_ERROR : MM_PG_OK, res);
}

/* Collects what libpq has parsed for the query in flight without blocking.
 * One query can yield several results (an error followed by libpq's own
 * when the server hangs up): the first error wins, the rest are dropped. */
static void mm__pg_drain(mm_pg_t *pg)
{
    PGnotify *note;
    PGresult *res;

    while ((note = PQnotifies(pg->conn)) != NULL)
        PQfreemem(note);
    while (pg->state == MM__PG_UP && !pg->closing && pg->inflight != NULL && !PQisBusy(pg->conn)) {
        if ((res = PQgetResult(pg->conn)) == NULL) {
            mm__pg_finish(pg);
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            PQclear(res);
            mm__pg_down(pg, "COPY is not supported by this client");
            return;
        default:
            break;
        }
        if (pg->inflight_res == NULL) {
            pg->inflight_res = res;
        } else if (mm__pg_is_error(res) && !mm__pg_is_error(pg->inflight_res)) {
            PQclear(pg->inflight_res);
            pg->inflight_res = res;
        } else {
            PQclear(res);
        }
    }
    if (pg->state != MM__PG_UP || pg->closing)
        return;
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        mm__pg_down(pg, mm__pg_conn_error(pg));
        return;
    }
    mm__pg_pump(pg);
}

/* Sends queued queries until one is in flight. A query libpq refuses on a
 * healthy connection fails alone (MM_PG_ERROR, libpq's message as result);
 * on a broken one everything is failed and the client reconnects. */
static void mm__pg_pump(mm_pg_t *pg)
{
    mm__pg_req_t *req;

    if (pg->pumping)
        return;
    pg->pumping = 1;
    while (pg->state == MM__PG_UP && !pg->closing && pg->inflight == NULL && !h2o_linklist_is_empty(&pg->queue)) {
        if (mm__pg_send(pg) == 0)
            break;
        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            mm__pg_down(pg, mm__pg_conn_error(pg));
            break;
        }
        req = H2O_STRUCT_FROM_MEMBER(mm__pg_req_t, link, pg->queue.next);
        h2o_linklist_unlink(&req->link);
        mm__pg_complete(pg, req, MM_PG_ERROR, PQmakeEmptyPGresult(pg->conn, PGRES_FATAL_ERROR));
    }
    pg->pumping = 0;
}

static void mm__pg_release(mm_pg_t *pg)
{
    free(pg->stmts);
    free(pg->conninfo);
    free(pg);
}

static void mm__pg_leave(mm_pg_t *pg)
{
    if (--pg->depth == 0 && pg->closing)
        mm__pg_release(pg);
}

static void mm__pg_on_readable(h2o_socket_t *sock, const char *err)
{
    mm_pg_t *pg = sock->data;

    pg->depth++;
    if (pg->state == MM__PG_CONNECTING) {
        if (pg->poll == PGRES_POLLING_READING)
            mm__pg_connect_step(pg);
    } else if (pg->state == MM__PG_UP) {
        if (!PQconsumeInput(pg->conn))
            mm__pg_down(pg, mm__pg_conn_error(pg));
        else if (!pg->flushing || mm__pg_flush(pg) == 0)
            mm__pg_drain(pg);
    }
    mm__pg_leave(pg);
}

/* Also the loop's hand-off point for mm_pg_query: a send it could not
 * complete is finished (or failed) here, outside the caller's frame. */
static void mm__pg_on_writable(h2o_socket_t *sock, const char *err)
{
    mm_pg_t *pg = sock->data;

    pg->write_armed = 0;
    if (!pg->want_write)
        return;
    pg->want_write = 0;
    pg->depth++;
    if (pg->state == MM__PG_CONNECTING) {
        if (pg->poll == PGRES_POLLING_WRITING)
            mm__pg_connect_step(pg);
    } else if (pg->state == MM__PG_UP) {
        /* a flush may have read input too: look for results without waiting for readability */
        if (!pg->flushing || mm__pg_flush(pg) == 0)
            mm__pg_drain(pg);
    }
    mm__pg_leave(pg);
}

mm_pg_t *mm_pg_new(h2o_loop_t *loop, const char *conninfo)
{
    mm_pg_t *pg = mm_xcalloc(1, sizeof(*pg));

    pg->loop = loop;
    pg->conninfo = mm_xstrdup(conninfo);
    h2o_linklist_init_anchor(&pg->queue);
    mm_timer_init(&pg->retry_timer, loop, mm__pg_on_retry, pg);
    mm_timer_init(&pg->connect_timer, loop, mm__pg_on_connect_timeout, pg);
    mm__pg_connect(pg);
    return pg;
}

void mm_pg_free(mm_pg_t *pg)
{
    if (pg == NULL || pg->closing)
        return;
    pg->closing = 1;
    mm_timer_dispose(&pg->retry_timer);
    mm_timer_dispose(&pg->connect_timer);
    if (pg->logged_up)
        mm_info("postgres: connection closed");
    mm__pg_close(pg);
    pg->depth++;
    mm__pg_fail_all(pg);
    mm__pg_leave(pg);
}

int mm_pg_is_up(mm_pg_t *pg)
{
    return pg != NULL && !pg->closing && pg->state == MM__PG_UP;
}

/* The statement of a static `sql`, added on its first use; -1 once the
 * table is full. A linear scan: a handful of pointers costs less than
 * hashing them, and nothing next to a round trip. */
static int mm__pg_stmt_find(mm_pg_t *pg, const char *sql)
{
    mm__pg_stmt_t *stmt;
    size_t i;

    for (i = 0; i != pg->nstmts; ++i)
        if (pg->stmts[i].sql == sql)
            return (int)i;
    if (pg->nstmts == MM__PG_MAX_STMTS) {
        if (!pg->logged_stmts) {
            mm_warn("postgres: more than %d static statements: the rest run unprepared (is a buffer passed as static?)",
                    MM__PG_MAX_STMTS);
            pg->logged_stmts = 1;
        }
        return -1;
    }
    if (pg->nstmts == pg->capstmts) {
        pg->capstmts = pg->capstmts != 0 ? pg->capstmts * 2 : 16;
        pg->stmts = mm_xrealloc(pg->stmts, pg->capstmts * sizeof(*pg->stmts));
    }
    stmt = &pg->stmts[pg->nstmts];
    stmt->sql = sql;
    stmt->conn_id = 0;
    snprintf(stmt->name, sizeof(stmt->name), "mm%zu", pg->nstmts + 1);
    return (int)pg->nstmts++;
}

static int mm__pg_enqueue(mm_pg_t *pg, const char *sql, int is_static, int nparams, const char *const *params, mm_pg_cb cb,
                          void *data)
{
    mm__pg_req_t *req;
    int i;

    if (pg == NULL || sql == NULL || cb == NULL || nparams < 0 || nparams > MM__PG_MAX_PARAMS || (nparams != 0 && params == NULL))
        return -EINVAL;
    if (!mm_pg_is_up(pg))
        return -ENOTCONN;
    req = mm_xcalloc(1, sizeof(*req));
    req->cb = cb;
    req->data = data;
    req->stmt = is_static ? mm__pg_stmt_find(pg, sql) : -1;
    req->sql = req->stmt < 0 ? mm_xstrdup(sql) : NULL;
    req->nparams = nparams;
    req->params = mm_xcalloc((size_t)nparams, sizeof(*req->params));
    for (i = 0; i != nparams; ++i)
        req->params[i] = params[i] != NULL ? mm_xstrdup(params[i]) : NULL;
    h2o_linklist_insert(&pg->queue, &req->link);
    /* send at once when idle; a refusal is handled from the loop */
    if (pg->inflight == NULL && !pg->pumping && mm__pg_send(pg) != 0)
        mm__pg_arm_write(pg);
    return 0;
}

int mm_pg_query(mm_pg_t *pg, const char *sql, int nparams, const char *const *params, mm_pg_cb cb, void *data)
{
    return mm__pg_enqueue(pg, sql, 0, nparams, params, cb, data);
}

int mm_pg_query_static(mm_pg_t *pg, const char *sql, int nparams, const char *const *params, mm_pg_cb cb, void *data)
{
    return mm__pg_enqueue(pg, sql, 1, nparams, params, cb, data);
}

const char *mm_pg_sqlstate(const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return state != NULL ? state : "";
}
