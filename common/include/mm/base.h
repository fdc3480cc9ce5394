/*
 * libmm base: allocation that never returns NULL, the one error type, and
 * the h2o include with the flavour macros this build needs.
 */
#ifndef MM_BASE_H
#define MM_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define MM_VERSION "0.1.0"

#define MM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define MM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define MM_NORETURN __attribute__((noreturn))
#else
#define MM_PRINTF(f, a)
#define MM_NORETURN
#endif

/* An error message for the caller to show; functions that take an optional
 * `mm_err_t *err` fill it on failure and leave it alone on success. */
typedef struct mm_err {
    char msg[512];
} mm_err_t;

void mm_err_set(mm_err_t *err, const char *fmt, ...) MM_PRINTF(2, 3);

/* Out of memory is fatal: these log, then abort. */
void *mm_xmalloc(size_t n);
void *mm_xcalloc(size_t nmemb, size_t n);
void *mm_xrealloc(void *p, size_t n);
char *mm_xstrdup(const char *s);
char *mm_xstrndup(const char *s, size_t n);

/* Lowercase hex of `len` bytes into `out`, which must hold 2 * len + 1 bytes. */
void mm_hex_encode(char *out, const uint8_t *in, size_t len);

/* Milliseconds since the Unix epoch / a monotonic clock. */
uint64_t mm_now_ms(void);
uint64_t mm_mono_ms(void);

/* Fills `buf` with cryptographically strong random bytes; aborts on failure. */
void mm_random_bytes(void *buf, size_t len);

#endif
