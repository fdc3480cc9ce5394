/*
 * The metrics registry. Objects are appended to one list under a mutex and
 * never removed, so a pointer handed out stays valid; values are atomics.
 * Rendering groups series of the same name under one HELP/TYPE header, in
 * the order the names were first registered.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mm/base.h"
#include "mm/metrics.h"

typedef enum { MM__COUNTER, MM__GAUGE, MM__HISTOGRAM } mm__kind_t;

typedef struct mm__metric {
    struct mm__metric *next;
    mm__kind_t kind;
    char *name, *help, *labels;
} mm__metric_t;

struct mm_counter {
    mm__metric_t m;
    _Atomic uint64_t value;
};

typedef struct mm__gauge {
    mm__metric_t m;
    double (*fn)(void *);
    void *data;
} mm__gauge_t;

struct mm_histogram {
    mm__metric_t m;
    size_t nbounds;
    double *bounds;
    _Atomic uint64_t *buckets; /* nbounds + 1, the last is +Inf; not cumulative */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us; /* sum in millionths, to stay atomic without a lock */
};

static pthread_mutex_t mm__metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static mm__metric_t *mm__metrics_head, **mm__metrics_tail = &mm__metrics_head;

static const double mm__default_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static int mm__same(const mm__metric_t *m, mm__kind_t kind, const char *name, const char *labels)
{
    return m->kind == kind && strcmp(m->name, name) == 0 && strcmp(m->labels, labels != NULL ? labels : "") == 0;
}

/* Returns the existing metric or NULL; called with the lock held. */
static mm__metric_t *mm__find(mm__kind_t kind, const char *name, const char *labels)
{
    mm__metric_t *m;

    for (m = mm__metrics_head; m != NULL; m = m->next)
        if (mm__same(m, kind, name, labels))
            return m;
    return NULL;
}

static void mm__append(mm__metric_t *m, mm__kind_t kind, const char *name, const char *help, const char *labels)
{
    m->kind = kind;
    m->name = mm_xstrdup(name);
    m->help = mm_xstrdup(help);
    m->labels = mm_xstrdup(labels != NULL ? labels : "");
    *mm__metrics_tail = m;
    mm__metrics_tail = &m->next;
}

mm_counter_t *mm_metrics_counter(const char *name, const char *help, const char *labels)
{
    mm_counter_t *c;

    pthread_mutex_lock(&mm__metrics_lock);
    if ((c = (mm_counter_t *)mm__find(MM__COUNTER, name, labels)) == NULL) {
        c = mm_xcalloc(1, sizeof(*c));
        mm__append(&c->m, MM__COUNTER, name, help, labels);
    }
    pthread_mutex_unlock(&mm__metrics_lock);
    return c;
}

void mm_counter_add(mm_counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t mm_counter_get(mm_counter_t *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

void mm_metrics_gauge_fn(const char *name, const char *help, const char *labels, double (*fn)(void *data), void *data)
{
    mm__gauge_t *g;

    pthread_mutex_lock(&mm__metrics_lock);
    if ((g = (mm__gauge_t *)mm__find(MM__GAUGE, name, labels)) == NULL) {
        g = mm_xcalloc(1, sizeof(*g));
        mm__append(&g->m, MM__GAUGE, name, help, labels);
    }
    g->fn = fn;
    g->data = data;
    pthread_mutex_unlock(&mm__metrics_lock);
}

mm_histogram_t *mm_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds, size_t nbounds)
{
    mm_histogram_t *h;

    if (bounds == NULL) {
        bounds = mm__default_bounds;
        nbounds = MM_ARRAY_SIZE(mm__default_bounds);
    }
    pthread_mutex_lock(&mm__metrics_lock);
    if ((h = (mm_histogram_t *)mm__find(MM__HISTOGRAM, name, labels)) == NULL) {
        h = mm_xcalloc(1, sizeof(*h));
        h->nbounds = nbounds;
        h->bounds = mm_xmalloc(nbounds * sizeof(double));
        memcpy(h->bounds, bounds, nbounds * sizeof(double));
        h->buckets = mm_xcalloc(nbounds + 1, sizeof(*h->buckets));
        mm__append(&h->m, MM__HISTOGRAM, name, help, labels);
    }
    pthread_mutex_unlock(&mm__metrics_lock);
    return h;
}

void mm_histogram_observe(mm_histogram_t *h, double value)
{
    size_t i = 0;

    while (i < h->nbounds && value > h->bounds[i])
        ++i;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    if (value > 0)
        atomic_fetch_add_explicit(&h->sum_us, (uint64_t)llround(value * 1e6), memory_order_relaxed);
}

/* A growable output buffer; formatting goes through vsnprintf only. */
typedef struct {
    char *buf;
    size_t len, cap;
} mm__out_t;

static MM_PRINTF(2, 3) void mm__outf(mm__out_t *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = (o->cap + (size_t)n + 1) * 2;
        o->buf = mm_xrealloc(o->buf, o->cap);
    }
}

