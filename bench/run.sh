#!/usr/bin/env bash
# The benchmark: pgpilot (and with `--compare patroni`, Patroni) on a local etcd + 3-member
# cluster, min / median / max over N repetitions. Writes BENCHMARKS.md at the repository root.
#
#   bench/run.sh                                   # pgpilot, fast profile, 5 repetitions, 60 s idle
#   bench/run.sh --compare patroni --profile all   # the full run recorded in BENCHMARKS.md
#   bench/run.sh --compare patroni --profile all --members 3,5,7 --idle-only   # idle cost against size
#   options: --reps N  --idle SECONDS  --profile fast|default|short|all  --compare patroni  --patroni PATH
#            --members N[,N...]  --idle-only
#
# Scale mode (its own section of BENCHMARKS.md, and the plot bench/scale.svg):
#   bench/run.sh --scale --compare patroni --profile all --reps 3   # the scale run recorded
#   options: --fleet N[,N...]   fleets of N clusters x 3 members on ONE etcd, idle cost per
#                               member (default 1,10,25)
#            --sizes M[,M...]   one cluster of M members: write gaps (default 3,5,7,9)
#            --parallel K       clusters started at once while a fleet boots (default 5)
#            and --reps, --idle, --profile, --compare, --patroni as above (here --profile
#            defaults to fast and default).
#
# BENCHMARKS.md has two generated parts: the main part, rewritten by a normal run, and the
# scale section between the lines `<!-- scale section: begin ... -->` and
# `<!-- scale section: end -->` at its end, rewritten only by `--scale`. Each run keeps the
# other part as it is.
#
# Needs what the tests need (.ci/run installs it); run as root it drops to the `pgpilot` user.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
begin='<!-- scale section: begin'
end='<!-- scale section: end -->'
# The scale section of BENCHMARKS.md ("in") or everything else ("out").
part() {
    [ -f BENCHMARKS.md ] || return 0
    awk -v b="$begin" -v e="$end" -v want="$1" '
        index($0, b) == 1 { on = 1 }
        (on && want == "in") || (!on && want == "out") { print }
        on && $0 == e { on = 0 }' BENCHMARKS.md
}
scale=false
for a in "$@"; do
    [ "$a" = --scale ] && scale=true
done
out=$(mktemp)
new=$(mktemp)
# The plot: written by the bench as the harness's unprivileged user (it drops root), copied
# to bench/scale.svg here.
plots=$(mktemp -d)
chmod 1777 "$plots"
trap 'rm -f "$out" "$new"; rm -rf "$plots"' EXIT
PGPILOT_BENCH_PLOT="$plots/scale.svg" PGPILOT_BENCH_PLOT_LINK=bench/scale.svg \
    cargo bench -p pgpilot --bench cluster -- --markdown "$@" >"$out"
if $scale; then
    if [ -f "$plots/scale.svg" ]; then
        cp "$plots/scale.svg" bench/scale.svg
    fi
    # The main part as it was (without trailing blank lines), then the new scale section.
    part out | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' >"$new"
    { echo; cat "$out"; } >>"$new"
    cat "$out"
else
    cp "$out" "$new"
    if [ -n "$(part in)" ]; then
        { echo; part in; } >>"$new"
    fi
    cat "$out"
fi
cp "$new" BENCHMARKS.md
