# shellcheck shell=bash disable=SC2034
# Shared helpers for the load suites in tests/load/ (sourced, never run).
#
#   load_tmpdir                 makes $LOAD_TMP (/tmp/mmload.XXXX, short for
#                               unix sockets) and installs the EXIT trap that
#                               stops everything started here and removes it
#   load_free_port [TAKEN...]   prints a free loopback TCP port
#   load_start LOG CMD...       starts CMD in the background (stdout+stderr to
#                               LOG); its pid is in $LOAD_PID, stopped at exit
#   load_stop PID [SECS]        SIGTERM, then SIGKILL after SECS (default 10)
#   load_wait_http URL PID SECS [CURL_ARGS...]
#                               waits for 200 from URL while PID lives
#   load_stores_start           real PostgreSQL + Redis via deploy/local/stores.sh,
#                               schema via deploy/local/migrate.sh; sets
#                               $LOAD_PG_URL and $LOAD_REDIS_URL
#   load_summarize WALL CODE FILE...
#                               reads curl -w '%{http_code} %{time_total}'
#                               lines (CODE = the expected status); sets
#                               LOAD_OK LOAD_TOTAL LOAD_BAD LOAD_CODES
#                               LOAD_RPS (of CODE answers), LOAD_P50 LOAD_P99
#                               (ms, of CODE answers)
#   load_median V... | -        the median of the numbers (-: of stdin's lines)
#   load_now                    seconds since the epoch, microseconds
#   load_cpu_ticks PID...       CPU ticks used by PIDs and their children
#   load_children_ticks         LOAD_CHILD_TICKS: CPU ticks of this shell's
#                               finished children
#   load_us_per TICKS N         CPU microseconds per request of TICKS over N
#   load_thread_ticks PID       "TID TICKS" lines, one per thread of PID
#   load_thread_split BEFORE AFTER
#                               from two load_thread_ticks: each thread's
#                               share of the CPU used in between, largest
#                               first ("71/29"; threads under 1% left out)
#   load_build BIN...           the named binaries of $LOAD_BIN, built first
#                               when one is missing (or MMLOAD_MAKE=1)
#   load_server_cert DIR        DIR/server.{key,crt}: EC P-256, self-signed,
#                               for localhost and 127.0.0.1
#   load_client_cert DIR NAME EMAIL
#                               DIR/NAME.{key,crt}: a peer's self-signed EC
#                               P-256 certificate with EMAIL; sets
#                               LOAD_CERT_PEER_ID LOAD_CERT_FP LOAD_CERT_SHA1
#   load_start_tracker LOG THREADS
#                               mm-tracker on the stores; sets
#                               LOAD_TRACKER_PORT LOAD_TRACKER_PID
#   load_start_gateway LOG UPSTREAM_PORT THREADS CERT KEY
#                               mm-gateway in front of it, rate limit out of
#                               the way; sets LOAD_GW_PORT LOAD_GW_PID
#   load_store_pids             LOAD_PG_PID (postmaster) LOAD_REDIS_PID
#   load_tls_params PORT CA [CERT KEY]
#                               protocol, cipher and group a handshake gets
#   load_curl_start OUT PKI CLIENT PMAX URLS [CURL_ARGS...]
#                               one curl client in the background (pid in
#                               $LOAD_PID): the transfers of config file URLS
#                               with PKI/CLIENT.{crt,key}, PMAX at a time
#                               (1: one after another on one connection);
#                               '%{http_code} %{time_total}' lines to OUT.out,
#                               its stderr to OUT.err
#   load_machine                "N CPUs (model), kernel"
#   load_source                 the commit the sources are at, and how many
#                               files differ from it (the binaries are built
#                               from the working tree)
#   load_loadavg                the three load averages
#   load_dash N, load_ratio A B table helpers
#
# Knobs common to every suite: MMLOAD_KEEP=1 keeps the temporary directory
# (its path is printed), MM_BUILD_DIR picks the binaries (default build/).

LOAD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOAD_BIN=${MM_BUILD_DIR:-$LOAD_ROOT/build}/bin
LOAD_TMP=
LOAD_STORES=
LOAD_PID=
LOAD_PIDS=()
LOAD_PORTS=()

load_log()
{
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

load_die()
{
    load_log "FAIL: $*"
    exit 1
}

load_now()
{
    # bash >= 5: no fork
    echo "${EPOCHREALTIME/,/.}"
}

# --- processes and the temporary directory --------------------------------

load_alive()
{
    local pid=$1 stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    case "${stat##*) }" in Z* | X*) return 1 ;; esac
    return 0
}

