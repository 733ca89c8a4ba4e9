#!/usr/bin/env bash
# Runs every test project, prints a plain "N passed, N failed, N skipped" line, exits non-zero on failure.
set -uo pipefail
config=${1:-Release}
cd "$(dirname "$0")/.."
results=$(mktemp -d)
rc=0
for proj in tests/*/*.csproj; do
  name=$(basename "$proj" .csproj)
  dotnet test "$proj" -c "$config" --no-build -nologo --logger "trx;LogFileName=$results/$name.trx" \
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
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || rc=1
[ "$passed" -gt 0 ] || rc=1
exit $rc
