#!/usr/bin/env bash
# A local 3-member pgpilot cluster with its own etcd, all on 127.0.0.1, in a temporary directory.
#
#   ./demo/run.sh          # Ctrl-C stops everything and removes the directory
#
# Installs missing Debian packages (as root), builds pgpilot, and when run as root runs etcd,
# PostgreSQL and the agents as the unprivileged user `pgpilot` (PostgreSQL refuses root).
# Ports: PostgreSQL from 54321, REST API from 8008, etcd from 2379, skipping ports in use.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATE="$ROOT/demo/member.yml.in"
DEMO_USER=pgpilot
PG_BIN_DIR=/usr/lib/postgresql/15/bin
SCOPE=pgpilot-demo
MEMBERS=(pg1 pg2 pg3)
SUPERUSER_PASSWORD=demo-superuser

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages -----------------------------------------------------------------------
packages=(etcd-server postgresql-15 protobuf-compiler libprotobuf-dev)
missing=()
for p in "${packages[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages; run: sudo apt-get install ${missing[*]}"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# --- 2. build ---------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
say "building pgpilot"
(cd "$ROOT" && cargo build -p pgpilot --bins)
AGENT_BUILT="${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgpilot"
[ -x "$AGENT_BUILT" ] || die "no agent binary at $AGENT_BUILT"

# --- 3. who runs the servers ------------------------------------------------------------------
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    if ! id "$DEMO_USER" >/dev/null 2>&1; then
        say "creating the unprivileged user $DEMO_USER"
        useradd --system --create-home --shell /bin/bash "$DEMO_USER"
    fi
    RUN_AS=(setpriv --reuid="$DEMO_USER" --regid="$DEMO_USER" --init-groups --)
fi

# --- 4. temporary directory and teardown ------------------------------------------------------
DEMO_DIR=$(mktemp -d /tmp/pgpilot-demo.XXXXXX)
chmod 755 "$DEMO_DIR"
mkdir "$DEMO_DIR/bin"
# A copy the unprivileged user can execute even when the repository lives under /root.
cp "$AGENT_BUILT" "$DEMO_DIR/bin/pgpilot"
cp "$(dirname "$AGENT_BUILT")/pgpilotctl" "$DEMO_DIR/bin/pgpilotctl"
chmod 755 "$DEMO_DIR/bin/pgpilot" "$DEMO_DIR/bin/pgpilotctl"

ETCD_PID=""
AGENT_PIDS=()
SLEEP_PID=""

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# PID of the postmaster of a data directory, if it is alive and is a postgres process.
postmaster_of() {
    local pidfile="$1/postmaster.pid" pid
    [ -f "$pidfile" ] || return 1
    pid=$(head -n 1 "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
    echo "$pid"
}

cleanup() {
    trap - INT TERM EXIT
    echo
    say "stopping the cluster"
    local pid deadline m pm
    for pid in "${AGENT_PIDS[@]}"; do
        alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 30))
    for pid in "${AGENT_PIDS[@]}"; do
        while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    done
    for m in "${MEMBERS[@]}"; do
        if pm=$(postmaster_of "$DEMO_DIR/$m/data"); then
            kill -KILL "$pm" 2>/dev/null || true
        fi
    done
    if alive "$ETCD_PID"; then
        kill -TERM "$ETCD_PID" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while alive "$ETCD_PID" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        alive "$ETCD_PID" && kill -KILL "$ETCD_PID" 2>/dev/null || true
    fi
    alive "$SLEEP_PID" && kill "$SLEEP_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DEMO_DIR"
    say "removed $DEMO_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "${#RUN_AS[@]}" -eq 0 ] || chown -R "$DEMO_USER:" "$DEMO_DIR"

# --- 5. ports ---------------------------------------------------------------------------------
# A port is free when nothing accepts a connection on it and this script has not picked it yet
# (pick_port runs in a $(...) subshell, so the caller records the pick in TAKEN).
TAKEN=" "
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p=$1
    while [[ "$TAKEN" == *" $p "* ]] || port_in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}
ETCD_PORT=$(pick_port 2379)
TAKEN="$TAKEN$ETCD_PORT "
ETCD_PEER_PORT=$(pick_port 2380)
TAKEN="$TAKEN$ETCD_PEER_PORT "
declare -A PG_PORT API_PORT
next_pg=54321
next_api=8008
for m in "${MEMBERS[@]}"; do
    PG_PORT[$m]=$(pick_port "$next_pg")
    TAKEN="$TAKEN${PG_PORT[$m]} "
    next_pg=$((PG_PORT[$m] + 1))
    API_PORT[$m]=$(pick_port "$next_api")
    TAKEN="$TAKEN${API_PORT[$m]} "
    next_api=$((API_PORT[$m] + 1))
done

# Starts a command in the background, in its own session (Ctrl-C reaches only this script, which
# then stops everything in order), as the unprivileged user when run as root.
launch() {
    local log=$1
    shift
    setsid "${RUN_AS[@]}" env -u PGHOST -u PGPORT -u PGDATA "$@" >>"$log" 2>&1 </dev/null &
}

# --- 6. etcd ----------------------------------------------------------------------------------
say "starting etcd on 127.0.0.1:$ETCD_PORT"
launch "$DEMO_DIR/etcd.log" HOME="$DEMO_DIR" /usr/bin/etcd \
    --name=demo --data-dir="$DEMO_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="demo=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger=zap --log-outputs=stderr --log-level=warn
ETCD_PID=$!