load_start()
{
    local log=$1
    shift
    "$@" </dev/null >>"$log" 2>&1 &
    LOAD_PID=$!
    LOAD_PIDS+=("$LOAD_PID")
}

load_stop()
{
    local pid=$1 secs=${2:-10} i=0 p keep=()
    if kill -TERM "$pid" 2>/dev/null; then
        while load_alive "$pid"; do
            i=$((i + 1))
            if [ "$i" -ge $((secs * 10)) ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    wait "$pid" 2>/dev/null || true
    for p in "${LOAD_PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    LOAD_PIDS=("${keep[@]}")
}

load_cleanup()
{
    local rc=$? i f
    trap - EXIT INT TERM
    for ((i = ${#LOAD_PIDS[@]} - 1; i >= 0; i--)); do
        load_stop "${LOAD_PIDS[$i]}" 10
    done
    if [ -n "$LOAD_TMP" ] && [ -d "$LOAD_TMP" ]; then
        if [ "$rc" -ne 0 ]; then
            # what the servers said, for whoever reads a failed run
            for f in "$LOAD_TMP"/*.log "$LOAD_TMP"/*/*.log; do
                [ -s "$f" ] || continue
                case "$f" in */access.log) continue ;; esac
                echo "--- last lines of $f" >&2
                tail -n 15 "$f" >&2 || true
            done
        fi
        if [ -n "$LOAD_STORES" ]; then
            "$LOAD_ROOT/deploy/local/stores.sh" clean "$LOAD_STORES" >/dev/null 2>&1 || true
        fi
        if [ "${MMLOAD_KEEP:-0}" = 1 ]; then
            echo "kept $LOAD_TMP" >&2
        else
            rm -rf "$LOAD_TMP"
        fi
    fi
    exit "$rc"
}

load_tmpdir()
{
    LOAD_TMP=$(mktemp -d /tmp/mmload.XXXX)
    trap load_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# A port nothing listens on, from 20000-29999 (below Linux's ephemeral
# range, so no client socket of this run takes it meanwhile), not handed
# out before by this process.
load_free_port()
{
    local p i taken
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 10000))
        for taken in "${LOAD_PORTS[@]}"; do
            [ "$taken" != "$p" ] || continue 2
        done
        if ! (: </dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
            LOAD_PORTS+=("$p")
            echo "$p"
            return 0
        fi
    done
    load_die "no free port found"
}

# (LOAD_WAIT_CODE=204 load_wait_http ...: waits for that status instead)
load_wait_http()
{
    local url=$1 pid=$2 secs=$3 code i=0 want=${LOAD_WAIT_CODE:-200}
    shift 3
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null) || true
        [ "$code" = "$want" ] && return 0
        load_alive "$pid" || return 1
        i=$((i + 1))
        [ "$i" -lt $((secs * 10)) ] || return 1
        sleep 0.1
    done
}

# --- stores ------------------------------------------------------------------

load_stores_start()
{
    local stores=$LOAD_ROOT/deploy/local/stores.sh migrate=$LOAD_ROOT/deploy/local/migrate.sh
    [ -x "$stores" ] || load_die "$stores is missing"
    [ -x "$migrate" ] || load_die "$migrate is missing"
    LOAD_STORES=$LOAD_TMP/stores
    mkdir -p "$LOAD_STORES"
    LOAD_PG_URL=$("$stores" pg-start "$LOAD_STORES") || load_die "PostgreSQL did not start"
    LOAD_REDIS_URL=$("$stores" redis-start "$LOAD_STORES") || load_die "Redis did not start"
    "$migrate" "$LOAD_PG_URL" >"$LOAD_TMP/migrate.log" 2>&1 || {
        cat "$LOAD_TMP/migrate.log" >&2
        load_die "migrations failed"
    }
}

# --- numbers -------------------------------------------------------------------

load_summarize()
{
    local wall=$1 code=$2 line
    shift 2
    # one pass for the counts, one sort for the percentiles (CODE only)
    line=$(cat "$@" | awk -v wall="$wall" -v code="$code" '
        { n++; c[$1]++; if ($1 == code) ok++ }
        END {
            codes = ""
            for (k in c) codes = codes (codes == "" ? "" : ",") k "x" c[k]
            printf "%d %d %s %.1f\n", ok, n, (codes == "" ? "none" : codes), (wall > 0 ? ok / wall : 0)
        }')
    read -r LOAD_OK LOAD_TOTAL LOAD_CODES LOAD_RPS <<<"$line"
    LOAD_BAD=$((LOAD_TOTAL - LOAD_OK))
    line=$(cat "$@" | awk -v code="$code" '$1 == code { print $2 }' | sort -g | awk '
        { t[NR] = $1 }
        END {
            if (NR == 0) { print "- -"; exit }
            i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
            if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
            printf "%.2f %.2f\n", t[i50] * 1000, t[i99] * 1000
        }')
    read -r LOAD_P50 LOAD_P99 <<<"$line"
}

load_median()
{
    if [ "$*" = - ]; then cat; else printf '%s\n' "$@"; fi |
        sort -g | awk '{ v[NR] = $1 } END { printf "%.1f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- CPU time ---------------------------------------------------------------------

# load_cpu_ticks PID...: user+system clock ticks (getconf CLK_TCK a second)
# used so far by each PID, all its threads, and its live children (nginx's
# workers under its master), summed.
load_cpu_ticks()
{
    local pid kids all=()
    for pid in "$@"; do
        all+=("$pid")
        kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null) || true
        # shellcheck disable=SC2206
        all+=($kids)
    done
    for pid in "${all[@]}"; do
        cat "/proc/$pid/stat" 2>/dev/null || true
    done | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}

# load_children_ticks: sets LOAD_CHILD_TICKS to the user+system ticks of
# this shell's waited-for children so far (the second line of `times`), for
# the load generator's share. Not in a subshell: a fork starts at zero.
load_children_ticks()
{
    local f=$LOAD_TMP/.times
    times >"$f"
    LOAD_CHILD_TICKS=$(awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0
        for (i = 1; i <= NF; i++) { m = $i; sub(/s$/, "", m); split(m, p, "m"); t += p[1] * 60 + p[2] }
        printf "%d\n", t * hz + 0.5 }' "$f")
}

load_thread_ticks()
{
    local f
    for f in /proc/"$1"/task/*/stat; do
        cat "$f" 2>/dev/null || true
    done | awk '{ tid = $1; sub(/^.*\) /, ""); print tid, $12 + $13 }'
}

load_thread_split()
{
    printf '%s\n--\n%s\n' "$1" "$2" | awk '$0 == "--" { after = 1; next }
        !after { t0[$1] = $2; next }
        { d[$1] = $2 - t0[$1]; sum += d[$1] }
        END { for (k in d) if (sum > 0 && d[k] * 100 >= sum) print int(d[k] * 100 / sum + 0.5) }' |
        sort -rn | paste -sd/ -
}

load_us_per()
{
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f\n", t * 1e6 / hz / (n > 0 ? n : 1) }'
}

# --- binaries, certificates, Matchmaker services ---------------------------------

load_build()
{
    local b missing=() targets=()
    for b in "$@"; do
        [ -x "$LOAD_BIN/$b" ] || missing+=("$b")
    done
    if [ "${MMLOAD_MAKE:-0}" = 1 ] || [ "${#missing[@]}" -gt 0 ]; then
        # only what this suite runs: a service another change is halfway
        # through must not stop the measurement of the others
        [ -z "${MM_BUILD_DIR:-}" ] || load_die "missing in MM_BUILD_DIR=$MM_BUILD_DIR: ${missing[*]} (build it first)"
        for b in "$@"; do targets+=("build/bin/$b"); done
        load_log "building (make ${targets[*]})"
        make -C "$LOAD_ROOT" --no-print-directory -s "${targets[@]}" >&2 || load_die "make ${targets[*]} failed"
    fi
    for b in "$@"; do
        [ -x "$LOAD_BIN/$b" ] || load_die "$LOAD_BIN/$b is missing"
    done
}

load_server_cert()
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$1/server.key" -out "$1/server.crt" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1 || load_die "openssl: server certificate"
}

# Self-signed EC P-256 with an email, as peers make their own: peer_id is
# the SHA-256 of the DER SPKI, the fingerprint that of the DER certificate.
load_client_cert()
{
    local dir=$1 name=$2 email=$3
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$dir/$name.key" -out "$dir/$name.crt" -subj "/CN=load client $name" \
        -addext "subjectAltName=email:$email" >/dev/null 2>&1 || load_die "openssl: client certificate $name"
    LOAD_CERT_PEER_ID=$(openssl x509 -in "$dir/$name.crt" -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
    LOAD_CERT_FP=$(openssl x509 -in "$dir/$name.crt" -outform DER | sha256sum | cut -d' ' -f1)
    LOAD_CERT_SHA1=$(openssl x509 -in "$dir/$name.crt" -outform DER | sha1sum | cut -d' ' -f1)
}

load_start_tracker()
{
    local log=$1 threads=$2
    LOAD_TRACKER_PORT=$(load_free_port)
    load_start "$log" env \
        MM_TRACKER_LISTEN="127.0.0.1:$LOAD_TRACKER_PORT" MM_DATABASE_URL="$LOAD_PG_URL" MM_REDIS_URL="$LOAD_REDIS_URL" \
        MM_THREADS="$threads" MM_LOG_LEVEL=info "$LOAD_BIN/mm-tracker"
    LOAD_TRACKER_PID=$LOAD_PID
    load_wait_http "http://127.0.0.1:$LOAD_TRACKER_PORT/readyz" "$LOAD_TRACKER_PID" 30 ||
        load_die "mm-tracker did not become ready (log: $log)"
}

load_start_gateway()
{
    local log=$1 upstream=$2 threads=$3 cert=$4 key=$5 internal
    LOAD_GW_PORT=$(load_free_port)
    internal=$(load_free_port)
    load_start "$log" env \
        MM_GATEWAY_ADDR=127.0.0.1 MM_GATEWAY_PORT="$LOAD_GW_PORT" MM_GATEWAY_INTERNAL_LISTEN="127.0.0.1:$internal" \
        MM_TLS_CERT_FILE="$cert" MM_TLS_KEY_FILE="$key" \
        MM_TRACKER_URL="http://127.0.0.1:$upstream" MM_RATE_LIMIT=1000000 MM_RATE_BURST=1000000 \
        MM_THREADS="$threads" MM_LOG_LEVEL=info \
        "$LOAD_BIN/mm-gateway"
    LOAD_GW_PID=$LOAD_PID
    load_wait_http "http://127.0.0.1:$internal/readyz" "$LOAD_GW_PID" 30 || load_die "mm-gateway did not become ready (log: $log)"
}

load_store_pids()
{
    LOAD_PG_PID=$(head -n 1 "$LOAD_STORES/data/postmaster.pid")
    LOAD_REDIS_PID=$(cat "$LOAD_STORES/redis.pid")
}

load_tls_params()
{
    local port=$1 ca=$2 auth=()
    [ $# -lt 4 ] || auth=(-cert "$3" -key "$4")
    openssl s_client -connect "127.0.0.1:$port" -servername localhost "${auth[@]}" \
        -CAfile "$ca" -brief </dev/null 2>&1 |
        awk -F': ' '/^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 } /^Server Temp Key/ { k = $2 }
                    END { printf "%s %s %s\n", p, c, k }'
}

load_curl_start()
{
    local out=$1 pki=$2 client=$3 pmax=$4 urls=$5 parallel=()
    shift 5
    [ "$pmax" -le 1 ] || parallel=(--parallel --parallel-max "$pmax")
    curl "${parallel[@]}" --no-progress-meter -S --max-time 30 --cacert "$pki/server.crt" \
        --cert "$pki/$client.crt" --key "$pki/$client.key" \
        -w '%{http_code} %{time_total}\n' "$@" -K "$urls" >"$out.out" 2>"$out.err" &
    LOAD_PID=$!
}

load_machine()
{
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "$(nproc) CPUs (${cpu:-unknown}), $(uname -sr)"
}

load_source()
{
    local head dirty
    head=$(git -C "$LOAD_ROOT" rev-parse --short HEAD 2>/dev/null) || {
        echo "not a git checkout"
        return
    }
    dirty=$(git -C "$LOAD_ROOT" status --porcelain --untracked-files=no -- common services 2>/dev/null | wc -l)
    echo "commit $head$([ "$dirty" -eq 0 ] || echo " + uncommitted changes to $dirty files in common/ and services/")"
}

load_loadavg()
{
    cut -d' ' -f1-3 /proc/loadavg
}

load_dash()
{
    printf '%.0s-' $(seq "$1")
}

load_ratio()
{
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2fx", a / b; else print "-" }'
}
