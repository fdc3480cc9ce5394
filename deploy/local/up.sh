#!/usr/bin/env bash
# `make up`: the whole suite on this machine, from build/bin (SPEC §6).
#
# 1. PostgreSQL and Redis under .run/ (deploy/local/stores.sh), unless
#    MM_DATABASE_URL / MM_REDIS_URL point elsewhere; the schema (migrate.sh);
#    the dev PKI in .run/certs (pki.sh).
# 2. .run/env: the MM_* values below, shell-sourceable.
# 3. Every service binary that exists in build/bin, in dependency order, each
#    in its own session (it outlives make), pid in .run/pid/NAME.pid, stdout
#    and stderr appended to .run/log/NAME.log; after each start, wait for its
#    /readyz. The gateway comes last, so it opens when what it routes to is ready.
#
# Run again, it starts only what is not running (pid file, live process,
# expected name) and leaves the rest. `make down` (down.sh) stops it all.
#
# Values: anything MM_* in the environment reaches every service unchanged, and
# a value set there wins over the one computed here (MM_GATEWAY_PORT=9443 make
# up). One exception: the dev admin's peer_id is always appended to
# MM_ADMIN_PEER_IDS, so the admin certificate in .run/certs works whatever else
# is listed. Services listen on unix sockets in .run/sock, or, when that path
# would be longer than a socket address allows, in a mktemp directory under
# /tmp recorded in .run/sockdir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
run=$root/.run
bin_dir=${MM_BIN_DIR:-$root/${BUILD:-build}/bin}
timeout=${MM_UP_TIMEOUT:-20}
SERVICES=(tracker bootstrap signal reaper admin gateway)

mkdir -p "$run/pid" "$run/log" "$run/certs"
exec 9>"$run/.up.lock"
if ! flock -n 9; then
    echo "up: waiting for another make up/down in $run" >&2
    flock 9
fi

say()
{
    echo "up: $*" >&2
}

die()
{
    say "$*"
    exit 1
}

