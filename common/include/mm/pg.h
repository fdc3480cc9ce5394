/*
 * Asynchronous PostgreSQL client on an h2o evloop (libpq nonblocking).
 *
 * One connection, one query in flight, a FIFO of queued queries. The
 * connection is made in the background and remade with exponential backoff
 * (100 ms .. 5 s, with jitter) whenever it breaks; while it is down, new
 * queries are refused at once (-ENOTCONN) so the caller can answer 503, and
 * queries that were queued or in flight complete with MM_PG_UNAVAILABLE.
 * Errors that mean "the server is going away or not ready" (SQLSTATE
 * 57P01/57P02/57P03, class 08, or no SQLSTATE with CONNECTION_BAD) count as
 * unavailable and trigger a reconnect. Not thread-safe: one client per loop.
 */
#ifndef MM_PG_H
#define MM_PG_H

#include <libpq-fe.h>
#include "mm/h2o.h"

typedef struct mm_pg mm_pg_t;

typedef enum mm_pg_status {
    MM_PG_OK = 0,          /* `res` is PGRES_TUPLES_OK or PGRES_COMMAND_OK */
    MM_PG_ERROR = -1,      /* the server rejected the query: `res` holds the error (e.g. a constraint) */
    MM_PG_UNAVAILABLE = -2 /* no answer: connection lost or never made; `res` is NULL */
} mm_pg_status_t;

/* `res` is owned by the client and cleared after the callback returns. */
typedef void (*mm_pg_cb)(mm_pg_status_t status, PGresult *res, void *data);

/* Creates a client and starts connecting. `conninfo` is a libpq conninfo
 * string or URI (copied). Never fails: check mm_pg_is_up(). */
mm_pg_t *mm_pg_new(h2o_loop_t *loop, const char *conninfo);
/* NULL-safe. Pending queries are completed with MM_PG_UNAVAILABLE first
 * (inside this call). Free every client before h2o_evloop_destroy. */
void mm_pg_free(mm_pg_t *pg);

/* 1 when connected (queries are accepted), else 0. */
int mm_pg_is_up(mm_pg_t *pg);

/* Queues `sql` with text parameters (NULL = SQL NULL; values are copied).
 * Returns 0 (cb will run exactly once, from the loop, never from inside this
 * call), -ENOTCONN while disconnected, or -EINVAL for a NULL sql/cb or a bad
 * parameter count (cb will not run). Results come back in queue order. A
 * callback may queue more queries or free the client. */
int mm_pg_query(mm_pg_t *pg, const char *sql, int nparams, const char *const *params, mm_pg_cb cb, void *data);

/* The SQLSTATE of an error result, or "" (never NULL). */
const char *mm_pg_sqlstate(const PGresult *res);

#endif
