/*
 * Per-key token buckets shared by all threads of a process.
 *
 * Keys are hashed with SipHash-2-4 under a random per-limiter key, so a
 * client cannot choose keys that pile up in one shard or one hash chain.
 * The top half of the hash picks one of up to 64 shards, each with its own
 * mutex, chained hash table and LRU list; the bottom half picks the slot.
 * A shard holds at most its share of max_keys buckets: past that, its least
 * recently used bucket is recycled. Independently, every take drops up to
 * two least recently used buckets that have refilled to `burst`: a full
 * bucket behaves exactly like a missing one, so this costs no accuracy and
 * lets memory follow the keys that are actually active.
 */
#include <endian.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "mm/base.h"
#include "mm/ratelimit.h"

#define MM__RL_MAX_SHARDS 64
#define MM__RL_MIN_SLOTS 8
#define MM__RL_IDLE_DROPS 2
#define MM__RL_CACHE_LINE 64
/* Retry-After never exceeds this (about 31 years), so that absurdly small
 * rates cannot overflow the conversion to uint64_t. */
#define MM__RL_MAX_WAIT_MS 1e12

#define MM__RL_FROM_LRU(l) ((mm__rl_bucket_t *)((char *)(l)-offsetof(mm__rl_bucket_t, lru)))

typedef struct mm__rl_link {
    struct mm__rl_link *prev, *next;
} mm__rl_link_t;

typedef struct mm__rl_bucket {
    mm__rl_link_t lru;           /* in the shard's LRU list */
    struct mm__rl_bucket *chain; /* next bucket in the same hash slot */
    uint64_t hash;
    uint64_t last_ms; /* time of the last take; `tokens` is as of then */
    double tokens;
    size_t keylen, keycap;
    uint8_t key[];
} mm__rl_bucket_t;

typedef struct mm__rl_shard {
    _Alignas(MM__RL_CACHE_LINE) pthread_mutex_t lock;
    mm__rl_bucket_t **slots; /* nslots chains, nslots a power of two */
    size_t nslots;
    size_t count;      /* buckets in the shard */
    size_t cap;        /* this shard's share of max_keys */
    mm__rl_link_t lru; /* lru.next is the most recent, lru.prev the least */
} mm__rl_shard_t;

struct mm_ratelimit {
    double rate_per_ms;
    double burst;
    uint64_t k0, k1;  /* SipHash key */
    size_t nshards;   /* a power of two */
    void *shards_mem; /* the allocation `shards` is aligned inside */
    mm__rl_shard_t *shards;
};

#define MM__ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define MM__SIPROUND                                                                                                               \
    do {                                                                                                                           \
        v0 += v1;                                                                                                                  \
        v1 = MM__ROTL(v1, 13);                                                                                                     \
        v1 ^= v0;                                                                                                                  \
        v0 = MM__ROTL(v0, 32);                                                                                                     \
        v2 += v3;                                                                                                                  \
        v3 = MM__ROTL(v3, 16);                                                                                                     \
        v3 ^= v2;                                                                                                                  \
        v0 += v3;                                                                                                                  \
        v3 = MM__ROTL(v3, 21);                                                                                                     \
        v3 ^= v0;                                                                                                                  \
        v2 += v1;                                                                                                                  \
        v1 = MM__ROTL(v1, 17);                                                                                                     \
        v1 ^= v2;                                                                                                                  \
        v2 = MM__ROTL(v2, 32);                                                                                                     \
    } while (0)

/* SipHash-2-4 (Aumasson and Bernstein), the reference algorithm: a keyed
 * hash fast on short inputs whose output an attacker cannot predict
 * without the key. */
