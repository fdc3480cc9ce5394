/*
 * mm ls and mm get: the client side of a peer's file server.
 *
 * connect (agent_connect.c) finds the address and proves it is the peer;
 * the request then goes over libcurl to that address with the peer's key
 * pinned (CURLOPT_PINNEDPUBLICKEY: the SHA-256 of its SPKI is its
 * peer_id), so the transfer is bound to the same identity, and with our
 * own certificate, which the peer checks against its --allow list.
 *
 * get writes FILE.part (mode 0600) and renames it to FILE when complete,
 * so FILE is whole or absent. FILE.part.json records what is being
 * fetched (peer_id, path, ETag, size): a later get of the same file
 * resumes with Range and If-Range (a changed file is fetched whole).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include "agent.h"

#define AGENT_FETCH_ERR_MAX (64 * 1024)

typedef struct agent_get {
    int fd;
    uint64_t offset;   /* bytes already in the part file when the request went out */
    uint64_t received; /* bytes written by this run */
    uint64_t total;    /* the file's size, when known */
    long status;
    int started, failed;
    char etag[128], content_range[128];
    char *body; /* an error answer */
    size_t body_len;
    /* where to record what is being fetched (NULL: stdout, no resume) */
    const char *meta, *rel;
    const agent_peer_conn_t *pc;
    /* progress */
    int show;
    uint64_t t0, last;
} agent_get_t;

typedef struct agent_mem {
    char *buf;
    size_t len;
} agent_mem_t;

/* 64 hex characters into 32 bytes; 0 or -1. */
static int agent_unhex32(const char *hex, unsigned char *out)
{
    size_t i;

    for (i = 0; i != 64; ++i) {
        int c = hex[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        out[i / 2] = (unsigned char)(i % 2 == 0 ? v << 4 : out[i / 2] | v);
    }
    return 0;
}

/* A libcurl handle for the peer: pinned key, our certificate, HTTP/1.1. */
static CURL *agent_fetch_curl(const agent_conf_t *conf, const agent_peer_conn_t *pc, char *errbuf, double timeout_s)
{
    unsigned char raw[32];
    char pin[80] = "sha256//";
    CURL *curl = curl_easy_init();

    if (curl == NULL || agent_unhex32(pc->peer_id, raw) != 0) {
        curl_easy_cleanup(curl);
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)pin + 8, raw, sizeof(raw));
    curl_easy_setopt(curl, CURLOPT_PINNEDPUBLICKEY, pin);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L); /* self-signed: the pin is the check */
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(curl, CURLOPT_SSLCERT, conf->paths.cert);
    curl_easy_setopt(curl, CURLOPT_SSLKEY, conf->paths.key);
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L); /* the peer judges the path, and says why it refuses */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_s > 0 ? timeout_s * 1000 : 10000));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stalled transfer ends after 30 s */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "mm/" MM_VERSION);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    errbuf[0] = '\0';
    return curl;
}

/* "https://ADDR/api/files/" + each component of `rel` escaped. */
static char *agent_fetch_url(const char *addr, const char *rel, int listing)
{
    size_t cap = strlen(addr) + strlen(rel) * 3 + 64, len;
    char *url = mm_xmalloc(cap), *copy, *comp, *save = NULL;

    if (listing) {
        char *esc = curl_easy_escape(NULL, rel, 0);
        snprintf(url, cap, "https://%s/api/files?path=%s", addr, esc != NULL ? esc : "");
        curl_free(esc);
        return url;
    }
    len = (size_t)snprintf(url, cap, "https://%s/api/files", addr);
    copy = mm_xstrdup(rel);
    for (comp = strtok_r(copy, "/", &save); comp != NULL; comp = strtok_r(NULL, "/", &save)) {
        char *esc = curl_easy_escape(NULL, comp, 0);
        len += (size_t)snprintf(url + len, cap - len, "/%s", esc != NULL ? esc : "");
        curl_free(esc);
    }
    free(copy);
    return url;
}

