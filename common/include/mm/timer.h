/*
 * One-shot timers of any delay on an h2o evloop. h2o 2.2 timeouts have a
 * fixed period per h2o_timeout_t; a timer owns one and re-initialises it
 * when started with another delay. Not thread-safe: use on the loop's thread.
 */
#ifndef MM_TIMER_H
#define MM_TIMER_H

#include "mm/h2o.h"

typedef struct mm_timer mm_timer_t;
typedef void (*mm_timer_cb)(mm_timer_t *timer);

struct mm_timer {
    h2o_loop_t *loop;
    h2o_timeout_t timeout;
    h2o_timeout_entry_t entry;
    mm_timer_cb cb;
    void *data; /* the owner's */
    uint64_t delay_ms;
    int inited;
};

/* Prepares a stopped timer; no allocation. */
void mm_timer_init(mm_timer_t *t, h2o_loop_t *loop, mm_timer_cb cb, void *data);
/* (Re)starts the timer: cb runs once, `delay_ms` from now. */
void mm_timer_start(mm_timer_t *t, uint64_t delay_ms);
void mm_timer_stop(mm_timer_t *t);
int mm_timer_is_active(mm_timer_t *t);
/* Stops and releases the timer's h2o timeout; the struct may then be freed. */
void mm_timer_dispose(mm_timer_t *t);

#endif
