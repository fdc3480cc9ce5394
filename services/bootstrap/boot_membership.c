/*
 * The Redis side of bootstrap memberships: the membership key, the set of
 * node ids that discover samples, and the deadline index mm-reaper polls.
 *
 * Each change is one Lua script, so the key, the set and the deadline never
 * disagree, with times from Redis's own clock (TIME), the clock its TTLs run
 * on. A membership value is "<gossip port> <address that passed the connect
 * test>". A node is live while its membership key and its presence key
 * both exist: the sample checks both, so a node is gone with its broadcast
 * at once, before mm-reaper has run.
 */
#include <stdio.h>
#include "boot.h"

/* KEYS: presence, membership. Returns {1 when the peer broadcasts, else 0;
 * the membership value, or nil}. */
const char boot_lua_status[] = "return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2])}";

/* KEYS: membership, presence, nodes, deadlines. ARGV: ttl s, peer_id, value.
 * Begins or renews a membership, only while the peer broadcasts: nil when
 * it does not, else {1 when the membership was already live or 0 when this
 * begins one, the time set in unix ms}. */
const char boot_lua_join[] = "if redis.call('EXISTS', KEYS[2]) == 0 then return false end "
                             "local existed = redis.call('EXISTS', KEYS[1]) "
                             "local t = redis.call('TIME') "
                             "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
                             "redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1]) "
                             "redis.call('SADD', KEYS[3], ARGV[2]) "
                             "redis.call('ZADD', KEYS[4], string.format('%.0f', ms + tonumber(ARGV[1]) * 1000), ARGV[2]) "
                             "return {existed, string.format('%.0f', ms)}";

/* KEYS: membership, nodes, deadlines. ARGV: peer_id. Ends a membership;
 * returns 1 when there was one. */
const char boot_lua_leave[] = "redis.call('SREM', KEYS[2], ARGV[1]) "
                              "redis.call('ZREM', KEYS[3], ARGV[1]) "
                              "return redis.call('DEL', KEYS[1])";

/* KEYS: nodes. ARGV: limit, caller, membership prefix, presence prefix.
 * A uniformly random set of live node ids other than the caller, each
 * followed by its membership value: at least `limit` of them when there are
 * that many, possibly a few more, in no particular order; the caller picks
 * `limit` of them at random.
 * SRANDMEMBER with a positive count draws a uniformly random set of
 * distinct members in O(count), but replies in the set's hash order, which
 * is why every live member drawn is kept rather than the first few.
 * Members whose membership or presence key is gone are dropped from the set
 * as they are met (the reaper ends their rows), and the draw is repeated, a
 * few times at most, only when it met such members: the cost stays
 * O(limit) however large the set. */
const char boot_lua_sample[] = "local want = tonumber(ARGV[1]) "
                               "local out, seen = {}, {[ARGV[2]] = true} "
                               "for round = 1, 4 do "
                               "  local dead = 0 "
                               "  for _, id in ipairs(redis.call('SRANDMEMBER', KEYS[1], want + 1 + #out / 2)) do "
                               "    if not seen[id] then "
                               "      seen[id] = true "
                               "      local v = redis.call('GET', ARGV[3] .. id) "
                               "      if v and redis.call('EXISTS', ARGV[4] .. id) == 1 then "
                               "        out[#out + 1] = id "
                               "        out[#out + 1] = v "
                               "      else "
                               "        redis.call('SREM', KEYS[1], id) "
                               "        dead = dead + 1 "
                               "      end "
                               "    end "
                               "  end "
                               "  if dead == 0 or #out >= 2 * want then return out end "
                               "end "
                               "return out";

const char *boot_membership_key(char *buf, const char *peer_id)
{
    snprintf(buf, 80, "%s%s", BOOT_MEMBERSHIP_PREFIX, peer_id);
    return buf;
}

const char *boot_presence_key(char *buf, const char *peer_id)
{
    snprintf(buf, 80, "%s%s", BOOT_PRESENCE_PREFIX, peer_id);
    return buf;
}
