/* Unit tests of address parsing and scoping (common/src/addr.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "mm/addr.h"

static mm_addr_t parse_ok(const char *s, const char *ip, uint16_t port)
{
    mm_addr_t a;
    char buf[INET6_ADDRSTRLEN];

    if (mm_addr_parse(s, strlen(s), &a) != 0)
        fail_msg("'%s' should parse", s);
    assert_string_equal(mm_addr_ip_string(&a, buf), ip);
    assert_int_equal(a.port, port);
    return a;
}

static void parses_literals(void **state)
{
    parse_ok("192.168.1.50", "192.168.1.50", 0);
    parse_ok("10.0.0.7:6000", "10.0.0.7", 6000);
    parse_ok("2001:db8::5", "2001:db8::5", 0);
    parse_ok("[2001:db8::5]", "2001:db8::5", 0);
    parse_ok("[2001:db8::5]:7000", "2001:db8::5", 7000);
    parse_ok("1.2.3.4:65535", "1.2.3.4", 65535);
    parse_ok("::ffff:192.0.2.1", "192.0.2.1", 0); /* IPv4-mapped becomes IPv4 */
    parse_ok("[::ffff:192.0.2.1]:9", "192.0.2.1", 9);
    parse_ok("0.0.0.0", "0.0.0.0", 0);
    parse_ok("::", "::", 0);
    parse_ok("64:ff9b::192.0.2.33", "64:ff9b::c000:221", 0);
}

