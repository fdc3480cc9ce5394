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
 *
 * Prepared statements (mm_pg_query_static) live on the connection: the
 * client prepares each one the first time it runs on a connection, and a
 * reconnect starts with none. Their server-side names are "mm1", "mm2", ...
 * so a client's connection must not DEALLOCATE or DISCARD them, nor PREPARE
 * a statement of its own under such a name; and a schema change that alters
 * a statement's result columns makes it fail (0A000) until the next
 * reconnect, as with any prepared statement in PostgreSQL.
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

/* Like mm_pg_query, but `sql` must be a string that lives as long as the client (a static constant): the
 * client prepares it once per connection (named by the pointer) and then only executes it. Same return
 * value and callback guarantees as mm_pg_query. A statement the server refuses to prepare (a syntax error,
 * an unknown table) completes with MM_PG_ERROR and the server's error, and is prepared again on its next
 * use; losing the connection while preparing completes with MM_PG_UNAVAILABLE. The pointer is kept, never
 * freed, and identifies the statement: pass the same array every time, not a copy (past 256 distinct
 * pointers, the rest run unprepared, with one warning). */
int mm_pg_query_static(mm_pg_t *pg, const char *sql, int nparams, const char *const *params, mm_pg_cb cb, void *data);

/* The SQLSTATE of an error result, or "" (never NULL). */
const char *mm_pg_sqlstate(const PGresult *res);

#endif
