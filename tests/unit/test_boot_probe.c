/*
 * Unit tests of the bootstrap registry's pure parts and of its connect test
 * on a real evloop (services/bootstrap/boot_probe.c, boot_discover.c):
 * which addresses are tested and in what order, how a node's candidates are
 * shown, the shuffle, and the test itself against listeners on 127.0.0.1
 * (open, closed, silent: a full accept queue makes the kernel drop SYNs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "../../services/bootstrap/boot_membership.c"
#include "../../services/bootstrap/boot_discover.c"
#include "../../services/bootstrap/boot_probe.c"

/* A broadcast as the tracker stores it (trk_candidates.c): reported, then observed. */
static const char candidates[] = "[{\"ip\":\"192.168.1.50\",\"port\":5000,\"scope\":\"private\",\"source\":\"reported\"},"
                                 "{\"ip\":\"10.0.0.7\",\"port\":6000,\"scope\":\"private\",\"source\":\"reported\"},"
                                 "{\"ip\":\"2001:db8::5\",\"port\":7000,\"scope\":\"public\",\"source\":\"reported\"},"
                                 "{\"ip\":\"198.51.100.9\",\"port\":5000,\"scope\":\"public\",\"source\":\"reported\"},"
                                 "{\"ip\":\"127.0.0.1\",\"port\":5001,\"scope\":\"loopback\",\"source\":\"reported\"},"
                                 "{\"ip\":\"203.0.113.5\",\"port\":5000,\"scope\":\"public\",\"source\":\"observed\"},"
                                 "{\"ip\":\"198.51.100.9\",\"port\":5002,\"scope\":\"public\",\"source\":\"reported\"}]";

static void assert_ip(const mm_addr_t *a, const char *ip)
{
    char buf[INET6_ADDRSTRLEN];

    assert_string_equal(mm_addr_ip_string(a, buf), ip);
}

static void targets_observed_first_then_public(void **state)
{
    mm_addr_t t[BOOT_PROBE_MAX];

    assert_int_equal(boot_probe_targets(candidates, t), 3);
    assert_ip(&t[0], "203.0.113.5");
    assert_ip(&t[1], "2001:db8::5");
    assert_ip(&t[2], "198.51.100.9"); /* once, though reported twice */
}

static void targets_observed_whatever_its_scope(void **state)
{
    mm_addr_t t[BOOT_PROBE_MAX];

    assert_int_equal(boot_probe_targets("[{\"ip\":\"10.1.2.3\",\"port\":1,\"scope\":\"private\",\"source\":\"reported\"},"
                                        "{\"ip\":\"10.9.9.9\",\"port\":1,\"scope\":\"private\",\"source\":\"observed\"}]",
                                        t),
                     1);
    assert_ip(&t[0], "10.9.9.9");
    assert_int_equal(boot_probe_targets("[]", t), 0);
    assert_int_equal(boot_probe_targets("not json", t), 0);
    assert_int_equal(boot_probe_targets("[{\"ip\":7},{\"ip\":\"nope\",\"source\":\"observed\"},{}]", t), 0);
}

static void node_candidates_carry_the_gossip_port(void **state)
{
    json_t *c = boot_node_candidates(candidates, 7946, "203.0.113.5:7946");
    static const char *const ips[] = {"203.0.113.5", "192.168.1.50", "10.0.0.7", "2001:db8::5", "198.51.100.9", "127.0.0.1"};
    size_t i;

    assert_int_equal(json_array_size(c), MM_ARRAY_SIZE(ips));
    for (i = 0; i != MM_ARRAY_SIZE(ips); ++i) {
        json_t *e = json_array_get(c, i);
        assert_string_equal(json_string_value(json_object_get(e, "ip")), ips[i]);
        assert_int_equal(json_integer_value(json_object_get(e, "port")), 7946);
        assert_int_equal(json_object_size(e), 4);
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 0), "source")), "observed");
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 3), "scope")), "public");
    json_decref(c);
    /* a tested address no longer in the broadcast: the broadcast's order */
    c = boot_node_candidates(candidates, 1, "[2001:db8::99]:1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(c, 0), "ip")), "192.168.1.50");
    json_decref(c);
    c = boot_node_candidates("{}", 1, NULL);
    assert_int_equal(json_array_size(c), 0);
    json_decref(c);
}

