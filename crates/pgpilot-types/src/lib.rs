//! The values the agent, the REST API and `pgpilotctl` exchange, in the crate below all of them
//! (DESIGN.md "The shape of the code"): the HA core must not import the HTTP crate to read what
//! it publishes or what a peer reported.
//!
//! * [`NodeSnapshot`] and [`PgInfo`]: what the agent knows after a cycle, which the REST API
//!   serves;
//! * [`Command`] and [`RestartRequest`]: requests from the REST API that only the agent carries
//!   out;
//! * [`PeerStatus`] and the [`Peers`] trait: what another member's `GET /patroni` says during a
//!   leader race, and how the agent asks for it (the REST client implements it; the simulation
//!   supplies its own).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::Cluster;

mod role;
pub use role::{Role, State};
use serde_json::{Map, Value};

/// How the agent reaches other members' REST APIs.
pub trait Peers: Send + Sync + 'static {
    /// `GET <api_url>` (which ends in `/patroni`). `None` when unreachable, not 200, or the
    /// reply has no `xlog` (PostgreSQL not running): such a peer does not take part in the race.
    fn peer_status(
        &self,
        name: &str,
        api_url: &str,
        timeout: Duration,
    ) -> impl Future<Output = Option<PeerStatus>> + Send;

    /// The duplicate-name check: `true` if anything answers HTTP at `api_url`'s host within
    /// `timeout`.
    fn answers(&self, api_url: &str, timeout: Duration) -> impl Future<Output = bool> + Send;

    /// Failsafe mode: `POST /failsafe` at `api_url`'s host with `body` (a primary that lost the
    /// DCS asks a member listed in `/failsafe` to keep it as leader). `true` only for a 200
    /// `Accepted` within `timeout`.
    fn post_failsafe(
        &self,
        api_url: &str,
        body: &Value,
        timeout: Duration,
    ) -> impl Future<Output = bool> + Send;
}

/// The leader a member learnt from a `POST /failsafe` (spec/rest-api.md): the REST API stores
/// it, the agent reads it each cycle. While `received + ttl` has not passed, this member
/// counts the sender as the leader of an unlocked cluster and does not run for the key.
#[derive(Debug, Clone, PartialEq)]
pub struct FailsafeLeader {
    pub name: String,
    pub conn_url: String,
    pub api_url: String,
    /// The leader's replication slot positions (`slots` of the request, as `/status.slots`):
    /// this member advances its copies of the leader's slots to them while the DCS is away.
    pub slots: Option<Map<String, Value>>,
    pub received: Instant,
}

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
    pub state: State,
    pub role: Role,
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
    /// `watchdog.mode: required` and no usable watchdog: peers leave this member out of leader
    /// races (`/patroni` `watchdog_failed`).
    pub watchdog_failed: bool,
    /// `failsafe_mode` of the dynamic configuration in force (`GET`/`POST /failsafe` answer 502
    /// without it).
    pub failsafe_mode: bool,
    /// Failsafe is active until then: the primary kept its role through a failsafe round
    /// (round start + ttl), or a replica accepted a `POST /failsafe` (`/patroni`
    /// `failsafe_mode_is_active`).
    pub failsafe_active_until: Option<Instant>,
    /// The agent's own counters (pgpilot's `pgpilot_*` metrics).
    pub stats: AgentStats,
}

/// What the agent counts about its own work since it started, served as `pgpilot_*` metrics
/// beside Patroni's. Plain values copied into every published snapshot: the REST API reads
/// them without sharing anything with the cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgentStats {
    /// HA cycles completed.
    pub cycles: u64,
    /// Wall time of the last completed cycle (observe, decide, act; publishing excluded).
    pub last_cycle: Duration,
    /// Cycles whose DCS read failed ("Error communicating with DCS").
    pub dcs_read_errors: u64,
    /// Successful leader key renewals and acquisitions.
    pub leader_renewals: u64,
    /// Leader key renewals that failed or found the key no longer ours.
    pub leader_renewal_failures: u64,
    /// Promotions of the local replica that `pg_ctl promote` completed.
    pub promotions: u64,
    /// How long the last completed `pg_ctl promote` took.
    pub last_promotion: Option<Duration>,
}

impl NodeSnapshot {
    /// A snapshot for an agent that has not completed a cycle yet.
    pub fn starting(name: &str, scope: &str) -> NodeSnapshot {
        NodeSnapshot {
            name: name.to_string(),
            scope: scope.to_string(),
            state: State::Stopped,
            role: Role::Uninitialized,
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
            watchdog_failed: false,
            failsafe_mode: false,
            failsafe_active_until: None,
            stats: AgentStats::default(),
        }
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|t| now < t)
    }

    pub fn failsafe_is_active(&self, now: Instant) -> bool {
        self.failsafe_active_until.is_some_and(|t| now < t)
    }

    /// The DCS view, if it is still fresh.
    pub fn fresh_cluster(&self, now: Instant) -> Option<&Cluster> {
        match (self.cluster.as_deref(), self.cluster_valid_until) {
            (Some(c), Some(t)) if now < t => Some(c),
            _ => None,
        }
    }
}

/// What a peer's `GET /patroni` says, reduced to what the leader race needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// The peer reports it is not in recovery (`xlog.location` present or role primary).
    pub is_primary: bool,
    /// max(received_location, replayed_location), or location for a primary.
    pub wal_position: u64,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub watchdog_failed: bool,
    /// The whole document, for logs.
    pub raw: Value,
}

impl PeerStatus {
    /// Reads a `/patroni` document; `None` when it has no `xlog` (PostgreSQL not running).
    pub fn from_document(name: &str, doc: Value) -> Option<PeerStatus> {
        let xlog = doc.get("xlog").or_else(|| doc.get("wal"))?.clone();
        let role = doc.get("role").and_then(Value::as_str).unwrap_or("");
        let location = xlog.get("location").and_then(Value::as_u64);
        let is_primary = location.is_some() || role == "primary" || role == "master";
        let wal_position = location.unwrap_or_else(|| {
            let r = xlog
                .get("received_location")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let p = xlog
                .get("replayed_location")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            r.max(p)
        });
        let empty = Map::new();
        let tags = doc.get("tags").and_then(Value::as_object).unwrap_or(&empty);
        let nofailover = pgpilot_dcs::values::bool_tag(tags, "nofailover", "failover_priority");
        let failover_priority =
            pgpilot_dcs::values::priority_tag(tags, "nofailover", "failover_priority");
        Some(PeerStatus {
            name: name.to_string(),
            is_primary,
            wal_position,
            timeline: doc
                .get("timeline")
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok()),
            nofailover,
            failover_priority,
            watchdog_failed: doc.get("watchdog_failed").is_some_and(pgpilot_dcs::truthy),
            raw: doc,
        })
    }
}
