/*
 * The shared folder: path confinement, listings and byte ranges. No HTTP
 * here (agent_peer.c is the server), so the rules are unit-tested alone.
 *
 * Confinement, in two independent locks:
 *  1. the request's path must be clean: no "." or ".." component, no NUL;
 *  2. the path is resolved with realpath(3) (symlinks followed), the result
 *     must lie inside the share's own realpath, and the resolved path is
 *     then opened one component at a time from the share's directory fd
 *     with O_NOFOLLOW. A symlink inside the share that points inside it
 *     works; one that points out is refused; and one swapped in between
 *     the check and the open makes the open fail, never escape.
 * Only regular files and directories are served (no FIFOs, devices or
 * sockets); files are opened with O_NONBLOCK so a FIFO cannot block.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"

#define AGENT_LIST_MAX 100000

int agent_share_open(agent_share_t *s, const char *dir, agent_err_t *err)
{
    struct stat st;

    s->root_fd = -1;
    if (realpath(dir, s->root) == NULL) {
        agent_err_set(err, "bad_share", "cannot share %s: %s", dir, strerror(errno));
        return -errno;
    }
    if ((s->root_fd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0 || fstat(s->root_fd, &st) != 0) {
        agent_err_set(err, "bad_share", "cannot share %s: %s (give a folder)", dir, strerror(errno));
        if (s->root_fd >= 0)
            close(s->root_fd);
        s->root_fd = -1;
        return -ENOTDIR;
    }
    return 0;
}

void agent_share_close(agent_share_t *s)
{
    if (s->root_fd >= 0)
        close(s->root_fd);
    s->root_fd = -1;
}

int agent_files_clean(const char *in, size_t len, char *out, size_t size)
{
    size_t i = 0, o = 0;

    if (size == 0)
        return -EINVAL;
    while (i < len) {
        size_t start, n;
        while (i < len && in[i] == '/')
            ++i;
        start = i;
        while (i < len && in[i] != '/') {
            if (in[i] == '\0')
                return -EINVAL;
            ++i;
        }
        if ((n = i - start) == 0)
            break;
        if ((n == 1 && in[start] == '.') || (n == 2 && in[start] == '.' && in[start + 1] == '.'))
            return -EINVAL;
        if (o + (o != 0) + n + 1 > size)
            return -EINVAL;
        if (o != 0)
            out[o++] = '/';
        memcpy(out + o, in + start, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

/* The part of `resolved` inside `root` ("" for the root itself), or NULL when it lies outside. */
static const char *agent_files_inside(const char *root, const char *resolved)
{
    size_t n = strlen(root);

    if (strcmp(root, "/") == 0)
        return resolved + 1;
    if (strncmp(resolved, root, n) != 0)
        return NULL;
    if (resolved[n] == '\0')
        return resolved + n;
    return resolved[n] == '/' ? resolved + n + 1 : NULL;
}

/* Resolves the clean `rel` inside the share into `inside` (relative to the root). 0, -ENOENT or -EPERM (outside). */
static int agent_files_resolve(const agent_share_t *s, const char *rel, char *inside, size_t size)
{
    char path[PATH_MAX], resolved[PATH_MAX];
    const char *in;

    if (snprintf(path, sizeof(path), "%s/%s", s->root, rel) >= (int)sizeof(path))
        return -ENOENT;
    if (realpath(path, resolved) == NULL)
        return errno == EACCES ? -EACCES : -ENOENT;
    if ((in = agent_files_inside(s->root, resolved)) == NULL)
        return -EPERM;
    if (strlen(in) >= size)
        return -ENOENT;
    memcpy(inside, in, strlen(in) + 1);
    return 0;
}

