#!/usr/bin/env bash
# Runs every load suite in tests/load/ in turn: *_vs_*.sh (a service against
# a named peer, in the same run) and bench_*.sh (a service alone). `make
# bench` builds the binaries and calls this.
#
#   tests/load/run-all.sh [PATTERN...]    only the suites whose file name
#                                         contains one of the PATTERNs
#
# One suite at a time, never in parallel: they would share the CPUs they
# measure. Each suite's own knobs (MMLOAD_*) pass through the environment.
# Exits 1 when any suite failed (a server did not start, or requests got
# unexpected answers); a ratio below its target is reported, not a failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

suites=()
for f in "$here"/*_vs_*.sh "$here"/bench_*.sh; do
    [ -f "$f" ] || continue
    if [ $# -gt 0 ]; then
        keep=0
        for p in "$@"; do
            case "$(basename "$f")" in *"$p"*) keep=1 ;; esac
        done
        [ "$keep" -eq 1 ] || continue
    fi
    suites+=("$f")
done
if [ "${#suites[@]}" -eq 0 ]; then
    echo "bench: no load suite in $here${1:+ matching $*}" >&2
    exit 1
fi

passed=0
failed=()
for s in "${suites[@]}"; do
    name=$(basename "$s")
    echo "=== $name"
    start=$SECONDS
    if bash "$s"; then
        passed=$((passed + 1))
        echo "=== $name: done in $((SECONDS - start)) s"
    else
        rc=$?
        failed+=("$name")
        echo "=== $name: FAILED (exit $rc) after $((SECONDS - start)) s"
    fi
    echo
done

[ "${#failed[@]}" -eq 0 ] || echo "failed: ${failed[*]}"
echo "bench: $passed passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
