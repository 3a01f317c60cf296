#!/usr/bin/env bash
# Builds the Debian package of pgpilot: target/debian/pgpilot_<version>-1_<arch>.deb.
#
#   cargo install cargo-deb --locked   # once
#   packaging/build-deb.sh [cargo-deb options, e.g. --fast]
#
# 1. pgpilot-docgen (crates/pgpilot/src/docgen.rs, `--features docgen`, a debug build) writes
#    the man pages of pgpilot and pgpilotctl and pgpilotctl's bash, zsh and fish completions
#    into target/assets;
# 2. cargo deb builds pgpilot and pgpilotctl in release mode (with `--profile dev --no-build`,
#    as .ci/run calls it: takes the debug binaries already built) and packages them with those
#    files, packaging/pgpilot.service and packaging/pgpilot.yml.sample
#    (`[package.metadata.deb]` in crates/pgpilot/Cargo.toml lists them).
#
# Prints the path of the .deb on its last line.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi

echo "==> pgpilot-docgen target/assets" >&2
rm -rf target/assets
cargo run --quiet -p pgpilot --features docgen --bin pgpilot-docgen -- target/assets

echo "==> cargo deb -p pgpilot $*" >&2
cargo deb -p pgpilot "$@"
