#!/usr/bin/env bash
# Load suite: mm-gateway against nginx as the mutual-TLS front of mm-tracker's
# POST /register, in the same run, on loopback.
#
#   tests/load/gateway_vs_nginx.sh          (or: make bench)
#
# Everything is real and started here in a fresh /tmp/mmload.XXXX: PostgreSQL
# and Redis (deploy/local/stores.sh, schema by deploy/local/migrate.sh), one
# mm-tracker, and two fronts to it:
#   - mm-gateway (build/bin), MM_THREADS worker threads, rate limit out of
#     the way (MM_RATE_LIMIT/BURST = 1000000);
#   - nginx (Debian nginx-light) with as many workers, the same server
#     certificate, `ssl_verify_client optional_no_ca`, TLS 1.2/1.3, the same
#     cipher list, a keep-alive upstream to the same tracker, and the
#     identity headers the gateway sends (X-MM-Peer-Id, X-MM-Peer-Email,
#     X-MM-Cert-Fingerprint from `map`s on $ssl_client_fingerprint that this
#     script writes for its client certificates — nginx cannot hash a public
#     key; X-MM-Client-Addr $remote_addr:$remote_port; X-MM-Request-Id
#     $request_id), and 401 without a client certificate.
# Both write one access-log line per request to a file (the gateway its JSON
# log on stderr, nginx access_log), as they would in production.
#
# Before measuring, both fronts are checked to send the tracker the same
# identity: each against a header-echo upstream, then each client
# certificate registers through the gateway (201) and again through nginx
# (200, the same peer_id, email, fingerprint and registered_at).
#
# What is measured, with curl (one process per client certificate, each with
# --parallel, together MMLOAD_PARALLEL transfers in flight; ab -E the same
# way for new-conn-ab), every request but the *-front ones a re-registration
# of an already registered key (200 from the tracker, the same work behind
# both fronts):
#   new-conn     a new TCP connection and full TLS handshake per request
#                (curl: HTTP/1.1, Connection: close, --no-sessionid)
#   new-conn-ab  the same with ab -E (HTTP/1.0, no keep-alive): ab spends a
#                third of curl's CPU on a handshake, so more is left for the
#                servers; skipped when ab (Debian apache2-utils) is missing
#   h2-ka        HTTP/2, each client multiplexing on one connection
#   h1-ka        HTTP/1.1 keep-alive, MMLOAD_PARALLEL connections
#   h2-front, h1-front
#                keep-alive to a path neither front routes (404 JSON from
#                the front itself): the fronts' own cost, no tracker
# nginx's access log confirms one connection per request and no resumption
# in the new-conn scenarios. req/s = expected answers / wall time of the
# whole batch; p50/p99 from curl's time_total (ab: its -g ttime) of each;
# CPU microseconds per request of the front, of the tracker + PostgreSQL
# and of the clients, from /proc. Rounds alternate the fronts (odd rounds
# gateway first, even rounds nginx first); the table shows each front's
# median round. The clients compete with the servers for the same CPUs, and
# on a shared machine with whatever else runs (the load average is shown):
# the absolute numbers are a floor, the ratios are the figures.
#
# Knobs (environment):
#   MMLOAD_ROUNDS=3             rounds per scenario and front
#   MMLOAD_NEWCONN_REQUESTS=3000
#   MMLOAD_KEEPALIVE_REQUESTS=20000
#   MMLOAD_FRONT_REQUESTS=50000 (h2-front, h1-front)
#   MMLOAD_WARMUP=300           requests per scenario and front before round 1
#   MMLOAD_PARALLEL=32          transfers in flight, over all clients
#   MMLOAD_CLIENTS=2            client processes, curl or ab (each with its own
#                               certificate, MMLOAD_PARALLEL/CLIENTS in flight)
#   MMLOAD_THREADS=2            gateway MM_THREADS = nginx worker_processes
#   MMLOAD_TRACKER_THREADS=2    tracker MM_THREADS
#   MMLOAD_SCENARIOS="new-conn new-conn-ab h2-ka h1-ka h2-front h1-front"
#                               (new-conn-ab only when ab is installed:
#                               Debian apache2-utils)
#   MMLOAD_MAKE=1               build mm-gateway and mm-tracker first
#                               (default: only when one is missing)
#   MMLOAD_KEEP=1, MM_BUILD_DIR, NGINX=/usr/sbin/nginx
#
# Exit status: 0 when measured (whatever the ratios), 1 when a server did not
# start or crashed, or any request got an answer other than the expected one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