static void shuffle_is_a_uniform_permutation(void **state)
{
    boot_drawn_t d[3];
    int counts[3][3] = {{0}};
    int round, i, j;

    for (round = 0; round != 3000; ++round) {
        for (i = 0; i != 3; ++i)
            snprintf(d[i].peer_id, sizeof(d[i].peer_id), "%d", i);
        boot_shuffle(d, 3);
        for (i = 0; i != 3; ++i)
            counts[i][d[i].peer_id[0] - '0']++;
    }
    for (i = 0; i != 3; ++i)
        for (j = 0; j != 3; ++j)
            if (counts[i][j] < 800 || counts[i][j] > 1200)
                fail_msg("id %d at position %d %d times in 3000", j, i, counts[i][j]);
}

static void membership_values(void **state)
{
    char addr[64];
    int port = 0;

    assert_int_equal(boot_membership_parse("7946 127.0.0.1:7946", 19, &port, addr, sizeof(addr)), 0);
    assert_int_equal(port, 7946);
    assert_string_equal(addr, "127.0.0.1:7946");
    assert_int_equal(boot_membership_parse("7946 [2001:db8::1]:7946 trailing", 23, &port, addr, sizeof(addr)), 0);
    assert_string_equal(addr, "[2001:db8::1]:7946");
    assert_int_equal(boot_membership_parse("7946", 4, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse("7946 ", 5, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse(" 1.2.3.4:5", 10, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse("0 1.2.3.4:5", 11, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse("65536 1.2.3.4:5", 15, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse("x1 1.2.3.4:5", 12, &port, addr, sizeof(addr)), -EINVAL);
    assert_int_equal(boot_membership_parse("1 1.2.3.4:5", 11, &port, addr, 8), -EINVAL); /* too long for the buffer */
}

/* ---- the connect test on a real loop ---- */

typedef struct probe_result {
    int done, result;
    char address[64];
} probe_result_t;

static void on_probe(int result, const char *address, void *data)
{
    probe_result_t *r = data;

    r->done = 1;
    r->result = result;
    snprintf(r->address, sizeof(r->address), "%s", address != NULL ? address : "");
}

static boot_config_t conf = {.probe_timeout_ms = 600};

static boot_thread_t *thread_new(void)
{
    boot_thread_t *t = mm_xcalloc(1, sizeof(*t));

    t->conf = &conf;
    t->loop = h2o_evloop_create();
    boot_probe_init(t);
    return t;
}

static void thread_free(boot_thread_t *t)
{
    boot_probe_dispose(t);
    /* let the loop free the sockets it closed */
    h2o_evloop_run(t->loop, 0);
    free(t);
}

/* A listener on `ip` (127.x.y.z) and *port (0: any, set on return);
 * `full`: its accept queue filled, so that SYNs are dropped. */
static int listener_on(const char *ip, uint16_t *port, int full, int *fillers)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(*port)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), i;

    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, len), 0);
    assert_int_equal(listen(fd, full ? 0 : 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    for (i = 0; full && i != 3; ++i) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&sin, sizeof(sin));
    }
    if (full)
        usleep(100 * 1000);
    return fd;
}

static int listener(uint16_t *port, int full, int *fillers)
{
    *port = 0;
    return listener_on("127.0.0.1", port, full, fillers);
}

static uint64_t run_until_done(boot_thread_t *t, probe_result_t *r)
{
    uint64_t t0 = mm_mono_ms();

    while (!r->done && mm_mono_ms() - t0 < 5000)
        h2o_evloop_run(t->loop, 50);
    assert_true(r->done);
    return mm_mono_ms() - t0;
}

static mm_addr_t loopback(void)
{
    mm_addr_t a;

    assert_int_equal(mm_addr_parse("127.0.0.1", 9, &a), 0);
    return a;
}

static void probe_open_port(void **state)
{
    boot_thread_t *t = thread_new();
    probe_result_t r = {0};
    mm_addr_t a = loopback();
    uint16_t port;
    int fd = listener(&port, 0, NULL);
    char want[32];

    assert_int_equal(boot_probe_start(t, &a, 1, port, on_probe, &r), 0);
    assert_false(r.done); /* never inside the call */
    assert_true(run_until_done(t, &r) < 500);
    assert_int_equal(r.result, 0);
    snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)port);
    assert_string_equal(r.address, want);
    close(fd);
    thread_free(t);
}

