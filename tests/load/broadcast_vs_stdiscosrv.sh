#!/usr/bin/env bash
# Load suite: Matchmaker's broadcast heartbeat and lookup against Syncthing's
# discovery server (stdiscosrv, Debian syncthing-discosrv) doing the same
# jobs (announce, lookup), in the same run, on loopback.
#
#   tests/load/broadcast_vs_stdiscosrv.sh      (or: tests/load/run-all.sh stdiscosrv)
#
# Everything is real and started here in a fresh /tmp/mmload.XXXX:
#   - Matchmaker: PostgreSQL and Redis (deploy/local/stores.sh, schema by
#     deploy/local/migrate.sh), mm-tracker (MMLOAD_TRACKER_THREADS threads)
#     and mm-gateway (MMLOAD_THREADS threads, rate limit 1000000/s so it
#     never interferes), from build/bin (no mm-reaper: neither request
#     involves it);
#   - stdiscosrv on 127.0.0.1 only (-listen), its database (leveldb) in the
#     temporary directory, the same server certificate as the gateway,
#     metrics off (no -metrics-listen), its replication listener (used to
#     preload devices, see below) on 127.0.0.1; it has no rate limit to turn
#     off (1.19: no such option; only lookup misses get a growing
#     Retry-After). Its GOMAXPROCS is the machine's CPU count.
#
# Data: MMLOAD_PEERS (10,000) registered and broadcasting peers on each side.
#   - The MMLOAD_CLIENTS (2) load clients are real peers: each has its own
#     certificate (EC P-256 with an email), registers (201) and sends ready
#     (200, {"port":22000,"addresses":["192.0.2.1"]}) through the gateway,
#     and announces to stdiscosrv (POST /v2/ with the same certificate,
#     {"addresses":["tcp://192.0.2.1:22000"]}, 204). They send all the
#     heartbeats/announces and lookups.
#   - The other peers are bulk-loaded test data, as registration and ready
#     would leave them (a real certificate and TLS handshake each would cost
#     more than the measurement): Matchmaker's with COPY into peers,
#     broadcasts (the candidates JSON of a real ready) and peer_events (a
#     'registered' and an 'online' event each) plus `redis-cli --pipe` of
#     SET mm:presence:<id> "<ms> 127.0.0.1" EX 3600 and ZADD
#     mm:presence:deadlines; stdiscosrv's through its replication listener
#     (tests/load/broadcast_gen.py: one TLS connection from an allowed
#     device, one ReplicationRecord per device, stored by the same merge an
#     announce does), with an address that expires in 2 h like an announce's.
#   Before measuring, lookups of a real and of a bulk-loaded peer must find
#   the announced address on both sides (and the same candidates on
#   Matchmaker's), and stdiscosrv's own device ID must match the one this
#   script computes from its certificate.
#
# Measured, with curl (MMLOAD_CLIENTS processes, one certificate each, each
# with --parallel, together MMLOAD_PARALLEL transfers in flight, keep-alive):
#   heartbeat   POST /api/relay/broadcast/heartbeat '{}' (200)  vs
#               stdiscosrv announce POST /v2/ (204)
#   lookup      GET /api/relay/broadcast/lookup?peer_id=P (200)  vs
#               GET /v2/?device=ID (200); P and ID at random among all
#               MMLOAD_PEERS (the same client certificate on both sides;
#               stdiscosrv does not need it for lookups)
# Both over HTTP/2 when stdiscosrv speaks it; stdiscosrv 1.19 does not
# negotiate h2 (its TLS listener has no ALPN), so then both over HTTP/1.1
# keep-alive (MMLOAD_PARALLEL connections), and Matchmaker alone is also
# measured over HTTP/2 ("mm-h2" rows: the protocol its agents use).
# Rounds alternate the servers (odd rounds Matchmaker first); req/s counts
# only the expected answers over the wall time of the batch; p50/p99 from
# curl's time_total; CPU microseconds per request of the server side from
# /proc (Matchmaker: gateway + tracker + Redis + PostgreSQL, each shown;
# stdiscosrv: its process) and of the clients. The table shows the median
# round. Clients and servers share the same CPUs with whatever else runs on
# this machine (the load average is shown): CPU per request is the steadier
# figure.
#
# Then, unless MMLOAD_BIG_PEERS=0: more peers are bulk-loaded the same way
# up to MMLOAD_BIG_PEERS (250,000), and lookups at random among all of them
# are measured at MMLOAD_BIG_PARALLEL (8) in flight and on one connection one
# after another (a clean latency), Matchmaker over MMLOAD_BIG_HTTP (2), and
# stdiscosrv likewise loaded when MMLOAD_BIG_STD=1. Target: p99 < 5 ms.
#
# Memory per online peer: Redis `INFO memory` used_memory, and PostgreSQL's
# pg_total_relation_size (table + indexes + TOAST) of peers, broadcasts and
# peer_events, before and after each bulk load, divided by the peers loaded.
#
# Knobs (environment):
#   MMLOAD_ROUNDS=3             rounds per scenario and server (and of the
#                               250k lookups)
#   MMLOAD_PEERS=10000          registered + broadcasting peers (and
#                               stdiscosrv devices) for the comparison
#   MMLOAD_REQUESTS=50000       requests per batch (heartbeat and lookup)
#   MMLOAD_WARMUP=1000          uncounted requests per scenario and server
#   MMLOAD_PARALLEL=32          transfers in flight, over all clients
#   MMLOAD_CLIENTS=2            curl processes, each its own certificate
#   MMLOAD_THREADS=2            gateway MM_THREADS
#   MMLOAD_TRACKER_THREADS=2    tracker MM_THREADS
#   MMLOAD_HTTP=auto            auto: 2 when stdiscosrv negotiates h2, else
#                               1.1; or force 1.1 or 2 for both
#   MMLOAD_MM_H2=1              with HTTP/1.1: also Matchmaker over HTTP/2
#   MMLOAD_BIG_PEERS=250000     0: skip the big lookups
#   MMLOAD_BIG_REQUESTS=20000   lookups per batch at MMLOAD_BIG_PARALLEL
#   MMLOAD_BIG_PARALLEL=8
#   MMLOAD_SEQ_REQUESTS=3000    lookups one after another on one connection
#   MMLOAD_BIG_HTTP=2           Matchmaker's protocol for the big lookups
#   MMLOAD_BIG_STD=1            load stdiscosrv to MMLOAD_BIG_PEERS too
#   MMLOAD_PERF=1               after the rounds, one more batch of each
#                               scenario under `perf stat` (system calls and
#                               context switches per request of each server
#                               process) and `perf record -a` (system-wide, so
#                               every part is seen: the share of the CPU of
#                               each process, by library, top symbols), and
#                               one of requests the gateway answers itself
#                               (404): printed after the report
#   MMLOAD_PERF_TOP=12          symbols shown per program
#   MMLOAD_PERF_ARGS=           more `perf record` options, e.g. -g (the
#                               data stays in the temporary directory with
#                               MMLOAD_KEEP=1)
#   MMLOAD_MAKE=1               build mm-gateway and mm-tracker first
#                               (default: only when one is missing)
#   MMLOAD_KEEP=1, MM_BUILD_DIR, STDISCOSRV=/usr/bin/stdiscosrv
#
# Exit status: 0 when measured (whatever the ratios), 1 when a server did
# not start or died, a check failed, or any request got an answer other
# than the expected one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

