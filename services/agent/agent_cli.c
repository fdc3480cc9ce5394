/*
 * The command line: options into agent_args_t, usage and help, and the one
 * output path (human text, or one JSON object per command with --json).
 *
 * Exit codes: 0 success, 1 an error whose message says what happened and
 * what to do, 2 bad usage (unknown option, missing argument).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "agent.h"

enum {
    OPT_JSON = 1000,
    OPT_HELP,
    OPT_SERVER,
    OPT_EMAIL,
    OPT_NAME,
    OPT_SERVER_CA,
    OPT_FORCE,
    OPT_SHARE,
    OPT_PORT,
    OPT_ALLOW,
    OPT_PUBLIC,
    OPT_BOOTSTRAP,
    OPT_ADVERTISE,
    OPT_OUTPUT,
    OPT_TIMEOUT,
    OPT_SEQUENTIAL,
    OPT_STUN,
    OPT_STUN_ALT,
};

static const struct option agent_long_opts[] = {
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {"server", required_argument, NULL, OPT_SERVER},
    {"email", required_argument, NULL, OPT_EMAIL},
    {"name", required_argument, NULL, OPT_NAME},
    {"server-ca", required_argument, NULL, OPT_SERVER_CA},
    {"force", no_argument, NULL, OPT_FORCE},
    {"share", required_argument, NULL, OPT_SHARE},
    {"port", required_argument, NULL, OPT_PORT},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"public", no_argument, NULL, OPT_PUBLIC},
    {"bootstrap", no_argument, NULL, OPT_BOOTSTRAP},
    {"advertise", required_argument, NULL, OPT_ADVERTISE},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"sequential", no_argument, NULL, OPT_SEQUENTIAL},
    {"stun", required_argument, NULL, OPT_STUN},
    {"stun-alt", required_argument, NULL, OPT_STUN_ALT},
    {NULL, 0, NULL, 0},
};

static pthread_mutex_t agent_out_mu = PTHREAD_MUTEX_INITIALIZER;
static int agent_out_is_json;

void agent_err_set(agent_err_t *err, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    snprintf(err->code, sizeof(err->code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

/* 1 when the word `name` is in the space-separated list `list`. */
static int agent_cli_word_in(const char *list, const char *name)
{
    size_t n = strlen(name);
    const char *p = list;

    while (p != NULL && *p != '\0') {
        while (*p == ' ')
            ++p;
        if (strncmp(p, name, n) == 0 && (p[n] == ' ' || p[n] == '\0'))
            return 1;
        p = strchr(p, ' ');
    }
    return 0;
}

static void agent_cli_push(const char ***list, size_t *n, const char *v)
{
    *list = mm_xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = v;
}

static int agent_cli_number(const agent_args_t *args, const char *opt, const char *v, double min, double max, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !isfinite(d) || d < min || d > max)
        return agent_cli_usage_error(args, "--%s %s: expected a number from %g to %g", opt, v, min, max);
    *out = d;
    return 0;
}

/* A whole number from `min` to 65535 (a port). */
static int agent_cli_port(const agent_args_t *args, const char *opt, const char *v, double min, int64_t *out)
{
    double d;

    if (agent_cli_number(args, opt, v, min, 65535, &d) != 0)
        return AGENT_EXIT_USAGE;
    if (d != floor(d))
        return agent_cli_usage_error(args, "--%s %s: expected a whole number", opt, v);
    *out = (int64_t)d;
    return 0;
}

int agent_cli_parse(const agent_cmd_t *cmd, int argc, char **argv, agent_args_t *args)
{
    int c, idx;

    memset(args, 0, sizeof(*args));
    args->cmd = cmd->name;
    args->port = -1;
    args->stun_alt = -1;
    opterr = 0;
    optind = 0; /* GNU: reinitialise, argv[0] is the command word */
    while ((c = getopt_long(argc, argv, "ho:", agent_long_opts, &idx)) != -1) {
        const char *name = NULL;
        if (c == 'h')
            c = OPT_HELP;
        else if (c == 'o')
            c = OPT_OUTPUT;
        if (c == '?' || c == ':') {
            if (optopt != 0 && optopt < 256)
                return agent_cli_usage_error(args, "unknown option -%c", optopt);
            return agent_cli_usage_error(args, "unknown option or missing value: %s", argv[optind - 1]);
        }
        for (idx = 0; agent_long_opts[idx].name != NULL; ++idx)
            if (agent_long_opts[idx].val == c)
                name = agent_long_opts[idx].name;
        if (c != OPT_JSON && c != OPT_HELP && c != OPT_SERVER && !agent_cli_word_in(cmd->options, name))
            return agent_cli_usage_error(args, "mm %s does not take --%s", cmd->name, name);
        switch (c) {
        case OPT_JSON:
            args->json = 1;
            agent_out_init(1);
            break;
        case OPT_HELP:
            args->help = 1;
            break;
        case OPT_SERVER:
            args->server = optarg;
            break;
        case OPT_EMAIL:
            args->email = optarg;
            break;
        case OPT_NAME:
            args->name = optarg;
            break;
        case OPT_SERVER_CA:
            args->server_ca = optarg;
            break;
        case OPT_FORCE:
            args->force = 1;
            break;
        case OPT_SHARE:
            args->share = optarg;
            break;
        case OPT_PORT:
            if (agent_cli_port(args, "port", optarg, 0, &args->port) != 0)
                return AGENT_EXIT_USAGE;
            break;
        case OPT_ALLOW:
            agent_cli_push(&args->allow, &args->nallow, optarg);
            break;
        case OPT_PUBLIC:
            args->public_ = 1;
            break;
        case OPT_BOOTSTRAP:
            args->bootstrap = 1;
            break;
        case OPT_ADVERTISE:
            agent_cli_push(&args->advertise, &args->nadvertise, optarg);
            break;
        case OPT_OUTPUT:
            args->output = optarg;
            break;
        case OPT_TIMEOUT:
            if (agent_cli_number(args, "timeout", optarg, 0.1, 3600, &args->timeout_s) != 0)
                return AGENT_EXIT_USAGE;
            break;
        case OPT_SEQUENTIAL:
            args->sequential = 1;
            break;
        case OPT_STUN:
            args->stun = optarg;
            break;
        case OPT_STUN_ALT:
            if (agent_cli_port(args, "stun-alt", optarg, 1, &args->stun_alt) != 0)
                return AGENT_EXIT_USAGE;
            break;
        default:
            return agent_cli_usage_error(args, "unknown option");
        }
    }
    if (args->help)
        return 0;
    for (; optind < argc; ++optind) {
        if (args->npos == MM_ARRAY_SIZE(args->pos) || args->npos == cmd->max_pos)
            return agent_cli_usage_error(args, "unexpected argument '%s'", argv[optind]);
        args->pos[args->npos++] = argv[optind];
    }
    if (args->npos < cmd->min_pos)
        return agent_cli_usage_error(args, "missing argument: %s", cmd->synopsis);
    return 0;
}

