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

mod ciphers;
pub mod client;
mod failsafe;
mod health;
mod http;
mod metrics;
mod server;
mod status;
pub mod tls;
mod write;

pub use client::Client;
pub use failsafe::FailsafeSender;
pub use pgpilot_types::{
    AgentStats, Command, FailsafeLeader, NodeSnapshot, PeerStatus, Peers, PgInfo, RestartRequest,
    Role, State,
};
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
