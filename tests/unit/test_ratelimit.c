/*
 * Unit tests for mm/ratelimit.h. Time is simulated through `now_ms`
 * everywhere except the multithreaded test, which uses the real monotonic
 * clock and checks the bound burst + rate * elapsed.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "mm/base.h"
#include "mm/ratelimit.h"

#define T0 ((uint64_t)1000000)

static uint64_t take(mm_ratelimit_t *rl, const char *key, uint64_t now)
{
    return mm_ratelimit_take(rl, key, strlen(key), now);
}

static void test_invalid_parameters(void **state)
{
    (void)state;
    assert_null(mm_ratelimit_new(0, 10, 100));
    assert_null(mm_ratelimit_new(-1, 10, 100));
    assert_null(mm_ratelimit_new(10, 0.5, 100));
    assert_null(mm_ratelimit_new(10, 10, 0));
    assert_null(mm_ratelimit_new(INFINITY, 10, 100));
    assert_null(mm_ratelimit_new(NAN, 10, 100));
    assert_null(mm_ratelimit_new(10, INFINITY, 100));
    mm_ratelimit_free(NULL);
    assert_int_equal(mm_ratelimit_take(NULL, "k", 1, T0), 0);
    assert_int_equal(mm_ratelimit_size(NULL), 0);
}

static void test_burst_then_refused(void **state)
{
    mm_ratelimit_t *rl = mm_ratelimit_new(10, 5, 1000);
    int i;

    (void)state;
    assert_non_null(rl);
    for (i = 0; i != 5; ++i)
        assert_int_equal(take(rl, "alice", T0), 0);
    /* Empty bucket, 10 tokens/s: one token in 100 ms. */
    assert_int_equal(take(rl, "alice", T0), 100);
    assert_int_equal(take(rl, "alice", T0), 100);
    assert_int_equal(mm_ratelimit_size(rl), 1);
    mm_ratelimit_free(rl);
}

/* Waiting exactly the announced time is enough; one millisecond less is
 * not, however often the client asks in between. */
static void test_retry_after_is_exact(void **state)
{
    static const struct {
        double rate, burst;
    } cases[] = {{10, 5}, {50, 100}, {3, 1}, {0.5, 2}, {1000, 10}, {7000, 3}, {1.0 / 3.0, 1}};
    size_t i;

    (void)state;
    for (i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        mm_ratelimit_t *rl = mm_ratelimit_new(cases[i].rate, cases[i].burst, 100);
        uint64_t now = T0, wait, ms;
        int round;

        for (round = 0; round != 20; ++round) {
            /* Drain what refilled (fast rates refill several tokens per ms). */
            while ((wait = take(rl, "k", now)) == 0)
                ;
            /* Never more than one token's worth of time. */
            assert_true((double)wait <= 1000.0 / cases[i].rate + 1.0);
            /* Polling meanwhile changes nothing: the countdown is exact. */
            for (ms = 1; ms < wait; ++ms)
                assert_int_equal(take(rl, "k", now + ms), wait - ms);
            now += wait;
            assert_int_equal(take(rl, "k", now), 0);
        }
        mm_ratelimit_free(rl);
    }
}

static void test_refill_over_time(void **state)
{
    mm_ratelimit_t *rl = mm_ratelimit_new(10, 5, 1000);
    int i;

    (void)state;
    for (i = 0; i != 5; ++i)
        assert_int_equal(take(rl, "k", T0), 0);
    assert_true(take(rl, "k", T0) > 0);

    /* 250 ms at 10/s: 2.5 tokens, so two takes and then 50 ms to wait. */
    assert_int_equal(take(rl, "k", T0 + 250), 0);
    assert_int_equal(take(rl, "k", T0 + 250), 0);
    assert_int_equal(take(rl, "k", T0 + 250), 50);

    /* A long pause refills to burst and no further. */
    for (i = 0; i != 5; ++i)
        assert_int_equal(take(rl, "k", T0 + 60000), 0);
    assert_int_equal(take(rl, "k", T0 + 60000), 100);

    /* A clock that steps back refills nothing and breaks nothing. */
    assert_int_equal(take(rl, "k", T0), 100);
    assert_int_equal(take(rl, "k", T0 + 60000 + 100), 0);
    mm_ratelimit_free(rl);
}

