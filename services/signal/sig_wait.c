/*
 * Long-polls and their wake-ups.
 *
 * Every thread subscribes (PSUBSCRIBE mm:sig:*) on a Redis connection of its
 * own and keeps a hash of the long-polls it holds, filed under the channel
 * that concerns them (mm:sig:wake:<peer_id> for an inbox,
 * mm:sig:answered:<id> for a session). A message wakes the waiters filed
 * under its channel on this thread only; every thread of every copy gets
 * every message, so whichever copy took the offer or the answer, the copy
 * holding the long-poll hears of it. Nothing blocks: the waiter then runs
 * its check (one Lua script) again.
 *
 * Races: a waiter is filed before its first check is sent, and a message
 * that arrives while a check is in flight marks it `dirty`, so it checks
 * once more; a message cannot fall between the two. Messages published
 * while a subscriber is disconnected are lost (Redis keeps none), so every
 * waiter checks again when the subscriber connects, and once more a second
 * later (the PSUBSCRIBE may not have been processed when the first re-check
 * ran). When the wait runs out, a last check decides the answer.
 *
 * Deadlines: long-polls wait whole seconds (0..30), so each thread has one
 * h2o_timeout_t per duration and a waiter is an entry in one of them: no
 * timer object per request, and nothing the loop scans per waiter. h2o
 * unlinks an entry before its callback, which may then free the waiter.
 *
 * A client that goes away (an HTTP/2 reset, a closed connection) frees the
 * request's pool; a small hook in that pool unfiles the waiter at once. But
 * h2o does not read an HTTP/1 connection while a request is in progress, so
 * it does not see such a client close (the gateway closes its upstream
 * connection when its own client goes): before a waiter takes anything, and
 * before it hands offers over, it peeks at the socket and gives up on a
 * connection that has reached its end.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "mm/log.h"
#include "sig.h"

#define SIG_WAIT_PATTERN SIG_KEY_PREFIX "*"
#define SIG_RESYNC_DELAY_MS 1000
#define SIG_STOP_POLL_MS 100
#define SIG_SHORTEN_MARGIN_MS 100

static h2o_linklist_t *sig_wait_bucket(sig_thread_t *t, const char *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;

    for (i = 0; i != len; ++i)
        h = (h ^ (uint8_t)key[i]) * 16777619u;
    return &t->waiters[h % SIG_WAIT_BUCKETS];
}

static void sig_wait_unfile(sig_waiter_t *w)
{
    if (h2o_linklist_is_linked(&w->link)) {
        h2o_linklist_unlink(&w->link);
        --w->t->nwaiters;
        sig_metrics_waiters(-1);
    }
    if (h2o_timeout_is_linked(&w->deadline))
        h2o_timeout_unlink(&w->deadline);
}

h2o_req_t *sig_wait_end(sig_waiter_t *w)
{
    w->ended = 1;
    sig_wait_unfile(w);
    if (w->gone_hook != NULL) {
        *w->gone_hook = NULL;
        w->gone_hook = NULL;
    }
    return mm_async_req(w);
}

void sig_wait_free(sig_waiter_t *w)
{
    if (w->refs != 0) {
        w->freed = 1; /* the loop holding it frees it when done */
        return;
    }
    mm_async_free(w);
}

static void sig_wait_release(sig_waiter_t *w)
{
    if (--w->refs == 0 && w->freed)
        mm_async_free(w);
}

int sig_wait_recheck(sig_waiter_t *w)
{
    w->checking = 1;
    if (w->check(w) != 0) {
        w->checking = 0;
        return -ENOTCONN;
    }
    return 0;
}

int sig_wait_checked(sig_waiter_t *w)
{
    w->checking = 0;
    if (w->dirty) {
        w->dirty = 0;
        return SIG_WAIT_AGAIN;
    }
    if (w->timed_out || w->wait_ms == 0)
        return SIG_WAIT_REPLY;
    return SIG_WAIT_KEEP;
}

