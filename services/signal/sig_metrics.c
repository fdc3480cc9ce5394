/*
 * mm-signal's own metrics, beside the request metrics every service has:
 * offers by result, deliveries and their latency (from the offer to the
 * take that delivered it, on Redis's clock), answers, wake-up messages and
 * the long-polls waiting right now.
 */
#include <stdatomic.h>
#include <string.h>
#include "mm/metrics.h"
#include "sig.h"

static mm_counter_t *sig_offers_created, *sig_offers_not_found, *sig_offers_full, *sig_delivered, *sig_answered, *sig_wakeups;
static mm_histogram_t *sig_delivery_seconds;
static _Atomic long sig_waiting;

static double sig_waiting_get(void *data)
{
    return (double)atomic_load(&sig_waiting);
}

void sig_metrics_init(void)
{
    static const double bounds[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    const char *help = "Offers by result: created, not_found (target not broadcasting), inbox_full (429)";

    sig_offers_created = mm_metrics_counter("mm_signal_offers_total", help, "result=\"created\"");
    sig_offers_not_found = mm_metrics_counter("mm_signal_offers_total", help, "result=\"not_found\"");
    sig_offers_full = mm_metrics_counter("mm_signal_offers_total", help, "result=\"inbox_full\"");
    sig_delivered = mm_metrics_counter("mm_signal_offers_delivered_total", "Offers handed to their target's inbox poll", NULL);
    sig_answered = mm_metrics_counter("mm_signal_answers_total", "Sessions answered (first answers only)", NULL);
    sig_wakeups =
        mm_metrics_counter("mm_signal_wakeups_total", "Wake-up messages received (each thread of each copy gets each)", NULL);
    sig_delivery_seconds =
        mm_metrics_histogram("mm_signal_offer_delivery_seconds", "From an offer to the inbox poll that took it (Redis clock)", NULL,
                             bounds, MM_ARRAY_SIZE(bounds));
    mm_metrics_gauge_fn("mm_signal_long_polls", "Long-polls (inbox and session) waiting now", NULL, sig_waiting_get, NULL);
}

void sig_metrics_offer(const char *result)
{
    if (strcmp(result, "created") == 0)
        mm_counter_add(sig_offers_created, 1);
    else if (strcmp(result, "not_found") == 0)
        mm_counter_add(sig_offers_not_found, 1);
    else
        mm_counter_add(sig_offers_full, 1);
}

void sig_metrics_delivered(uint64_t age_ms)
{
    mm_counter_add(sig_delivered, 1);
    mm_histogram_observe(sig_delivery_seconds, (double)age_ms / 1000.0);
}

void sig_metrics_answered(void)
{
    mm_counter_add(sig_answered, 1);
}

void sig_metrics_wakeup(void)
{
    mm_counter_add(sig_wakeups, 1);
}

void sig_metrics_waiters(long delta)
{
    atomic_fetch_add(&sig_waiting, delta);
}
