/*
 * A broadcast's candidates from what the peer reported and where the
 * gateway saw it come from (SPEC §3.1). Pure: no I/O, unit-tested by
 * tests/unit/test_trk_candidates.c, which includes this file.
 */
#include <errno.h>
#include <string.h>
#include "mm/addr.h"
#include "trk.h"

static json_t *trk_candidate(const mm_addr_t *a, uint16_t port, const char *source)
{
    char ip[INET6_ADDRSTRLEN];

    return json_pack("{s:s,s:i,s:s,s:s}", "ip", mm_addr_ip_string(a, ip), "port", (int)port, "scope",
                     mm_scope_name(mm_addr_scope(a)), "source", source);
}

/* Appends unless the same ip:port is already listed (the first wins). */
static void trk_candidate_add(json_t *list, json_t *c)
{
    size_t i;
    json_t *v;

    json_array_foreach(list, i, v)
    {
        if (json_equal(json_object_get(v, "ip"), json_object_get(c, "ip")) &&
            json_equal(json_object_get(v, "port"), json_object_get(c, "port"))) {
            json_decref(c);
            return;
        }
    }
    json_array_append_new(list, c);
}

int trk_candidates_build(json_t *addresses, int64_t port, const char *observed_ip, json_t **out, mm_problem_t *p)
{
    mm_addr_t observed, a;
    int have_observed = 0;
    json_t *list = json_array(), *v;
    size_t i;

    if (observed_ip != NULL && observed_ip[0] != '\0' && mm_addr_parse(observed_ip, strlen(observed_ip), &observed) == 0 &&
        !mm_addr_is_unspecified(&observed))
        have_observed = 1;
    json_array_foreach(addresses, i, v)
    {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);

        if (!json_is_string(v)) {
            mm_problem_set(p, 400, "invalid_field", "field 'addresses[%zu]' must be a string", i);
            goto fail;
        }
        if (memchr(s, '%', len) != NULL) {
            mm_problem_set(p, 400, "invalid_field", "field 'addresses[%zu]' has a zone index (%%...): send the address alone", i);
            goto fail;
        }
        if (mm_addr_parse(s, len, &a) != 0) {
            mm_problem_set(p, 400, "invalid_field",
                           "field 'addresses[%zu]' is not an IPv4/IPv6 literal with an optional port (1.2.3.4:5, [2001:db8::1]:5)",
                           i);
            goto fail;
        }
        if (mm_addr_is_unusable(&a)) {
            mm_problem_set(p, 400, "invalid_field", "field 'addresses[%zu]' is a multicast, broadcast or reserved address", i);
            goto fail;
        }
        if (mm_addr_is_unspecified(&a)) {
            /* 0.0.0.0 / :: mean "where you see me"; without an observed address there is nothing to add */
            if (have_observed)
                trk_candidate_add(list, trk_candidate(&observed, a.port != 0 ? a.port : (uint16_t)port, "observed"));
            continue;
        }
        trk_candidate_add(list, trk_candidate(&a, a.port != 0 ? a.port : (uint16_t)port, "reported"));
    }
    if (have_observed)
        trk_candidate_add(list, trk_candidate(&observed, (uint16_t)port, "observed"));
    *out = list;
    return 0;

fail:
    json_decref(list);
    return -EINVAL;
}