/* `{labels,extra}` or `{extra}` or `{labels}` or nothing. */
static void mm__labels(mm__out_t *o, const char *labels, const char *extra)
{
    int has = labels[0] != '\0', hasx = extra != NULL && extra[0] != '\0';

    if (!has && !hasx)
        return;
    mm__outf(o, "{%s%s%s}", labels, has && hasx ? "," : "", hasx ? extra : "");
}

static void mm__render_one(mm__out_t *o, const mm__metric_t *m)
{
    char le[48];
    size_t i;
    uint64_t cum = 0;

    switch (m->kind) {
    case MM__COUNTER:
        mm__outf(o, "%s", m->name);
        mm__labels(o, m->labels, NULL);
        mm__outf(o, " %llu\n", (unsigned long long)mm_counter_get((mm_counter_t *)m));
        break;
    case MM__GAUGE: {
        const mm__gauge_t *g = (const mm__gauge_t *)m;
        mm__outf(o, "%s", m->name);
        mm__labels(o, m->labels, NULL);
        mm__outf(o, " %.17g\n", g->fn(g->data));
        break;
    }
    case MM__HISTOGRAM: {
        mm_histogram_t *h = (mm_histogram_t *)m;
        for (i = 0; i <= h->nbounds; ++i) {
            cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
            if (i < h->nbounds)
                snprintf(le, sizeof(le), "le=\"%g\"", h->bounds[i]);
            else
                snprintf(le, sizeof(le), "le=\"+Inf\"");
            mm__outf(o, "%s_bucket", m->name);
            mm__labels(o, m->labels, le);
            mm__outf(o, " %llu\n", (unsigned long long)cum);
        }
        mm__outf(o, "%s_sum", m->name);
        mm__labels(o, m->labels, NULL);
        mm__outf(o, " %.6f\n", (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
        mm__outf(o, "%s_count", m->name);
        mm__labels(o, m->labels, NULL);
        mm__outf(o, " %llu\n", (unsigned long long)cum);
        break;
    }
    }
}

char *mm_metrics_render(size_t *len)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    mm__out_t o = {mm_xmalloc(4096), 0, 4096};
    mm__metric_t *m, *n, *p;

    o.buf[0] = '\0';
    pthread_mutex_lock(&mm__metrics_lock);
    for (m = mm__metrics_head; m != NULL; m = m->next) {
        /* print each name once, at its first registration, with all its series */
        for (p = mm__metrics_head; p != m; p = p->next)
            if (strcmp(p->name, m->name) == 0)
                break;
        if (p != m)
            continue;
        mm__outf(&o, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, types[m->kind]);
        for (n = m; n != NULL; n = n->next)
            if (strcmp(n->name, m->name) == 0)
                mm__render_one(&o, n);
    }
    pthread_mutex_unlock(&mm__metrics_lock);
    if (len != NULL)
        *len = o.len;
    return o.buf;
}
