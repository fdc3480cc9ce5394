#!/usr/bin/env bash
# Load suite: mm-signal's STUN Binding responder against coturn's
# turnserver in STUN-only mode, in the same run, on loopback, driven by the
# same UDP load generator (tests/load/stun_load.c).
#
#   tests/load/stun_vs_coturn.sh      (or: tests/load/run-all.sh coturn)
#
# Started here in a fresh /tmp/mmload.XXXX, both on 127.0.0.1:
#   - mm-signal from build/bin with MMLOAD_THREADS threads (default: one per
#     CPU, its own default), MM_STUN_ADDR as deployed (:: dual-stack, so it
#     also pays for learning each request's destination address), its
#     second port off, and its per-source-IP rate limit raised to
#     MMLOAD_STUN_RATE (1e9/s: every request of this suite comes from
#     127.0.0.1, so the real limit of 20/s would measure the limiter, not
#     the responder; the limiter still runs on every request). It gets no
#     Redis or PostgreSQL: the STUN responder needs neither (the signaling
#     API's readiness stays red, and it retries its stores in the background).
#   - turnserver (Debian coturn) --stun-only --no-cli --no-tls --no-dtls
#     -L 127.0.0.1 -p PORT, with -n (no configuration file), its SQLite
#     database (--db) and log (--log-file, --simple-log, --no-stdout-log)
#     in the temporary directory, otherwise its defaults (relay threads: one
#     per CPU; RFC 5780 answers with OTHER-ADDRESS and RESPONSE-ORIGIN).
#
# Measured: STUN Binding responses per second. stun_load keeps
# MMLOAD_WINDOW requests outstanding on each of MMLOAD_SOCKETS client
# sockets for MMLOAD_SECS seconds (28-byte requests with FINGERPRINT) and
# counts only valid responses: well-formed, a Binding success, the
# transaction id of a request still outstanding on that socket (once), and
# the socket's own address and port as the mapped address. Requests
# unanswered within 200 ms count as lost. Rounds alternate the order (odd
# rounds mm-signal first); the table shows every round, the medians, the
# ratio of the medians and the median of the rounds' ratios (each round's
# two runs are back to back, so that one is steadier when the machine is
# busy with something else). Also shown: the server's CPU time per response (from /proc), the
# steadier figure when the generator shares the machine's CPUs with the
# server, as it does here.
#
# Knobs: MMLOAD_ROUNDS=3 MMLOAD_SECS=5 MMLOAD_SOCKETS=16 MMLOAD_WINDOW=64
#        MMLOAD_THREADS=$(nproc) MMLOAD_STUN_RATE=1000000000 MMLOAD_STUN_ADDR=::
#        MMLOAD_KEEP=1 MM_BUILD_DIR TURNSERVER=/usr/bin/turnserver
# Target: mm-signal >= coturn (we aim for 2x). Exit 1 when a server does
# not start or dies, or mm-signal sends a single invalid response; the
# ratio itself is reported, not judged.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

ROUNDS=${MMLOAD_ROUNDS:-3}
SECS=${MMLOAD_SECS:-5}
SOCKETS=${MMLOAD_SOCKETS:-16}
WINDOW=${MMLOAD_WINDOW:-64}
THREADS=${MMLOAD_THREADS:-$(nproc)}
STUN_RATE=${MMLOAD_STUN_RATE:-1000000000}
STUN_ADDR=${MMLOAD_STUN_ADDR:-::}
TURNSERVER=${TURNSERVER:-/usr/bin/turnserver}
GEN=${MM_BUILD_DIR:-$LOAD_ROOT/build}/tests/stun_load

[ -x "$TURNSERVER" ] || load_die "$TURNSERVER is missing: apt-get install coturn (deploy/local/packages.txt)"
load_tmpdir
load_build mm-signal
if [ ! -x "$GEN" ] || [ "${MMLOAD_MAKE:-0}" = 1 ]; then
    [ -z "${MM_BUILD_DIR:-}" ] || load_die "missing in MM_BUILD_DIR=$MM_BUILD_DIR: tests/stun_load (build it first)"
    make -C "$LOAD_ROOT" --no-print-directory -s build/tests/stun_load >&2 || load_die "make build/tests/stun_load failed"
fi

# A UDP port nothing holds (ss from iproute2), from 20000-29999 like
# load_free_port, not handed out before.
udp_free_port()
{
    local p i taken
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 10000))
        for taken in "${LOAD_PORTS[@]}"; do
            [ "$taken" != "$p" ] || continue 2
        done
        # coturn also takes p+1 for RFC 5780: keep both free
        if [ -z "$(ss -Hunl "( sport = :$p or sport = :$((p + 1)) )")" ]; then
            LOAD_PORTS+=("$p" "$((p + 1))")
            echo "$p"
            return 0
        fi
    done
    load_die "no free UDP port found"
}

# --- servers -------------------------------------------------------------------

