#!/usr/bin/env bash
# Starts and stops the local stores: PostgreSQL 15 and Redis 7 as plain
# processes whose files live in a directory of the caller's choosing. This is
# the one piece of code that does it, for `make up` (DIR = .run/pg, .run/redis)
# and for the integration tests (DIR = a temporary directory).
#
#   stores.sh pg-start DIR      prints  postgresql:///matchmaker?host=SOCKDIR&user=postgres
#   stores.sh pg-stop DIR
#   stores.sh redis-start DIR   prints  unix:SOCKDIR/redis.sock
#   stores.sh redis-stop DIR
#   stores.sh clean DIR         stops whatever runs in DIR, removes DIR and its /tmp helpers
#
# Both servers listen on a unix socket only (no TCP port, so any number of
# them can run side by side). Starting is idempotent: when the server already
# runs, the command only prints its URL. Callers must use the printed URL as
# is; it is also written to DIR/pg.url or DIR/redis.url. One DIR may hold both.
#
# Socket paths are limited to 107 bytes. When DIR is too long for that, or
# (as root) the postgres user cannot reach DIR (a repository under a 0700
# home), the files that need it go to a short directory made with mktemp under
# /tmp, and the printed URL points there: PostgreSQL's data then lives in
# /tmp/mm-pg.XXXXXX with DIR/data a symlink to it; Redis keeps its data in DIR
# and only its socket goes to /tmp/mm-redis.XXXXXX (recorded in DIR/redis.sockdir).
# `clean` removes those too.
#
# Logs: DIR/postgres.log, DIR/redis.log.
set -euo pipefail

PG_BIN=${MM_PG_BIN:-/usr/lib/postgresql/15/bin}
IS_ROOT=0
[ "$(id -u)" -ne 0 ] || IS_ROOT=1
READY_TIMEOUT=${MM_STORE_TIMEOUT:-30}
# Longest socket path we accept (sun_path is 108 bytes with its NUL).
MAX_SOCK=100

die()
{
    echo "stores: $*" >&2
    exit 1
}

usage()
{
    echo "usage: $0 pg-start|pg-stop|redis-start|redis-stop|clean DIR" >&2
    exit 2
}

abs_dir()
{
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# Serialises starts and stops on one DIR (two test processes may share it).
# The children we start must not inherit the lock: every daemon is started
# with 9>&-.
lock_dir()
{
    exec 9>"$1/.stores.lock"
    flock 9
}

# Runs a command as the user that owns the PostgreSQL files: postgres when we
# are root (initdb and postgres refuse to run as root), else ourselves.
as_pg()
{
    if [ "$IS_ROOT" -eq 1 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# True when PID is a live process, not a zombie (a killed server that nobody
# reaped yet still answers kill -0).
live()
{
    local stat
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # /proc/PID/stat: "PID (COMM) STATE ..."; COMM may hold spaces.
    case "${stat##*) }" in Z* | X*) return 1 ;; esac
}

# True when PID is live and its name starts with NAME: the pid in a pid file
# may have been reused by another program. (Not for a child we just forked:
# until it has exec'ed, it still bears our name.)
alive()
{
    live "$1" || return 1
    case "$(cat "/proc/$1/comm" 2>/dev/null)" in
    "$2"*) return 0 ;;
    *) return 1 ;;
    esac
}

# --- PostgreSQL -----------------------------------------------------------

# Sets PG_HOME: where the data directory and the socket live (DIR, or the
# /tmp directory DIR/data points into).
pg_locate()
{
    local dir=$1
    if [ -L "$dir/data" ]; then
        PG_HOME=$(dirname "$(readlink "$dir/data")")
        [ -d "$PG_HOME/data" ] || die "$dir/data points to $PG_HOME/data, which is gone; run: $0 clean $dir"
        return
    fi
    PG_HOME=$dir
    if [ -d "$dir/data" ]; then
        return
    fi
    # New cluster: decide where it goes.
    local reachable=1
    if [ "$IS_ROOT" -eq 1 ]; then
        chown postgres: "$dir"
        chmod 0700 "$dir"
        runuser -u postgres -- test -w "$dir" -a -x "$dir" || reachable=0
    fi
    if [ "$reachable" -eq 0 ] || [ "${#dir}" -gt $((MAX_SOCK - 16)) ]; then
        PG_HOME=$(mktemp -d /tmp/mm-pg.XXXXXX)
        mkdir "$PG_HOME/data"
        if [ "$IS_ROOT" -eq 1 ]; then
            chown postgres: "$PG_HOME" "$PG_HOME/data"
        fi
        ln -s "$PG_HOME/data" "$dir/data"
        ln -sfn "$PG_HOME/postgres.log" "$dir/postgres.log"
    fi
}

