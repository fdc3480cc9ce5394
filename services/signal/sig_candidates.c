/*
 * Candidates of an offer or an answer, and the small parsers of the signaling
 * requests. Pure functions over jansson and mm/addr.h (no I/O), unit-tested
 * in tests/unit/test_sig_candidates.c.
 *
 * The anti-abuse rules (SPEC §3.3) keep signaling from aiming a peer's probes
 * at a stranger: a `host` candidate must be an address that only reaches the
 * requester's own networks (private, link-local, loopback), and a `srflx`
 * candidate must be the very IP the gateway saw the request come from, and
 * public (a requester seen at a private address is on a network it can
 * reach directly: it reports that address as a host candidate). The
 * srflx port cannot be checked (a NAT maps the UDP socket elsewhere than the
 * TCP connection), and need not be: any port of the requester's own IP only
 * reaches the requester.
 */
#include <errno.h>
#include <string.h>
#include "mm/addr.h"
#include "sig.h"

static int sig_candidate_one(json_t *c, size_t i, const mm_addr_t *observed, json_t *out, mm_problem_t *p)
{
    json_t *ip = json_object_get(c, "ip"), *port = json_object_get(c, "port"), *type = json_object_get(c, "type");
    const char *ips, *types;
    char canon[INET6_ADDRSTRLEN];
    mm_addr_t a;
    json_int_t portv;
    size_t j;

    if (!json_is_object(c)) {
        mm_problem_set(p, 400, "invalid_field", "candidates[%zu] must be an object {\"ip\",\"port\",\"type\"}", i);
        return -EINVAL;
    }
    if (!json_is_string(ip)) {
        mm_problem_set(p, 400, "invalid_field", "candidates[%zu].ip must be a string: an IP address", i);
        return -EINVAL;
    }
    ips = json_string_value(ip);
    /* an IP alone: mm_addr_parse also takes "ip:port" and "[v6]", which are not IPs */
    if (json_string_length(ip) == 0 || ips[0] == '[' || mm_addr_parse(ips, json_string_length(ip), &a) != 0 || a.port != 0) {
        mm_problem_set(p, 400, "invalid_field", "candidates[%zu].ip must be an IPv4 or IPv6 address without a port", i);
        return -EINVAL;
    }
    if (!json_is_integer(port) || (portv = json_integer_value(port)) < 1 || portv > 65535) {
        mm_problem_set(p, 400, "invalid_field", "candidates[%zu].port must be an integer from 1 to 65535", i);
        return -EINVAL;
    }
    if (!json_is_string(type) || ((types = json_string_value(type)), strcmp(types, "host") != 0 && strcmp(types, "srflx") != 0)) {
        mm_problem_set(p, 400, "invalid_field", "candidates[%zu].type must be \"host\" or \"srflx\"", i);
        return -EINVAL;
    }
    if (strcmp(types, "host") == 0) {
        mm_scope_t scope = mm_addr_scope(&a);
        if (mm_addr_is_unspecified(&a) || mm_addr_is_unusable(&a) || scope == MM_SCOPE_PUBLIC) {
            mm_problem_set(p, 400, "invalid_candidate",
                           "candidates[%zu]: a host candidate must be a private, link-local or loopback address (%s is not);"
                           " report a public address as srflx, from STUN",
                           i, mm_addr_ip_string(&a, canon));
            return -EINVAL;
        }
    } else if (observed == NULL || !mm_addr_same_ip(&a, observed)) {
        char obs[INET6_ADDRSTRLEN];
        mm_problem_set(p, 400, "invalid_candidate",
                       "candidates[%zu]: a srflx candidate must carry the public IP this request came from (%s), not %s", i,
                       observed != NULL ? mm_addr_ip_string(observed, obs) : "unknown", mm_addr_ip_string(&a, canon));
        return -EINVAL;
    } else if (mm_addr_scope(&a) != MM_SCOPE_PUBLIC || mm_addr_is_unusable(&a)) {
        /* the request came from a private network: that address is a host candidate, not a reflexive one */
        mm_problem_set(p, 400, "invalid_candidate",
                       "candidates[%zu]: a srflx candidate must be a public address (%s is not); send it as host", i,
                       mm_addr_ip_string(&a, canon));
        return -EINVAL;
    }
    mm_addr_ip_string(&a, canon);
    /* the same ip, port and type twice says nothing new: keep the first */
    for (j = 0; j != json_array_size(out); ++j) {
        json_t *o = json_array_get(out, j);
        if (strcmp(json_string_value(json_object_get(o, "ip")), canon) == 0 &&
            json_integer_value(json_object_get(o, "port")) == portv &&
            strcmp(json_string_value(json_object_get(o, "type")), types) == 0)
            return 0;
    }
    json_array_append_new(out, json_pack("{s:s,s:I,s:s}", "ip", canon, "port", portv, "type", types));
    return 0;
}

int sig_candidates_check(json_t *candidates, const char *observed_ip, json_t **out, mm_problem_t *p)
{
    mm_addr_t observed;
    int have_observed =
        observed_ip != NULL && observed_ip[0] != '\0' && mm_addr_parse(observed_ip, strlen(observed_ip), &observed) == 0;
    json_t *list;
    size_t i;

    if (candidates == NULL) {
        mm_problem_set(p, 400, "invalid_field", "candidates is required: an array of 1 to %d {\"ip\",\"port\",\"type\"}",
                       SIG_MAX_CANDIDATES);
        return -EINVAL;
    }
    if (!json_is_array(candidates) || json_array_size(candidates) < 1 || json_array_size(candidates) > SIG_MAX_CANDIDATES) {
        mm_problem_set(p, 400, "invalid_field", "candidates must be an array of 1 to %d {\"ip\",\"port\",\"type\"}",
                       SIG_MAX_CANDIDATES);
        return -EINVAL;
    }
    list = json_array();
    for (i = 0; i != json_array_size(candidates); ++i) {
        if (sig_candidate_one(json_array_get(candidates, i), i, have_observed ? &observed : NULL, list, p) != 0) {
            json_decref(list);
            return -EINVAL;
        }
    }
    *out = list;
    return 0;
}

int sig_nat_mapping_check(json_t *body, const char **out, mm_problem_t *p)
{
    json_t *v = json_object_get(body, "nat_mapping");

    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "endpoint-independent") == 0) {
        *out = "endpoint-independent";
        return 0;
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "address-dependent") == 0) {
        *out = "address-dependent";
        return 0;
    }
    mm_problem_set(p, 400, "invalid_field", "nat_mapping must be \"endpoint-independent\" or \"address-dependent\" (or absent)");
    return -EINVAL;
}

int sig_session_id_valid(const char *s, size_t len)
{
    size_t i;

    if (len != SIG_SESSION_ID_LEN)
        return 0;
    for (i = 0; i != len; ++i)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int sig_wait_parse(const char *s, size_t len)
{
    int v = 0;
    size_t i;

    /* digits only, no sign, no spaces, at most two of them ("030" is not a wait) */
    if (len < 1 || len > 2)
        return -EINVAL;
    for (i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    return v <= SIG_WAIT_MAX ? v : -EINVAL;
}