static uint64_t mm__siphash24(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t m, b = (uint64_t)len << 56;
    size_t i, tail = len & 7;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&m, in + i, 8);
        m = le64toh(m);
        v3 ^= m;
        MM__SIPROUND;
        MM__SIPROUND;
        v0 ^= m;
    }
    for (; tail != 0; --tail)
        b |= (uint64_t)in[i + tail - 1] << (8 * (tail - 1));
    v3 ^= b;
    MM__SIPROUND;
    MM__SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    MM__SIPROUND;
    MM__SIPROUND;
    MM__SIPROUND;
    MM__SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void mm__rl_lru_unlink(mm__rl_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void mm__rl_lru_push_front(mm__rl_shard_t *shard, mm__rl_link_t *l)
{
    l->prev = &shard->lru;
    l->next = shard->lru.next;
    shard->lru.next->prev = l;
    shard->lru.next = l;
}

/* Tokens a bucket holds `elapsed_ms` after its last take. The state only
 * changes when a token is taken, and both the decision and the Retry-After
 * computation go through this one monotone expression, so that a refused
 * request changes nothing and waiting exactly the announced time is
 * enough, to the last floating-point bit, however often the client polls. */
static double mm__rl_refilled(const mm_ratelimit_t *rl, double tokens, uint64_t elapsed_ms)
{
    double t = tokens + (double)elapsed_ms * rl->rate_per_ms;

    return t < rl->burst ? t : rl->burst;
}

/* Time since the bucket's last take. Threads read their clocks before
 * taking the lock, so `now_ms` may be slightly behind the bucket's time:
 * that counts as no time at all rather than moving the bucket back. */
static uint64_t mm__rl_elapsed(const mm__rl_bucket_t *b, uint64_t now_ms)
{
    return now_ms > b->last_ms ? now_ms - b->last_ms : 0;
}

/* The smallest wait (>= 1 ms) after which the bucket, `elapsed_ms` after
 * its last take, holds a whole token. The division gives the answer up to
 * rounding; the two loops settle it against mm__rl_refilled itself. */
static uint64_t mm__rl_wait_ms(const mm_ratelimit_t *rl, const mm__rl_bucket_t *b, uint64_t elapsed_ms)
{
    double d = ceil((1.0 - mm__rl_refilled(rl, b->tokens, elapsed_ms)) / rl->rate_per_ms);
    uint64_t ms;

    if (!(d >= 1.0))
        d = 1.0;
    if (d > MM__RL_MAX_WAIT_MS)
        d = MM__RL_MAX_WAIT_MS;
    ms = (uint64_t)d;
    while (ms > 1 && mm__rl_refilled(rl, b->tokens, elapsed_ms + ms - 1) >= 1.0)
        --ms;
    while (ms < (uint64_t)MM__RL_MAX_WAIT_MS && mm__rl_refilled(rl, b->tokens, elapsed_ms + ms) < 1.0)
        ++ms;
    return ms;
}

static mm__rl_bucket_t *mm__rl_find(mm__rl_shard_t *shard, uint64_t hash, const void *key, size_t keylen)
{
    mm__rl_bucket_t *b = shard->slots[hash & (shard->nslots - 1)];

    while (b != NULL && !(b->hash == hash && b->keylen == keylen && (keylen == 0 || memcmp(b->key, key, keylen) == 0)))
        b = b->chain;
    return b;
}

static void mm__rl_slot_remove(mm__rl_shard_t *shard, mm__rl_bucket_t *b)
{
    mm__rl_bucket_t **p = &shard->slots[b->hash & (shard->nslots - 1)];

    while (*p != b)
        p = &(*p)->chain;
    *p = b->chain;
}

static void mm__rl_slot_insert(mm__rl_shard_t *shard, mm__rl_bucket_t *b)
{
    mm__rl_bucket_t **slot = &shard->slots[b->hash & (shard->nslots - 1)];

    b->chain = *slot;
    *slot = b;
}

/* Doubles the slot array while the shard holds more buckets than slots,
 * so chains stay short; the array stops growing at the shard's cap, which
 * keeps memory proportional to the buckets actually present. */
static void mm__rl_maybe_grow(mm__rl_shard_t *shard)
{
    mm__rl_bucket_t **old = shard->slots;
    size_t i, oldn = shard->nslots;

    if (shard->count <= oldn || oldn >= shard->cap)
        return;
    shard->nslots = oldn * 2;
    shard->slots = mm_xcalloc(shard->nslots, sizeof(*shard->slots));
    for (i = 0; i != oldn; ++i) {
        mm__rl_bucket_t *b = old[i], *next;

        for (; b != NULL; b = next) {
            next = b->chain;
            mm__rl_slot_insert(shard, b);
        }
    }
    free(old);
}

/* Frees up to MM__RL_IDLE_DROPS least recently used buckets that are full
 * by `now_ms`, stopping at the first that is not (or at `keep`). */
static void mm__rl_drop_idle(const mm_ratelimit_t *rl, mm__rl_shard_t *shard, const mm__rl_bucket_t *keep, uint64_t now_ms)
{
    int n;

    for (n = 0; n != MM__RL_IDLE_DROPS && shard->lru.prev != &shard->lru; ++n) {
        mm__rl_bucket_t *b = MM__RL_FROM_LRU(shard->lru.prev);

        if (b == keep || mm__rl_refilled(rl, b->tokens, mm__rl_elapsed(b, now_ms)) < rl->burst)
            break;
        mm__rl_lru_unlink(&b->lru);
        mm__rl_slot_remove(shard, b);
        --shard->count;
        free(b);
    }
}

/* Adds a full bucket for a new key, recycling the shard's least recently
 * used bucket when the shard is at its cap. Returns it, not yet in the LRU. */
static mm__rl_bucket_t *mm__rl_insert(const mm_ratelimit_t *rl, mm__rl_shard_t *shard, uint64_t hash, const void *key,
                                      size_t keylen, uint64_t now_ms)
{
    mm__rl_bucket_t *b = NULL;

    if (shard->count >= shard->cap) {
        b = MM__RL_FROM_LRU(shard->lru.prev);
        mm__rl_lru_unlink(&b->lru);
        mm__rl_slot_remove(shard, b);
        --shard->count;
        if (b->keycap < keylen) {
            free(b);
            b = NULL;
        }
    }
    if (b == NULL) {
        b = mm_xmalloc(sizeof(*b) + keylen);
        b->keycap = keylen;
    }
    b->hash = hash;
    b->last_ms = now_ms;
    b->tokens = rl->burst;
    b->keylen = keylen;
    if (keylen != 0)
        memcpy(b->key, key, keylen);
    ++shard->count;
    mm__rl_maybe_grow(shard);
    mm__rl_slot_insert(shard, b);
    return b;
}

/* Shards are a power of two no larger than max_keys, so that each shard's
 * cap is at least 1; max_keys is spread over them exactly, so the caps add
 * up to max_keys. Shards sit on their own cache lines: threads working on
 * different shards never share a line. */
mm_ratelimit_t *mm_ratelimit_new(double rate, double burst, size_t max_keys)
{
    mm_ratelimit_t *rl = NULL;
    uint64_t seed[2];
    size_t i;

    if (!isfinite(rate) || !isfinite(burst) || !(rate > 0) || !(burst >= 1) || max_keys == 0)
        goto out;
    rl = mm_xcalloc(1, sizeof(*rl));
    rl->rate_per_ms = rate / 1000.0;
    rl->burst = burst;
    mm_random_bytes(seed, sizeof(seed));
    rl->k0 = seed[0];
    rl->k1 = seed[1];
    for (rl->nshards = 1; rl->nshards * 2 <= MM__RL_MAX_SHARDS && rl->nshards * 2 <= max_keys;)
        rl->nshards *= 2;
    rl->shards_mem = mm_xcalloc(1, rl->nshards * sizeof(mm__rl_shard_t) + MM__RL_CACHE_LINE);
    rl->shards = (mm__rl_shard_t *)(((uintptr_t)rl->shards_mem + MM__RL_CACHE_LINE - 1) & ~(uintptr_t)(MM__RL_CACHE_LINE - 1));
    for (i = 0; i != rl->nshards; ++i) {
        mm__rl_shard_t *shard = &rl->shards[i];

        pthread_mutex_init(&shard->lock, NULL);
        shard->cap = max_keys / rl->nshards + (i < max_keys % rl->nshards);
        shard->nslots = MM__RL_MIN_SLOTS;
        shard->slots = mm_xcalloc(shard->nslots, sizeof(*shard->slots));
        shard->lru.prev = shard->lru.next = &shard->lru;
    }
out:
    return rl;
}

void mm_ratelimit_free(mm_ratelimit_t *rl)
{
    size_t i;

    if (rl == NULL)
        return;
    for (i = 0; i != rl->nshards; ++i) {
        mm__rl_shard_t *shard = &rl->shards[i];

        while (shard->lru.next != &shard->lru) {
            mm__rl_bucket_t *b = MM__RL_FROM_LRU(shard->lru.next);

            mm__rl_lru_unlink(&b->lru);
            free(b);
        }
        free(shard->slots);
        pthread_mutex_destroy(&shard->lock);
    }
    free(rl->shards_mem);
    free(rl);
}

/* One lock, one hash lookup, a few floating-point operations: cheap enough
 * for every request. A new key starts with a full bucket; a refused take
 * leaves the bucket as it was. A NULL limiter allows everything (rate
 * limiting off). */
uint64_t mm_ratelimit_take(mm_ratelimit_t *rl, const void *key, size_t keylen, uint64_t now_ms)
{
    mm__rl_shard_t *shard;
    mm__rl_bucket_t *b;
    uint64_t hash, elapsed, wait = 0;
    double tokens;

    if (rl == NULL)
        goto out;
    hash = mm__siphash24(rl->k0, rl->k1, key, keylen);
    shard = &rl->shards[(hash >> 32) & (rl->nshards - 1)];
    pthread_mutex_lock(&shard->lock);
    b = mm__rl_find(shard, hash, key, keylen);
    if (b != NULL) {
        mm__rl_lru_unlink(&b->lru);
    } else {
        mm__rl_drop_idle(rl, shard, NULL, now_ms);
        b = mm__rl_insert(rl, shard, hash, key, keylen, now_ms);
    }
    mm__rl_lru_push_front(shard, &b->lru);
    elapsed = mm__rl_elapsed(b, now_ms);
    tokens = mm__rl_refilled(rl, b->tokens, elapsed);
    if (tokens >= 1.0) {
        b->tokens = tokens - 1.0;
        b->last_ms += elapsed;
    } else {
        wait = mm__rl_wait_ms(rl, b, elapsed);
    }
    mm__rl_drop_idle(rl, shard, b, now_ms);
    pthread_mutex_unlock(&shard->lock);
out:
    return wait;
}

size_t mm_ratelimit_size(mm_ratelimit_t *rl)
{
    size_t i, n = 0;

    for (i = 0; rl != NULL && i != rl->nshards; ++i) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].count;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}
