/* Unit tests of signaling's candidate rules and small parsers (services/signal/sig_candidates.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "../../services/signal/sig_candidates.c"

static json_t *check_ok(const char *candidates_json, const char *observed)
{
    json_t *c = json_loads(candidates_json, 0, NULL), *out = NULL;
    mm_problem_t p;

    assert_non_null(c);
    if (sig_candidates_check(c, observed, &out, &p) != 0)
        fail_msg("%s: %s", candidates_json, p.message);
    json_decref(c);
    return out;
}

/* Expects a refusal with `code`, naming `needle` in the message. */
static void check_bad(const char *candidates_json, const char *observed, const char *code, const char *needle)
{
    json_t *c = candidates_json != NULL ? json_loads(candidates_json, JSON_DECODE_ANY, NULL) : NULL, *out = NULL;
    mm_problem_t p;

    if (candidates_json != NULL)
        assert_non_null(c);
    if (sig_candidates_check(c, observed, &out, &p) == 0)
        fail_msg("accepted: %s (observed %s)", candidates_json, observed ? observed : "none");
    assert_null(out);
    assert_int_equal(p.status, 400);
    if (strcmp(p.code, code) != 0 || strstr(p.message, needle) == NULL)
        fail_msg("%s: got %s \"%s\", want %s naming %s", candidates_json, p.code, p.message, code, needle);
    json_decref(c);
}

static void assert_candidate(json_t *list, size_t i, const char *ip, int port, const char *type)
{
    json_t *c = json_array_get(list, i);

    assert_non_null(c);
    assert_int_equal(json_object_size(c), 3);
    assert_string_equal(json_string_value(json_object_get(c, "ip")), ip);
    assert_int_equal(json_integer_value(json_object_get(c, "port")), port);
    assert_string_equal(json_string_value(json_object_get(c, "type")), type);
}

static void accepts_private_hosts_and_the_observed_srflx(void **state)
{
    json_t *l = check_ok("[{\"ip\":\"192.168.1.5\",\"port\":4000,\"type\":\"host\"},"
                         " {\"ip\":\"10.1.2.3\",\"port\":1,\"type\":\"host\"},"
                         " {\"ip\":\"172.16.0.1\",\"port\":65535,\"type\":\"host\"},"
                         " {\"ip\":\"100.64.0.1\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"169.254.3.4\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"127.0.0.1\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"fe80::1\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"FD00::0001\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"::1\",\"port\":5,\"type\":\"host\"},"
                         " {\"ip\":\"203.0.113.5\",\"port\":4001,\"type\":\"srflx\",\"extra\":true}]",
                         "203.0.113.5");

    assert_int_equal(json_array_size(l), 10);
    assert_candidate(l, 0, "192.168.1.5", 4000, "host");
    assert_candidate(l, 7, "fd00::1", 5, "host"); /* canonical text */
    assert_candidate(l, 9, "203.0.113.5", 4001, "srflx");
    json_decref(l);
}

static void srflx_follows_the_observed_address(void **state)
{
    json_t *l = check_ok("[{\"ip\":\"2001:db8::7\",\"port\":9,\"type\":\"srflx\"}]", "2001:DB8:0::7");

    assert_candidate(l, 0, "2001:db8::7", 9, "srflx");
    json_decref(l);
    /* an IPv4-mapped observed address is the IPv4 address */
    l = check_ok("[{\"ip\":\"198.51.100.1\",\"port\":9,\"type\":\"srflx\"}]", "::ffff:198.51.100.1");
    json_decref(l);
    check_bad("[{\"ip\":\"198.51.100.2\",\"port\":9,\"type\":\"srflx\"}]", "198.51.100.1", "invalid_candidate", "candidates[0]");
    check_bad("[{\"ip\":\"198.51.100.2\",\"port\":9,\"type\":\"srflx\"}]", NULL, "invalid_candidate", "unknown");
    check_bad("[{\"ip\":\"198.51.100.2\",\"port\":9,\"type\":\"srflx\"}]", "", "invalid_candidate", "candidates[0]");
    /* the requester came from a private network: that address is a host candidate */
    check_bad("[{\"ip\":\"10.0.0.9\",\"port\":9,\"type\":\"srflx\"}]", "10.0.0.9", "invalid_candidate", "send it as host");
    check_bad("[{\"ip\":\"127.0.0.1\",\"port\":9,\"type\":\"srflx\"}]", "127.0.0.1", "invalid_candidate", "public");
}

static void hosts_must_stay_home(void **state)
{
    const char *bad[] = {"8.8.8.8", "203.0.113.5", "2001:db8::1", "224.0.0.1", "255.255.255.255",
                         "0.0.0.0", "::",          "ff02::1",     "240.0.0.1"};
    char json[160];
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(bad); ++i) {
        snprintf(json, sizeof(json),
                 "[{\"ip\":\"10.0.0.1\",\"port\":1,\"type\":\"host\"},{\"ip\":\"%s\",\"port\":1,\"type\":\"host\"}]", bad[i]);
        /* the observed address does not make a public host candidate acceptable */
        check_bad(json, bad[i], "invalid_candidate", "candidates[1]");
    }
}