ROUNDS=${MMLOAD_ROUNDS:-3}
PEERS=${MMLOAD_PEERS:-10000}
REQUESTS=${MMLOAD_REQUESTS:-50000}
WARMUP=${MMLOAD_WARMUP:-1000}
PARALLEL=${MMLOAD_PARALLEL:-32}
CLIENTS=${MMLOAD_CLIENTS:-2}
THREADS=${MMLOAD_THREADS:-2}
TRACKER_THREADS=${MMLOAD_TRACKER_THREADS:-2}
HTTP_WANT=${MMLOAD_HTTP:-auto}
MM_H2=${MMLOAD_MM_H2:-1}
BIG_PEERS=${MMLOAD_BIG_PEERS:-250000}
BIG_REQUESTS=${MMLOAD_BIG_REQUESTS:-20000}
BIG_PARALLEL=${MMLOAD_BIG_PARALLEL:-8}
SEQ_REQUESTS=${MMLOAD_SEQ_REQUESTS:-3000}
BIG_HTTP=${MMLOAD_BIG_HTTP:-2}
BIG_STD=${MMLOAD_BIG_STD:-1}
PERF=${MMLOAD_PERF:-0}
PERF_TOP=${MMLOAD_PERF_TOP:-12}
STDISCOSRV=${STDISCOSRV:-/usr/bin/stdiscosrv}
PY=/usr/bin/python3
GEN=$here/broadcast_gen.py

# What a peer says where it is, the same on both sides.
PEER_PORT=22000
PEER_ADDR=192.0.2.1
STD_ADDR="tcp://$PEER_ADDR:$PEER_PORT"
READY_BODY="{\"port\":$PEER_PORT,\"addresses\":[\"$PEER_ADDR\"]}"
ANNOUNCE_BODY="{\"addresses\":[\"$STD_ADDR\"]}"
PRESENCE_TTL=3600

for v in ROUNDS PEERS REQUESTS PARALLEL CLIENTS THREADS TRACKER_THREADS BIG_REQUESTS BIG_PARALLEL SEQ_REQUESTS; do
    case "${!v}" in '' | *[!0-9]* | 0) load_die "$v must be a positive integer (got '${!v}')" ;; esac
done
for v in WARMUP BIG_PEERS; do
    case "${!v}" in '' | *[!0-9]*) load_die "$v must be a number (got '${!v}')" ;; esac
done
case "$HTTP_WANT" in auto | 1.1 | 2) ;; *) load_die "MMLOAD_HTTP must be auto, 1.1 or 2" ;; esac
case "$BIG_HTTP" in 1.1 | 2) ;; *) load_die "MMLOAD_BIG_HTTP must be 1.1 or 2" ;; esac
[ "$CLIENTS" -le "$PARALLEL" ] || load_die "MMLOAD_CLIENTS ($CLIENTS) must not exceed MMLOAD_PARALLEL ($PARALLEL)"
[ "$CLIENTS" -le "$BIG_PARALLEL" ] || load_die "MMLOAD_CLIENTS ($CLIENTS) must not exceed MMLOAD_BIG_PARALLEL ($BIG_PARALLEL)"
[ "$PEERS" -gt "$CLIENTS" ] || load_die "MMLOAD_PEERS must exceed MMLOAD_CLIENTS"
[ "$BIG_PEERS" -eq 0 ] || [ "$BIG_PEERS" -gt "$PEERS" ] || load_die "MMLOAD_BIG_PEERS must be 0 or exceed MMLOAD_PEERS"
[ -x "$STDISCOSRV" ] || load_die "$STDISCOSRV not found: apt-get install syncthing-discosrv (deploy/local/deps.sh)"
[ -x "$PY" ] || load_die "$PY not found"
[ -f "$GEN" ] || load_die "$GEN is missing"
for c in openssl redis-cli psql ss; do
    command -v "$c" >/dev/null || load_die "$c not found (deploy/local/packages.txt)"
done
[ "$PERF" != 1 ] || command -v perf >/dev/null || load_die "MMLOAD_PERF=1 needs perf (Debian linux-perf)"
curl --help all 2>/dev/null | grep -q -- '--parallel-max' || load_die "this curl has no --parallel-max (7.66 or later needed)"

load_build mm-gateway mm-tracker
load_tmpdir
T=$LOAD_TMP
mkdir -p "$T/pki" "$T/runs" "$T/data" "$T/std"
FAILS=0
LOADAVG_START=$(load_loadavg)
load_log "temporary directory $T"

# --- certificates ----------------------------------------------------------------

load_server_cert "$T/pki"
PEER_IDS=()
for ((i = 1; i <= CLIENTS; i++)); do
    load_client_cert "$T/pki" "c$i" "load$i@bench.example"
    PEER_IDS[i]=$LOAD_CERT_PEER_ID
    DEV_IDS[i]=$("$PY" "$GEN" devid "$T/pki/c$i.crt")
done
# the device that preloads stdiscosrv through replication
load_client_cert "$T/pki" loader loader@bench.example
LOADER_ID=$("$PY" "$GEN" devid "$T/pki/loader.crt")
SERVER_ID=$("$PY" "$GEN" devid "$T/pki/server.crt")

# --- servers ----------------------------------------------------------------------

