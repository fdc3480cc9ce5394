/*
 * Where the agent keeps its files, and what they say.
 *
 *   $XDG_CONFIG_HOME/matchmaker/   (default ~/.config/matchmaker), mode 0700
 *       key.pem        EC P-256 private key, 0600
 *       cert.pem       self-signed certificate with the email, 0600
 *       config.json    {"email", "name", "server"}, 0600
 *       server-ca.pem  the server's CA pinned by mm init --server-ca, 0600
 *   $XDG_CACHE_HOME/matchmaker/    (default ~/.cache/matchmaker), mode 0700
 *       winners.json   {peer_id: {"addr": "ip:port", "at": unix s}}: the last address connect won with
 *       up.lock        held (fcntl lock) by a running mm up; holds its pid
 *
 * Nothing is ever written world- or group-readable: files are created
 * with their final mode through a temporary file and rename(2).
 *
 * The server is --server, else MM_SERVER, else the config file, else
 * https://localhost:8443. Its certificate is checked against MM_CA_FILE
 * when set, else the pinned CA, else the system's store.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/pem.h>
#include "agent.h"

/* $VAR when it is an absolute path, else $HOME/`fallback`. */
static int agent_xdg_dir(const char *var, const char *fallback, char *out, size_t size, agent_err_t *err)
{
    const char *v = getenv(var), *home = getenv("HOME");
    struct passwd pwd, *pw = NULL;
    char buf[4096];
    int n;

    if (v != NULL && v[0] == '/') {
        n = snprintf(out, size, "%s/matchmaker", v);
    } else {
        if ((home == NULL || home[0] != '/') && getpwuid_r(getuid(), &pwd, buf, sizeof(buf), &pw) == 0 && pw != NULL)
            home = pw->pw_dir;
        if (home == NULL || home[0] != '/') {
            agent_err_set(err, "no_home", "cannot tell where to keep files: set HOME or %s", var);
            return -ENOENT;
        }
        n = snprintf(out, size, "%s/%s/matchmaker", home, fallback);
    }
    if (n < 0 || (size_t)n >= size) {
        agent_err_set(err, "path_too_long", "%s is too long", var);
        return -ENAMETOOLONG;
    }
    return 0;
}

