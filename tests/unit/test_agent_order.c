/* Unit tests of the order in which mm connect tries candidates (services/agent/agent_order.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "../../services/agent/agent_order.c"

static agent_cand_t cand(const char *ip, uint16_t port, size_t rank)
{
    agent_cand_t c = {0};

    if (mm_addr_parse(ip, strlen(ip), &c.addr) != 0)
        fail_msg("'%s' should parse", ip);
    c.addr.port = port;
    c.rank = rank;
    return c;
}

static agent_iface_t iface(const char *ip, unsigned prefix)
{
    agent_iface_t i = {0};

    if (mm_addr_parse(ip, strlen(ip), &i.addr) != 0)
        fail_msg("'%s' should parse", ip);
    i.prefix = prefix;
    return i;
}

/* Asserts the order as "ip:port" strings, NULL-terminated. */
static void assert_order(const agent_cand_t *c, size_t n, const char *const *want)
{
    char buf[64];
    size_t i;

    for (i = 0; want[i] != NULL; ++i) {
        if (i >= n)
            fail_msg("only %zu candidates, expected %s at %zu", n, want[i], i);
        assert_string_equal(agent_addr_str(&c[i].addr, buf), want[i]);
    }
    assert_int_equal(n, i);
}

/* SPEC §5: cached winner, same subnet, other private, public IPv6, public IPv4. */
static void spec_order(void **state)
{
    agent_iface_t ifs[] = {iface("192.168.1.10", 24), iface("2001:db8:aa::10", 64)};
    agent_cand_t c[] = {cand("203.0.113.5", 54321, 0), cand("2001:db8::5", 7000, 1), cand("10.0.0.7", 6000, 2),
                        cand("192.168.1.50", 54321, 3), cand("198.51.100.9", 54321, 4)};
    static const char *const want[] = {"192.168.1.50:54321", "10.0.0.7:6000",      "[2001:db8::5]:7000",
                                       "203.0.113.5:54321",  "198.51.100.9:54321", NULL};
    size_t n = agent_order(c, 5, ifs, 2, NULL);

    assert_order(c, n, want);
    assert_int_equal(c[0].cls, AGENT_CLASS_SAME_SUBNET);
    assert_int_equal(c[1].cls, AGENT_CLASS_PRIVATE);
    assert_int_equal(c[2].cls, AGENT_CLASS_PUBLIC6);
    assert_int_equal(c[3].cls, AGENT_CLASS_PUBLIC4);
}

static void cached_winner_first(void **state)
{
    agent_iface_t ifs[] = {iface("192.168.1.10", 24)};
    agent_cand_t c[] = {cand("192.168.1.50", 54321, 0), cand("10.0.0.7", 6000, 1), cand("203.0.113.5", 54321, 2)};
    static const char *const want[] = {"203.0.113.5:54321", "192.168.1.50:54321", "10.0.0.7:6000", NULL};
    size_t n = agent_order(c, 3, ifs, 1, "203.0.113.5:54321");

    assert_order(c, n, want);
    assert_int_equal(c[0].cls, AGENT_CLASS_CACHED);
}

/* The peer restarted on another port: the IP that worked still goes first. */
static void cached_ip_with_new_port(void **state)
{
    agent_cand_t c[] = {cand("10.0.0.7", 6000, 0), cand("203.0.113.5", 40000, 1)};
    static const char *const want[] = {"203.0.113.5:40000", "10.0.0.7:6000", NULL};
    size_t n = agent_order(c, 2, NULL, 0, "203.0.113.5:54321");

    assert_order(c, n, want);
}

/* An exact ip:port match beats an earlier candidate with the same IP. */
static void cached_exact_beats_ip(void **state)
{
    agent_cand_t c[] = {cand("203.0.113.5", 1111, 0), cand("203.0.113.5", 2222, 1)};
    static const char *const want[] = {"203.0.113.5:2222", "203.0.113.5:1111", NULL};
    size_t n = agent_order(c, 2, NULL, 0, "203.0.113.5:2222");

    assert_order(c, n, want);
}

static void stale_or_bad_cache_changes_nothing(void **state)
{
    agent_cand_t c[] = {cand("203.0.113.5", 1, 0), cand("10.0.0.7", 2, 1)};
    static const char *const want[] = {"10.0.0.7:2", "203.0.113.5:1", NULL};

    assert_order(c, agent_order(c, 2, NULL, 0, "198.51.100.1:9"), want);
    assert_order(c, agent_order(c, 2, NULL, 0, "garbage"), want);
}

/* Within a class the tracker's order stays (reported first, then observed). */
static void stable_within_class(void **state)
{
    agent_cand_t c[] = {cand("10.0.0.1", 1, 0), cand("192.168.5.5", 2, 1), cand("172.16.0.1", 3, 2), cand("100.64.0.1", 4, 3)};
    static const char *const want[] = {"10.0.0.1:1", "192.168.5.5:2", "172.16.0.1:3", "100.64.0.1:4", NULL};

    assert_order(c, agent_order(c, 4, NULL, 0, NULL), want);
}

