/*
 * mm-signal's routes, as the gateway forwards them: /api/signal/X reaches
 * mm-signal as /X.
 */
#include "sig.h"

const mm_route_t sig_routes[] = {
    /* POST /api/signal/offer: open a session towards a broadcasting peer */
    {"POST", "/offer", 0, sig_offer},
    /* GET /api/signal/inbox?wait=N: take the caller's pending offers, waiting up to N s for one */
    {"GET", "/inbox", 0, sig_inbox},
    /* POST /api/signal/answer: accept an offer; sets punch_at and the session secret */
    {"POST", "/answer", 0, sig_answer},
    /* GET /api/signal/session/{id}?wait=N: a session's state, waiting up to N s for the answer */
    {"GET", "/session/", 1, sig_session},
};
const size_t sig_routes_len = MM_ARRAY_SIZE(sig_routes);
