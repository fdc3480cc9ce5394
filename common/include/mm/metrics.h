/*
 * Prometheus metrics: counters, gauges read by callback, and histograms,
 * in one process-wide registry. Register while the process is starting
 * (or any time: registration takes a lock); update from any thread without
 * locks (relaxed atomics). Metric objects live until exit and are owned by
 * the registry.
 */
#ifndef MM_METRICS_H
#define MM_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_counter mm_counter_t;
typedef struct mm_histogram mm_histogram_t;

/* `labels` is the label list without braces, e.g. `route="/register",code="2xx"`, or NULL.
 * Registering the same name and labels twice returns the same object. */
mm_counter_t *mm_metrics_counter(const char *name, const char *help, const char *labels);
void mm_counter_add(mm_counter_t *c, uint64_t n);
uint64_t mm_counter_get(mm_counter_t *c);

/* A gauge whose value is read from `fn(data)` at each scrape. */
void mm_metrics_gauge_fn(const char *name, const char *help, const char *labels, double (*fn)(void *data), void *data);

/* `bounds`: ascending upper bounds (copied); +Inf is implicit. NULL: the default latency
 * buckets in seconds (0.0005 .. 10). */
mm_histogram_t *mm_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds, size_t nbounds);
void mm_histogram_observe(mm_histogram_t *h, double value);

/* Renders every metric in the Prometheus text format 0.0.4. Returns a malloc'ed
 * NUL-terminated buffer; the caller frees it. */
char *mm_metrics_render(size_t *len);

#endif
