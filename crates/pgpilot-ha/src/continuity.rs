//! Client continuity during a planned switchover (`pgpilot.client_continuity`, a pgpilot
//! extension that Patroni ignores).
//!
//! Without it a switchover that takes a fraction of a second inside the cluster costs clients
//! seconds of errors: HAProxy notices the new primary only after `rise` health checks and keeps
//! the old one until `fall` checks fail, and pgBouncer keeps server connections that HAProxy
//! routed to a member that is now a replica. With it the old primary, in its graceful
//! demotion, drives them:
//!
//! 1. [`hold`]: `PAUSE` on every pgBouncer (clients wait in the pooler instead of failing;
//!    bounded by `pause_timeout` and by the caller's limit, after which that pgBouncer is
//!    resumed and the switchover goes on without it), then
//!    `set server <primary_backend>/<me> health down` on every HAProxy;
//! 2. the demotion itself (unchanged);
//! 3. [`Hold::release`], once the new primary accepts writes (or the deadline passed, or the
//!    switchover was aborted): `health up` for the new primary in the primary backend and
//!    `health down` for it in the replica backend, then `RECONNECT` and `RESUME` on every
//!    pgBouncer that was paused.
//!
//! Forcing a server's health leaves HAProxy's checks running: the next checks that disagree
//! override it, so nothing set here outlives a wrong guess by more than `fall`/`rise` checks.
//!
//! Every step is best effort: a failure is logged (`warn`) and never blocks or aborts the
//! switchover, whose safety rules are those of the demotion. A paused pgBouncer is always
//! resumed: by [`Hold::release`] on every path of the demotion, by `Drop` (a task that
//! resumes it) if the demotion's future is dropped before, and by the member promoted next
//! ([`after_promotion`]) if the old primary's agent died while holding it. Only a pooler held
//! by an agent that dies when no member is promoted afterwards stays paused (`RESUME` on its
//! admin console ends that).

use std::str::FromStr;
use std::time::Duration;

