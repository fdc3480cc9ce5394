/*
 * Configuration as a bounded table over MM_* environment variables (the
 * Redis config.c idea): each entry names a variable, its type, default and
 * bounds, and where it lands in the service's own config struct. Loading
 * checks every entry and fails loudly, naming the variable.
 */
#ifndef MM_CONFIG_H
#define MM_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "mm/base.h"

typedef enum mm_cfg_type {
    MM_CFG_INT,  /* int64_t at `offset`, within [min, max] */
    MM_CFG_BOOL, /* int at `offset`: 1/0 from true/false/yes/no/on/off/1/0 */
    MM_CFG_STR,  /* const char * at `offset` (points into the environment or the default; never freed) */
} mm_cfg_type_t;

typedef struct mm_cfg_entry {
    const char *name; /* e.g. "MM_PRESENCE_TTL" */
    mm_cfg_type_t type;
    const char *def;  /* default, as text; NULL: unset (STR becomes NULL, INT/BOOL 0) */
    int64_t min, max; /* INT only */
    size_t offset;
    const char *help;
} mm_cfg_entry_t;

/* Fills `out` from the environment by `table`. Returns 0, or -EINVAL with a
 * message naming the variable and what it accepts. */
int mm_config_load(const mm_cfg_entry_t *table, size_t n, void *out, mm_err_t *err);

/* Prints usage and the table (name, type, default, bounds, help) to `fp`. */
void mm_config_print_help(FILE *fp, const char *prog, const char *summary, const mm_cfg_entry_t *table, size_t n);

/* The usual front door of a service's main(): handles --help / --version
 * (prints, returns 0), rejects other arguments (returns 2), loads the table
 * (prints the message, returns 1 on a bad value). Returns -1 when the
 * service should go on; otherwise main() returns the value as exit code. */
int mm_config_main(int argc, char **argv, const char *summary, const mm_cfg_entry_t *table, size_t n, void *out);

#endif