/* A steady client at exactly the rate is never refused. */
static void test_steady_rate_allowed(void **state)
{
    mm_ratelimit_t *rl = mm_ratelimit_new(50, 1, 1000);
    int i;

    (void)state;
    for (i = 0; i != 1000; ++i)
        assert_int_equal(take(rl, "steady", T0 + (uint64_t)i * 20), 0);
    assert_true(take(rl, "steady", T0 + 999 * 20 + 10) > 0);
    mm_ratelimit_free(rl);
}

static void test_keys_independent(void **state)
{
    static const char k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'};
    mm_ratelimit_t *rl = mm_ratelimit_new(1, 3, 1000);
    int i;

    (void)state;
    for (i = 0; i != 3; ++i)
        assert_int_equal(take(rl, "alice", T0), 0);
    assert_true(take(rl, "alice", T0) > 0);
    for (i = 0; i != 3; ++i)
        assert_int_equal(take(rl, "bob", T0), 0);
    assert_true(take(rl, "bob", T0) > 0);
    assert_true(take(rl, "alice", T0) > 0);

    /* Keys are bytes with a length: prefixes and embedded NULs matter. */
    for (i = 0; i != 3; ++i)
        assert_int_equal(mm_ratelimit_take(rl, k1, sizeof(k1), T0), 0);
    assert_true(mm_ratelimit_take(rl, k1, sizeof(k1), T0) > 0);
    assert_int_equal(mm_ratelimit_take(rl, k2, sizeof(k2), T0), 0);
    assert_int_equal(mm_ratelimit_take(rl, k1, 2, T0), 0);
    assert_int_equal(mm_ratelimit_take(rl, "", 0, T0), 0);
    assert_int_equal(mm_ratelimit_take(rl, NULL, 0, T0), 0); /* the same empty key */
    assert_int_equal(take(rl, "alic", T0), 0);
    assert_int_equal(mm_ratelimit_size(rl), 7);
    mm_ratelimit_free(rl);
}

static void test_max_keys_bound(void **state)
{
    static const size_t bounds[] = {1, 2, 3, 63, 64, 65, 100, 1000};
    size_t b, i;

    (void)state;
    for (b = 0; b != sizeof(bounds) / sizeof(bounds[0]); ++b) {
        mm_ratelimit_t *rl = mm_ratelimit_new(1, 10, bounds[b]);

        for (i = 0; i != 20000; ++i) {
            char key[32];
            int n = snprintf(key, sizeof(key), "key-%zu", i);

            /* All at one instant: no bucket refills, none is dropped as idle. */
            assert_int_equal(mm_ratelimit_take(rl, key, (size_t)n, T0), 0);
            assert_true(mm_ratelimit_size(rl) <= bounds[b]);
        }
        /* With this many keys every shard filled up: the bound is reached. */
        assert_int_equal(mm_ratelimit_size(rl), bounds[b]);
        mm_ratelimit_free(rl);
    }
}

/* With one slot, a new key recycles the least recently used bucket: the
 * trade-off of bounded memory is that an evicted key starts full again. */
static void test_lru_recycling(void **state)
{
    mm_ratelimit_t *rl = mm_ratelimit_new(1, 2, 1);

    (void)state;
    assert_int_equal(take(rl, "a", T0), 0);
    assert_int_equal(take(rl, "a", T0), 0);
    assert_true(take(rl, "a", T0) > 0);
    assert_int_equal(take(rl, "a-much-longer-key-that-needs-a-new-bucket", T0), 0);
    assert_int_equal(mm_ratelimit_size(rl), 1);
    assert_int_equal(take(rl, "a", T0), 0);
    assert_int_equal(mm_ratelimit_size(rl), 1);
    mm_ratelimit_free(rl);
}

/* Buckets that refilled completely are dropped as time passes, so memory
 * follows the active keys rather than every key ever seen. */
