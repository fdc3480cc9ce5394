/*
 * The commands that only talk to the server: register, lookup, peers and
 * down.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agent.h"

#define AGENT_PEERS_PAGE 200
#define AGENT_PEERS_MAX 100000

/* Loads the identity and opens the API client: 0, or the exit code after reporting. */
static int agent_open(agent_args_t *args, agent_conf_t *conf, agent_api_t **api)
{
    agent_err_t err;

    if (agent_conf_load(conf, args->server, &err) != 0 || (*api = agent_api_new(conf, &err)) == NULL)
        return agent_out_error(&err);
    return 0;
}

int agent_cmd_register(agent_args_t *args)
{
    agent_conf_t conf;
    agent_api_t *api = NULL;
    agent_reply_t r = {0};
    agent_err_t err;
    json_t *body;
    int rc;

    if ((rc = agent_open(args, &conf, &api)) != 0)
        return rc;
    body = json_pack("{s:s}", "email", conf.email);
    if (conf.name[0] != '\0')
        json_object_set_new(body, "display_name", json_string(conf.name));
    if (agent_api_call(api, "POST", "/api/relay/register", body, &r, &err) != 0) {
        rc = agent_out_error(&err);
    } else if ((r.status == 200 || r.status == 201) && json_is_object(r.body)) {
        json_t *out = json_deep_copy(r.body);
        json_object_set_new(out, "created", json_boolean(r.status == 201));
        agent_out_line("%s %s at %s\n  peer_id %s\nNext: mm up --share DIR --allow FRIEND@EXAMPLE.COM",
                       r.status == 201 ? "Registered" : "Already registered:", conf.email, conf.server, conf.peer_id);
        rc = agent_out_ok(out);
    } else {
        agent_api_error(&r, &err);
        rc = agent_out_error(&err);
    }
    json_decref(body);
    agent_reply_clear(&r);
    agent_api_free(api);
    return rc;
}

static const char *agent_jstr(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s != NULL ? s : "";
}

/* The human form of a peer record. */
static void agent_print_record(json_t *rec)
{
    json_t *c;
    size_t i;

    agent_out_line("%s%s%s%s\n  peer_id     %s\n  online      since %s, expires in %lld s (last heartbeat %s)\n  port        %lld",
                   agent_jstr(rec, "email"), json_is_string(json_object_get(rec, "display_name")) ? " (" : "",
                   agent_jstr(rec, "display_name"), json_is_string(json_object_get(rec, "display_name")) ? ")" : "",
                   agent_jstr(rec, "peer_id"), agent_jstr(rec, "online_since"),
                   (long long)json_integer_value(json_object_get(rec, "expires_in")), agent_jstr(rec, "last_heartbeat"),
                   (long long)json_integer_value(json_object_get(rec, "port")));
    json_array_foreach(json_object_get(rec, "candidates"), i, c)
    {
        agent_out_line("  %-11s %s%s%s:%lld  %s, %s", i == 0 ? "candidates" : "", strchr(agent_jstr(c, "ip"), ':') ? "[" : "",
                       agent_jstr(c, "ip"), strchr(agent_jstr(c, "ip"), ':') ? "]" : "",
                       (long long)json_integer_value(json_object_get(c, "port")), agent_jstr(c, "scope"), agent_jstr(c, "source"));
    }
}

int agent_cmd_lookup(agent_args_t *args)
{
    agent_conf_t conf;
    agent_api_t *api = NULL;
    agent_err_t err;
    char email[MM_EMAIL_MAX + 1];
    json_t *peer = NULL;
    int rc;

    if (mm_email_normalize(args->pos[0], strlen(args->pos[0]), email) != 0)
        return agent_cli_usage_error(args, "'%s' is not an email address", args->pos[0]);
    if ((rc = agent_open(args, &conf, &api)) != 0)
        return rc;
    if (agent_api_lookup(api, "email", email, &peer, &err) != 0) {
        rc = agent_out_error(&err);
    } else {
        agent_print_record(peer);
        rc = agent_out_ok(json_pack("{s:O}", "peer", peer));
    }
    json_decref(peer);
    agent_api_free(api);
    return rc;
}