static void rejects_garbage(void **state)
{
    static const char *const bad[] = {
        "",           "999.1.1.1",     "1.2.3",       "1.2.3.4.5",     "fe80::1%eth0", "[fe80::1%eth0]:80",
        "1.2.3.4:0",  "1.2.3.4:70000", "1.2.3.4:080", "1.2.3.4:",      "1.2.3.4:-1",   "1.2.3.4:+80",
        "[::1",       "[::1]x",        "[::1]:",      "[1.2.3.4]:80",  "example.com",  "localhost",
        " 1.2.3.4",   "1.2.3.4 ",      "01.2.3.4",    "1.2.3.4:80:90", "[::1]:80:90",  "gggg::1",
        "1.2.3.4/24", "::1]:80",
    };
    size_t i;
    mm_addr_t a;

    for (i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        if (mm_addr_parse(bad[i], strlen(bad[i]), &a) == 0)
            fail_msg("'%s' should be rejected", bad[i]);
}

static void not_nul_terminated(void **state)
{
    mm_addr_t a;
    char buf[INET6_ADDRSTRLEN];

    /* only the first `len` bytes count */
    assert_int_equal(mm_addr_parse("10.0.0.1:80garbage", 10, &a), 0);
    assert_string_equal(mm_addr_ip_string(&a, buf), "10.0.0.1");
}

static mm_scope_t scope_of(const char *s)
{
    mm_addr_t a;

    assert_int_equal(mm_addr_parse(s, strlen(s), &a), 0);
    return mm_addr_scope(&a);
}

static void scopes(void **state)
{
    assert_int_equal(scope_of("127.0.0.1"), MM_SCOPE_LOOPBACK);
    assert_int_equal(scope_of("127.255.0.9"), MM_SCOPE_LOOPBACK);
    assert_int_equal(scope_of("::1"), MM_SCOPE_LOOPBACK);
    assert_int_equal(scope_of("169.254.3.4"), MM_SCOPE_LINK_LOCAL);
    assert_int_equal(scope_of("fe80::1"), MM_SCOPE_LINK_LOCAL);
    assert_int_equal(scope_of("febf::1"), MM_SCOPE_LINK_LOCAL);
    assert_int_equal(scope_of("10.1.2.3"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("172.16.0.1"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("172.31.255.255"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("172.32.0.1"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("172.15.0.1"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("192.168.1.1"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("100.64.0.1"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("100.127.255.255"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("100.128.0.1"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("fc00::1"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("fd12:3456::1"), MM_SCOPE_PRIVATE);
    assert_int_equal(scope_of("fec0::1"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("203.0.113.5"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("2001:db8::5"), MM_SCOPE_PUBLIC);
    assert_int_equal(scope_of("::ffff:10.0.0.1"), MM_SCOPE_PRIVATE);
    assert_string_equal(mm_scope_name(MM_SCOPE_LINK_LOCAL), "link-local");
    assert_string_equal(mm_scope_name(MM_SCOPE_PUBLIC), "public");
}

static int unusable(const char *s)
{
    mm_addr_t a;

    assert_int_equal(mm_addr_parse(s, strlen(s), &a), 0);
    return mm_addr_is_unusable(&a);
}

static void unusable_addresses(void **state)
{
    assert_true(unusable("224.0.0.1"));
    assert_true(unusable("239.255.255.250"));
    assert_true(unusable("255.255.255.255"));
    assert_true(unusable("240.0.0.1"));
    assert_true(unusable("0.1.2.3"));
    assert_true(unusable("ff02::1"));
    assert_false(unusable("0.0.0.0"));
    assert_false(unusable("::"));
    assert_false(unusable("223.255.255.255"));
    assert_false(unusable("192.168.1.255")); /* a subnet's broadcast is not knowable here */
}

static void unspecified(void **state)
{
    mm_addr_t a;

    assert_int_equal(mm_addr_parse("0.0.0.0:6000", 12, &a), 0);
    assert_true(mm_addr_is_unspecified(&a));
    assert_int_equal(a.port, 6000);
    assert_int_equal(mm_addr_parse("[::]:7000", 9, &a), 0);
    assert_true(mm_addr_is_unspecified(&a));
    assert_int_equal(mm_addr_parse("::2", 3, &a), 0);
    assert_false(mm_addr_is_unspecified(&a));
}

static void same_ip(void **state)
{
    mm_addr_t a, b;

    mm_addr_parse("10.0.0.1:1", 10, &a);
    mm_addr_parse("10.0.0.1:2", 10, &b);
    assert_true(mm_addr_same_ip(&a, &b));
    mm_addr_parse("::ffff:10.0.0.1", 15, &b);
    assert_true(mm_addr_same_ip(&a, &b));
    mm_addr_parse("10.0.0.2", 8, &b);
    assert_false(mm_addr_same_ip(&a, &b));
}

static void sockaddr_round_trip(void **state)
{
    const char *cases[] = {"192.0.2.1:3478", "[2001:db8::7]:65535", "10.0.0.1:1"};
    struct sockaddr_storage ss;
    struct sockaddr_in6 mapped;
    mm_addr_t a, b;
    size_t i;

    for (i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        assert_int_equal(mm_addr_parse(cases[i], strlen(cases[i]), &a), 0);
        assert_int_equal(mm_addr_to_sockaddr(&a, &ss),
                         a.family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
        assert_int_equal(ss.ss_family, a.family);
        assert_int_equal(mm_addr_from_sockaddr(&ss, &b), 0);
        assert_true(mm_addr_same_ip(&a, &b));
        assert_int_equal(a.port, b.port);
    }
    /* what a dual-stack socket reports for an IPv4 peer comes back as IPv4 */
    memset(&mapped, 0, sizeof(mapped));
    mapped.sin6_family = AF_INET6;
    mapped.sin6_port = htons(7);
    inet_pton(AF_INET6, "::ffff:198.51.100.9", &mapped.sin6_addr);
    memcpy(&ss, &mapped, sizeof(mapped));
    assert_int_equal(mm_addr_from_sockaddr(&ss, &b), 0);
    assert_int_equal(b.family, AF_INET);
    assert_int_equal(b.port, 7);
    ss.ss_family = AF_UNIX;
    assert_int_equal(mm_addr_from_sockaddr(&ss, &b), -EAFNOSUPPORT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_literals), cmocka_unit_test(rejects_garbage),     cmocka_unit_test(not_nul_terminated),
        cmocka_unit_test(scopes),          cmocka_unit_test(unusable_addresses),  cmocka_unit_test(unspecified),
        cmocka_unit_test(same_ip),         cmocka_unit_test(sockaddr_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