/* The peer's error answer as an agent_err_t, with what to do about it. */
static void agent_fetch_peer_error(const char *email, long status, const char *body, size_t len, agent_err_t *err)
{
    json_t *j = body != NULL ? json_loadb(body, len, 0, NULL) : NULL, *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code")), *msg = json_string_value(json_object_get(e, "message"));
    const char *advice = "";

    if (code == NULL)
        code = "peer_error";
    if (strcmp(code, "not_allowed") == 0)
        advice = ": ask them to add you with mm up --allow YOUR-EMAIL";
    else if (strcmp(code, "unknown_caller") == 0)
        advice = " (the peer recognises callers that are online)";
    agent_err_set(err, code, "%s answered %ld: %s%s", email, status, msg != NULL ? msg : "(no details)", advice);
    json_decref(j);
}

static size_t agent_mem_write(char *data, size_t size, size_t nmemb, void *arg)
{
    agent_mem_t *m = arg;
    size_t n = size * nmemb;

    if (m->len + n > 64 * 1024 * 1024)
        return 0;
    m->buf = mm_xrealloc(m->buf, m->len + n + 1);
    memcpy(m->buf + m->len, data, n);
    m->len += n;
    m->buf[m->len] = '\0';
    return n;
}

static int agent_fetch_connect(agent_args_t *args, agent_conf_t *conf, char *email, agent_peer_conn_t *pc, agent_err_t *err)
{
    agent_he_opts_t o;

    if (agent_conf_load(conf, args->server, err) != 0)
        return -1;
    agent_he_defaults(&o, args);
    return agent_connect_peer(conf, email, &o, pc, err);
}

static void agent_human_size(uint64_t n, char *buf, size_t size)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    size_t u = 0;

    while (v >= 1000 && u + 1 < MM_ARRAY_SIZE(units)) {
        v /= 1000;
        ++u;
    }
    snprintf(buf, size, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
}

int agent_cmd_ls(agent_args_t *args)
{
    agent_conf_t conf;
    agent_peer_conn_t pc = {0};
    agent_err_t err;
    agent_mem_t m = {0};
    char email[MM_EMAIL_MAX + 1], errbuf[CURL_ERROR_SIZE], size[32];
    const char *rel = args->npos > 1 ? args->pos[1] : "";
    CURL *curl = NULL;
    char *url = NULL;
    json_t *list = NULL, *e;
    long status = 0;
    size_t i;
    int rc;

    if (mm_email_normalize(args->pos[0], strlen(args->pos[0]), email) != 0)
        return agent_cli_usage_error(args, "'%s' is not an email address", args->pos[0]);
    if (agent_fetch_connect(args, &conf, email, &pc, &err) != 0)
        goto fail;
    if ((curl = agent_fetch_curl(&conf, &pc, errbuf, args->timeout_s)) == NULL) {
        agent_err_set(&err, "internal", "libcurl failed to initialise");
        goto fail;
    }
    url = agent_fetch_url(pc.addr, rel, 1);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, agent_mem_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &m);
    if (curl_easy_perform(curl) != CURLE_OK) {
        agent_err_set(&err, "peer_unreachable", "the connection to %s at %s failed: %s", email, pc.addr, errbuf);
        goto fail;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || (list = json_loadb(m.buf != NULL ? m.buf : "", m.len, 0, NULL)) == NULL ||
        !json_is_array(json_object_get(list, "entries"))) {
        agent_fetch_peer_error(email, status, m.buf, m.len, &err);
        goto fail;
    }
    agent_out_line("%s:%s", email, json_string_value(json_object_get(list, "path")));
    json_array_foreach(json_object_get(list, "entries"), i, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        int dir = type != NULL && strcmp(type, "dir") == 0;
        agent_human_size((uint64_t)json_integer_value(json_object_get(e, "size")), size, sizeof(size));
        agent_out_line("  %-10s %s  %s%s", dir ? "-" : size, json_string_value(json_object_get(e, "mtime")),
                       json_string_value(json_object_get(e, "name")), dir ? "/" : "");
    }
    json_object_set_new(list, "email", json_string(email));
    json_object_set_new(list, "address", json_string(pc.addr));
    rc = agent_out_ok(list);
    list = NULL;
    goto out;
