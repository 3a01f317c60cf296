//! A counting layer over each simulated agent's `MemoryDcs`: every `Dcs` call is counted by
//! method, and translated into the gRPC requests the production etcd client
//! (`pgpilot_dcs::etcd::EtcdDcs`) would send for it, by replaying that client's rules on a small
//! model of its state (lease, watch cache of our own writes). The calls are passed through
//! unchanged: the simulation behaves exactly as without the layer.
//!
//! The etcd client's rules (`crates/pgpilot-dcs/src/etcd/lease.rs` and `dcs.rs`):
//! - `cluster()` is served from the watch-fed cache: no request, except the `Range` that fills
//!   the cache when the client starts (then one `Watch` stream per client for its life);
//! - `touch_member` refreshes the lease with `LeaseKeepAlive` at most every
//!   `max(loop_wait, ttl/3)` and `Put`s the member key only when its value (or lease) changed;
//! - `attempt_to_acquire_leader`: a forced `LeaseKeepAlive` and a create-if-absent `Txn`;
//! - `update_leader`: a forced `LeaseKeepAlive`; a `Txn` only when the leader key is not on our
//!   current lease (lease re-granted, key gone or someone else's);
//! - `take_leader`: a forced `LeaseKeepAlive` and a `Put`;
//! - `delete_leader`, `delete_sync`, CAS writes of `/config` `/failover` `/sync` and the
//!   `/initialize` race: one `Txn` each; unconditional writes (`/history`, `/initialize`
//!   adoption, `/config` at bootstrap): one `Put`; `write_status` a `Put` only when the value
//!   changed; `cancel_initialization` a `DeleteRange`;
//! - a missing lease costs a `LeaseGrant` (and the `LeaseKeepAlive` that follows it); a lease
//!   that expired is found so by the next `LeaseKeepAlive` and granted anew.
//!
//! Calls that fail (the store is down) are counted as failed calls and send nothing here; calls
//! of a partitioned member never reach this layer (`call!` fails them before).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgpilot_dcs::memory::MemoryDcs;
use pgpilot_dcs::{Cluster, Dcs, Leader, MemberData, Result, Status};
use tokio::time::Instant;

/// Counts shared by every member client of one simulated cluster.
#[derive(Default)]
pub struct Ops {
    counts: Mutex<Counts>,
}

/// `Dcs` calls by method (and outcome), gRPC requests by method.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub calls: BTreeMap<&'static str, u64>,
    pub grpc: BTreeMap<&'static str, u64>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        for (k, v) in &o.calls {
            *self.calls.entry(k).or_default() += v;
        }
        for (k, v) in &o.grpc {
            *self.grpc.entry(k).or_default() += v;
        }
    }
}

impl Ops {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, what: &'static str) {
        *self.lock().calls.entry(what).or_default() += 1;
    }

    fn grpc(&self, method: &'static str) {
        *self.lock().grpc.entry(method).or_default() += 1;
    }

    pub fn snapshot(&self) -> Counts {
        self.lock().clone()
    }

    /// Forgets everything counted so far (the end of a warm-up).
    pub fn reset(&self) {
        *self.lock() = Counts::default();
    }
}

/// What the etcd client would know: its lease and the values of its own last writes.
#[derive(Default)]
struct Model {
    /// Generation of our lease (0: none granted yet, or dropped by `set_ttl`).
    lease: u64,
    /// Leases granted so far (the next generation).
    grants: u64,
    /// Last grant or keepalive of the lease.
    refreshed: Option<Instant>,
    ttl: Duration,
    loop_wait: Duration,
    /// The member key as we last wrote it, and on which lease.
    member: Option<(String, u64)>,
    /// The lease our leader key was last put on by us.
    leader_on: Option<u64>,
    status: Option<String>,
    /// The first read fills the cache with a `Range`.
    cache_filled: bool,
}

/// One member's client: a `MemoryDcs` that counts.
pub struct CountingDcs {
    inner: MemoryDcs,
    ops: Arc<Ops>,
    model: Mutex<Model>,
}