ROUNDS=${MMLOAD_ROUNDS:-3}
NEWCONN_N=${MMLOAD_NEWCONN_REQUESTS:-3000}
KA_N=${MMLOAD_KEEPALIVE_REQUESTS:-20000}
FRONT_N=${MMLOAD_FRONT_REQUESTS:-50000}
WARMUP=${MMLOAD_WARMUP:-300}
PARALLEL=${MMLOAD_PARALLEL:-32}
CLIENTS=${MMLOAD_CLIENTS:-2}
THREADS=${MMLOAD_THREADS:-2}
TRACKER_THREADS=${MMLOAD_TRACKER_THREADS:-2}
ALL_SCENARIOS="new-conn new-conn-ab h2-ka h1-ka h2-front h1-front"
SCENARIOS=${MMLOAD_SCENARIOS:-$ALL_SCENARIOS}
NGINX=${NGINX:-/usr/sbin/nginx}
PY=/usr/bin/python3
FRONTS=(gateway nginx)

for v in ROUNDS NEWCONN_N KA_N FRONT_N PARALLEL CLIENTS THREADS TRACKER_THREADS; do
    case "${!v}" in '' | *[!0-9]* | 0) load_die "$v must be a positive integer (got '${!v}')" ;; esac
done
case "$WARMUP" in '' | *[!0-9]*) load_die "MMLOAD_WARMUP must be a number" ;; esac
[ "$CLIENTS" -le "$PARALLEL" ] || load_die "MMLOAD_CLIENTS ($CLIENTS) must not exceed MMLOAD_PARALLEL ($PARALLEL)"
for s in $SCENARIOS; do
    case " $ALL_SCENARIOS " in *" $s "*) ;; *) load_die "unknown scenario '$s' (one of: $ALL_SCENARIOS)" ;; esac
done
if ! command -v ab >/dev/null && [[ " $SCENARIOS " == *" new-conn-ab "* ]]; then
    [ -z "${MMLOAD_SCENARIOS:-}" ] || load_die "new-conn-ab needs ab: apt-get install apache2-utils"
    load_log "ab not installed (Debian apache2-utils): skipping new-conn-ab"
    kept=
    for s in $SCENARIOS; do [ "$s" = new-conn-ab ] || kept+="$s "; done
    SCENARIOS=$kept
fi
[ -x "$NGINX" ] || load_die "$NGINX not found: apt-get install nginx-light (deploy/local/deps.sh)"
[ -x "$PY" ] || load_die "$PY not found"
command -v openssl >/dev/null || load_die "openssl not found"
curl --help all 2>/dev/null | grep -q -- '--parallel-max' || load_die "this curl has no --parallel-max (7.66 or later needed)"

# --- binaries ---------------------------------------------------------------

load_build mm-gateway mm-tracker

load_tmpdir
T=$LOAD_TMP
mkdir -p "$T/pki" "$T/runs"
FAILS=0

# --- certificates -------------------------------------------------------------

# The server's: one EC P-256 key and certificate for both fronts.
load_server_cert "$T/pki"

# The clients': self-signed EC P-256 with an email, as peers make their own.
# For each: peer_id (SHA-256 of the DER SPKI), fingerprint (SHA-256 of the
# DER certificate) and nginx's $ssl_client_fingerprint (SHA-1 of the same).
PEER_IDS=()
FPS=()
SHA1S=()
EMAILS=()
for ((i = 1; i <= CLIENTS; i++)); do
    email="load$i@bench.example"
    load_client_cert "$T/pki" "c$i" "$email"
    PEER_IDS[i]=$LOAD_CERT_PEER_ID
    FPS[i]=$LOAD_CERT_FP
    SHA1S[i]=$LOAD_CERT_SHA1
    EMAILS[i]=$email
    cat "$T/pki/c$i.crt" "$T/pki/c$i.key" >"$T/pki/c$i.pem" # for ab -E
done
echo '{}' >"$T/body.json"
AB_VERSION=
if command -v ab >/dev/null; then AB_VERSION="ab $(ab -V 2>/dev/null | awk '/Version/ { print $5; exit }' | tr -d ,)"; fi