load_log "starting PostgreSQL and Redis"
load_stores_start
load_store_pids
PG_PID=$LOAD_PG_PID REDIS_PID=$LOAD_REDIS_PID
REDIS_SOCK=${LOAD_REDIS_URL#unix:}
rcli()
{
    redis-cli -s "$REDIS_SOCK" "$@"
}
pg()
{
    psql -X -q -v ON_ERROR_STOP=1 "$LOAD_PG_URL" "$@"
}
load_start_tracker "$T/tracker.log" "$TRACKER_THREADS"
TRACKER_PID=$LOAD_TRACKER_PID
load_start_gateway "$T/gateway.log" "$LOAD_TRACKER_PORT" "$THREADS" "$T/pki/server.crt" "$T/pki/server.key"
GW_PORT=$LOAD_GW_PORT GW_PID=$LOAD_GW_PID

STD_PORT=$(load_free_port)
STD_REPL_PORT=$(load_free_port)
load_log "starting stdiscosrv on 127.0.0.1:$STD_PORT (replication listener 127.0.0.1:$STD_REPL_PORT, for $LOADER_ID only)"
load_start "$T/std/stdiscosrv.log" env -C "$T/std" "$STDISCOSRV" \
    -listen "127.0.0.1:$STD_PORT" -db-dir "$T/std/discovery.db" \
    -cert "$T/pki/server.crt" -key "$T/pki/server.key" \
    -replicate "$LOADER_ID" -replication-listen "127.0.0.1:$STD_REPL_PORT"
STD_PID=$LOAD_PID
LOAD_WAIT_CODE=204 load_wait_http "https://127.0.0.1:$STD_PORT/ping" "$STD_PID" 30 --cacert "$T/pki/server.crt" ||
    load_die "stdiscosrv did not start (log: $T/std/stdiscosrv.log)"
STD_VERSION=$("$STDISCOSRV" -version 2>&1 | head -n 1)
grep -q "Server device ID is $SERVER_ID\$" "$T/std/stdiscosrv.log" ||
    load_die "stdiscosrv's device ID is not $SERVER_ID (this script's computation): $(grep 'device ID' "$T/std/stdiscosrv.log")"
load_log "stdiscosrv's device ID is $SERVER_ID, as computed here"
# (for perf and whoever reads a kept directory)
echo "mm-gateway $GW_PID mm-tracker $TRACKER_PID redis $REDIS_PID postgres $PG_PID stdiscosrv $STD_PID" >"$T/pids"
# where it listens: loopback only
STD_LISTEN=$(ss -Hltnp | awk -v p="pid=$STD_PID," 'index($0, p) { print $4 }' | sort | tr '\n' ' ')
for a in $STD_LISTEN; do
    case "$a" in 127.0.0.1:*) ;; *) load_die "stdiscosrv listens on $a, not on loopback only" ;; esac
done
load_log "stdiscosrv listens on: $STD_LISTEN"

# --- the protocol both speak ------------------------------------------------------------

MM_URL=https://127.0.0.1:$GW_PORT
STD_URL=https://127.0.0.1:$STD_PORT
CURL=(curl -s --cacert "$T/pki/server.crt" --cert "$T/pki/c1.crt" --key "$T/pki/c1.key")
STD_H=$("${CURL[@]}" --http2 -o /dev/null -w '%{http_version}' "$STD_URL/ping")
MM_H=$("${CURL[@]}" --http2 -o /dev/null -w '%{http_version}' "$MM_URL/api/relay/broadcast/lookup")
load_log "with --http2, stdiscosrv answers in HTTP/$STD_H, mm-gateway in HTTP/$MM_H"
[ "$MM_H" = 2 ] || load_die "mm-gateway did not negotiate HTTP/2"
if [ "$HTTP_WANT" = auto ]; then
    HTTP=1.1
    [ "$STD_H" != 2 ] || HTTP=2
else
    HTTP=$HTTP_WANT
fi
MM_TLS=$(load_tls_params "$GW_PORT" "$T/pki/server.crt" "$T/pki/c1.crt" "$T/pki/c1.key")
STD_TLS=$(load_tls_params "$STD_PORT" "$T/pki/server.crt" "$T/pki/c1.crt" "$T/pki/c1.key")

# --- the real peers --------------------------------------------------------------------

# call METHOD URL CLIENT [BODY]: prints "BODY CODE"
call()
{
    local method=$1 url=$2 c=$3 body=${4:-} args=()
    [ -z "$body" ] || args=(-H 'content-type: application/json' -d "$body")
    curl -s --cacert "$T/pki/server.crt" --cert "$T/pki/c$c.crt" --key "$T/pki/c$c.key" -X "$method" \
        "${args[@]}" -w ' %{http_code}' "$url" || true
}