# A path as the user would type it from the repository root.
rel()
{
    case "$1" in
    "$PWD"/*) echo "${1#"$PWD"/}" ;;
    *) echo "$1" ;;
    esac
}

# Single-quotes a value for sh.
shq()
{
    local q="'\\''"
    printf "'%s'" "${1//\'/$q}"
}

upper()
{
    echo "$1" | tr '[:lower:]' '[:upper:]'
}

# --- stores ------------------------------------------------------------------
# A URL counts as ours when it is the one stores.sh printed for .run/: someone
# who sourced .run/env and ran `make down` still gets the stores started.
if [ -z "${MM_DATABASE_URL:-}" ] || [ "$MM_DATABASE_URL" = "$(cat "$run/pg/pg.url" 2>/dev/null)" ]; then
    MM_DATABASE_URL=$("$here/stores.sh" pg-start "$run/pg")
    say "PostgreSQL: $MM_DATABASE_URL"
else
    say "PostgreSQL: using MM_DATABASE_URL from the environment"
fi
if [ -z "${MM_REDIS_URL:-}" ] || [ "$MM_REDIS_URL" = "$(cat "$run/redis/redis.url" 2>/dev/null)" ]; then
    MM_REDIS_URL=$("$here/stores.sh" redis-start "$run/redis")
    say "Redis: $MM_REDIS_URL"
else
    say "Redis: using MM_REDIS_URL from the environment"
fi
export MM_DATABASE_URL MM_REDIS_URL

"$here/migrate.sh" "$MM_DATABASE_URL" >&2
"$here/pki.sh" "$run/certs"

# --- configuration -------------------------------------------------------------
sock=$run/sock
if [ -s "$run/sockdir" ] && [ -d "$(cat "$run/sockdir")" ]; then
    sock=$(cat "$run/sockdir")
elif [ $((${#sock} + 15)) -gt 100 ]; then # 15: "/bootstrap.sock", the longest name
    sock=$(mktemp -d /tmp/mm-sock.XXXXXX)
    echo "$sock" >"$run/sockdir"
    say "$run/sock is too long for socket paths: sockets go to $sock"
fi
mkdir -p "$sock"

: "${MM_GATEWAY_PORT:=8443}"
: "${MM_SERVER:=https://localhost:$MM_GATEWAY_PORT}"
: "${MM_TLS_CERT_FILE:=$run/certs/gateway.pem}"
: "${MM_TLS_KEY_FILE:=$run/certs/gateway.key}"
: "${MM_CA_FILE:=$run/certs/ca.pem}"
: "${MM_ADMIN_CERT:=$run/certs/admin.pem}"
: "${MM_ADMIN_KEY:=$run/certs/admin.key}"
: "${MM_GATEWAY_INTERNAL_LISTEN:=unix:$sock/gateway.sock}"
export MM_GATEWAY_PORT MM_SERVER MM_TLS_CERT_FILE MM_TLS_KEY_FILE MM_CA_FILE MM_ADMIN_CERT MM_ADMIN_KEY \
    MM_GATEWAY_INTERNAL_LISTEN

admin_id=$(cat "$run/certs/admin.peer_id")
case ",${MM_ADMIN_PEER_IDS:-}," in
*",$admin_id,"*) ;;
",,") MM_ADMIN_PEER_IDS=$admin_id ;;
*) MM_ADMIN_PEER_IDS="$MM_ADMIN_PEER_IDS,$admin_id" ;;
esac
export MM_ADMIN_PEER_IDS

# The URL a client uses for a listen address: unix:/p stays, host:port
# becomes http://host:port (a wildcard host becomes loopback).
listen_to_url()
{
    local l=$1 host port
    case "$l" in
    unix:*) echo "$l" ;;
    *)
        host=${l%:*}
        port=${l##*:}
        case "$host" in
        '' | 0.0.0.0 | '*') host=127.0.0.1 ;;
        '[::]' | '::') host='[::1]' ;;
        *:*) case "$host" in \[*) ;; *) host="[$host]" ;; esac ;;
        esac
        echo "http://$host:$port"
        ;;
    esac
}

env_names=(MM_DATABASE_URL MM_REDIS_URL MM_SERVER MM_GATEWAY_PORT MM_TLS_CERT_FILE MM_TLS_KEY_FILE MM_CA_FILE
    MM_ADMIN_CERT MM_ADMIN_KEY MM_ADMIN_PEER_IDS MM_GATEWAY_INTERNAL_LISTEN)
for svc in "${SERVICES[@]}"; do
    [ "$svc" = gateway ] && continue
    SVC=$(upper "$svc")
    lvar=MM_${SVC}_LISTEN
    uvar=MM_${SVC}_URL
    [ -n "${!lvar:-}" ] || printf -v "$lvar" '%s' "unix:$sock/$svc.sock"
    [ -n "${!uvar:-}" ] || printf -v "$uvar" '%s' "$(listen_to_url "${!lvar}")"
    export "${lvar?}" "${uvar?}"
    env_names+=("$lvar" "$uvar")
done

{
    echo "# Written by make up (deploy/local/up.sh). Use: source $(rel "$run/env")"
    for name in "${env_names[@]}"; do
        echo "export $name=$(shq "${!name}")"
    done
} >"$run/env.tmp"
mv "$run/env.tmp" "$run/env"

# --- services -----------------------------------------------------------------
listen_of()
{
    if [ "$1" = gateway ]; then
        echo "$MM_GATEWAY_INTERNAL_LISTEN"
    else
        local v
        v=MM_$(upper "$1")_LISTEN
        echo "${!v}"
    fi
}

# GET /readyz on a listen address; true on 200.
ready()
{
    local url
    case "$1" in
    unix:*) curl -fsS -o /dev/null --max-time 2 --unix-socket "${1#unix:}" http://localhost/readyz 2>/dev/null ;;
    *)
        url=$(listen_to_url "$1")
        curl -fsS -o /dev/null --max-time 2 "$url/readyz" 2>/dev/null
        ;;
    esac
}

# True when PID is a live process, not a zombie.
live()
{
    local stat
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    case "${stat##*) }" in Z* | X*) return 1 ;; esac
}

# The pid from .run/pid/NAME.pid when it is a live mm-NAME: a pid file may
# outlive its process, and the pid be reused by another program.
running_pid()
{
    local pid
    pid=$(cat "$run/pid/$1.pid" 2>/dev/null) || return 1
    live "$pid" || return 1
    # comm holds the first 15 bytes of the executable's name.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(printf '%.15s' "mm-$1")" ] || return 1
    echo "$pid"
}

fail()
{
    local name=$1 log=$2
    say "mm-$name: $3; the end of $(rel "$log"):"
    tail -n 30 "$log" | sed 's/^/    /' >&2 || true
    say "what did start keeps running: make down stops it"
    exit 1
}

started=()
skipped=()
for svc in "${SERVICES[@]}"; do
    exe=$bin_dir/mm-$svc
    log=$run/log/$svc.log
    listen=$(listen_of "$svc")
    ours=0
    if pid=$(running_pid "$svc"); then
        # A rebuilt binary replaces the file: the process runs the deleted one.
        if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *" (deleted)" ]]; then
            say "mm-$svc: running (pid $pid) from an older build: make down && make up restarts it"
        else
            say "mm-$svc: running (pid $pid)"
        fi
    elif [ ! -x "$exe" ]; then
        skipped+=("$svc")
        rm -f "$run/pid/$svc.pid"
        continue
    else
        # A socket file left by a killed process would make bind() fail.
        case "$listen" in unix:*) rm -f "${listen#unix:}" ;; esac
        setsid "$exe" </dev/null >>"$log" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$run/pid/$svc.pid"
        started+=("$svc")
        ours=1
        say "mm-$svc: started (pid $pid, log $(rel "$log"))"
    fi
    deadline=$((SECONDS + timeout))
    until ready "$listen"; do
        # Not running_pid: a child that has not exec'ed yet bears our name.
        if ! live "$pid"; then
            rm -f "$run/pid/$svc.pid"
            if [ "$ours" -eq 1 ]; then
                wait "$pid" 2>/dev/null && rc=0 || rc=$?
                fail "$svc" "$log" "exited (status $rc) before it was ready"
            fi
            fail "$svc" "$log" "exited"
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "$svc" "$log" "not ready after ${timeout}s on $listen"
        sleep 0.1
    done
done

if [ "${#started[@]}" -eq 0 ] && [ "${#skipped[@]}" -lt "${#SERVICES[@]}" ]; then
    say "everything was already running"
fi
if [ "${#skipped[@]}" -gt 0 ]; then
    say "not built, not started: ${skipped[*]} (looked in $(rel "$bin_dir"))"
fi

certs=$(rel "$run/certs")
if ! running_pid gateway >/dev/null; then
    cat <<EOF

The stores are up, but mm-gateway is not built: nothing answers at $MM_SERVER yet.
  build:              make, then make up again
  clients' settings:  source $(rel "$run/env")
  stop it all:        make down
EOF
    exit 0
fi
cat <<EOF

Matchmaker is up: $MM_SERVER
  register the dev admin:
    curl --cacert $certs/ca.pem --cert $certs/admin.pem --key $certs/admin.key -X POST $MM_SERVER/api/relay/register -H 'content-type: application/json' -d '{}'
EOF
if [ -x "$bin_dir/mm-admin" ]; then
    cat <<EOF
  the operators' dashboard (JSON; in a browser, import the admin certificate):
    curl --cacert $certs/ca.pem --cert $certs/admin.pem --key $certs/admin.key $MM_SERVER/admin/api/overview
EOF
fi
if [ -x "$bin_dir/mm" ]; then
    cat <<EOF
  the agent (man $(rel "$root/docs/mm.1")), after source $(rel "$run/env"):
    $(rel "$bin_dir/mm") init --email you@example.com --server-ca $certs/ca.pem
    $(rel "$bin_dir/mm") register
    $(rel "$bin_dir/mm") up --share DIR --allow FRIEND@EXAMPLE.COM
EOF
fi
cat <<EOF
  clients' settings:  source $(rel "$run/env")
  logs:               $(rel "$run/log")/NAME.log
  stop it all:        make down
EOF
