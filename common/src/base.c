/*
 * libmm base: allocation that aborts on failure, error messages, clocks,
 * hex and randomness.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "mm/base.h"
#include "mm/log.h"

void mm_err_set(mm_err_t *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

static MM_NORETURN void mm__oom(size_t n)
{
    mm_log(MM_LOG_ERROR, "out of memory (allocating %zu bytes)", n);
    abort();
}

void *mm_xmalloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);

    if (p == NULL)
        mm__oom(n);
    return p;
}

void *mm_xcalloc(size_t nmemb, size_t n)
{
    void *p = calloc(nmemb != 0 ? nmemb : 1, n != 0 ? n : 1);

    if (p == NULL)
        mm__oom(nmemb * n);
    return p;
}

void *mm_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n != 0 ? n : 1);

    if (q == NULL)
        mm__oom(n);
    return q;
}

char *mm_xstrdup(const char *s)
{
    return mm_xstrndup(s, strlen(s));
}

char *mm_xstrndup(const char *s, size_t n)
{
    char *p = mm_xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void mm_hex_encode(char *out, const uint8_t *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i != len; ++i) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
}

static uint64_t mm__clock_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t mm_now_ms(void)
{
    return mm__clock_ms(CLOCK_REALTIME);
}

uint64_t mm_mono_ms(void)
{
    return mm__clock_ms(CLOCK_MONOTONIC);
}

void mm_random_bytes(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        mm_log(MM_LOG_ERROR, "RAND_bytes failed");
        abort();
    }
}
