#!/usr/bin/env bash
# Load suite: GET /api/bootstrap/discover through mm-gateway with 100,000
# live bootstrap nodes (SPEC §3.2; target p99 < 5 ms).
#
#   tests/load/bench_bootstrap_discover.sh          (or: make bench)
#
# Everything is real and started here in a fresh /tmp/mmload.XXXX: PostgreSQL
# and Redis (deploy/local/stores.sh, schema by deploy/local/migrate.sh),
# mm-bootstrap and mm-gateway in front of it (rate limit out of the way).
# No tracker runs: the nodes are loaded straight into the stores as ready,
# heartbeat and register would leave them — PostgreSQL rows by COPY (peers,
# broadcasts, bootstrap_nodes), Redis by redis-cli --pipe (presence key and
# deadline, membership key, set member and deadline, each with a 1 h TTL;
# mm:epoch set, as a tracker would have). The clients' own peers rows go in
# too (discover needs a registered caller).
#
# The nodes are loaded in steps (MMLOAD_SIZES, default "1000 100000"), and
# each step is measured the same way, so the table shows that the cost does
# not grow with the number of nodes (the sample is O(limit): SRANDMEMBER,
# then a primary-key lookup of the few drawn). For limit=8 (the default) and
# limit=50 (the maximum), two measurements over HTTP/2 keep-alive:
#   latency     one curl client, one request at a time (MMLOAD_LATENCY_REQUESTS):
#               what a request costs end to end, without queueing
#   throughput  MMLOAD_CLIENTS curl clients with --parallel, MMLOAD_PARALLEL
#               transfers in flight in all (MMLOAD_REQUESTS): req/s, and the
#               latency under that load (queueing included)
# req/s = 200 answers / wall time of the batch, p50/p99 from curl's
# time_total of each request; CPU microseconds per request of the gateway,
# mm-bootstrap, Redis, PostgreSQL (postmaster and backends) and the curl
# clients, from /proc. The clients share the CPUs with the servers
# (and with whatever else runs: the load average is shown). Before
# measuring, one answer is checked: `limit` nodes, distinct, never the
# caller, each a loaded node with its email, gossip port and candidates.
#
# Knobs (environment):
#   MMLOAD_SIZES="1000 100000"   live nodes at each step
#   MMLOAD_REQUESTS=20000        requests per throughput measurement
#   MMLOAD_LATENCY_REQUESTS=3000 requests per latency measurement
#   MMLOAD_WARMUP=500            requests before each step's measurements
#   MMLOAD_PARALLEL=16           transfers in flight, over all clients
#   MMLOAD_CLIENTS=2             curl processes, each with its own certificate
#   MMLOAD_THREADS=2             gateway and mm-bootstrap MM_THREADS
#   MMLOAD_LIMITS="8 50"
#   MMLOAD_MAKE=1, MMLOAD_KEEP=1, MM_BUILD_DIR
#
# Exit status: 0 when measured (whatever the latencies), 1 when a server did
# not start or crashed, or any request got an answer other than 200 with the
# expected nodes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

SIZES=${MMLOAD_SIZES:-1000 100000}
REQUESTS=${MMLOAD_REQUESTS:-20000}
LAT_REQUESTS=${MMLOAD_LATENCY_REQUESTS:-3000}
WARMUP=${MMLOAD_WARMUP:-500}
PARALLEL=${MMLOAD_PARALLEL:-16}
CLIENTS=${MMLOAD_CLIENTS:-2}
THREADS=${MMLOAD_THREADS:-2}
LIMITS=${MMLOAD_LIMITS:-8 50}
GOSSIP_PORT=7946
TTL=3600