# --- servers ------------------------------------------------------------------

# start_gateway NAME UPSTREAM_PORT: sets GW_PORT GW_PID
start_gateway()
{
    load_start_gateway "$T/$1.log" "$2" "$THREADS" "$T/pki/server.crt" "$T/pki/server.key"
    GW_PORT=$LOAD_GW_PORT GW_PID=$LOAD_GW_PID
}

# start_nginx NAME UPSTREAM_PORT: sets NG_PORT NG_PID; files in $T/NAME/
start_nginx()
{
    local name=$1 upstream=$2 d=$T/$1 i
    NG_PORT=$(load_free_port)
    mkdir -p "$d/tmp"
    {
        echo "# written by tests/load/gateway_vs_nginx.sh"
        echo "daemon off;"
        echo "master_process on;"
        echo "worker_processes $THREADS;"
        echo "pid $d/nginx.pid;"
        echo "error_log $d/error.log warn;"
        # as root, workers would be nobody, who cannot enter the 0700 temp dir
        if [ "$(id -u)" -eq 0 ]; then echo "user root root;"; fi
        cat <<EOF
events {
    worker_connections 4096;
}
http {
    default_type application/json;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    # one unbuffered line per request, like the gateway's access log;
    # the connection fields let the script check what curl did
    log_format mmload '\$connection \$connection_requests \$ssl_session_reused \$ssl_protocol \$server_protocol \$status \$request_time';
    access_log $d/access.log mmload;
    # like h2o: no cap on requests per connection
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    # nginx cannot hash a public key: the script hashes its client certificates
    map \$ssl_client_fingerprint \$mm_peer_id {
        default "";
EOF
        for ((i = 1; i <= CLIENTS; i++)); do echo "        ${SHA1S[i]} ${PEER_IDS[i]};"; done
        cat <<EOF
    }
    map \$ssl_client_fingerprint \$mm_peer_email {
        default "";
EOF
        for ((i = 1; i <= CLIENTS; i++)); do echo "        ${SHA1S[i]} ${EMAILS[i]};"; done
        cat <<EOF
    }
    map \$ssl_client_fingerprint \$mm_cert_fingerprint {
        default "";
EOF
        for ((i = 1; i <= CLIENTS; i++)); do echo "        ${SHA1S[i]} ${FPS[i]};"; done
        cat <<EOF
    }

    upstream mm_tracker {
        server 127.0.0.1:$upstream;
        keepalive 32;
    }

    server {
        listen 127.0.0.1:$NG_PORT ssl http2;
        ssl_certificate $T/pki/server.crt;
        ssl_certificate_key $T/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_prefer_server_ciphers on;
        ssl_verify_client optional_no_ca;

        location = /mmload-ready {
            return 200 '{}';
        }
        location /api/relay/ {
            if (\$ssl_client_verify = NONE) {
                return 401 '{"error":{"code":"client_certificate_required","message":"send a client certificate"}}';
            }
            if (\$mm_peer_id = "") {
                return 401 '{"error":{"code":"client_certificate_unsupported","message":"not a certificate of this run"}}';
            }
            proxy_pass http://mm_tracker/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-MM-Peer-Id \$mm_peer_id;
            proxy_set_header X-MM-Peer-Email \$mm_peer_email;
            proxy_set_header X-MM-Cert-Fingerprint \$mm_cert_fingerprint;
            proxy_set_header X-MM-Client-Addr \$remote_addr:\$remote_port;
            proxy_set_header X-MM-Request-Id \$request_id;
            proxy_set_header X-Forwarded-For "";
        }
        location / {
            return 404 '{"error":{"code":"not_found","message":"no such endpoint"}}';
        }
    }
}
EOF
    } >"$d/nginx.conf"
    "$NGINX" -t -q -c "$d/nginx.conf" -p "$d" 2>"$d/configtest.log" || {
        cat "$d/configtest.log" >&2
        load_die "nginx rejects $d/nginx.conf"
    }
    load_start "$d/stderr.log" "$NGINX" -c "$d/nginx.conf" -p "$d"
    NG_PID=$LOAD_PID
    load_wait_http "https://127.0.0.1:$NG_PORT/mmload-ready" "$NG_PID" 30 --cacert "$T/pki/server.crt" ||
        load_die "$name did not start (logs: $d/error.log, $d/stderr.log)"
}