int sig_wait_client_gone(sig_waiter_t *w)
{
    h2o_req_t *req = mm_async_req(w);
    h2o_socket_t *sock;
    ssize_t n;
    char c;
    int fd;

    if (req == NULL)
        return 1;
    if (req->conn->callbacks->get_socket == NULL || (sock = req->conn->callbacks->get_socket(req->conn)) == NULL ||
        (fd = h2o_socket_get_fd(sock)) < 0)
        return 0;
    /* 0: the peer has closed (EOF); data or EAGAIN: still there */
    n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Something may have changed for `w`: check again (or after the check in flight). */
static void sig_wait_poke(sig_waiter_t *w)
{
    h2o_req_t *req;

    if (w->ended)
        return;
    if (w->checking) {
        w->dirty = 1;
        return;
    }
    if (sig_wait_client_gone(w)) {
        sig_wait_end(w);
        sig_wait_free(w);
        return;
    }
    if (sig_wait_recheck(w) == 0)
        return;
    if ((req = sig_wait_end(w)) != NULL)
        mm_reply_unavailable(req, "Redis");
    sig_wait_free(w);
}

static void sig_wait_on_deadline(h2o_timeout_entry_t *entry)
{
    sig_waiter_t *w = H2O_STRUCT_FROM_MEMBER(sig_waiter_t, deadline, entry);

    w->timed_out = 1;
    sig_wait_poke(w);
}

static void sig_wait_on_gone(void *p)
{
    sig_waiter_t **hook = p, *w = *hook;

    if (w == NULL)
        return;
    w->gone_hook = NULL;
    /* a check in flight finds the request gone in its callback (and puts back what it took) */
    if (!w->checking) {
        sig_wait_end(w);
        sig_wait_free(w);
    }
}

void *sig_wait_new(h2o_req_t *req, sig_thread_t *t, size_t size, const char *key, sig_check_fn check)
{
    sig_waiter_t *w = mm_async_new(req, size);

    w->t = t;
    w->check = check;
    snprintf(w->key, sizeof(w->key), "%s", key);
    w->deadline.cb = sig_wait_on_deadline;
    w->gone_hook = h2o_mem_alloc_shared(&req->pool, sizeof(*w->gone_hook), sig_wait_on_gone);
    *w->gone_hook = w;
    return w;
}

int sig_wait_start(sig_waiter_t *w, unsigned wait_s)
{
    sig_thread_t *t = w->t;

    if (wait_s > SIG_WAIT_MAX)
        wait_s = SIG_WAIT_MAX;
    w->wait_ms = (uint64_t)wait_s * 1000;
    if (sig_wait_recheck(w) != 0)
        return -ENOTCONN;
    if (wait_s != 0) {
        h2o_linklist_insert(sig_wait_bucket(t, w->key, strlen(w->key)), &w->link);
        ++t->nwaiters;
        sig_metrics_waiters(1);
        h2o_timeout_link(t->thread->loop, &t->wait_timeouts[wait_s], &w->deadline);
        w->deadline_at = h2o_now(t->thread->loop) + w->wait_ms;
    }
    return 0;
}

void sig_wait_shorten(sig_waiter_t *w, uint64_t ms)
{
    h2o_loop_t *loop = w->t->thread->loop;
    /* whole seconds, rounded up, with a margin: the last check must find the session gone */
    uint64_t s = (ms + SIG_SHORTEN_MARGIN_MS + 999) / 1000;

    if (w->ended || !h2o_timeout_is_linked(&w->deadline) || s > SIG_WAIT_MAX || h2o_now(loop) + s * 1000 >= w->deadline_at)
        return;
    h2o_timeout_unlink(&w->deadline);
    h2o_timeout_link(loop, &w->t->wait_timeouts[s], &w->deadline);
    w->deadline_at = h2o_now(loop) + s * 1000;
}

/* Pokes the waiters filed under `key` (or every waiter, for NULL), holding
 * a reference on each: a poke may answer and free it, or others. */
static void sig_wait_poke_all(sig_thread_t *t, const char *key, size_t len, int timed_out)
{
    sig_waiter_t **list, *w;
    size_t n = 0, i, b;

    if (t->nwaiters == 0)
        return;
    list = mm_xmalloc(t->nwaiters * sizeof(*list));
    for (b = 0; b != SIG_WAIT_BUCKETS; ++b) {
        h2o_linklist_t *anchor = key != NULL ? sig_wait_bucket(t, key, len) : &t->waiters[b], *node;
        for (node = anchor->next; node != anchor && n != t->nwaiters; node = node->next) {
            w = H2O_STRUCT_FROM_MEMBER(sig_waiter_t, link, node);
            if (key != NULL && (strlen(w->key) != len || memcmp(w->key, key, len) != 0))
                continue;
            ++w->refs;
            list[n++] = w;
        }
        if (key != NULL)
            break;
    }
    for (i = 0; i != n; ++i) {
        if (timed_out)
            list[i]->timed_out = 1;
        sig_wait_poke(list[i]);
    }
    for (i = 0; i != n; ++i)
        sig_wait_release(list[i]);
    free(list);
}

void sig_wait_on_message(const char *channel, size_t channel_len, const char *msg, size_t msg_len, void *data)
{
    sig_metrics_wakeup();
    sig_wait_poke_all(data, channel, channel_len, 0);
}

static void sig_wait_on_resync(mm_timer_t *timer)
{
    sig_wait_poke_all(timer->data, NULL, 0, 0);
}

static void sig_wait_on_sub_connect(mm_redis_t *r, void *data)
{
    sig_thread_t *t = data;

    /* what was published while we were away is lost: look again now, and
     * once more when the PSUBSCRIBE sent with this connect has surely landed */
    sig_wait_poke_all(t, NULL, 0, 0);
    mm_timer_start(&t->resync_timer, SIG_RESYNC_DELAY_MS);
}

static void sig_wait_on_stop_poll(mm_timer_t *timer)
{
    sig_thread_t *t = timer->data;

    /* stopping: every long-poll gets its answer now, inside the grace period */
    if (mm_server_is_stopping(t->thread->server))
        sig_wait_poke_all(t, NULL, 0, 1);
    mm_timer_start(timer, SIG_STOP_POLL_MS);
}

void sig_wait_init(sig_thread_t *t)
{
    size_t i;

    for (i = 0; i != SIG_WAIT_BUCKETS; ++i)
        h2o_linklist_init_anchor(&t->waiters[i]);
    for (i = 1; i <= SIG_WAIT_MAX; ++i)
        h2o_timeout_init(t->thread->loop, &t->wait_timeouts[i], (uint64_t)i * 1000);
    mm_timer_init(&t->resync_timer, t->thread->loop, sig_wait_on_resync, t);
    mm_timer_init(&t->stop_timer, t->thread->loop, sig_wait_on_stop_poll, t);
    mm_timer_start(&t->stop_timer, SIG_STOP_POLL_MS);
    mm_redis_on_connect(t->sub, sig_wait_on_sub_connect, t);
    mm_redis_psubscribe(t->sub, SIG_WAIT_PATTERN, sig_wait_on_message, t);
}

void sig_wait_dispose(sig_thread_t *t)
{
    size_t i;

    /* the loop does not run again: the requests still waiting are dropped with their connections */
    for (i = 0; i != SIG_WAIT_BUCKETS; ++i) {
        while (!h2o_linklist_is_empty(&t->waiters[i])) {
            sig_waiter_t *w = H2O_STRUCT_FROM_MEMBER(sig_waiter_t, link, t->waiters[i].next);
            sig_wait_end(w);
            if (!w->checking)
                sig_wait_free(w);
            /* else: its check's callback runs when the Redis client is freed, and frees it */
        }
    }
    for (i = 1; i <= SIG_WAIT_MAX; ++i)
        h2o_timeout_dispose(t->thread->loop, &t->wait_timeouts[i]);
    mm_timer_dispose(&t->resync_timer);
    mm_timer_dispose(&t->stop_timer);
}

int sig_wait_arg(h2o_req_t *req, sig_thread_t *t, int *wait)
{
    char buf[8];
    int n = mm_req_query(req, "wait", buf, sizeof(buf));

    *wait = 0;
    if (n != -ENOENT && (n < 0 || (*wait = sig_wait_parse(buf, (size_t)n)) < 0)) {
        mm_reply_error(req, 400, "invalid_field", "query parameter 'wait' must be a whole number of seconds from 0 to %d",
                       SIG_WAIT_MAX);
        return -1;
    }
    /* a long-poll is only as good as its wake-ups: both connections must be up */
    if (!mm_redis_is_up(t->redis) || (*wait != 0 && !mm_redis_is_up(t->sub))) {
        mm_reply_unavailable(req, "Redis");
        return -1;
    }
    return 0;
}