int agent_files_open(const agent_share_t *s, const char *rel, int want_dir)
{
    char inside[PATH_MAX], *comp, *next, *save = NULL;
    struct stat st;
    int dirfd, fd, ret;

    if ((ret = agent_files_resolve(s, rel, inside, sizeof(inside))) != 0)
        return ret;
    if (inside[0] == '\0') {
        if (!want_dir)
            return -ENOENT;
        return (fd = openat(s->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0 ? fd : -errno;
    }
    if ((dirfd = dup(s->root_fd)) < 0)
        return -errno;
    comp = strtok_r(inside, "/", &save);
    while (comp != NULL) {
        next = strtok_r(NULL, "/", &save);
        if (next != NULL)
            fd = openat(dirfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        else if (want_dir)
            fd = openat(dirfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        else
            fd = openat(dirfd, comp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        ret = errno;
        close(dirfd);
        if (fd < 0) /* ELOOP or ENOTDIR: something changed under us since realpath; fail closed */
            return ret == EACCES ? -EACCES : ret == ELOOP ? -EPERM : -ENOENT;
        dirfd = fd;
        comp = next;
    }
    if (fstat(dirfd, &st) != 0 || (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) {
        close(dirfd);
        return -ENOENT;
    }
    return dirfd;
}

static json_t *agent_files_time(time_t t)
{
    struct tm tm;
    char buf[32];

    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static int agent_files_entry_cmp(const void *a, const void *b)
{
    json_t *const *x = a, *const *y = b;

    return strcmp(json_string_value(json_object_get(*x, "name")), json_string_value(json_object_get(*y, "name")));
}

json_t *agent_files_list(const agent_share_t *s, int fd, const char *rel)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    json_t **items = NULL, *entries = json_array(), *out;
    size_t n = 0, cap = 0, i;
    int truncated = 0;

    if (d == NULL) {
        close(fd);
        json_decref(entries);
        return NULL;
    }
    /* readdir is thread-safe on a stream of one's own (readdir_r is deprecated) */
    // cppcheck-suppress readdirCalled
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        json_t *e;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            /* shown as what it points to, when that lies inside the share */
            char sub[PATH_MAX], inside[PATH_MAX], full[PATH_MAX];
            if (snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] != '\0' ? "/" : "", de->d_name) >= (int)sizeof(sub) ||
                agent_files_resolve(s, sub, inside, sizeof(inside)) != 0 ||
                snprintf(full, sizeof(full), "%s/%s", s->root, inside) >= (int)sizeof(full) || stat(full, &st) != 0)
                continue;
        }
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
            continue;
        if (n == AGENT_LIST_MAX) {
            truncated = 1;
            break;
        }
        e = json_pack("{s:s,s:s}", "name", de->d_name, "type", S_ISDIR(st.st_mode) ? "dir" : "file");
        if (e == NULL) /* a name that is not UTF-8: JSON cannot carry it */
            continue;
        if (S_ISREG(st.st_mode))
            json_object_set_new(e, "size", json_integer((json_int_t)st.st_size));
        json_object_set_new(e, "mtime", agent_files_time(st.st_mtime));
        if (n == cap) {
            cap = cap != 0 ? cap * 2 : 64;
            items = mm_xrealloc(items, cap * sizeof(*items));
        }
        items[n++] = e;
    }
    closedir(d);
    if (n != 0)
        qsort(items, n, sizeof(*items), agent_files_entry_cmp);
    for (i = 0; i != n; ++i)
        json_array_append_new(entries, items[i]);
    free(items);
    out = json_pack("{s:s+,s:o}", "path", "/", rel, "entries", entries);
    if (truncated)
        json_object_set_new(out, "truncated", json_true());
    return out;
}

/* A decimal number of at most 19 digits; 0 or -1. */
static int agent_files_num(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 19)
        return -1;
    for (i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int agent_files_range(const char *hdr, size_t len, uint64_t size, agent_range_t *r)
{
    const char *dash, *end;
    uint64_t a, b;

    if (hdr == NULL || len < 6 || strncasecmp(hdr, "bytes=", 6) != 0)
        return 1;
    hdr += 6;
    len -= 6;
    while (len != 0 && hdr[0] == ' ')
        ++hdr, --len;
    while (len != 0 && hdr[len - 1] == ' ')
        --len;
    end = hdr + len;
    if (memchr(hdr, ',', len) != NULL || (dash = memchr(hdr, '-', len)) == NULL)
        return 1;      /* several ranges, or not a range: send it all (RFC 9110 allows ignoring Range) */
    if (dash == hdr) { /* "-N": the last N bytes */
        if (agent_files_num(dash + 1, (size_t)(end - dash - 1), &b) != 0)
            return 1;
        if (b == 0 || size == 0)
            return -1;
        r->first = b >= size ? 0 : size - b;
        r->last = size - 1;
        return 0;
    }
    if (agent_files_num(hdr, (size_t)(dash - hdr), &a) != 0)
        return 1;
    if (dash + 1 == end) {
        b = UINT64_MAX;
    } else if (agent_files_num(dash + 1, (size_t)(end - dash - 1), &b) != 0 || b < a) {
        return 1;
    }
    if (a >= size)
        return -1;
    r->first = a;
    r->last = b >= size ? size - 1 : b;
    return 0;
}

const char *agent_files_etag(const struct stat *st, char *buf)
{
    snprintf(buf, 64, "\"%llx-%llx-%llx.%lx\"", (unsigned long long)st->st_ino, (unsigned long long)st->st_size,
             (unsigned long long)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec);
    return buf;
}
