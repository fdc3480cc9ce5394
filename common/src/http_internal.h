/* libmm's private HTTP pieces shared between http_*.c; not installed. */
#ifndef MM_HTTP_INTERNAL_H
#define MM_HTTP_INTERNAL_H

#include "mm/http.h"
#include "mm/metrics.h"

/* Request counters by status class (index status / 100) and latency, for one route label. */
typedef struct mm__route_stats {
    mm_counter_t *by_class[6];
    mm_histogram_t *latency;
} mm__route_stats_t;

void mm__route_stats_init(mm__route_stats_t *st, const char *service, const char *route);

#endif
