#!/usr/bin/env bash
# The client agent mm (SPEC §5), two numbers:
#
# 1. connect: time from `mm connect` to a verified connection when the peer
#    has 4 candidates and the first 3 are black holes. The black holes are
#    loopback listeners that accept TCP and never answer the TLS handshake
#    (a "silent peer": no route tricks, no traffic off the machine). Happy
#    Eyeballs (an attempt every 250 ms, none waiting for the others) against
#    `mm connect --sequential` (one address at a time, 2 s each), and the
#    cached winner (second connect). Target: Happy Eyeballs < 1 s.
#    Reported: "ms" of `mm --json connect` (the race itself, after the
#    lookup) and the whole command's wall time (process start, lookup, race).
#
# 2. download: the peer server (mm up) sending a 1 GB file over loopback,
#    measured with `mm get -o /dev/null` (libcurl through the agent: pinned
#    key, client certificate, HTTP/1.1) and with the curl CLI against the
#    same URL. Target: >= 1 GB/s. `mm get` to a file on disk (with fsync and
#    rename) is shown too, for what a user sees; disk speed bounds it.
#
# Knobs: MMLOAD_CONNECT_ROUNDS (5), MMLOAD_SEQ_ROUNDS (2),
# MMLOAD_FILE_MB (1000), MMLOAD_DL_ROUNDS (3), MMLOAD_KEEP, MM_BUILD_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"

connect_rounds=${MMLOAD_CONNECT_ROUNDS:-5}
seq_rounds=${MMLOAD_SEQ_ROUNDS:-2}
file_mb=${MMLOAD_FILE_MB:-1000}
dl_rounds=${MMLOAD_DL_ROUNDS:-3}

load_build mm mm-tracker mm-gateway
load_tmpdir
load_log "machine: $(load_machine); load average $(load_loadavg); $(load_source)"

# --- the suite: stores, tracker, gateway ----------------------------------------
load_stores_start
load_start_tracker "$LOAD_TMP/tracker.log" 2
mkdir -p "$LOAD_TMP/pki"
load_server_cert "$LOAD_TMP/pki"
load_start_gateway "$LOAD_TMP/gateway.log" "$LOAD_TRACKER_PORT" 2 "$LOAD_TMP/pki/server.crt" "$LOAD_TMP/pki/server.key"
server=https://127.0.0.1:$LOAD_GW_PORT

# agent NAME ARGS...: runs mm as agent NAME (its own XDG dirs)
agent()
{
    local name=$1
    shift
    env -u MM_CA_FILE HOME="$LOAD_TMP/$name" XDG_CONFIG_HOME="$LOAD_TMP/$name/cfg" \
        XDG_CACHE_HOME="$LOAD_TMP/$name/cache" MM_SERVER="$server" "$LOAD_BIN/mm" "$@"
}

for n in alice bob; do
    mkdir -p "$LOAD_TMP/$n"
    agent "$n" --json init --email "$n-$$@example.com" --server-ca "$LOAD_TMP/pki/server.crt" >/dev/null ||
        load_die "mm init ($n)"
    agent "$n" --json register >/dev/null || load_die "mm register ($n)"
done

# --- black holes: accept, never answer --------------------------------------------
python3 - "$LOAD_TMP/holes" <<'EOF' &
import select, socket, sys
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128); socks.append(s)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(str(s.getsockname()[1]) for s in socks) + "\n")
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held = []
while True:
    for s in select.select(socks, [], [])[0]:
        held.append(s.accept()[0])
EOF
LOAD_PIDS+=("$!")
for _ in $(seq 50); do [ -s "$LOAD_TMP/holes" ] && break; sleep 0.1; done
read -r h1 h2 h3 <"$LOAD_TMP/holes" || load_die "the black holes did not start"

# --- the peers: alice shares, bob is online too (alice checks callers through the tracker)
mkdir -p "$LOAD_TMP/share" "$LOAD_TMP/bobshare"
load_log "making a ${file_mb} MB file of random bytes"
head -c "$((file_mb * 1000 * 1000))" /dev/urandom >"$LOAD_TMP/share/big.bin"
bytes=$(stat -c %s "$LOAD_TMP/share/big.bin")

up()
{
    local name=$1 out=$2
    shift 2
    load_start "$LOAD_TMP/$name.up.log" env -u MM_CA_FILE HOME="$LOAD_TMP/$name" XDG_CONFIG_HOME="$LOAD_TMP/$name/cfg" \
        XDG_CACHE_HOME="$LOAD_TMP/$name/cache" MM_SERVER="$server" "$LOAD_BIN/mm" --json up "$@"
    # stdout and stderr share the log; the events are its JSON lines with "event"
    for _ in $(seq 100); do
        grep -q '"event":"online"' "$LOAD_TMP/$name.up.log" 2>/dev/null && break
        load_alive "$LOAD_PID" || load_die "mm up ($name) exited: $(tail -n 5 "$LOAD_TMP/$name.up.log")"
        sleep 0.1
    done
    grep -q '"event":"online"' "$LOAD_TMP/$name.up.log" || load_die "mm up ($name) did not come online"
    printf -v "$out" '%s' "$(grep -o '"event":"listening"[^}]*"port":[0-9]*' "$LOAD_TMP/$name.up.log" | grep -o '[0-9]*$')"
}
alice_port=
bob_port=
up alice alice_port --share "$LOAD_TMP/share" --port 0 --allow "bob-$$@example.com" \
    --advertise "127.0.0.1:$h1" --advertise "127.0.0.1:$h2" --advertise "127.0.0.1:$h3"