load_tmpdir
T=$LOAD_TMP
mkdir -p "$T/pki" "$T/data" "$T/runs"
load_build mm-bootstrap mm-gateway
load_log "machine: $(load_machine); load average $(load_loadavg)"
load_stores_start
load_log "stores: $LOAD_PG_URL, $LOAD_REDIS_URL"
REDIS_SOCK=${LOAD_REDIS_URL#unix:}

# --- 1. clients and services --------------------------------------------------

load_server_cert "$T/pki"
: >"$T/data/clients.tsv"
for ((i = 1; i <= CLIENTS; i++)); do
    load_client_cert "$T/pki" "c$i" "bench-client-$i@bench.example"
    printf '%s\t%s\t%s\n' "$LOAD_CERT_PEER_ID" "bench-client-$i@bench.example" "$LOAD_CERT_FP" >>"$T/data/clients.tsv"
    CLIENT_IDS[i]=$LOAD_CERT_PEER_ID
done
psql "$LOAD_PG_URL" -X -q -v ON_ERROR_STOP=1 -c "\\copy peers (peer_id, email, fingerprint) FROM '$T/data/clients.tsv'" ||
    load_die "could not register the clients"
redis-cli -s "$REDIS_SOCK" SET mm:epoch "$(date +%s%3N)" >/dev/null

BOOT_PORT=$(load_free_port)
load_start "$T/bootstrap.log" env \
    MM_BOOTSTRAP_LISTEN="127.0.0.1:$BOOT_PORT" MM_DATABASE_URL="$LOAD_PG_URL" MM_REDIS_URL="$LOAD_REDIS_URL" \
    MM_THREADS="$THREADS" MM_LOG_LEVEL=info "$LOAD_BIN/mm-bootstrap"
BOOT_PID=$LOAD_PID
load_wait_http "http://127.0.0.1:$BOOT_PORT/readyz" "$BOOT_PID" 30 || load_die "mm-bootstrap did not become ready"
# the tracker's port is one nobody listens on: only /api/bootstrap is used
MM_BOOTSTRAP_URL="http://127.0.0.1:$BOOT_PORT" \
    load_start_gateway "$T/gateway.log" "$(load_free_port)" "$THREADS" "$T/pki/server.crt" "$T/pki/server.key"
load_log "mm-bootstrap (pid $BOOT_PID) and mm-gateway (pid $LOAD_GW_PID, port $LOAD_GW_PORT), $THREADS threads each"

# --- 2. loading nodes -----------------------------------------------------------

LOADED=0

# load_nodes N: adds nodes LOADED+1..N (peer ids: SHA-256 of "mmload
# bootstrap node K"), PostgreSQL first (one transaction), then Redis (one
# pipe), as register leaves them: the row exists before the keys that make
# the node live.
load_nodes()
{
    local n=$1 t0 replies
    [ "$n" -gt "$LOADED" ] || return 0
    t0=$(load_now)
    python3 - "$((LOADED + 1))" "$n" "$T/data" "$GOSSIP_PORT" "$TTL" <<'EOF'
import hashlib, os, sys, time

first, last, d, gport, ttl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

now = int(time.time() * 1000)
ids, ips = [], []
with open(os.path.join(d, "peers.tsv"), "w") as peers, open(os.path.join(d, "broadcasts.tsv"), "w") as bc, \
        open(os.path.join(d, "nodes.tsv"), "w") as nodes:
    for k in range(first, last + 1):
        pid = hashlib.sha256(b"mmload bootstrap node %d" % k).hexdigest()
        ip = "198.18.%d.%d" % ((k >> 8) & 255, k & 255)  # RFC 2544 benchmarking range
        ids.append(pid)
        ips.append(ip)
        peers.write("%s\tnode%d@bench.example\t%s\n" % (pid, k, hashlib.sha256(b"fp %d" % k).hexdigest()))
        cands = ('[{"ip": "10.%d.%d.%d", "port": %d, "scope": "private", "source": "reported"}, '
                 '{"ip": "%s", "port": %d, "scope": "public", "source": "observed"}]'
                 % ((k >> 16) & 255, (k >> 8) & 255, k & 255, gport, ip, gport))
        bc.write("%s\t%d\t%s\t%s\n" % (pid, gport, cands, ip))
        nodes.write("%s\t%d\t%s:%d\n" % (pid, gport, ip, gport))
with open(os.path.join(d, "redis.resp"), "wb") as r:
    deadline = str(now + ttl * 1000)
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        for pid, ip in zip(chunk, ips[i:i + 1000]):
            r.write(resp("SET", "mm:presence:" + pid, "%d %s" % (now, ip), "EX", ttl))
            r.write(resp("SET", "mm:bootstrap:" + pid, "%d %s:%d" % (gport, ip, gport), "EX", ttl))
        r.write(resp("SADD", "mm:bootstrap:nodes", *chunk))
        r.write(resp("ZADD", "mm:presence:deadlines", *[x for pid in chunk for x in (deadline, pid)]))
        r.write(resp("ZADD", "mm:bootstrap:deadlines", *[x for pid in chunk for x in (deadline, pid)]))
EOF
    psql "$LOAD_PG_URL" -X -q -v ON_ERROR_STOP=1 <<SQL || load_die "COPY failed"
BEGIN;
\\copy peers (peer_id, email, fingerprint) FROM '$T/data/peers.tsv'
\\copy broadcasts (peer_id, port, candidates, observed_address) FROM '$T/data/broadcasts.tsv'
\\copy bootstrap_nodes (peer_id, gossip_port, reachable_address) FROM '$T/data/nodes.tsv'
COMMIT;
ANALYZE peers;
ANALYZE broadcasts;
ANALYZE bootstrap_nodes;
SQL
    replies=$(redis-cli -s "$REDIS_SOCK" --pipe <"$T/data/redis.resp" | awk '/errors: 0, replies:/ { print $NF }')
    [ -n "$replies" ] || load_die "redis-cli --pipe reported errors"
    LOADED=$n
    load_log "loaded $((n - ${2:-0})) nodes: $LOADED live ($(redis-cli -s "$REDIS_SOCK" SCARD mm:bootstrap:nodes) in the set)" \
        "in $(awk -v a="$t0" -v b="$(load_now)" 'BEGIN { printf "%.1f", b - a }') s"
}

# --- 3. measuring ------------------------------------------------------------------

urls_file()
{
    local n=$1 limit=$2 f=$T/runs/urls.$1.$2
    [ -f "$f" ] || awk -v n="$n" -v url="https://127.0.0.1:$LOAD_GW_PORT/api/bootstrap/discover?limit=$limit" \
        'BEGIN { for (i = 0; i < n; i++) printf "url = \"%s\"\noutput = \"/dev/null\"\n", url }' >"$f"
    echo "$f"
}

# One answer, checked: `limit` distinct loaded nodes, never the caller.
check_answer()
{
    local limit=$1 body
    body=$(curl -sS --max-time 5 --cacert "$T/pki/server.crt" --cert "$T/pki/c1.crt" --key "$T/pki/c1.key" \
        "https://127.0.0.1:$LOAD_GW_PORT/api/bootstrap/discover?limit=$limit") || load_die "discover failed"
    python3 - "$limit" "${CLIENT_IDS[1]}" "$GOSSIP_PORT" "$body" <<'EOF' || load_die "unexpected discover answer: ${body:0:300}"
import json, sys
limit, me, gport, body = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
nodes = body["nodes"]
assert len(nodes) == limit, len(nodes)
assert len({n["peer_id"] for n in nodes}) == limit and me not in {n["peer_id"] for n in nodes}
for n in nodes:
    assert set(n) == {"peer_id", "email", "gossip_port", "candidates"}, n
    assert n["email"].endswith("@bench.example") and n["gossip_port"] == gport, n
    assert len(n["candidates"]) == 2 and n["candidates"][0]["source"] == "observed", n
EOF
}

declare -A RPS P50 P99 LP50 LP99 CPU
FAILS=0
load_store_pids

# measure TAG N LIMIT CLIENTS INFLIGHT: N requests over CLIENTS curl
# processes, INFLIGHT at a time in all.
measure()
{
    local tag=$1 n=$2 limit=$3 clients=$4 inflight=$5 i per pmax t0 t1 wall outs=() pids=() k rc=0 c0 c1 p
    local -a before after
    pmax=$((inflight / clients))
    [ "$pmax" -ge 1 ] || pmax=1
    for p in "$LOAD_GW_PID" "$BOOT_PID" "$LOAD_REDIS_PID" "$LOAD_PG_PID"; do before+=("$(load_cpu_ticks "$p")"); done
    load_children_ticks
    c0=$LOAD_CHILD_TICKS
    t0=$(load_now)
    for ((i = 1; i <= clients; i++)); do
        per=$((n / clients + (i <= n % clients ? 1 : 0)))
        k=$T/runs/$tag.$limit.c$i
        outs+=("$k.out")
        load_curl_start "$k" "$T/pki" "c$i" "$pmax" "$(urls_file "$per" "$limit")" --http2
        pids+=("$LOAD_PID")
    done
    for k in "${pids[@]}"; do wait "$k" || rc=$?; done
    t1=$(load_now)
    load_children_ticks
    c1=$LOAD_CHILD_TICKS
    for p in "$LOAD_GW_PID" "$BOOT_PID" "$LOAD_REDIS_PID" "$LOAD_PG_PID"; do after+=("$(load_cpu_ticks "$p")"); done
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
    load_summarize "$wall" 200 "${outs[@]}"
    # CPU us per request: "total = gateway + bootstrap + redis + postgres; curl"
    LOAD_CPU=$(awk -v hz="$(getconf CLK_TCK)" -v n="$LOAD_TOTAL" -v g=$((after[0] - before[0])) -v b=$((after[1] - before[1])) \
        -v r=$((after[2] - before[2])) -v q=$((after[3] - before[3])) -v c=$((c1 - c0)) 'BEGIN {
            u = 1e6 / hz / (n > 0 ? n : 1)
            printf "%.0f = %.0f + %.0f + %.0f + %.0f; %.0f", (g + b + r + q) * u, g * u, b * u, r * u, q * u, c * u }')
    load_alive "$BOOT_PID" || load_die "mm-bootstrap died"
    load_alive "$LOAD_GW_PID" || load_die "mm-gateway died"
    if [ "$LOAD_BAD" -ne 0 ] || [ "$LOAD_TOTAL" -ne "$n" ]; then
        load_log "FAIL: $tag limit=$limit: $LOAD_OK of $n answered 200 (codes: $LOAD_CODES; curl exit $rc)"
        FAILS=$((FAILS + n - LOAD_OK))
    fi
    load_log "$(printf '%-18s limit=%-3s %2d in flight %6d req %6.2fs %8.1f req/s  p50/p99 %5s/%6s ms  CPU us/req %s' \
        "$tag" "$limit" "$inflight" "$LOAD_TOTAL" "$wall" "$LOAD_RPS" "$LOAD_P50" "$LOAD_P99" "$LOAD_CPU")"
}

for size in $SIZES; do
    load_nodes "$size" "$LOADED"
    for limit in $LIMITS; do
        check_answer "$limit"
    done
    [ "$WARMUP" -le 0 ] || measure warmup "$WARMUP" 8 "$CLIENTS" "$PARALLEL" >/dev/null 2>&1
    for limit in $LIMITS; do
        measure "$size latency" "$LAT_REQUESTS" "$limit" 1 1
        LP50[$size.$limit]=$LOAD_P50 LP99[$size.$limit]=$LOAD_P99
        measure "$size throughput" "$REQUESTS" "$limit" "$CLIENTS" "$PARALLEL"
        RPS[$size.$limit]=$LOAD_RPS P50[$size.$limit]=$LOAD_P50 P99[$size.$limit]=$LOAD_P99 CPU[$size.$limit]=$LOAD_CPU
    done
done

# --- 4. the table -------------------------------------------------------------------

echo
echo "GET /api/bootstrap/discover through mm-gateway (HTTP/2 keep-alive, mutual TLS)"
echo "machine: $(load_machine); load average $(load_loadavg); gateway and mm-bootstrap $THREADS threads each"
echo "latency: 1 request at a time; throughput: $PARALLEL in flight over $CLIENTS clients"
printf '%-11s %-6s | %-27s | %-31s\n' "" "" "latency (1 in flight)" "throughput ($PARALLEL in flight)"
printf '%-11s %-6s | %8s %8s %9s | %10s %9s %9s\n' "live nodes" limit "p50 ms" "p99 ms" "p99<5ms" "req/s" "p50 ms" "p99 ms"
printf '%s\n' "$(load_dash 80)"
for size in $SIZES; do
    for limit in $LIMITS; do
        printf '%-11s %-6s | %8s %8s %9s | %10s %9s %9s\n' "$size" "$limit" "${LP50[$size.$limit]}" "${LP99[$size.$limit]}" \
            "$(awk -v p="${LP99[$size.$limit]}" 'BEGIN { print (p < 5 ? "yes" : "NO") }')" \
            "${RPS[$size.$limit]}" "${P50[$size.$limit]}" "${P99[$size.$limit]}"
    done
done
echo
echo "CPU us per request at $PARALLEL in flight: total = gateway + mm-bootstrap + Redis + PostgreSQL; curl clients"
for size in $SIZES; do
    for limit in $LIMITS; do
        printf '%-11s %-6s   %s\n' "$size" "$limit" "${CPU[$size.$limit]}"
    done
done
echo
if [ "$FAILS" -ne 0 ]; then
    load_log "FAIL: $FAILS requests got an unexpected answer"
    exit 1
fi
