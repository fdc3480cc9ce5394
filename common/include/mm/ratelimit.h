/*
 * Per-key token buckets (rate per second, burst), shared by all threads of
 * a process. Keys are short byte strings (a peer_id, an IP). The table is
 * sharded, each shard behind its own mutex; idle full buckets are evicted
 * so memory follows the active keys, bounded by `max_keys` (when full, the
 * least recently used bucket of the shard is recycled).
 */
#ifndef MM_RATELIMIT_H
#define MM_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_ratelimit mm_ratelimit_t;

/* `rate` tokens per second, at most `burst` stored; `max_keys` bounds memory. */
mm_ratelimit_t *mm_ratelimit_new(double rate, double burst, size_t max_keys);
void mm_ratelimit_free(mm_ratelimit_t *rl); /* NULL-safe */

/* Takes one token for `key` at time `now_ms` (monotonic). Returns 0 when
 * allowed; otherwise the number of milliseconds (>= 1) until a token is
 * available, for Retry-After. */
uint64_t mm_ratelimit_take(mm_ratelimit_t *rl, const void *key, size_t keylen, uint64_t now_ms);

/* Number of keys currently tracked (for metrics and tests). */
size_t mm_ratelimit_size(mm_ratelimit_t *rl);

#endif