# post FRONT_PORT CLIENT [CURL_ARGS...]: one register request; prints "CODE BODY"
post()
{
    local port=$1 c=$2
    shift 2
    curl -s --cacert "$T/pki/server.crt" --cert "$T/pki/c$c.crt" --key "$T/pki/c$c.key" \
        -H 'content-type: application/json' -d '{}' -w ' %{http_code}' "$@" \
        "https://127.0.0.1:$port/api/relay/register" || true
}

# tls_params PORT: what the handshake settles on (protocol, cipher, group)
tls_params()
{
    load_tls_params "$1" "$T/pki/server.crt" "$T/pki/c1.crt" "$T/pki/c1.key"
}

LOADAVG_START=$(load_loadavg)
load_log "temporary directory $T"
load_log "starting PostgreSQL and Redis"
load_stores_start

# --- 1. identity headers, against a header-echo upstream -------------------------

cat >"$T/echo.py" <<'PY'
# Answers every request with the X-MM-* headers it got, as JSON.
import http.server, json, sys

class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-mm-")},
                          sort_keys=True).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
ECHO_PORT=$(load_free_port)
load_start "$T/echo.log" "$PY" "$T/echo.py" "$ECHO_PORT"
ECHO_PID=$LOAD_PID
load_wait_http "http://127.0.0.1:$ECHO_PORT/" "$ECHO_PID" 10 || load_die "the header-echo upstream did not start"
start_gateway gateway-echo "$ECHO_PORT"
start_nginx nginx-echo "$ECHO_PORT"
load_log "identity headers: one request through each front to a header-echo upstream (a spoofed X-MM-Peer-Id sent)"
gw_echo=$(post "$GW_PORT" 1 -H 'X-MM-Peer-Id: spoofed')
ng_echo=$(post "$NG_PORT" 1 -H 'X-MM-Peer-Id: spoofed')
"$PY" - "$gw_echo" "$ng_echo" "${PEER_IDS[1]}" "${EMAILS[1]}" "${FPS[1]}" <<'PY' || load_die "the fronts do not send the same identity headers"
import json, re, sys
gw, ng, peer_id, email, fp = sys.argv[1:]
want = {"x-mm-peer-id": peer_id, "x-mm-peer-email": email, "x-mm-cert-fingerprint": fp,
        "x-mm-client-addr": re.compile(r"127\.0\.0\.1:[0-9]{1,5}"), "x-mm-request-id": re.compile(r"[0-9a-f]{32}")}
ok = True
for name, raw in (("mm-gateway", gw), ("nginx", ng)):
    body, _, code = raw.rpartition(" ")
    if code != "200":
        print(f"  {name}: HTTP {code} {body}")
        ok = False
        continue
    got = json.loads(body)
    for h in sorted(set(want) | set(got)):
        w, v = want.get(h), got.get(h)
        good = (w.fullmatch(v or "") is not None) if isinstance(w, re.Pattern) else (v == w)
        ok &= good
        print(f"  {name:10} {h:22} {v!s:66} {'ok' if good else 'WRONG'}")
sys.exit(0 if ok else 1)
PY
load_stop "$NG_PID"
load_stop "$GW_PID"
load_stop "$ECHO_PID"

# --- 2. the real thing: tracker, gateway, nginx ------------------------------------

load_start_tracker "$T/tracker.log" "$TRACKER_THREADS"
TRACKER_PORT=$LOAD_TRACKER_PORT TRACKER_PID=$LOAD_TRACKER_PID
start_gateway gateway "$TRACKER_PORT"
GATEWAY_PORT=$GW_PORT GATEWAY_PID=$GW_PID
start_nginx nginx "$TRACKER_PORT"
NGINX_PORT=$NG_PORT NGINX_PID=$NG_PID
declare -A PORT=([gateway]=$GATEWAY_PORT [nginx]=$NGINX_PORT)
declare -A PID=([gateway]=$GATEWAY_PID [nginx]=$NGINX_PID)

# Each client registers once through the gateway (201), then through nginx
# and the gateway again (200): the tracker must see the same peer from both.
load_log "registration: each client certificate once through each front"
for ((i = 1; i <= CLIENTS; i++)); do
    a=$(post "$GATEWAY_PORT" "$i")
    b=$(post "$NGINX_PORT" "$i")
    c=$(post "$GATEWAY_PORT" "$i")
    "$PY" - "$a" "$b" "$c" "${PEER_IDS[i]}" "${EMAILS[i]}" "${FPS[i]}" <<'PY' || load_die "client $i: the fronts do not register the same peer"