fail:
    rc = agent_out_error(&err);
out:
    json_decref(list);
    free(m.buf);
    free(url);
    curl_easy_cleanup(curl);
    agent_peer_conn_clear(&pc);
    return rc;
}

/* ---- get ---- */

static size_t agent_get_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    agent_get_t *g = arg;
    size_t n = size * nmemb, len = n;
    char *dst = NULL;
    size_t dsize = 0, name = 0;

    while (len != 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
        --len;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) { /* a new response (after a 100, say) */
        g->etag[0] = g->content_range[0] = '\0';
    } else if (len > 5 && strncasecmp(data, "etag:", 5) == 0) {
        dst = g->etag, dsize = sizeof(g->etag), name = 5;
    } else if (len > 14 && strncasecmp(data, "content-range:", 14) == 0) {
        dst = g->content_range, dsize = sizeof(g->content_range), name = 14;
    }
    if (dst != NULL) {
        while (name < len && data[name] == ' ')
            ++name;
        snprintf(dst, dsize, "%.*s", (int)(len - name), data + name);
    }
    return n;
}

static void agent_get_save_meta(const char *meta, const agent_peer_conn_t *pc, const char *rel, const agent_get_t *g)
{
    json_t *m = json_pack("{s:s,s:s,s:s,s:I}", "peer_id", pc->peer_id, "path", rel, "etag", g->etag, "size", (json_int_t)g->total);
    char *text = json_dumps(m, JSON_COMPACT);

    agent_write_atomic(meta, text, strlen(text), 0600, NULL);
    free(text);
    json_decref(m);
}

/* The first bytes of the body: decide what they are (and record them for a resume). 0, or -1 to stop. */
static int agent_get_begin(agent_get_t *g, CURL *curl)
{
    curl_off_t cl = -1;
    unsigned long long first, last, total;

    g->started = 1;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &g->status);
    curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (g->status == 200) {
        if (g->offset != 0 && (ftruncate(g->fd, 0) != 0 || lseek(g->fd, 0, SEEK_SET) != 0))
            return -1;
        g->offset = 0; /* the file changed since the part was fetched: start over */
        g->total = cl >= 0 ? (uint64_t)cl : 0;
        if (g->meta != NULL && g->etag[0] != '\0')
            agent_get_save_meta(g->meta, g->pc, g->rel, g);
        return 0;
    }
    if (g->status == 206) {
        if (sscanf(g->content_range, "bytes %llu-%llu/%llu", &first, &last, &total) != 3 || first != g->offset)
            return -1;
        g->total = total;
        return 0;
    }
    g->failed = 1; /* an error answer: keep its body for the message */
    return 0;
}

static size_t agent_get_on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    agent_get_t *g = ((void **)arg)[0];
    CURL *curl = ((void **)arg)[1];
    size_t n = size * nmemb, done = 0;

    if (!g->started && agent_get_begin(g, curl) != 0)
        return 0;
    if (g->failed) {
        if (g->body_len + n > AGENT_FETCH_ERR_MAX)
            return n;
        g->body = mm_xrealloc(g->body, g->body_len + n + 1);
        memcpy(g->body + g->body_len, data, n);
        g->body_len += n;
        return n;
    }
    while (done < n) {
        ssize_t r = write(g->fd, data + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        done += (size_t)r;
    }
    g->received += n;
    return n;
}

