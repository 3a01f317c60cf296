//! Network namespaces for the `partition` fault.
//!
//! Layout (used for every fault of a run that includes `partition`, when root):
//!
//! ```text
//!  root namespace                                   member namespace pgpc-<id>-<i>
//!  ┌──────────────────────────────────────┐         ┌─────────────────────────────────┐
//!  │ etcd 127.0.0.1:E                     │         │ agent + PostgreSQL              │
//!  │ proxy <subnet>.1:E -> 127.0.0.1:E    │         │ listen <subnet>.<10+i>:P / :A   │
//!  │ proxy 127.0.0.1:P -> <subnet>.<10+i>:P│         │                                 │
//!  │ bridge pgpc<id>br <subnet>.1/24 ─────┼─ veth ──┤ pgpc<id>m<i> <subnet>.<10+i>/24 │
//!  │   port pgpc<id>r<i>                  │         └─────────────────────────────────┘
//!  └──────────────────────────────────────┘
//! ```
//!
//! Members reach each other over the bridge (layer 2, no forwarding sysctl in the root
//! namespace), and etcd through a TCP proxy in this process on the bridge address. This process
//! (the clients, the harness's checks) reaches each member through TCP proxies on the harness's
//! usual `127.0.0.1:<port>`, so the harness works unchanged. A partition takes the root end of
//! the leader's veth link down: the leader loses etcd, its replicas and its clients at once.
//!
//! Why link-local (`169.254.<n>.0/24`) and not 127.0.0.0/8: in the root namespace every
//! 127.0.0.0/8 address is local (the `local 127.0.0.0/8 dev lo` route of the local table, which
//! is consulted before any other), so a reply to a member address in 127.0.0.0/8 would loop
//! back to `lo` instead of leaving through the bridge, even with `route_localnet=1` on every
//! link. Making it work would mean reordering the root namespace's policy routing rules — a
//! machine-wide change we do not make in tests. Link-local addresses only on our own bridge and
//! veth pair are not routed anywhere and touch nothing else.
//!
//! Privileges: creating namespaces and links needs root, but the harness drops the whole
//! process to the user `pgpilot` (PostgreSQL refuses root). So, while still root, [`Netns::prepare`]
//! starts a small privileged helper (a bash script run as root, commands on its stdin: `down i`,
//! `up i`) that builds the layout, and gives the `pgpilot` group a copy of `nsenter` with the
//! file capability `cap_sys_admin` in a root-owned 0750 directory: the agent wrapper script uses
//! it to enter its member's namespace, and the capability is gone at the `exec` of the agent (a
//! non-root exec of a file without capabilities keeps none). The helper removes everything when
//! its stdin closes — when this process exits, normally, by panic or by SIGKILL — and on SIGTERM
//! (the harness's [`RootHelper`], shared with the keepalived test).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pgpilot_test_support::root_helper::RootHelper;

/// The privileged helper: builds the layout, takes links down and up, removes everything on EOF.
const HELPER: &str = r#"
ns() { echo "pgpc-$ID-$1"; }
rootif() { echo "pgpc${ID}r$1"; }
memif() { echo "pgpc${ID}m$1"; }
br="pgpc${ID}br"
cleanup() {
    for i in $(seq 0 $((N - 1))); do
        ip netns del "$(ns "$i")" 2>/dev/null
        ip link del "$(rootif "$i")" 2>/dev/null
    done
    ip link del "$br" 2>/dev/null
    rm -rf "$CAPDIR"
}
setup() {
    ip link add "$br" type bridge &&
    ip addr add "$SUBNET.1/24" dev "$br" &&
    ip link set "$br" up || return 1
    for i in $(seq 0 $((N - 1))); do
        ip netns add "$(ns "$i")" &&
        ip link add "$(rootif "$i")" type veth peer name "$(memif "$i")" netns "$(ns "$i")" &&
        ip link set "$(rootif "$i")" master "$br" up &&
        ip -n "$(ns "$i")" addr add "$SUBNET.$((10 + i))/24" dev "$(memif "$i")" &&
        ip -n "$(ns "$i")" link set "$(memif "$i")" up &&
        ip -n "$(ns "$i")" link set lo up || return 1
    done
    mkdir -m 0750 "$CAPDIR" && chgrp "$GID" "$CAPDIR" &&
    cp "$NSENTER" "$CAPDIR/nsenter" && chgrp "$GID" "$CAPDIR/nsenter" &&
    chmod 0750 "$CAPDIR/nsenter" && setcap cap_sys_admin+ep "$CAPDIR/nsenter"
}
handle() {
    local cmd=$1 i=$2
    case "$cmd" in
        down|up)
            if out=$(ip link set "$(rootif "$i")" "$cmd" 2>&1); then echo ok
            else echo "error: $out" | tr '\n' ' '; echo; fi ;;
        *) echo "error: unknown command $cmd" ;;
    esac
}
"#;