MM_PORT=$(udp_free_port)
MM_HTTP=$(load_free_port)
load_start "$LOAD_TMP/mm-signal.log" env \
    MM_SIGNAL_LISTEN="127.0.0.1:$MM_HTTP" MM_STUN_PORT="$MM_PORT" MM_STUN_ALT_PORT=0 MM_STUN_ADDR="$STUN_ADDR" \
    MM_STUN_RATE="$STUN_RATE" MM_STUN_BURST="$STUN_RATE" MM_THREADS="$THREADS" MM_LOG_LEVEL=warn \
    MM_REDIS_URL="unix:$LOAD_TMP/no-redis.sock" MM_DATABASE_URL="host=$LOAD_TMP/no-postgres" \
    "$LOAD_BIN/mm-signal"
MM_PID=$LOAD_PID

CT_PORT=$(udp_free_port)
load_start "$LOAD_TMP/turnserver.out" "$TURNSERVER" -n --stun-only --no-cli --no-tls --no-dtls \
    -L 127.0.0.1 -p "$CT_PORT" --db "$LOAD_TMP/turndb" --log-file "$LOAD_TMP/turnserver.log" --simple-log \
    --no-stdout-log --pidfile "$LOAD_TMP/turnserver.pid"
CT_PID=$LOAD_PID

"$GEN" -p 10 127.0.0.1 "$MM_PORT" || load_die "mm-signal does not answer STUN on 127.0.0.1:$MM_PORT (log: $LOAD_TMP/mm-signal.log)"
"$GEN" -p 10 127.0.0.1 "$CT_PORT" || load_die "turnserver does not answer STUN on 127.0.0.1:$CT_PORT (log: $LOAD_TMP/turnserver.log)"
load_log "mm-signal (pid $MM_PID, $THREADS threads) on UDP $MM_PORT, turnserver $("$TURNSERVER" --version 2>/dev/null | head -n 1) (pid $CT_PID) on UDP $CT_PORT"

# --- rounds ---------------------------------------------------------------------

hz=$(getconf CLK_TCK)
declare -A RPS CPU LAST
results=()
ratios=()

# run NAME PORT PID: one measurement; appends a table row
run()
{
    local name=$1 port=$2 pid=$3 t0 t1 out sent valid invalid lost rps us
    load_alive "$pid" || load_die "$name died (see $LOAD_TMP)"
    t0=$(load_cpu_ticks "$pid")
    out=$("$GEN" -c "$SOCKETS" -w "$WINDOW" -d "$SECS" 127.0.0.1 "$port") || load_die "stun_load against $name failed"
    t1=$(load_cpu_ticks "$pid")
    load_alive "$pid" || load_die "$name died during the round (see $LOAD_TMP)"
    sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$out")
    valid=$(sed -n 's/.* valid=\([0-9]*\).*/\1/p' <<<"$out")
    invalid=$(sed -n 's/.* invalid=\([0-9]*\).*/\1/p' <<<"$out")
    lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$out")
    rps=$(sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$out")
    us=$(awk -v t=$((t1 - t0)) -v n="$valid" -v hz="$hz" 'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }')
    [ "$name" != mm-signal ] || [ "$invalid" = 0 ] || load_die "mm-signal sent $invalid invalid responses"
    RPS[$name]+="$rps "
    CPU[$name]+="$us "
    LAST[$name]=$rps
    results+=("$(printf '%-6s %-10s %10s %10s %8s %8s %10s %10s' "$round" "$name" "$sent" "$valid" "$lost" "$invalid" "$rps" "$us")")
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then
        run mm-signal "$MM_PORT" "$MM_PID"
        run coturn "$CT_PORT" "$CT_PID"
    else
        run coturn "$CT_PORT" "$CT_PID"
        run mm-signal "$MM_PORT" "$MM_PID"
    fi
    ratios+=("$(awk -v a="${LAST[mm-signal]}" -v b="${LAST[coturn]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')")
done

# --- report ----------------------------------------------------------------------

# (word splitting intended: one argument per round)
# shellcheck disable=SC2086
mm_rps=$(load_median ${RPS[mm-signal]})
# shellcheck disable=SC2086
ct_rps=$(load_median ${RPS[coturn]})
# shellcheck disable=SC2086
mm_cpu=$(load_median ${CPU[mm-signal]})
# shellcheck disable=SC2086
ct_cpu=$(load_median ${CPU[coturn]})
echo
echo "STUN Binding responses per second, 127.0.0.1 loopback, $(load_machine)"
echo "generator: stun_load, $SOCKETS sockets x $WINDOW outstanding, ${SECS}s per round; load average $(load_loadavg)"
printf '%-6s %-10s %10s %10s %8s %8s %10s %10s\n' round server sent valid lost invalid "valid/s" "cpu us/rsp"
load_dash 78
echo
printf '%s\n' "${results[@]}"
load_dash 78
echo
printf '%-17s %10s   %-10s %10s\n' "median" "valid/s" "" "cpu us/rsp"
printf '%-17s %10s   %-10s %10s\n' "mm-signal" "$mm_rps" "" "$mm_cpu"
printf '%-17s %10s   %-10s %10s\n' "coturn" "$ct_rps" "" "$ct_cpu"
printf 'ratio mm-signal / coturn: %s responses/s of the medians, %sx the median of the rounds (%s; target >= 1x, aim 2x)\n' \
    "$(load_ratio "$mm_rps" "$ct_rps")" "$(load_median "${ratios[@]}")" "${ratios[*]}"
printf 'CPU per response coturn / mm-signal: %s\n' "$(load_ratio "$ct_cpu" "$mm_cpu")"
