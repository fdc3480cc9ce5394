#!/usr/bin/env bash
# Applies the SQL migrations in proto/sql/ (NNNN_name.sql, in order) that the
# database has not seen yet.
#
#   migrate.sh [DATABASE_URL]       (default: $MM_DATABASE_URL)
#
# Each migration runs in its own transaction together with the row that
# records it in schema_migrations (version = file name without .sql, e.g.
# 0001_init), so a failed migration leaves nothing behind. The whole run holds
# a PostgreSQL advisory lock: concurrent runs (several replicas starting at
# once) apply each migration exactly once. One psql session does everything.
# Migration files must not contain BEGIN/COMMIT.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sql_dir=${MM_MIGRATIONS_DIR:-$here/../../proto/sql}
url=${1:-${MM_DATABASE_URL:-}}
[ -n "$url" ] || {
    echo "usage: $0 DATABASE_URL (or set MM_DATABASE_URL)" >&2
    exit 2
}

# Any number; the same in every copy of this script (and in any other tool
# that migrates this schema).
lock_key=4242000001

files=()
versions=()
for f in "$sql_dir"/[0-9][0-9][0-9][0-9]_*.sql; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .sql)
    case "$name" in
    *[!a-z0-9_]*)
        echo "migrate: $f: name must match NNNN_[a-z0-9_]+.sql" >&2
        exit 1
        ;;
    esac
    for v in "${versions[@]}"; do
        if [ "${v%%_*}" = "${name%%_*}" ]; then
            echo "migrate: $v.sql and $name.sql share the number ${name%%_*}" >&2
            exit 1
        fi
    done
    files+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
    versions+=("$name")
done

# The script psql runs: lock, make sure the bookkeeping table exists, then
# for each file apply it only when its version is absent. Versions match
# [0-9a-z_], so they can stand in SQL literals as is; file paths are quoted
# for psql's \i.
script() {
    cat <<SQL
\\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT pg_advisory_lock($lock_key);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations from proto/sql/ applied to this database (deploy/local/migrate.sh).';
SQL
    local i path
    for i in "${!files[@]}"; do
        path=${files[$i]//\'/\\\'}
        cat <<SQL
SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = '${versions[$i]}') AS mm_todo \\gset
\\if :mm_todo
BEGIN;
\\i '$path'
INSERT INTO schema_migrations (version, applied_at) VALUES ('${versions[$i]}', now());
COMMIT;
\\echo migrate: applied ${versions[$i]}
\\endif
SQL
    done
    cat <<SQL
SELECT pg_advisory_unlock($lock_key);
SELECT count(*) AS mm_n, coalesce(max(version), 'none') AS mm_latest FROM schema_migrations \\gset
\\echo migrate: :mm_n migration(s) in place, latest :mm_latest
SQL
}

# Query results go to /dev/null; \echo lines reach stdout, errors stderr.
script | psql -X -q "$url" -v ON_ERROR_STOP=1 -o /dev/null