/// The members' network namespaces, the bridge and the helper that owns them.
pub struct Netns {
    helper: RootHelper,
    id: String,
    /// `169.254.<n>`: the bridge is `.1`, member `i` is `.<10+i>`.
    subnet: String,
    capdir: PathBuf,
    members: usize,
}

/// Why the partition fault can not run when [`Netns::prepare`] was not called or failed.
pub fn unavailable_reason() -> String {
    "network namespaces are not set up (needs root and iproute2; see the message at start)".into()
}

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl Netns {
    /// Builds the layout for `members` members through the privileged helper. Must run as root,
    /// before the harness drops privileges. `Err` says why the partition fault will be skipped.
    pub fn prepare(members: usize) -> Result<Netns, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (network namespaces and veth links)".into());
        }
        for (tool, package) in [
            ("ip", "iproute2"),
            ("nsenter", "util-linux"),
            ("setcap", "libcap2-bin"),
        ] {
            if find_tool(tool).is_none() {
                return Err(format!(
                    "`{tool}` is missing: install the Debian package {package}"
                ));
            }
        }
        let nsenter = find_tool("nsenter").ok_or("nsenter is missing")?;
        let user = nix::unistd::User::from_name(crate::harness::TEST_USER)
            .ok()
            .flatten()
            .ok_or_else(|| format!("the user {} does not exist", crate::harness::TEST_USER))?;
        let pid = std::process::id();
        let id = format!("{}", pid % 100_000);
        let subnet = format!("169.254.{}", 100 + pid % 100);
        let capdir = std::env::temp_dir().join(format!("pgpilot-chaos-netns-{pid}"));
        let helper = RootHelper::start(
            "netns",
            HELPER,
            &[
                ("ID", id.clone()),
                ("N", members.to_string()),
                ("SUBNET", subnet.clone()),
                ("GID", user.gid.to_string()),
                ("CAPDIR", capdir.display().to_string()),
                ("NSENTER", nsenter.display().to_string()),
            ],
        )?;
        eprintln!(
            "chaos: network namespaces pgpc-{id}-0..{} on bridge pgpc{id}br ({subnet}.0/24)",
            members - 1
        );
        Ok(Netns {
            helper,
            id,
            subnet,
            capdir,
            members,
        })
    }

    /// The bridge's address in the root namespace (where the etcd proxy listens).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// Member `i`'s address inside its namespace.
    pub fn member_ip(&self, i: usize) -> Ipv4Addr {
        self.ip(10 + i as u8)
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        format!("{}.{last}", self.subnet)
            .parse()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn command(&self, cmd: &str) -> anyhow::Result<()> {
        self.helper.command(cmd).map(drop)
    }

    /// Takes member `i`'s link down: it loses etcd, its peers and its clients.
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        self.command(&format!("down {i}"))
    }

    /// Brings member `i`'s link up again.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        self.command(&format!("up {i}"))
    }

    /// Writes the agent wrapper into `dir`: an executable that runs `agent` with its arguments
    /// inside the namespace of the member whose configuration (`<dir>/member-<i>/...`) it gets.
    pub fn agent_wrapper(&self, dir: &Path, agent: &Path) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let mut cases = String::new();
        for i in 0..self.members {
            cases.push_str(&format!("    */member-{i}/*) ns=pgpc-{}-{i} ;;\n", self.id));
        }
        let script = format!(
            "#!/bin/sh\n# pgpilot-chaos: runs the agent in its member's network namespace.\n\
             case \"$1\" in\n{cases}    *) echo \"pgpilot-chaos: no namespace for $1\" >&2; exit 1 ;;\n\
             esac\nexec {} --net=/run/netns/$ns -- {} \"$@\"\n",
            self.capdir.join("nsenter").display(),
            agent.display()
        );
        let path = dir.join("agent-in-netns.sh");
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

/// TCP forwarders in this process: `listen` -> `target`, one task per connection.
pub struct Proxies {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxies {
    pub fn new() -> Proxies {
        Proxies { tasks: Vec::new() }
    }

    /// Forwards connections accepted on `listen` to `target` (3 s connect timeout).
    pub async fn forward(&mut self, listen: SocketAddr, target: SocketAddr) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("proxy: bind {listen}"))?;
        self.tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let connect = tokio::net::TcpStream::connect(target);
                    if let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(3), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        Ok(())
    }
}

impl Default for Proxies {
    fn default() -> Self {
        Proxies::new()
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
