/*
 * mm-reaper's configuration table (see `mm-reaper --help`).
 */
#include <stddef.h>
#include "reap.h"

#define F(m) offsetof(reap_config_t, m)

const mm_cfg_entry_t reap_config_table[] = {
    {"MM_REAPER_LISTEN", MM_CFG_STR, "127.0.0.1:8085", 0, 0, F(listen),
     "internal listener for /livez, /readyz and /metrics (host:port or unix:/path)"},
    {"MM_DATABASE_URL", MM_CFG_STR, "postgresql:///matchmaker", 0, 0, F(database_url), "PostgreSQL conninfo or URI"},
    {"MM_REDIS_URL", MM_CFG_STR, "redis://127.0.0.1:6379", 0, 0, F(redis_url), "redis://host:port[/db] or unix:/path"},
    {"MM_SWEEP_INTERVAL", MM_CFG_INT, "60", 1, 86400, F(sweep_interval),
     "seconds between sweeps of every broadcast against Redis (one reaper copy sweeps)"},
    {"MM_REAPER_POLL_MS", MM_CFG_INT, "200", 10, 60000, F(poll_ms), "milliseconds between polls of the deadline index"},
    {"MM_REAPER_BATCH", MM_CFG_INT, "1000", 1, 100000, F(batch), "peers reaped per batch"},
    {"MM_LOG_LEVEL", MM_CFG_STR, "info", 0, 0, F(log_level), "debug, info, warn or error"},
};
const size_t reap_config_table_len = MM_ARRAY_SIZE(reap_config_table);