static void test_idle_buckets_dropped(void **state)
{
    mm_ratelimit_t *rl = mm_ratelimit_new(10, 5, 100000);
    uint64_t now = T0;
    size_t i;

    (void)state;
    for (i = 0; i != 5000; ++i) {
        char key[32];
        int n = snprintf(key, sizeof(key), "ip-%zu", i);

        /* Each key takes one token; 1 s later every bucket is full again. */
        assert_int_equal(mm_ratelimit_take(rl, key, (size_t)n, now), 0);
        now += 1000;
        /* At most one live bucket per shard (64 shards). */
        assert_true(mm_ratelimit_size(rl) <= 64);
    }
    /* Meanwhile an active key keeps its state. */
    for (i = 0; i != 5; ++i)
        assert_int_equal(take(rl, "busy", now), 0);
    for (i = 0; i != 2000; ++i) {
        char key[32];
        int n = snprintf(key, sizeof(key), "other-%zu", i);

        assert_int_equal(mm_ratelimit_take(rl, key, (size_t)n, now), 0);
    }
    assert_true(take(rl, "busy", now) > 0);
    mm_ratelimit_free(rl);
}

#define THREADS 4
#define SHARED_KEYS 3
#define RUN_MS 300

typedef struct hammer {
    mm_ratelimit_t *rl;
    uint64_t start, end;
    unsigned long allowed[SHARED_KEYS];
    unsigned long refused;
} hammer_t;

static void *hammer_run(void *arg)
{
    hammer_t *h = arg;
    static const char *const keys[SHARED_KEYS] = {"shared-0", "shared-1", "shared-2"};
    unsigned long n = 0;
    uint64_t now;

    while ((now = mm_mono_ms()) < h->end) {
        size_t k = n++ % SHARED_KEYS;
        char noise[32];
        int len = snprintf(noise, sizeof(noise), "noise-%lu", n % 5000);

        if (mm_ratelimit_take(h->rl, keys[k], strlen(keys[k]), now) == 0)
            ++h->allowed[k];
        else
            ++h->refused;
        /* Unrelated keys churn the table in the same shards meanwhile. */
        (void)mm_ratelimit_take(h->rl, noise, (size_t)len, now);
    }
    return NULL;
}

static void test_threads_share_buckets(void **state)
{
    const double rate = 200, burst = 20;
    mm_ratelimit_t *rl = mm_ratelimit_new(rate, burst, 100000);
    hammer_t h[THREADS];
    pthread_t tid[THREADS];
    uint64_t start, elapsed;
    unsigned long total[SHARED_KEYS] = {0}, refused = 0;
    size_t i, k;

    (void)state;
    start = mm_mono_ms();
    for (i = 0; i != THREADS; ++i) {
        h[i] = (hammer_t){.rl = rl, .start = start, .end = start + RUN_MS};
        assert_int_equal(pthread_create(&tid[i], NULL, hammer_run, &h[i]), 0);
    }
    for (i = 0; i != THREADS; ++i)
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    elapsed = mm_mono_ms() - start;
    for (i = 0; i != THREADS; ++i) {
        refused += h[i].refused;
        for (k = 0; k != SHARED_KEYS; ++k)
            total[k] += h[i].allowed[k];
    }
    assert_true(refused > 0);
    for (k = 0; k != SHARED_KEYS; ++k) {
        /* Never more than burst + rate * elapsed (+1 for the ms rounding
         * of the clock); and the limiter did let the burst through. */
        assert_true((double)total[k] <= burst + rate * (double)(elapsed + 1) / 1000.0);
        assert_true((double)total[k] >= burst);
    }
    mm_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_parameters),   cmocka_unit_test(test_burst_then_refused),
        cmocka_unit_test(test_retry_after_is_exact), cmocka_unit_test(test_refill_over_time),
        cmocka_unit_test(test_steady_rate_allowed),  cmocka_unit_test(test_keys_independent),
        cmocka_unit_test(test_max_keys_bound),       cmocka_unit_test(test_lru_recycling),
        cmocka_unit_test(test_idle_buckets_dropped), cmocka_unit_test(test_threads_share_buckets),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
