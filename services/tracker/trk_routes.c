/*
 * mm-tracker's routes, as the gateway forwards them: /api/relay/X reaches
 * the tracker as /X.
 */
#include "trk.h"

const mm_route_t trk_routes[] = {
    /* POST /api/relay/register: bind the certificate's email to its key */
    {"POST", "/register", 0, trk_register},
};
const size_t trk_routes_len = MM_ARRAY_SIZE(trk_routes);
