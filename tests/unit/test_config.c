/* Unit tests of the MM_* configuration table (common/src/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "mm/config.h"

typedef struct {
    int64_t port;
    int flag;
    const char *name;
    const char *unset;
} conf_t;

static const mm_cfg_entry_t table[] = {
    {"MM_TEST_PORT", MM_CFG_INT, "8443", 1, 65535, offsetof(conf_t, port), "a port"},
    {"MM_TEST_FLAG", MM_CFG_BOOL, "false", 0, 0, offsetof(conf_t, flag), "a flag"},
    {"MM_TEST_NAME", MM_CFG_STR, "default-name", 0, 0, offsetof(conf_t, name), "a name"},
    {"MM_TEST_UNSET", MM_CFG_STR, NULL, 0, 0, offsetof(conf_t, unset), "no default"},
};

static int setup(void **state)
{
    unsetenv("MM_TEST_PORT");
    unsetenv("MM_TEST_FLAG");
    unsetenv("MM_TEST_NAME");
    unsetenv("MM_TEST_UNSET");
    return 0;
}

static void defaults_apply(void **state)
{
    conf_t c;
    mm_err_t err;

    assert_int_equal(mm_config_load(table, 4, &c, &err), 0);
    assert_int_equal(c.port, 8443);
    assert_int_equal(c.flag, 0);
    assert_string_equal(c.name, "default-name");
    assert_null(c.unset);
}

static void environment_wins(void **state)
{
    conf_t c;
    mm_err_t err;

    setenv("MM_TEST_PORT", "9000", 1);
    setenv("MM_TEST_FLAG", "YES", 1);
    setenv("MM_TEST_NAME", "", 1); /* an empty string is a value for strings */
    assert_int_equal(mm_config_load(table, 4, &c, &err), 0);
    assert_int_equal(c.port, 9000);
    assert_int_equal(c.flag, 1);
    assert_string_equal(c.name, "");
}

static void bad_values_name_the_variable(void **state)
{
    static const char *const bad_ports[] = {"70000", "0", "-1", "abc", "12abc", " 12", "99999999999999999999999"};
    conf_t c;
    mm_err_t err;
    size_t i;

    for (i = 0; i != sizeof(bad_ports) / sizeof(bad_ports[0]); ++i) {
        setenv("MM_TEST_PORT", bad_ports[i], 1);
        memset(&err, 0, sizeof(err));
        assert_int_not_equal(mm_config_load(table, 4, &c, &err), 0);
        assert_non_null(strstr(err.msg, "MM_TEST_PORT"));
        assert_non_null(strstr(err.msg, "1 to 65535"));
    }
    setenv("MM_TEST_PORT", "1", 1);
    setenv("MM_TEST_FLAG", "maybe", 1);
    assert_int_not_equal(mm_config_load(table, 4, &c, &err), 0);
    assert_non_null(strstr(err.msg, "MM_TEST_FLAG"));
}

static void empty_int_means_default(void **state)
{
    conf_t c;
    mm_err_t err;

    setenv("MM_TEST_PORT", "", 1);
    assert_int_equal(mm_config_load(table, 4, &c, &err), 0);
    assert_int_equal(c.port, 8443);
}

static void main_handles_help_and_bad_arguments(void **state)
{
    conf_t c;
    char *help[] = {"prog", "--help", NULL}, *bad[] = {"prog", "--bogus", NULL}, *none[] = {"prog", NULL};

    assert_int_equal(mm_config_main(2, help, "summary", table, 4, &c), 0);
    assert_int_equal(mm_config_main(2, bad, "summary", table, 4, &c), 2);
    assert_int_equal(mm_config_main(1, none, "summary", table, 4, &c), -1);
    setenv("MM_TEST_PORT", "70000", 1);
    assert_int_equal(mm_config_main(1, none, "summary", table, 4, &c), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_apply, setup),
        cmocka_unit_test_setup(environment_wins, setup),
        cmocka_unit_test_setup(bad_values_name_the_variable, setup),
        cmocka_unit_test_setup(empty_int_means_default, setup),
        cmocka_unit_test_setup(main_handles_help_and_bad_arguments, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
