/*
 * What the reaper reaps, as data: one row per kind of TTL key, with the
 * statements that read and delete the rows mirroring it. The pipeline
 * (reap_reap.c), the watchers (reap_watch.c) and the sweep (reap_sweep.c)
 * take everything kind-specific from here.
 *
 * Versions: a row's xmin. A writer that renews a key (ready, register)
 * sets the key first and updates the row second, so a row whose version is
 * unchanged since the reaper saw its key gone has not been renewed since.
 */
#include "reap.h"

/* The claimed batch: ids, the versions read before the claim, deadlines. */
#define REAP_SQL_BATCH "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v (peer_id, ver, deadline)),"
/* The expiry, as RFC 3339 UTC with milliseconds, or NULL when unknown. */
#define REAP_SQL_EXPIRED_AT                                                                                                        \
    "CASE WHEN deadline > 0 THEN to_char(to_timestamp(deadline / 1000.0) AT TIME ZONE 'UTC',"                                      \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') END"

/* A broadcast ends with its bootstrap membership: the row goes in the same
 * statement, with its own event (the foreign key's cascade would delete it
 * silently). */
static const char reap_sql_presence[] =
    REAP_SQL_BATCH " d AS (DELETE FROM broadcasts b USING v WHERE b.peer_id = v.peer_id AND b.xmin::text = v.ver"
                   " RETURNING b.peer_id, v.deadline),"
                   " n AS (DELETE FROM bootstrap_nodes n USING d WHERE n.peer_id = d.peer_id RETURNING n.peer_id),"
                   " ev AS (INSERT INTO peer_events (peer_id, kind, detail)"
                   " SELECT peer_id, 'offline', jsonb_build_object('reason', $4::text, 'expired_at', " REAP_SQL_EXPIRED_AT
                   ") FROM d UNION ALL SELECT peer_id, 'bootstrap_off', '{\"reason\": \"offline\"}' FROM n)"
                   "SELECT deadline FROM d";

static const char reap_sql_bootstrap[] =
    REAP_SQL_BATCH " d AS (DELETE FROM bootstrap_nodes n USING v WHERE n.peer_id = v.peer_id AND n.xmin::text = v.ver"
                   " RETURNING n.peer_id, v.deadline),"
                   " ev AS (INSERT INTO peer_events (peer_id, kind, detail)"
                   " SELECT peer_id, 'bootstrap_off', jsonb_build_object('reason', 'expired', 'found_by', $4::text,"
                   " 'expired_at', " REAP_SQL_EXPIRED_AT ") FROM d)"
                   "SELECT deadline FROM d";

const reap_kind_t reap_kinds[REAP_KINDS] = {
    [REAP_PRESENCE] =
        {
            .name = "presence",
            .metric = "",
            .what = "broadcasts",
            .prefix = "mm:presence:",
            .deadlines = "mm:presence:deadlines",
            .set = NULL,
            .ends = REAP_BOOTSTRAP,
            .sql_versions = "SELECT peer_id, xmin::text FROM broadcasts WHERE peer_id = ANY ($1::text[])",
            .sql_reap = reap_sql_presence,
            .sql_page = "SELECT peer_id FROM broadcasts WHERE peer_id > $1 ORDER BY peer_id LIMIT $2::int",
        },
    [REAP_BOOTSTRAP] =
        {
            .name = "bootstrap",
            .metric = "bootstrap_",
            .what = "bootstrap memberships",
            .prefix = "mm:bootstrap:",
            .deadlines = "mm:bootstrap:deadlines",
            .set = "mm:bootstrap:nodes",
            .ends = -1,
            .sql_versions = "SELECT peer_id, xmin::text FROM bootstrap_nodes WHERE peer_id = ANY ($1::text[])",
            .sql_reap = reap_sql_bootstrap,
            .sql_page = "SELECT peer_id FROM bootstrap_nodes WHERE peer_id > $1 ORDER BY peer_id LIMIT $2::int",
        },
};
