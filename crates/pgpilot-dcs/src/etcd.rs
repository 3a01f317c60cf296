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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{cluster_prefix, Cluster, Dcs, DcsError, Leader, MemberData, Result, Status};

/// How to reach etcd and who we are.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` endpoints.
    pub endpoints: Vec<String>,
    pub namespace: String,
    pub scope: String,
    pub name: String,
    pub ttl: Duration,
    pub retry_timeout: Duration,
    pub loop_wait: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One cached key: value, mod_revision, lease.
type Entry = (String, i64, i64);

#[derive(Default)]
struct CacheState {
    /// Keys relative to the prefix.
    entries: BTreeMap<String, Entry>,
    revision: i64,
    /// The watch stream is established and applying events.
    healthy: bool,
}

/// The watch-fed copy of the cluster prefix.
struct Cache {
    state: Mutex<CacheState>,
    /// Bumped on every change of `leader`, `config` or `failover`.
    leader_events: watch::Sender<u64>,
    /// Bumped on every change of `status`.
    status_events: watch::Sender<u64>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump_for(&self, key: &str) {
        if key == "leader" || key == "config" || key == "failover" {
            self.leader_events.send_modify(|n| *n += 1);
        } else if key == "status" || key == "optime/leader" {
            self.status_events.send_modify(|n| *n += 1);
        }
    }

    fn apply_put(&self, key: &str, value: &str, rev: i64, lease: i64) {
        {
            let mut st = self.lock();
            if st.entries.get(key).is_some_and(|(_, r, _)| *r >= rev) {
                return;
            }
            st.entries
                .insert(key.to_string(), (value.to_string(), rev, lease));
            st.revision = st.revision.max(rev);
        }
        self.bump_for(key);
    }

    fn apply_delete(&self, key: &str, rev: i64) {
        let removed = {
            let mut st = self.lock();
            st.revision = st.revision.max(rev);
            match st.entries.get(key) {
                Some((_, r, _)) if *r < rev || rev == 0 => st.entries.remove(key).is_some(),
                _ => false,
            }
        };
        if removed {
            self.bump_for(key);
        }
    }
}

/// etcd v3 client for one member.
pub struct EtcdDcs {
    client: Client,
    prefix: String,
    name: String,
    ttl: Mutex<Duration>,
    retry_timeout: Mutex<Duration>,
    loop_wait: Duration,
    /// Our lease, granted lazily; `None` after it was lost or the TTL changed.
    lease: tokio::sync::Mutex<Option<i64>>,
    /// Last successful keepalive (for touch_member's once-per-loop_wait refresh).
    last_keepalive: Mutex<Option<Instant>>,
    cache: Arc<Cache>,
    /// Generations of the cache events the HA loop has already seen (set by `cluster()`).
    seen: Mutex<(u64, u64)>,
    stop: CancellationToken,
}

impl Drop for EtcdDcs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn err(e: etcd_client::Error) -> DcsError {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            DcsError::Unavailable(format!("{:?}: {}", s.code(), s.message()))
        }
        etcd_client::Error::TransportError(t) => DcsError::Unavailable(t.to_string()),
        other => DcsError::Request(other.to_string()),
    }
}

/// Bounds a request by the retry timeout.
async fn bounded<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(DcsError::Unavailable(format!(
            "{what}: no answer within {timeout:?}"
        ))),
    }
}

/// HTTP/2 keepalive ping interval: above etcd's default `grpc-keepalive-min-time` (5 s).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

