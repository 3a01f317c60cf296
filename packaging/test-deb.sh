#!/usr/bin/env bash
# Checks the Debian package without a container (about 5 minutes with a release build from a warm
# debug target, 10 seconds with a PATH.deb). .ci/run runs it on a package of the debug binaries
# the tests built: packaging/build-deb.sh --profile dev --no-build --fast.
#
#   packaging/test-deb.sh [PATH.deb]
#
# Without a path it builds the package first with packaging/build-deb.sh. Then:
#  1. `dpkg-deb -c` lists every expected file with its mode, owned by root, and the sample
#     configuration is a conffile;
#  2. `dpkg-deb -x` into a temporary directory: the extracted `pgpilot --version` prints the
#     package's version, `pgpilotctl --help` lists patronictl's commands, the man pages are valid
#     gzip and render, the completions parse (bash -n; zsh -n and fish -n when installed);
#  3. the sample configuration, its placeholders filled in, passes the extracted
#     `pgpilot --validate-config`, and the same copy without its etcd3 section does not;
#  4. `systemd-analyze verify` on the unit (ExecStart pointed at the extracted binary), skipped
#     with the reason printed when systemd-analyze is missing;
#  5. as root, unless a pgpilot package is installed already: `dpkg -i`, the installed
#     /usr/bin/pgpilot runs (as postgres when that user exists) and validates the filled-in
#     configuration, `systemd-analyze verify` on the installed unit (man page check included),
#     then `dpkg -r` removes the binaries, the unit, the man pages and the completions and keeps
#     the conffile, and `dpkg -P` removes it and /etc/pgpilot. Skipped with the reason otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok: $*"; }
skip() { echo "skip: $*"; }

deb=${1:-}
if [ -z "$deb" ]; then
    echo "==> packaging/build-deb.sh"
    deb=$(packaging/build-deb.sh | tail -n 1)
fi
[ -f "$deb" ] || fail "no such package: $deb"
echo "==> checking $deb"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The installed agent reads the filled-in sample as postgres (step 5).
chmod 0755 "$tmp"

# 1. contents and modes
dpkg-deb -c "$deb" >"$tmp/contents"
expect() { # MODE PATH
    local line
    line=$(awk -v p="./$2" '$6 == p' "$tmp/contents")
    [ -n "$line" ] || fail "$2 is not in the package"
    [ "$(awk '{print $1}' <<<"$line")" = "$1" ] || fail "$2: mode $(awk '{print $1}' <<<"$line"), expected $1"
    [ "$(awk '{print $2}' <<<"$line")" = "0/0" ] || fail "$2: owner $(awk '{print $2}' <<<"$line"), expected 0/0"
}
expect -rwxr-xr-x usr/bin/pgpilot
expect -rwxr-xr-x usr/bin/pgpilotctl
expect -rw-r--r-- lib/systemd/system/pgpilot.service
expect -rw-r--r-- etc/pgpilot/pgpilot.yml.sample
expect -rw-r--r-- usr/share/man/man1/pgpilot.1.gz
expect -rw-r--r-- usr/share/man/man1/pgpilotctl.1.gz
for cmd in list switchover failover edit-config show-config restart reload pause resume; do
    expect -rw-r--r-- "usr/share/man/man1/pgpilotctl-$cmd.1.gz"
done
expect -rw-r--r-- usr/share/bash-completion/completions/pgpilotctl
expect -rw-r--r-- usr/share/zsh/vendor-completions/_pgpilotctl
expect -rw-r--r-- usr/share/fish/vendor_completions.d/pgpilotctl.fish
expect -rw-r--r-- usr/share/doc/pgpilot/copyright
if awk '$1 !~ /^d/ && $2 != "0/0"' "$tmp/contents" | grep -q .; then
    fail "files not owned by root: $(awk '$2 != "0/0"' "$tmp/contents")"
fi
dpkg-deb -I "$deb" conffiles | grep -qx /etc/pgpilot/pgpilot.yml.sample ||
    fail "/etc/pgpilot/pgpilot.yml.sample is not a conffile"