static void loopback_is_same_host_and_link_local_v6_is_dropped(void **state)
{
    agent_cand_t c[] = {cand("203.0.113.5", 1, 0), cand("fe80::1", 2, 1), cand("127.0.0.1", 3, 2), cand("169.254.1.1", 4, 3),
                        cand("::1", 5, 4)};
    static const char *const want[] = {"127.0.0.1:3", "[::1]:5", "169.254.1.1:4", "203.0.113.5:1", NULL};

    assert_order(c, agent_order(c, 5, NULL, 0, NULL), want);
}

static void duplicates_are_dropped(void **state)
{
    agent_cand_t c[] = {cand("10.0.0.7", 6000, 0), cand("10.0.0.7", 6000, 1), cand("10.0.0.7", 6001, 2)};
    static const char *const want[] = {"10.0.0.7:6000", "10.0.0.7:6001", NULL};

    assert_order(c, agent_order(c, 3, NULL, 0, NULL), want);
}

static void same_subnet(void **state)
{
    agent_iface_t v4 = iface("192.168.1.10", 24), v4b = iface("172.20.3.4", 12), odd = iface("10.0.2.1", 23),
                  v6 = iface("2001:db8:1:2::10", 64), none = iface("10.0.0.1", 0);
    agent_cand_t a;

    a = cand("192.168.1.200", 1, 0);
    assert_true(agent_order_same_subnet(&a.addr, &v4));
    a = cand("192.168.2.1", 1, 0);
    assert_false(agent_order_same_subnet(&a.addr, &v4));
    a = cand("172.31.255.1", 1, 0);
    assert_true(agent_order_same_subnet(&a.addr, &v4b));
    a = cand("172.32.0.1", 1, 0);
    assert_false(agent_order_same_subnet(&a.addr, &v4b));
    a = cand("10.0.3.9", 1, 0); /* 10.0.2.0/23 holds 10.0.2.x and 10.0.3.x */
    assert_true(agent_order_same_subnet(&a.addr, &odd));
    a = cand("10.0.4.1", 1, 0);
    assert_false(agent_order_same_subnet(&a.addr, &odd));
    a = cand("2001:db8:1:2::99", 1, 0);
    assert_true(agent_order_same_subnet(&a.addr, &v6));
    a = cand("2001:db8:1:3::99", 1, 0);
    assert_false(agent_order_same_subnet(&a.addr, &v6));
    a = cand("192.168.1.200", 1, 0); /* another family */
    assert_false(agent_order_same_subnet(&a.addr, &v6));
    a = cand("10.0.0.2", 1, 0); /* no mask known: no claim */
    assert_false(agent_order_same_subnet(&a.addr, &none));
}

static void reads_tracker_records(void **state)
{
    json_t *rec = json_loads("{\"candidates\":["
                             "{\"ip\":\"192.168.1.50\",\"port\":54321,\"scope\":\"private\",\"source\":\"reported\"},"
                             "{\"ip\":\"2001:db8::5\",\"port\":7000,\"scope\":\"public\",\"source\":\"reported\"},"
                             "{\"ip\":\"bogus\",\"port\":1},{\"ip\":\"10.0.0.1\",\"port\":0},{\"ip\":\"10.0.0.1:5\",\"port\":5},"
                             "{\"port\":5},\"x\","
                             "{\"ip\":\"203.0.113.5\",\"port\":54321,\"scope\":\"public\",\"source\":\"observed\"}]}",
                             0, NULL);
    agent_cand_t c[8];
    char buf[64];
    size_t n;

    assert_non_null(rec);
    n = agent_order_from_json(rec, c, 8);
    assert_int_equal(n, 3);
    assert_string_equal(agent_addr_str(&c[0].addr, buf), "192.168.1.50:54321");
    assert_string_equal(agent_addr_str(&c[1].addr, buf), "[2001:db8::5]:7000");
    assert_string_equal(agent_addr_str(&c[2].addr, buf), "203.0.113.5:54321");
    assert_false(c[0].observed);
    assert_true(c[2].observed);
    assert_true(c[1].rank < c[2].rank);
    assert_int_equal(agent_order_from_json(rec, c, 2), 2); /* bounded */
    json_decref(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_order),
        cmocka_unit_test(cached_winner_first),
        cmocka_unit_test(cached_ip_with_new_port),
        cmocka_unit_test(cached_exact_beats_ip),
        cmocka_unit_test(stale_or_bad_cache_changes_nothing),
        cmocka_unit_test(stable_within_class),
        cmocka_unit_test(loopback_is_same_host_and_link_local_v6_is_dropped),
        cmocka_unit_test(duplicates_are_dropped),
        cmocka_unit_test(same_subnet),
        cmocka_unit_test(reads_tracker_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
