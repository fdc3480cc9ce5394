/*
 * Configuration from a bounded table over MM_* environment variables.
 * Every entry is checked at start; the first bad value stops the process
 * with a message that names the variable and what it accepts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "mm/config.h"

static const char *mm__cfg_type_name(mm_cfg_type_t type)
{
    switch (type) {
    case MM_CFG_INT:
        return "int";
    case MM_CFG_BOOL:
        return "bool";
    case MM_CFG_STR:
        return "string";
    }
    return "?";
}

/* Parses a whole decimal integer: no trailing garbage, no overflow. */
static int mm__parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    /* strtoll would skip leading blanks: accept only [-]digits */
    if (!(*s == '-' || (*s >= '0' && *s <= '9')))
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s)
        return -EINVAL;
    *out = v;
    return 0;
}

static int mm__parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    size_t i;

    for (i = 0; i != MM_ARRAY_SIZE(yes); ++i) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

static int mm__config_one(const mm_cfg_entry_t *e, void *out, mm_err_t *err)
{
    const char *val = getenv(e->name), *src = "environment";
    char *slot = (char *)out + e->offset;
    int64_t i64;
    int b;

    if (val == NULL || (*val == '\0' && e->type != MM_CFG_STR)) {
        val = e->def;
        src = "default";
    }
    switch (e->type) {
    case MM_CFG_STR:
        memcpy(slot, &val, sizeof(val));
        return 0;
    case MM_CFG_INT:
        if (val == NULL) {
            i64 = 0;
        } else if (mm__parse_int(val, &i64) != 0 || i64 < e->min || i64 > e->max) {
            mm_err_set(err, "%s=\"%s\" (%s) is invalid: expected an integer from %lld to %lld", e->name, val, src,
                       (long long)e->min, (long long)e->max);
            return -EINVAL;
        }
        memcpy(slot, &i64, sizeof(i64));
        return 0;
    case MM_CFG_BOOL:
        if (val == NULL) {
            b = 0;
        } else if (mm__parse_bool(val, &b) != 0) {
            mm_err_set(err, "%s=\"%s\" (%s) is invalid: expected true/false, yes/no, on/off or 1/0", e->name, val, src);
            return -EINVAL;
        }
        memcpy(slot, &b, sizeof(b));
        return 0;
    }
    mm_err_set(err, "%s: unknown config type", e->name);
    return -EINVAL;
}

int mm_config_load(const mm_cfg_entry_t *table, size_t n, void *out, mm_err_t *err)
{
    size_t i;
    int ret;

    for (i = 0; i != n; ++i)
        if ((ret = mm__config_one(&table[i], out, err)) != 0)
            return ret;
    return 0;
}

void mm_config_print_help(FILE *fp, const char *prog, const char *summary, const mm_cfg_entry_t *table, size_t n)
{
    size_t i;

    fprintf(fp, "Usage: %s [--help] [--version]\n\n%s\n\nConfiguration (environment variables):\n", prog, summary);
    for (i = 0; i != n; ++i) {
        const mm_cfg_entry_t *e = &table[i];
        fprintf(fp, "  %-28s %-6s default: %s", e->name, mm__cfg_type_name(e->type), e->def != NULL ? e->def : "(unset)");
        if (e->type == MM_CFG_INT)
            fprintf(fp, "  range: %lld..%lld", (long long)e->min, (long long)e->max);
        fprintf(fp, "\n      %s\n", e->help);
    }
}

int mm_config_main(int argc, char **argv, const char *summary, const mm_cfg_entry_t *table, size_t n, void *out)
{
    const char *prog = argc > 0 ? argv[0] : "mm";
    const char *slash = strrchr(prog, '/');
    mm_err_t err;
    int i;

    if (slash != NULL)
        prog = slash + 1;
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            mm_config_print_help(stdout, prog, summary, table, n);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", prog, MM_VERSION);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown argument '%s' (configuration is by MM_* environment variables; see --help)\n", prog,
                    argv[i]);
            return 2;
        }
    }
    if (mm_config_load(table, n, out, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    return -1;
}
