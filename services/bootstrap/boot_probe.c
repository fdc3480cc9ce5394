/*
 * The connect test (SPEC §3.2): before listing a volunteer, open a TCP
 * connection to its gossip port. A bootstrap node nobody can reach is worse
 * than none: newcomers would waste their first seconds on it.
 *
 * Everything runs on the thread's loop: h2o_socket_connect() makes a
 * non-blocking socket and tells us when connect() has finished, and two
 * entries in the thread's shared timeouts pace the attempts and bound the
 * whole test. Attempts start one after
 * another in the caller's order of preference, each BOOT_PROBE_STAGGER_MS
 * after the previous one or at once when the previous one failed (a
 * refused port answers in microseconds, a silent one never does), so the
 * preferred address gets a head start without a black-holed one eating the
 * budget of the others. The first connection wins; it and the others are
 * closed without sending a byte.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "mm/log.h"
#include "boot.h"

typedef struct boot_probe boot_probe_t;

typedef struct boot_attempt {
    boot_probe_t *probe;
    h2o_socket_t *sock; /* NULL: not started, or finished */
} boot_attempt_t;

struct boot_probe {
    h2o_linklist_t link; /* in boot_thread_t.probes */
    boot_thread_t *t;
    mm_addr_t targets[BOOT_PROBE_MAX];
    boot_attempt_t attempts[BOOT_PROBE_MAX];
    size_t n, next, inflight;
    uint16_t port;
    h2o_timeout_entry_t stagger, deadline;
    boot_probe_cb cb;
    void *data;
};

static void boot_probe_launch(boot_probe_t *p);

/* The addresses to test, in order: the observed ones (where the peer's own
 * connection came from), then the public ones it reported. Reported
 * private, loopback and link-local addresses are not tested: from the
 * registry's side they name the registry's own networks, not the peer's, so
 * a success there would prove nothing, and testing them would make the
 * registry a port scanner of its own network for anyone with a
 * certificate. Returns how many were found. */
size_t boot_probe_targets(const char *candidates, mm_addr_t *out)
{
    json_t *list = json_loads(candidates, 0, NULL), *c;
    size_t n = 0, i, k;
    int pass;

    for (pass = 0; pass != 2 && json_is_array(list); ++pass) {
        json_array_foreach(list, i, c)
        {
            const char *ip = json_string_value(json_object_get(c, "ip"));
            const char *source = json_string_value(json_object_get(c, "source"));
            int observed = source != NULL && strcmp(source, "observed") == 0;
            mm_addr_t a;
            if (ip == NULL || n == BOOT_PROBE_MAX || mm_addr_parse(ip, strlen(ip), &a) != 0)
                continue;
            if (pass == 0 ? !observed : observed || mm_addr_scope(&a) != MM_SCOPE_PUBLIC)
                continue;
            for (k = 0; k != n && !mm_addr_same_ip(&out[k], &a); ++k)
                ;
            if (k == n)
                out[n++] = a;
        }
    }
    json_decref(list);
    return n;
}

/* "ip:port" or "[v6]:port" of target `i`. */
static void boot_probe_address(const boot_probe_t *p, size_t i, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];

    mm_addr_ip_string(&p->targets[i], ip);
    snprintf(buf, size, p->targets[i].family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)p->port);
}

/* Ends the test: closes what is still connecting, reports, frees. */
static void boot_probe_finish(boot_probe_t *p, int result, const char *address)
{
    size_t i;

    for (i = 0; i != p->n; ++i) {
        if (p->attempts[i].sock != NULL) {
            h2o_socket_close(p->attempts[i].sock); /* no callback runs after this */
            p->attempts[i].sock = NULL;
        }
    }
    if (h2o_timeout_is_linked(&p->stagger))
        h2o_timeout_unlink(&p->stagger);
    if (h2o_timeout_is_linked(&p->deadline))
        h2o_timeout_unlink(&p->deadline);
    h2o_linklist_unlink(&p->link);
    --p->t->nprobes;
    p->cb(result, address, p->data);
    free(p);
}

