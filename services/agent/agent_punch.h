/*
 * UDP hole punching (SPEC §3.3, proto/punch.md): the agent's side.
 *
 *   agent_stun.c       this machine's UDP mapping, from mm-signal's two STUN
 *                      ports, and what kind of NAT made it (nat_mapping)
 *   agent_punch.c      the probe engine on one UDP socket: probes every
 *                      50 ms for 5 s, acknowledgements, the winning path,
 *                      keepalives every 15 s
 *   agent_punch_cmd.c  mm stun, and mm punch (the offerer)
 *   agent_punch_up.c   mm up's answerer: inbox long-poll, one thread per
 *                      session
 *
 * Everything here blocks (poll(2) on the session's own socket, libcurl's
 * easy interface): the offerer is a command, and each session of the
 * answerer has a thread of its own.
 */
#ifndef AGENT_PUNCH_H
#define AGENT_PUNCH_H

#include "mm/punch.h"
#include "agent.h"

#define AGENT_STUN_DEFAULT_PORT 3478
#define AGENT_PUNCH_INTERVAL_MS 50     /* between two rounds of probes (SPEC §3.3) */
#define AGENT_PUNCH_PROBE_MS 5000      /* how long one attempt probes */
#define AGENT_PUNCH_KEEPALIVE_MS 15000 /* between keepalives on a path */
#define AGENT_PUNCH_KEEPALIVE_MISSES 3 /* unanswered keepalives in a row: the path is gone */
#define AGENT_PUNCH_MAX_CANDS 16
#define AGENT_PUNCH_RING 1024 /* probes remembered, by seq (5 s of 16 candidates fit) */

/* ---- agent_stun.c -------------------------------------------------------- */

typedef struct agent_stun_target {
    mm_addr_t server;  /* IP and primary port */
    uint16_t alt_port; /* the second port, for nat_mapping */
    char text[96];     /* "ip:port", for messages */
} agent_stun_target_t;

/* Where mm-signal's STUN is: `flag` (--stun HOST[:PORT]), else MM_STUN,
 * else the server URL's host; port 3478 unless given; the alternate port
 * `alt` (--stun-alt, -1: not given), else MM_STUN_ALT, else port + 1. A
 * host name is resolved (IPv4 preferred: NATs are an IPv4 affair). */
int agent_stun_target(const agent_conf_t *conf, const char *flag, int64_t alt, agent_stun_target_t *t, agent_err_t *err);

typedef struct agent_mapping {
    mm_addr_t local;         /* this end: the interface address toward the STUN server, the socket's port */
    mm_addr_t mapped;        /* this socket as the primary port saw it (server reflexive) */
    mm_addr_t mapped_alt;    /* as the alternate port saw it; family 0 when it never answered */
    const char *nat_mapping; /* "endpoint-independent", "address-dependent", or NULL (alternate port silent) */
    double rtt_ms;           /* the fastest STUN round trip */
} agent_mapping_t;

/* The interface address the kernel would send from toward `to` (a
 * connected UDP socket, which sends nothing); port 0. 0 or -1. */
int agent_local_ip_toward(const mm_addr_t *to, mm_addr_t *out);
/* A non-blocking UDP socket of `family` on a port the kernel picks; -1 with err. */
int agent_udp_open(int family, agent_err_t *err);
/* Asks both STUN ports how `fd` is seen from outside, retransmitting
 * (after 100, 200, then every 250 ms) until both answered or `deadline`
 * (monotonic ms).
 * 0 with *m filled (the primary port answered), or -1 with err
 * (stun_unreachable). Datagrams that are not the awaited answers are
 * dropped. */
int agent_stun_map(int fd, const agent_stun_target_t *t, uint64_t deadline, agent_mapping_t *m, agent_err_t *err);
/* The candidates to send to mm-signal for `m`: every private, link-local
 * or loopback address of this machine in the socket's family (host), and
 * the mapping (srflx; sent as host when it is not a public address, e.g.
 * no NAT on a private network). A new JSON array. */
json_t *agent_punch_candidates(const agent_mapping_t *m);

/* ---- agent_punch.c -------------------------------------------------------- */

typedef struct agent_punch_sent {
    uint64_t seq; /* 0: free */
    uint64_t at;  /* monotonic ms */
    mm_addr_t to;
} agent_punch_sent_t;

typedef struct agent_punch {
    int fd;
    mm_punch_role_t role, peer_role;
    uint8_t session_id[MM_PUNCH_SESSION_ID_LEN];
    uint8_t secret[MM_PUNCH_SECRET_LEN];
    mm_addr_t cands[AGENT_PUNCH_MAX_CANDS];
    size_t ncands;
    uint64_t seq; /* the last seq sent */
    mm_punch_window_t window;
    agent_punch_sent_t sent[AGENT_PUNCH_RING]; /* probes and keepalives, at seq % AGENT_PUNCH_RING */
    /* what happened */
    int have_path;
    mm_addr_t remote;  /* the path: where the first echoed probe went */
    double rtt_ms;     /* of that probe; then of the last keepalive */
    uint64_t path_at;  /* monotonic ms when the path was found */
    uint64_t heard_at; /* monotonic ms of the last authentic packet; 0: none */
    uint64_t ack_at;   /* of the last ACK that echoed a packet of ours */
    unsigned probes, acks, dropped;
} agent_punch_t;

/* Sets up a session on `fd` (not owned) from mm-signal's strings and the
 * other side's candidates (a JSON array of {"ip","port"}; only those of
 * the socket's family are kept). 0, or -1 with err (bad_answer). */
int agent_punch_init(agent_punch_t *p, int fd, mm_punch_role_t role, const char *session_id, const char *secret_b64,
                     json_t *peer_cands, agent_err_t *err);
/* Polled between waits of at most 50 ms; non-zero stops the exchange. */
typedef int (*agent_punch_stop_fn)(void *data);
/* Answers the other side at once, and from `start` (monotonic ms) probes
 * every candidate every 50 ms until `end` (start + AGENT_PUNCH_PROBE_MS,
 * or sooner). Returns 1 when a path was found (p->remote, p->rtt_ms,
 * p->path_at), 0 when the time ran out, -1 when stopped. */
int agent_punch_probe(agent_punch_t *p, uint64_t start, uint64_t end, agent_punch_stop_fn stop, void *data);
/* Keeps answering until `until` (monotonic ms) or stopped. */
void agent_punch_answer_until(agent_punch_t *p, uint64_t until, agent_punch_stop_fn stop, void *data);
/* Keeps the path: a KEEPALIVE every 15 s when this side has a path (the
 * other side answers), answers the other side's. Returns when the path is
 * gone (AGENT_PUNCH_KEEPALIVE_MISSES keepalives unanswered; or, without a
 * path of our own, nothing heard for that long), at `until` (0: no limit)
 * or when stopped: 0 gone, 1 `until` reached, -1 stopped. */
int agent_punch_keep(agent_punch_t *p, uint64_t until, agent_punch_stop_fn stop, void *data);

#endif