# expect WHAT WANT "BODY CODE" [PYTHON-CHECK]: PYTHON-CHECK is a condition on
# `r` (the parsed JSON body, {} when none)
expect()
{
    local what=$1 want=$2 got=$3 check=${4:-True}
    "$PY" - "$what" "$want" "$got" "$check" <<'PY' || load_die "check failed: $1"
import json, sys
what, want, got, check = sys.argv[1:]
body, _, code = got.rpartition(" ")
try:
    r = json.loads(body) if body.strip() else {}
except ValueError:
    r = {}
ok = code == want and eval(check, {"r": r, "json": json})
print(f"  {what:58} HTTP {code} (want {want}) {'ok' if ok else 'WRONG: ' + body[:300]}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

load_log "the $CLIENTS load clients register, send ready and announce (real requests)"
for ((i = 1; i <= CLIENTS; i++)); do
    expect "c$i register (gateway)" 201 "$(call POST "$MM_URL/api/relay/register" "$i" '{}')" "r.get('peer_id') == '${PEER_IDS[i]}'"
    expect "c$i ready" 200 "$(call POST "$MM_URL/api/relay/broadcast/ready" "$i" "$READY_BODY")" "r.get('expires_in') == $PRESENCE_TTL"
    expect "c$i heartbeat" 200 "$(call POST "$MM_URL/api/relay/broadcast/heartbeat" "$i" '{}')" "r.get('expires_in') == $PRESENCE_TTL"
    expect "c$i announce (stdiscosrv, device ${DEV_IDS[i]:0:7})" 204 "$(call POST "$STD_URL/v2/" "$i" "$ANNOUNCE_BODY")"
    expect "c$i lookup of itself (stdiscosrv)" 200 "$(call GET "$STD_URL/v2/?device=${DEV_IDS[i]}" "$i")" "r.get('addresses') == ['$STD_ADDR']"
    echo "${PEER_IDS[i]}" >>"$T/data/ids"
    echo "${DEV_IDS[i]}" >>"$T/data/std.ids"
done
expect "c1 lookup of c$CLIENTS (gateway)" 200 "$(call GET "$MM_URL/api/relay/broadcast/lookup?peer_id=${PEER_IDS[CLIENTS]}" 1)" \
    "r.get('peer_id') == '${PEER_IDS[CLIENTS]}' and any(c['ip'] == '$PEER_ADDR' for c in r.get('candidates', []))"
CANDIDATES=$(pg -Atc "SELECT candidates::text FROM broadcasts WHERE peer_id = '${PEER_IDS[1]}'")
OBSERVED=$(pg -Atc "SELECT observed_address FROM broadcasts WHERE peer_id = '${PEER_IDS[1]}'")
load_log "a real ready stored candidates $CANDIDATES, observed address $OBSERVED"
# the tracker marks a Redis it has seen (mm:epoch); bulk presence goes in after that
for ((i = 0; i < 100; i++)); do
    [ "$(rcli exists mm:epoch)" != 1 ] || break
    sleep 0.1
done
[ "$(rcli exists mm:epoch)" = 1 ] || load_die "the tracker never set mm:epoch in Redis"

# --- bulk loading ------------------------------------------------------------------------

# store_sizes: "used_memory peers broadcasts peer_events rows-of-peer_events" (bytes)
store_sizes()
{
    local mem
    mem=$(rcli info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')
    echo "$mem $(pg -Atc "SELECT pg_total_relation_size('peers'), pg_total_relation_size('broadcasts'),
        pg_total_relation_size('peer_events'), (SELECT count(*) FROM peer_events)" | tr '|' ' ')"
}

# mm_load FIRST COUNT: Matchmaker peers FIRST..FIRST+COUNT-1 (COPY + redis-cli --pipe)
mm_load()
{
    local first=$1 count=$2 d=$T/data/mm.$1 out t0
    mkdir -p "$d"
    t0=$(load_now)
    "$PY" "$GEN" mm "$first" "$count" "$d" "$CANDIDATES" "$PEER_PORT" "$OBSERVED" "$PRESENCE_TTL"
    cat "$d/ids" >>"$T/data/ids"
    pg <<EOF || load_die "COPY into PostgreSQL failed"
BEGIN;
\copy peers (peer_id, email, fingerprint) FROM '$d/peers.tsv'
\copy broadcasts (peer_id, port, candidates, observed_address) FROM '$d/broadcasts.tsv'
\copy peer_events (peer_id, kind, detail) FROM '$d/events.tsv'
COMMIT;
ANALYZE peers;
ANALYZE broadcasts;
ANALYZE peer_events;
EOF
    out=$(redis-cli -s "$REDIS_SOCK" --pipe <"$d/presence.resp" 2>&1) || load_die "redis-cli --pipe failed: $out"
    grep -q "errors: 0, replies: $((2 * count))" <<<"$out" || load_die "redis-cli --pipe: $out"
    rm -f "$d"/*.tsv "$d/presence.resp"
    load_log "Matchmaker: $count peers loaded in $(awk -v a="$t0" -v b="$(load_now)" 'BEGIN { printf "%.1f", b - a }') s"
}

# std_load FIRST COUNT: stdiscosrv devices FIRST..FIRST+COUNT-1 (replication)
std_load()
{
    local first=$1 count=$2 last t0 i code
    t0=$(load_now)
    "$PY" "$GEN" std "$first" "$count" 127.0.0.1 "$STD_REPL_PORT" "$T/pki/loader.crt" "$T/pki/loader.key" \
        "$STD_ADDR" "$T/data/std.ids" || load_die "replication to stdiscosrv failed"
    # one connection, records stored in order: the last one there means all are
    last=$(tail -n 1 "$T/data/std.ids")
    for ((i = 0; i < 600; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$T/pki/server.crt" "$STD_URL/v2/?device=$last") || true
        [ "$code" != 200 ] || break
        load_alive "$STD_PID" || load_die "stdiscosrv died while loading"
        sleep 0.1
    done
    [ "$code" = 200 ] || load_die "stdiscosrv: the last replicated device is not found (HTTP $code)"
    load_log "stdiscosrv: $count devices loaded in $(awk -v a="$t0" -v b="$(load_now)" 'BEGIN { printf "%.1f", b - a }') s"
}

# mem_report N BEFORE AFTER (store_sizes): bytes per peer of Redis, peers,
# broadcasts and peer_events, and peer_events rows per peer
mem_report()
{
    local n=$1
    awk -v n="$n" -v b="$2" -v a="$3" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        printf "%.0f %.0f %.0f %.0f %.1f\n", (y[1] - x[1]) / n, (y[2] - x[2]) / n, (y[3] - x[3]) / n,
            (y[4] - x[4]) / n, (y[5] - x[5]) / n }'
}

BULK=$((PEERS - CLIENTS))
load_log "bulk-loading $BULK more peers on each side (test data: see the header of this script)"
S0=$(store_sizes)
mm_load 1 "$BULK"
S1=$(store_sizes)
read -r MEM1_REDIS MEM1_PEERS MEM1_BCAST MEM1_EVENTS MEM1_EVROWS < <(mem_report "$BULK" "$S0" "$S1")
std_load 1 "$BULK"
[ "$(wc -l <"$T/data/ids")" -eq "$PEERS" ] || load_die "expected $PEERS Matchmaker ids"
[ "$(wc -l <"$T/data/std.ids")" -eq "$PEERS" ] || load_die "expected $PEERS stdiscosrv ids"
n_pg=$(pg -Atc "SELECT (SELECT count(*) FROM peers) || ' ' || (SELECT count(*) FROM broadcasts)")
n_redis=$(rcli zcard mm:presence:deadlines)
if [ "$n_pg" != "$PEERS $PEERS" ] || [ "$n_redis" != "$PEERS" ]; then
    load_die "after loading: peers/broadcasts $n_pg, presence $n_redis (want $PEERS)"
fi

load_log "checks: lookups of bulk-loaded peers find what a real one shows"
bulk_id=$(sed -n "$((CLIENTS + 1))p" "$T/data/ids")
bulk_dev=$(sed -n "$((CLIENTS + 1))p" "$T/data/std.ids")
real=$(call GET "$MM_URL/api/relay/broadcast/lookup?peer_id=${PEER_IDS[1]}" 2)
expect "lookup of bulk peer ${bulk_id:0:12}… (gateway)" 200 "$(call GET "$MM_URL/api/relay/broadcast/lookup?peer_id=$bulk_id" 1)" \
    "r.get('peer_id') == '$bulk_id' and r.get('candidates') == json.loads('''${real% *}''').get('candidates') and r.get('expires_in', 0) > 3500 and sorted(r) == sorted(json.loads('''${real% *}'''))"
expect "lookup of bulk device ${bulk_dev:0:7} (stdiscosrv)" 200 "$(call GET "$STD_URL/v2/?device=$bulk_dev" 1)" "r.get('addresses') == ['$STD_ADDR']"
expect "lookup of an unknown peer (gateway)" 404 "$(call GET "$MM_URL/api/relay/broadcast/lookup?peer_id=$(printf '%064d' 0)" 1)"

# --- measurements ------------------------------------------------------------------------

# URL lists for curl -K: N requests, for lookups at random among the ids in
# IDS (seeded, so a list is reproducible).
urls_file()
{
    local name=$1 n=$2 url=$3 ids=${4:-} seed=${5:-1} f
    f=$T/runs/urls.$name.$n.$seed
    [ -f "$f" ] && {
        echo "$f"
        return
    }
    if [ -z "$ids" ]; then
        awk -v n="$n" -v url="$url" 'BEGIN { for (i = 0; i < n; i++) printf "url = \"%s\"\noutput = \"/dev/null\"\n", url }' >"$f"
    else
        awk -v n="$n" -v url="$url" -v seed="$seed" '{ id[NR] = $0 }
            END { srand(seed); for (i = 0; i < n; i++) printf "url = \"%s%s\"\noutput = \"/dev/null\"\n", url, id[int(rand() * NR) + 1] }' "$ids" >"$f"
    fi
    echo "$f"
}

# scenario SERVER OP: SC_PATH SC_IDS SC_CODE SC_ARGS (curl options) SC_HTTP
scenario()
{
    local server=$1 op=$2
    SC_ARGS=()
    case "$server" in
    mm | mm-h2 | mm-big) SC_BASE=$MM_URL ;;
    std | std-big) SC_BASE=$STD_URL ;;
    esac
    case "$server" in
    mm-h2) SC_HTTP=2 ;;
    mm-big) SC_HTTP=$BIG_HTTP ;;
    std-big) SC_HTTP=$HTTP ;;
    *) SC_HTTP=$HTTP ;;
    esac
    case "$server.$op" in
    mm*.front) SC_PATH=/mmload-not-routed SC_IDS='' SC_CODE=404 ;;
    mm*.heartbeat) SC_PATH=/api/relay/broadcast/heartbeat SC_IDS='' SC_CODE=200 SC_ARGS=(-H 'content-type: application/json' -d '{}') ;;
    std*.heartbeat) SC_PATH=/v2/ SC_IDS='' SC_CODE=204 SC_ARGS=(-H 'content-type: application/json' -d "$ANNOUNCE_BODY") ;;
    mm*.lookup) SC_PATH="/api/relay/broadcast/lookup?peer_id=" SC_IDS=$T/data/ids SC_CODE=200 ;;
    std*.lookup) SC_PATH="/v2/?device=" SC_IDS=$T/data/std.ids SC_CODE=200 ;;
    esac
    if [ "$SC_HTTP" = 2 ]; then
        SC_ARGS+=(--http2)
    else
        SC_ARGS+=(--http1.1 --parallel-immediate)
    fi
}

# run SERVER OP N TAG [PARALLEL [CLIENTS]]: N requests; sets the LOAD_*
# results of load_summarize and CPU_* (microseconds per request: CPU_SRV, its
# parts CPU_GW CPU_TRK CPU_REDIS CPU_PG, and CPU_CLIENT)
run()
{
    local server=$1 op=$2 n=$3 tag=$4 par=${5:-$PARALLEL} nc=${6:-$CLIENTS} i k seed pids=() outs=() rc=0
    local t0 t1 wall c0 c1 per urls ticks0=() ticks1=() pidset=() p thr0
    scenario "$server" "$op"
    case "$server" in
    mm*) pidset=("$GW_PID" "$TRACKER_PID" "$REDIS_PID" "$PG_PID") ;;
    std*) pidset=("$STD_PID") ;;
    esac
    for ((i = 1; i <= nc; i++)); do
        per[i]=$((n / nc + (i <= n % nc ? 1 : 0)))
        seed=$((RANDOM_BASE + i))
        [ "$tag" = warmup ] && seed=$((seed + 1000))
        urls[i]=$(urls_file "$server.$op.c$i" "${per[i]}" "$SC_BASE$SC_PATH" "$SC_IDS" "$seed")
    done
    for p in "${pidset[@]}"; do ticks0+=("$(load_cpu_ticks "$p")"); done
    thr0=$(load_thread_ticks "${pidset[0]}")
    load_children_ticks
    c0=$LOAD_CHILD_TICKS
    t0=$(load_now)
    for ((i = 1; i <= nc; i++)); do
        k=$T/runs/$tag.$server.$op.c$i
        outs+=("$k.out")
        load_curl_start "$k" "$T/pki" "c$i" "$((par / nc))" "${urls[i]}" "${SC_ARGS[@]}"
        pids+=("$LOAD_PID")
    done
    for k in "${pids[@]}"; do wait "$k" || rc=$?; done
    t1=$(load_now)
    RUN_CURL_PIDS=${pids[*]}
    load_children_ticks
    c1=$LOAD_CHILD_TICKS
    for p in "${pidset[@]}"; do ticks1+=("$(load_cpu_ticks "$p")"); done
    # how the front's threads shared the work (a thread that got every
    # connection caps the front at one CPU)
    THREAD_SPLIT=$(load_thread_split "$thr0" "$(load_thread_ticks "${pidset[0]}")")
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
    load_summarize "$wall" "$SC_CODE" "${outs[@]}"
    for p in "${pidset[@]}"; do
        load_alive "$p" || load_die "a server (pid $p, $(cat "/proc/$p/comm" 2>/dev/null || echo gone)) died during $server $op ($tag)"
    done
    CPU_GW=- CPU_TRK=- CPU_REDIS=- CPU_PG=-
    CPU_SRV=0
    for i in "${!pidset[@]}"; do
        p=$(load_us_per $((ticks1[i] - ticks0[i])) "$LOAD_TOTAL")
        CPU_SRV=$((CPU_SRV + p))
        case "$server.$i" in
        mm*.0) CPU_GW=$p ;;
        mm*.1) CPU_TRK=$p ;;
        mm*.2) CPU_REDIS=$p ;;
        mm*.3) CPU_PG=$p ;;
        esac
    done
    CPU_CLIENT=$(load_us_per $((c1 - c0)) "$LOAD_TOTAL")
    if [ "$LOAD_BAD" -ne 0 ] || [ "$LOAD_TOTAL" -ne "$n" ]; then
        load_log "FAIL: $server $op ($tag): $LOAD_OK of $n answered $SC_CODE (codes: $LOAD_CODES; exit $rc); the client said: $(cat "$T/runs/$tag.$server.$op".c*.err | sort | uniq -c | head -n 3 | tr '\n' ' ')"
        FAILS=$((FAILS + n - LOAD_OK))
    fi
    LOADAVG1=$(cut -d' ' -f1 /proc/loadavg)
    load_log "$(printf '%-7s %-7s %-9s h%-3s %2d in flight %6d req %6.2fs %8.1f req/s  p50/p99 %5s/%6s ms  CPU us/req server %4s (gw %s trk %s redis %s pg %s) client %4s  threads %s  load %s' \
        "$tag" "$server" "$op" "$SC_HTTP" "$par" "$LOAD_TOTAL" "$wall" "$LOAD_RPS" "$LOAD_P50" "$LOAD_P99" \
        "$CPU_SRV" "$CPU_GW" "$CPU_TRK" "$CPU_REDIS" "$CPU_PG" "$CPU_CLIENT" "${THREAD_SPLIT:--}" "$LOADAVG1")"
}

record()
{
    echo "$LOAD_RPS $LOAD_P50 $LOAD_P99 $CPU_SRV $CPU_GW $CPU_TRK $CPU_REDIS $CPU_PG $CPU_CLIENT $LOADAVG1 ${THREAD_SPLIT:--}" >>"$T/runs/results.$1"
}

# median_of KEY: sets M_RPS M_P50 M_P99 (of the round with the median req/s)
# and M_SRV M_GW M_TRK M_REDIS M_PG M_CLIENT (medians over the rounds), M_ALL
# (every round's req/s), M_SPLITS (every round's thread split) and M_LOAD
# (load averages seen)
median_of()
{
    local f=$T/runs/results.$1 col
    M_RPS=$(cut -d' ' -f1 "$f" | load_median -)
    read -r M_P50 M_P99 < <(awk -v m="$M_RPS" '{ d = $1 - m; if (d < 0) d = -d; if (NR == 1 || d < best) { best = d; line = $2 " " $3 } } END { print line }' "$f")
    for col in SRV:4 GW:5 TRK:6 REDIS:7 PG:8 CLIENT:9; do
        if [ "$(cut -d' ' -f"${col#*:}" "$f" | head -n 1)" = - ]; then
            printf -v "M_${col%:*}" '%s' -
        else
            printf -v "M_${col%:*}" '%s' "$(cut -d' ' -f"${col#*:}" "$f" | load_median - | sed 's/\.0$//')"
        fi
    done
    M_ALL=$(cut -d' ' -f1 "$f" | tr '\n' ' ')
    M_SPLITS=$(cut -d' ' -f11 "$f" | tr '\n' ' ')
    M_LOAD=$(cut -d' ' -f10 "$f" | sort -g | sed -n '1p;$p' | tr '\n' ' ' | awk '{ print ($1 == $2 ? $1 : $1 "-" $2) }')
}

SERVERS=(mm std)
EXTRA=()
[ "$HTTP" = 2 ] || [ "$MM_H2" != 1 ] || EXTRA=(mm-h2)
OPS=(heartbeat lookup)
RANDOM_BASE=0

if [ "$WARMUP" -gt 0 ]; then
    load_log "warm-up: $WARMUP requests per scenario and server (not counted)"
    for op in "${OPS[@]}"; do
        for server in "${SERVERS[@]}" "${EXTRA[@]}"; do
            run "$server" "$op" "$WARMUP" warmup
        done
    done
fi

load_log "measuring: $ROUNDS rounds of $REQUESTS requests per scenario and server, $PARALLEL in flight, HTTP/$HTTP"
for ((r = 1; r <= ROUNDS; r++)); do
    RANDOM_BASE=$((r * 10))
    if [ $((r % 2)) -eq 1 ]; then order=(mm std); else order=(std mm); fi
    for op in "${OPS[@]}"; do
        for server in "${order[@]}" "${EXTRA[@]}"; do
            run "$server" "$op" "$REQUESTS" "round$r"
            record "$server.$op"
        done
    done
done

# --- where the time goes (MMLOAD_PERF=1) ---------------------------------------------------

# perf_share FILE PIDS [COMM]: the percentage of all samples in FILE taken in
# the processes PIDS (comma-separated), or in the command COMM
perf_share()
{
    local sel=(--pid "$2")
    [ -z "${3:-}" ] || sel=(--comm "$3")
    perf report -i "$1" --no-children "${sel[@]}" --sort pid --stdio 2>/dev/null |
        awk '/^ +[0-9]/ { s += $1 } END { printf "%.1f\n", s }'
}

# perf_by FILE PIDS KEY: the samples of the processes PIDS in FILE (perf
# report sorted by pid, then KEY: dso or dso,sym), summed over their threads,
# as "PERCENT-OF-THEIRS NAME" lines, largest first. (The pid must be a sort
# key: perf filters merged entries by the thread of the first one.)
perf_by()
{
    perf report -i "$1" --no-children --pid "$2" --percentage relative --sort "pid,$3" --stdio 2>/dev/null |
        awk '/^ +[0-9]/ { k = $3; sub(/\.so[.0-9]*$/, "", k); if (k == "[kernel.kallsyms]") k = "kernel"
                         for (i = 5; i <= NF; i++) k = k " " $i
                         s[k] += $1 }
             END { for (k in s) printf "%.1f %s\n", s[k], k }' | sort -rn
}

# Each scenario once more, measured from outside:
#   - system calls and context switches of each server-side process, per
#     request (perf stat -e raw_syscalls:sys_enter,context-switches -p);
#   - a system-wide perf record, so that every part is seen: the share of
#     the samples of each server-side process (by pid: other work on this
#     machine runs programs of the same names), of the clients, of idle and
#     of everything else; then, for each server-side process, its samples by
#     library and its top symbols outside the kernel, as a share of its own.
if [ "$PERF" = 1 ]; then
    for op in "${OPS[@]}"; do
        for server in "${SERVERS[@]}"; do
            f=$T/perf.$server.$op.data
            # the postmaster and its children (the backends among them)
            pg_pids=$(cat /proc/"$PG_PID"/task/*/children 2>/dev/null | tr -s ' \n' ',')$PG_PID
            case "$server" in
            mm) parts=("mm-gateway:$GW_PID" "mm-tracker:$TRACKER_PID" "redis:$REDIS_PID" "postgres:$pg_pids") ;;
            *) parts=("stdiscosrv:$STD_PID") ;;
            esac
            stat_pids=()
            for part in "${parts[@]}"; do
                load_start "$T/perf-stat.$server.$op.${part%%:*}.log" perf stat -x, -e raw_syscalls:sys_enter,context-switches \
                    -p "${part#*:}" -o "$T/perf-stat.$server.$op.${part%%:*}"
                stat_pids+=("$LOAD_PID")
            done
            # shellcheck disable=SC2086
            load_start "$T/perf.$server.$op.log" perf record -a -F 1999 ${MMLOAD_PERF_ARGS:-} -o "$f"
            perf_pid=$LOAD_PID
            sleep 1
            run "$server" "$op" "$REQUESTS" perf
            # perf stat prints its counts on SIGINT
            for p in "${stat_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
            for p in "${stat_pids[@]}"; do
                wait "$p" 2>/dev/null || true
                load_stop "$p" 10
            done
            load_stop "$perf_pid" 60
            [ -s "$f" ] || load_die "perf wrote nothing (log: $T/perf.$server.$op.log)"
            {
                echo
                echo "== perf: $server $op, $REQUESTS requests, HTTP/$HTTP, $(tr -s ' ' <<<"$LOAD_RPS") req/s, load $LOADAVG1"
                line="per request:"
                for part in "${parts[@]}"; do
                    line+=" ${part%%:*} $(awk -F, -v n="$LOAD_TOTAL" '$3 ~ /sys_enter/ { s = $1 } $3 ~ /context-switches/ { c = $1 }
                        END { printf "%.1f syscalls %.1f switches", s / n, c / n }' "$T/perf-stat.$server.$op.${part%%:*}");"
                done
                echo "${line%;}"
                line="share of the samples of the $(nproc) CPUs:"
                total=0
                declare -A share=()
                for part in "${parts[@]}" "clients:${RUN_CURL_PIDS// /,}"; do
                    v=$(perf_share "$f" "${part#*:}")
                    share[${part%%:*}]=$v
                    total=$(awk -v a="$total" -v b="$v" 'BEGIN { print a + b }')
                    line+=" ${part%%:*} $v%,"
                done
                v=$(perf_share "$f" - swapper)
                line+=" idle $v%, other work on this machine $(awk -v a="$total" -v b="$v" 'BEGIN { printf "%.1f", 100 - a - b }')%"
                echo "$line"
                for part in "${parts[@]}"; do
                    # too few samples to say anything (PostgreSQL during heartbeats)
                    awk -v v="${share[${part%%:*}]}" 'BEGIN { exit !(v >= 0.5) }' || continue
                    echo "-- ${part%%:*}, by library (kernel: system calls, network, scheduling):"
                    echo "   $(perf_by "$f" "${part#*:}" dso | awk 'n++ < 8 { printf "%s%s %s%%", (n > 1 ? ", " : ""), $2, $1 }')"
                    echo "   top symbols outside the kernel (% of its samples):"
                    perf_by "$f" "${part#*:}" dso,sym | awk -v top="$PERF_TOP" '$2 != "kernel" && n++ < top { printf "   %5s%%  %s\n", $1, substr($0, index($0, " ") + 1) }'
                done
            } >>"$T/perf.report"
        done
    done
    # the gateway's share that is not the proxying: a path it answers itself
    run mm front "$REQUESTS" perf
    {
        echo
        echo "== mm-gateway alone: GET of an unrouted path (its own 404, no tracker), HTTP/$HTTP, $(tr -s ' ' <<<"$LOAD_RPS") req/s:"
        echo "   mm-gateway $CPU_GW us of CPU per request (TLS, HTTP, routing, access log; the rest of its share above is the proxying)"
    } >>"$T/perf.report"
fi

# --- 250,000 peers ------------------------------------------------------------------------

if [ "$BIG_PEERS" -gt 0 ]; then
    MORE=$((BIG_PEERS - PEERS))
    load_log "bulk-loading $MORE more peers: $BIG_PEERS in all"
    S2=$(store_sizes)
    mm_load $((BULK + 1)) "$MORE"
    S3=$(store_sizes)
    read -r MEM2_REDIS MEM2_PEERS MEM2_BCAST MEM2_EVENTS MEM2_EVROWS < <(mem_report "$MORE" "$S2" "$S3")
    n_redis=$(rcli zcard mm:presence:deadlines)
    [ "$n_redis" = "$BIG_PEERS" ] || load_die "presence holds $n_redis peers, not $BIG_PEERS"
    BIG_SERVERS=(mm-big)
    if [ "$BIG_STD" = 1 ]; then
        std_load $((BULK + 1)) "$MORE"
        BIG_SERVERS+=(std-big)
    fi
    expect "lookup of the last bulk peer (gateway)" 200 "$(call GET "$MM_URL/api/relay/broadcast/lookup?peer_id=$(tail -n 1 "$T/data/ids")" 1)"
    DB_SIZE=$(du -sb "$T/std/discovery.db" | cut -f1)
    for server in "${BIG_SERVERS[@]}"; do
        run "$server" lookup "$WARMUP" warmup "$BIG_PARALLEL"
    done
    load_log "measuring lookups among $BIG_PEERS peers: $ROUNDS rounds, $BIG_REQUESTS at $BIG_PARALLEL in flight and $SEQ_REQUESTS one at a time"
    for ((r = 1; r <= ROUNDS; r++)); do
        RANDOM_BASE=$((r * 10 + 5))
        for server in "${BIG_SERVERS[@]}"; do
            run "$server" lookup "$BIG_REQUESTS" "big$r" "$BIG_PARALLEL"
            record "$server.lookup.par"
            run "$server" lookup "$SEQ_REQUESTS" "seq$r" 1 1
            record "$server.lookup.seq"
        done
    done
fi

# --- the report ------------------------------------------------------------------------------

title()
{
    case "$1" in
    heartbeat) echo "heartbeat / announce (POST)" ;;
    lookup) echo "lookup (GET, among $PEERS)" ;;
    esac
}