import json, sys
first, via_nginx, again, peer_id, email, fp = sys.argv[1:]
ok = True
seen = []
for name, raw, want in (("gateway", first, "201"), ("nginx", via_nginx, "200"), ("gateway", again, "200")):
    body, _, code = raw.rpartition(" ")
    try:
        rec = json.loads(body)
    except ValueError:
        rec = {}
    good = code == want and rec.get("peer_id") == peer_id and rec.get("email") == email and rec.get("fingerprint") == fp
    seen.append((rec.get("peer_id"), rec.get("email"), rec.get("fingerprint"), rec.get("registered_at")))
    ok &= good
    print(f"  {name:8} HTTP {code} (want {want}) peer_id={rec.get('peer_id')} email={rec.get('email')} "
          f"{'ok' if good else 'WRONG: ' + body}")
if len(set(seen)) != 1:
    print("  the three answers differ")
    ok = False
sys.exit(0 if ok else 1)
PY
done

GW_TLS=$(tls_params "$GATEWAY_PORT")
NG_TLS=$(tls_params "$NGINX_PORT")

# --- 3. measurements -------------------------------------------------------------------

# A curl config file with N requests to PATH on FRONT, so curl does not
# parse a huge command line. Each URL has its own output.
urls_file()
{
    local front=$1 n=$2 path=$3 f
    f=$T/runs/urls.$front.$n.${path//\//_}
    if [ ! -f "$f" ]; then
        awk -v n="$n" -v url="https://127.0.0.1:${PORT[$front]}$path" \
            'BEGIN { for (i = 0; i < n; i++) printf "url = \"%s\"\noutput = \"/dev/null\"\n", url }' >"$f"
    fi
    echo "$f"
}

# The scenarios: curl options (or "ab"), number of requests, path, the
# answer expected, the title and the target ratio.
scenario()
{
    local register=/api/relay/register front=/mmload-not-routed
    case "$1" in
    new-conn) SC_ARGS="--http1.1 --no-sessionid --parallel-immediate -H Connection:close" SC_N=$NEWCONN_N SC_PATH=$register SC_CODE=200 \
        SC_TITLE="new mTLS connection per request, curl" SC_TARGET=1.3x ;;
    new-conn-ab) SC_ARGS=ab SC_N=$NEWCONN_N SC_PATH=$register SC_CODE=200 \
        SC_TITLE="new mTLS connection per request, ab -E" SC_TARGET=1.3x ;;
    h2-ka) SC_ARGS="--http2" SC_N=$KA_N SC_PATH=$register SC_CODE=200 \
        SC_TITLE="keep-alive HTTP/2 (multiplexed)" SC_TARGET=1.5x ;;
    h1-ka) SC_ARGS="--http1.1 --parallel-immediate" SC_N=$KA_N SC_PATH=$register SC_CODE=200 \
        SC_TITLE="keep-alive HTTP/1.1" SC_TARGET=1.5x ;;
    h2-front) SC_ARGS="--http2" SC_N=$FRONT_N SC_PATH=$front SC_CODE=404 \
        SC_TITLE="front alone: keep-alive HTTP/2, 404 JSON" SC_TARGET=info ;;
    h1-front) SC_ARGS="--http1.1 --parallel-immediate" SC_N=$FRONT_N SC_PATH=$front SC_CODE=404 \
        SC_TITLE="front alone: keep-alive HTTP/1.1, 404 JSON" SC_TARGET=info ;;
    esac
}

declare -A RPS P50 P99 CPUF CPUB CPUC ROUND_RPS
HZ=$(getconf CLK_TCK)
load_store_pids
PG_PID=$LOAD_PG_PID