static int agent_get_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    agent_get_t *g = arg;
    uint64_t now = mm_mono_ms(), done, total;
    char a[32], b[32], r[32], bar[31];
    double frac, secs;
    size_t fill;

    if (!g->show || g->failed || !g->started || (now - g->last < 100 && dlnow != dltotal))
        return 0;
    g->last = now;
    done = g->offset + (uint64_t)dlnow;
    total = g->total != 0 ? g->total : g->offset + (uint64_t)dltotal;
    frac = total != 0 ? (double)done / (double)total : 0;
    fill = (size_t)(frac * 30);
    memset(bar, '=', fill);
    memset(bar + fill, ' ', 30 - fill);
    bar[30] = '\0';
    secs = (double)(now - g->t0) / 1000;
    agent_human_size(done, a, sizeof(a));
    agent_human_size(total, b, sizeof(b));
    agent_human_size(secs > 0 ? (uint64_t)((double)dlnow / secs) : 0, r, sizeof(r));
    fprintf(stderr, "\r%3.0f%% [%s] %s / %s  %s/s   ", frac * 100, bar, a, b, r);
    return 0;
}

/* Where to write: -o FILE, -o DIR/, or the file's name here. */
static int agent_get_target(agent_args_t *args, const char *rel, char *out, size_t size)
{
    char copy[PATH_MAX];
    const char *base;
    struct stat st;

    snprintf(copy, sizeof(copy), "%s", rel);
    base = basename(copy);
    if (args->output != NULL && stat(args->output, &st) == 0 && S_ISDIR(st.st_mode))
        return snprintf(out, size, "%s/%s", args->output, base) >= (int)size ? -1 : 0;
    return snprintf(out, size, "%s", args->output != NULL ? args->output : base) >= (int)size ? -1 : 0;
}

/* Opens the part file, resuming when its record matches. */
static int agent_get_open_part(const char *part, const char *meta, const agent_peer_conn_t *pc, const char *rel, agent_get_t *g)
{
    json_t *m = json_load_file(meta, 0, NULL);
    const char *mpid = json_string_value(json_object_get(m, "peer_id")), *mpath = json_string_value(json_object_get(m, "path"));
    const char *metag = json_string_value(json_object_get(m, "etag"));
    struct stat st;
    int resume = mpid != NULL && mpath != NULL && metag != NULL && strcmp(mpid, pc->peer_id) == 0 && strcmp(mpath, rel) == 0;

    g->fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0600);
    if (g->fd >= 0 && resume && fstat(g->fd, &st) == 0 && lseek(g->fd, 0, SEEK_END) == st.st_size) {
        g->offset = (uint64_t)st.st_size;
        snprintf(g->etag, sizeof(g->etag), "%s", metag);
    }
    json_decref(m);
    return g->fd >= 0 ? 0 : -errno;
}