impl EtcdDcs {
    /// Connects (retrying every 5 s while etcd is unreachable, logging `waiting on etcd`) and
    /// starts the watch cache.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdDcs> {
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(opts.retry_timeout)
            // etcd refuses HTTP/2 pings more often than every 5 s (grpc-keepalive-min-time):
            // it answers GOAWAY "too many pings" and the connection, the watch and the cache are
            // rebuilt every few seconds. Dead connections are found by these pings within
            // 6 s + retry_timeout; every request of the HA cycle has its own deadline anyway.
            .with_keep_alive(KEEPALIVE_INTERVAL, opts.retry_timeout)
            .with_keep_alive_while_idle(true);
        if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
            copts = copts.with_user(u.clone(), p.clone());
        }
        let client = loop {
            match tokio::time::timeout(
                opts.retry_timeout * 2,
                Client::connect(opts.endpoints.clone(), Some(copts.clone())),
            )
            .await
            {
                Ok(Ok(mut c)) => {
                    // connect() is lazy for some transports: prove the cluster answers.
                    match tokio::time::timeout(opts.retry_timeout, c.status()).await {
                        Ok(Ok(_)) => break c,
                        Ok(Err(e)) => warn!("waiting on etcd: {e}"),
                        Err(_) => warn!("waiting on etcd: no answer"),
                    }
                }
                Ok(Err(e)) => warn!("waiting on etcd: {e}"),
                Err(_) => warn!("waiting on etcd: connect timed out"),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        let (leader_events, _) = watch::channel(0);
        let (status_events, _) = watch::channel(0);
        let cache = Arc::new(Cache {
            state: Mutex::new(CacheState::default()),
            leader_events,
            status_events,
        });
        let dcs = EtcdDcs {
            client,
            prefix: cluster_prefix(&opts.namespace, &opts.scope),
            name: opts.name,
            ttl: Mutex::new(opts.ttl),
            retry_timeout: Mutex::new(opts.retry_timeout),
            loop_wait: opts.loop_wait,
            lease: tokio::sync::Mutex::new(None),
            last_keepalive: Mutex::new(None),
            cache,
            seen: Mutex::new((0, 0)),
            stop: CancellationToken::new(),
        };
        tokio::spawn(watch_loop(
            dcs.client.clone(),
            dcs.prefix.clone(),
            dcs.cache.clone(),
            dcs.retry_timeout(),
            dcs.stop.clone(),
        ));
        Ok(dcs)
    }

    fn retry_timeout(&self) -> Duration {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// Our lease, granted if we have none.
    async fn lease(&self) -> Result<i64> {
        let mut guard = self.lease.lock().await;
        if let Some(id) = *guard {
            return Ok(id);
        }
        let ttl = i64::try_from(self.ttl().as_secs()).unwrap_or(30);
        let resp = bounded(
            self.retry_timeout(),
            "lease grant",
            self.client().lease_grant(ttl, None),
        )
        .await?;
        info!("granted etcd lease {:x} with ttl {ttl}s", resp.id());
        *guard = Some(resp.id());
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(resp.id())
    }

    /// Refreshes our lease; a lease etcd no longer knows is replaced by a new one. Forced by
    /// the leader every cycle; otherwise (a replica's member key) at most every third of the
    /// TTL: a member key that lives on needs no more, and etcd is spared a request per member
    /// per loop_wait.
    async fn keepalive(&self, force: bool) -> Result<i64> {
        if !force {
            let every = self.loop_wait.max(self.ttl() / 3);
            let recent = self
                .last_keepalive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < every);
            if recent {
                return self.lease().await;
            }
        }
        let id = self.lease().await?;
        let timeout = self.retry_timeout();
        let mut client = self.client();
        let ttl = tokio::time::timeout(timeout, async move {
            let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map_or(0, |r| r.ttl()))
        })
        .await
        .map_err(|_| {
            DcsError::Unavailable(format!("lease keepalive: no answer within {timeout:?}"))
        })?;
        // etcd-client reports an expired lease as an error ("lease not found") rather than as
        // a keepalive answer with ttl 0: both mean the lease is gone and a new one is needed.
        let ttl = match ttl {
            Err(etcd_client::Error::LeaseKeepAliveError(msg)) if msg.contains("not found") => 0,
            other => other.map_err(err)?,
        };
        if ttl <= 0 {
            warn!("etcd lease {id:x} was lost; granting a new one");
            *self.lease.lock().await = None;
            return self.lease().await;
        }
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(id)
    }

    async fn put(&self, rel: &str, value: &str, lease: Option<i64>) -> Result<()> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = bounded(
            self.retry_timeout(),
            "put",
            self.client().put(self.key(rel), value, opts),
        )
        .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.cache.apply_put(rel, value, rev, lease.unwrap_or(0));
        Ok(())
    }

    /// Runs a txn; on success applies `then_put`/`then_delete` to the cache.
    async fn txn(&self, txn: Txn) -> Result<(bool, i64, Vec<TxnOpResponse>)> {
        let resp = bounded(self.retry_timeout(), "txn", self.client().txn(txn)).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.succeeded(), rev, resp.op_responses()))
    }

    async fn cas_put(
        &self,
        rel: &str,
        value: &str,
        compare: Compare,
        lease: Option<i64>,
    ) -> Result<bool> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(self.key(rel), value, opts)]);
        let (ok, rev, _) = self.txn(txn).await?;
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
                self.cas_put(rel, value, cmp, None).await
            }
            None => self.put(rel, value, None).await.map(|()| true),
        }
    }

    async fn read(&self, serializable: bool) -> Result<Cluster> {
        let mut opts = GetOptions::new().with_prefix();
        if serializable {
            opts = opts.with_serializable();
        }
        let resp = bounded(
            self.retry_timeout(),
            "range",
            self.client().get(self.prefix.clone(), Some(opts)),
        )
        .await?;
        let entries: Vec<(String, String, i64, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&self.prefix)?.to_string();
                Some((
                    key,
                    kv.value_str().ok()?.to_string(),
                    kv.mod_revision(),
                    kv.lease(),
                ))
            })
            .collect();
        let mut c = Cluster::from_entries(
            entries
                .iter()
                .map(|(k, v, r, l)| (k.as_str(), v.as_str(), *r, *l)),
        );
        c.revision = resp.header().map_or(0, |h| h.revision());
        Ok(c)
    }
}

