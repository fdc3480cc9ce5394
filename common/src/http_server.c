/*
 * The server: threads, loops, listeners and signals. Each thread runs its
 * own evloop and h2o_context_t and accepts on every listener (the kernel
 * spreads connections; a lost race on accept is harmless). SIGTERM/SIGINT
 * are blocked in all threads and read through a signalfd on thread 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "mm/http.h"
#include "mm/log.h"
#include "http_internal.h"

typedef struct mm__listener {
    int fd;
    h2o_hostconf_t *hosts[2];
    SSL_CTX *ssl;
    int proxy_line;
    char *addr;
} mm__listener_t;

/* One listener as seen by one thread. */
typedef struct mm__accepter {
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *sock;
} mm__accepter_t;

typedef struct mm__thread_priv {
    mm_thread_t pub;
    pthread_t tid;
    mm__accepter_t *accepters;
    h2o_socket_t *sigsock; /* thread 0 only */
    int failed;
} mm__thread_priv_t;

struct mm_server {
    mm_server_conf_t conf;
    h2o_globalconf_t globalconf;
    mm__listener_t *listeners;
    size_t nlisteners;
    mm__thread_priv_t *threads;
    _Atomic int stopping;
    int sigfd;
};

mm_server_t *mm_server_new(const mm_server_conf_t *conf)
{
    mm_server_t *s = mm_xcalloc(1, sizeof(*s));

    s->conf = *conf;
    if (s->conf.threads < 1)
        s->conf.threads = 1;
    s->sigfd = -1;
    h2o_config_init(&s->globalconf);
    s->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("matchmaker"));
    s->globalconf.max_request_entity_size = 1024 * 1024; /* our 64 KiB limit answers JSON below this */
    return s;
}

void mm_server_free(mm_server_t *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; i != s->nlisteners; ++i) {
        close(s->listeners[i].fd);
        free(s->listeners[i].addr);
    }
    free(s->listeners);
    free(s->threads);
    h2o_config_dispose(&s->globalconf);
    if (s->sigfd >= 0)
        close(s->sigfd);
    free(s);
}

h2o_globalconf_t *mm_server_globalconf(mm_server_t *s)
{
    return &s->globalconf;
}

void *mm_server_data(mm_server_t *s)
{
    return s->conf.data;
}

const mm_server_conf_t *mm_server_conf(mm_server_t *s)
{
    return &s->conf;
}

mm_thread_t *mm_thread_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(mm_thread_t, ctx, req->conn->ctx);
}

/* Splits "host:port" / "[v6]:port" / "*:port" into a sockaddr. */
static int mm__parse_inet(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, mm_err_t *err)
{
    char host[64];
    const char *colon, *h = addr;
    size_t hlen;
    char *end;
    long port;

    if ((colon = strrchr(addr, ':')) == NULL)
        goto bad;
    hlen = (size_t)(colon - addr);
    if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
        h = addr + 1;
        hlen -= 2;
    }
    if (hlen >= sizeof(host))
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        goto bad;
    memset(ss, 0, sizeof(*ss));
    if (hlen == 0 || strcmp(host, "*") == 0 || strcmp(host, "::") == 0) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_any;
        sin6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*sin6);
        return 0;
    }
    {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)port);
            *sslen = sizeof(*sin);
            return 0;
        }
    }
    {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((uint16_t)port);
            *sslen = sizeof(*sin6);
            return 0;
        }
    }
bad:
    mm_err_set(err, "listen address \"%s\" is invalid: expected host:port, [v6]:port, *:port or unix:/path", addr);
    return -EINVAL;
}

static int mm__open_listener(const char *addr, mm_err_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd = -1, on = 1, off = 0;

    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        const char *path = addr + 5;
        while (path[0] == '/' && path[1] == '/')
            ++path;
        if (strlen(path) >= sizeof(sun.sun_path)) {
            mm_err_set(err, "unix socket path \"%s\" is longer than %zu bytes", path, sizeof(sun.sun_path) - 1);
            return -ENAMETOOLONG;
        }
        memcpy(sun.sun_path, path, strlen(path) + 1);
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
            goto syserr;
        if (unlink(path) != 0 && errno != ENOENT)
            goto syserr;
        if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || chmod(path, 0660) != 0)
            goto syserr;
    } else {
        if (mm__parse_inet(addr, &ss, &sslen, err) != 0)
            return -EINVAL;
        if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
            goto syserr;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
            goto syserr;
        if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) != 0)
            goto syserr;
        if (bind(fd, (struct sockaddr *)&ss, sslen) != 0)
            goto syserr;
    }
    if (listen(fd, 1024) != 0)
        goto syserr;
    return fd;