static int agent_join(char *out, size_t size, const char *dir, const char *name)
{
    int n = snprintf(out, size, "%s/%s", dir, name);

    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int agent_paths_init(agent_paths_t *p, agent_err_t *err)
{
    memset(p, 0, sizeof(*p));
    if (agent_xdg_dir("XDG_CONFIG_HOME", ".config", p->config_dir, sizeof(p->config_dir), err) != 0 ||
        agent_xdg_dir("XDG_CACHE_HOME", ".cache", p->cache_dir, sizeof(p->cache_dir), err) != 0)
        return -ENOENT;
    if (agent_join(p->key, sizeof(p->key), p->config_dir, "key.pem") != 0 ||
        agent_join(p->cert, sizeof(p->cert), p->config_dir, "cert.pem") != 0 ||
        agent_join(p->config, sizeof(p->config), p->config_dir, "config.json") != 0 ||
        agent_join(p->server_ca, sizeof(p->server_ca), p->config_dir, "server-ca.pem") != 0 ||
        agent_join(p->winners, sizeof(p->winners), p->cache_dir, "winners.json") != 0 ||
        agent_join(p->lock, sizeof(p->lock), p->cache_dir, "up.lock") != 0) {
        agent_err_set(err, "path_too_long", "the configuration directory's path is too long");
        return -ENAMETOOLONG;
    }
    return 0;
}

int agent_mkdirs(const char *path, agent_err_t *err)
{
    char buf[PATH_MAX];
    size_t i, len = strlen(path);

    if (len >= sizeof(buf)) {
        agent_err_set(err, "path_too_long", "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; ++i) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
            agent_err_set(err, "io_error", "cannot create the directory %s: %s", buf, strerror(errno));
            return -errno;
        }
        buf[i] = path[i];
    }
    return 0;
}

/* write(2) until done: a short write is not an error. */
static int agent_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len != 0) {
        ssize_t r = write(fd, p, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int agent_write_atomic(const char *path, const void *data, size_t len, mode_t mode, agent_err_t *err)
{
    char tmp[PATH_MAX + 32];
    int fd, ret;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        agent_err_set(err, "path_too_long", "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    unlink(tmp); /* a leftover of a crashed run with the same pid */
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0) {
        ret = -errno;
        agent_err_set(err, "io_error", "cannot write %s: %s", path, strerror(errno));
        return ret;
    }
    if (fchmod(fd, mode) != 0 || (ret = agent_write_all(fd, data, len)) != 0 || fsync(fd) != 0) {
        ret = -errno;
        agent_err_set(err, "io_error", "cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        return ret != 0 ? ret : -EIO;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        ret = -errno;
        agent_err_set(err, "io_error", "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return ret;
    }
    return 0;
}

int agent_conf_save(const agent_paths_t *p, const char *email, const char *name, const char *server, agent_err_t *err)
{
    json_t *obj = json_pack("{s:s,s:s?,s:s?}", "email", email, "name", name, "server", server);
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int ret = agent_write_atomic(p->config, text, strlen(text), 0600, err);

    free(text);
    json_decref(obj);
    return ret;
}

static void agent_copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src != NULL ? src : "");
}

int agent_conf_load(agent_conf_t *c, const char *server_flag, agent_err_t *err)
{
    json_error_t jerr;
    json_t *cfg = NULL;
    const char *env_server = getenv("MM_SERVER"), *env_ca = getenv("MM_CA_FILE"), *cfg_server = NULL;
    X509 *cert = NULL;
    FILE *fp = NULL;
    int ret = -1;

    memset(c, 0, sizeof(*c));
    if (agent_paths_init(&c->paths, err) != 0)
        return -1;
    if (access(c->paths.config, F_OK) != 0) {
        agent_err_set(err, "not_initialised", "no identity in %s: create one with mm init --email you@example.com",
                      c->paths.config_dir);
        return -1;
    }
    if ((cfg = json_load_file(c->paths.config, JSON_REJECT_DUPLICATES, &jerr)) == NULL || !json_is_object(cfg) ||
        !json_is_string(json_object_get(cfg, "email"))) {
        agent_err_set(err, "bad_config", "%s is damaged (%s): fix it, or make a new identity with mm init --force", c->paths.config,
                      cfg == NULL ? jerr.text : "no email");
        goto out;
    }
    agent_copy_str(c->email, sizeof(c->email), json_string_value(json_object_get(cfg, "email")));
    agent_copy_str(c->name, sizeof(c->name), json_string_value(json_object_get(cfg, "name")));
    cfg_server = json_string_value(json_object_get(cfg, "server"));
    if ((fp = fopen(c->paths.cert, "r")) == NULL || (cert = PEM_read_X509(fp, NULL, NULL, NULL)) == NULL ||
        mm_identity_peer_id(cert, c->peer_id) != 0 || access(c->paths.key, R_OK) != 0) {
        agent_err_set(err, "bad_identity",
                      "cannot read the identity in %s (cert.pem, key.pem): make a new one with mm init --force",
                      c->paths.config_dir);
        goto out;
    }
    if (server_flag != NULL && server_flag[0] != '\0')
        agent_copy_str(c->server, sizeof(c->server), server_flag);
    else if (env_server != NULL && env_server[0] != '\0')
        agent_copy_str(c->server, sizeof(c->server), env_server);
    else if (cfg_server != NULL && cfg_server[0] != '\0')
        agent_copy_str(c->server, sizeof(c->server), cfg_server);
    else
        agent_copy_str(c->server, sizeof(c->server), AGENT_DEFAULT_SERVER);
    /* no trailing slash: paths are appended */
    for (size_t n = strlen(c->server); n > 0 && c->server[n - 1] == '/'; --n)
        c->server[n - 1] = '\0';
    if (strncmp(c->server, "https://", 8) != 0 || c->server[8] == '\0') {
        agent_err_set(err, "bad_server", "the server URL \"%s\" must start with https://", c->server);
        goto out;
    }
    if (env_ca != NULL && env_ca[0] != '\0')
        agent_copy_str(c->ca_file, sizeof(c->ca_file), env_ca);
    else if (access(c->paths.server_ca, R_OK) == 0)
        agent_copy_str(c->ca_file, sizeof(c->ca_file), c->paths.server_ca);
    ret = 0;
out:
    if (fp != NULL)
        fclose(fp);
    X509_free(cert);
    json_decref(cfg);
    return ret;
}

/* ---- the winners cache ---- */

int agent_cache_winner_get(const agent_paths_t *p, const char *peer_id, char *out)
{
    json_t *all = json_load_file(p->winners, 0, NULL);
    const char *addr = json_string_value(json_object_get(json_object_get(all, peer_id), "addr"));
    int ret = -ENOENT;

    if (addr != NULL && strlen(addr) < 64) {
        memcpy(out, addr, strlen(addr) + 1);
        ret = 0;
    }
    json_decref(all);
    return ret;
}

int agent_cache_winner_put(const agent_paths_t *p, const char *peer_id, const char *addr, agent_err_t *err)
{
    json_t *all;
    char *text;
    int ret;

    if (agent_mkdirs(p->cache_dir, err) != 0)
        return -1;
    if ((all = json_load_file(p->winners, 0, NULL)) == NULL || !json_is_object(all)) {
        json_decref(all);
        all = json_object();
    }
    json_object_set_new(all, peer_id, json_pack("{s:s,s:I}", "addr", addr, "at", (json_int_t)time(NULL)));
    text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    ret = agent_write_atomic(p->winners, text, strlen(text), 0600, err);
    free(text);
    json_decref(all);
    return ret;
}

/* ---- the lock of mm up ---- */

int agent_lock_take(const agent_paths_t *p, pid_t *holder, agent_err_t *err)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    char pid[32];
    int fd, n;

    *holder = 0;
    if (agent_mkdirs(p->cache_dir, err) != 0)
        return -1;
    if ((fd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        agent_err_set(err, "io_error", "cannot open %s: %s", p->lock, strerror(errno));
        return -1;
    }
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        *holder = agent_lock_holder(p);
        close(fd);
        agent_err_set(err, "already_running", "mm up already runs for this identity (pid %ld): stop it with mm down",
                      (long)*holder);
        return -EBUSY;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        agent_err_set(err, "io_error", "cannot write %s: %s", p->lock, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

pid_t agent_lock_holder(const agent_paths_t *p)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int fd = open(p->lock, O_RDONLY | O_CLOEXEC);
    pid_t pid = 0;

    if (fd < 0)
        return 0;
    /* F_GETLK needs a descriptor open for the lock type asked about only on some systems; Linux answers either way */
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        pid = fl.l_pid;
    close(fd);
    return pid;
}