static void shapes_and_types(void **state)
{
    char many[2048] = "[";
    int i;

    check_bad(NULL, "203.0.113.5", "invalid_field", "candidates");
    check_bad("{}", "203.0.113.5", "invalid_field", "candidates");
    check_bad("\"10.0.0.1\"", "203.0.113.5", "invalid_field", "candidates");
    check_bad("[]", "203.0.113.5", "invalid_field", "candidates");
    check_bad("[\"10.0.0.1\"]", "203.0.113.5", "invalid_field", "candidates[0]");
    check_bad("[{\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":10,\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"example.com\",\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"10.0.0.1:80\",\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"[fe80::1]\",\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"fe80::1%eth0\",\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"\",\"port\":1,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].ip");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":0,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].port");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":65536,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].port");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":\"80\",\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].port");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":80.5,\"type\":\"host\"}]", NULL, "invalid_field", "candidates[0].port");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":80}]", NULL, "invalid_field", "candidates[0].type");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":80,\"type\":\"relay\"}]", NULL, "invalid_field", "candidates[0].type");
    check_bad("[{\"ip\":\"10.0.0.1\",\"port\":80,\"type\":\"HOST\"}]", NULL, "invalid_field", "candidates[0].type");
    for (i = 0; i != SIG_MAX_CANDIDATES + 1; ++i)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s{\"ip\":\"10.0.0.%d\",\"port\":1,\"type\":\"host\"}",
                 i ? "," : "", i + 1);
    strncat(many, "]", sizeof(many) - strlen(many) - 1);
    check_bad(many, NULL, "invalid_field", "1 to 16");
}

static void duplicates_keep_the_first(void **state)
{
    json_t *l =
        check_ok("[{\"ip\":\"10.0.0.1\",\"port\":1,\"type\":\"host\"},{\"ip\":\"10.0.0.1\",\"port\":1,\"type\":\"host\"},"
                 "{\"ip\":\"10.0.0.1\",\"port\":2,\"type\":\"host\"},{\"ip\":\"::ffff:10.0.0.1\",\"port\":1,\"type\":\"host\"}]",
                 NULL);

    assert_int_equal(json_array_size(l), 2);
    assert_candidate(l, 1, "10.0.0.1", 2, "host");
    json_decref(l);
}

static void nat_mapping(void **state)
{
    const char *v;
    mm_problem_t p;
    json_t *b;

    b = json_pack("{}");
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), 0);
    assert_null(v);
    json_decref(b);
    b = json_pack("{s:n}", "nat_mapping");
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), 0);
    assert_null(v);
    json_decref(b);
    b = json_pack("{s:s}", "nat_mapping", "endpoint-independent");
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), 0);
    assert_string_equal(v, "endpoint-independent");
    json_decref(b);
    b = json_pack("{s:s}", "nat_mapping", "address-dependent");
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), 0);
    assert_string_equal(v, "address-dependent");
    json_decref(b);
    b = json_pack("{s:s}", "nat_mapping", "symmetric");
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), -EINVAL);
    assert_string_equal(p.code, "invalid_field");
    assert_non_null(strstr(p.message, "nat_mapping"));
    json_decref(b);
    b = json_pack("{s:i}", "nat_mapping", 1);
    assert_int_equal(sig_nat_mapping_check(b, &v, &p), -EINVAL);
    json_decref(b);
}

static void session_ids_and_waits(void **state)
{
    assert_true(sig_session_id_valid("0123456789abcdef0123456789abcdef", 32));
    assert_false(sig_session_id_valid("0123456789ABCDEF0123456789abcdef", 32));
    assert_false(sig_session_id_valid("0123456789abcdef0123456789abcde", 31));
    assert_false(sig_session_id_valid("0123456789abcdef0123456789abcdeg", 32));
    assert_false(sig_session_id_valid("", 0));

    assert_int_equal(sig_wait_parse("0", 1), 0);
    assert_int_equal(sig_wait_parse("25", 2), 25);
    assert_int_equal(sig_wait_parse("30", 2), 30);
    assert_int_equal(sig_wait_parse("31", 2), -EINVAL);
    assert_int_equal(sig_wait_parse("030", 3), -EINVAL);
    assert_int_equal(sig_wait_parse("-1", 2), -EINVAL);
    assert_int_equal(sig_wait_parse("+1", 2), -EINVAL);
    assert_int_equal(sig_wait_parse(" 1", 2), -EINVAL);
    assert_int_equal(sig_wait_parse("1s", 2), -EINVAL);
    assert_int_equal(sig_wait_parse("", 0), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_private_hosts_and_the_observed_srflx),
        cmocka_unit_test(srflx_follows_the_observed_address),
        cmocka_unit_test(hosts_must_stay_home),
        cmocka_unit_test(shapes_and_types),
        cmocka_unit_test(duplicates_keep_the_first),
        cmocka_unit_test(nat_mapping),
        cmocka_unit_test(session_ids_and_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
