#!/usr/bin/env bash
# Benchmark (b) of "Signaling for hole punching": offer -> waiting inbox
# delivery latency, p50/p99, with 1,000 concurrent long-polls (target: p99
# < 50 ms on loopback).
#
# Real PostgreSQL + Redis (deploy/local/stores.sh), two mm-signal copies on
# them. 1,000 target identities are loaded straight into the stores (a
# peers row each and a live presence key, as a tracker `ready` would leave
# them), and each keeps a long-poll GET /inbox?wait=30 waiting; then offers
# go out at a steady rate, each to a target whose poll is waiting, and the
# client (tests/load/signal_latency.py) times each from just before the
# offer request is written to the moment the target's poll answer is read.
#
# Two runs:
#   1. direct, crossed: the long-polls wait on copy 2's internal listener and
#      the offers go to copy 1's, so every delivery crosses copies through
#      Redis pub/sub. mm-signal trusts the X-MM-* identity headers there
#      (they are what the gateway adds), so 1,000 identities need no
#      certificates. This is mm-signal's own latency.
#   2. through mm-gateway (TLS, a client certificate per identity, HTTP/1.1),
#      MMLOAD_SIGNAL_GW_POLLS identities (default 1000; 0 skips it): what a
#      client sees, gateway hop included; one copy behind one gateway.
#
# Knobs: MMLOAD_SIGNAL_POLLS (1000), MMLOAD_SIGNAL_OFFERS (1000 per run),
# MMLOAD_SIGNAL_RATE (offers/s, 100), MMLOAD_SIGNAL_GW_POLLS (1000),
# MMLOAD_SIGNAL_THREADS (mm-signal threads, 2), MMLOAD_KEEP=1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"

polls=${MMLOAD_SIGNAL_POLLS:-1000}
offers=${MMLOAD_SIGNAL_OFFERS:-1000}
rate=${MMLOAD_SIGNAL_RATE:-100}
gw_polls=${MMLOAD_SIGNAL_GW_POLLS:-1000}
threads=${MMLOAD_SIGNAL_THREADS:-2}
target_p99=50

load_build mm-signal mm-gateway mm-tracker
load_tmpdir
load_stores_start
redis_sock=${LOAD_REDIS_URL#unix:}
# every long-poll is a socket here, and twice that through the gateway
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((3 * polls + 200)) ] || load_die "ulimit -n $(ulimit -n) is too low for $polls long-polls"

# --- identities ------------------------------------------------------------

# load_identities FILE N: N random peer_ids -> FILE, each registered
# (peers row) and broadcasting (presence key, 1 h) as a `ready` leaves it.
register_and_broadcast()
{
    local ids=$1
    awk '{ printf "%s\tbench-%s@example.com\t%s\n", $1, substr($1, 1, 16), $1 }' "$ids" |
        psql "$LOAD_PG_URL" -X -q -v ON_ERROR_STOP=1 -c "COPY peers (peer_id, email, fingerprint) FROM STDIN" ||
        load_die "loading peers failed"
    awk -v now="$(date +%s%3N)" '{ printf "SET mm:presence:%s \"%s 127.0.0.1\" EX 3600\n", $1, now }' "$ids" |
        redis-cli -s "$redis_sock" >/dev/null || load_die "loading presence failed"
}

head -c $((32 * polls)) /dev/urandom | od -An -v -tx1 | tr -d ' \n' | fold -w 64 >"$LOAD_TMP/targets"
echo >>"$LOAD_TMP/targets"
offerer=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
register_and_broadcast "$LOAD_TMP/targets"
echo "$offerer" >"$LOAD_TMP/offerer"
register_and_broadcast "$LOAD_TMP/offerer"

# --- mm-signal x2 ------------------------------------------------------------

start_signal()
{
    local name=$1 port stun alt
    port=$(load_free_port)
    stun=$(load_free_port)
    alt=$(load_free_port)
    load_start "$LOAD_TMP/$name.log" env \
        MM_SIGNAL_LISTEN="127.0.0.1:$port" MM_DATABASE_URL="$LOAD_PG_URL" MM_REDIS_URL="$LOAD_REDIS_URL" \
        MM_STUN_ADDR=127.0.0.1 MM_STUN_PORT="$stun" MM_STUN_ALT_PORT="$alt" \
        MM_THREADS="$threads" MM_LOG_LEVEL=warn "$LOAD_BIN/mm-signal"
    load_wait_http "http://127.0.0.1:$port/readyz" "$LOAD_PID" 30 || load_die "$name did not become ready"
    SIG_PORT=$port
    SIG_PID=$LOAD_PID
}
start_signal mm-signal-1
sig1=$SIG_PORT
sig1_pid=$SIG_PID
start_signal mm-signal-2
sig2=$SIG_PORT
sig2_pid=$SIG_PID

echo
echo "Signaling: offer -> waiting inbox delivery latency"
echo "$(load_machine); $(load_source)"
echo "mm-signal: 2 copies x $threads threads, one Redis, one PostgreSQL, all on this machine with the client"
echo

# --- the runs -----------------------------------------------------------------------

