#!/usr/bin/env bash
# `make lint`: cppcheck over common/ and services/, the banned-function check,
# and a syntax check of the shell scripts. Exits 1 on any finding.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
status=0

dirs=()
for d in common services; do
    [ -d "$d" ] && dirs+=("$d")
done

# 1. cppcheck. Only our sources: system headers are not given to it (they
# make it slow and noisy), hence missingIncludeSystem. The -D flags are the
# build's (Makefile CPPFLAGS), so it checks the one configuration we build.
# A finding that is wrong can be silenced in place with a comment:
#   // cppcheck-suppress <id>
if [ "${#dirs[@]}" -gt 0 ]; then
    echo "lint: cppcheck ${dirs[*]}"
    if ! cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
        --library=posix --inline-suppr --suppress=missingIncludeSystem \
        -Icommon/include -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -j "$(nproc)" "${dirs[@]}"; then
        status=1
    fi
fi

# 2. Banned functions (STYLE.md): unbounded or non-reentrant, each with a
# bounded replacement (snprintf, memcpy with a length, strtok_r, fgets,
# strtol/strtoul with checks). Comment lines are not code.
banned='\b(sprintf|strcpy|strcat|strtok|gets|atoi)[[:space:]]*\('
if [ "${#dirs[@]}" -gt 0 ]; then
    echo "lint: banned functions"
    hits=$(grep -rnE --include='*.c' --include='*.h' "$banned" "${dirs[@]}" |
        grep -vE '^[^:]+:[0-9]+:[[:space:]]*(//|/?\*)' || true)
    if [ -n "$hits" ]; then
        echo "$hits"
        echo "lint: banned function used (sprintf, strcpy, strcat, strtok, gets, atoi): see STYLE.md" >&2
        status=1
    fi
fi

# 3. Shell scripts: syntax, and shellcheck when it is installed
# (deploy/local/packages.txt lists it).
scripts=(deploy/local/*.sh)
[ -f .ci/run ] && scripts+=(.ci/run)
echo "lint: shell scripts"
for s in "${scripts[@]}"; do
    bash -n "$s" || status=1
done
if command -v shellcheck >/dev/null; then
    shellcheck -x "${scripts[@]}" || status=1
fi

if [ "$status" -ne 0 ]; then
    echo "lint: FAILED" >&2
else
    echo "lint: ok"
fi
exit "$status"
