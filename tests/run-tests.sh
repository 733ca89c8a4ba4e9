#!/usr/bin/env bash
# Runs every test project, prints a plain "N passed, N failed, N skipped" line, exits non-zero on failure.
# FILTER=X runs only the tests whose full name contains X (a class, a method) and skips the reliability run.
set -uo pipefail
config=${1:-Release}
filter=${FILTER:-}
cd "$(dirname "$0")/.."
results=$(mktemp -d)
rc=0
for proj in tests/*/*.csproj; do
  name=$(basename "$proj" .csproj)
  dotnet test "$proj" -c "$config" --no-build -nologo ${filter:+--filter "FullyQualifiedName~$filter"} --logger "trx;LogFileName=$results/$name.trx" \
    --logger "console;verbosity=minimal" || rc=1
done
passed=0; failed=0; skipped=0
for t in "$results"/*.trx; do
  [ -e "$t" ] || continue
  c=$(grep -o '<Counters [^>]*>' "$t")
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$c"); f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$c")
  n=$(sed -n 's/.* notExecuted="\([0-9]*\)".*/\1/p' <<<"$c")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${n:-0}))
done
rm -rf "$results"
echo "unit and integration tests: $passed passed, $failed failed, $skipped skipped"

# Scripts that print figure lines ("NAME: N passed, N failed"): the short reliability run (each figure line
# counts as one test) and the package tests (each check counts). RELIABILITY=0 / PACKAGE=0 skip them.
figures() { # figures NAME SCRIPT
  local out; out=$(mktemp)
  bash "$2" 2>&1 | tee "$out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  if [ "$1" = package ]; then
    local l; l=$(grep -E '^package: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
    local p=${l#package: }; p=${p%% *}; local f=${l#*passed, }; f=${f%% *}
    [ -n "$l" ] || { echo "package: no result line"; f=1; p=0; }
    passed=$((passed + p)); failed=$((failed + f))
  else
    local fp ff
    fp=$(grep -cE ': [0-9]+ passed, 0 failed$' "$out" || true)
    ff=$(grep -E ': [0-9]+ passed, [0-9]+ failed$' "$out" | grep -cvE ', 0 failed$' || true)
    [ "$fp" -gt 0 ] || { echo "$1: no figures printed"; ff=$((ff + 1)); }
    passed=$((passed + fp)); failed=$((failed + ff))
  fi
  rm -f "$out"
}
if [ -z "$filter" ]; then
  [ "${RELIABILITY:-1}" = 1 ] && figures reliability tests/reliability.sh
  [ "${PACKAGE:-1}" = 1 ] && figures package tests/package-tests.sh
fi
[ "$failed" -eq 0 ] || rc=1
[ "$passed" -gt 0 ] || rc=1
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $rc