# http GET through Perl's core HTTP::Tiny (no curl on a minimal Debian); prints the body,
# fails unless the status is 2xx.
http_get() {
    perl -MHTTP::Tiny -e '
        my $r = HTTP::Tiny->new(timeout => 3, proxy => undef, http_proxy => undef)->get($ARGV[0]);
        print $r->{content}; exit($r->{success} ? 0 : 1);' "$1"
}

deadline=$((SECONDS + 30))
until http_get "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"true"'; do
    alive "$ETCD_PID" || { tail -n 20 "$DEMO_DIR/etcd.log" >&2; die "etcd exited"; }
    [ "$SECONDS" -lt "$deadline" ] || die "etcd is not healthy after 30 s"
    sleep 0.3
done

# --- 7. agents --------------------------------------------------------------------------------
for m in "${MEMBERS[@]}"; do
    dir="$DEMO_DIR/$m"
    mkdir -p "$dir"
    sed -e "s|@NAME@|$m|g" -e "s|@API_PORT@|${API_PORT[$m]}|g" -e "s|@PG_PORT@|${PG_PORT[$m]}|g" \
        -e "s|@ETCD_PORT@|$ETCD_PORT|g" -e "s|@DIR@|$dir|g" "$TEMPLATE" >"$dir/$m.yml"
    [ "${#RUN_AS[@]}" -eq 0 ] || chown -R "$DEMO_USER:" "$dir"
done
say "starting ${MEMBERS[*]}"
for m in "${MEMBERS[@]}"; do
    launch "$DEMO_DIR/$m/pgpilot.log" HOME="$DEMO_DIR/$m" "$DEMO_DIR/bin/pgpilot" "$DEMO_DIR/$m/$m.yml"
    AGENT_PIDS+=($!)
done

# --- 8. wait for one leader and two streaming replicas ----------------------------------------
# Prints the members of GET /cluster as a table; exits 0 once there is a running leader and
# every other member streams.
cluster_table() {
    http_get "$1" | perl -MJSON::PP -e '
        local $/; my $c = decode_json(<STDIN>);
        my @m = @{ $c->{members} || [] };
        printf "%-6s %-17s %-8s %-10s %3s %s\n", qw(Member Host Role State TL Lag);
        my ($leaders, $streaming) = (0, 0);
        for my $x (@m) {
            my $lag = $x->{role} eq "leader" ? "" : ($x->{lag} // "");
            $lag = sprintf("%d B", $lag) if $lag =~ /^\d+$/;
            printf "%-6s %-17s %-8s %-10s %3s %s\n", $x->{name}, "$x->{host}:$x->{port}",
                $x->{role}, $x->{state}, $x->{timeline} // "", $lag;
            $leaders++ if $x->{role} eq "leader" && $x->{state} eq "running";
            $streaming++ if $x->{role} ne "leader" && $x->{state} eq "streaming";
        }
        exit(($leaders == 1 && $streaming == @m - 1 && @m == $ARGV[0]) ? 0 : 1);' "${#MEMBERS[@]}"
}

say "waiting for a leader and streaming replicas (initdb, then pg_basebackup)"
first_api="http://127.0.0.1:${API_PORT[${MEMBERS[0]}]}/cluster"
deadline=$((SECONDS + 300))
until cluster_table "$first_api" >/dev/null 2>&1; do
    for i in "${!MEMBERS[@]}"; do
        if ! alive "${AGENT_PIDS[$i]}"; then
            tail -n 30 "$DEMO_DIR/${MEMBERS[$i]}/pgpilot.log" >&2
            die "agent ${MEMBERS[$i]} exited (log above)"
        fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
        for m in "${MEMBERS[@]}"; do
            echo "--- $m" >&2
            tail -n 15 "$DEMO_DIR/$m/pgpilot.log" >&2
        done
        die "the cluster did not come up within 300 s (logs above)"
    fi
    sleep 1
done

# --- 9. tell the user ------------------------------------------------------------------------
echo
say "cluster $SCOPE is up"
cluster_table "$first_api" || true
hosts=""
for m in "${MEMBERS[@]}"; do hosts="$hosts,127.0.0.1:${PG_PORT[$m]}"; done
hosts=${hosts#,}
cat <<EOF

Connect (password: $SUPERUSER_PASSWORD):
  primary:  psql "postgresql://postgres@$hosts/postgres?target_session_attrs=read-write"
  any:      psql "postgresql://postgres@$hosts/postgres?target_session_attrs=any"
EOF
for m in "${MEMBERS[@]}"; do
    printf '  %-8s  psql -h 127.0.0.1 -p %s -U postgres postgres\n' "$m:" "${PG_PORT[$m]}"
done
echo
echo "REST API (Patroni's):"
for i in "${!MEMBERS[@]}"; do
    m=${MEMBERS[$i]}
    printf '  %-4s http://127.0.0.1:%s/patroni   /cluster   /primary   /replica   (agent pid %s)\n' \
        "$m" "${API_PORT[$m]}" "${AGENT_PIDS[$i]}"
done
cat <<EOF

control:  $DEMO_DIR/bin/pgpilotctl -c $DEMO_DIR/${MEMBERS[0]}/${MEMBERS[0]}.yml list
          (also: switchover --force, pause --wait, edit-config -p work_mem=64MB --force, history)
etcd:     http://127.0.0.1:$ETCD_PORT   keys under /service/$SCOPE/
files:    $DEMO_DIR   (configs and logs: $DEMO_DIR/<member>/)
try:      kill -9 the leader's agent pid and its postmaster (head -1 <member>/data/postmaster.pid)
          and watch another member take over: http://127.0.0.1:${API_PORT[${MEMBERS[1]}]}/cluster

Ctrl-C stops everything and removes $DEMO_DIR.
EOF

while :; do
    sleep 3600 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
done
