/*
 * mm_redis_parse_url: the URL forms redis.h accepts, and the ones it must
 * refuse with -EINVAL and a message (table-driven, like curl's tests).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "mm/redis.h"

typedef struct good_case {
    const char *url;
    const char *host; /* NULL when a unix socket */
    int port;
    const char *path; /* NULL when TCP */
    int db;
} good_case_t;

static const good_case_t good_cases[] = {
    {"redis://localhost", "localhost", 6379, NULL, 0},
    {"redis://localhost:6380", "localhost", 6380, NULL, 0},
    {"redis://127.0.0.1:6379/3", "127.0.0.1", 6379, NULL, 3},
    {"redis://redis.internal/", "redis.internal", 6379, NULL, 0},
    {"redis://my_redis:1/15", "my_redis", 1, NULL, 15},
    {"redis://host:65535/0", "host", 65535, NULL, 0},
    {"REDIS://Host:7000", "Host", 7000, NULL, 0},
    {"redis://[::1]:7000/2", "::1", 7000, NULL, 2},
    {"redis://[fe80::1%eth0]", "fe80::1%eth0", 6379, NULL, 0},
    {"redis://h/2147483647", "h", 6379, NULL, 2147483647},
    {"unix:/tmp/redis.sock", NULL, 0, "/tmp/redis.sock", 0},
    {"unix:///var/run/redis/redis.sock", NULL, 0, "/var/run/redis/redis.sock", 0},
};

static const char *const bad_cases[] = {
    "",
    "localhost:6379",
    "http://localhost:6379",
    "rediss://localhost:6379",
    "redis:/localhost",
    "redis://",
    "redis://:6379",
    "redis:///0",
    "redis://host:",
    "redis://host:0",
    "redis://host:65536",
    "redis://host:99999999999",
    "redis://host:abc",
    "redis://host:+1",
    "redis://host: 6379",
    "redis://host:6379:1",
    "redis://host/x",
    "redis://host/-1",
    "redis://host/1/2",
    "redis://host/2147483648",
    "redis://host/ 1",
    "redis://user:secret@host:6379",
    "redis://:secret@host",
    "redis://host?db=1",
    "redis://host:6379/1?timeout=1",
    "redis://host#frag",
    "redis://ho st",
    "redis://[::1",
    "redis://[]:6379",
    "redis://[::1]6379",
    "unix:",
    "unix:/",
    "unix:relative.sock",
    "unix://relative/host/path",
    "unix://",
};

static void test_good_urls(void **state)
{
    size_t i;

    for (i = 0; i != sizeof(good_cases) / sizeof(good_cases[0]); ++i) {
        const good_case_t *c = &good_cases[i];
        char *host = (char *)1, *path = (char *)1;
        int port = -1, db = -1;
        mm_err_t err = {{0}};

        print_message("good: %s\n", c->url);
        assert_int_equal(mm_redis_parse_url(c->url, &host, &port, &path, &db, &err), 0);
        assert_string_equal(err.msg, "");
        if (c->host != NULL) {
            assert_non_null(host);
            assert_string_equal(host, c->host);
            assert_null(path);
        } else {
            assert_null(host);
            assert_non_null(path);
            assert_string_equal(path, c->path);
        }
        assert_int_equal(port, c->port);
        assert_int_equal(db, c->db);
        free(host);
        free(path);
    }
}

static void test_bad_urls(void **state)
{
    size_t i;

    for (i = 0; i != sizeof(bad_cases) / sizeof(bad_cases[0]); ++i) {
        char *host = (char *)1, *path = (char *)1;
        int port = -1, db = -1;
        mm_err_t err = {{0}};

        print_message("bad: \"%s\"\n", bad_cases[i]);
        assert_int_equal(mm_redis_parse_url(bad_cases[i], &host, &port, &path, &db, &err), -EINVAL);
        /* a message for the operator, and outputs safe to free */
        assert_true(strncmp(err.msg, "redis URL: ", 11) == 0);
        assert_null(host);
        assert_null(path);
        assert_int_equal(port, 0);
        assert_int_equal(db, 0);
    }
}

static void test_null_and_long(void **state)
{
    char url[200], *host = NULL, *path = NULL;
    mm_err_t err = {{0}};
    int port, db;

    assert_int_equal(mm_redis_parse_url(NULL, &host, &port, &path, &db, &err), -EINVAL);
    assert_string_equal(err.msg, "redis URL: missing");

    /* sun_path holds 107 characters and the NUL */
    memcpy(url, "unix:/", 6);
    memset(url + 6, 'a', 106);
    url[112] = '\0';
    assert_int_equal(mm_redis_parse_url(url, &host, &port, &path, &db, NULL), 0);
    assert_int_equal(strlen(path), 107);
    free(path);
    url[112] = 'a';
    url[113] = '\0';
    assert_int_equal(mm_redis_parse_url(url, &host, &port, &path, &db, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "longer than"));
    assert_null(path);
}

static void test_optional_outputs(void **state)
{
    int port = 0;

    /* outputs the caller does not want may be NULL; nothing leaks (ASan) */
    assert_int_equal(mm_redis_parse_url("redis://h:1234/5", NULL, &port, NULL, NULL, NULL), 0);
    assert_int_equal(port, 1234);
    assert_int_equal(mm_redis_parse_url("unix:/x.sock", NULL, NULL, NULL, NULL, NULL), 0);
}

static void test_new_rejects_bad_url(void **state)
{
    mm_err_t err = {{0}};

    /* mm_redis_new fails only on the URL, before touching the loop */
    assert_null(mm_redis_new(NULL, "redis://host:0", &err));
    assert_non_null(strstr(err.msg, "port"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_urls),           cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_null_and_long),       cmocka_unit_test(test_optional_outputs),
        cmocka_unit_test(test_new_rejects_bad_url),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
