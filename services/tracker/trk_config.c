/*
 * mm-tracker's configuration table (see `mm-tracker --help`).
 */
#include <stddef.h>
#include "trk.h"

#define F(m) offsetof(trk_config_t, m)

const mm_cfg_entry_t trk_config_table[] = {
    {"MM_TRACKER_LISTEN", MM_CFG_STR, "127.0.0.1:8081", 0, 0, F(listen),
     "internal listener for the gateway and probes (host:port or unix:/path)"},
    {"MM_DATABASE_URL", MM_CFG_STR, "postgresql:///matchmaker", 0, 0, F(database_url), "PostgreSQL conninfo or URI"},
    {"MM_REDIS_URL", MM_CFG_STR, "redis://127.0.0.1:6379", 0, 0, F(redis_url), "redis://host:port[/db] or unix:/path"},
    {"MM_PRESENCE_TTL", MM_CFG_INT, "3600", 1, 30 * 86400, F(presence_ttl), "seconds a broadcast stays online without a heartbeat"},
    {"MM_HEARTBEAT_INTERVAL", MM_CFG_INT, "0", 0, 30 * 86400, F(heartbeat_interval),
     "seconds between heartbeats told to peers, before up to 10% jitter (0 = MM_PRESENCE_TTL / 2)"},
    {"MM_THREADS", MM_CFG_INT, "0", 0, 256, F(threads), "worker threads, each with its own store connections (0 = one per CPU)"},
    {"MM_LOG_LEVEL", MM_CFG_STR, "info", 0, 0, F(log_level), "debug, info, warn or error"},
};
const size_t trk_config_table_len = MM_ARRAY_SIZE(trk_config_table);
