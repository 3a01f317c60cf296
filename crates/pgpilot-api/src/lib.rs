//! The REST API, Patroni-compatible on the wire (spec/rest-api.md): read side, write side
//! (switchover, failover, restart, reinitialize, reload, `/config`), HTTPS; and the typed client
//! agents use to ask peers for their WAL position and the CLI shares for TLS settings.
//!
//! The server never shares a lock with the HA cycle: the agent publishes an immutable
//! [`NodeSnapshot`] through a `tokio::sync::watch` channel after every cycle and the handlers read
//! the latest one, with PostgreSQL's own state asked at request time through [`LivePg`] for the
//! status document and health checks. `/cluster`, `/history`, `/config` and the `/config` and
//! `/failover` writes go to the DCS; restart, reinitialize and reload go to the agent as a
//! [`Command`] over a channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::Cluster;
use serde_json::{Map, Value};

pub mod client;
mod health;
mod http;
mod server;
mod status;
pub mod tls;
mod write;

pub use client::{Client, PeerStatus};
pub use server::{serve, ServerOptions};
pub use status::status_document;
pub use tls::{ClientTls, ServerTls, TlsError};
pub use write::{deep_merge, parse_schedule, parse_timeout};

/// Asks PostgreSQL for its state right now (the monitoring query); `None` when it does not
/// answer. Status and health-check requests use it, as Patroni does, so that a load balancer
/// sees a promotion or a new replica at once rather than after the next HA cycle.
pub type LivePg = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<PgInfo>> + Send>>
        + Send
        + Sync,
>;

/// A request from the REST API that only the agent can carry out. The API validates the
/// request; the agent decides whether it can act now and answers with a status code and the
/// text Patroni sends (spec/rest-api.md §1.5).
#[derive(Debug)]
pub enum Command {
    /// `POST /restart`.
    Restart {
        request: RestartRequest,
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
    /// `DELETE /restart`.
    DeleteRestart {
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
    /// `POST /reinitialize`.
    Reinitialize {
        force: bool,
        from_leader: bool,
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
    /// `POST /reload` and SIGHUP: re-read the local configuration.
    Reload,
    /// Something in the DCS changed on our behalf (`/failover`, `/config`): run a cycle now.
    Wakeup,
}

/// The filters and options of `POST /restart`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartRequest {
    /// Restart only if PostgreSQL reports a pending restart.
    pub restart_pending: bool,
    /// Restart only if the current role is this (`primary`, `standby_leader`, `replica`).
    pub role: Option<String>,
    /// Restart only if the running server version (`server_version_num`) is lower.
    pub postgres_version: Option<i32>,
    /// Start timeout for this restart.
    pub timeout: Option<Duration>,
    /// When to restart; `None` = now.
    pub schedule: Option<jiff::Timestamp>,
    /// The request as Patroni publishes it in the member key's `scheduled_restart`.
    pub published: Map<String, Value>,
}

/// PostgreSQL facts from the last monitoring query (absent when PostgreSQL is not running).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PgInfo {
    pub in_recovery: bool,
    pub postmaster_start_time: String,
    pub server_version: i32,
    pub timeline: u32,
    /// Primary: flush LSN.
    pub wal_flush_lsn: Option<u64>,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub replay_timestamp: Option<String>,
    pub replay_paused: bool,
    pub replication_state: Option<String>,
    pub latest_end_lsn: Option<u64>,
    /// Rows for `replication` (already JSON objects with Patroni's field names).
    pub replication: Vec<Value>,
}

/// What the agent knows after a cycle; everything the read side of the API serves.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub name: String,
    pub scope: String,
    /// PG state string (`running`, `starting`, `stopped`, `crashed`, `creating replica`, ...).
    pub state: String,
    /// Agent role: `primary`, `replica`, `demoted`, `uninitialized`, `standby_leader`.
    pub role: String,
    pub pg: Option<PgInfo>,
    /// Holding the leader key: `Some(expiry)` = last successful renewal + ttl. `is_leader` is
    /// `now < expiry`.
    pub leader_until: Option<Instant>,
    /// The last DCS view and until when it counts as fresh (last successful read + ttl).
    pub cluster: Option<Arc<Cluster>>,
    pub cluster_valid_until: Option<Instant>,
    /// Epoch seconds of the last successful DCS read.
    pub dcs_last_seen: u64,
    pub paused: bool,
    /// Effective tags (what `/patroni` publishes).
    pub tags: Map<String, Value>,
    /// Configured tags (what `tag_*` filters compare against).
    pub configured_tags: Map<String, Value>,
    pub database_system_identifier: Option<String>,
    pub pending_restart_reason: Option<Map<String, Value>>,
    /// `maximum_lag_on_failover` (default lag for `/readiness`).
    pub maximum_lag_on_failover: u64,
    pub ttl: Duration,
    /// When the HA loop is next due (for `/liveness`).
    pub next_run: Instant,
    pub loop_wait: Duration,
    /// A restart scheduled through `POST /restart` (for `/patroni`).
    pub scheduled_restart: Option<Map<String, Value>>,
}

impl NodeSnapshot {
    /// A snapshot for an agent that has not completed a cycle yet.
    pub fn starting(name: &str, scope: &str) -> NodeSnapshot {
        NodeSnapshot {
            name: name.to_string(),
            scope: scope.to_string(),
            state: "stopped".to_string(),
            role: "uninitialized".to_string(),
            pg: None,
            leader_until: None,
            cluster: None,
            cluster_valid_until: None,
            dcs_last_seen: 0,
            paused: false,
            tags: Map::new(),
            configured_tags: Map::new(),
            database_system_identifier: None,
            pending_restart_reason: None,
            maximum_lag_on_failover: 1_048_576,
            ttl: Duration::from_secs(30),
            next_run: Instant::now(),
            loop_wait: Duration::from_secs(10),
            scheduled_restart: None,
        }
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|t| now < t)
    }

    /// The DCS view, if it is still fresh.
    pub fn fresh_cluster(&self, now: Instant) -> Option<&Cluster> {
        match (self.cluster.as_deref(), self.cluster_valid_until) {
            (Some(c), Some(t)) if now < t => Some(c),
            _ => None,
        }
    }
}
