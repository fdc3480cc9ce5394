/* Unit tests of request-body decoding and typed fields (common/src/json.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "mm/json.h"

static json_t *decode_ok(const char *text)
{
    mm_problem_t p;
    json_t *obj = NULL;

    assert_int_equal(mm_json_decode_object(text, strlen(text), &obj, &p), 0);
    assert_non_null(obj);
    return obj;
}

static void decode_bad(const char *text, size_t len)
{
    mm_problem_t p;
    json_t *obj = NULL;

    assert_int_not_equal(mm_json_decode_object(text, len, &obj, &p), 0);
    assert_null(obj);
    assert_int_equal(p.status, 400);
    assert_string_equal(p.code, "invalid_json");
}

static void decode_objects(void **state)
{
    json_t *o = decode_ok("{\"a\":1}");
    mm_problem_t p;

    assert_int_equal(json_integer_value(json_object_get(o, "a")), 1);
    json_decref(o);
    /* an empty body is an empty object */
    assert_int_equal(mm_json_decode_object("", 0, &o, &p), 0);
    assert_int_equal(json_object_size(o), 0);
    json_decref(o);
}

static void decode_rejects(void **state)
{
    decode_bad("{", 1);
    decode_bad("[]", 2);
    decode_bad("\"x\"", 3);
    decode_bad("42", 2);
    decode_bad("null", 4);
    decode_bad("{\"a\":1,\"a\":2}", 13); /* duplicate keys are ambiguous */
    decode_bad("{\"a\":\"\xff\"}", 8);   /* not UTF-8 */
    decode_bad("{\"a\":1} x", 9);        /* trailing garbage */
}

static void strings(void **state)
{
    json_t *o = decode_ok("{\"s\":\"hello\",\"n\":5,\"z\":null}");
    const char *s;
    size_t len;
    mm_problem_t p;

    assert_int_equal(mm_json_get_string(o, "s", MM_FIELD_REQUIRED, 10, &s, &len, &p), 0);
    assert_string_equal(s, "hello");
    assert_int_equal(len, 5);
    /* absent and optional */
    assert_int_equal(mm_json_get_string(o, "missing", 0, 10, &s, &len, &p), 0);
    assert_null(s);
    /* absent and required */
    assert_int_not_equal(mm_json_get_string(o, "missing", MM_FIELD_REQUIRED, 10, &s, &len, &p), 0);
    assert_string_equal(p.code, "invalid_field");
    assert_non_null(strstr(p.message, "missing"));
    /* wrong type names the field */
    assert_int_not_equal(mm_json_get_string(o, "n", 0, 10, &s, &len, &p), 0);
    assert_string_equal(p.code, "invalid_field");
    assert_non_null(strstr(p.message, "'n'"));
    /* too long */
    assert_int_not_equal(mm_json_get_string(o, "s", 0, 4, &s, &len, &p), 0);
    /* null: absent when nullable, a type error otherwise */
    assert_int_equal(mm_json_get_string(o, "z", MM_FIELD_NULLABLE, 10, &s, &len, &p), 0);
    assert_null(s);
    assert_int_not_equal(mm_json_get_string(o, "z", 0, 10, &s, &len, &p), 0);
    json_decref(o);
    /* an escaped NUL never reaches a handler */
    decode_bad("{\"nul\":\"a\\u0000b\"}", 17);
}

static void integers(void **state)
{
    json_t *o = decode_ok("{\"port\":54321,\"big\":70000,\"str\":\"1\",\"real\":1.5,\"bool\":true}");
    int64_t v;
    mm_problem_t p;

    assert_int_equal(mm_json_get_int(o, "port", MM_FIELD_REQUIRED, 1, 65535, 0, &v, &p), 0);
    assert_int_equal(v, 54321);
    assert_int_not_equal(mm_json_get_int(o, "big", 0, 1, 65535, 0, &v, &p), 0);
    assert_non_null(strstr(p.message, "'big'"));
    assert_int_not_equal(mm_json_get_int(o, "str", 0, 1, 65535, 0, &v, &p), 0);
    assert_int_not_equal(mm_json_get_int(o, "real", 0, 1, 65535, 0, &v, &p), 0);
    assert_int_not_equal(mm_json_get_int(o, "bool", 0, 1, 65535, 0, &v, &p), 0);
    assert_int_equal(mm_json_get_int(o, "absent", 0, 1, 65535, 77, &v, &p), 0);
    assert_int_equal(v, 77);
    json_decref(o);
}

static void arrays(void **state)
{
    json_t *o = decode_ok("{\"a\":[1,2,3],\"o\":{}}"), *a;
    mm_problem_t p;

    assert_int_equal(mm_json_get_array(o, "a", 0, 3, &a, &p), 0);
    assert_int_equal(json_array_size(a), 3);
    assert_int_not_equal(mm_json_get_array(o, "a", 0, 2, &a, &p), 0);
    assert_int_not_equal(mm_json_get_array(o, "o", 0, 2, &a, &p), 0);
    assert_string_equal(p.code, "invalid_field");
    json_decref(o);
}

static void error_body_shape(void **state)
{
    json_t *b = mm_error_body("invalid_field", "field 'x' must be a string");
    json_t *e = json_object_get(b, "error");

    assert_int_equal(json_object_size(b), 1);
    assert_int_equal(json_object_size(e), 2);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "invalid_field");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "field 'x' must be a string");
    json_decref(b);
    /* a message with invalid UTF-8 still yields a valid body */
    b = mm_error_body("x", "\xff\xfe");
    assert_non_null(b);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_objects), cmocka_unit_test(decode_rejects), cmocka_unit_test(strings),
        cmocka_unit_test(integers),       cmocka_unit_test(arrays),         cmocka_unit_test(error_body_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
