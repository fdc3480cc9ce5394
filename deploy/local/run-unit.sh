#!/usr/bin/env bash
# Runs each cmocka unit test binary given on the command line and closes with
# one line that CI reads:  unit: N passed, N failed  (N counts binaries).
# Exits 1 when any failed (non-zero exit, crash, sanitizer report, timeout of
# MM_UNIT_TIMEOUT seconds, default 300) or is missing.
set -euo pipefail

limit=${MM_UNIT_TIMEOUT:-300}
passed=0
failed=0
failures=()
for t in "$@"; do
    name=$(basename "$t")
    echo "--- $name"
    if [ ! -x "$t" ]; then
        echo "unit: $t: no such executable" >&2
        rc=127
    else
        rc=0
        timeout --kill-after=10 "$limit" "$t" </dev/null || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    else
        [ "$rc" -eq 124 ] && echo "unit: $name timed out after ${limit}s" >&2
        failed=$((failed + 1))
        failures+=("$name (exit $rc)")
    fi
done

if [ "$failed" -gt 0 ]; then
    echo "unit: failed: ${failures[*]}" >&2
fi
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
