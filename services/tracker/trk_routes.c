/*
 * mm-tracker's routes, as the gateway forwards them: /api/relay/X reaches
 * the tracker as /X.
 */
#include "trk.h"

const mm_route_t trk_routes[] = {
    /* POST /api/relay/register: bind the certificate's email to its key */
    {"POST", "/register", 0, trk_register},
    /* POST /api/relay/broadcast/ready: start or replace the caller's broadcast */
    {"POST", "/broadcast/ready", 0, trk_ready},
    /* POST /api/relay/broadcast/heartbeat: extend it to a full TTL */
    {"POST", "/broadcast/heartbeat", 0, trk_heartbeat},
    /* POST /api/relay/broadcast/stop: end it now */
    {"POST", "/broadcast/stop", 0, trk_stop},
    /* GET /api/relay/broadcast/lookup?email=|peer_id=: one online peer */
    {"GET", "/broadcast/lookup", 0, trk_lookup},
    /* GET /api/relay/broadcast/list?limit=&after=: online peers, by peer_id */
    {"GET", "/broadcast/list", 0, trk_list},
};
const size_t trk_routes_len = MM_ARRAY_SIZE(trk_routes);