# run FRONT SCENARIO N TAG: N requests over CLIENTS processes of curl (or
# ab); sets the LOAD_* results of load_summarize and CPU_FRONT, CPU_BACK,
# CPU_CLIENT (CPU microseconds per request).
run()
{
    local front=$1 scn=$2 n=$3 tag=$4 i k per pmax t0 t1 wall logn=0 pids=() outs=() urls=() rc=0 args=()
    local alog=$T/nginx/access.log f0 f1 b0 b1 c0 c1 url
    scenario "$scn"
    [ "$SC_ARGS" = ab ] || read -r -a args <<<"$SC_ARGS"
    url="https://127.0.0.1:${PORT[$front]}$SC_PATH"
    pmax=$((PARALLEL / CLIENTS))
    for ((i = 1; i <= CLIENTS; i++)); do
        per[i]=$((n / CLIENTS + (i <= n % CLIENTS ? 1 : 0)))
        [ "$SC_ARGS" = ab ] || urls[i]=$(urls_file "$front" "${per[i]}" "$SC_PATH")
    done
    [ "$front" != nginx ] || logn=$(wc -l <"$alog")
    f0=$(load_cpu_ticks "${PID[$front]}")
    b0=$(load_cpu_ticks "$TRACKER_PID" "$PG_PID")
    load_children_ticks
    c0=$LOAD_CHILD_TICKS
    t0=$(load_now)
    for ((i = 1; i <= CLIENTS; i++)); do
        k=$T/runs/$tag.$front.$scn.c$i
        outs+=("$k")
        if [ "$SC_ARGS" = ab ]; then
            # HTTP/1.0 without keep-alive: one connection, one full handshake a request
            ab -q -n "${per[i]}" -c "$pmax" -s 30 -E "$T/pki/c$i.pem" -p "$T/body.json" -T application/json \
                -g "$k.tsv" "$url" >"$k.ab" 2>"$k.err" &
        else
            load_curl_start "$k" "$T/pki" "c$i" "$pmax" "${urls[i]}" \
                -H 'content-type: application/json' -d '{}' "${args[@]}"
        fi
        pids+=($!)
    done
    for k in "${pids[@]}"; do wait "$k" || rc=$?; done
    t1=$(load_now)
    load_children_ticks
    c1=$LOAD_CHILD_TICKS
    f1=$(load_cpu_ticks "${PID[$front]}")
    b1=$(load_cpu_ticks "$TRACKER_PID" "$PG_PID")
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
    if [ "$SC_ARGS" = ab ]; then
        # ab has no status per request: its -g times for the percentiles,
        # its counters for the answers (anything but 2xx is a failure)
        local good=0 abok
        for k in "${outs[@]}"; do
            read -r abok _ < <(awk -F': *' '/^Complete requests/ { c = $2 } /^Failed requests/ { f = $2 }
                /^Non-2xx responses/ { x = $2 } END { print c - f - x, f + x }' "$k.ab")
            good=$((good + abok))
            awk -F'\t' -v code="$SC_CODE" 'NR > 1 { print code, $5 / 1000 }' "$k.tsv" >"$k.out"
        done
        load_summarize "$wall" "$SC_CODE" "${outs[@]/%/.out}"
        LOAD_OK=$good
        LOAD_BAD=$((n - good))
        LOAD_CODES="${good}x2xx,$((n - good))xother"
        LOAD_RPS=$(awk -v n="$good" -v w="$wall" 'BEGIN { printf "%.1f", n / w }')
    else
        load_summarize "$wall" "$SC_CODE" "${outs[@]/%/.out}"
    fi
    load_alive "${PID[$front]}" || load_die "$front died during $scn (round $tag)"
    load_alive "$TRACKER_PID" || load_die "mm-tracker died during $scn (round $tag)"
    read -r CPU_FRONT CPU_BACK CPU_CLIENT < <(awk -v hz="$HZ" -v n="$LOAD_TOTAL" \
        -v f=$((f1 - f0)) -v b=$((b1 - b0)) -v c=$((c1 - c0)) \
        'BEGIN { u = 1e6 / hz / (n > 0 ? n : 1); printf "%.0f %.0f %.0f\n", f * u, b * u, c * u }')
    local extra=""
    if [ "$front" = nginx ]; then
        # nginx's own log says how many connections and resumptions it saw
        extra=$(tail -n +"$((logn + 1))" "$alog" | awk '{ c[$1] = 1; if ($3 == "r") r++; n++ }
            END { nc = 0; for (k in c) nc++; printf "nginx saw %d requests on %d connections, %d resumed", n, nc, r }')
        case "$scn" in
        new-conn*)
            if ! grep -q "saw $n requests on $n connections, 0 resumed" <<<"$extra"; then
                load_log "FAIL: $scn was supposed to open one fresh connection per request: $extra"
                FAILS=$((FAILS + 1))
            fi
            ;;
        esac
    fi
    if [ "$LOAD_BAD" -ne 0 ] || [ "$LOAD_TOTAL" -ne "$n" ]; then
        load_log "FAIL: $front $scn ($tag): $LOAD_OK of $n answered $SC_CODE (codes: $LOAD_CODES; exit $rc); the client said: $(cat "$T/runs/$tag.$front.$scn".c*.err | sort | uniq -c | head -n 3 | tr '\n' ' ')"
        FAILS=$((FAILS + n - LOAD_OK))
    fi
    load_log "$(printf '%-7s %-7s %-11s %5d req %6.2fs %7.1f req/s  p50/p99 %5s/%6s ms  CPU us/req front %4s tracker+pg %4s client %4s  %s' \
        "$tag" "$front" "$scn" "$LOAD_TOTAL" "$wall" "$LOAD_RPS" "$LOAD_P50" "$LOAD_P99" "$CPU_FRONT" "$CPU_BACK" "$CPU_CLIENT" "$extra")"
}

if [ "$WARMUP" -gt 0 ]; then
    load_log "warm-up: $WARMUP requests per scenario and front (not counted)"
    for scn in $SCENARIOS; do
        for front in "${FRONTS[@]}"; do
            run "$front" "$scn" "$WARMUP" warmup
        done
    done
fi

for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) -eq 1 ]; then order=(gateway nginx); else order=(nginx gateway); fi
    for scn in $SCENARIOS; do
        for front in "${order[@]}"; do
            scenario "$scn"
            run "$front" "$scn" "$SC_N" "round$r"
            ROUND_RPS[$front.$scn]+="$LOAD_RPS "
            echo "$LOAD_RPS $LOAD_P50 $LOAD_P99 $CPU_FRONT $CPU_BACK $CPU_CLIENT" >>"$T/runs/results.$front.$scn"
        done
    done
