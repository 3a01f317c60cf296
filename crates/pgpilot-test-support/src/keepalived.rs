//! keepalived (Debian's 2.2, `/usr/sbin/keepalived`) moving a virtual address to the leader:
//! one keepalived per member, each in a network namespace of its own, whose `vrrp_script` asks
//! its member's REST API for `/primary` (200 only on the member holding the leader key with a
//! writable primary). A member whose check fails enters FAULT and gives the address up; the
//! one whose check succeeds becomes MASTER and takes it.
//!
//! Layout (nothing in the root namespace but the agents, etcd and this process):
//!
//! ```text
//!  namespace pgpv-<id>-sw            namespace pgpv-<id>-<i>
//!  ┌──────────────────────┐          ┌──────────────────────────────────────┐
//!  │ bridge br0           │          │ keepalived, VRRP by unicast to peers │
//!  │   port p<i> ─────────┼── veth ──┤ vip0 192.0.2.<10+i>/24               │
//!  └──────────────────────┘          │      + the VIP 192.0.2.100 on MASTER │
//!                                    └──────────────────────────────────────┘
//! ```
//!
//! TEST-NET-1 addresses (192.0.2.0/24, RFC 5737) only, on links that exist only inside our
//! namespaces: nothing is routed, no host interface or route is touched. The veth pairs are
//! created inside the namespaces, so their names can not clash with anything outside; deleting
//! the namespaces deletes them.
//!
//! The check crosses namespaces: the agents listen on the root namespace's loopback, which a
//! process in a member's namespace can not reach. keepalived runs the check as root
//! (`script_user root`), and the check is `nsenter --net=/proc/<helper>/ns/net curl ...`: it
//! enters the network namespace of the privileged helper (the root namespace, where the agents
//! are) for the one `curl`. On a real host keepalived and the agent share the host's namespace
//! and the check is the `curl` alone. `enable_script_security` holds: `nsenter` and `curl` are
//! root-owned in root-owned directories.
//!
//! Privileges: namespaces and keepalived need root, the harness drops the test process to
//! `pgpilot`, so a [`RootHelper`] started before [`crate::init`] builds the layout, starts each
//! keepalived (`--dont-fork`, its own configuration, pid files and log in a root-owned
//! directory, its PID remembered), answers which namespaces hold the address, and on exit stops
//! each keepalived by its PID (SIGTERM, SIGKILL after 5 s) and deletes the namespaces it made.
//! Names carry this process's PID; a name already taken fails the setup instead of reusing it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::cluster::Cluster;
use super::daemon::installed;
use super::root_helper::RootHelper;
use super::{tail, wait_for};

/// Debian's keepalived.
pub const KEEPALIVED_BIN: &str = "/usr/sbin/keepalived";
/// The virtual address (TEST-NET-1), on the members' subnet.
pub const VIP: &str = "192.0.2.100";
/// The members' subnet: member `i` is `.<10+i>`.
const SUBNET: &str = "192.0.2";
/// The interface keepalived uses in each member's namespace.
const INTERFACE: &str = "vip0";

