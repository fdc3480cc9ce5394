/*
 * mm-signal's configuration table (see `mm-signal --help`).
 */
#include <stddef.h>
#include "sig.h"

#define F(m) offsetof(sig_config_t, m)

const mm_cfg_entry_t sig_config_table[] = {
    {"MM_SIGNAL_LISTEN", MM_CFG_STR, "127.0.0.1:8083", 0, 0, F(listen),
     "internal listener for the gateway and probes (host:port or unix:/path)"},
    {"MM_REDIS_URL", MM_CFG_STR, "redis://127.0.0.1:6379", 0, 0, F(redis_url), "redis://host:port[/db] or unix:/path"},
    {"MM_DATABASE_URL", MM_CFG_STR, "postgresql:///matchmaker", 0, 0, F(database_url),
     "PostgreSQL conninfo or URI (read only: resolves an offer's target email to its peer_id)"},
    {"MM_SESSION_TTL", MM_CFG_INT, "30", 5, 3600, F(session_ttl), "seconds a signaling session (and a pending offer) lives"},
    {"MM_PUNCH_DELAY_MS", MM_CFG_INT, "500", 0, 10000, F(punch_delay_ms), "punch_at = time of the answer + this many milliseconds"},
    {"MM_MAX_PENDING_OFFERS", MM_CFG_INT, "8", 1, 1000, F(max_pending_offers), "pending offers per target before 429"},
    {"MM_THREADS", MM_CFG_INT, "0", 0, 256, F(threads), "worker threads, each with its own store connections (0 = one per CPU)"},
    {"MM_LOG_LEVEL", MM_CFG_STR, "info", 0, 0, F(log_level), "debug, info, warn or error"},
    /* ---- STUN responder (sig_stun.c) — owned by the STUN part: add entries below ---- */
    {"MM_STUN_PORT", MM_CFG_INT, "3478", 1, 65535, F(stun_port), "UDP port of the STUN Binding responder"},
    {"MM_STUN_ALT_PORT", MM_CFG_INT, "3479", 0, 65535, F(stun_alt_port),
     "second UDP port answering STUN too, so clients can tell how their NAT maps (0 = off)"},
    {"MM_STUN_ADDR", MM_CFG_STR, "::", 0, 0, F(stun_addr),
     "IP address the STUN ports bind to (:: = every IPv6 and IPv4 address; 0.0.0.0 = IPv4 only)"},
    {"MM_STUN_RATE", MM_CFG_INT, "20", 0, 1000000000, F(stun_rate),
     "STUN requests answered per second per source IP (IPv6: per /64); 0 = no limit"},
    {"MM_STUN_BURST", MM_CFG_INT, "40", 1, 1000000000, F(stun_burst), "STUN requests a source IP may send at once"},
    /* ---- end of STUN block ---- */
};
const size_t sig_config_table_len = MM_ARRAY_SIZE(sig_config_table);
