//! HAProxy (Debian's 2.6, `/usr/sbin/haproxy`) in front of a [`Cluster`], configured as
//! Patroni's templates do: a `primary` section whose health check is the REST API's
//! `/primary`, a `replicas` section on `/replica`, seed timings (`inter 3s fall 3 rise 2`) and
//! `on-marked-down shutdown-sessions`. The admin socket (`show stat`) tells which servers each
//! section routes to. Runs in the foreground (`-db`) as the test's user, on loopback ports.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::cluster::Cluster;
use super::daemon::{installed, Daemon};
use super::{free_port, wait_for, FAILOVER_TIMEOUT};

/// Debian's HAProxy.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// One server line of `show stat`.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The `listen` section (`primary`, `replicas`).
    pub section: String,
    /// The server's name: the member's name.
    pub server: String,
    /// `UP`, `DOWN`, `UP 1/3` (going down), `DOWN 1/2` (going up), `MAINT`, ...
    pub status: String,
}

impl ServerState {
    /// HAProxy routes new connections to it (`UP`, also while a failing check counts down).
    pub fn routes(&self) -> bool {
        self.status.starts_with("UP")
    }
}

pub struct HaProxy {
    daemon: Daemon,
    /// The `primary` section's port (writes).
    pub primary_port: u16,
    /// The `replicas` section's port (reads).
    pub replicas_port: u16,
    /// The admin socket.
    pub socket: PathBuf,
    /// The configuration file's text.
    pub config: String,
}

impl HaProxy {
    /// Whether HAProxy is installed; the reason to skip the test when not.
    pub fn installed() -> Result<(), String> {
        installed(Path::new(HAPROXY_BIN), "haproxy")
    }

    /// The configuration for `members` `(name, PostgreSQL port, REST API port)`.
    pub fn config(
        primary_port: u16,
        replicas_port: u16,
        socket: &Path,
        members: &[(&str, u16, u16)],
        https: bool,
    ) -> String {
        let ssl = if https { " check-ssl verify none" } else { "" };
        let section = |name: &str, port: u16, check: &str| {
            let mut s = format!(
                "listen {name}\n    bind 127.0.0.1:{port}\n    option httpchk OPTIONS {check}\n    \
                 http-check expect status 200\n    \
                 default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n"
            );
            for (member, pg_port, api_port) in members {
                s.push_str(&format!(
                    "    server {member} 127.0.0.1:{pg_port} maxconn 100 check port {api_port}{ssl}\n"
                ));
            }
            s
        };
        format!(
            "global\n    maxconn 200\n    log stdout format raw local0 info\n    \
             stats socket {} mode 600 level admin\n\n\
             defaults\n    mode tcp\n    log global\n    retries 2\n    timeout queue 5s\n    \
             timeout connect 4s\n    timeout client 30m\n    timeout server 30m\n    \
             timeout check 5s\n\n{}\n{}",
            socket.display(),
            section("primary", primary_port, "/primary"),
            section("replicas", replicas_port, "/replica"),
        )
    }

    /// Starts HAProxy in `<cluster dir>/haproxy/` for every member of `cluster`; waits until its
    /// admin socket answers.
    pub fn start(cluster: &Cluster) -> HaProxy {
        let dir = cluster.dir().join("haproxy");
        std::fs::create_dir_all(&dir).expect("create the haproxy dir");
        let members: Vec<(&str, u16, u16)> = (0..cluster.len())
            .map(|i| {
                let m = cluster.member(i);
                (m.name.as_str(), m.pg_port, m.api_port)
            })
            .collect();
        let (primary_port, replicas_port) = (free_port(), free_port());
        let socket = dir.join("haproxy.sock");
        let https = cluster.member(0).api_scheme == "https";
        let config = HaProxy::config(primary_port, replicas_port, &socket, &members, https);
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &config).expect("write haproxy.cfg");
        let mut cmd = Command::new(HAPROXY_BIN);
        cmd.arg("-db").arg("-f").arg(&path);
        let daemon = Daemon::start("haproxy", cmd, &dir, dir.join("haproxy.log"));
        let mut haproxy = HaProxy {
            daemon,
            primary_port,
            replicas_port,
            socket,
            config,
        };
        eprintln!(
            "harness: haproxy primary 127.0.0.1:{primary_port}, replicas 127.0.0.1:{replicas_port}"
        );
        let socket = haproxy.socket.clone();
        haproxy
            .daemon
            .wait_ready("admin socket", || show_stat(&socket).is_ok());
        haproxy
    }

    /// `show stat` on the admin socket: every server line.
    pub fn servers(&self) -> anyhow::Result<Vec<ServerState>> {
        show_stat(&self.socket)
    }

    /// The servers `section` routes new connections to, sorted.
    pub fn routing(&self, section: &str) -> anyhow::Result<Vec<String>> {
        let mut up: Vec<String> = self
            .servers()?
            .into_iter()
            .filter(|s| s.section == section && s.routes())
            .map(|s| s.server)
            .collect();
        up.sort();
        Ok(up)
    }

    /// Waits until the `primary` section routes to member `primary` only and the `replicas`
    /// section to exactly `replicas`; returns how long that took.
    pub async fn wait_routing(
        &mut self,
        cluster: &Cluster,
        primary: usize,
        replicas: &[usize],
    ) -> Duration {
        let start = Instant::now();
        let want_primary = vec![cluster.member(primary).name.clone()];
        let mut want_replicas: Vec<String> = replicas
            .iter()
            .map(|&i| cluster.member(i).name.clone())
            .collect();
        want_replicas.sort();
        let what =
            format!("haproxy to route writes to {want_primary:?}, reads to {want_replicas:?}");
        wait_for(FAILOVER_TIMEOUT, &what, async || {
            self.daemon.assert_running();
            let (p, r) = (self.routing("primary")?, self.routing("replicas")?);
            ensure!(
                p == want_primary && r == want_replicas,
                "primary {p:?}, replicas {r:?}"
            );
            Ok(())
        })
        .await;
        start.elapsed()
    }
}

/// Sends `show stat` to the admin socket at `socket` and parses the CSV's server lines.
fn show_stat(socket: &Path) -> anyhow::Result<Vec<ServerState>> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("{}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"show stat\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    parse_stat(&text)
}

/// The server lines of `show stat`'s CSV (not the FRONTEND/BACKEND summary lines).
pub fn parse_stat(text: &str) -> anyhow::Result<Vec<ServerState>> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .with_context(|| format!("no CSV header in {text:?}"))?;
    let columns: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("no column {name} in {header:?}"))
    };
    let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
    let mut out = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
        let server = field(sv);
        if server == "FRONTEND" || server == "BACKEND" {
            continue;
        }
        out.push(ServerState {
            section: field(px),
            server,
            status: field(st),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_server_lines_are_parsed_and_summaries_skipped() {
        let text = "# pxname,svname,qcur,status,weight\n\
                    primary,FRONTEND,,OPEN,\n\
                    primary,pg-0,0,UP,1\n\
                    primary,pg-1,0,DOWN 1/2,1\n\
                    primary,BACKEND,0,UP,1\n\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].server.as_str(), s[0].status.as_str()), ("pg-0", "UP"));
        assert!(s[0].routes() && !s[1].routes());
        assert!(parse_stat("garbage").is_err());
    }
}