use pgpilot_config::{ClientContinuity, HaproxyAddress, HaproxyTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

/// The longest wait for one HAProxy runtime API command or one pgBouncer command other than
/// `PAUSE` (which is bounded by `pause_timeout`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one step failed (logged; never stops the switchover).
#[derive(Debug, thiserror::Error)]
pub enum ContinuityError {
    #[error("pgbouncer {target}: {message}")]
    PgBouncer { target: String, message: String },
    #[error("haproxy {address}: {message}")]
    HaProxy { address: String, message: String },
}

/// The health a server is forced to through HAProxy's runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// `set server <backend>/<server> health up|down`, HAProxy's runtime API command.
pub fn health_command(backend: &str, server: &str, health: Health) -> String {
    let h = match health {
        Health::Up => "up",
        Health::Down => "down",
    };
    format!("set server {backend}/{server} health {h}")
}

/// A pgBouncer admin console named without its credentials: `host:port` (`?` for what the
/// string does not say; an unparsable string was refused when the configuration was loaded).
pub fn pgbouncer_label(conninfo: &str) -> String {
    let Ok(c) = tokio_postgres::Config::from_str(conninfo) else {
        return "?".into();
    };
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// What [`hold`] did, to be undone by [`Hold::release`].
#[must_use = "a hold must be released (Drop only resumes the poolers)"]
pub struct Hold {
    cfg: ClientContinuity,
    /// This member: the old primary.
    me: String,
    /// The admin consoles of the pgBouncers that were paused and not yet resumed.
    paused: Vec<String>,
    /// `pause_timeout` after the hold began.
    deadline: Instant,
}

/// Step 1 (module docs): pauses every pgBouncer and forces `me` down in every primary backend.
///
/// `PAUSE` waits for the transactions in flight, while this member is still the primary and
/// does not renew its key: all of them together may take at most `pause_wait` (the caller
/// keeps it within the lease), and at most `pause_timeout`.
pub async fn hold(cfg: &ClientContinuity, me: &str, pause_wait: Duration) -> Hold {
    let started = Instant::now();
    let deadline = started + cfg.pause_timeout;
    let pause_deadline = started + pause_wait.min(cfg.pause_timeout);
    let mut paused = Vec::new();
    for conninfo in &cfg.pgbouncer {
        let target = pgbouncer_label(conninfo);
        let left = pause_deadline.saturating_duration_since(Instant::now());
        match admin(conninfo, "PAUSE", left).await {
            Ok(()) => {
                info!("client continuity: pgbouncer {target} paused");
                paused.push(conninfo.clone());
            }
            Err(e) => {
                warn!(
                    "client continuity: could not pause {e}; resuming it and going on without it"
                );
                // A PAUSE that timed out is still in force on the server side.
                if let Err(e) = admin(conninfo, "RESUME", COMMAND_TIMEOUT).await {
                    warn!("client continuity: could not resume {e}");
                }
            }
        }
    }
    for h in &cfg.haproxy {
        set_health(h, &h.primary_backend, me, Health::Down).await;
    }
    Hold {
        cfg: cfg.clone(),
        me: me.to_string(),
        paused,
        deadline,
    }
}

impl Hold {
    /// When clients have been held for `pause_timeout`: [`Hold::release`] must come by then.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Step 3 (module docs): routes to `new_primary` (if the switchover found one that accepts
    /// writes) and resumes every paused pgBouncer. Without a new primary (the switchover was
    /// aborted or is late) the poolers are resumed all the same and HAProxy is left to its
    /// checks, which bring this member back within `rise` checks if it runs as primary again.
    pub async fn release(mut self, new_primary: Option<&str>) {
        match new_primary {
            Some(new) => announce_primary(&self.cfg, new, &[&self.me]).await,
            None => warn!(
                "client continuity: no new primary accepts writes (switchover aborted or late); resuming the poolers, \
                 routing is left to haproxy's checks"
            ),
        }
        resume(std::mem::take(&mut self.paused)).await;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let paused = std::mem::take(&mut self.paused);
        warn!(
            "client continuity: the switchover ended without releasing the poolers; resuming them"
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(resume(paused));
            }
            Err(_) => warn!(
                "client continuity: no runtime to resume {} pgbouncer(s) with; they stay paused",
                paused.len()
            ),
        }
    }
}

/// Forces `primary` up in every primary backend and down in every replica backend, and each
/// of `others` down in every primary backend: for the old primary after a switchover, and for
/// a member that was just promoted (`others`: every other member).
pub async fn announce_primary(cfg: &ClientContinuity, primary: &str, others: &[&str]) {
    for h in &cfg.haproxy {
        for other in others.iter().filter(|o| **o != primary) {
            set_health(h, &h.primary_backend, other, Health::Down).await;
        }
        set_health(h, &h.primary_backend, primary, Health::Up).await;
        if let Some(replicas) = &h.replica_backend {
            set_health(h, replicas, primary, Health::Down).await;
        }
    }
}

/// For a member that was just promoted: [`announce_primary`] with every other member, then
/// `RECONNECT` and `RESUME` on every pgBouncer. After a crash this closes the server
/// connections to the old primary; after a switchover it resumes the poolers even when the old
/// primary died (SIGKILL, a crash) while it held them, which its own release can then not do.
/// A pooler that is not paused says so; that is not a failure.
pub async fn after_promotion(cfg: &ClientContinuity, primary: &str, others: &[&str]) {
    announce_primary(cfg, primary, others).await;
    resume(cfg.pgbouncer.clone()).await;
}

/// `RECONNECT` (server connections opened before the switchover are closed once released)
/// then `RESUME` on each admin console, each logged.
async fn resume(paused: Vec<String>) {
    for conninfo in paused {
        let target = pgbouncer_label(&conninfo);
        if let Err(e) = admin(&conninfo, "RECONNECT", COMMAND_TIMEOUT).await {
            warn!("client continuity: could not reconnect {e}");
        }
        match admin(&conninfo, "RESUME", COMMAND_TIMEOUT).await {
            Ok(()) => info!("client continuity: pgbouncer {target} resumed"),
            // pgBouncer: "pooler is not paused/suspended" (resumed already, or never paused).
            Err(e) if e.to_string().contains("not paused") => {
                info!("client continuity: pgbouncer {target} was not paused")
            }
            Err(e) => warn!("client continuity: could not resume {e}"),
        }
    }
}

/// A client error with the server's message when there is one (`db error` alone says nothing).
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// One admin console command over a connection of its own, everything bounded by `timeout`.
/// The console speaks the simple query protocol only.
async fn admin(conninfo: &str, command: &str, timeout: Duration) -> Result<(), ContinuityError> {
    let target = pgbouncer_label(conninfo);
    let fail = |message: String| ContinuityError::PgBouncer {
        target: target.clone(),
        message,
    };
    let mut config = tokio_postgres::Config::from_str(conninfo).map_err(|e| fail(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(COMMAND_TIMEOUT);
    }
    let run = async {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| fail(pg_error(&e)))?;
        let conn = tokio::spawn(connection);
        let result = client
            .batch_execute(command)
            .await
            .map_err(|e| fail(format!("{command}: {}", pg_error(&e))));
        drop(client);
        conn.abort();
        result
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(fail(format!("{command}: no answer within {timeout:?}"))))
}

/// Forces `member`'s server in `backend` of HAProxy `h` to `health`, logged.
async fn set_health(h: &HaproxyTarget, backend: &str, member: &str, health: Health) {
    let command = health_command(backend, h.server(member), health);
    match runtime_api(&h.address, &command).await {
        Ok(()) => info!("client continuity: haproxy {}: {command}", h.address),
        Err(e) => warn!("client continuity: {e}"),
    }
}

/// One HAProxy runtime API command: connect, send it with a newline, read the answer to EOF.
/// A `set` command answers nothing when it worked; any text is the reason it did not.
async fn runtime_api(address: &HaproxyAddress, command: &str) -> Result<(), ContinuityError> {
    let fail = |message: String| ContinuityError::HaProxy {
        address: address.to_string(),
        message,
    };
    let exchange = async {
        let mut answer = String::new();
        match address {
            HaproxyAddress::Unix(path) => {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                s.write_all(format!("{command}\n").as_bytes()).await?;
                s.read_to_string(&mut answer).await?;
            }
            HaproxyAddress::Tcp(addr) => {
                let mut s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                s.write_all(format!("{command}\n").as_bytes()).await?;
                s.read_to_string(&mut answer).await?;
            }
        }
        Ok::<String, std::io::Error>(answer)
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, exchange).await {
        Err(_) => Err(fail(format!(
            "{command}: no answer within {COMMAND_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(fail(format!("{command}: {e}"))),
        Ok(Ok(answer)) if answer.trim().is_empty() => Ok(()),
        Ok(Ok(answer)) => Err(fail(format!("{command}: {}", answer.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_commands_name_backend_and_server() {
        assert_eq!(
            health_command("primary", "pg-1", Health::Down),
            "set server primary/pg-1 health down"
        );
        assert_eq!(
            health_command("replicas", "db2", Health::Up),
            "set server replicas/db2 health up"
        );
    }

    /// The label never shows a password, whatever form the string takes.
    #[test]
    fn pgbouncer_labels_name_host_and_port_only() {
        for (conninfo, label) in [
            (
                "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer password=secret",
                "127.0.0.1:6432",
            ),
            ("postgresql://u:secret@db:6433/pgbouncer", "db:6433"),
            (
                "host=/run/pgbouncer dbname=pgbouncer",
                "/run/pgbouncer:5432",
            ),
            ("port=notanumber", "?"),
        ] {
            assert_eq!(pgbouncer_label(conninfo), label, "{conninfo}");
        }
    }
}
