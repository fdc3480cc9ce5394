/*
 * mm-bootstrap's routes, as the gateway forwards them: /api/bootstrap/X
 * reaches the registry as /X.
 */
#include "boot.h"

const mm_route_t boot_routes[] = {
    /* POST /api/bootstrap/register: volunteer (or renew) as a bootstrap node, after a connect test */
    {"POST", "/register", 0, boot_register},
    /* POST /api/bootstrap/unregister: end the caller's membership now */
    {"POST", "/unregister", 0, boot_unregister},
    /* GET /api/bootstrap/discover?limit=N: a random sample of live nodes, never the caller */
    {"GET", "/discover", 0, boot_discover},
};
const size_t boot_routes_len = MM_ARRAY_SIZE(boot_routes);