impl CountingDcs {
    pub fn new(inner: MemoryDcs, ops: Arc<Ops>, ttl: Duration, loop_wait: Duration) -> Self {
        CountingDcs {
            inner,
            ops,
            model: Mutex::new(Model {
                ttl,
                loop_wait,
                ..Default::default()
            }),
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `EtcdDcs::keepalive`: returns the lease generation the request is made on.
    fn keepalive(&self, force: bool) -> u64 {
        let now = Instant::now();
        let mut m = self.model();
        let every = m.loop_wait.max(m.ttl / 3);
        let expired = m.refreshed.is_some_and(|t| now - t >= m.ttl);
        if !force && m.refreshed.is_some_and(|t| now - t < every) {
            if m.lease == 0 {
                self.grant(&mut m, now);
            }
            return m.lease;
        }
        let granted = m.lease == 0;
        if granted {
            self.grant(&mut m, now);
        }
        self.ops.grpc("LeaseKeepAlive");
        if expired && !granted {
            // "lease not found": granted anew.
            self.grant(&mut m, now);
        }
        m.refreshed = Some(now);
        m.lease
    }

    fn grant(&self, m: &mut Model, now: Instant) {
        self.ops.grpc("LeaseGrant");
        m.grants += 1;
        m.lease = m.grants;
        m.refreshed = Some(now);
    }

    fn write(&self, ok: bool, conditional: bool) {
        if ok {
            self.ops.grpc(if conditional { "Txn" } else { "Put" });
        }
    }
}

/// Counts the call under `name`, or `name (failed)` when it failed.
fn outcome<T>(ops: &Ops, name: &'static str, failed: &'static str, r: &Result<T>) {
    ops.call(if r.is_ok() { name } else { failed });
}

impl Dcs for CountingDcs {
    fn member_name(&self) -> &str {
        self.inner.member_name()
    }

    async fn cluster(&self) -> Result<Cluster> {
        let r = self.inner.cluster().await;
        outcome(&self.ops, "cluster", "cluster (failed)", &r);
        if r.is_ok() {
            let mut m = self.model();
            if !m.cache_filled {
                m.cache_filled = true;
                self.ops.grpc("Range");
                self.ops.grpc("Watch (stream opened)");
            }
        }
        r
    }

    async fn cluster_fresh(&self) -> Result<Cluster> {
        let r = self.inner.cluster_fresh().await;
        outcome(&self.ops, "cluster_fresh", "cluster_fresh (failed)", &r);
        if r.is_ok() {
            self.ops.grpc("Range");
        }
        r
    }

    async fn touch_member(&self, data: &MemberData) -> Result<()> {
        let r = self.inner.touch_member(data).await;
        if r.is_err() {
            self.ops.call("touch_member (failed)");
            return r;
        }
        let lease = self.keepalive(false);
        let json = data.to_json();
        let mut m = self.model();
        if m.member.as_ref() == Some(&(json.clone(), lease)) {
            self.ops.call("touch_member (unchanged)");
        } else {
            self.ops.call("touch_member (written)");
            self.ops.grpc("Put");
            m.member = Some((json, lease));
        }
        r
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool> {
        let r = self.inner.attempt_to_acquire_leader().await;
        match &r {
            Ok(won) => {
                let lease = self.keepalive(true);
                self.ops.grpc("Txn");
                if *won {
                    self.ops.call("attempt_to_acquire_leader (won)");
                    self.model().leader_on = Some(lease);
                } else {
                    self.ops.call("attempt_to_acquire_leader (lost)");
                }
            }
            Err(_) => self.ops.call("attempt_to_acquire_leader (failed)"),
        }
        r
    }

    async fn update_leader(&self, leader: Option<&Leader>) -> Result<bool> {
        let me = self.inner.member_name().to_string();
        let r = self.inner.update_leader(leader).await;
        match &r {
            Ok(ok) => {
                let lease = self.keepalive(true);
                let mut m = self.model();
                let ours = m.leader_on == Some(lease) && leader.is_none_or(|l| l.name == me);
                if ours && *ok {
                    self.ops.call("update_leader (keepalive only)");
                } else {
                    self.ops.grpc("Txn");
                    if *ok {
                        self.ops.call("update_leader (key rebound by txn)");
                        m.leader_on = Some(lease);
                    } else {
                        self.ops.call("update_leader (lost)");
                        m.leader_on = None;
                    }
                }
            }
            Err(_) => self.ops.call("update_leader (failed)"),
        }
        r
    }

    async fn keep_leader_lease(&self) -> Result<bool> {
        let r = self.inner.keep_leader_lease().await;
        outcome(
            &self.ops,
            "keep_leader_lease",
            "keep_leader_lease (failed)",
            &r,
        );
        if r.is_ok() {
            self.keepalive(true);
        }
        r
    }

    async fn take_leader(&self) -> Result<()> {
        let r = self.inner.take_leader().await;
        outcome(&self.ops, "take_leader", "take_leader (failed)", &r);
        if r.is_ok() {
            let lease = self.keepalive(true);
            self.ops.grpc("Put");
            self.model().leader_on = Some(lease);
        }
        r
    }

    async fn delete_leader(&self) -> Result<bool> {
        let r = self.inner.delete_leader().await;
        outcome(&self.ops, "delete_leader", "delete_leader (failed)", &r);
        self.write(r.is_ok(), true);
        if matches!(r, Ok(true)) {
            self.model().leader_on = None;
        }
        r
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool> {
        let r = self.inner.initialize(create_new, sysid).await;
        let name = if create_new {
            "initialize (race)"
        } else {
            "initialize (put)"
        };
        outcome(&self.ops, name, "initialize (failed)", &r);
        self.write(r.is_ok(), create_new);
        r
    }

    async fn cancel_initialization(&self) -> Result<()> {
        let r = self.inner.cancel_initialization().await;
        outcome(
            &self.ops,
            "cancel_initialization",
            "cancel_initialization (failed)",
            &r,
        );
        if r.is_ok() {
            self.ops.grpc("DeleteRange");
        }
        r
    }

    async fn set_config(&self, value: &str, version: Option<i64>) -> Result<bool> {
        let r = self.inner.set_config(value, version).await;
        outcome(&self.ops, "set_config", "set_config (failed)", &r);
        self.write(r.is_ok(), version.is_some());
        r
    }

    async fn set_failover(&self, value: &str, version: Option<i64>) -> Result<bool> {
        let r = self.inner.set_failover(value, version).await;
        outcome(&self.ops, "set_failover", "set_failover (failed)", &r);
        self.write(r.is_ok(), version.is_some());
        r
    }

    async fn set_sync(&self, value: &str, version: Option<i64>) -> Result<bool> {
        let r = self.inner.set_sync(value, version).await;
        outcome(&self.ops, "set_sync", "set_sync (failed)", &r);
        self.write(r.is_ok(), version.is_some());
        r
    }

    async fn delete_sync(&self, version: Option<i64>) -> Result<bool> {
        let r = self.inner.delete_sync(version).await;
        outcome(&self.ops, "delete_sync", "delete_sync (failed)", &r);
        self.write(r.is_ok(), true);
        r
    }

    async fn set_history(&self, value: &str) -> Result<()> {
        let r = self.inner.set_history(value).await;
        outcome(&self.ops, "set_history", "set_history (failed)", &r);
        self.write(r.is_ok(), false);
        r
    }

    async fn set_failsafe(&self, value: &str) -> Result<()> {
        let r = self.inner.set_failsafe(value).await;
        outcome(&self.ops, "set_failsafe", "set_failsafe (failed)", &r);
        self.write(r.is_ok(), false);
        r
    }

    async fn write_status(&self, status: &Status) -> Result<()> {
        let r = self.inner.write_status(status).await;
        if r.is_err() {
            self.ops.call("write_status (failed)");
            return r;
        }
        let json = status.to_json();
        let mut m = self.model();
        if m.status.as_ref() == Some(&json) {
            self.ops.call("write_status (unchanged)");
        } else {
            self.ops.call("write_status (written)");
            self.ops.grpc("Put");
            m.status = Some(json);
        }
        r
    }

    fn set_ttl(&self, ttl: Duration) {
        self.inner.set_ttl(ttl);
        let mut m = self.model();
        m.ttl = ttl;
        m.lease = 0;
    }

    fn set_retry_timeout(&self, retry_timeout: Duration) {
        self.inner.set_retry_timeout(retry_timeout);
    }

    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let fired = self.inner.watch(timeout, leader_is_me).await;
        if fired {
            self.ops.call("watch (woken by an event)");
        }
        fired
    }

    async fn delete_cluster(&self) -> Result<()> {
        let r = self.inner.delete_cluster().await;
        outcome(&self.ops, "delete_cluster", "delete_cluster (failed)", &r);
        if r.is_ok() {
            self.ops.grpc("DeleteRange");
        }
        r
    }

    async fn close(&self) -> Result<()> {
        let r = self.inner.close().await;
        outcome(&self.ops, "close", "close (failed)", &r);
        if r.is_ok() {
            self.ops.grpc("LeaseRevoke");
        }
        r
    }
}
