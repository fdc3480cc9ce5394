/*
 * One-shot timers of arbitrary delay over h2o 2.2's fixed-period timeouts:
 * each timer owns its h2o_timeout_t and re-initialises it when the delay
 * changes (cheap: it is a list head registered with the loop).
 */
#include "mm/timer.h"

static void mm__timer_fire(h2o_timeout_entry_t *entry)
{
    mm_timer_t *t = H2O_STRUCT_FROM_MEMBER(mm_timer_t, entry, entry);

    t->cb(t);
}

void mm_timer_init(mm_timer_t *t, h2o_loop_t *loop, mm_timer_cb cb, void *data)
{
    *t = (mm_timer_t){.loop = loop, .cb = cb, .data = data};
    t->entry.cb = mm__timer_fire;
}

void mm_timer_start(mm_timer_t *t, uint64_t delay_ms)
{
    mm_timer_stop(t);
    if (t->inited && t->delay_ms != delay_ms) {
        h2o_timeout_dispose(t->loop, &t->timeout);
        t->inited = 0;
    }
    if (!t->inited) {
        h2o_timeout_init(t->loop, &t->timeout, delay_ms);
        t->delay_ms = delay_ms;
        t->inited = 1;
    }
    h2o_timeout_link(t->loop, &t->timeout, &t->entry);
}

void mm_timer_stop(mm_timer_t *t)
{
    if (h2o_timeout_is_linked(&t->entry))
        h2o_timeout_unlink(&t->entry);
}

int mm_timer_is_active(mm_timer_t *t)
{
    return h2o_timeout_is_linked(&t->entry);
}

void mm_timer_dispose(mm_timer_t *t)
{
    mm_timer_stop(t);
    if (t->inited) {
        h2o_timeout_dispose(t->loop, &t->timeout);
        t->inited = 0;
    }
}