echo
echo "== Matchmaker broadcast vs stdiscosrv: heartbeat/announce and lookup, $PEERS peers =="
echo "date:        $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:     $(load_machine); load generator on the same CPUs"
echo "software:    $STD_VERSION; $(curl --version | head -n 1 | cut -d' ' -f1-2), $(openssl version | cut -d' ' -f1-2),"
echo "             $(pg -Atc 'SHOW server_version' | cut -d' ' -f1 | sed 's/^/PostgreSQL /'), Redis $(rcli info server | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }')"
echo "source:      $(load_source); mm-gateway and mm-tracker from $LOAD_BIN"
echo "TLS:         mm-gateway: $MM_TLS; stdiscosrv: $STD_TLS; the same EC P-256 server key"
echo "HTTP:        HTTP/$HTTP for both (stdiscosrv answers --http2 in HTTP/$STD_H)$([ "${#EXTRA[@]}" -eq 0 ] || echo "; mm-h2 rows: Matchmaker over HTTP/2")"
echo "servers:     gateway MM_THREADS=$THREADS, tracker MM_THREADS=$TRACKER_THREADS, rate limit 1000000/s; PostgreSQL + Redis"
echo "             on unix sockets (Redis appendonly, fsync everysec); the gateway logs every request (JSON line)"
echo "             stdiscosrv: GOMAXPROCS=$(nproc), leveldb (NoSync), no request log, no rate limit in this version"
echo "data:        $PEERS peers each side: $CLIENTS real (register + ready via the gateway / POST /v2/ announce),"
echo "             $BULK bulk-loaded (COPY + redis-cli --pipe / stdiscosrv replication protocol)"
echo "load:        $CLIENTS curl processes (one certificate each) x $((PARALLEL / CLIENTS)) in flight = $PARALLEL concurrent, keep-alive;"
echo "             $REQUESTS requests per batch; $ROUNDS rounds, servers alternating; warm-up $WARMUP"
echo "load avg:    $LOADAVG_START at the start, $(load_loadavg) at the end (other work on this machine)"
echo
fmt='%-42s | %11s | %11s | %6s | %17s | %17s\n'
echo "throughput, req/s of expected answers (median round); target: Matchmaker >= stdiscosrv (1.0x), aim 2x"
# shellcheck disable=SC2059
printf "$fmt" scenario Matchmaker stdiscosrv ratio "mm p50/p99 ms" "std p50/p99 ms"
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 42)" "$(load_dash 11)" "$(load_dash 11)" "$(load_dash 6)" "$(load_dash 17)" "$(load_dash 17)"
for op in "${OPS[@]}"; do
    median_of "mm.$op"
    mr=$M_RPS ml="$M_P50 / $M_P99"
    median_of "std.$op"
    # shellcheck disable=SC2059
    printf "$fmt" "$(title "$op"), h$HTTP" "$mr" "$M_RPS" "$(load_ratio "$mr" "$M_RPS")" "$ml" "$M_P50 / $M_P99"