ok "contents: $(grep -vc '^d' "$tmp/contents") files with the expected modes, the sample is a conffile"

# 2. the extracted binaries, man pages and completions
root="$tmp/root"
dpkg-deb -x "$deb" "$root"
version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}
out=$("$root/usr/bin/pgpilot" --version)
[ "$out" = "pgpilot $upstream" ] || fail "pgpilot --version printed '$out', expected 'pgpilot $upstream'"
ok "extracted pgpilot --version: $out"
# A binary that needs glibc's DT_RELR support must not install where the loader lacks it:
# dpkg-shlibdeps does not derive that version from the symbols.
if readelf -V "$root/usr/bin/pgpilot" 2>/dev/null | grep -q GLIBC_ABI_DT_RELR; then
    dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= 2.3[6-9])' ||
        fail "pgpilot needs GLIBC_ABI_DT_RELR (glibc 2.36) but Depends says: $(dpkg-deb -f "$deb" Depends)"
    ok "Depends asks for the glibc the packed relocations need: $(dpkg-deb -f "$deb" Depends)"
fi
out=$("$root/usr/bin/pgpilotctl" --help)
for cmd in list switchover failover edit-config topology; do
    grep -qw -- "$cmd" <<<"$out" || fail "pgpilotctl --help does not list $cmd"