done

# Each front and scenario: the median req/s, the latencies of the round
# closest to it, and the median CPU time of each part over all rounds.
for scn in $SCENARIOS; do
    for front in "${FRONTS[@]}"; do
        f=$T/runs/results.$front.$scn
        RPS[$front.$scn]=$(cut -d' ' -f1 "$f" | load_median -)
        read -r "P50[$front.$scn]" "P99[$front.$scn]" < <(awk -v m="${RPS[$front.$scn]}" \
            '{ d = $1 - m; if (d < 0) d = -d; if (NR == 1 || d < best) { best = d; line = $2 " " $3 } } END { print line }' "$f")
        CPUF[$front.$scn]=$(cut -d' ' -f4 "$f" | load_median - | sed 's/\.0$//')
        CPUB[$front.$scn]=$(cut -d' ' -f5 "$f" | load_median - | sed 's/\.0$//')
        CPUC[$front.$scn]=$(cut -d' ' -f6 "$f" | load_median - | sed 's/\.0$//')
    done
done

# --- 4. the report ------------------------------------------------------------------------

echo
echo "== mm-gateway vs nginx: mutual TLS in front of mm-tracker POST /register =="
echo "date:        $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:     $(load_machine); load generator on the same CPUs"
echo "software:    $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(curl --version | head -n 1 | cut -d' ' -f1-2), $(openssl version | cut -d' ' -f1-2), mm-gateway + mm-tracker from $LOAD_BIN"
echo "source:      $(load_source); binaries from $LOAD_BIN"
echo "TLS:         gateway: $GW_TLS; nginx: $NG_TLS; server key EC P-256, client keys EC P-256 (self-signed)"
echo "servers:     gateway MM_THREADS=$THREADS, nginx worker_processes $THREADS, tracker MM_THREADS=$TRACKER_THREADS;"
echo "             real PostgreSQL 15 + Redis (unix sockets); nginx upstream keepalive 32; both log each request"
echo "request:     POST /api/relay/register '{}' by an already registered key -> 200 (INSERT ... ON CONFLICT + UPDATE)"
echo "load:        $CLIENTS client processes (one certificate each) x $((PARALLEL / CLIENTS)) requests in flight = $PARALLEL concurrent;"
echo "             $(curl --version | head -n 1 | cut -d' ' -f1-2) --parallel -K URL-list${AB_VERSION:+; $AB_VERSION -E for new-conn-ab}"
echo "             new-conn*: $NEWCONN_N requests, a TCP connection and full TLS handshake each (curl: HTTP/1.1,"
echo "               Connection: close, --no-sessionid; ab: HTTP/1.0), no resumption (checked in nginx's log)"
echo "             *-ka: $KA_N requests on reused connections (HTTP/2: one connection per client; HTTP/1.1: $PARALLEL)"
echo "             *-front: $FRONT_N requests to an unrouted path, 404 from the front itself: the fronts' own cost"
echo "rounds:      $ROUNDS per scenario and front, fronts alternating; median and best shown; warm-up $WARMUP"
echo "load avg:    $LOADAVG_START at the start, $(load_loadavg) at the end (other work on this machine)"
echo
echo "throughput, req/s (median round and best round of each front):"
fmt='%-44s | %10s | %10s | %6s | %10s | %10s | %6s | %6s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario "mm-gateway" "nginx" ratio "gw best" "nginx best" ratio target
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 44)" "$(load_dash 10)" "$(load_dash 10)" "$(load_dash 6)" "$(load_dash 10)" "$(load_dash 10)" "$(load_dash 6)" "$(load_dash 6)"
for scn in $SCENARIOS; do
    scenario "$scn"
    g=${RPS[gateway.$scn]} n=${RPS[nginx.$scn]}
    # shellcheck disable=SC2086
    gb=$(printf '%s\n' ${ROUND_RPS[gateway.$scn]} | sort -g | tail -n 1)
    # shellcheck disable=SC2086
    nb=$(printf '%s\n' ${ROUND_RPS[nginx.$scn]} | sort -g | tail -n 1)
    # shellcheck disable=SC2059
    printf "$fmt" "$SC_TITLE" "$g" "$n" "$(load_ratio "$g" "$n")" "$gb" "$nb" "$(load_ratio "$gb" "$nb")" "$SC_TARGET"