void agent_cli_free(agent_args_t *args)
{
    free(args->allow);
    free(args->advertise);
    args->allow = args->advertise = NULL;
}

void agent_cli_usage(FILE *fp, const agent_cmd_t *cmds, size_t n)
{
    size_t i;

    fprintf(fp, "Usage: mm [--json] [--server URL] COMMAND [OPTIONS]\n\n"
                "Matchmaker's client: find your friends' machines by email and reach them directly.\n\n"
                "Commands:\n");
    for (i = 0; i != n; ++i)
        fprintf(fp, "  %s\n", cmds[i].synopsis);
    fprintf(fp, "\nEvery command takes --json (one JSON object on stdout), --server URL and --help.\n"
                "Exit status: 0 success, 1 error (the message says what to do), 2 bad usage.\n"
                "Files: $XDG_CONFIG_HOME/matchmaker (identity), $XDG_CACHE_HOME/matchmaker (cache).\n"
                "Environment: MM_SERVER (server URL), MM_CA_FILE (CA of the server's certificate).\n\n"
                "Start here:\n"
                "  mm init --email alice@example.com --name Alice --server-ca ca.pem\n"
                "  mm register\n"
                "  mm up --share ~/Public --allow bob@example.com\n"
                "See `mm COMMAND --help` and man mm(1).\n");
}

void agent_cli_cmd_help(FILE *fp, const agent_cmd_t *cmd)
{
    fprintf(fp, "Usage: mm %s\n\n%s\n\nCommon options: --json (machine-readable output), --server URL, --help.\n", cmd->synopsis,
            cmd->help);
}

int agent_cli_usage_error(const agent_args_t *args, const char *fmt, ...)
{
    char msg[512];
    agent_err_t err;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (args != NULL && args->cmd != NULL)
        agent_err_set(&err, "usage", "%s (see mm %s --help)", msg, args->cmd);
    else
        agent_err_set(&err, "usage", "%s (see mm --help)", msg);
    agent_out_error(&err);
    return AGENT_EXIT_USAGE;
}

/* ---- output ---- */

void agent_out_init(int json)
{
    agent_out_is_json = json;
}

int agent_out_json(void)
{
    return agent_out_is_json;
}

static void agent_out_print_json(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);

    pthread_mutex_lock(&agent_out_mu);
    if (text != NULL)
        printf("%s\n", text);
    fflush(stdout);
    pthread_mutex_unlock(&agent_out_mu);
    free(text);
}

int agent_out_ok(json_t *obj)
{
    json_t *out = json_pack("{s:b}", "ok", 1);

    if (obj != NULL)
        json_object_update(out, obj);
    json_decref(obj);
    if (agent_out_is_json)
        agent_out_print_json(out);
    json_decref(out);
    return AGENT_EXIT_OK;
}

int agent_out_error(const agent_err_t *err)
{
    const char *code = err->code[0] != '\0' ? err->code : "error";

    if (agent_out_is_json) {
        json_t *out = json_pack("{s:b,s:{s:s,s:s}}", "ok", 0, "error", "code", code, "message", err->msg);
        agent_out_print_json(out);
        json_decref(out);
    } else {
        pthread_mutex_lock(&agent_out_mu);
        fprintf(stderr, "mm: %s\n", err->msg);
        pthread_mutex_unlock(&agent_out_mu);
    }
    return strcmp(code, "usage") == 0 ? AGENT_EXIT_USAGE : AGENT_EXIT_ERROR;
}

void agent_out_line(const char *fmt, ...)
{
    va_list ap;

    if (agent_out_is_json)
        return;
    pthread_mutex_lock(&agent_out_mu);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&agent_out_mu);
}

void agent_out_event(const char *name, json_t *fields, const char *human_fmt, ...)
{
    va_list ap;

    if (agent_out_is_json) {
        json_t *out = json_pack("{s:s}", "event", name);
        if (fields != NULL)
            json_object_update(out, fields);
        agent_out_print_json(out);
        json_decref(out);
    } else {
        pthread_mutex_lock(&agent_out_mu);
        va_start(ap, human_fmt);
        vprintf(human_fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
        pthread_mutex_unlock(&agent_out_mu);
    }
    json_decref(fields);
}