done
for op in "${OPS[@]}"; do
    for server in "${EXTRA[@]}"; do
        median_of "$server.$op"
        # shellcheck disable=SC2059
        printf "$fmt" "$(title "$op"), h2, mm only" "$M_RPS" "" "" "$M_P50 / $M_P99" ""
    done
done
echo
echo "CPU time per request, microseconds (median over the rounds; user+system from /proc):"
fmt='%-42s | %8s | %6s | %7s | %6s | %6s | %10s | %6s | %13s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario "mm total" gateway tracker redis pg stdiscosrv "std/mm" "client mm/std"
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 42)" "$(load_dash 8)" "$(load_dash 6)" "$(load_dash 7)" "$(load_dash 6)" "$(load_dash 6)" "$(load_dash 10)" "$(load_dash 6)" "$(load_dash 13)"
for op in "${OPS[@]}"; do
    median_of "mm.$op"
    a=("$M_SRV" "$M_GW" "$M_TRK" "$M_REDIS" "$M_PG" "$M_CLIENT")
    median_of "std.$op"
    # shellcheck disable=SC2059
    printf "$fmt" "$(title "$op"), h$HTTP" "${a[0]}" "${a[1]}" "${a[2]}" "${a[3]}" "${a[4]}" "$M_SRV" "$(load_ratio "$M_SRV" "${a[0]}")" "${a[5]} / $M_CLIENT"
    for server in "${EXTRA[@]}"; do
        median_of "$server.$op"
        # shellcheck disable=SC2059
        printf "$fmt" "$(title "$op"), h2, mm only" "$M_SRV" "$M_GW" "$M_TRK" "$M_REDIS" "$M_PG" "" "" "$M_CLIENT"
    done