done
echo
echo "latency, ms (curl time_total, ab ttime; the round nearest the median):"
fmt='%-44s | %10s | %10s | %10s | %10s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario "gw p50" "gw p99" "nginx p50" "nginx p99"
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 44)" "$(load_dash 10)" "$(load_dash 10)" "$(load_dash 10)" "$(load_dash 10)"
for scn in $SCENARIOS; do
    scenario "$scn"
    # shellcheck disable=SC2059
    printf "$fmt" "$SC_TITLE" "${P50[gateway.$scn]}" "${P99[gateway.$scn]}" "${P50[nginx.$scn]}" "${P99[nginx.$scn]}"
done
echo
echo "CPU time per request, microseconds (median over the rounds; user+system from /proc; little moved by other load):"
fmt='%-44s | %10s | %10s | %8s | %17s | %17s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario "mm-gateway" "nginx" "nginx/gw" "tracker+pg gw/ng" "client gw/ng"
# shellcheck disable=SC2059
printf "$fmt" "$(load_dash 44)" "$(load_dash 10)" "$(load_dash 10)" "$(load_dash 8)" "$(load_dash 17)" "$(load_dash 17)"
for scn in $SCENARIOS; do
    scenario "$scn"
    g=${CPUF[gateway.$scn]} n=${CPUF[nginx.$scn]}
    # shellcheck disable=SC2059
    printf "$fmt" "$SC_TITLE" "$g" "$n" "$(load_ratio "$n" "$g")" \
        "${CPUB[gateway.$scn]} / ${CPUB[nginx.$scn]}" "${CPUC[gateway.$scn]} / ${CPUC[nginx.$scn]}"
done
echo
echo "each round (req/s):"
for scn in $SCENARIOS; do
    for front in "${FRONTS[@]}"; do
        printf '  %-11s %-10s %s\n' "$scn" "$front" "${ROUND_RPS[$front.$scn]}"
    done
done
echo
echo "ratio = mm-gateway / nginx (CPU: nginx / mm-gateway, above 1 = the gateway is cheaper); the floor is 1.0x,"
echo "the aim 1.3x (new connections) and 1.5x (keep-alive)."
if [ "$FAILS" -ne 0 ]; then
    echo "FAILED: $FAILS unexpected answers or checks (see the log above)"
    exit 1
fi
echo "all requests answered as expected"
