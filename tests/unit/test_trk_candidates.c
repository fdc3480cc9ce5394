/* Unit tests of a broadcast's candidate list (services/tracker/trk_candidates.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "../../services/tracker/trk_candidates.c"

static json_t *build(const char *addresses_json, int64_t port, const char *observed)
{
    json_t *addresses = json_loads(addresses_json, 0, NULL), *out = NULL;
    mm_problem_t p;

    assert_non_null(addresses);
    if (trk_candidates_build(addresses, port, observed, &out, &p) != 0)
        fail_msg("%s: %s", addresses_json, p.message);
    json_decref(addresses);
    return out;
}

static void assert_candidate(json_t *list, size_t i, const char *ip, int port, const char *scope, const char *source)
{
    json_t *c = json_array_get(list, i);

    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "ip")), ip);
    assert_int_equal(json_integer_value(json_object_get(c, "port")), port);
    assert_string_equal(json_string_value(json_object_get(c, "scope")), scope);
    assert_string_equal(json_string_value(json_object_get(c, "source")), source);
}

static void spec_example(void **state)
{
    json_t *l = build("[\"192.168.1.50\", \"10.0.0.7:6000\", \"[2001:db8::5]:7000\"]", 54321, "203.0.113.5");

    assert_int_equal(json_array_size(l), 4);
    assert_candidate(l, 0, "192.168.1.50", 54321, "private", "reported");
    assert_candidate(l, 1, "10.0.0.7", 6000, "private", "reported");
    assert_candidate(l, 2, "2001:db8::5", 7000, "public", "reported");
    assert_candidate(l, 3, "203.0.113.5", 54321, "public", "observed");
    json_decref(l);
}

static void unspecified_means_observed(void **state)
{
    json_t *l = build("[\"0.0.0.0:9000\", \"::\"]", 5000, "198.51.100.7");

    /* "::" with no port is the observed address at the broadcast port: the same as the final entry */
    assert_int_equal(json_array_size(l), 2);
    assert_candidate(l, 0, "198.51.100.7", 9000, "public", "observed");
    assert_candidate(l, 1, "198.51.100.7", 5000, "public", "observed");
    json_decref(l);
    /* without an observed address there is nothing to stand for */
    l = build("[\"0.0.0.0\"]", 5000, NULL);
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
}

static void duplicates_keep_the_first(void **state)
{
    json_t *l = build("[\"10.0.0.1\", \"10.0.0.1:5000\", \"::ffff:10.0.0.1\", \"10.0.0.1:6000\"]", 5000, "10.0.0.1");

    assert_int_equal(json_array_size(l), 2);
    assert_candidate(l, 0, "10.0.0.1", 5000, "private", "reported");
    assert_candidate(l, 1, "10.0.0.1", 6000, "private", "reported");
    json_decref(l);
}

static void rejects_bad_entries(void **state)
{
    static const char *const bad[] = {
        "[\"999.1.1.1\"]",
        "[\"fe80::1%eth0\"]",
        "[\"224.0.0.1\"]",
        "[\"ff02::1\"]",
        "[\"255.255.255.255\"]",
        "[5]",
        "[null]",
        "[{}]",
        "[\"1.2.3.4:70000\"]",
        "[\"example.com\"]",
        "[\"\"]",
        "[\"1.2.3.4:0\"]",
    };
    size_t i;

    for (i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        json_t *a = json_loads(bad[i], 0, NULL), *out = NULL;
        mm_problem_t p;
        assert_non_null(a);
        if (trk_candidates_build(a, 1, "203.0.113.5", &out, &p) == 0)
            fail_msg("%s should be rejected", bad[i]);
        assert_null(out);
        assert_string_equal(p.code, "invalid_field");
        assert_non_null(strstr(p.message, "addresses[0]"));
        json_decref(a);
    }
}

static void names_the_bad_index(void **state)
{
    json_t *a = json_loads("[\"10.0.0.1\", \"10.0.0.2\", \"nope\"]", 0, NULL), *out = NULL;
    mm_problem_t p;

    assert_int_not_equal(trk_candidates_build(a, 1, NULL, &out, &p), 0);
    assert_non_null(strstr(p.message, "addresses[2]"));
    json_decref(a);
}

static void bad_observed_is_ignored(void **state)
{
    json_t *l = build("[\"10.0.0.1\"]", 80, "not-an-ip");

    assert_int_equal(json_array_size(l), 1);
    json_decref(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_example),
        cmocka_unit_test(unspecified_means_observed),
        cmocka_unit_test(duplicates_keep_the_first),
        cmocka_unit_test(rejects_bad_entries),
        cmocka_unit_test(names_the_bad_index),
        cmocka_unit_test(bad_observed_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