done
ok "extracted pgpilotctl --help lists its commands"
for page in "$root"/usr/share/man/man1/*.1.gz; do
    gzip -t "$page" || fail "$page is not valid gzip"
done
if command -v man >/dev/null 2>&1; then
    out=$(MANWIDTH=80 man -l "$root/usr/share/man/man1/pgpilot.1.gz" 2>&1)
    grep -q -- "--validate-config" <<<"$out" || fail "man pgpilot does not render --validate-config: $out"
    ok "man pages: $(ls "$root"/usr/share/man/man1 | wc -l) valid gzip, pgpilot(1) renders"
else
    ok "man pages: $(ls "$root"/usr/share/man/man1 | wc -l) valid gzip (man not installed: not rendered)"
fi
bash -n "$root/usr/share/bash-completion/completions/pgpilotctl" || fail "bash completion does not parse"
bash -c "source '$root/usr/share/bash-completion/completions/pgpilotctl' && complete -p pgpilotctl" >/dev/null ||
    fail "bash completion does not register pgpilotctl"
checked=bash
for sh in zsh fish; do
    f=$root/usr/share/zsh/vendor-completions/_pgpilotctl
    [ "$sh" = fish ] && f=$root/usr/share/fish/vendor_completions.d/pgpilotctl.fish
    if command -v "$sh" >/dev/null 2>&1; then
        "$sh" -n "$f" || fail "$sh completion does not parse"
        checked="$checked $sh"
    else
        skip "$sh is not installed: its completion is not parsed"
    fi
done
ok "completions parse ($checked)"

# 3. the sample configuration
fill() {
    sed -e 's/<CLUSTER_NAME>/pgpilot-test/; s/<MEMBER_NAME>/pg1/; s/<MEMBER_IP>/10.0.0.11/' \
        -e 's/<ETCD_HOST>/10.0.0.5/; s/<SUPERUSER_PASSWORD>/su-secret/' \
        -e 's/<REPLICATION_PASSWORD>/repl-secret/; s/<REWIND_PASSWORD>/rewind-secret/' \
        -e 's#<CLUSTER_NETWORK>#10.0.0.0/24#' "$1"
}
conf="$tmp/pgpilot.yml"
fill "$root/etc/pgpilot/pgpilot.yml.sample" >"$conf"
chmod 0644 "$conf"
if grep -v '^[[:space:]]*#' "$conf" | grep -E '<[A-Z_]+>'; then
    fail "placeholders left after filling in the sample (the test's fill() needs updating)"
fi
"$root/usr/bin/pgpilot" --validate-config "$conf" || fail "the filled-in sample does not validate"
sed -e '/^etcd3:/,/^$/d' "$conf" >"$tmp/broken.yml"
if "$root/usr/bin/pgpilot" --validate-config "$tmp/broken.yml" 2>"$tmp/broken.err"; then
    fail "the sample without etcd3 validates: --validate-config checks nothing"
fi
grep -q etcd3 "$tmp/broken.err" || fail "no etcd3 problem reported: $(cat "$tmp/broken.err")"
ok "the filled-in sample validates (and without etcd3 it does not)"

# 4. the unit, extracted
if command -v systemd-analyze >/dev/null 2>&1; then
    mkdir "$tmp/unit"
    sed -e "s#^ExecStart=/usr/bin/pgpilot #ExecStart=$root/usr/bin/pgpilot #" \
        "$root/lib/systemd/system/pgpilot.service" >"$tmp/unit/pgpilot.service"
    systemd-analyze verify --man=no "$tmp/unit/pgpilot.service" ||
        fail "systemd-analyze verify rejects pgpilot.service"
    ok "systemd-analyze verify: the extracted unit"
else
    skip "systemd-analyze is not installed: the unit is not verified"
fi

# 5. install and remove, as root
if [ "$(id -u)" != 0 ]; then
    skip "not root: dpkg -i / dpkg -r not tried"
elif dpkg-query -W -f='${Status}' pgpilot 2>/dev/null | grep -q installed; then
    skip "a pgpilot package is installed already: dpkg -i / dpkg -r not tried, to leave it alone"
elif [ -e /etc/pgpilot ] || [ -e /usr/bin/pgpilot ]; then
    skip "/etc/pgpilot or /usr/bin/pgpilot exists outside a package: dpkg -i / dpkg -r not tried"
else
    dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$tmp/dpkg.log")"
    trap 'dpkg -P pgpilot >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
    out=$(/usr/bin/pgpilot --version)
    [ "$out" = "pgpilot $upstream" ] || fail "installed pgpilot --version printed '$out'"
    run_as=()
    if id postgres >/dev/null 2>&1 && command -v runuser >/dev/null 2>&1; then
        run_as=(runuser -u postgres --)
    fi
    "${run_as[@]}" /usr/bin/pgpilot --validate-config "$conf" ||
        fail "the installed pgpilot does not validate the filled-in sample"
    /usr/bin/pgpilotctl --help >/dev/null || fail "the installed pgpilotctl --help fails"
    ok "dpkg -i: /usr/bin/pgpilot runs${run_as:+ as postgres} ($out) and validates the sample"
    if command -v systemd-analyze >/dev/null 2>&1; then
        systemd-analyze verify /lib/systemd/system/pgpilot.service ||
            fail "systemd-analyze verify rejects the installed pgpilot.service"
        ok "systemd-analyze verify: the installed unit (ExecStart, ExecReload, man:pgpilot(1))"
    fi
    dpkg -r pgpilot >"$tmp/dpkg.log" 2>&1 || fail "dpkg -r: $(cat "$tmp/dpkg.log")"
    for f in /usr/bin/pgpilot /usr/bin/pgpilotctl /lib/systemd/system/pgpilot.service \
        /usr/share/man/man1/pgpilot.1.gz /usr/share/bash-completion/completions/pgpilotctl; do
        [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
    done
    [ -f /etc/pgpilot/pgpilot.yml.sample ] || fail "dpkg -r removed the conffile (only a purge should)"
    dpkg -P pgpilot >"$tmp/dpkg.log" 2>&1 || fail "dpkg -P: $(cat "$tmp/dpkg.log")"
    [ ! -e /etc/pgpilot ] || fail "/etc/pgpilot is still there after dpkg -P"
    if dpkg-query -W -f='${Status}' pgpilot 2>/dev/null | grep -q installed; then
        fail "dpkg still lists pgpilot as installed"
    fi
    trap 'rm -rf "$tmp"' EXIT
    ok "dpkg -r removes the files and keeps the conffile, dpkg -P removes /etc/pgpilot"
fi

echo "PASS: $deb ($((SECONDS - start)) s)"
