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

load_wait_http()
{
    local url=$1 pid=$2 secs=$3 code i=0
    shift 3
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null) || true
        [ "$code" = 200 ] && return 0
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
