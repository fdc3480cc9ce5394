/*
 * mm-gateway's configuration table (see `mm-gateway --help`).
 */
#include <stddef.h>
#include "mm/config.h"
#include "gw.h"

#define F(m) offsetof(gw_config_t, m)

const mm_cfg_entry_t gw_config_table[] = {
    {"MM_GATEWAY_ADDR", MM_CFG_STR, "::", 0, 0, F(addr),
     "address the public TLS listener binds (:: = every IPv4 and IPv6 address)"},
    {"MM_GATEWAY_PORT", MM_CFG_INT, "8443", 1, 65535, F(port), "port of the public TLS listener"},
    {"MM_GATEWAY_INTERNAL_LISTEN", MM_CFG_STR, "127.0.0.1:8090", 0, 0, F(internal_listen),
     "plain-HTTP listener for /livez, /readyz and /metrics (host:port or unix:/path)"},
    {"MM_TLS_CERT_FILE", MM_CFG_STR, NULL, 0, 0, F(cert_file), "the gateway's certificate chain (PEM); required"},
    {"MM_TLS_KEY_FILE", MM_CFG_STR, NULL, 0, 0, F(key_file), "the gateway's private key (PEM); required"},
    {"MM_CLIENT_CA_FILE", MM_CFG_STR, NULL, 0, 0, F(client_ca_file),
     "CA mode: accept only client certificates chaining to these CAs (PEM); unset = any self-signed certificate"},
    {"MM_TRUST_PROXY_PROTOCOL", MM_CFG_BOOL, "false", 0, 0, F(trust_proxy_protocol),
     "expect a PROXY protocol (v1/v2) header on every connection and take the client address from it"},
    {"MM_RATE_LIMIT", MM_CFG_INT, "50", 1, 1000000, F(rate_limit), "requests per second per identity"},
    {"MM_RATE_BURST", MM_CFG_INT, "100", 1, 1000000, F(rate_burst), "burst of requests per identity"},
    {"MM_TRACKER_URL", MM_CFG_STR, "http://127.0.0.1:8081", 0, 0, F(tracker_url),
     "mm-tracker (/api/relay): http://host:port or unix:/path; empty = answer 503"},
    {"MM_BOOTSTRAP_URL", MM_CFG_STR, "http://127.0.0.1:8082", 0, 0, F(bootstrap_url), "mm-bootstrap (/api/bootstrap)"},
    {"MM_SIGNAL_URL", MM_CFG_STR, "http://127.0.0.1:8083", 0, 0, F(signal_url), "mm-signal (/api/signal)"},
    {"MM_ADMIN_URL", MM_CFG_STR, "http://127.0.0.1:8084", 0, 0, F(admin_url), "mm-admin (/admin)"},
    {"MM_ADMIN_PEER_IDS", MM_CFG_STR, "", 0, 0, F(admin_peer_ids), "comma-separated peer_ids allowed to reach /admin"},
    {"MM_THREADS", MM_CFG_INT, "0", 0, 256, F(threads), "worker threads (0 = one per CPU)"},
    {"MM_UPSTREAM_TIMEOUT", MM_CFG_INT, "40000", 100, 600000, F(upstream_timeout),
     "milliseconds to wait for a service's answer (above the longest long-poll)"},
    {"MM_LOG_LEVEL", MM_CFG_STR, "info", 0, 0, F(log_level), "debug, info, warn or error"},
};
const size_t gw_config_table_len = MM_ARRAY_SIZE(gw_config_table);