syserr:
    mm_err_set(err, "cannot listen on %s: %s", addr, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int mm_server_listen(mm_server_t *s, const char *addr, h2o_hostconf_t *host, SSL_CTX *ssl, int proxy_line, mm_err_t *err)
{
    mm__listener_t *l;
    int fd;

    if ((fd = mm__open_listener(addr, err)) < 0)
        return -1;
    s->listeners = mm_xrealloc(s->listeners, (s->nlisteners + 1) * sizeof(*s->listeners));
    l = &s->listeners[s->nlisteners++];
    *l = (mm__listener_t){.fd = fd, .hosts = {host, NULL}, .ssl = ssl, .proxy_line = proxy_line, .addr = mm_xstrdup(addr)};
    return 0;
}

int mm_server_listen_port(mm_server_t *s, size_t index)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (index >= s->nlisteners || getsockname(s->listeners[index].fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

static void mm__on_accept(h2o_socket_t *listener, const char *err)
{
    mm__accepter_t *a = listener->data;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(&a->accept_ctx, sock);
}

static void mm__on_signal(h2o_socket_t *sock, const char *err)
{
    mm_server_t *s = sock->data;
    struct signalfd_siginfo si;
    ssize_t r;

    /* DONT_READ: the loop only tells us the fd is readable; drain it here */
    while ((r = read(s->sigfd, &si, sizeof(si))) == (ssize_t)sizeof(si))
        mm_info("received %s, stopping", strsignal((int)si.ssi_signo));
    mm_server_stop(s);
}

void mm_server_stop(mm_server_t *s)
{
    atomic_store(&s->stopping, 1);
}

int mm_server_is_stopping(mm_server_t *s)
{
    return atomic_load(&s->stopping);
}

static void *mm__thread_main(void *arg)
{
    mm__thread_priv_t *t = arg;
    mm_server_t *s = t->pub.server;
    size_t i;

    t->pub.loop = h2o_evloop_create();
    h2o_context_init(&t->pub.ctx, t->pub.loop, &s->globalconf);
    if (s->conf.thread_init != NULL && s->conf.thread_init(&t->pub) != 0) {
        mm_error("thread %zu failed to initialise", t->pub.index);
        t->failed = 1;
        mm_server_stop(s);
        return NULL;
    }
    t->accepters = mm_xcalloc(s->nlisteners, sizeof(*t->accepters));
    for (i = 0; i != s->nlisteners; ++i) {
        mm__accepter_t *a = &t->accepters[i];
        int fd = dup(s->listeners[i].fd);
        if (fd < 0) {
            mm_error("dup: %s", strerror(errno));
            t->failed = 1;
            mm_server_stop(s);
            return NULL;
        }
        a->accept_ctx.ctx = &t->pub.ctx;
        a->accept_ctx.hosts = s->listeners[i].hosts;
        a->accept_ctx.ssl_ctx = s->listeners[i].ssl;
        a->accept_ctx.expect_proxy_line = s->listeners[i].proxy_line;
        a->sock = h2o_evloop_socket_create(t->pub.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        a->sock->data = a;
        h2o_socket_read_start(a->sock, mm__on_accept);
    }
    if (t->pub.index == 0 && s->sigfd >= 0) {
        t->sigsock = h2o_evloop_socket_create(t->pub.loop, dup(s->sigfd), H2O_SOCKET_FLAG_DONT_READ);
        t->sigsock->data = s;
        h2o_socket_read_start(t->sigsock, mm__on_signal);
    }
    mm_log_buffer(1);
    while (!atomic_load(&s->stopping)) {
        h2o_evloop_run(t->pub.loop, 100);
        mm_log_flush(); /* one write for all the lines of an iteration */
    }

    /* Stop accepting, then give in-flight requests a moment to finish. */
    for (i = 0; i != s->nlisteners; ++i)
        h2o_socket_close(t->accepters[i].sock);
    if (t->sigsock != NULL)
        h2o_socket_close(t->sigsock);
    {
        uint64_t until = mm_mono_ms() + 200;
        while (mm_mono_ms() < until) {
            h2o_evloop_run(t->pub.loop, 20);
            mm_log_flush();
        }
    }
    if (s->conf.thread_dispose != NULL)
        s->conf.thread_dispose(&t->pub);
    mm_log_buffer(0);
    /* The h2o context and loop are not disposed: libh2o 2.2 asserts when a
     * keep-alive connection is still open, and has no call to close them. */
    free(t->accepters);
    return NULL;
}

int mm_server_run(mm_server_t *s)
{
    sigset_t set;
    size_t i, n = (size_t)s->conf.threads;
    int failed = 0;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the threads created below */
    if ((s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        mm_error("signalfd: %s", strerror(errno));
        return -1;
    }
    s->threads = mm_xcalloc(n, sizeof(*s->threads));
    for (i = 0; i != n; ++i) {
        s->threads[i].pub.server = s;
        s->threads[i].pub.index = i;
    }
    for (i = 1; i < n; ++i) {
        if (pthread_create(&s->threads[i].tid, NULL, mm__thread_main, &s->threads[i]) != 0) {
            mm_error("pthread_create failed");
            mm_server_stop(s);
            n = i;
            break;
        }
    }
    for (i = 0; i != s->nlisteners; ++i)
        mm_info("listening on %s", s->listeners[i].addr);
    mm__thread_main(&s->threads[0]);
    for (i = 1; i < n; ++i)
        pthread_join(s->threads[i].tid, NULL);
    for (i = 0; i != n; ++i)
        failed |= s->threads[i].failed;
    mm_info("stopped");
    return failed ? -1 : 0;
}
