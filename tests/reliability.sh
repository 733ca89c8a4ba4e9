#!/usr/bin/env bash
# The reliability figures (src/Fvd.Reliability/README.md): builds in Release and runs `fvd-reliability all`.
# Prints one "NAME: N passed, N failed" line per figure; exits non-zero on any failure.
#   tests/reliability.sh            short run for CI (a few minutes on 2 cores)
#   LONG=1 tests/reliability.sh     the long run (--long)
#   SEED=7 tests/reliability.sh     another seed
# Figures: crash-states, race-sim, fsx-*, fuzzed-images, fuzzed-qcow2 (needs qemu-img), security.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Fvd.Reliability/Fvd.Reliability.csproj -c Release -nologo -v quiet
args=(all --seed "${SEED:-1}")
[ "${LONG:-0}" = 1 ] && args+=(--long)
exec dotnet src/Fvd.Reliability/bin/Release/net10.0/fvd-reliability.dll "${args[@]}"