# The socket directory goes into a URI query: escape what would end or
# change the value there.
pg_url()
{
    local h=${PG_HOME//%/%25}
    h=${h// /%20}
    h=${h//&/%26}
    h=${h//#/%23}
    echo "postgresql:///matchmaker?host=$h&user=postgres"
}

# Not `pg_ctl status`: it takes a killed postmaster that nobody reaped yet
# (a zombie) for a live one.
pg_running()
{
    local pid
    pid=$(head -n 1 "$PG_HOME/data/postmaster.pid" 2>/dev/null) || return 1
    alive "$pid" postgres
}

pg_start()
{
    local dir
    dir=$(abs_dir "$1")
    lock_dir "$dir"
    pg_locate "$dir"
    if ! pg_running; then
        if [ ! -f "$PG_HOME/data/PG_VERSION" ]; then
            mkdir -p "$PG_HOME/data"
            if [ "$IS_ROOT" -eq 1 ]; then
                chown postgres: "$PG_HOME/data"
            fi
            as_pg "$PG_BIN/initdb" -D "$PG_HOME/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
                >"$PG_HOME/initdb.log" 2>&1 9>&- || {
                cat "$PG_HOME/initdb.log" >&2
                die "initdb failed in $PG_HOME/data"
            }
            # Ours: everything else stays at initdb's defaults. mm.conf is
            # rewritten at every start (the socket directory may have moved).
            echo "include_if_exists = 'mm.conf'" >>"$PG_HOME/data/postgresql.conf"
        fi
        local sockdir_q=${PG_HOME//\'/\'\'}
        as_pg tee "$PG_HOME/data/mm.conf" >/dev/null <<CONF
# Written by deploy/local/stores.sh at every start; edit that script instead.
listen_addresses = ''
unix_socket_directories = '$sockdir_q'
port = 5432
max_connections = 300
# A development and test server: survive a killed process, not a power cut.
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
CONF
        if [ ${#PG_HOME} -gt $((MAX_SOCK - 16)) ]; then
            die "socket path $PG_HOME/.s.PGSQL.5432 is too long"
        fi
        # After a postmaster was killed, its orphaned backends hold the
        # shared memory until they notice; a start fails until then: retry.
        local tries=0
        until as_pg "$PG_BIN/pg_ctl" start -D "$PG_HOME/data" -l "$PG_HOME/postgres.log" -w -t "$READY_TIMEOUT" \
            </dev/null >/dev/null 2>&1 9>&-; do
            tries=$((tries + 1))
            if [ "$tries" -ge 10 ]; then
                tail -n 20 "$PG_HOME/postgres.log" >&2 || true
                die "PostgreSQL did not start (log: $PG_HOME/postgres.log)"
            fi
            sleep 1
        done
    fi
    local i=0
    until "$PG_BIN/pg_isready" -q -h "$PG_HOME" -p 5432 -U postgres -d postgres; do
        i=$((i + 1))
        [ "$i" -lt $((READY_TIMEOUT * 10)) ] || die "PostgreSQL in $PG_HOME is not ready after ${READY_TIMEOUT}s"
        sleep 0.1
    done
    local have
    have=$(psql -X -q -At -h "$PG_HOME" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'matchmaker'")
    if [ "$have" != 1 ]; then
        psql -X -q -h "$PG_HOME" -U postgres -d postgres -v ON_ERROR_STOP=1 -c 'CREATE DATABASE matchmaker' >/dev/null
    fi
    pg_url >"$dir/pg.url"
    pg_url
}

pg_stop()
{
    local dir
    [ -d "$1" ] || return 0
    dir=$(abs_dir "$1")
    [ -e "$dir/data" ] || return 0
    lock_dir "$dir"
    pg_locate "$dir"
    if pg_running; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_HOME/data" -m fast -w -t 60 >/dev/null 9>&-
    fi
}

# --- Redis ----------------------------------------------------------------

# Sets REDIS_SOCK for DIR, making the short /tmp directory when needed.
redis_locate()
{
    local dir=$1 sockdir=$1
    if [ -f "$dir/redis.sockdir" ]; then
        sockdir=$(cat "$dir/redis.sockdir")
        [ -d "$sockdir" ] || sockdir=$dir
    fi
    if [ "$sockdir" = "$dir" ] && [ $((${#dir} + 11)) -gt "$MAX_SOCK" ]; then
        sockdir=$(mktemp -d /tmp/mm-redis.XXXXXX)
        echo "$sockdir" >"$dir/redis.sockdir"
    fi
    REDIS_SOCK=$sockdir/redis.sock
}

# The pid in DIR/redis.pid when that process is a live redis-server.
redis_pid()
{
    local pid
    pid=$(cat "$1/redis.pid" 2>/dev/null) || return 1
    alive "$pid" redis-server || return 1
    echo "$pid"
}

redis_start()
{
    local dir pid
    dir=$(abs_dir "$1")
    lock_dir "$dir"
    redis_locate "$dir"
    if ! pid=$(redis_pid "$dir"); then
        rm -f "$REDIS_SOCK" "$dir/redis.pid"
        # --logfile '' sends the log to stdout, which goes to DIR/redis.log.
        setsid redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --dir "$dir" \
            --appendonly yes --notify-keyspace-events Ex --daemonize no --save '' \
            --pidfile "$dir/redis.pid" --logfile '' \
            </dev/null >>"$dir/redis.log" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$dir/redis.pid"
    fi
    local i=0
    until [ "$(redis-cli -s "$REDIS_SOCK" ping 2>/dev/null)" = PONG ]; do
        if ! live "$pid"; then
            tail -n 20 "$dir/redis.log" >&2 || true
            die "redis-server exited (log: $dir/redis.log)"
        fi
        i=$((i + 1))
        [ "$i" -lt $((READY_TIMEOUT * 10)) ] || die "Redis in $dir is not ready after ${READY_TIMEOUT}s"
        sleep 0.1
    done
    echo "unix:$REDIS_SOCK" >"$dir/redis.url"
    echo "unix:$REDIS_SOCK"
}

# Sends SIGTERM to PID (named NAME) and waits up to SECS for it to go, then
# SIGKILL.
stop_pid()
{
    local pid=$1 name=$2 secs=$3 i=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while alive "$pid" "$name"; do
        i=$((i + 1))
        if [ "$i" -ge $((secs * 10)) ]; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.1
            break
        fi
        sleep 0.1
    done
}

redis_stop()
{
    local dir pid
    [ -d "$1" ] || return 0
    dir=$(abs_dir "$1")
    lock_dir "$dir"
    if pid=$(redis_pid "$dir"); then
        stop_pid "$pid" redis-server 30
    fi
    rm -f "$dir/redis.pid"
}

clean()
{
    local dir
    [ -d "$1" ] || return 0
    dir=$(abs_dir "$1")
    pg_stop "$dir"
    redis_stop "$dir"
    exec 9>&-
    if [ -L "$dir/data" ]; then
        rm -rf "$(dirname "$(readlink "$dir/data")")"
    fi
    if [ -f "$dir/redis.sockdir" ]; then
        rm -rf "$(cat "$dir/redis.sockdir")"
    fi
    rm -rf "$dir"
}

[ $# -eq 2 ] || usage
[ -n "$2" ] || usage
case "$1" in
pg-start) pg_start "$2" ;;
pg-stop) pg_stop "$2" ;;
redis-start) redis_start "$2" ;;
redis-stop) redis_stop "$2" ;;
clean) clean "$2" ;;
*) usage ;;
esac
