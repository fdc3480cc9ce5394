#!/usr/bin/env bash
# `make down`: stops what `make up` started, newest first: every service with
# a pid file in .run/pid (SIGTERM, up to 10 s, then SIGKILL), then the Redis
# and PostgreSQL that live under .run/ (stores that MM_*_URL pointed to
# elsewhere were never under .run/ and are left alone). Data, certificates and
# logs stay, so the next `make up` finds the same registrations.
#
#   down.sh            stop
#   down.sh --purge    stop, then delete .run/ (data, certificates, logs) and
#                      the /tmp directories it used for short socket paths
#
# Idempotent: with nothing running it does nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
run=$root/.run
purge=0
case "${1:-}" in
'') ;;
--purge) purge=1 ;;
*)
    echo "usage: $0 [--purge]" >&2
    exit 2
    ;;
esac

[ -d "$run" ] || exit 0
exec 9>"$run/.up.lock"
flock 9

say()
{
    echo "down: $*" >&2
}

# True when PID is a live process (not a zombie) named mm-NAME.
is_service()
{
    local pid=$1 name=$2 stat
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    case "${stat##*) }" in Z* | X*) return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(printf '%.15s' "mm-$name")" ]
}

stop_service()
{
    local name=$1 pidfile=$run/pid/$1.pid pid i=0
    pid=$(cat "$pidfile" 2>/dev/null) || return 0
    if is_service "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        while is_service "$pid" "$name"; do
            i=$((i + 1))
            if [ "$i" -ge 100 ]; then
                say "mm-$name (pid $pid) still runs 10 s after SIGTERM: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        say "mm-$name stopped"
    fi
    rm -f "$pidfile"
}

# The gateway first (no new requests), then the others in the reverse of
# their start order, then anything else that left a pid file.
order=(gateway admin reaper signal bootstrap tracker)
for f in "$run"/pid/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    case " ${order[*]} " in *" $name "*) ;; *) order+=("$name") ;; esac
done
for name in "${order[@]}"; do
    stop_service "$name"
done

if [ -d "$run/redis" ]; then
    "$here/stores.sh" redis-stop "$run/redis"
fi
if [ -d "$run/pg" ]; then
    "$here/stores.sh" pg-stop "$run/pg"
fi

sockdir=$run/sock
[ -s "$run/sockdir" ] && sockdir=$(cat "$run/sockdir")
rm -f "$sockdir"/*.sock

if [ "$purge" -eq 1 ]; then
    [ -d "$run/redis" ] && "$here/stores.sh" clean "$run/redis"
    [ -d "$run/pg" ] && "$here/stores.sh" clean "$run/pg"
    [ "$sockdir" != "$run/sock" ] && rm -rf "$sockdir"
    exec 9>&-
    rm -rf "$run"
    say "removed $run"
else
    say "stopped (data kept in $run; down.sh --purge deletes it)"
fi