static void boot_probe_on_connect(h2o_socket_t *sock, const char *err)
{
    boot_attempt_t *a = sock->data;
    boot_probe_t *p = a->probe;
    char address[INET6_ADDRSTRLEN + 8];

    a->sock = NULL;
    h2o_socket_close(sock);
    --p->inflight;
    if (err == NULL) {
        boot_probe_address(p, (size_t)(a - p->attempts), address, sizeof(address));
        boot_probe_finish(p, 0, address);
        return;
    }
    mm_debug("connect test: %s on attempt %zu", err, (size_t)(a - p->attempts));
    if (p->next != p->n)
        boot_probe_launch(p); /* the next address need not wait for its turn */
    else if (p->inflight == 0)
        boot_probe_finish(p, -ECONNREFUSED, NULL);
}

/* Starts the next attempt (and arms the timer for the one after it). An
 * address the kernel refuses at once (no route) counts as failed. */
static void boot_probe_launch(boot_probe_t *p)
{
    if (h2o_timeout_is_linked(&p->stagger)) /* a failure brings the next attempt forward */
        h2o_timeout_unlink(&p->stagger);
    while (p->next != p->n) {
        size_t i = p->next++;
        const mm_addr_t *a = &p->targets[i];
        struct sockaddr_storage ss;
        socklen_t len;

        mm_addr_t to = *a;

        to.port = p->port;
        len = mm_addr_to_sockaddr(&to, &ss);
        if ((p->attempts[i].sock = h2o_socket_connect(p->t->loop, (struct sockaddr *)&ss, len, boot_probe_on_connect)) == NULL)
            continue;
        p->attempts[i].sock->data = &p->attempts[i];
        ++p->inflight;
        if (p->next != p->n)
            h2o_timeout_link(p->t->loop, &p->t->probe_stagger, &p->stagger);
        return;
    }
    if (p->inflight == 0)
        boot_probe_finish(p, -ECONNREFUSED, NULL);
}

static void boot_probe_on_stagger(h2o_timeout_entry_t *entry)
{
    boot_probe_launch(H2O_STRUCT_FROM_MEMBER(boot_probe_t, stagger, entry));
}

static void boot_probe_on_deadline(h2o_timeout_entry_t *entry)
{
    boot_probe_finish(H2O_STRUCT_FROM_MEMBER(boot_probe_t, deadline, entry), -ETIMEDOUT, NULL);
}

/* The first attempt starts from a timer too, so that `cb` never runs
 * inside boot_probe_start, even when every address fails at once. */
int boot_probe_start(boot_thread_t *t, const mm_addr_t *targets, size_t n, uint16_t port, boot_probe_cb cb, void *data)
{
    boot_probe_t *p;
    size_t i;

    if (n == 0 || n > BOOT_PROBE_MAX || port == 0)
        return -EINVAL;
    if (t->nprobes >= BOOT_PROBES_INFLIGHT_MAX)
        return -EAGAIN;
    p = mm_xcalloc(1, sizeof(*p));
    p->t = t;
    p->n = n;
    p->port = port;
    p->cb = cb;
    p->data = data;
    memcpy(p->targets, targets, n * sizeof(*targets));
    for (i = 0; i != n; ++i)
        p->attempts[i].probe = p;
    p->stagger.cb = boot_probe_on_stagger;
    p->deadline.cb = boot_probe_on_deadline;
    h2o_linklist_insert(&t->probes, &p->link);
    ++t->nprobes;
    h2o_timeout_link(t->loop, &t->probe_budget, &p->deadline);
    h2o_timeout_link(t->loop, &t->probe_soon, &p->stagger);
    return 0;
}

void boot_probe_init(boot_thread_t *t)
{
    h2o_linklist_init_anchor(&t->probes);
    h2o_timeout_init(t->loop, &t->probe_budget, (uint64_t)t->conf->probe_timeout_ms);
    h2o_timeout_init(t->loop, &t->probe_stagger, BOOT_PROBE_STAGGER_MS);
    h2o_timeout_init(t->loop, &t->probe_soon, 0);
}

void boot_probe_dispose(boot_thread_t *t)
{
    while (!h2o_linklist_is_empty(&t->probes))
        boot_probe_finish(H2O_STRUCT_FROM_MEMBER(boot_probe_t, link, t->probes.next), -ECANCELED, NULL);
    h2o_timeout_dispose(t->loop, &t->probe_budget);
    h2o_timeout_dispose(t->loop, &t->probe_stagger);
    h2o_timeout_dispose(t->loop, &t->probe_soon);
}
