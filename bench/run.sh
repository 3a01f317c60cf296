#!/usr/bin/env bash
# The benchmark: pgpilot (and with `--compare patroni`, Patroni) on a local etcd + 3-member
# cluster, min / median / max over N repetitions. Writes BENCHMARKS.md at the repository root.
#
#   bench/run.sh                                   # pgpilot, fast profile, 5 repetitions, 60 s idle
#   bench/run.sh --compare patroni --profile all   # the full run recorded in BENCHMARKS.md
#   bench/run.sh --compare patroni --profile all --members 3,5,7 --idle-only   # idle cost against size
#   options: --reps N  --idle SECONDS  --profile fast|default|all  --compare patroni  --patroni PATH
#            --members N[,N...]  --idle-only
#
# Needs what the tests need (.ci/run installs it); run as root it drops to the `pgpilot` user.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -p pgpilot --bench cluster -- --markdown "$@" >"$out"
cp "$out" BENCHMARKS.md
cat BENCHMARKS.md