/// The privileged helper's functions (see [`RootHelper::start`]).
const HELPER: &str = r#"
ns() { echo "pgpv-$ID-$1"; }
sw="pgpv-$ID-sw"
pids=()
# Alive and not a zombie (a child we have not reaped yet still answers kill -0).
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for i in $(seq 0 $((N - 1))); do ip netns del "$(ns "$i")" 2>/dev/null; done
    ip netns del "$sw" 2>/dev/null
    rm -rf "$DIR"
}
setup() {
    mkdir -m 0755 "$DIR" &&
    ip netns add "$sw" &&
    ip -n "$sw" link add br0 type bridge &&
    ip -n "$sw" link set br0 up || return 1
    for i in $(seq 0 $((N - 1))); do
        ip netns add "$(ns "$i")" &&
        ip -n "$sw" link add "p$i" type veth peer name "$IF" netns "$(ns "$i")" &&
        ip -n "$sw" link set "p$i" master br0 up &&
        ip -n "$(ns "$i")" addr add "$SUBNET.$((10 + i))/24" dev "$IF" &&
        ip -n "$(ns "$i")" link set "$IF" up &&
        ip -n "$(ns "$i")" link set lo up || return 1
    done
}
handle() {
    local cmd=$1 i=$2 arg=$3
    case "$cmd" in
        pid) echo "ok $$" ;;
        start)
            # The configuration is copied: keepalived runs as root from a root-owned file.
            conf="$DIR/keepalived-$i.conf"
            if out=$(cp -- "$arg" "$conf" 2>&1); then
                ip netns exec "$(ns "$i")" "$KEEPALIVED" --dont-fork --log-console \
                    --log-detail --no-syslog --vrrp --use-file="$conf" \
                    --pid="$DIR/keepalived-$i.pid" --vrrp_pid="$DIR/keepalived-$i.vrrp.pid" \
                    --checkers_pid="$DIR/keepalived-$i.checkers.pid" \
                    </dev/null >"$DIR/keepalived-$i.log" 2>&1 &
                pids+=("$!")
                echo "ok $!"
            else echo "error: $out" | tr '\n' ' '; echo; fi ;;
        holders)
            h=""
            for j in $(seq 0 $((N - 1))); do
                if ip -n "$(ns "$j")" -4 -o addr show dev "$IF" | grep -q " $VIP/"; then
                    h="$h $j"
                fi
            done
            echo "ok$h" ;;
        *) echo "error: unknown command $cmd" ;;
    esac
}
"#;

/// The namespaces, the keepalived processes and the helper that owns them.
pub struct Keepalived {
    /// `pgpv-<id>-<i>` are the members' namespaces.
    id: String,
    members: usize,
    /// The helper's root-owned directory: configurations, pid files, logs.
    dir: PathBuf,
    /// The helper's PID: `/proc/<it>/ns/net` is the root namespace, where the agents listen.
    helper_pid: u32,
    /// Each started member's configuration, as written.
    pub configs: Vec<String>,
    helper: RootHelper,
}

impl Keepalived {
    /// Whether keepalived is installed; the reason to skip the test when not.
    pub fn installed() -> Result<(), String> {
        installed(Path::new(KEEPALIVED_BIN), "keepalived")
    }