up bob bob_port --share "$LOAD_TMP/bobshare" --port 0 --allow "alice-$$@example.com" --advertise 127.0.0.1
load_log "alice's candidates: 127.0.0.1:$h1 $h2 $h3 (black holes), then 127.0.0.1:$alice_port (observed); bob on $bob_port"

# json_num FIELD: the number FIELD of the JSON object on stdin
json_num()
{
    python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# connect_round ARGS...: prints "race_ms wall_ms" of one connect with a cold cache
connect_round()
{
    local t0 t1 out
    rm -f "$LOAD_TMP/bob/cache/matchmaker/winners.json"
    t0=$(load_now)
    out=$(agent bob --json connect "alice-$$@example.com" "$@") || load_die "mm connect failed: $out"
    t1=$(load_now)
    [ "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')" = "127.0.0.1:$alice_port" ] ||
        load_die "connect won with another address: $out"
    echo "$(echo "$out" | json_num ms) $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
}

r=
w=
he_race=()
he_wall=()
for _ in $(seq "$connect_rounds"); do
    read -r r w < <(connect_round) || true
    [ -n "${w:-}" ] || load_die "mm connect (Happy Eyeballs) failed"
    he_race+=("$r")
    he_wall+=("$w")
done
seq_race=()
seq_wall=()
for _ in $(seq "$seq_rounds"); do
    read -r r w < <(connect_round --sequential --timeout 30) || true
    [ -n "${w:-}" ] || load_die "mm connect --sequential failed"
    seq_race+=("$r")
    seq_wall+=("$w")
done
agent bob --json connect "alice-$$@example.com" >/dev/null # caches the winner
cached=$(agent bob --json connect "alice-$$@example.com" | json_num ms)

# --- download ---------------------------------------------------------------------------
cat "$LOAD_TMP/share/big.bin" >/dev/null # in the page cache: the network path is measured, not the disk
url="https://127.0.0.1:$alice_port/api/files/big.bin"
mm_rate=()
curl_rate=()
for _ in $(seq "$dl_rounds"); do
    out=$(agent bob --json get "alice-$$@example.com" big.bin -o /dev/null) || load_die "mm get failed: $out"
    [ "$(echo "$out" | json_num bytes)" = "$bytes" ] || load_die "mm get: short download: $out"
    mm_rate+=("$(echo "$out" | json_num ms | awk -v b="$bytes" '{ printf "%.0f", b / $1 / 1000 }')")
    r=$(curl -sk --http1.1 --cert "$LOAD_TMP/bob/cfg/matchmaker/cert.pem" --key "$LOAD_TMP/bob/cfg/matchmaker/key.pem" \
        -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url")
    read -r code size speed <<<"$r"
    if [ "$code" != 200 ] || [ "$size" != "$bytes" ]; then load_die "curl download: $r"; fi
    curl_rate+=("$(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }')")
done
out=$(agent bob --json get "alice-$$@example.com" big.bin -o "$LOAD_TMP/got.bin") || load_die "mm get to a file failed: $out"
cmp -s "$LOAD_TMP/got.bin" "$LOAD_TMP/share/big.bin" || load_die "the downloaded file differs"
file_rate=$(echo "$out" | json_num ms | awk -v b="$bytes" '{ printf "%.0f", b / $1 / 1000 }')
rm -f "$LOAD_TMP/got.bin"

he_med=$(load_median "${he_race[@]}")
verdict=$(awk -v m="$he_med" 'BEGIN { print (m < 1000 ? "met" : "MISSED") }')
dl_best=$(printf '%s\n' "${mm_rate[@]}" "${curl_rate[@]}" | sort -n | tail -1)
dl_verdict=$(awk -v m="$(load_median "${mm_rate[@]}")" 'BEGIN { print (m >= 1000 ? "met" : "MISSED") }')
echo
echo "mm connect, 4 candidates, the first 3 black holes (loopback listeners that never answer TLS)"
printf '  %-34s %-44s %s\n' "mode" "race ms (median; all)" "wall ms, whole command (median)"
printf '  %-34s %-44s %s\n' "Happy Eyeballs (250 ms stagger)" "$he_med; ${he_race[*]}" "$(load_median "${he_wall[@]}")"
printf '  %-34s %-44s %s\n' "sequential (2 s per attempt)" "$(load_median "${seq_race[@]}"); ${seq_race[*]}" "$(load_median "${seq_wall[@]}")"
printf '  %-34s %-44s\n' "cached winner (second connect)" "$cached"
echo "  target < 1000 ms with Happy Eyeballs: $verdict ($(load_ratio "$(load_median "${seq_race[@]}")" "$he_med") faster than sequential)"
echo
echo "peer server download of $bytes bytes over loopback (TLS, HTTP/1.1), MB/s per round"
printf '  %-34s %s (median %s)\n' "mm get -o /dev/null" "${mm_rate[*]}" "$(load_median "${mm_rate[@]}")"
printf '  %-34s %s (median %s)\n' "curl --http1.1 -o /dev/null" "${curl_rate[*]}" "$(load_median "${curl_rate[@]}")"
printf '  %-34s %s\n' "mm get to a file (fsync, rename)" "$file_rate"
echo "  target >= 1000 MB/s (mm get, median): $dl_verdict (best round $dl_best MB/s)"
echo "  machine: $(load_machine); load average at the end $(load_loadavg)"