done
echo
echo "each round (req/s; CPU split between the threads of mm-gateway / stdiscosrv; load average 1 min):"
for op in "${OPS[@]}"; do
    for server in "${SERVERS[@]}" "${EXTRA[@]}"; do
        median_of "$server.$op"
        printf '  %-10s %-6s %-26s threads %-20s load %s\n' "$op" "$server" "$M_ALL" "$M_SPLITS" "$M_LOAD"
    done
done
echo
echo "memory per online peer (bulk loads; Redis used_memory, PostgreSQL pg_total_relation_size = table + indexes + TOAST):"
fmt='%-20s | %12s | %12s | %12s | %16s | %18s\n'
# shellcheck disable=SC2059
printf "$fmt" "peers loaded" "Redis B" "peers B" "broadcasts B" "peer_events B" "PostgreSQL total B"
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 20)" "$(load_dash 12)" "$(load_dash 12)" "$(load_dash 12)" "$(load_dash 16)" "$(load_dash 18)"
# shellcheck disable=SC2059
printf "$fmt" "$BULK (to $PEERS)" "$MEM1_REDIS" "$MEM1_PEERS" "$MEM1_BCAST" "$MEM1_EVENTS ($MEM1_EVROWS rows)" "$((MEM1_PEERS + MEM1_BCAST + MEM1_EVENTS))"
if [ "$BIG_PEERS" -gt 0 ]; then
    # shellcheck disable=SC2059
    printf "$fmt" "$MORE (to $BIG_PEERS)" "$MEM2_REDIS" "$MEM2_PEERS" "$MEM2_BCAST" "$MEM2_EVENTS ($MEM2_EVROWS rows)" "$((MEM2_PEERS + MEM2_BCAST + MEM2_EVENTS))"