# report NAME JSON_FILE CPU_TICKS: one block of the table, and the verdict
summary()
{
    local name=$1 file=$2 ticks=$3
    python3 - "$name" "$file" "$ticks" "$target_p99" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, path, ticks, target, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
r = json.load(open(path))
if "error" in r:
    print(f"{name}: FAILED: {r}")
    sys.exit(1)
d, o = r["delivery_ms"], r["offer_request_ms"]
print(f"{name}")
print(f"  long-polls waiting   {r['waiting_at_start']} at start, {r['waiting_at_end']} at end (set up in {r['setup_s']} s)")
print(f"  offers               {r['offers_ok']} ok / {r['offers_sent']} sent at {r['rate']:g}/s over {r['duration_s']} s;"
      f" delivered {r['delivered']}, undelivered {r['undelivered']}, poll errors {r['poll_error_count']}")
print(f"  delivery latency ms  p50 {d['p50']}  p90 {d['p90']}  p99 {d['p99']}  max {d['max']}  (offer written -> poll answer read)")
print(f"  offer request ms     p50 {o['p50']}  p99 {o['p99']}")
if r["offers_ok"]:
    print(f"  mm-signal CPU        {ticks * 1e6 / hz / r['offers_ok']:.0f} us per offer+delivery (both copies, idle polls included)")
ok = d["p99"] is not None and d["p99"] < target and r["undelivered"] == 0 and r["offers_failed"] == 0
print(f"  target p99 < {target:g} ms: {'met' if ok else 'MISSED'}")
sys.exit(0 if r["delivered"] and r["undelivered"] == 0 and r["offers_failed"] == 0 else 1)
PY
}

status=0
cpu0=$(load_cpu_ticks "$sig1_pid" "$sig2_pid")
load_log "run 1: $polls long-polls waiting on copy 2, $offers offers at $rate/s through copy 1"
python3 "$here/signal_latency.py" --direct "127.0.0.1:$sig1" --poll-direct "127.0.0.1:$sig2" \
    --targets "$LOAD_TMP/targets" --offerer "$offerer" \
    --metrics "http://127.0.0.1:$sig1/metrics" --metrics "http://127.0.0.1:$sig2/metrics" \
    --offers "$offers" --rate "$rate" >"$LOAD_TMP/run1.json" 2>"$LOAD_TMP/run1.err" || status=1
cpu1=$(load_cpu_ticks "$sig1_pid" "$sig2_pid")
[ -s "$LOAD_TMP/run1.json" ] || { cat "$LOAD_TMP/run1.err" >&2; load_die "run 1: no result"; }
summary "1. direct to mm-signal's internal listeners (X-MM-* headers, as the gateway sends them), crossed: $polls polls on copy 2, offers via copy 1" \
    "$LOAD_TMP/run1.json" $((cpu1 - cpu0)) || status=1

if [ "$gw_polls" -gt 0 ]; then
    echo
    load_log "run 2: $gw_polls client certificates"
    pki=$LOAD_TMP/pki
    mkdir -p "$pki"
    load_server_cert "$pki"
    # one EC P-256 key and self-signed certificate per identity, one per CPU at a time
    # shellcheck disable=SC2016 # expanded by the inner sh
    seq 0 $((gw_polls - 1)) | xargs -P "$(nproc)" -I{} sh -c '
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$1/t$2.key" \
            -out "$1/t$2.crt" -subj "/CN=t$2" -addext "subjectAltName=email:t$2@bench.example" >/dev/null 2>&1 &&
        openssl x509 -in "$1/t$2.crt" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64 >"$1/t$2.id"
    ' _ "$pki" {} || load_die "openssl: client certificates"
    for ((i = 0; i < gw_polls; i++)); do cat "$pki/t$i.id"; done >"$LOAD_TMP/gw_targets"
    load_client_cert "$pki" offerer offerer@bench.example
    echo "$LOAD_CERT_PEER_ID" >"$LOAD_TMP/gw_offerer"
    register_and_broadcast "$LOAD_TMP/gw_targets"
    psql "$LOAD_PG_URL" -X -q -c "INSERT INTO peers (peer_id, email, fingerprint) VALUES ('$LOAD_CERT_PEER_ID', 'offerer@bench.example', '$LOAD_CERT_FP')" ||
        load_die "registering the offerer failed"

    gw_port=$(load_free_port)
    gw_internal=$(load_free_port)
    load_start "$LOAD_TMP/mm-gateway.log" env \
        MM_GATEWAY_ADDR=127.0.0.1 MM_GATEWAY_PORT="$gw_port" MM_GATEWAY_INTERNAL_LISTEN="127.0.0.1:$gw_internal" \
        MM_TLS_CERT_FILE="$pki/server.crt" MM_TLS_KEY_FILE="$pki/server.key" \
        MM_TRACKER_URL= MM_BOOTSTRAP_URL= MM_ADMIN_URL= MM_SIGNAL_URL="http://127.0.0.1:$sig1" \
        MM_RATE_LIMIT=1000000 MM_RATE_BURST=1000000 MM_THREADS="$threads" MM_LOG_LEVEL=warn "$LOAD_BIN/mm-gateway"
    gw_pid=$LOAD_PID
    load_wait_http "http://127.0.0.1:$gw_internal/readyz" "$gw_pid" 30 || load_die "mm-gateway did not become ready"

    cpu0=$(load_cpu_ticks "$sig1_pid" "$sig2_pid")
    load_log "run 2: $gw_polls long-polls and $offers offers at $rate/s through mm-gateway -> copy 1"
    python3 "$here/signal_latency.py" --gateway "127.0.0.1:$gw_port" --pki "$pki" --targets "$LOAD_TMP/gw_targets" \
        --metrics "http://127.0.0.1:$sig1/metrics" --offers "$offers" --rate "$rate" \
        >"$LOAD_TMP/run2.json" 2>"$LOAD_TMP/run2.err" || status=1
    cpu1=$(load_cpu_ticks "$sig1_pid" "$sig2_pid")
    [ -s "$LOAD_TMP/run2.json" ] || { cat "$LOAD_TMP/run2.err" >&2; load_die "run 2: no result"; }
    summary "2. through mm-gateway (TLS 1.3, a client certificate per identity, HTTP/1.1): $gw_polls polls, one copy" \
        "$LOAD_TMP/run2.json" $((cpu1 - cpu0)) || status=1
fi
exit "$status"