int agent_cmd_peers(agent_args_t *args)
{
    agent_conf_t conf;
    agent_api_t *api = NULL;
    agent_reply_t r = {0};
    agent_err_t err;
    json_t *all = json_array(), *p;
    char *after = NULL, path[1024];
    size_t i;
    int rc;

    if ((rc = agent_open(args, &conf, &api)) != 0)
        goto out;
    for (;;) {
        if (after != NULL) {
            char *esc = agent_api_escape(after);
            snprintf(path, sizeof(path), "/api/relay/broadcast/list?limit=%d&after=%s", AGENT_PEERS_PAGE, esc);
            free(esc);
        } else {
            snprintf(path, sizeof(path), "/api/relay/broadcast/list?limit=%d", AGENT_PEERS_PAGE);
        }
        if (agent_api_call(api, "GET", path, NULL, &r, &err) != 0) {
            rc = agent_out_error(&err);
            goto out;
        }
        if (r.status != 200 || !json_is_array(json_object_get(r.body, "peers"))) {
            agent_api_error(&r, &err);
            rc = agent_out_error(&err);
            goto out;
        }
        json_array_extend(all, json_object_get(r.body, "peers"));
        free(after);
        after = json_is_string(json_object_get(r.body, "next")) ? mm_xstrdup(agent_jstr(r.body, "next")) : NULL;
        agent_reply_clear(&r);
        if (after == NULL || json_array_size(all) >= AGENT_PEERS_MAX)
            break;
    }
    json_array_foreach(all, i, p)
    {
        json_t *c0 = json_array_get(json_object_get(p, "candidates"), 0);
        agent_out_line("%-40s %-24s %zu address%s, first %s", agent_jstr(p, "email"), agent_jstr(p, "display_name"),
                       json_array_size(json_object_get(p, "candidates")),
                       json_array_size(json_object_get(p, "candidates")) == 1 ? "" : "es", c0 != NULL ? agent_jstr(c0, "ip") : "-");
    }
    agent_out_line("%zu peer%s online", json_array_size(all), json_array_size(all) == 1 ? "" : "s");
    rc = agent_out_ok(json_pack("{s:O}", "peers", all));
out:
    agent_reply_clear(&r);
    free(after);
    json_decref(all);
    agent_api_free(api);
    return rc;
}

/* Stops a running mm up (it sends stop itself on its way out). 1 when one ran, 0 when none, -1 when it would not stop. */
static int agent_stop_daemon(const agent_paths_t *paths, pid_t *pid, agent_err_t *err)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    int i;

    if ((*pid = agent_lock_holder(paths)) <= 0)
        return 0;
    if (kill(*pid, SIGTERM) != 0 && errno != ESRCH) {
        agent_err_set(err, "cannot_stop", "cannot stop mm up (pid %ld): %s", (long)*pid, strerror(errno));
        return -1;
    }
    for (i = 0; i != 400; ++i) { /* 20 s: it may be telling an unreachable server */
        if (agent_lock_holder(paths) != *pid)
            return 1;
        nanosleep(&ts, NULL);
    }
    agent_err_set(err, "cannot_stop", "mm up (pid %ld) did not stop within 20 s of SIGTERM: check it, then kill it", (long)*pid);
    return -1;
}

int agent_cmd_down(agent_args_t *args)
{
    agent_conf_t conf;
    agent_api_t *api = NULL;
    agent_reply_t r = {0};
    agent_err_t err;
    pid_t pid = 0;
    int rc, stopped;

    if (agent_conf_load(&conf, args->server, &err) != 0)
        return agent_out_error(&err);
    if ((stopped = agent_stop_daemon(&conf.paths, &pid, &err)) < 0)
        return agent_out_error(&err);
    if (stopped)
        agent_out_line("Stopped mm up (pid %ld)", (long)pid);
    /* Stop again, whatever the daemon did: stopping twice is not an error, and it may not have reached the server. */
    if ((api = agent_api_new(&conf, &err)) == NULL)
        return agent_out_error(&err);
    if (agent_api_call(api, "POST", "/api/relay/broadcast/stop", NULL, &r, &err) != 0) {
        if (stopped)
            snprintf(err.msg + strlen(err.msg), sizeof(err.msg) - strlen(err.msg),
                     " (mm up has stopped; the server will forget this peer when its broadcast expires)");
        rc = agent_out_error(&err);
    } else if (r.status == 200) {
        agent_out_line("%s is no longer broadcasting", conf.email);
        rc = agent_out_ok(json_pack("{s:b,s:I}", "daemon_stopped", stopped, "daemon_pid", (json_int_t)pid));
    } else {
        agent_api_error(&r, &err);
        rc = agent_out_error(&err);
    }
    agent_reply_clear(&r);
    agent_api_free(api);
    return rc;
}
