#!/usr/bin/env bash
# Resident memory of pgpilot binaries side by side (issue 12): one etcd on loopback, and for
# each binary given its own cluster (scope rssN) of M members (default 1), all started in the
# same run; after IDLE seconds it prints, per member, the agent's VmRSS, the guard's private
# memory (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup: the figure the benchmark adds
# to VmRSS), their sum, and both thread counts, and keeps /proc/PID/smaps of each in the run
# directory. Run as root (agents run as the `pgpilot` user); KEEP=1 leaves everything running.
#
#   cargo build --release -p pgpilot && cp target/release/pgpilot /tmp/pgpilot-new
#   M=2 bench/rss.sh 40 /tmp/pgpilot-base /tmp/pgpilot-new
set -euo pipefail
idle=$1; shift
base=$(mktemp -d /tmp/pgpilot-rss.XXXX); chmod 755 "$base"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ep=$(port); pp=$(port)
etcd --name e --data-dir "$base/etcd" --listen-client-urls http://127.0.0.1:$ep --advertise-client-urls http://127.0.0.1:$ep \
  --listen-peer-urls http://127.0.0.1:$pp --initial-advertise-peer-urls http://127.0.0.1:$pp --initial-cluster e=http://127.0.0.1:$pp >"$base/etcd.log" 2>&1 &
etcd_pid=$!
pids=()
i=0
names=()
for bin in "$@"; do
 i=$((i+1))
 for k in $(seq 1 "${M:-1}"); do
  d="$base/m$i-$k"; mkdir -p "$d"; cp "$bin" "$d/pgpilot"; chown -R pgpilot "$d"
  ap=$(port); gp=$(port)
  cat >"$d/m.yml" <<Y
scope: rss$i
namespace: /service/
name: m$i-$k
log: {level: INFO}
restapi: {listen: "127.0.0.1:$ap", connect_address: "127.0.0.1:$ap"}
etcd3: {hosts: "127.0.0.1:$ep"}
bootstrap:
  dcs: {ttl: 20, loop_wait: 1, retry_timeout: 3, postgresql: {use_pg_rewind: true, use_slots: true}}
  initdb: [{encoding: UTF8}]
postgresql:
  listen: "127.0.0.1:$gp"
  connect_address: "127.0.0.1:$gp"
  data_dir: $d/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: $d/pgpass
  authentication:
    superuser: {username: postgres, password: su}
    replication: {username: replicator, password: rep}
    rewind: {username: rewind_user, password: rw}
  parameters: {unix_socket_directories: "$d", fsync: "off"}
  pg_hba: ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256", "host replication all 127.0.0.1/32 scram-sha-256"]
Y
  chown pgpilot "$d/m.yml"
  runuser -u pgpilot -- "$d/pgpilot" "$d/m.yml" >"$d/agent.log" 2>&1 &
  pids+=($!); names+=("$bin#$k")
  echo "$d/agent.log api $ap" >&2
  [ "$k" = 1 ] && sleep 6
 done
done
sleep "$idle"
printf '%-40s %10s %10s %10s %8s %8s\n' binary agent_KiB guard_KiB sum_KiB threads g_thr
i=0
for pid in "${pids[@]}"; do
  bin=${names[$i]}; i=$((i+1))
  # runuser forks: the agent is its child
  apid=$(pgrep -P "$pid" | head -1 || true); [ -z "$apid" ] && apid=$pid
  gpid=$(pgrep -P "$apid" -f -- '--guard' | head -1 || true)
  rss=$(awk '/VmRSS/{print $2}' /proc/$apid/status)
  thr=$(ls /proc/$apid/task | wc -l)
  gpriv=0; gthr=0
  if [ -n "$gpid" ]; then gpriv=$(awk '/Private_(Clean|Dirty)/{s+=$2}END{print s}' /proc/$gpid/smaps_rollup); gthr=$(ls /proc/$gpid/task | wc -l); fi
  printf '%-40s %10s %10s %10s %8s %8s\n' "$bin" "$rss" "$gpriv" "$((rss+gpriv))" "$thr" "$gthr"
  cp /proc/$apid/smaps "$base/agent$i.smaps"; [ -n "$gpid" ] && cp /proc/$gpid/smaps "$base/guard$i.smaps"
  echo "agent pid $apid guard pid ${gpid:-none} smaps in $base" >&2
done
if [ "${KEEP:-}" = 1 ]; then echo "kept running: runuser pids ${pids[*]} etcd $etcd_pid" >&2; exit 0; fi
for pid in "${pids[@]}"; do apid=$(pgrep -P "$pid" | head -1 || true); [ -n "$apid" ] && kill -TERM "$apid"; done
for pid in "${pids[@]}"; do wait "$pid" || true; done
kill "$etcd_pid"; wait "$etcd_pid" || true
