/*
 * mm-bootstrap's configuration table (see `mm-bootstrap --help`).
 */
#include <stddef.h>
#include "boot.h"

#define F(m) offsetof(boot_config_t, m)

const mm_cfg_entry_t boot_config_table[] = {
    {"MM_BOOTSTRAP_LISTEN", MM_CFG_STR, "127.0.0.1:8082", 0, 0, F(listen),
     "internal listener for the gateway and probes (host:port or unix:/path)"},
    {"MM_DATABASE_URL", MM_CFG_STR, "postgresql:///matchmaker", 0, 0, F(database_url), "PostgreSQL conninfo or URI"},
    {"MM_REDIS_URL", MM_CFG_STR, "redis://127.0.0.1:6379", 0, 0, F(redis_url), "redis://host:port[/db] or unix:/path"},
    {"MM_BOOTSTRAP_TTL", MM_CFG_INT, "3600", 1, 30 * 86400, F(ttl),
     "seconds a bootstrap membership lasts without a renewal (POST /api/bootstrap/register)"},
    {"MM_BOOTSTRAP_PROBE_TIMEOUT_MS", MM_CFG_INT, "2000", 100, 60000, F(probe_timeout_ms),
     "milliseconds the connect test to a volunteer's gossip port may take, over all its addresses"},
    {"MM_THREADS", MM_CFG_INT, "0", 0, 256, F(threads), "worker threads, each with its own store connections (0 = one per CPU)"},
    {"MM_LOG_LEVEL", MM_CFG_STR, "info", 0, 0, F(log_level), "debug, info, warn or error"},
};
const size_t boot_config_table_len = MM_ARRAY_SIZE(boot_config_table);