int agent_cmd_get(agent_args_t *args)
{
    agent_conf_t conf;
    agent_peer_conn_t pc = {0};
    agent_err_t err;
    agent_get_t g = {.fd = -1};
    char email[MM_EMAIL_MAX + 1], errbuf[CURL_ERROR_SIZE], out[PATH_MAX], part[PATH_MAX + 8], meta[PATH_MAX + 16];
    char range[64], ifrange[160], size[32], rate[32];
    const char *rel = args->pos[1];
    int to_stdout = args->output != NULL && strcmp(args->output, "-") == 0, direct = to_stdout, rc;
    struct stat st;
    struct curl_slist *hdrs = NULL;
    void *cbdata[2];
    CURL *curl = NULL;
    char *url = NULL;
    CURLcode cr;
    uint64_t ms;

    if (mm_email_normalize(args->pos[0], strlen(args->pos[0]), email) != 0)
        return agent_cli_usage_error(args, "'%s' is not an email address", args->pos[0]);
    if (to_stdout && agent_out_json())
        return agent_cli_usage_error(args, "-o - writes the file to stdout: it cannot be combined with --json");
    if (rel[strspn(rel, "/")] == '\0' || agent_get_target(args, rel, out, sizeof(out)) != 0)
        return agent_cli_usage_error(args, "give the path of a file in the share, e.g. mm get %s photos/cat.jpg", email);
    snprintf(part, sizeof(part), "%s.part", out);
    snprintf(meta, sizeof(meta), "%s.part.json", out);
    if (agent_fetch_connect(args, &conf, email, &pc, &err) != 0)
        goto fail;
    g.pc = &pc;
    g.rel = rel;
    /* a device or a FIFO (-o /dev/null) is written as it is: never replaced by a rename */
    if (!to_stdout && stat(out, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        direct = 2;
    g.meta = direct ? NULL : meta;
    if (to_stdout) {
        g.fd = STDOUT_FILENO;
    } else if (direct) {
        if ((g.fd = open(out, O_WRONLY | O_CLOEXEC)) < 0) {
            agent_err_set(&err, "io_error", "cannot write %s: %s", out, strerror(errno));
            goto fail;
        }
    } else if (!direct && agent_get_open_part(part, meta, &pc, rel, &g) != 0) {
        agent_err_set(&err, "io_error", "cannot write %s: %s", part, strerror(errno));
        goto fail;
    }
    if ((curl = agent_fetch_curl(&conf, &pc, errbuf, args->timeout_s)) == NULL) {
        agent_err_set(&err, "internal", "libcurl failed to initialise");
        goto fail;
    }
    if (g.offset != 0) {
        snprintf(range, sizeof(range), "Range: bytes=%llu-", (unsigned long long)g.offset);
        snprintf(ifrange, sizeof(ifrange), "If-Range: %s", g.etag);
        hdrs = curl_slist_append(curl_slist_append(NULL, range), ifrange);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    }
    url = agent_fetch_url(pc.addr, rel, 0);
    cbdata[0] = &g;
    cbdata[1] = curl;
    g.show = !agent_out_json() && isatty(STDERR_FILENO);
    g.t0 = mm_mono_ms();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, agent_get_on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &g);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, agent_get_on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, cbdata);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, agent_get_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &g);
    cr = curl_easy_perform(curl);
    ms = mm_mono_ms() - g.t0;
    if (g.show)
        fputc('\n', stderr);
    if (!g.started) /* an empty body: look at the status now */
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &g.status),
            g.failed = g.status != 200 && g.status != 206 && g.status != 416;
    if (g.status == 416 && g.offset != 0) { /* the part is already whole (a run stopped before the rename) */
        g.failed = 0;
        g.total = g.offset;
        cr = CURLE_OK;
    }
    if (g.failed) {
        agent_fetch_peer_error(email, g.status, g.body, g.body_len, &err);
        if (!direct && g.offset == 0) {
            unlink(part);
            unlink(meta);
        }
        goto fail;
    }
    if (cr != CURLE_OK || (g.total != 0 && g.offset + g.received != g.total)) {
        agent_err_set(&err, "interrupted", "the download of %s from %s stopped at %llu of %llu bytes (%s)%s", rel, email,
                      (unsigned long long)(g.offset + g.received), (unsigned long long)g.total,
                      cr != CURLE_OK ? (errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cr)) : "short",
                      direct ? "" : ": run the same command again to resume");
        goto fail;
    }
    if (!direct) {
        if (fsync(g.fd) != 0 || close(g.fd) != 0 || rename(part, out) != 0) {
            g.fd = -1;
            agent_err_set(&err, "io_error", "cannot save %s: %s", out, strerror(errno));
            goto fail;
        }
        g.fd = -1;
        unlink(meta);
    }
    agent_human_size(g.offset + g.received, size, sizeof(size));
    agent_human_size(ms != 0 ? g.received * 1000 / ms : g.received, rate, sizeof(rate));
    if (!to_stdout)
        agent_out_line("Saved %s (%s) from %s in %.2f s (%s/s%s)", out, size, email, (double)ms / 1000, rate,
                       g.offset != 0 ? ", resumed" : "");
    rc = agent_out_ok(json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I}", "email", email, "path", rel, "file", to_stdout ? "-" : out,
                                "address", pc.addr, "bytes", (json_int_t)(g.offset + g.received), "received",
                                (json_int_t)g.received, "resumed_from", (json_int_t)g.offset, "ms", (json_int_t)ms));
    goto out;
fail:
    rc = agent_out_error(&err);
out:
    if (g.fd >= 0 && !to_stdout)
        close(g.fd);
    g.fd = -1;
    free(g.body);
    free(url);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    agent_peer_conn_clear(&pc);
    return rc;
}