/// Keeps the cache in line with etcd: range, then watch from the next revision; starts over on
/// any error, compaction or cancellation.
async fn watch_loop(
    mut client: Client,
    prefix: String,
    cache: Arc<Cache>,
    timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let range = tokio::time::timeout(
            timeout,
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await;
        let resp = match range {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                debug!("watch cache: range failed: {e}");
                cache.lock().healthy = false;
                sleep_or_stop(&stop, Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                cache.lock().healthy = false;
                continue;
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        {
            let mut st = cache.lock();
            st.entries = resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = kv.key_str().ok()?.strip_prefix(&prefix)?.to_string();
                    Some((
                        key,
                        (
                            kv.value_str().ok()?.to_string(),
                            kv.mod_revision(),
                            kv.lease(),
                        ),
                    ))
                })
                .collect();
            st.revision = revision;
        }
        cache.leader_events.send_modify(|n| *n += 1);
        cache.status_events.send_modify(|n| *n += 1);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream =
            match tokio::time::timeout(timeout, client.watch(prefix.clone(), Some(opts))).await {
                Ok(Ok(s)) => s,
                _ => {
                    cache.lock().healthy = false;
                    sleep_or_stop(&stop, Duration::from_secs(1)).await;
                    continue;
                }
            };
        cache.lock().healthy = true;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix))
                        else {
                            continue;
                        };
                        match ev.event_type() {
                            EventType::Put => cache.apply_put(
                                key,
                                kv.value_str().unwrap_or(""),
                                kv.mod_revision(),
                                kv.lease(),
                            ),
                            EventType::Delete => cache.apply_delete(key, kv.mod_revision()),
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        cache.lock().healthy = false;
        debug!("watch cache: stream ended, starting over");
    }
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    async fn cluster(&self) -> Result<Cluster> {
        let generations = (
            *self.cache.leader_events.borrow(),
            *self.cache.status_events.borrow(),
        );
        let cached = {
            let st = self.cache.lock();
            st.healthy.then(|| {
                let mut c = Cluster::from_entries(
                    st.entries
                        .iter()
                        .map(|(k, (v, r, l))| (k.as_str(), v.as_str(), *r, *l)),
                );
                c.revision = st.revision;
                c
            })
        };
        let c = match cached {
            Some(c) => c,
            None => self.read(false).await?,
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = generations;
        Ok(c)
    }

    async fn cluster_fresh(&self) -> Result<Cluster> {
        self.read(false).await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<()> {
        let lease = self.keepalive(false).await?;
        let json = data.to_json();
        let rel = format!("members/{}", self.name);
        let unchanged = self
            .cache
            .lock()
            .entries
            .get(&rel)
            .is_some_and(|(v, _, l)| *v == json && *l == lease);
        if unchanged {
            return Ok(());
        }
        self.put(&rel, &json, Some(lease)).await
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool> {
        let lease = self.keepalive(true).await?;
        let won = self
            .cas_put(
                "leader",
                &self.name,
                Compare::create_revision(self.key("leader"), CompareOp::Equal, 0),
                Some(lease),
            )
            .await?;
        Ok(won)
    }

    async fn update_leader(&self, leader: Option<&Leader>) -> Result<bool> {
        let lease = self.keepalive(true).await?;
        let cached = self.cache.lock().entries.get("leader").cloned();
        let current = leader
            .map(|l| (l.name.clone(), l.lease))
            .or(cached.map(|(v, _, l)| (v, l)));
        if current
            .as_ref()
            .is_some_and(|(n, l)| *n == self.name && *l == lease)
        {
            return Ok(true);
        }
        // The key is on another (lost) lease of ours, or gone: rebind it if it is still ours,
        // or re-create it if nobody holds it.
        let key = self.key("leader");
        let put = TxnOp::put(
            key.clone(),
            self.name.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let inner = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()]);
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, self.name.clone())])
            .and_then([put])
            .or_else([TxnOp::txn(inner)]);
        let (ok, rev, responses) = self.txn(txn).await?;
        let ok = ok
            || responses.iter().any(|r| match r {
                TxnOpResponse::Txn(t) => t.succeeded(),
                _ => false,
            });
        if ok {
            self.cache.apply_put("leader", &self.name, rev, lease);
        }
        Ok(ok)
    }

    async fn take_leader(&self) -> Result<()> {
        let lease = self.keepalive(true).await?;
        self.put("leader", &self.name.clone(), Some(lease)).await
    }

    async fn delete_leader(&self) -> Result<bool> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn).await?;
        if ok {
            self.cache.apply_delete("leader", rev);
        }
        Ok(ok)
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool> {
        if create_new {
            return self
                .cas_put(
                    "initialize",
                    sysid,
                    Compare::create_revision(self.key("initialize"), CompareOp::Equal, 0),
                    None,
                )
                .await;
        }
        self.put("initialize", sysid, None).await?;
        Ok(true)
    }

    async fn cancel_initialization(&self) -> Result<()> {
        let resp = bounded(
            self.retry_timeout(),
            "delete",
            self.client().delete(self.key("initialize"), None),
        )
        .await?;
        self.cache
            .apply_delete("initialize", resp.header().map_or(0, |h| h.revision()));
        Ok(())
    }

    async fn set_config(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("config", value, version).await
    }

    async fn set_failover(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("failover", value, version).await
    }

    async fn set_sync(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("sync", value, version).await
    }

    async fn delete_sync(&self, version: Option<i64>) -> Result<bool> {
        let key = self.key("sync");
        let mut txn = Txn::new();
        if let Some(v) = version {
            txn = txn.when([Compare::mod_revision(key.clone(), CompareOp::Equal, v)]);
        }
        let txn = txn.and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn).await?;
        if ok {
            self.cache.apply_delete("sync", rev);
        }
        Ok(ok)
    }

    async fn set_history(&self, value: &str) -> Result<()> {
        self.put("history", value, None).await
    }

    async fn write_status(&self, status: &Status) -> Result<()> {
        let json = status.to_json();
        // An idle primary's optime does not move: skip the write (the cache holds our own
        // writes and every change made by others).
        let unchanged = {
            let st = self.cache.lock();
            st.healthy && st.entries.get("status").is_some_and(|(v, _, _)| *v == json)
        };
        if unchanged {
            return Ok(());
        }
        self.put("status", &json, None).await
    }

    fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
        if let Ok(mut l) = self.lease.try_lock() {
            *l = None;
        }
    }

    fn set_retry_timeout(&self, retry_timeout: Duration) {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner()) = retry_timeout;
    }

    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let (seen_leader, seen_status) = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut leader_rx = self.cache.leader_events.subscribe();
        let mut status_rx = self.cache.status_events.subscribe();
        let fired = |l: u64, s: u64| l != seen_leader || (!leader_is_me && s != seen_status);
        if fired(*leader_rx.borrow(), *status_rx.borrow()) {
            return true;
        }
        let wait = async {
            loop {
                tokio::select! {
                    r = leader_rx.changed() => if r.is_err() { return false },
                    r = status_rx.changed(), if !leader_is_me => if r.is_err() { return false },
                }
                if fired(*leader_rx.borrow(), *status_rx.borrow()) {
                    return true;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    async fn delete_cluster(&self) -> Result<()> {
        bounded(
            self.retry_timeout(),
            "delete prefix",
            self.client().delete(
                self.prefix.clone(),
                Some(DeleteOptions::new().with_prefix()),
            ),
        )
        .await?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let id = self.lease.lock().await.take();
        if let Some(id) = id {
            bounded(
                self.retry_timeout(),
                "lease revoke",
                self.client().lease_revoke(id),
            )
            .await?;
        }
        Ok(())
    }
}