fi
echo "(Redis: a presence key \"<ms> <ip>\" with a TTL + a deadline zset entry; PostgreSQL: on-disk relation sizes, the"
echo " cache a server needs to hold them; peer_events grows with every ready/stop/expiry until pruned)"
if [ "$BIG_PEERS" -gt 0 ]; then
    echo
    echo "lookups among $BIG_PEERS broadcasting peers (median round of $ROUNDS; target p99 < 5 ms):"
    fmt='%-44s | %10s | %8s | %8s | %10s | %8s\n'
    # shellcheck disable=SC2059
    printf "$fmt" scenario "req/s" "p50 ms" "p99 ms" "CPU us/req" "p99 max"
    # shellcheck disable=SC2059
    printf "$fmt" "$(load_dash 44)" "$(load_dash 10)" "$(load_dash 8)" "$(load_dash 8)" "$(load_dash 10)" "$(load_dash 8)"
    for server in "${BIG_SERVERS[@]}"; do
        case "$server" in mm-big) name="Matchmaker h$BIG_HTTP" ;; *) name="stdiscosrv h$HTTP" ;; esac
        for kind in par seq; do
            median_of "$server.lookup.$kind"
            worst=$(cut -d' ' -f3 "$T/runs/results.$server.lookup.$kind" | sort -g | tail -n 1)
            case "$kind" in par) what="$BIG_PARALLEL in flight" ;; seq) what="1 connection, sequential" ;; esac
            # shellcheck disable=SC2059
            printf "$fmt" "$name, $what" "$M_RPS" "$M_P50" "$M_P99" "$M_SRV" "$worst"
        done
    done
    echo "(stdiscosrv's leveldb: $DB_SIZE bytes on disk for $([ "$BIG_STD" = 1 ] && echo "$BIG_PEERS" || echo "$PEERS") devices)"
fi
echo
echo "ratio = Matchmaker / stdiscosrv req/s; std/mm = stdiscosrv CPU / Matchmaker CPU (above 1: Matchmaker cheaper)"
[ ! -f "$T/perf.report" ] || cat "$T/perf.report"
if [ "$FAILS" -ne 0 ]; then
    echo "FAILED: $FAILS unexpected answers or checks (see the log above)"
    exit 1
fi
echo "all requests answered as expected"