    /// Builds the namespaces for `members` members. Must run as root, before [`crate::init`]
    /// drops privileges; `Err` is the reason to skip the test.
    pub fn prepare(members: usize) -> Result<Keepalived, String> {
        Keepalived::installed()?;
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (network namespaces, keepalived); skipping".into());
        }
        for tool in ["/usr/sbin/ip", "/usr/bin/nsenter", "/usr/bin/curl"] {
            if !Path::new(tool).is_file() {
                return Err(format!(
                    "{tool} is missing (Debian packages iproute2, util-linux, curl); skipping"
                ));
            }
        }
        let pid = std::process::id();
        let id = format!("{}", pid % 100_000);
        let dir = std::env::temp_dir().join(format!("pgpilot-vip-{pid}"));
        let helper = RootHelper::start(
            "keepalived",
            HELPER,
            &[
                ("ID", id.clone()),
                ("N", members.to_string()),
                ("DIR", dir.display().to_string()),
                ("SUBNET", SUBNET.into()),
                ("IF", INTERFACE.into()),
                ("VIP", VIP.into()),
                ("KEEPALIVED", KEEPALIVED_BIN.into()),
            ],
        )
        .map_err(|e| format!("{e}; skipping (can network namespaces be created here?)"))?;
        let helper_pid = helper
            .command("pid")
            .map_err(|e| format!("{e:#}"))?
            .parse()
            .map_err(|e| format!("the keepalived helper's pid: {e}"))?;
        eprintln!(
            "keepalived: namespaces pgpv-{id}-0..{} on a bridge in pgpv-{id}-sw ({SUBNET}.0/24)",
            members - 1
        );
        Ok(Keepalived {
            id,
            members,
            dir,
            helper_pid,
            configs: Vec::new(),
            helper,
        })
    }

    /// Member `i`'s address in its namespace.
    pub fn member_ip(i: usize) -> String {
        format!("{SUBNET}.{}", 10 + i)
    }

    /// keepalived's configuration for one member: VRRP by unicast from `own_ip` to `peers` on
    /// `interface`, the address `vip/24` on MASTER, and `check` (a command, split by
    /// keepalived, no shell) every second: a failure puts the member in FAULT, which releases
    /// the address at once, and one success brings it back to BACKUP.
    pub fn config(
        own_ip: &str,
        peers: &[String],
        interface: &str,
        vip: &str,
        check: &str,
    ) -> String {
        format!(
            "global_defs {{
    enable_script_security
    script_user root
}}
vrrp_script chk_primary {{
    script \"{check}\"
    interval 1
    timeout 2
    fall 1
    rise 1
}}
vrrp_instance pgpilot {{
    state BACKUP
    interface {interface}
    virtual_router_id 51
    priority 100
    advert_int 1
    unicast_src_ip {own_ip}
    unicast_peer {{
        {peers}
    }}
    virtual_ipaddress {{
        {vip}/24 dev {interface}
    }}
    track_script {{
        chk_primary
    }}
}}
",
            peers = peers.join("\n        "),
        )
    }

    /// The check for member `api_url` (`http://127.0.0.1:<port>`): `curl` of `/primary`, run
    /// in the root namespace through `nsenter` (see the module's documentation).
    fn check(&self, api_url: &str) -> String {
        format!(
            "/usr/bin/nsenter --net=/proc/{}/ns/net /usr/bin/curl -sfk -o /dev/null \
             --max-time 1 --noproxy 127.0.0.1 {api_url}/primary",
            self.helper_pid
        )
    }

    /// Starts one keepalived per member of `cluster`, each checking its own member's agent.
    pub fn start(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        ensure!(cluster.len() == self.members, "one namespace per member");
        for i in 0..self.members {
            let m = cluster.member(i);
            let peers: Vec<String> = (0..self.members)
                .filter(|&j| j != i)
                .map(Keepalived::member_ip)
                .collect();
            let check = self.check(&format!("{}://127.0.0.1:{}", m.api_scheme, m.api_port));
            let text =
                Keepalived::config(&Keepalived::member_ip(i), &peers, INTERFACE, VIP, &check);
            let path = cluster.dir().join(format!("keepalived-{i}.conf"));
            std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
            let pid = self
                .helper
                .command(&format!("start {i} {}", path.display()))?;
            eprintln!(
                "keepalived {i}: PID {pid} in namespace pgpv-{}-{i}",
                self.id
            );
            self.configs.push(text);
        }
        Ok(())
    }

    /// The members whose namespace holds the address now.
    pub fn holders(&self) -> anyhow::Result<Vec<usize>> {
        let text = self.helper.command("holders")?;
        text.split_whitespace()
            .map(|s| s.parse().context("a member index"))
            .collect()
    }

    /// Waits until the address is on member `i`'s namespace and on no other; returns how long
    /// that took.
    pub async fn wait_for_vip_on(&self, i: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        wait_for(
            timeout,
            &format!("the VIP on member {i} alone"),
            async || {
                let holders = self.holders()?;
                ensure!(holders == [i], "held by {holders:?}");
                Ok(())
            },
        )
        .await;
        start.elapsed()
    }

    /// The lines of the started keepalived's logs that say a script or configuration line is
    /// not used as written (script security, unknown keywords, configuration errors).
    pub fn warnings(&self) -> anyhow::Result<Vec<String>> {
        const SIGNS: [&str; 6] = [
            "security",
            "insecure",
            "not executable",
            "unknown keyword",
            "error",
            "warning",
        ];
        let mut found = Vec::new();
        for i in 0..self.configs.len() {
            let path = self.log(i);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            ensure!(
                text.contains("Startup complete"),
                "keepalived {i} did not start"
            );
            found.extend(
                text.lines()
                    .filter(|l| SIGNS.iter().any(|s| l.to_lowercase().contains(s)))
                    .map(|l| format!("keepalived {i}: {l}")),
            );
        }
        Ok(found)
    }

    /// keepalived's log for member `i`.
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("keepalived-{i}.log"))
    }
}

impl Drop for Keepalived {
    /// Prints each keepalived's log tail if the test failed; then the helper's drop stops them
    /// and deletes the namespaces.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.configs.len() {
                eprintln!(
                    "--- keepalived {i} log (tail) ---\n{}",
                    tail(&self.log(i), 30)
                );
            }
        }
    }
}
