/*
 * Asynchronous Redis client on an h2o evloop (hiredis async with an evloop
 * adapter). Reconnects with exponential backoff (100 ms .. 5 s, jitter) when
 * the connection breaks; while down, commands are refused at once
 * (-ENOTCONN) so the caller can answer 503, and commands in flight complete
 * with reply == NULL. Not thread-safe: one client per loop.
 *
 * URLs: redis://host:port[/db], or unix:/path/to/redis.sock (also
 * unix:///path). Commands are argv-formatted only: never built from input.
 */
#ifndef MM_REDIS_H
#define MM_REDIS_H

#include <hiredis/hiredis.h>
#include "mm/base.h"
#include "mm/h2o.h"

typedef struct mm_redis mm_redis_t;

/* `reply` is NULL when the connection failed before an answer; it is owned
 * by hiredis and freed after the callback returns. A Redis error reply is a
 * REDIS_REPLY_ERROR reply, not NULL. */
typedef void (*mm_redis_cb)(redisReply *reply, void *data);

/* Called (from the loop) each time a connection is established, including
 * the first, after SELECT: the place to re-apply settings or reconcile state.
 * Set it right after mm_redis_new (the first connect completes on the loop). */
typedef void (*mm_redis_connect_cb)(mm_redis_t *r, void *data);

/* Creates a client and starts connecting; `url` is copied. Returns NULL with
 * `err` set only when the URL cannot be parsed. */
mm_redis_t *mm_redis_new(h2o_loop_t *loop, const char *url, mm_err_t *err);
/* NULL-safe; commands in flight get reply == NULL (inside this call, or
 * when called from one of this client's callbacks, right after that callback
 * returns). Free every client before h2o_evloop_destroy. */
void mm_redis_free(mm_redis_t *r);

void mm_redis_on_connect(mm_redis_t *r, mm_redis_connect_cb cb, void *data);

/* A pattern subscription's messages (channel and payload, not NUL-safe:
 * use the lengths; both NUL-terminated too). */
typedef void (*mm_redis_message_cb)(const char *channel, size_t channel_len, const char *msg, size_t msg_len, void *data);

/* Makes `r` a subscriber: PSUBSCRIBE `pattern` now and after every
 * reconnect (messages published while disconnected are lost: Redis does not
 * keep them), `cb` for each message. A subscriber takes no other commands
 * (mm_redis_command returns -EINVAL). Returns 0 or -EINVAL (already
 * subscribed). Use a client of its own for it. */
int mm_redis_psubscribe(mm_redis_t *r, const char *pattern, mm_redis_message_cb cb, void *data);
int mm_redis_is_up(mm_redis_t *r);

/* Sends one command. Returns 0 (cb runs exactly once, later; cb may be NULL
 * to ignore the reply) or -ENOTCONN (cb will not run). `argvlen` may be NULL
 * for NUL-terminated arguments. -EINVAL for argc < 1 or a NULL argument, and
 * for (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE and MONITOR, whose replies do not fit
 * the one-callback contract. */
int mm_redis_command(mm_redis_t *r, mm_redis_cb cb, void *data, int argc, const char **argv, const size_t *argvlen);

/* Parses a Redis URL into host/port or a unix path (for tools that connect
 * synchronously). Returns 0 or -EINVAL. `host`/`path` are malloc'ed (caller frees). */
int mm_redis_parse_url(const char *url, char **host, int *port, char **path, int *db, mm_err_t *err);

#endif
