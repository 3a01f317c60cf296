//! The only door to the consensus store.
//!
//! The HA cycle sees the DCS through the [`Dcs`] trait: one consistent [`Cluster`] snapshot per
//! cycle (served from a watch-fed cache) and a handful of writes with Patroni's exact CAS semantics
//! (spec/dcs.md §2.5). Two backends implement it: [`etcd::EtcdDcs`] (etcd v3, production) and
//! [`memory::MemoryDcs`] (tests and simulation); one contract suite (`tests/contract.rs`) runs
//! against both.

use std::future::Future;
use std::time::Duration;

pub mod etcd;
pub mod memory;
pub mod types;

pub use types::*;
// The readings of loose values live below this crate (the configuration loader shares them).
pub use pgpilot_values as values;
pub use pgpilot_values::{parse_bool, parse_bool_str, truthy, SyncMode};

/// What went wrong talking to the DCS. The HA cycle treats every variant the same way
/// ("Error communicating with DCS"): a primary that cannot renew demotes; the variants exist for
/// logs and for the retry logic inside the backends.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// No endpoint answered within the deadline (retry_timeout).
    #[error("DCS is not accessible: {0}")]
    Unavailable(String),
    /// The store answered but refused the request.
    #[error("DCS request failed: {0}")]
    Request(String),
    /// The client's own settings are unusable (a TLS file, mixed URL schemes, credentials
    /// etcd refused): not worth retrying, reported at start.
    #[error("etcd client configuration: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, DcsError>;

/// Operations on one cluster prefix, as one member (`name`) sees it.
///
/// Every call is bounded by the backend's `retry_timeout`; a call that cannot complete in time
/// returns [`DcsError::Unavailable`]. Implementations hold one lease of `ttl` seconds for this
/// member; the leader key and the member key are both attached to it.
pub trait Dcs: Send + Sync + 'static {
    /// The member this client acts for.
    fn member_name(&self) -> &str;

    /// The cluster as of the local watch cache (daemon path). Waits up to retry_timeout for the
    /// cache to become ready.
    fn cluster(&self) -> impl Future<Output = Result<Cluster>> + Send;

    /// A linearizable read straight from the store (REST `/cluster`, the CLI).
    fn cluster_fresh(&self) -> impl Future<Output = Result<Cluster>> + Send;

    /// Writes `members/<name>` on our lease; skipped when the cached value is equal and already
    /// on our current lease. Also refreshes the lease at most once per loop_wait.
    fn touch_member(&self, data: &MemberData) -> impl Future<Output = Result<()>> + Send;

    /// Create-if-absent transaction on `leader` with our name and lease. `Ok(true)` = we won.
    fn attempt_to_acquire_leader(&self) -> impl Future<Output = Result<bool>> + Send;

    /// Keeps leadership: forced lease keepalive; if the leader key is on another lease of ours
    /// (lease re-granted), rebinds it with a value-compare txn. `Ok(false)` = the key is not ours
    /// any more (someone else holds it or it vanished and could not be re-created).
    fn update_leader(&self, leader: Option<&Leader>) -> impl Future<Output = Result<bool>> + Send;

    /// The lease keeper's renewal between HA cycles: a forced keepalive of our lease and nothing
    /// else. `Ok(true)` only when the leader key, as last seen, is ours and on that lease. Unlike
    /// [`update_leader`](Self::update_leader) it never creates or rebinds the key, so it can not
    /// take back a key the agent released or lost while the keeper's request was in flight.
    fn keep_leader_lease(&self) -> impl Future<Output = Result<bool>> + Send;

    /// Unconditional `put leader=<name>` on our lease (right after bootstrap).
    fn take_leader(&self) -> impl Future<Output = Result<()>> + Send;

    /// Voluntary release: `txn(value(leader) == name) -> delete`. `Ok(true)` if deleted.
    fn delete_leader(&self) -> impl Future<Output = Result<bool>> + Send;

    /// `initialize` key: with `create_new`, create-if-absent (the bootstrap race; `Ok(true)` =
    /// won); otherwise an unconditional put.
    fn initialize(
        &self,
        create_new: bool,
        sysid: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes `initialize` (failed bootstrap).
    fn cancel_initialization(&self) -> impl Future<Output = Result<()>> + Send;

    /// Puts `config` (compact JSON); with `version`, only if its mod_revision still equals it.
    /// `Ok(false)` = CAS failed.
    fn set_config(
        &self,
        value: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Puts `failover` (compact JSON, `{}` to clear); CAS like [`Dcs::set_config`].
    fn set_failover(
        &self,
        value: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Puts `sync` (compact JSON); CAS like [`Dcs::set_config`]. Only the leader writes it.
    fn set_sync(
        &self,
        value: &str,
        version: Option<i64>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes `sync` (synchronous mode turned off); with `version`, only if its mod_revision
    /// still equals it. `Ok(false)` = CAS failed.
    fn delete_sync(&self, version: Option<i64>) -> impl Future<Output = Result<bool>> + Send;

    /// Unconditional put of `history` (no lease).
    fn set_history(&self, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// Unconditional put of `failsafe` (no lease): the leader's list of members and their
    /// api_urls while `failsafe_mode` is on. Only the leader writes it, when it changed.
    fn set_failsafe(&self, value: &str) -> impl Future<Output = Result<()>> + Send;

    /// Unconditional put of `status` (no lease).
    fn write_status(&self, status: &Status) -> impl Future<Output = Result<()>> + Send;

    /// Changes the lease TTL: the current lease is dropped and a new one granted on next use.
    fn set_ttl(&self, ttl: Duration);

    /// Sets the per-request deadline.
    fn set_retry_timeout(&self, retry_timeout: Duration);

    /// Waits up to `timeout` for an event worth waking the HA loop for: the leader key changed
    /// (value or presence), `config` or `failover` changed, or — when `leader_is_me` is false — `status`
    /// changed. Returns `true` if woken by an event, `false` on timeout.
    fn watch(&self, timeout: Duration, leader_is_me: bool) -> impl Future<Output = bool> + Send;

    /// Deletes the whole cluster prefix (`patronictl remove`).
    fn delete_cluster(&self) -> impl Future<Output = Result<()>> + Send;

    /// Revokes our lease (graceful shutdown after releasing leadership): our member key vanishes
    /// at once instead of at TTL expiry.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;
}
