//! etcd v3 backend over native gRPC (etcd-client). Stored bytes and lease/txn semantics are
//! Patroni's (spec/dcs.md §2.5), so Patroni agents and patronictl interoperate.
//!
//! * One lease per agent, TTL = `ttl`, attached to the leader key and our member key.
//! * The lease is kept alive **only by the HA cycle** (`update_leader` forces a keepalive,
//!   `touch_member` refreshes it at most every ttl/3). There is deliberately no free-running
//!   keepalive task: if the agent hangs, its lease must expire so another member can take over.
//! * Reads for the HA cycle come from a watch-fed cache: one range read, then a watch from the
//!   next revision. Our own writes are applied to the cache at once. When the watch is broken the
//!   cache is not trusted: `cluster()` falls back to a direct read, and fails if that fails, so a
//!   primary notices that the DCS is gone instead of acting on a stale view.
//! * Requests and the watch go to one etcd member at a time and move to another when it fails
//!   ([`endpoints`]): a request fails only when no member answered within retry_timeout.
//!
//! The files: `connect.rs` (client options, start-up checks, TLS reload, member rediscovery),
//! `cache.rs` (the watch cache), `lease.rs` (our lease and its keepalive stream), `dcs.rs` (the
//! `Dcs` trait), `endpoints.rs` (which etcd member answers), `tls.rs` (the TLS files); this one
//! holds the options, the client and its request helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

mod cache;
mod connect;
mod dcs;
mod endpoints;
mod lease;
mod tls;

use cache::Cache;
use endpoints::Endpoints;
use lease::KeepAliveStream;
pub use tls::EtcdTls;
use tokio_util::sync::CancellationToken;

use crate::{Cluster, Result};

/// How to reach etcd and who we are.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Endpoints: `http://host:port`, `https://host:port`, or `host:port` (http). All of one
    /// scheme: a mix is refused.
    pub endpoints: Vec<String>,
    pub namespace: String,
    pub scope: String,
    pub name: String,
    pub ttl: Duration,
    pub retry_timeout: Duration,
    pub loop_wait: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Add the members etcd reports to `endpoints` (Patroni's default; `use_proxies` turns it
    /// off when the endpoints are proxies or load balancers).
    pub discover_members: bool,
    /// CA and client certificate for `https` endpoints.
    pub tls: EtcdTls,
}

/// etcd v3 client for one member.
pub struct EtcdDcs {
    endpoints: Arc<Endpoints>,
    prefix: String,
    /// The endpoints are https (TLS files in use).
    https: bool,
    /// The options we connected with; `reload_tls` replaces their TLS files.
    settings: Mutex<EtcdOptions>,
    /// What the TLS files in use held when they were read ([`tls_fingerprint`]): a reload that
    /// finds the same keeps the connections.
    ///
    /// [`tls_fingerprint`]: connect::tls_fingerprint
    tls_read: Mutex<Vec<u8>>,
    name: String,
    ttl: Mutex<Duration>,
    retry_timeout: Mutex<Duration>,
    loop_wait: Duration,
    /// Our lease, granted lazily; `None` after it was lost or the TTL changed.
    lease: tokio::sync::Mutex<Option<i64>>,
    /// Last successful keepalive (for touch_member's once-per-loop_wait refresh).
    last_keepalive: Mutex<Option<Instant>>,
    /// The lease keepalive stream, kept open between renewals (see [`KeepAliveStream`]).
    keepalive_stream: tokio::sync::Mutex<Option<KeepAliveStream>>,
    cache: Arc<Cache>,
    /// Generations of the cache events the HA loop has already seen (set by `cluster()`).
    seen: Mutex<(u64, u64)>,
    /// The cluster last parsed from the cache, with the cache generation it was parsed at.
    parsed: Mutex<Option<(u64, Cluster)>>,
    stop: CancellationToken,
}

impl Drop for EtcdDcs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EtcdDcs {
    /// The etcd members this client knows (configured and discovered), as URLs.
    pub fn known_endpoints(&self) -> Vec<String> {
        self.endpoints.urls()
    }

    fn retry_timeout(&self) -> Duration {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline of a request (or of a group of requests that form one operation) started
    /// now: no etcd member answering within retry_timeout is a DCS failure.
    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout()
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// One request, answered by whichever etcd member can (see [`endpoints`]).
    async fn request<T, F, Fut>(&self, what: &str, deadline: Instant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>
            + Send
            + 'static,
    {
        self.endpoints.call(what, deadline, f).await.map(|(v, _)| v)
    }

    async fn put(&self, rel: &str, value: &str, lease: Option<i64>) -> Result<()> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let (key, val) = (self.key(rel), value.to_string());
        let resp = self
            .request("put", self.deadline(), move |mut c| {
                let (key, val, opts) = (key.clone(), val.clone(), opts.clone());
                async move { c.put(key, val, opts).await }
            })
            .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.cache.apply_put(rel, value, rev, lease.unwrap_or(0));
        Ok(())
    }

    /// Runs a txn; returns whether it succeeded, its revision and the responses.
    async fn txn(&self, txn: Txn, deadline: Instant) -> Result<(bool, i64, Vec<TxnOpResponse>)> {
        let resp = self
            .request("txn", deadline, move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.succeeded(), rev, resp.op_responses()))
    }

    async fn cas_put(
        &self,
        rel: &str,
        value: &str,
        compare: Compare,
        lease: Option<i64>,
        deadline: Instant,
    ) -> Result<bool> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(self.key(rel), value, opts)]);
        let (ok, rev, _) = self.txn(txn, deadline).await?;
        if ok {
            self.cache.apply_put(rel, value, rev, lease.unwrap_or(0));
        }
        Ok(ok)
    }

    /// Put, with a CAS on the key's mod_revision when `version` is given (`/config`,
    /// `/failover`). `Ok(false)` = the key changed meanwhile.
    async fn put_if_version(&self, rel: &str, value: &str, version: Option<i64>) -> Result<bool> {
        match version {
            Some(v) => {
                let cmp = Compare::mod_revision(self.key(rel), CompareOp::Equal, v);
                self.cas_put(rel, value, cmp, None, self.deadline()).await
            }
            None => self.put(rel, value, None).await.map(|()| true),
        }
    }

    async fn read(&self, serializable: bool) -> Result<Cluster> {
        let mut opts = GetOptions::new().with_prefix();
        if serializable {
            opts = opts.with_serializable();
        }
        let prefix = self.prefix.clone();
        let resp = self
            .request("range", self.deadline(), move |mut c| {
                let (prefix, opts) = (prefix.clone(), opts.clone());
                async move { c.get(prefix, Some(opts)).await }
            })
            .await?;
        let entries = cache::range_entries(&resp, &self.prefix);
        self.cache.absorb(&entries);
        let mut c = Cluster::from_entries(
            entries
                .iter()
                .map(|(k, v, r, l)| (k.as_str(), v.as_str(), *r, *l)),
        );
        c.revision = resp.header().map_or(0, |h| h.revision());
        Ok(c)
    }
}
