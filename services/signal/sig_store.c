/*
 * The Redis side of signaling: key names and the Lua scripts.
 *
 * Each change is one script, so a session, the target's inbox and the
 * wake-up that announces them never disagree, and times come from Redis's
 * own clock (TIME), the clock its TTLs run on. The inbox is a sorted set of
 * pending session ids scored by their expiry (unix ms): expired entries are
 * dropped before anything counts or reads it, so a full inbox empties by
 * itself. Scripts reach session keys they build from an inbox's members,
 * which a single Redis (our deployment) allows; a Redis Cluster would need
 * the ids hash-tagged to the inbox's slot.
 */
#include <stdio.h>
#include "sig.h"

#define SIG_LUA_NOW                                                                                                                \
    "local t = redis.call('TIME') "                                                                                                \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* KEYS: target's presence, target's inbox, session. ARGV: session id, ttl ms,
 * max pending, from, from email, to, to email, offer JSON, wake channel.
 * Returns {1, ttl ms} (created and announced), {0} (the target is not
 * broadcasting), {-1, ms until the oldest pending offer expires} (inbox
 * full), {-2} (the session id exists: never, with 128 random bits). */
const char sig_lua_offer[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end "
    "if redis.call('EXISTS', KEYS[3]) == 1 then return {-2} end " SIG_LUA_NOW "local ttl = tonumber(ARGV[2]) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now)) "
    "if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then "
    "  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES') "
    "  return {-1, tonumber(first[2]) - now} "
    "end "
    "redis.call('HSET', KEYS[3], 'from', ARGV[4], 'from_email', ARGV[5], 'to', ARGV[6], "
    "  'to_email', ARGV[7], 'offer', ARGV[8], 'state', 'pending', 'created', string.format('%.0f', now)) "
    "redis.call('PEXPIRE', KEYS[3], ttl) "
    "redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl), ARGV[1]) "
    "redis.call('PEXPIRE', KEYS[2], ttl) "
    "redis.call('PUBLISH', ARGV[9], ARGV[1]) "
    "return {1, ttl}";

/* KEYS: inbox. ARGV: session key prefix. Takes every pending offer at once
 * (atomically: two pollers, on any copies, never get the same offer).
 * Returns flat 7-tuples: session id, expiry (unix ms), from, from email,
 * offer JSON, age (ms since the offer), ms left. */
const char sig_lua_take[] =
    SIG_LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now)) "
                "local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES') "
                "if #ids == 0 then return {} end "
                "redis.call('DEL', KEYS[1]) "
                "local out = {} "
                "for i = 1, #ids, 2 do "
                "  local v = redis.call('HMGET', ARGV[1] .. ids[i], 'from', 'from_email', 'offer', 'state', "
                "    'created') "
                "  local left = redis.call('PTTL', ARGV[1] .. ids[i]) "
                "  if v[1] and v[4] == 'pending' and left > 0 then "
                "    for _, x in ipairs({ids[i], ids[i + 1], v[1], v[2] or '', v[3] or '{}', "
                "      string.format('%.0f', now - tonumber(v[5] or now)), "
                "      string.format('%.0f', left)}) do out[#out + 1] = x end "
                "  end "
                "end "
                "return out";

/* KEYS: inbox. ARGV: session key prefix, wake channel, then id, expiry
 * pairs. Puts back offers taken for a client that went away before it got
 * them, when they are still pending, and announces them again. Returns how
 * many it put back. */
const char sig_lua_requeue[] = SIG_LUA_NOW "local n, last = 0, 0 "
                                           "for i = 3, #ARGV, 2 do "
                                           "  local exp = tonumber(ARGV[i + 1]) "
                                           "  if exp > now and redis.call('HGET', ARGV[1] .. ARGV[i], 'state') == 'pending' then "
                                           "    n = n + redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i]) "
                                           "    if exp > last then last = exp end "
                                           "  end "
                                           "end "
                                           "if n > 0 then "
                                           "  local left = redis.call('PTTL', KEYS[1]) "
                                           "  if left < last - now then "
                                           "    redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', last)) "
                                           "  end "
                                           "  redis.call('PUBLISH', ARGV[2], 'requeued') "
                                           "end "
                                           "return n";

/* KEYS: session, caller's inbox. ARGV: caller's peer_id, answer JSON, new
 * secret, punch delay ms, session id, answered channel. Only the target
 * answers; the first answer stands (a retried answer gets the same secret
 * and punch_at back). Returns {0} (no such session for this caller), or
 * {1 (answered now) | 2 (already answered), from, from email, offer JSON,
 * secret, punch_at, ms left, now}. */
const char sig_lua_answer[] =
    "local v = redis.call('HMGET', KEYS[1], 'to', 'state', 'from', 'from_email', 'offer', 'secret', "
    "  'punch_at') "
    "if not v[1] or v[1] ~= ARGV[1] then return {0} end " SIG_LUA_NOW "local left = redis.call('PTTL', KEYS[1]) "
    "if v[2] == 'answered' then return {2, v[3], v[4], v[5], v[6], v[7], left, now} end "
    "local punch = string.format('%.0f', now + tonumber(ARGV[4])) "
    "redis.call('HSET', KEYS[1], 'state', 'answered', 'answer', ARGV[2], 'secret', ARGV[3], "
    "  'punch_at', punch) "
    "redis.call('ZREM', KEYS[2], ARGV[5]) "
    "redis.call('PUBLISH', ARGV[6], ARGV[5]) "
    "return {1, v[3], v[4], v[5], ARGV[3], punch, left, now}";

/* KEYS: session. Returns {from, from email, to, to email, state, offer,
 * answer, secret, punch_at, ms left, now}, or {} when it does not exist. */
const char sig_lua_read[] = "local v = redis.call('HMGET', KEYS[1], 'from', 'from_email', 'to', 'to_email', 'state', 'offer', "
                            "  'answer', 'secret', 'punch_at') "
                            "if not v[1] then return {} end " SIG_LUA_NOW "local left = redis.call('PTTL', KEYS[1]) "
                            "if left <= 0 then return {} end "
                            "for i = 1, 9 do if not v[i] then v[i] = '' end end "
                            "v[10] = left v[11] = now "
                            "return v";

const char *sig_key(char *buf, const char *kind, const char *id)
{
    snprintf(buf, 96, "%s%s:%s", SIG_KEY_PREFIX, kind, id);
    return buf;
}