static void probe_closed_port_fails_at_once(void **state)
{
    boot_thread_t *t = thread_new();
    probe_result_t r = {0};
    mm_addr_t a[2] = {loopback(), loopback()};
    uint16_t port;
    int fd = listener(&port, 0, NULL);

    close(fd); /* nobody listens there now */
    assert_int_equal(boot_probe_start(t, a, 2, port, on_probe, &r), 0);
    /* the second attempt does not wait for its 250 ms turn */
    assert_true(run_until_done(t, &r) < 200);
    assert_int_equal(r.result, -ECONNREFUSED);
    thread_free(t);
}

static void probe_silent_port_times_out(void **state)
{
    boot_thread_t *t = thread_new();
    probe_result_t r = {0};
    mm_addr_t a = loopback();
    uint16_t port;
    int fillers[3], fd = listener(&port, 1, fillers), i;
    uint64_t took;

    h2o_evloop_run(t->loop, 0); /* the loop's clock, stale after the listener's setup */
    assert_int_equal(boot_probe_start(t, &a, 1, port, on_probe, &r), 0);
    took = run_until_done(t, &r);
    assert_int_equal(r.result, -ETIMEDOUT);
    assert_true(took >= 550 && took < 1500);
    for (i = 0; i != 3; ++i)
        close(fillers[i]);
    close(fd);
    thread_free(t);
}

/* A silent first address holds the second back for the stagger only. */
static void probe_next_address_after_the_stagger(void **state)
{
    boot_thread_t *t = thread_new();
    probe_result_t r = {0};
    mm_addr_t a[2];
    uint16_t port = 0;
    int fillers[3], silent = listener_on("127.0.0.1", &port, 1, fillers), open = listener_on("127.0.0.2", &port, 0, NULL), i;
    uint64_t took;
    char want[32];

    assert_int_equal(mm_addr_parse("127.0.0.1", 9, &a[0]), 0);
    assert_int_equal(mm_addr_parse("127.0.0.2", 9, &a[1]), 0);
    h2o_evloop_run(t->loop, 0);
    assert_int_equal(boot_probe_start(t, a, 2, port, on_probe, &r), 0);
    took = run_until_done(t, &r);
    assert_int_equal(r.result, 0);
    snprintf(want, sizeof(want), "127.0.0.2:%u", (unsigned)port);
    assert_string_equal(r.address, want);
    if (took < BOOT_PROBE_STAGGER_MS - 20 || took > BOOT_PROBE_STAGGER_MS + 300)
        fail_msg("the second address answered after %llu ms, not after the %d ms stagger", (unsigned long long)took,
                 BOOT_PROBE_STAGGER_MS);
    for (i = 0; i != 3; ++i)
        close(fillers[i]);
    close(silent);
    close(open);
    thread_free(t);
}

static void probe_refuses_bad_calls_and_cancels(void **state)
{
    boot_thread_t *t = thread_new();
    probe_result_t r = {0};
    mm_addr_t a = loopback();
    uint16_t port;
    int fillers[3], fd = listener(&port, 1, fillers), i;

    assert_int_equal(boot_probe_start(t, &a, 0, port, on_probe, &r), -EINVAL);
    assert_int_equal(boot_probe_start(t, &a, BOOT_PROBE_MAX + 1, port, on_probe, &r), -EINVAL);
    assert_int_equal(boot_probe_start(t, &a, 1, 0, on_probe, &r), -EINVAL);
    assert_int_equal(boot_probe_start(t, &a, 1, port, on_probe, &r), 0);
    h2o_evloop_run(t->loop, 10); /* started, still waiting */
    assert_false(r.done);
    boot_probe_dispose(t);
    assert_true(r.done);
    assert_int_equal(r.result, -ECANCELED);
    boot_probe_init(t);
    for (i = 0; i != 3; ++i)
        close(fillers[i]);
    close(fd);
    thread_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(targets_observed_first_then_public),
        cmocka_unit_test(targets_observed_whatever_its_scope),
        cmocka_unit_test(node_candidates_carry_the_gossip_port),
        cmocka_unit_test(shuffle_is_a_uniform_permutation),
        cmocka_unit_test(membership_values),
        cmocka_unit_test(probe_open_port),
        cmocka_unit_test(probe_closed_port_fails_at_once),
        cmocka_unit_test(probe_silent_port_times_out),
        cmocka_unit_test(probe_next_address_after_the_stagger),
        cmocka_unit_test(probe_refuses_bad_calls_and_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
